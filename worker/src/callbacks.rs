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
//! # Fairness between clients
//!
//! Claims go round-robin across clients (API keys), and a client has at
//! most `CALLBACK_PER_CLIENT_CONCURRENCY` deliveries in flight in one worker
//! (default half of `CALLBACK_CONCURRENCY`; `Store::claim_callbacks`). So a
//! client whose receiver hangs, with any backlog, holds at most that share
//! of a worker's deliveries for up to `CALLBACK_TIMEOUT_SECS` each, and the
//! other clients' callbacks go out beside it with the rest.
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
//! `channel` appear when known.)
//!
//! A reply routed to the client ([`crate::inbox`]) goes the same way, to its
//! inbound URL, as `message.inbound`, its body made when it was routed:
//!
//! ```json
//! {"type": "message.inbound", "event_id": "evt_...", "from": "+14155550123",
//!  "to": "+18005550000", "text": "Yes, please", "media": [], "channel": "sms",
//!  "sent_message_id": "...", "received_at": "2026-01-01T00:00:00.000Z",
//!  "in_reply_to": "01J..."}
//! ```
//!
//! Both are signed by the Standard Webhooks scheme:
//! `webhook-id` (the delivery's id, the same on every retry: deduplicate on
//! it), `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>`,
//! with one such entry per secret (space-separated) during a transition.
//! Any 2xx within `CALLBACK_TIMEOUT_SECS` is success; redirects are not followed.
//!
//! # Where callbacks may go
//!
//! Only to public addresses, plus the networks of
//! `CALLBACK_ALLOW_PRIVATE_NETWORKS` (`OutboundPolicy`): a `callback_url`
//! is the client's, and the worker calls it from inside our network. The
//! gateway refuses literal private addresses at accept time, but a name can
//! resolve anywhere, and differently on each lookup (DNS rebinding). So the
//! client (`crate::webhook_client`) resolves names with a checked resolver, which drops every address
//! the policy refuses: reqwest connects to exactly the addresses that were
//! checked, with no second lookup in between. A literal address never
//! reaches a resolver, so it is checked before the request; no proxy is used
//! (a proxy would resolve the name itself) and no redirect is followed (its
//! target would not be checked). A refused callback is not retried: the
//! answer would be the same (a rebinding name may resolve elsewhere later,
//! which is the point of refusing it), and the attempt records why.
//!
//! # The signing secret
//!
//! Per API key (`common::signature::callback`). A managed key (`gateway
//! keys create`) has its own random `whsec_` secret, printed at creation
//! (`api_keys.callback_secret`), and after `gateway keys rotate-secret` its
//! previous one signs too until the end of the transition. A bootstrap key
//! from `API_KEYS` has a secret derived from `CALLBACK_SIGNING_KEY` and its
//! name (not from the key itself); the secrets derived from
//! `CALLBACK_SIGNING_KEY_PREVIOUS`, and until `CALLBACK_LEGACY_SECRET_UNTIL`
//! the previous releases' secret derived from the API key, sign too.
//! `gateway keys secret NAME` prints a key's current secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::config::Config;
use common::domain::api_time;
use common::group_commit::{Batching, GroupCommit};
use common::signature::callback::CallbackSecrets;
use common::store::{CallbackAttempt, CallbackDelivery, CallbackKind, CallbackNext, Store};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::deliveries::{self, Pace};
use crate::listen::listen;
use crate::webhook_client::{self, Outcome, SignedPost, post_signed, refused_literal, truncate};

/// Notification channel the outbox's insert trigger uses.
pub const CHANNEL: &str = "status_callbacks";

/// Claims at least this far apart ([`Pace::gap`]). A claim takes Postgres
/// about 1 ms (half of it planning) for one callback or for thirty, and
/// `bench/wal.sh` made one per callback: a tenth of Postgres' time. Spaced
/// 25 ms, a worker's claims take at most 4% of a core whatever the load,
/// and a status callback is at most that much later.
const CLAIM_GAP: Duration = Duration::from_millis(25);

