//! Shutdown: a SIGTERM never resets a request that was already on its way.

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
    let mut app = TestApp::spawn(&[("GATEWAY_SHUTDOWN_DELAY_SECS", "3")]).await;
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

    app.shut_down().await.expect("a clean exit");
    assert!(
        TcpStream::connect(app.addr).await.is_err(),
        "the gateway no longer listens"
    );
}

#[tokio::test]
async fn a_request_in_flight_when_listening_stops_is_finished() {
    let mut app = TestApp::spawn(&[("GATEWAY_SHUTDOWN_DELAY_SECS", "0")]).await;
    let body = send_body().to_string();
    let head = format!(
        "POST /api/messages/send HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (first_half, second_half) = body.as_bytes().split_at(body.len() / 2);
    let mut client = TcpStream::connect(app.addr).await.unwrap();
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(first_half).await.unwrap();
    // The gateway is now reading this request's body.
    tokio::time::sleep(Duration::from_millis(200)).await;

    app.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), async {
        while TcpStream::connect(app.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gateway stops listening");

    let answer = exchange(&mut client, second_half).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_eq!(app.queued_jobs().await.len(), 1, "the message is queued");
    app.shut_down().await.expect("a clean exit");
}
