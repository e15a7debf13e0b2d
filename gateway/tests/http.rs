//! Cross-cutting HTTP behaviour: error shapes, headers, limits, health.

mod support;

use serde_json::json;
use support::{CutableProxy, TestApp, send_body, split};

const SECURITY_HEADERS: [(&str, &str); 5] = [
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

#[tokio::test]
async fn every_response_has_security_headers_and_a_request_id() {
    let app = TestApp::spawn(&[]).await;
    let responses = [
        app.http.get(app.url("/")).send().await.unwrap(),
        app.http.get(app.url("/health")).send().await.unwrap(),
        app.http.get(app.url("/nowhere")).send().await.unwrap(),
        app.http
            .post(app.url("/api/messages/send"))
            .json(&send_body())
            .send()
            .await
            .unwrap(),
        app.post("/api/messages/send")
            .json(&send_body())
            .send()
            .await
            .unwrap(),
    ];
    for response in responses {
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(
                response.headers()[name],
                value,
                "{name} on {}",
                response.url()
            );
        }
        assert!(!response.headers()["x-request-id"].is_empty());
    }
    let response = app
        .http
        .get(app.url("/health/live"))
        .header("X-Request-Id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn framework_errors_have_the_json_shape() {
    let app = TestApp::spawn(&[("MAX_BODY_BYTES", "1024")]).await;
    let cases = [
        (
            app.http
                .get(app.url("/no/such/route"))
                .send()
                .await
                .unwrap(),
            404,
            "not_found",
        ),
        (
            app.get("/api/messages/send").send().await.unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            app.http.delete(app.url("/health")).send().await.unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            app.post("/api/messages/send")
                .header("content-type", "application/json")
                .body(vec![b' '; 4096])
                .send()
                .await
                .unwrap(),
            413,
            "payload_too_large",
        ),
        (
            app.post("/api/messages/send")
                .header("content-type", "text/plain")
                .body("{}")
                .send()
                .await
                .unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            app.post("/api/messages/send")
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await
                .unwrap(),
            400,
            "malformed_json",
        ),
        (
            app.post("/api/messages/send")
                .header("content-type", "application/json")
                .body("[1,2]")
                .send()
                .await
                .unwrap(),
            400,
            "malformed_json",
        ),
    ];
    for (response, status, code) in cases {
        let url = response.url().clone();
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{url}"
        );
        let (got, _, body) = split(response).await;
        assert_eq!(got, status, "{url}: {body}");
        assert_eq!(body["code"], code, "{url}");
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn index_and_liveness() {
    let app = TestApp::spawn(&[]).await;
    let (status, _, index) = split(app.http.get(app.url("/")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(index["endpoints"]["health"], "/health");
    assert!(index["version"].is_string());
    let (status, _, live) =
        split(app.http.get(app.url("/health/live")).send().await.unwrap()).await;
    assert_eq!((status, live), (200, json!({"status": "alive"})));
    let (status, _, health) = split(app.http.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["services"], json!({"postgres": "ok", "redis": "ok"}));
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let app = TestApp::spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_MESSAGES", "2/minute"),
    ])
    .await;
    for _ in 0..2 {
        assert_eq!(
            app.post("/api/messages/send")
                .json(&send_body())
                .send()
                .await
                .unwrap()
                .status(),
            202
        );
    }
    let (status, headers, body) = split(
        app.post("/api/messages/send")
            .json(&send_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 429);
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["error"], "Rate limit exceeded");
    assert_eq!(body["retry_after"], retry_after);
    // Another client has its own budget; reads have theirs.
    let other = app
        .http
        .post(app.url("/api/messages/send"))
        .bearer_auth(support::OTHER_KEY)
        .json(&send_body());
    assert_eq!(other.send().await.unwrap().status(), 202);
    assert_eq!(app.get("/api/messages").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn redis_rate_limit_is_shared_by_gateway_instances() {
    let redis_url = common::test_support::redis_url();
    let first = TestApp::spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_MESSAGES", "3/minute"),
        ("RATELIMIT_STORAGE_URI", redis_url.as_str()),
    ])
    .await;
    // A second instance on the same Redis prefix (another gateway process).
    let second = TestApp::spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_MESSAGES", "3/minute"),
        ("RATELIMIT_STORAGE_URI", redis_url.as_str()),
        ("REDIS_PREFIX", first.redis.prefix.as_str()),
    ])
    .await;
    let mut statuses = Vec::new();
    for app in [&first, &second, &first, &second] {
        statuses.push(
            app.post("/api/messages/send")
                .json(&send_body())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![202, 202, 202, 429]);
}

#[tokio::test]
async fn redis_outage_gives_503_and_leaves_nothing_behind() {
    let proxy = CutableProxy::start("127.0.0.1:6379").await;
    let redis_url = format!("redis://{}", proxy.addr);
    let app = TestApp::spawn(&[("REDIS_URL", redis_url.as_str())]).await;
    assert_eq!(
        app.post("/api/messages/send")
            .json(&send_body())
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    proxy.cut().await;

    let (status, headers, body) = split(
        app.post("/api/messages/send")
            .json(&send_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "service_unavailable");
    assert!(headers.contains_key("retry-after"));
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM messages")
        .fetch_one(app.db.store.pool())
        .await
        .unwrap();
    assert_eq!(count, 1, "the refused message was withdrawn");

    let (status, _, health) = split(app.http.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(
        health["services"],
        json!({"postgres": "ok", "redis": "unavailable"})
    );
}

#[tokio::test]
async fn postgres_outage_gives_503_without_hanging() {
    let proxy = CutableProxy::start("127.0.0.1:5432").await;
    let db = common::test_support::TestDatabase::new().await;
    let url = format!("postgres://postgres@{}/{}", proxy.addr, db.name);
    let app = TestApp::spawn(&[("DATABASE_URL", url.as_str())]).await;
    let send = || app.post("/api/messages/send").json(&send_body()).send();
    assert_eq!(send().await.unwrap().status(), 202);
    proxy.cut().await;

    let started = std::time::Instant::now();
    let (status, _, body) = split(send().await.unwrap()).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(14),
        "an outage must not hang the client"
    );
    let (status, _, health) = split(app.http.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_eq!(health["services"]["postgres"], "unavailable");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = TestApp::spawn(&[]).await;
    let (_, _, body) = app.post_json("/api/messages/send", &send_body()).await;
    let id = body["message_id"].as_str().unwrap();
    app.get(&format!("/api/messages/{id}"))
        .send()
        .await
        .unwrap();
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |metric: &str, parts: &[&str]| {
        text.lines()
            .any(|l| l.starts_with(metric) && parts.iter().all(|p| l.contains(p)))
    };
    assert!(
        line(
            "gateway_http_requests_total",
            &[r#"route="/api/messages/send""#, r#"status="202""#]
        ),
        "{text}"
    );
    assert!(
        line(
            "gateway_http_requests_total",
            &[r#"route="/api/messages/{id}""#]
        ),
        "ids never become labels"
    );
    assert!(line(
        "gateway_http_request_duration_seconds_bucket",
        &[r#"route="/api/messages/send""#]
    ));
    assert!(line("gateway_messages_accepted_total", &[]));
    assert!(!text.contains(id));
}
