//! Gateway, worker and sent-sim together, over HTTP as a client sees them.

mod send_harness;

use send_harness::{Harness, wait_for};
use serde_json::{Value, json};

const API_KEY: &str = "e2e-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_posted_to_the_gateway_is_accepted_by_sent() {
    let mut h = Harness::new().await;
    h.set("API_KEYS", &format!("e2e:{API_KEY}"));
    let base = h.serve_gateway().await;
    let worker = h.start_worker().await;

    let http = reqwest::Client::new();
    let response = http
        .post(format!("{base}/api/messages/send"))
        .bearer_auth(API_KEY)
        .json(&json!({
            "phone_number": "+14155550123", "template_name": "welcome",
            "parameters": {"name": "Ada"}, "channels": ["sms", "whatsapp"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let view = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    wait_for(20, "the message to be accepted", || {
        let (http, url, view) = (
            http.clone(),
            format!("{base}/api/messages/{id}"),
            view.clone(),
        );
        async move {
            let body: Value = http
                .get(url)
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let done = body["status"] == "accepted";
            *view.lock().unwrap() = body;
            done
        }
    })
    .await;
    let view = view.lock().unwrap().clone();
    assert_eq!(view["attempts"], 1);
    assert!(
        view["provider_message_id"]
            .as_str()
            .is_some_and(|p| !p.is_empty()),
        "{view}"
    );
    let statuses: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[..3], ["queued", "sending", "accepted"], "{view}");
    let stats = h.sim.stats();
    assert_eq!(
        (stats.messages_created, stats.accepted_twice),
        (2, 0),
        "one per channel"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_serves_prometheus_metrics() {
    let mut h = Harness::new().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    h.set("WORKER_METRICS_BIND", &addr.to_string());
    let _worker = h.start_worker().await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    wait_for(10, "the metrics endpoint", || {
        let (http, url, text) = (http.clone(), url.clone(), text.clone());
        async move {
            match http.get(url).send().await {
                Ok(r) => {
                    *text.lock().unwrap() = r.text().await.unwrap_or_default();
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let text = text.lock().unwrap().clone();
    for metric in [
        "worker_queue_depth",
        "worker_queue_oldest_job_age_seconds",
        "worker_inbox_backlog",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
}
