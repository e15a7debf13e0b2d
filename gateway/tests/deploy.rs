//! The deployment files, checked without a Docker engine: the compose file's
//! structure, that every app service's command and environment would start
//! (its configuration parses in production), that every setting is in
//! `.env.example`, and that every SQL query of the Grafana dashboard runs.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::config::Config;
use serde_json::Value as Json;
use serde_norway::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    let mut value: Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    value.apply_merge().expect("merge keys resolve");
    // Nested anchors (`<<: *app-env` inside a merged map) need a second pass.
    value.apply_merge().expect("merge keys resolve");
    value
}

/// `${VAR:-default}` as compose interpolates it with VAR unset.
fn interpolate(text: &str) -> String {
    let pattern = regex::Regex::new(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}").unwrap();
    pattern
        .replace_all(text, |c: &regex::Captures| {
            c.get(2).map_or("", |m| m.as_str()).to_owned()
        })
        .into_owned()
}

fn environment(service: &Value) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    if let Some(Value::Mapping(env)) = service.get("environment") {
        for (k, v) in env {
            if k.as_str() == Some("<<") {
                continue;
            }
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_owned(),
            };
            vars.insert(k.as_str().unwrap().to_owned(), interpolate(&value));
        }
    }
    vars
}

#[test]
fn compose_has_the_whole_stack_in_order() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for needed in [
        "postgres",
        "redis",
        "migrate",
        "gateway",
        "worker",
        "sent-sim",
        "jaeger",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(needed), "service {needed} missing");
    }
    for (name, service) in services {
        let name = name.as_str().unwrap();
        assert!(
            service.get("image").is_some() || service.get("build").is_some(),
            "{name}: no image"
        );
        if let Some(deps) = service.get("depends_on") {
            let deps: Vec<&str> = match deps {
                Value::Mapping(m) => m.keys().filter_map(|k| k.as_str()).collect(),
                Value::Sequence(s) => s.iter().filter_map(|k| k.as_str()).collect(),
                _ => panic!("{name}: depends_on"),
            };
            for dep in deps {
                assert!(names.contains(dep), "{name} depends on unknown {dep}");
            }
        }
    }
    assert_eq!(
        compose["services"]["worker"]["deploy"]["replicas"].as_u64(),
        Some(2)
    );
    for with_health in ["postgres", "redis", "gateway"] {
        assert!(
            compose["services"][with_health]
                .get("healthcheck")
                .is_some(),
            "{with_health} healthcheck"
        );
    }
    assert_eq!(
        compose["services"]["gateway"]["depends_on"]["migrate"]["condition"].as_str(),
        Some("service_completed_successfully")
    );
}

#[test]
fn every_app_service_runs_a_binary_of_this_workspace_with_a_valid_configuration() {
    let compose = compose();
    let binaries = ["gateway", "worker", "sent-sim"];
    for name in ["migrate", "gateway", "worker", "sent-sim"] {
        let service = &compose["services"][name];
        let command: Vec<&str> = service["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(binaries.contains(&command[0]), "{name} runs {:?}", command);
        if command[0] == "sent-sim" {
            continue;
        }
        let vars = environment(service);
        let config = Config::from_map(&vars).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            config.profile,
            common::config::Profile::Production,
            "{name}"
        );
        if name == "worker" {
            config.require_sent_api_key().unwrap();
            assert!(
                vars["SENT_BASE_URL"].contains("sent-sim"),
                "without a key the workers use sent-sim"
            );
        }
    }
    // The gateway binary accepts the migrate command the compose file uses.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
}

/// `30s` or `1m30s`, as compose writes durations.
fn compose_duration(text: &str) -> Duration {
    let (minutes, seconds) = text.split_once('m').unwrap_or(("0", text));
    let seconds = seconds.trim_end_matches('s');
    let seconds: u64 = if seconds.is_empty() {
        0
    } else {
        seconds.parse().unwrap()
    };
    Duration::from_secs(minutes.parse::<u64>().unwrap() * 60 + seconds)
}

#[test]
fn docker_waits_for_each_binary_to_shut_down_before_killing_it() {
    let compose = compose();
    let config = |name: &str| Config::from_map(&environment(&compose["services"][name])).unwrap();
    let needs = [
        ("gateway", gateway::longest_shutdown(&config("gateway"))),
        ("worker", config("worker").worker.shutdown_grace),
    ];
    for (name, needs) in needs {
        let grace = compose["services"][name]["stop_grace_period"]
            .as_str()
            .map_or(Duration::from_secs(10), compose_duration);
        assert!(
            grace > needs,
            "{name}: stop_grace_period {grace:?} but its shutdown may take {needs:?}"
        );
    }
}

#[test]
fn every_setting_the_code_reads_is_documented_in_env_example() {
    let example = read(".env.example");
    let config = read("common/src/config.rs");
    let reads = regex::Regex::new(r#"\(\s*"([A-Z][A-Z0-9_]{3,})""#).unwrap();
    let vars: BTreeSet<&str> = reads
        .captures_iter(&config)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(vars.len() > 40, "found only {vars:?}");
    let missing: Vec<&&str> = vars.iter().filter(|v| !example.contains(**v)).collect();
    assert!(missing.is_empty(), "not in .env.example: {missing:?}");
}

#[test]
fn prometheus_scrapes_the_gateway_and_every_worker() {
    let prometheus: Value =
        serde_norway::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    let text = serde_norway::to_string(&prometheus).unwrap();
    assert!(text.contains("gateway") && text.contains("8000"));
    assert!(text.contains("worker") && text.contains("9100"));
}

#[tokio::test]
async fn every_grafana_query_runs_against_the_schema() {
    let dashboard: Json =
        serde_json::from_str(&read("deploy/grafana/dashboards/sent-gateway.json")).unwrap();
    let datasources: Value = serde_norway::from_str(&read(
        "deploy/grafana/provisioning/datasources/datasources.yml",
    ))
    .unwrap();
    let uids: BTreeSet<&str> = datasources["datasources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|d| d["uid"].as_str())
        .collect();
    let db = common::test_support::TestDatabase::new().await;
    let time_filter = regex::Regex::new(r"\$__timeFilter\((\w+)\)").unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        assert!(
            uids.contains(uid),
            "panel {} uses unknown datasource {uid}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let Some(sql) = target["rawSql"].as_str() else {
                continue;
            };
            let macro_free = time_filter.replace_all(sql, "$1 > now() - interval '6 hours'");
            // As the read-only dashboard role, which must be allowed to run it.
            let mut tx = db.store.pool().begin().await.unwrap();
            sqlx::query("SET LOCAL ROLE dashboard_reader")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(&macro_free)
                .fetch_all(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("panel {}: {e}\n{macro_free}", panel["title"]));
            checked += 1;
        }
    }
    assert!(checked >= 5);
}
