//! No secret in any log line. A whole stack runs (gateway in process, the
//! worker in process or as its binary, sent-sim) through scenarios that
//! touch every secret: a send that goes to Sent and comes back as signed
//! webhooks and a signed status callback, webhooks with bad and good
//! signatures for every provider, clients with wrong keys, and Sent refusing
//! the worker's API key (401). Every log line of the process is captured at
//! debug level for every crate (dependencies included), and the worker
//! binary's output too; none may contain any secret, in any form.

mod send_harness;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use common::signature::{WebhookSecret, sign, sign_legacy, sign_stripe};
use common::store::NewApiKey;
use common::test_support::leakable_forms;
use send_harness::{Harness, RunningWorker, wait_for};
use sent_sim::SimConfig;
use serde_json::{Value, json};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const API_KEY: &str = "logs-api-key-5f3a9c1e7b2d4680";
const MANAGED_KEY: &str = "logs-managed-key-0e9d8c7b6a5f4e3d";
/// Keys a client presents by mistake are secrets too (a typo of a real one).
const WRONG_KEY: &str = "logs-wrong-key-8d1e4b7a2c9f3056";
const SENT_KEY: &str = "logs-sent-api-key-4c8e1a7f3b9d2065";
const WRONG_SENT_KEY: &str = "logs-wrong-sent-key-7a2d9e4c1f8b3650";
/// base64 of "logs-test-webhook-secret-0123456".
const WEBHOOK_SECRET: &str = "whsec_bG9ncy10ZXN0LXdlYmhvb2stc2VjcmV0LTAxMjM0NTY=";
const LEGACY_SECRET: &str = "logs-legacy-webhook-secret-2b6f";
const STRIPE_SECRET: &str = "whsec_logs_stripe_secret_91c3e7";
const TELEGRAM_TOKEN: &str = "logs-telegram-token-6d2a8f";
const MANAGED_CALLBACK_SECRET: &str = "whsec_bG9ncy1tYW5hZ2VkLWNhbGxiYWNrLXNlY3JldC0wMQ==";
const CALLBACK_SIGNING_KEY: &str = "logs-callback-signing-key-3e7a1c9b5d2f4860";

/// Every secret of the run, and the other forms it could leak in.
fn secrets() -> Vec<String> {
    use common::config::Secret;
    use common::signature::callback::{derived_secret, legacy_secret};
    let bootstrap_callback =
        derived_secret(&Secret::new(CALLBACK_SIGNING_KEY), "logs").to_whsec_string();
    let legacy_callback = legacy_secret(&Secret::new(API_KEY)).to_whsec_string();
    leakable_forms(&[
        API_KEY,
        MANAGED_KEY,
        WRONG_KEY,
        SENT_KEY,
        WRONG_SENT_KEY,
        WEBHOOK_SECRET,
        LEGACY_SECRET,
        STRIPE_SECRET,
        TELEGRAM_TOKEN,
        MANAGED_CALLBACK_SECRET,
        CALLBACK_SIGNING_KEY,
        &bootstrap_callback,
        &legacy_callback,
    ])
}

/// Fails listing each secret found, with the lines that hold it.
#[track_caller]
fn assert_no_secret(what: &str, logs: &str) {
    common::test_support::assert_no_secret(what, logs, &secrets());
}

// --- Capturing this process's logs ----------------------------------------------

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// This process's log, at debug level for every crate, as text and as JSON
/// (with span fields), from the first call on.
fn captured() -> &'static Buffer {
    static LOGS: OnceLock<Buffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        tracing_subscriber::registry()
            .with(LevelFilter::DEBUG)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(buffer.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(buffer.clone()),
            )
            .try_init()
            .expect("the first subscriber of this test process");
        buffer
    })
}

// --- The stack -------------------------------------------------------------------

struct Stack {
    h: Harness,
    base: String,
    http: reqwest::Client,
    callbacks: Arc<Mutex<Vec<Value>>>,
    callback_url: String,
}

