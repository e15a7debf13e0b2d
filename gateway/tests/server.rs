//! The HTTP server: a SIGTERM never resets a request that was already on its
//! way, and no client holds a connection by sending nothing, or slowly.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{API_KEY, TestApp, send_body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `request` on `stream` and reads until the gateway closes it.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    read_to_close(stream).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection after its answer")
        .expect("an answer, not a reset");
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn during_the_delay_connections_are_answered_and_closed_and_health_is_503() {
    // Long enough for the checks below on a busy machine.
    let mut app = TestApp::spawn(&[("GATEWAY_SHUTDOWN_DELAY_SECS", "10")]).await;
    // A kept-alive connection of a pooled client, idle at the signal.
    let answer = app.http.get(app.url("/health/live")).send().await.unwrap();
    assert!(answer.headers().get("connection").is_none());
    // A connection made before the signal whose request comes after it, as
    // one in the listen backlog or on a kept-alive connection would.
    let mut early = TcpStream::connect(app.addr).await.unwrap();

    app.stop.cancel();

    let health = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let answer = app.http.get(app.url("/health")).send().await.unwrap();
            if answer.status() == 503 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("/health turns 503 once shutdown begins");
    assert_eq!(health.headers()["connection"], "close");
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["services"]["gateway"], "draining");
    assert_eq!(body["services"]["postgres"], "ok");

    let answer = exchange(
        &mut early,
        b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));

    // New connections are still taken while load balancers catch up.
    let fresh = reqwest::Client::new();
    let answer = fresh.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(answer.status(), 200);

    app.shut_down().await;
    assert!(
        TcpStream::connect(app.addr).await.is_err(),
        "the gateway no longer listens"
    );
}

#[tokio::test]
async fn a_request_in_flight_when_listening_stops_is_finished() {
    let mut app = TestApp::spawn(&[("GATEWAY_SHUTDOWN_DELAY_SECS", "0")]).await;
    let body = send_body().to_string();
    // With `Expect: 100-continue` the gateway says when it starts reading
    // the body: from then on the request is in flight.
    let head = format!(
        "POST /api/messages/send HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let mut client = TcpStream::connect(app.addr).await.unwrap();
    client.write_all(head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        client.read_exact(&mut byte).await.unwrap();
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{interim:?}");

    app.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), async {
        while TcpStream::connect(app.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway stops listening");

    let answer = exchange(&mut client, body.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_eq!(app.queued_jobs().await.len(), 1, "the message is queued");
    app.shut_down().await;
}

#[tokio::test]
async fn connections_idle_or_sending_their_head_slowly_are_closed() {
    let app = TestApp::spawn(&[("GATEWAY_IDLE_TIMEOUT_SECS", "1")]).await;
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: gate")
        .await
        .unwrap();
    assert_eq!(read_to_close(&mut idle).await, "");
    assert_eq!(read_to_close(&mut slow).await, "");

    // A connection kept alive between requests is closed once idle too.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    let answer = exchange(
        &mut kept,
        b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// `GET /` from `source`, on a connection of its own, with `X-Forwarded-For:
/// forwarded` if given.
async fn index_from(app: &TestApp, source: &str, forwarded: Option<&str>) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(app.addr).await.unwrap();
    let forwarded = forwarded
        .map(|f| format!("X-Forwarded-For: {f}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET / HTTP/1.1\r\nHost: gateway\r\n{forwarded}Connection: close\r\n\r\n");
    let answer = exchange(&mut stream, request.as_bytes()).await;
    answer[..12].to_owned()
}

#[tokio::test]
async fn each_client_address_has_its_own_rate_limit() {
    let app = TestApp::spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_DEFAULT", "1/minute"),
    ])
    .await;
    assert_eq!(index_from(&app, "127.0.0.1", None).await, "HTTP/1.1 200");
    assert_eq!(index_from(&app, "127.0.0.1", None).await, "HTTP/1.1 429");
    assert_eq!(index_from(&app, "127.0.0.2", None).await, "HTTP/1.1 200");
    // Not a trusted proxy: what it forwards is ignored.
    let spoofed = Some("203.0.113.9");
    assert_eq!(index_from(&app, "127.0.0.2", spoofed).await, "HTTP/1.1 429");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_rate_limit() {
    let app = TestApp::spawn(&[
        ("RATELIMIT_ENABLED", "true"),
        ("RATELIMIT_DEFAULT", "1/minute"),
        ("FORWARDED_ALLOW_IPS", "127.0.0.1"),
    ])
    .await;
    let (one, two) = (Some("203.0.113.1"), Some("192.0.2.7, 203.0.113.2"));
    assert_eq!(index_from(&app, "127.0.0.1", one).await, "HTTP/1.1 200");
    assert_eq!(index_from(&app, "127.0.0.1", one).await, "HTTP/1.1 429");
    assert_eq!(index_from(&app, "127.0.0.1", two).await, "HTTP/1.1 200");
    // The proxy itself, with nothing forwarded, is a client of its own.
    assert_eq!(index_from(&app, "127.0.0.1", None).await, "HTTP/1.1 200");
}
