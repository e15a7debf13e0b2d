//! A test stack: the real gateway in process (on a random port) with its own
//! Postgres database and Redis prefix, plus the worker's inbox and callback
//! tasks started on demand. Webhooks reach the inbox the way Sent's do: signed
//! and POSTed to `/webhooks/sent`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::config::Config;
use common::domain::{EventSource, MessageId, MessageStatus};
use common::signature::{WebhookSecret, sign};
use common::store::{MessageRecord, StatusChange, Store};
use common::test_support::{TestDatabase, TestRedis};
use gateway::test_support::RunningGateway;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use common::test_support::{
    LEGACY_WEBHOOK_SECRET as LEGACY_SECRET, SENT_WEBHOOK_SECRET as SENT_SECRET,
};
pub const API_KEY: &str = "key-tester-0001";
pub const CLIENT: &str = "tester";
/// `CALLBACK_ALLOW_PRIVATE_NETWORKS` for receivers on this machine.
pub const LOOPBACK: &str = "127.0.0.0/8,::1/128";

pub struct Stack {
    pub db: TestDatabase,
    pub redis: TestRedis,
    pub config: Arc<Config>,
    pub base: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
}

impl Stack {
    /// Fast retries and polling, so tests finish quickly; `extra` overrides.
    pub async fn start(extra: &[(&str, &str)]) -> Stack {
        let db = TestDatabase::new().await;
        let redis = TestRedis::new();
        let mut vars: HashMap<String, String> = [
            ("APP_ENV", "testing"),
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_URL", redis.url.as_str()),
            ("REDIS_PREFIX", redis.prefix.as_str()),
            ("API_KEYS", &format!("{CLIENT}:{API_KEY}")),
            (
                "SENT_DM_WEBHOOK_SECRET",
                &format!("{SENT_SECRET},{LEGACY_SECRET}"),
            ),
            ("INBOX_POLL_INTERVAL_MS", "200"),
            ("INBOX_BACKOFF_BASE_MS", "20"),
            ("INBOX_BACKOFF_MAX_SECS", "1"),
            ("CALLBACK_POLL_INTERVAL_MS", "200"),
            ("CALLBACK_BACKOFF_BASE_MS", "20"),
            ("CALLBACK_BACKOFF_MAX_SECS", "1"),
            // The tests' callback receivers listen on loopback.
            ("CALLBACK_ALLOW_PRIVATE_NETWORKS", LOOPBACK),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_map(&vars).expect("test configuration");
        let base = RunningGateway::start(config.clone(), db.store.clone())
            .await
            .detach();
        Stack {
            db,
            redis,
            config: Arc::new(config),
            base,
            http: reqwest::Client::new(),
            shutdown: CancellationToken::new(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.db.store
    }

    /// Starts one inbox worker (call again for more).
    pub fn start_inbox(&self) -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(worker::inbox::run(
            self.store().clone(),
            self.config.clone(),
            self.shutdown.clone(),
        ))
    }

    pub fn start_callbacks(&self) -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(worker::callbacks::run(
            self.store().clone(),
            self.config.clone(),
            self.shutdown.clone(),
        ))
    }

    /// Submits a message through the gateway; returns our id.
    pub async fn submit(&self, api_key: &str, callback_url: Option<&str>) -> String {
        self.submit_to(api_key, "+14155550123", callback_url).await
    }

    /// [`Stack::submit`] to `phone_number`.
    pub async fn submit_to(
        &self,
        api_key: &str,
        phone_number: &str,
        callback_url: Option<&str>,
    ) -> String {
        let mut body = json!({"phone_number": phone_number, "template_id": "tmpl_1",
                              "metadata": {"order": "A-17"}});
        if let Some(url) = callback_url {
            body["callback_url"] = json!(url);
        }
        let response = self
            .http
            .post(format!("{}/api/messages/send", self.base))
            .bearer_auth(api_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        let answer: Value = response.json().await.unwrap();
        answer["message_id"].as_str().unwrap().to_owned()
    }

    /// What the send worker does when Sent answers 202: stores Sent's ids.
    pub async fn accept(&self, id: &str, sent_ids: &[&str]) {
        let id: MessageId = id.parse().unwrap();
        let ids: Vec<String> = sent_ids.iter().map(|s| s.to_string()).collect();
        self.store()
            .record_accepted(
                id,
                &ids,
                &StatusChange::new(MessageStatus::Accepted, EventSource::Worker),
            )
            .await
            .unwrap();
    }

    /// Stores Sent's ids the way an acceptance that woke no waiting event
    /// would (a worker of the release before the wake, during an upgrade):
    /// only the periodic re-check can find the events waiting for them.
    pub async fn accept_unwoken(&self, id: &str, sent_ids: &[&str]) {
        sqlx::query(
            "UPDATE messages SET status = 'accepted', accepted_at = now(), updated_at = now(),
                    provider_message_ids = $2, provider_message_id = $2[1]
              WHERE id = $1",
        )
        .bind(id)
        .bind(sent_ids)
        .execute(self.store().pool())
        .await
        .unwrap();
    }

    /// POSTs a Sent event, signed as Sent signs it; returns the HTTP status.
    pub async fn post_sent(&self, body: &Value, event_id: &str) -> reqwest::StatusCode {
        let body = serde_json::to_vec(body).unwrap();
        let ts = Utc::now().timestamp().to_string();
        let endpoint = "3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b";
        let signature = sign(
            &WebhookSecret::parse(SENT_SECRET).unwrap(),
            endpoint,
            &ts,
            &body,
        );
        self.http
            .post(format!("{}/webhooks/sent", self.base))
            .header("content-type", "application/json")
            .header("x-webhook-id", endpoint)
            .header("x-webhook-timestamp", ts)
            .header("x-webhook-signature", signature)
            .header("x-webhook-event-id", event_id)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn message(&self, id: &str) -> MessageRecord {
        self.store()
            .message(CLIENT, id.parse().unwrap())
            .await
            .unwrap()
            .expect("message exists")
    }

    /// Waits until the inbox row has left `pending` (or reached `state`).
    pub async fn wait_inbox_state(
        &self,
        event_id: &str,
        state: &str,
    ) -> common::store::InboxRecord {
        eventually(&format!("inbox event {event_id} to be {state}"), || async {
            self.store()
                .inbox_event("sent", event_id)
                .await
                .unwrap()
                .filter(|r| r.state == state)
        })
        .await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A Sent message event in the current envelope.
pub fn sent_event(event: &str, sent_id: &str, updated_at: &str) -> Value {
    let status = event.trim_start_matches("message.").to_uppercase();
    json!({"field": "message", "event": event, "timestamp": updated_at,
           "payload": {"message_id": sent_id, "message_status": status, "channel": "sms",
                       "outbound_number": "+14155550123", "updated_at": updated_at}})
}

/// Whether the request verifies with `secret` alone, as a receiver holding
/// only that secret checks it (the project's Standard Webhooks verifier).
pub fn verifies(secret: &WebhookSecret, headers: &axum::http::HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    common::signature::verify(
        std::slice::from_ref(secret),
        &header("webhook-id"),
        &header("webhook-timestamp"),
        &header("webhook-signature"),
        body,
        common::signature::DEFAULT_TOLERANCE,
        Utc::now().timestamp(),
    )
    .is_ok()
}

/// Polls `check` until it gives a value; a generous deadline, no timing claims.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
