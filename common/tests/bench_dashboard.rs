//! Keeps `bench/dashboard.sh` honest: a small run of it (a few thousand
//! messages instead of 10 million) must load, rebuild the rollups, time every
//! statement of the status page and every dashboard view, and find the
//! views' counts equal to `count(*)`. The figures of so small a run are not
//! judged (JUDGE=0); the real run is by hand, on an idle machine.

use std::process::Command;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn the_dashboard_benchmark_runs_small() {
    let page = std::env::temp_dir().join(format!("dashboard_page_{}.sql", std::process::id()));
    let sql: String = common::store::page_queries()
        .into_iter()
        .map(|(name, sql, second)| {
            let second = second.map_or("none".to_owned(), |n| n.to_string());
            format!("-- name {name} {second}\n{sql}\n-- end\n")
        })
        .collect();
    std::fs::write(&page, sql).unwrap();
    let database = format!("gwtest_bench_dashboard_{}", std::process::id());
    let output = Command::new("bash")
        .arg(format!("{ROOT}/bench/dashboard.sh"))
        .env("DB", &database)
        .env("SMALL", "3000")
        .env("LARGE", "9000")
        .env("TAIL", "100")
        .env("JUDGE", "0")
        .env("PAGE_SQL", &page)
        .output()
        .expect("run bench/dashboard.sh");
    let _ = std::fs::remove_file(&page);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("statuses whose view count differs from count(*): 0"),
        "{stdout}"
    );
    for (name, _, _) in common::store::page_queries() {
        for who in ["admin", "tenant"] {
            let line = format!("page {name} ({who})");
            assert!(stdout.contains(&line), "{line} missing in\n{stdout}");
        }
    }
    for view in [
        "message_status_counts",
        "message_throughput_per_minute",
        "delivery_latency_hourly",
        "failure_reasons",
        "recent_failures",
    ] {
        assert!(
            stdout.contains(&format!("view {view} ")),
            "{view} missing in\n{stdout}"
        );
    }
    assert!(
        stdout.contains("rollup rebuild (backfill) time"),
        "{stdout}"
    );
}
