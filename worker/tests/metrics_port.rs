//! The worker's metrics port: with `WORKER_METRICS_BIND` unset and the
//! default port (9100) taken, e.g. by a second worker on the host, the worker
//! serves its metrics on a free port and logs which; with it set to a taken
//! port, start-up stops naming it before any component starts.

mod send_harness;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::config::Config;
use send_harness::{Harness, read_log, wait_for};

fn config(vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> =
        [("APP_ENV", "development"), ("SENT_DM_API_KEY", "unused")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    map.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_map(&map).expect("configuration")
}

#[test]
fn the_setting_is_known_to_have_been_set_or_not() {
    let unset = config(&[]);
    assert_eq!(
        unset.worker.metrics_bind,
        "0.0.0.0:9100".parse::<SocketAddr>().unwrap()
    );
    assert!(!unset.worker.metrics_bind_set);
    let set = config(&[("WORKER_METRICS_BIND", "127.0.0.1:9100")]);
    assert!(set.worker.metrics_bind_set);
    // Blank counts as unset, as for every other variable.
    assert!(
        !config(&[("WORKER_METRICS_BIND", " ")])
            .worker
            .metrics_bind_set
    );
}

#[tokio::test]
async fn unset_and_taken_falls_back_to_a_free_port_in_process() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut settings = config(&[]).worker;
    settings.metrics_bind = addr; // the "default", taken
    let listener = worker::metrics::bind(&settings).await.expect("a free port");
    let got = listener.local_addr().unwrap();
    assert_eq!(got.ip(), addr.ip());
    assert_ne!(got.port(), addr.port());
}

#[tokio::test]
async fn set_and_taken_is_an_error_naming_the_variable_in_process() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let settings = config(&[("WORKER_METRICS_BIND", &addr)]).worker;
    let error = worker::metrics::bind(&settings)
        .await
        .expect_err("a taken port that was asked for")
        .to_string();
    assert!(
        error.contains("WORKER_METRICS_BIND") && error.contains(&addr),
        "{error}"
    );
}

/// The binary with the default setting while something holds port 9100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_on_the_host_serves_metrics_on_a_free_port() {
    // Held by this test, or by something else already: taken either way.
    let _holder = std::net::TcpListener::bind("0.0.0.0:9100");
    let mut h = Harness::new().await;
    h.set("APP_ENV", "development");
    h.set("LOG_FORMAT", "json");
    let (mut child, log) = h.spawn_process(&[]);

    let mut addr = None;
    wait_for(30, "the worker logs the port it took instead", || {
        let text = read_log(&log);
        addr = text
            .lines()
            .filter(|line| line.contains("the default metrics port is taken"))
            .find_map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).ok()?;
                json["addr"].as_str()?.parse::<SocketAddr>().ok()
            });
        async move { addr.is_some() }
    })
    .await;
    let addr = addr.unwrap();
    assert_ne!(addr.port(), 9100, "{}", read_log(&log));
    let url = format!("http://127.0.0.1:{}/metrics", addr.port());
    let body = reqwest::get(&url)
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("# TYPE worker_jobs_total counter"), "{body}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker keeps running: {}",
        read_log(&log)
    );
    child.kill().await.unwrap();
}

/// The binary with `WORKER_METRICS_BIND` set to a port something holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_that_was_asked_for_stops_the_worker_before_it_starts_work() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut h = Harness::new().await;
    h.set("WORKER_METRICS_BIND", &addr);
    let (mut child, log) = h.spawn_process(&[]);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the worker stops on its own")
        .unwrap();
    let text = read_log(&log);
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&format!("WORKER_METRICS_BIND {addr}")),
        "the error names the variable and the address:\n{text}"
    );
    for started in [
        "worker starting",
        "send worker started",
        "callback sender started",
    ] {
        assert!(
            !text.contains(started),
            "no component starts ({started:?}):\n{text}"
        );
    }
}
