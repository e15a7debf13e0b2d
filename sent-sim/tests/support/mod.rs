//! Helpers shared by the integration tests: start a simulator, send, poll,
//! and an in-test webhook receiver.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sent_sim::{DEV_WEBHOOK_SECRET, RECORD_DIR_VAR, SimConfig, SimHandle};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;

pub const KEY: &str = "sim_test_key";

/// Starts a simulator. Recording into `$SENT_SIM_RECORD_DIR` is turned off:
/// these tests send invalid requests on purpose, and that directory is for
/// checking real clients' traffic (a test that records sets its own file).
pub async fn start(mut config: SimConfig) -> SimHandle {
    if let (Some(path), Ok(dir)) = (&config.record, std::env::var(RECORD_DIR_VAR))
        && !dir.trim().is_empty()
        && path.starts_with(dir.trim())
    {
        config.record = None;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    sent_sim::spawn(config, listener).await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A minimal valid send to `to`.
pub fn body(to: &str) -> Value {
    serde_json::json!({"to": [to], "template": {"name": "welcome", "parameters": {"name": "Ada"}}})
}

pub async fn send(
    client: &reqwest::Client,
    sim: &SimHandle,
    body: &Value,
    idempotency_key: Option<&str>,
) -> reqwest::Response {
    try_send(client, sim, body, idempotency_key).await.unwrap()
}

pub async fn try_send(
    client: &reqwest::Client,
    sim: &SimHandle,
    body: &Value,
    idempotency_key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .post(format!("{}/v3/messages", sim.base_url()))
        .header("x-api-key", KEY)
        .json(body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await
}

/// `GET /v3/messages/{id}` with the API key `key`.
pub async fn get_message(
    client: &reqwest::Client,
    sim: &SimHandle,
    id: &str,
    key: &str,
) -> reqwest::Response {
    client
        .get(format!("{}/v3/messages/{id}", sim.base_url()))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

/// Sent's id of the first message an accepted send created.
pub fn first_id(answer: &Value) -> String {
    answer["data"]["recipients"][0]["message_id"]
        .as_str()
        .expect("an accepted send's first message id")
        .to_owned()
}

/// The member names of a JSON object, sorted.
pub fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Status, headers and JSON body of an answer.
pub async fn parts(response: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap();
    (status, headers, body)
}

/// Polls `check` every 10 ms until it is true; panics after `secs` seconds.
pub async fn wait_for<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One webhook delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub answered: StatusCode,
}

impl Delivery {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}"))
            .to_str()
            .unwrap()
    }

    pub fn event_id(&self) -> &str {
        self.header("x-webhook-event-id")
    }

    pub fn envelope(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The message payload (`payload`, or `value` in the older envelope).
    pub fn payload(&self) -> Value {
        let envelope = self.envelope();
        envelope
            .get("payload")
            .or_else(|| envelope.get("value"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn message_id(&self) -> String {
        self.payload()["message_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn status(&self) -> String {
        self.payload()["message_status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Checks the signature with the test's own HMAC (SENT_API.md, steps 1 to 3)
    /// and that the timestamp is fresh.
    pub fn verify(&self, secret: &str) {
        assert!(self.signature_matches(secret, &self.body), "bad signature");
        let signed_at: i64 = self.header("x-webhook-timestamp").parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - signed_at).abs() <= 300);
    }

    pub fn signature_matches(&self, secret: &str, body: &[u8]) -> bool {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(
            format!(
                "{}.{}.",
                self.header("x-webhook-id"),
                self.header("x-webhook-timestamp")
            )
            .as_bytes(),
        );
        mac.update(body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.header("x-webhook-signature")
            .split_whitespace()
            .any(|candidate| candidate == expected)
    }
}

#[derive(Default)]
struct ReceiverState {
    deliveries: Mutex<Vec<Delivery>>,
    /// Answer 500 to the first n attempts of every event id.
    fail_first: Mutex<usize>,
    attempts: Mutex<HashMap<String, usize>>,
}

/// An in-test webhook endpoint recording every delivery.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, state }
    }

    /// Answer 500 to the first `n` attempts of each event.
    pub fn fail_first(&self, n: usize) {
        *self.state.fail_first.lock().unwrap() = n;
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.deliveries.lock().unwrap().clone()
    }

    /// Successful deliveries about one message, in arrival order.
    pub fn for_message(&self, message_id: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.answered.is_success() && d.message_id() == message_id)
            .collect()
    }

    /// Statuses of the successful deliveries about one message, in arrival order.
    pub fn statuses(&self, message_id: &str) -> Vec<String> {
        self.for_message(message_id)
            .iter()
            .map(Delivery::status)
            .collect()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let event_id = headers
        .get("x-webhook-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let seen = {
        let mut attempts = state.attempts.lock().unwrap();
        let count = attempts.entry(event_id).or_default();
        *count += 1;
        *count
    };
    let answered = if seen <= *state.fail_first.lock().unwrap() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    state.deliveries.lock().unwrap().push(Delivery {
        headers,
        body,
        answered,
    });
    answered
}

/// The default test secret, for verifying signatures.
pub const SECRET: &str = DEV_WEBHOOK_SECRET;