/// How long a managed key's secret is cached.
const SECRET_CACHE_TTL: Duration = Duration::from_secs(60);

/// Delivers due callbacks until `shutdown` is cancelled, then finishes the
/// deliveries in flight (each bounded by the timeout).
pub async fn run(
    store: Store,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &config.callbacks;
    let client = webhook_client::client(settings.timeout, &config.callback_policy, "callbacks")?;
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
    let by_client = InFlight::default();
    tracing::info!("callback sender started");
    let signing = &config.callback_signing;
    if signing.previous_key.is_some() {
        tracing::info!(
            "callbacks of API_KEYS keys are signed under CALLBACK_SIGNING_KEY_PREVIOUS too, \
             until it is removed"
        );
    }
    if let Some(until) = signing.legacy_until.filter(|until| *until > Utc::now()) {
        tracing::info!(
            until = %until.to_rfc3339(),
            "callbacks of API_KEYS keys are signed with the secret derived from the API key too \
             (CALLBACK_LEGACY_SECRET_UNTIL)"
        );
    }
    let pace = Pace {
        concurrency: settings.concurrency,
        poll_interval: settings.poll_interval,
        gap: CLAIM_GAP,
    };
    let claim = |room: usize| {
        let in_flight = by_client.counts();
        let store = &store;
        async move {
            let per_client = settings.per_client_concurrency as i64;
            store
                .claim_callbacks(room as i64, lease, per_client, &in_flight)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "callbacks: could not claim deliveries; will retry");
                    Vec::new()
                })
        }
    };
    // Outcomes are written in one statement for all that end together.
    let records = {
        let store = store.clone();
        GroupCommit::start(
            Batching::new(1, settings.concurrency),
            move |attempts: Vec<CallbackAttempt>| {
                let store = store.clone();
                async move {
                    store.record_callback_attempts(&attempts).await?;
                    Ok(vec![(); attempts.len()])
                }
            },
        )
    };
    let start = |delivery: CallbackDelivery| {
        let (records, client, secrets, config) = (
            records.clone(),
            client.clone(),
            secrets.clone(),
            config.clone(),
        );
        let slot = by_client.take(&delivery.client);
        async move {
            deliver(&records, &client, &secrets, &config, delivery).await;
            drop(slot);
        }
    };
    deliveries::run(pace, &wake, &shutdown, claim, start).await;
    listener.abort();
    tracing::info!("callback sender stopped");
    Ok(())
}

/// This worker's deliveries in flight, by client, for fair claims.
#[derive(Clone, Default)]
struct InFlight(Arc<Mutex<HashMap<String, usize>>>);

/// One delivery of a client in flight; counted until dropped (even by a
/// panicking delivery).
struct Slot {
    in_flight: InFlight,
    client: String,
}

impl InFlight {
    fn counts(&self) -> HashMap<String, usize> {
        self.0.lock().unwrap().clone()
    }

