//! Status callbacks to clients.
//!
//! `Store::change_status` writes a `status_callbacks` row in the same
//! statement as every status change of a message that has a `callback_url`.
//! This task claims due rows (`FOR UPDATE SKIP LOCKED`, leased, committed
//! before any HTTP call, so several workers share the work and none holds a
//! transaction open across the network), POSTs them, records every attempt,
//! and retries failures with exponential backoff until `CALLBACK_MAX_ATTEMPTS`,
//! after which the callback is marked `failed`. Callbacks of one message are
//! delivered in order. Woken by the `status_callbacks` notification, with
//! polling as a fallback.
//!
//! # The request
//!
//! `POST <callback_url>`, `Content-Type: application/json`, body:
//!
//! ```json
//! {"type": "message.status", "event": "message.delivered", "message_id": "01J...",
//!  "status": "delivered", "previous_status": "sent", "at": "2026-01-01T00:00:00.000Z",
//!  "metadata": {"order": "A-17"}, "channel": "sms"}
//! ```
//!
//! (`error_code` and `error` are added for failures; `previous_status` and
//! `channel` appear when known.) Signed by the Standard Webhooks scheme:
//! `webhook-id` (the delivery's id, the same on every retry: deduplicate on
//! it), `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>`.
//! Any 2xx within `CALLBACK_TIMEOUT_SECS` is success; redirects are not followed.
//!
//! # The signing secret
//!
//! Per API key. A managed key (`gateway keys create`) has its own random
//! `whsec_` secret, printed at creation (`api_keys.callback_secret`). A
//! bootstrap key from `API_KEYS` has a secret derived from the key itself,
//! so nothing extra needs configuring or storing: the key bytes are
//! `HMAC-SHA256(key = <the API key>, message = "callback-signing")`, i.e.
//! `whsec_` + base64 of
//! `printf %s callback-signing | openssl dgst -sha256 -hmac "$API_KEY" -binary`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::config::Config;
use common::domain::api_time;
use common::signature::{WebhookSecret, headers, sign};
use common::store::{CallbackAttempt, CallbackDelivery, CallbackNext, Store};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::listen::listen;

/// Notification channel the outbox's insert trigger uses.
pub const CHANNEL: &str = "status_callbacks";

/// The message signed to derive a bootstrap key's callback secret.
pub const BOOTSTRAP_DERIVATION: &[u8] = b"callback-signing";

/// How long a managed key's secret is cached.
const SECRET_CACHE_TTL: Duration = Duration::from_secs(60);

/// Longest error text stored per attempt.
const MAX_ERROR_LEN: usize = 500;

