//! Explicit hostile inputs through the real router: oversized bodies, deep
//! nesting, invalid UTF-8, huge maps and batches, NUL characters, and header
//! injection attempts (through the client library, and as raw bytes on the
//! socket for what the client library refuses to send).

mod support;

use std::time::Duration;

use common::signature::{WebhookSecret, sign};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};
use support::{TestApp, send_body, split};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_BODY: usize = 2 * 1024 * 1024;
use common::test_support::SENT_WEBHOOK_SECRET as WEBHOOK_SECRET;
const ENDPOINT_ID: &str = "3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b";

const POST_ROUTES: [&str; 4] = [
    "/api/messages/send",
    "/api/messages/welcome",
    "/api/messages/order-confirmation",
    "/api/messages/batch",
];

async fn webhook_app() -> TestApp {
    TestApp::spawn(&[("SENT_DM_WEBHOOK_SECRET", WEBHOOK_SECRET)]).await
}

/// The contract's error: `status`, JSON, `{"error": sentence, "code": code}`.
#[track_caller]
fn assert_error(answer: &(u16, HeaderMap, Value), status: u16, code: &str) {
    let (got, headers, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert!(
        headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json")),
        "{headers:?}"
    );
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
}

async fn post_raw(
    app: &TestApp,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, HeaderMap, Value) {
    let response = app
        .post(path)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    split(response).await
}

/// A signed Sent webhook with `body`.
async fn post_signed(app: &TestApp, body: Vec<u8>) -> (u16, HeaderMap, Value) {
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = sign(
        &WebhookSecret::parse(WEBHOOK_SECRET).unwrap(),
        ENDPOINT_ID,
        &ts,
        &body,
    );
    let response = app
        .http
        .post(app.url("/webhooks/sent"))
        .header("x-webhook-id", ENDPOINT_ID)
        .header("x-webhook-timestamp", ts)
        .header("x-webhook-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    split(response).await
}

/// A send body padded (in a parameter value) to exactly `size` bytes.
fn send_body_of_size(size: usize) -> Vec<u8> {
    let head = br#"{"phone_number":"+14155550123","template_name":"t","parameters":{"x":""#;
    let tail = br#""}}"#;
    let mut body = head.to_vec();
    body.resize(size - tail.len(), b'a');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), size);
    body
}

// --- Oversized bodies ----------------------------------------------------------

#[tokio::test]
async fn bodies_past_the_limit_are_413_json_on_every_route() {
    let app = webhook_app().await;
    for path in POST_ROUTES {
        let answer = post_raw(&app, path, send_body_of_size(MAX_BODY + 1)).await;
        assert_error(&answer, 413, "payload_too_large");
    }
    // Webhooks too, before any signature check.
    let answer = post_signed(&app, vec![b' '; MAX_BODY + 1]).await;
    assert_error(&answer, 413, "payload_too_large");
    // At the limit the body is read, and refused for what it says.
    let answer = post_raw(&app, "/api/messages/send", send_body_of_size(MAX_BODY)).await;
    assert_error(&answer, 400, "validation_error");
    assert_eq!(
        answer.2["messages"]["parameters.x"][0],
        "Keys up to 128 and values up to 1024 characters."
    );
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_is_413() {
    let app = TestApp::spawn(&[]).await;
    let head = format!(
        "POST /api/messages/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        support::API_KEY
    );
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // Written while the answer is read: the gateway answers (and closes)
    // without reading the rest.
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..48 {
            write
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            write.write_all(&chunk).await?;
            write.write_all(b"\r\n").await?;
        }
        write.write_all(b"0\r\n\r\n").await
    });
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut response)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains(r#""code":"payload_too_large""#), "{text}");
}

// --- Deep nesting ----------------------------------------------------------------