    fn take(&self, client: &str) -> Slot {
        *self.0.lock().unwrap().entry(client.to_owned()).or_default() += 1;
        Slot {
            in_flight: self.clone(),
            client: client.to_owned(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.in_flight.0.lock().unwrap();
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// The JSON body of a callback: an inbound one's as it was made when the
/// reply was routed, a status one's from the change.
pub fn payload(delivery: &CallbackDelivery) -> Value {
    if delivery.kind == CallbackKind::Inbound {
        return delivery.payload.clone().unwrap_or(Value::Null);
    }
    let status = delivery.status.as_deref().unwrap_or_default();
    let mut body = Map::new();
    body.insert("type".into(), json!("message.status"));
    body.insert("event".into(), json!(format!("message.{status}")));
    body.insert("message_id".into(), json!(delivery.message_id));
    body.insert("status".into(), json!(status));
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
    records: &GroupCommit<CallbackAttempt, ()>,
    client: &reqwest::Client,
    secrets: &Secrets,
    config: &Config,
    delivery: CallbackDelivery,
) {
    let started_at = Utc::now();
    let clock = Instant::now();
    // What the attempt log and the logs call the URL (never by itself).
    let what = match delivery.kind {
        CallbackKind::Status => "callback_url",
        CallbackKind::Inbound => "inbound_url",
    };
    let result = match refused_literal(&config.callback_policy, &delivery.url) {
        Some(refused) => Outcome::Refused(refused),
        None => match secrets.for_client(&delivery.client).await {
            Ok(Some(secrets)) => post(client, &secrets, &delivery).await,
            Ok(None) => Outcome::Failed(
                None,
                format!(
                    "no callback signing secret for API key '{}'",
                    delivery.client
                ),
            ),
            Err(e) => Outcome::Failed(None, format!("could not read the callback secret: {e}")),
        },
    };
    let duration = clock.elapsed();
    let settings = &config.callbacks;
    let (status_code, error) = match &result {
        Outcome::Delivered(code) => (Some(*code), None),
        Outcome::Failed(code, error) => (*code, Some(error.clone())),
        Outcome::Refused(refused) => (None, Some(truncate(refused.describe(what)))),
    };
    let next = match &result {
        Outcome::Delivered(_) => CallbackNext::Delivered,
        // The same URL would be refused again: no retry.
        Outcome::Refused(_) => CallbackNext::GiveUp,
        Outcome::Failed(..) if delivery.attempts as u32 >= settings.max_attempts => {
            CallbackNext::GiveUp
        }
        Outcome::Failed(..) => {
            let delay = settings
                .backoff
                .spread(delivery.attempts as u32, &mut rand::rng());
            CallbackNext::RetryAt(
                Utc::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
            )
        }
    };
    let outcome = match (&result, &next) {
        (Outcome::Refused(_), _) => "refused",
        (_, CallbackNext::Delivered) => "delivered",
        (_, CallbackNext::RetryAt(_)) => "retrying",
        (_, CallbackNext::GiveUp) => "given_up",
    };
    // By API key name (few): the alert says whose endpoint is failing.
    metrics::counter!(common::metrics::CALLBACKS, "client" => delivery.client.clone(), "outcome" => outcome)
        .increment(1);
    let (id, webhook_id, kind) = (delivery.id, &delivery.webhook_id, delivery.kind);
    let message_id = delivery.message_id.as_deref().unwrap_or_default();
    let inbox_id = delivery.inbox_id;
    match (&next, &error) {
        // The reason names the refused addresses, never the URL (which may
        // carry a token).
        _ if matches!(result, Outcome::Refused(_)) => tracing::warn!(
            %kind,
            message_id,
            inbox_id,
            webhook_id,
            attempt = delivery.attempts,
            error,
            "status callback refused: its URL reaches no allowed address; not retried"
        ),
        (CallbackNext::Delivered, _) => tracing::debug!(
            %kind, message_id, inbox_id, webhook_id, status = delivery.status, attempt = delivery.attempts,
            ms = duration.as_millis() as u64, "status callback delivered"
        ),
        (CallbackNext::RetryAt(at), Some(error)) => tracing::info!(
            %kind, message_id, inbox_id, webhook_id, attempt = delivery.attempts, status_code, error, retry_at = %at,
            "status callback failed; will retry"
        ),
        (_, error) => tracing::warn!(
            %kind,
            message_id,
            inbox_id,
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
    if let Err(e) = records.submit(attempt).await {
        tracing::warn!(error = %e, message_id, inbox_id, webhook_id, "could not record a callback attempt");
    }
}

/// The POST itself, through the shared signed client.
async fn post(
    client: &reqwest::Client,
    secrets: &CallbackSecrets,
    delivery: &CallbackDelivery,
) -> Outcome {
    let body = match serde_json::to_vec(&payload(delivery)) {
        Ok(body) => body,
        Err(e) => return Outcome::Failed(None, format!("could not encode the body: {e}")),
    };
    let request = SignedPost {
        url: &delivery.url,
        webhook_id: &delivery.webhook_id,
        content_type: "application/json",
        body,
        extra: Vec::new(),
    };
    post_signed(client, request, |timestamp, body, now| {
        secrets.sign(&delivery.webhook_id, timestamp, body, now)
    })
    .await
}

/// Signing secrets by API key name: bootstrap keys' derived ones, and managed
/// keys' from the database (cached briefly: a rotation is signed with
/// within [`SECRET_CACHE_TTL`]).
struct Secrets {
    bootstrap: HashMap<String, CallbackSecrets>,
    store: Store,
    cache: Mutex<HashMap<String, (Option<CallbackSecrets>, Instant)>>,
}

impl Secrets {
    fn new(config: &Config, store: Store) -> Secrets {
        let bootstrap = config
            .api_keys
            .iter()
            .map(|key| {
                // One name may have several keys (a key being rotated).
                let keys = config.api_keys.iter().filter(|k| k.name == key.name);
                let secrets = CallbackSecrets::bootstrap(
                    &config.callback_signing,
                    &key.name,
                    keys.map(|k| &k.key),
                );
                (key.name.clone(), secrets)
            })
            .collect();
        Secrets {
            bootstrap,
            store,
            cache: Mutex::default(),
        }
    }

    async fn for_client(&self, client: &str) -> Result<Option<CallbackSecrets>, sqlx::Error> {
        if let Some(secrets) = self.bootstrap.get(client) {
            return Ok(Some(secrets.clone()));
        }
        if let Some((secrets, at)) = self.cache.lock().unwrap().get(client)
            && at.elapsed() < SECRET_CACHE_TTL
        {
            return Ok(secrets.clone());
        }
        let secrets = match self.store.callback_secrets(client).await? {
            Some(stored) => match CallbackSecrets::managed(
                &stored.callback_secret,
                stored.previous_callback_secret.as_deref(),
                stored.previous_callback_secret_until,
            ) {
                Ok(secrets) => Some(secrets),
                Err(_) => {
                    tracing::error!(
                        client,
                        "api_keys.callback_secret (or its previous) is not a valid whsec_ secret"
                    );
                    None
                }
            },
            None => None,
        };
        self.cache
            .lock()
            .unwrap()
            .insert(client.to_owned(), (secrets.clone(), Instant::now()));
        Ok(secrets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_deliveries_are_counted_until_dropped() {
        let in_flight = InFlight::default();
        let a = in_flight.take("a");
        let a2 = in_flight.take("a");
        let b = in_flight.take("b");
        assert_eq!(
            in_flight.counts(),
            HashMap::from([("a".into(), 2), ("b".into(), 1)])
        );
        drop((a, b));
        assert_eq!(in_flight.counts(), HashMap::from([("a".into(), 1)]));
        drop(a2);
        assert!(in_flight.counts().is_empty());
    }

    #[test]
    fn payload_shape() {
        let delivery = CallbackDelivery {
            id: 1,
            webhook_id: "cb_1".into(),
            kind: CallbackKind::Status,
            message_id: Some("01J".into()),
            client: "a".into(),
            url: "https://x".into(),
            status: Some("failed".into()),
            previous_status: Some("sent".into()),
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
            error_code: Some("DELIVERY_007".into()),
            error: Some("unreachable".into()),
            channel: None,
            attempts: 1,
            metadata: json!({"order": "A-17"}),
            payload: None,
            inbox_id: None,
        };
        assert_eq!(
            payload(&delivery),
            json!({"type": "message.status", "event": "message.failed", "message_id": "01J", "status": "failed",
                   "previous_status": "sent", "at": "2026-01-01T00:00:00.000Z", "metadata": {"order": "A-17"},
                   "error_code": "DELIVERY_007", "error": "unreachable"})
        );
        let reply = json!({"type": "message.inbound", "event_id": "e", "in_reply_to": "01J"});
        let inbound = CallbackDelivery {
            kind: CallbackKind::Inbound,
            message_id: None,
            status: None,
            metadata: Value::Null,
            payload: Some(reply.clone()),
            inbox_id: Some(7),
            ..delivery
        };
        assert_eq!(payload(&inbound), reply);
    }
}