async fn receive(State(bodies): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> &'static str {
    if let Ok(value) = serde_json::from_slice(&body) {
        bodies.lock().unwrap().push(value);
    }
    "ok"
}

impl Stack {
    async fn start() -> Stack {
        let sim = SimConfig {
            api_keys: vec![SENT_KEY.to_owned()],
            webhook_secret: sent_sim::SigningKey::parse(WEBHOOK_SECRET).unwrap(),
            ..SimConfig::default()
        };
        let mut h = Harness::with_sim(sim).await;
        for (var, value) in [
            ("API_KEYS", format!("logs:{API_KEY}")),
            ("CALLBACK_SIGNING_KEY", CALLBACK_SIGNING_KEY.to_owned()),
            // The previous releases' secret signs too.
            (
                "CALLBACK_LEGACY_SECRET_UNTIL",
                "2999-01-01T00:00:00Z".to_owned(),
            ),
            ("SENT_DM_API_KEY", SENT_KEY.to_owned()),
            (
                "SENT_DM_WEBHOOK_SECRET",
                format!("{WEBHOOK_SECRET},{LEGACY_SECRET}"),
            ),
            ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET.to_owned()),
            ("TELEGRAM_WEBHOOK_SECRET_TOKEN", TELEGRAM_TOKEN.to_owned()),
            ("INBOX_POLL_INTERVAL_MS", "100".to_owned()),
            ("INBOX_BACKOFF_BASE_MS", "20".to_owned()),
            ("INBOX_BACKOFF_MAX_SECS", "1".to_owned()),
            ("INBOX_REMATCH_INTERVAL_SECS", "1".to_owned()),
            ("CALLBACK_POLL_INTERVAL_MS", "100".to_owned()),
            ("CALLBACK_BACKOFF_BASE_MS", "20".to_owned()),
            ("CALLBACK_BACKOFF_MAX_SECS", "1".to_owned()),
            // The callback receiver listens on loopback.
            (
                "CALLBACK_ALLOW_PRIVATE_NETWORKS",
                "127.0.0.0/8,::1/128".to_owned(),
            ),
            ("WORKER_MAX_ATTEMPTS", "2".to_owned()),
        ] {
            h.set(var, &value);
        }
        h.store
            .create_api_key(&NewApiKey {
                name: "managed".into(),
                key_hash: gateway::auth::hash_key(MANAGED_KEY).to_vec(),
                key_prefix: MANAGED_KEY[..8].into(),
                callback_secret: MANAGED_CALLBACK_SECRET.into(),
                rate_limit: None,
            })
            .await
            .unwrap();

        let base = h.serve_gateway().await;
        h.sim.set_webhook_url(Some(format!("{base}/webhooks/sent")));