#[tokio::test]
async fn deep_nesting_is_400_not_a_stack_overflow() {
    let app = webhook_app().await;
    let depth = 200_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth / 5), "}".repeat(depth / 5));
    let inside = format!(
        r#"{{"phone_number":"+14155550123","template_name":"t","parameters":{{"x":{arrays}}}}}"#
    );
    // Unclosed: the parser must give up on depth, not on the missing end.
    let unclosed = "[".repeat(MAX_BODY - 1);
    for body in [&arrays, &objects, &inside, &unclosed] {
        for path in POST_ROUTES {
            let answer = post_raw(&app, path, body.clone()).await;
            assert_error(&answer, 400, "malformed_json");
            assert!(
                answer.2["error"]
                    .as_str()
                    .unwrap()
                    .contains("recursion limit"),
                "{}",
                answer.2
            );
        }
        let answer = post_signed(&app, body.clone().into_bytes()).await;
        assert_error(&answer, 400, "malformed_json");
    }
    // The gateway is still there.
    let (status, _, _) = post_raw(&app, "/api/messages/send", send_body().to_string()).await;
    assert_eq!(status, 202);
}

// --- Invalid UTF-8 -------------------------------------------------------------

#[tokio::test]
async fn invalid_utf8_is_400() {
    let app = webhook_app().await;
    let valid = send_body().to_string().into_bytes();
    let at = valid.iter().position(|b| *b == b'J').unwrap(); // inside "John"
    let splice = |bad: &[u8]| {
        let mut body = valid.clone();
        body.splice(at..at, bad.iter().copied());
        body
    };
    let bodies = [
        splice(&[0xff]),
        splice(&[0xc0, 0xaf]),                    // overlong '/'
        splice(&[0xed, 0xa0, 0x80]),              // a UTF-16 surrogate, encoded
        splice(&[0xf4, 0x90, 0x80, 0x80]),        // past U+10FFFF
        splice(&[0xe2, 0x82]),                    // truncated
        vec![0xfe, 0xff, 0x00, 0x7b, 0x00, 0x7d], // UTF-16 with a BOM
        b"\xef\xbb\xbf{}".to_vec(),               // UTF-8 BOM: not JSON
        br#"{"phone_number":"+14155550123","template_name":"\ud800"}"#.to_vec(), // lone surrogate escape
    ];
    for body in bodies {
        for path in POST_ROUTES {
            let answer = post_raw(&app, path, body.clone()).await;
            assert_error(&answer, 400, "malformed_json");
        }
        let answer = post_signed(&app, body.clone()).await;
        assert_error(&answer, 400, "malformed_json");
    }
}

// --- Huge maps and batches ---------------------------------------------------------

#[tokio::test]
async fn a_thousand_parameters_are_refused_with_a_clear_message() {
    let app = TestApp::spawn(&[]).await;
    let many = |n: usize| -> Value {
        Value::Object(
            (0..n)
                .map(|i| (format!("p{i}"), json!("v")))
                .collect::<Map<_, _>>(),
        )
    };
    let mut body = send_body();
    body["parameters"] = many(1000);
    let answer = app.post_json("/api/messages/send", &body).await;
    assert_error(&answer, 400, "validation_error");
    assert_eq!(
        answer.2["messages"],
        json!({"parameters": ["At most 100 entries."]})
    );
    // The limits themselves are accepted.
    body["parameters"] = many(100);
    body["metadata"] = many(20);
    assert_eq!(app.post_json("/api/messages/send", &body).await.0, 202);
    body["metadata"] = many(21);
    let answer = app.post_json("/api/messages/send", &body).await;
    assert_eq!(
        answer.2["messages"],
        json!({"metadata": ["At most 20 entries."]})
    );
}

#[tokio::test]
async fn a_batch_of_1001_is_refused_and_1000_accepted() {
    let app = TestApp::spawn(&[]).await;
    let batch = |n: usize| json!({"messages": vec![send_body(); n]});
    let answer = app.post_json("/api/messages/batch", &batch(1001)).await;
    assert_error(&answer, 400, "validation_error");
    assert_eq!(
        answer.2["messages"],
        json!({"messages": ["Length must be between 1 and 1000."]})
    );
    assert!(app.queued_jobs().await.is_empty());
    let answer = app.post_json("/api/messages/batch", &batch(0)).await;
    assert_error(&answer, 400, "validation_error");

    let (status, _, body) = app.post_json("/api/messages/batch", &batch(1000)).await;
    assert_eq!(status, 202, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r["status"] == "queued"));
    assert_eq!(app.queued_jobs().await.len(), 1000);
}