/// The callback secret of a bootstrap (`API_KEYS`) key: see the module docs.
pub fn bootstrap_callback_secret(api_key: &str) -> WebhookSecret {
    let mut mac = Hmac::<Sha256>::new_from_slice(api_key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(BOOTSTRAP_DERIVATION);
    WebhookSecret::from_bytes(mac.finalize().into_bytes().to_vec()).expect("32 bytes")
}

/// Delivers due callbacks until `shutdown` is cancelled, then finishes the
/// deliveries in flight (each bounded by the timeout).
pub async fn run(
    store: Store,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &config.callbacks;
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "sent-gateway-callbacks/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()?;
    let secrets = Arc::new(Secrets::new(&config, store.clone()));
    // A claim outlives the longest attempt, so it never lapses mid-call.
    let lease = settings.timeout * 2 + Duration::from_secs(30);
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(
        store.clone(),
        CHANNEL,
        wake.clone(),
        shutdown.clone(),
    ));
    let mut in_flight = JoinSet::new();
    tracing::info!("callback sender started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let room = settings.concurrency.saturating_sub(in_flight.len());
        if room > 0 {
            match store.claim_callbacks(room as i64, lease).await {
                Ok(claimed) => {
                    for delivery in claimed {
                        let (store, client, secrets, config) = (
                            store.clone(),
                            client.clone(),
                            secrets.clone(),
                            config.clone(),
                        );
                        in_flight.spawn(async move {
                            deliver(&store, &client, &secrets, &config, delivery).await
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "callbacks: could not claim deliveries; will retry")
                }
            }
        }
        tokio::select! {
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(settings.poll_interval) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
    listener.abort();
    tracing::info!("callback sender stopped");
    Ok(())
}

/// The JSON body of a callback.
pub fn payload(delivery: &CallbackDelivery) -> Value {
    let mut body = Map::new();
    body.insert("type".into(), json!("message.status"));
    body.insert(
        "event".into(),
        json!(format!("message.{}", delivery.status)),
    );
    body.insert("message_id".into(), json!(delivery.message_id));
    body.insert("status".into(), json!(delivery.status));
    if let Some(previous) = &delivery.previous_status {
        body.insert("previous_status".into(), json!(previous));
    }
    body.insert("at".into(), json!(api_time(delivery.at)));
    body.insert("metadata".into(), delivery.metadata.clone());
    for (key, value) in [
        ("channel", &delivery.channel),
        ("error_code", &delivery.error_code),
        ("error", &delivery.error),
    ] {
        if let Some(value) = value {
            body.insert(key.into(), json!(value));
        }
    }
    Value::Object(body)
}

/// One attempt: sign, POST, record. Never returns an error: every outcome is
/// written to the attempt log (if even that fails, the lease expires and the
/// attempt is made again).
async fn deliver(
    store: &Store,
    client: &reqwest::Client,
    secrets: &Secrets,
    config: &Config,
    delivery: CallbackDelivery,
) {
    let started_at = Utc::now();
    let clock = Instant::now();
    let (status_code, error) = match secrets.for_client(&delivery.client).await {
        Ok(Some(secret)) => post(client, &secret, &delivery).await,
        Ok(None) => (
            None,
            Some(format!(
                "no callback signing secret for API key '{}'",
                delivery.client
            )),
        ),
        Err(e) => (
            None,
            Some(format!("could not read the callback secret: {e}")),
        ),
    };
    let duration = clock.elapsed();
    let settings = &config.callbacks;
    let next = if error.is_none() {
        CallbackNext::Delivered
    } else if delivery.attempts as u32 >= settings.max_attempts {
        CallbackNext::GiveUp
    } else {
        let delay = settings
            .backoff
            .spread(delivery.attempts as u32, &mut rand::rng());
        CallbackNext::RetryAt(
            Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
        )
    };
    let outcome = match next {
        CallbackNext::Delivered => "delivered",
        CallbackNext::RetryAt(_) => "retrying",
        CallbackNext::GiveUp => "given_up",
    };
    // By API key name (few): the alert says whose endpoint is failing.
    metrics::counter!(common::metrics::CALLBACKS, "client" => delivery.client.clone(), "outcome" => outcome)
        .increment(1);
    let (id, webhook_id, message_id) = (delivery.id, &delivery.webhook_id, &delivery.message_id);
    match (&next, &error) {
        (CallbackNext::Delivered, _) => tracing::debug!(
            message_id, webhook_id, status = %delivery.status, attempt = delivery.attempts,
            ms = duration.as_millis() as u64, "status callback delivered"
        ),
        (CallbackNext::RetryAt(at), Some(error)) => tracing::info!(
            message_id, webhook_id, attempt = delivery.attempts, status_code, error, retry_at = %at,
            "status callback failed; will retry"
        ),
        (_, error) => tracing::warn!(
            message_id,
            webhook_id,
            attempt = delivery.attempts,
            status_code,
            error,
            "status callback given up after its last attempt"
        ),
    }
    let attempt = CallbackAttempt {
        id,
        attempt: delivery.attempts,
        started_at,
        duration,
        status_code,
        error,
        next,
    };
    if let Err(e) = store.record_callback_attempt(&attempt).await {
        tracing::warn!(error = %e, message_id, webhook_id, "could not record a callback attempt");
    }
}

/// The POST itself: `(HTTP status, error)`, the error `None` on a 2xx.
async fn post(
    client: &reqwest::Client,
    secret: &WebhookSecret,
    delivery: &CallbackDelivery,
) -> (Option<u16>, Option<String>) {
    let body = match serde_json::to_vec(&payload(delivery)) {
        Ok(body) => body,
        Err(e) => return (None, Some(format!("could not encode the body: {e}"))),
    };
    let timestamp = Utc::now().timestamp().to_string();
    let signature = sign(secret, &delivery.webhook_id, &timestamp, &body);
    let sent = client
        .post(&delivery.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(headers::WEBHOOK_ID, &delivery.webhook_id)
        .header(headers::WEBHOOK_TIMESTAMP, &timestamp)
        .header(headers::WEBHOOK_SIGNATURE, signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => {
            let status = response.status();
            (Some(status.as_u16()), Some(format!("HTTP {status}")))
        }
        // Without the URL: it is the client's and may carry a token.
        Err(e) => (None, Some(truncate(describe(&e.without_url())))),
    }
}

fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_redirect() {
        "redirect not followed"
    } else {
        "request failed"
    };
    // The innermost cause says the most (connection refused, dns error, ...).
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Signing secrets by API key name: bootstrap keys' derived ones, and managed
/// keys' from the database (cached briefly).
struct Secrets {
    bootstrap: HashMap<String, WebhookSecret>,
    store: Store,
    cache: Mutex<HashMap<String, (Option<WebhookSecret>, Instant)>>,
}

impl Secrets {
    fn new(config: &Config, store: Store) -> Secrets {
        let bootstrap = config
            .api_keys
            .iter()
            .map(|(name, key)| (name.clone(), bootstrap_callback_secret(key.expose())))
            .collect();
        Secrets {
            bootstrap,
            store,
            cache: Mutex::default(),
        }
    }

    async fn for_client(&self, client: &str) -> Result<Option<WebhookSecret>, sqlx::Error> {
        if let Some(secret) = self.bootstrap.get(client) {
            return Ok(Some(secret.clone()));
        }
        if let Some((secret, at)) = self.cache.lock().unwrap().get(client)
            && at.elapsed() < SECRET_CACHE_TTL
        {
            return Ok(secret.clone());
        }
        let secret = match self.store.callback_secret(client).await? {
            Some(text) => match WebhookSecret::parse(&text) {
                Ok(secret) => Some(secret),
                Err(_) => {
                    tracing::error!(
                        client,
                        "api_keys.callback_secret is not a valid whsec_ secret"
                    );
                    None
                }
            },
            None => None,
        };
        self.cache
            .lock()
            .unwrap()
            .insert(client.to_owned(), (secret.clone(), Instant::now()));
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_secret_matches_openssl() {
        // printf %s callback-signing | openssl dgst -sha256 -hmac 'key-aaaaaaaa' -binary | base64
        let secret = bootstrap_callback_secret("key-aaaaaaaa");
        assert_eq!(
            secret.to_whsec_string(),
            "whsec_Xj9ewGkiVNnH+XXqBTTychKVCHtaU0UHbyVfbS9cJRQ="
        );
    }

    #[test]
    fn payload_shape() {
        let delivery = CallbackDelivery {
            id: 1,
            webhook_id: "cb_1".into(),
            message_id: "01J".into(),
            client: "a".into(),
            url: "https://x".into(),
            status: "failed".into(),
            previous_status: Some("sent".into()),
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
            error_code: Some("DELIVERY_007".into()),
            error: Some("unreachable".into()),
            channel: None,
            attempts: 1,
            metadata: json!({"order": "A-17"}),
        };
        assert_eq!(
            payload(&delivery),
            json!({"type": "message.status", "event": "message.failed", "message_id": "01J", "status": "failed",
                   "previous_status": "sent", "at": "2026-01-01T00:00:00.000Z", "metadata": {"order": "A-17"},
                   "error_code": "DELIVERY_007", "error": "unreachable"})
        );
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let text = "é".repeat(400);
        let cut = truncate(text);
        assert!(cut.len() <= MAX_ERROR_LEN && cut.chars().all(|c| c == 'é'));
    }
}
