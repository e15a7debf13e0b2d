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
use common::sent::wire::{MessageEventPayload, WebhookEnvelope};
use common::signature::{DEFAULT_TOLERANCE, WebhookSecret, verify};
use sent_sim::{DEV_WEBHOOK_SECRET, SimConfig, SimHandle};
use serde_json::Value;
use tokio::net::TcpListener;

pub const KEY: &str = "sim_test_key";

pub async fn start(config: SimConfig) -> SimHandle {
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

    pub fn envelope(&self) -> WebhookEnvelope {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn payload(&self) -> MessageEventPayload {
        self.envelope().message_payload().unwrap()
    }

    /// Checks the signature exactly as the gateway does.
    pub fn verify(&self, secret: &str) {
        let secret = WebhookSecret::parse(secret).unwrap();
        verify(
            &[secret],
            self.header("x-webhook-id"),
            self.header("x-webhook-timestamp"),
            self.header("x-webhook-signature"),
            &self.body,
            DEFAULT_TOLERANCE,
            chrono::Utc::now().timestamp(),
        )
        .unwrap();
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
            .filter(|d| d.answered.is_success() && d.payload().message_id == message_id)
            .collect()
    }

    /// Statuses of the successful deliveries about one message, in arrival order.
    pub fn statuses(&self, message_id: &str) -> Vec<String> {
        self.for_message(message_id)
            .iter()
            .map(|d| d.payload().message_status.unwrap())
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
