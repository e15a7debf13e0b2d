//! Signed webhook delivery, retried like Sent: first retry after the base
//! delay, doubling, capped at 60 minutes, up to the configured retry count.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::CONTENT_TYPE;
use serde::Serialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::Sim;
use crate::api::wire::{InboundMessageEventPayload, MessageEventPayload};
use crate::config::{SimConfig, WebhookEnvelope};
use crate::faults::chance;
use crate::signature::SigningKey;
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

/// The envelope as Sent's current types name it: `event` and `payload`.
#[derive(Serialize)]
struct Outgoing<'a, P> {
    field: &'static str,
    event: &'static str,
    timestamp: &'a str,
    request_id: &'a str,
    payload: &'a P,
}

/// The variant seen in other official material: `sub_type` and `value`.
#[derive(Serialize)]
struct OutgoingSubType<'a, P> {
    field: &'static str,
    sub_type: &'static str,
    timestamp: &'a str,
    request_id: &'a str,
    value: &'a P,
}

/// A `message` envelope around `payload`, in `style`.
fn envelope<P: Serialize>(
    event: &'static str,
    request_id: &str,
    payload: &P,
    style: WebhookEnvelope,
) -> Bytes {
    let timestamp = rfc3339(Utc::now());
    let body = match style {
        WebhookEnvelope::Event => serde_json::to_vec(&Outgoing {
            field: "message",
            event,
            timestamp: &timestamp,
            request_id,
            payload,
        }),
        WebhookEnvelope::SubType => serde_json::to_vec(&OutgoingSubType {
            field: "message",
            sub_type: event,
            timestamp: &timestamp,
            request_id,
            value: payload,
        }),
    };
    body.expect("a webhook envelope serializes").into()
}

impl Event {
    /// The `message.<status>` event of a status change that happened `at`.
    pub fn message(
        meta: &MessageMeta,
        status: Status,
        at: DateTime<Utc>,
        reason: Option<Reason>,
        style: WebhookEnvelope,
    ) -> Event {
        let payload = MessageEventPayload {
            message_id: meta.id.to_string(),
            message_status: status.as_str(),
            channel: meta.channel,
            outbound_number: meta.to.clone(),
            template_id: meta.template_id.as_deref().map(str::to_owned),
            template_name: meta.template_name.as_deref().map(str::to_owned),
            account_id: meta.account_id.to_string(),
            updated_at: rfc3339(at),
            body: meta.body.as_deref().map(str::to_owned),
            reason_code: reason.map(|r| r.code),
            reason: reason.map(|r| r.text),
            scheduled_at: match status {
                Status::Scheduled => meta.scheduled_at.map(rfc3339),
                _ => None,
            },
        };
        Event {
            id: Uuid::new_v4().to_string(),
            name: status.event(),
            message_id: meta.id,
            body: envelope(status.event(), &meta.request_id, &payload, style),
        }
    }

    /// A `message.received` event: a contact wrote to one of the account's
    /// numbers (`POST /_sim/inbound`).
    pub fn inbound(payload: &InboundMessageEventPayload, style: WebhookEnvelope) -> Event {
        Event {
            id: Uuid::new_v4().to_string(),
            name: "message.received",
            // Sent's id of the inbound message (logged on abandon).
            message_id: payload
                .message_id
                .parse()
                .unwrap_or_else(|_| Uuid::new_v4()),
            body: envelope(
                "message.received",
                &crate::api::new_request_id(),
                payload,
                style,
            ),
        }
    }
}

/// The webhook endpoint and the means to call it.
#[derive(Debug)]
pub(crate) struct Webhooks {
    client: reqwest::Client,
    permits: Semaphore,
    url: RwLock<Option<Arc<str>>>,
    key: SigningKey,
    /// Send `X-Webhook-Event-ID` (off: the deliveries some official samples show).
    event_id_header: bool,
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
            key: config.webhook_secret.clone(),
            event_id_header: config.webhook_event_id_header,
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
        let signature = self.key.sign(&self.endpoint_id, &timestamp, &event.body);
        let mut request = self
            .client
            .post(&*url)
            .header(CONTENT_TYPE, "application/json")
            .header("x-webhook-signature", signature)
            .header("x-webhook-id", &self.endpoint_id)
            .header("x-webhook-timestamp", timestamp);
        if self.event_id_header {
            request = request.header("X-Webhook-Event-ID", &event.id);
        }
        let result = request.body(event.body.clone()).send().await;
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
/// first attempt is retried in the background. Returns whether the first
/// attempt was delivered.
pub(crate) async fn deliver(sim: &Arc<Sim>, event: Event) -> bool {
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
    first == Attempt::Delivered
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
