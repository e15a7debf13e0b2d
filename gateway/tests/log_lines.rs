//! What the gateway binary's log lines carry at production's level.

mod support;

use common::test_support::{TestDatabase, TestRedis};
use support::{API_KEY, CutableProxy, GatewayProcess, send_body};

/// Production logs warnings only, yet a warning made while serving a request
/// names that request: its span's fields are on the line.
#[tokio::test]
async fn a_warning_in_a_request_carries_its_request_id() {
    let db = TestDatabase::new().await;
    let redis = TestRedis::new();
    let proxy = CutableProxy::start("127.0.0.1:6379").await;
    let redis_url = format!("redis://{}", proxy.addr);
    let gateway = GatewayProcess::start(&[
        ("APP_ENV", "testing"),
        ("LOG_LEVEL", "warn"),
        ("LOG_FORMAT", "json"),
        ("DATABASE_URL", &db.url),
        ("REDIS_URL", &redis_url),
        ("REDIS_PREFIX", &redis.prefix),
        ("API_KEYS", &format!("logs:{API_KEY}")),
        ("GATEWAY_SHUTDOWN_DELAY_SECS", "0"),
    ])
    .await;
    proxy.cut().await;

    let answer = reqwest::Client::new()
        .post(format!("{}/api/messages/send", gateway.base))
        .bearer_auth(API_KEY)
        .json(&send_body())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    let request_id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let output = gateway.stop().await;
    let warning = output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["level"] == "WARN" && line["message"] == "dependency unavailable")
        .unwrap_or_else(|| panic!("no warning about Redis:\n{output}"));
    assert_eq!(warning["span"]["request_id"], request_id, "{warning}");
    assert_eq!(warning["span"]["path"], "/api/messages/send");
    assert!(
        !output.contains("\"level\":\"INFO\""),
        "nothing below warn is printed:\n{output}"
    );
}