// --- NUL characters ---------------------------------------------------------------

/// Postgres cannot store U+0000 in text or jsonb. A NUL anywhere in a
/// message is a validation error, not a failed commit (which, with group
/// commit, would also fail every other request in the same transaction).
#[tokio::test]
async fn nul_characters_are_refused_and_do_not_sink_other_requests() {
    let app = TestApp::spawn(&[]).await;
    let with = |field: &str, value: Value| {
        let mut body = send_body();
        body[field] = value;
        body
    };
    let poisoned = [
        with("template_name", json!("wel\0come")),
        with("template_id", json!("\0")),
        with("parameters", json!({"name": "A\0da"})),
        with("parameters", json!({"na\0me": "Ada"})),
        with("metadata", json!({"k": "\0"})),
        with("callback_url", json!("https://client.example/\0")),
    ];
    for body in &poisoned {
        let answer = app.post_json("/api/messages/send", body).await;
        assert_error(&answer, 400, "validation_error");
    }
    let answer = app
        .post_json(
            "/api/messages/welcome",
            &json!({"phone_number": "+14155550123", "name": "\0"}),
        )
        .await;
    assert_error(&answer, 400, "validation_error");
    let answer = app
        .post_json(
            "/api/messages/order-confirmation",
            &json!({"phone_number": "+14155550123", "order_number": "A\0", "total": "1"}),
        )
        .await;
    assert_error(&answer, 400, "validation_error");
    // In a batch, the item is refused and the others go through.
    let (status, _, body) = app
        .post_json(
            "/api/messages/batch",
            &json!({"messages": [send_body(), poisoned[2].clone(), send_body()]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "queued");
    assert_eq!(results[1]["code"], "validation_error");
    assert_eq!(results[2]["status"], "queued");

    // Concurrent good requests beside bad ones all succeed.
    let app = &app;
    let requests = (0..40).map(|i| {
        let body = if i % 4 == 0 {
            poisoned[i / 4 % poisoned.len()].clone()
        } else {
            send_body()
        };
        async move {
            (
                i % 4 == 0,
                app.post_json("/api/messages/send", &body).await.0,
            )
        }
    });
    for (bad, status) in futures::future::join_all(requests).await {
        assert_eq!(status, if bad { 400 } else { 202 });
    }
}

/// A signed webhook whose ids or type hold a NUL is stored, like any other.
#[tokio::test]
async fn nul_characters_in_webhook_events_are_stored() {
    let app = webhook_app().await;
    let bodies = [
        json!({"field": "message", "event": "message.delivered",
               "payload": {"message_id": "m\u{0}1", "updated_at": "2026-01-01T00:00:00Z"}}),
        json!({"field": "message", "event": "message.\u{0}delivered",
               "payload": {"message_id": "m2", "updated_at": "2026-01-01T00:00:00Z"}}),
        json!({"type": "message.sent\u{0}", "data": {"id": "m3"}}),
    ];
    for body in bodies {
        let bytes = serde_json::to_vec(&body).unwrap();
        for _ in 0..2 {
            let (status, _, answer) = post_signed(&app, bytes.clone()).await;
            assert_eq!(status, 200, "{answer} for {body}");
        }
    }
    let stored = app.db.store.inbox_events(Some("sent")).await.unwrap();
    assert_eq!(stored.len(), 3, "each stored once");
}

// --- Header injection ------------------------------------------------------------

/// The client library refuses to send a header value with CR, LF or NUL:
/// those cannot reach the gateway through it (the raw-socket tests below
/// send them anyway).
#[test]
fn the_client_library_refuses_control_characters_in_headers() {
    for bad in [
        &b"key\r\nX-Injected: 1"[..],
        b"key\nX-Injected: 1",
        b"key\rX",
        b"key\0",
        b"\x7f",
    ] {
        assert!(HeaderValue::from_bytes(bad).is_err(), "{bad:?}");
    }
}

/// Sends `request` as raw bytes; returns the status (if any answer came) and
/// the whole answer.
async fn raw(app: &TestApp, request: &[u8]) -> (Option<u16>, String) {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    (status, text)
}

fn request_with(header_lines: &str) -> Vec<u8> {
    let body = send_body().to_string();
    format!(
        "POST /api/messages/send HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{header_lines}\r\n{body}",
        support::API_KEY,
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn malformed_header_bytes_are_refused_before_the_app() {
    let app = TestApp::spawn(&[]).await;
    // Header values the client library will not send: the HTTP parser
    // refuses them with a bare 400 (it never reaches the router, so it is not
    // JSON) or drops the connection. Never a 5xx, never accepted.
    for lines in [
        "X-Request-Id: a\rX-Injected: 1\r\n",
        "Idempotency-Key: a\0b\r\n",
        "X-Request-Id: a\r\n folded: continuation\r\n",
        "Bad Name: value\r\n",
        "X-Request-Id\r\n",
        ": no-name\r\n",
    ] {
        let (status, text) = raw(&app, &request_with(lines)).await;
        assert!(
            status.is_none_or(|s| (400..500).contains(&s)),
            "{lines:?} -> {text}"
        );
        assert!(!text.contains("202 Accepted"), "{lines:?} -> {text}");
        assert!(!text.to_ascii_lowercase().contains("x-injected"), "{text}");
    }
    // A header section past hyper's limits.
    let huge = format!("X-Big: {}\r\n", "a".repeat(512 * 1024));
    let (status, text) = raw(&app, &request_with(&huge)).await;
    assert!(status.is_none_or(|s| (400..500).contains(&s)), "{text}");
    // And the gateway still serves.
    let (status, text) = raw(&app, &request_with("")).await;
    assert_eq!(status, Some(202), "{text}");
}

#[tokio::test]
async fn injected_lines_stay_separate_headers_and_nothing_is_reflected() {
    let app = TestApp::spawn(&[]).await;
    // CRLF in a value only ends that header: the next line is another header
    // of the request, never one of the response.
    let (status, text) = raw(
        &app,
        &request_with("X-Request-Id: abc\r\nSet-Cookie: session=evil\r\nX-Injected: yes\r\n"),
    )
    .await;
    assert_eq!(status, Some(202), "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        !lower.contains("set-cookie") && !lower.contains("x-injected"),
        "{text}"
    );
    assert!(lower.contains("x-request-id: abc\r\n"), "{text}");

    // Encoded CR/LF in the path and in header values are just characters.
    for path in [
        "/api/messages/%0d%0aSet-Cookie:%20a=b",
        "/api/messages/x%0aX-Injected:%201",
        "/%0d%0aX-Injected:%201",
    ] {
        let (status, headers, body) = split(app.get(path).send().await.unwrap()).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["code"], "not_found");
        assert!(!headers.contains_key("set-cookie") && !headers.contains_key("x-injected"));
    }
    let odd = b"%0d%0aSet-Cookie: a=b \xff\xfe";
    let response = app
        .post("/api/messages/send")
        .header("x-request-id", HeaderValue::from_bytes(odd).unwrap())
        .json(&send_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"].as_bytes(), odd);
    assert!(!response.headers().contains_key("set-cookie"));
}

#[tokio::test]
async fn odd_idempotency_keys_and_api_keys_are_client_errors() {
    let app = TestApp::spawn(&[]).await;
    for key in [
        &b"has space"[..],
        b"tab\there",
        b"caf\xc3\xa9",
        b"\xff\xfe",
        &[b'k'; 256],
    ] {
        let response = app
            .post("/api/messages/send")
            .header("idempotency-key", HeaderValue::from_bytes(key).unwrap())
            .json(&send_body())
            .send()
            .await
            .unwrap();
        let answer = split(response).await;
        assert_error(&answer, 400, "validation_error");
        assert!(answer.2["messages"]["Idempotency-Key"].is_array());
    }
    for auth in [
        &b"Bearer \xff\xfe"[..],
        b"Bearer test-key-0123456789\xff",
        b"Bearer test-key-012345678",
        b"Bearer",
        b"Bearer ",
    ] {
        let response = app
            .http
            .post(app.url("/api/messages/send"))
            .header("authorization", HeaderValue::from_bytes(auth).unwrap())
            .json(&send_body())
            .send()
            .await
            .unwrap();
        assert_error(&split(response).await, 401, "unauthorized");
    }
}