        let callbacks = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/status", axum::routing::post(receive))
            .with_state(callbacks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let callback_url = format!("http://{}/status", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Stack {
            h,
            base,
            http: reqwest::Client::new(),
            callbacks,
            callback_url,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn submit(&self, auth: (&str, String)) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/api/messages/send"))
            .header(auth.0, auth.1)
            .json(&json!({
                "phone_number": "+14155550123", "template_name": "welcome",
                "parameters": {"name": "Ada"}, "channels": ["sms"],
                "callback_url": self.callback_url,
            }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn status(&self, id: &str) -> Value {
        self.http
            .get(self.url(&format!("/api/messages/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait_status(&self, id: &str, wanted: &[&str]) {
        let last = Arc::new(Mutex::new(Value::Null));
        wait_for(30, &format!("{id} to be one of {wanted:?}"), || {
            let last = last.clone();
            async move {
                let view = self.status(id).await;
                let done = wanted.iter().any(|w| view["status"] == *w);
                *last.lock().unwrap() = view;
                done
            }
        })
        .await;
    }

    async fn post_webhook(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
        let mut request = self.http.post(self.url(path)).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// A message sent, accepted by Sent, its webhooks applied and its
    /// status callbacks delivered; then every failure path of the gateway.
    async fn gateway_scenarios(&self) {
        let (status, body) = self
            .submit(("authorization", format!("Bearer {API_KEY}")))
            .await;
        assert_eq!(status, 202, "{body}");
        let id = body["message_id"].as_str().unwrap().to_owned();
        self.wait_status(&id, &["delivered", "read"]).await;
        wait_for(30, "a status callback", || async {
            !self.callbacks.lock().unwrap().is_empty()
        })
        .await;
        let (status, body) = self.submit(("x-api-key", MANAGED_KEY.to_owned())).await;
        assert_eq!(status, 202, "{body}");

        // Clients with wrong keys.
        for auth in [
            ("authorization", format!("Bearer {WRONG_KEY}")),
            ("x-api-key", WRONG_KEY.to_owned()),
            ("authorization", format!("Bearer {API_KEY}x")),
            ("authorization", format!("Basic {API_KEY}")),
        ] {
            assert_eq!(self.submit(auth).await.0, 401);
        }

        // Sent webhooks: bad signatures of every kind, then good ones.
        let event = serde_json::to_vec(&json!({"field": "message", "event": "message.read",
            "payload": {"message_id": "nobody", "updated_at": "2026-01-01T00:00:00Z"}}))
        .unwrap();
        let ts = chrono::Utc::now().timestamp().to_string();
        let good = sign(
            &WebhookSecret::parse(WEBHOOK_SECRET).unwrap(),
            "ep",
            &ts,
            &event,
        );
        let wrong = sign(
            &WebhookSecret::from_bytes(&b"not-the-secret"[..]).unwrap(),
            "ep",
            &ts,
            &event,
        );
        let sent_headers = |signature: &str, ts: &str| {
            vec![
                ("x-webhook-id", "ep".to_owned()),
                ("x-webhook-timestamp", ts.to_owned()),
                ("x-webhook-signature", signature.to_owned()),
            ]
        };
        let stale = (chrono::Utc::now().timestamp() - 3600).to_string();
        let stale_good = sign(
            &WebhookSecret::parse(WEBHOOK_SECRET).unwrap(),
            "ep",
            &stale,
            &event,
        );
        for (headers, expected) in [
            (sent_headers(&wrong, &ts), 401),
            (sent_headers("v1,garbage", &ts), 401),
            (sent_headers(&stale_good, &stale), 401),
            (sent_headers(WEBHOOK_SECRET, &ts), 401),
            (
                vec![("x-webhook-signature", sign_legacy("not-the-secret", &event))],
                401,
            ),
            (vec![("x-webhook-signature", LEGACY_SECRET.to_owned())], 401),
            (sent_headers(&good, &ts), 200),
            (
                vec![("x-webhook-signature", sign_legacy(LEGACY_SECRET, &event))],
                200,
            ),
        ] {
            assert_eq!(
                self.post_webhook("/webhooks/sent", &headers, &event).await,
                expected
            );
        }
        let now = chrono::Utc::now().timestamp();
        let stripe = serde_json::to_vec(&json!({"id": "evt_1", "type": "invoice.paid"})).unwrap();
        for (signature, expected) in [
            (sign_stripe(STRIPE_SECRET, now, &stripe), 200),
            (sign_stripe(WEBHOOK_SECRET, now, &stripe), 401),
            (format!("t={now},v1={STRIPE_SECRET}"), 401),
        ] {
            let headers = [("stripe-signature", signature)];
            assert_eq!(
                self.post_webhook("/webhooks/stripe", &headers, &stripe)
                    .await,
                expected
            );
        }
        let update = br#"{"update_id": 7, "message": {"text": "hi"}}"#;
        for (token, expected) in [
            (TELEGRAM_TOKEN.to_owned(), 200),
            (format!("{TELEGRAM_TOKEN}x"), 401),
            (WRONG_KEY.to_owned(), 401),
        ] {
            let headers = [("x-telegram-bot-api-secret-token", token)];
            assert_eq!(
                self.post_webhook("/webhooks/telegram", &headers, update)
                    .await,
                expected
            );
        }
    }

    /// Submits a message that a worker with a wrong Sent key will fail with.
    async fn sent_refuses_the_key(&self) {
        let (status, body) = self
            .submit(("authorization", format!("Bearer {API_KEY}")))
            .await;
        assert_eq!(status, 202, "{body}");
        let id = body["message_id"].as_str().unwrap().to_owned();
        self.wait_status(&id, &["failed"]).await;
        let view = self.status(&id).await;
        assert!(view["last_error"].is_string(), "{view}");
        wait_for(30, "the failure's status callback", || async {
            self.callbacks
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.to_string().contains(&id) && c.to_string().contains("failed"))
        })
        .await;
    }
}

/// The log lines that show each scenario ran, so the scan is not vacuous.
#[track_caller]
fn assert_scenarios_logged(logs: &str) {
    for expected in ["webhook signature rejected", "DEBUG"] {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the logs:\n{}",
            tail(logs)
        );
    }
    assert!(
        logs.contains("401") && logs.to_ascii_lowercase().contains("api key"),
        "Sent's 401 was not logged:\n{}",
        tail(logs)
    );
}

fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_log_line_of_gateway_and_worker() {
    let logs = captured();
    let mut stack = Stack::start().await;
    let worker: RunningWorker = stack.h.start_worker().await;
    stack.gateway_scenarios().await;
    worker.stop().await.unwrap();

    stack.h.set("SENT_DM_API_KEY", WRONG_SENT_KEY);
    let worker = stack.h.start_worker().await;
    stack.sent_refuses_the_key().await;
    worker.stop().await.unwrap();

    let text = logs.text();
    assert_scenarios_logged(&text);
    assert_no_secret("the captured logs", &text);
}

/// The pretty format colours field names (`ESC[...m`); the scan reads the
/// plain text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\x1b[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find(|c: char| !(c.is_ascii_digit() || c == ';'))
            .unwrap_or(after.len());
        rest = after[end..].strip_prefix('m').unwrap_or(&after[end..]);
    }
    out.push_str(rest);
    out
}

/// SIGTERM, as an orchestrator stops it, and wait for the exit.
async fn terminate(mut child: tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_worker_binarys_output() {
    let logs = captured();
    let mut stack = Stack::start().await;
    let (worker, first) = stack.h.spawn_process_logging("debug", &[]);
    stack.gateway_scenarios().await;
    terminate(worker).await;

    stack.h.set("SENT_DM_API_KEY", WRONG_SENT_KEY);
    let (worker, second) = stack.h.spawn_process_logging("debug", &[]);
    stack.sent_refuses_the_key().await;
    terminate(worker).await;

    let output = [&first, &second]
        .iter()
        .map(|p| strip_ansi(&std::fs::read_to_string(p).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n");
    for path in [&first, &second] {
        let _ = std::fs::remove_file(path);
    }
    assert!(
        output.contains("DEBUG"),
        "not at debug level:\n{}",
        tail(&output)
    );
    assert!(
        output.contains("401"),
        "Sent's 401 was not logged:\n{}",
        tail(&output)
    );
    assert_no_secret("the worker binary's output", &output);
    // The gateway ran in this process: its lines were captured too.
    assert_no_secret("the captured logs", &logs.text());
}

/// The scan itself finds a planted secret, in each of its forms.
#[test]
fn the_scan_finds_a_planted_secret() {
    let encoded = WEBHOOK_SECRET
        .trim_start_matches("whsec_")
        .trim_end_matches('=');
    for line in [
        format!("INFO request: authorization=\"Bearer {API_KEY}\""),
        format!("DEBUG key={encoded}"),
        format!("\x1b[3mtoken\x1b[0m={TELEGRAM_TOKEN}"),
    ] {
        let found =
            std::panic::catch_unwind(|| assert_no_secret("a planted line", &strip_ansi(&line)));
        assert!(found.is_err(), "{line}");
    }
    assert_no_secret(
        "a clean line",
        "INFO webhook signature rejected reason=mismatch",
    );
}
