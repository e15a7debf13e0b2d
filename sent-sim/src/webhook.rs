//! Signed webhook delivery, retried like Sent: first retry after the base
//! delay, doubling, capped at 60 minutes, up to the configured retry count.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::sent::wire::MessageEventPayload;
use common::signature::{WebhookSecret, sign};
use http::header::CONTENT_TYPE;
use serde::Serialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::Sim;
use crate::config::SimConfig;
use crate::faults::chance;
use crate::stats::bump;
use crate::store::{MessageMeta, Reason, Status};
use crate::util::{rfc3339, sleep_or_cancel};

/// Longest wait between two attempts, as at Sent.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3_600);

/// One webhook event: its body is fixed, retries and duplicates resend it as is.
#[derive(Debug)]
pub(crate) struct Event {
    /// `X-Webhook-Event-ID`.
    pub id: String,
    pub name: &'static str,
    pub message_id: Uuid,
    pub body: Bytes,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    field: &'static str,
    event: &'static str,
    timestamp: &'a str,
    request_id: &'a str,
    payload: &'a MessageEventPayload,
}

impl Event {
    /// The `message.<status>` event of a status change that happened `at`.
    pub fn message(
        meta: &MessageMeta,
        status: Status,
        at: DateTime<Utc>,
        reason: Option<Reason>,
    ) -> Event {
        let payload = MessageEventPayload {
            message_id: meta.id.to_string(),
            message_status: Some(status.as_str().to_owned()),
            channel: Some(meta.channel.to_owned()),
            outbound_number: Some(meta.to.clone()),
            inbound_number: None,
            template_id: meta.template_id.as_deref().map(str::to_owned),
            template_name: meta.template_name.as_deref().map(str::to_owned),
            account_id: Some(meta.account_id.to_string()),
            updated_at: Some(rfc3339(at)),
            body: meta.body.as_deref().map(str::to_owned),
            reason_code: reason.map(|r| r.code.to_owned()),
            reason: reason.map(|r| r.text.to_owned()),
            scheduled_at: match status {
                Status::Scheduled => meta.scheduled_at.map(rfc3339),
                _ => None,
            },
            text: None,
        };
        let envelope = Outgoing {
            field: "message",
            event: status.event(),
            timestamp: &rfc3339(Utc::now()),
            request_id: &meta.request_id,
            payload: &payload,
        };
        Event {
            id: Uuid::new_v4().to_string(),
            name: status.event(),
            message_id: meta.id,
            body: serde_json::to_vec(&envelope)
                .expect("a webhook envelope serializes")
                .into(),
        }
    }
}

/// The webhook endpoint and the means to call it.
#[derive(Debug)]
pub(crate) struct Webhooks {
    client: reqwest::Client,
    permits: Semaphore,
    url: RwLock<Option<Arc<str>>>,
    secret: WebhookSecret,
    /// `x-webhook-id`: the endpoint's id, the same on every delivery.
    pub endpoint_id: String,
    retries: u32,
    retry_base: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Delivered,
    Failed,
    NoEndpoint,
}

impl Webhooks {
    pub fn new(config: &SimConfig) -> anyhow::Result<Webhooks> {
        let client = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .connect_timeout(config.webhook_timeout)
            .pool_max_idle_per_host(config.webhook_concurrency)
            .tcp_nodelay(true)
            .user_agent(concat!("sent-sim/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhooks {
            client,
            permits: Semaphore::new(config.webhook_concurrency.max(1)),
            url: RwLock::new(config.webhook_url.as_deref().map(Arc::from)),
            secret: config.webhook_secret.clone(),
            endpoint_id: config
                .webhook_id
                .clone()
                .unwrap_or_else(|| Uuid::new_v4().to_string()),
            retries: config.webhook_retries,
            retry_base: config.webhook_retry_base,
        })
    }

    pub fn url(&self) -> Option<Arc<str>> {
        self.url.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_url(&self, url: Option<String>) {
        *self.url.write().unwrap_or_else(|e| e.into_inner()) = url.map(Arc::from);
    }

    async fn attempt(&self, sim: &Sim, event: &Event) -> Attempt {
        let Some(url) = self.url() else {
            return Attempt::NoEndpoint;
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::NoEndpoint;
        };
        let timestamp = Utc::now().timestamp().to_string();
        let signature = sign(&self.secret, &self.endpoint_id, &timestamp, &event.body);
        let result = self
            .client
            .post(&*url)
            .header(CONTENT_TYPE, "application/json")
            .header("x-webhook-signature", signature)
            .header("x-webhook-id", &self.endpoint_id)
            .header("x-webhook-timestamp", timestamp)
            .header("X-Webhook-Event-ID", &event.id)
            .body(event.body.clone())
            .send()
            .await;
        let outcome = match result {
            Ok(response) => {
                let status = response.status();
                // Read the (small) answer so the connection goes back to the pool.
                let _ = response.bytes().await;
                if status.is_success() {
                    Attempt::Delivered
                } else {
                    tracing::debug!(event_id = %event.id, event = event.name, %status, "webhook refused");
                    Attempt::Failed
                }
            }
            Err(err) => {
                tracing::debug!(event_id = %event.id, event = event.name, error = %err, "webhook attempt failed");
                Attempt::Failed
            }
        };
        match outcome {
            Attempt::Delivered => bump(&sim.counters.webhooks_delivered),
            Attempt::Failed => bump(&sim.counters.webhook_failures),
            Attempt::NoEndpoint => {}
        }
        outcome
    }
}

/// Delivers `event` once now (twice under the duplicate fault); a failed
/// first attempt is retried in the background.
pub(crate) async fn deliver(sim: &Arc<Sim>, event: Event) {
    let first = sim.webhooks.attempt(sim, &event).await;
    if first != Attempt::NoEndpoint && chance(sim.faults.get().duplicate_webhook) {
        bump(&sim.counters.fault_duplicate_webhook);
        sim.webhooks.attempt(sim, &event).await;
    }
    if first == Attempt::Failed {
        if sim.webhooks.retries == 0 {
            bump(&sim.counters.webhooks_abandoned);
        } else {
            let sim = Arc::clone(sim);
            tokio::spawn(async move { retry(&sim, event).await });
        }
    }
}

async fn retry(sim: &Arc<Sim>, event: Event) {
    let webhooks = &sim.webhooks;
    let mut delay = webhooks.retry_base;
    for _ in 0..webhooks.retries {
        if !sleep_or_cancel(delay, &sim.cancel).await {
            return;
        }
        if webhooks.attempt(sim, &event).await != Attempt::Failed {
            return;
        }
        delay = delay.saturating_mul(2).min(MAX_RETRY_DELAY);
    }
    bump(&sim.counters.webhooks_abandoned);
    tracing::warn!(
        event_id = %event.id,
        event = event.name,
        message_id = %event.message_id,
        "webhook abandoned after {} retries",
        webhooks.retries
    );
}
