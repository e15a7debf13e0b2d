//! Forwarding of verified Stripe and Telegram events to the operator's own
//! services (`FORWARD_<SOURCE>_URL`, signed with `FORWARD_<SOURCE>_SECRET`).
//!
//! The inbox processor writes one `webhook_forwards` row per event and
//! destination ([`forwards_for`]) and marks the event processed; this task
//! delivers them as status callbacks are delivered: claimed as a lease
//! committed before the HTTP call, every attempt recorded, retried with
//! backoff until `FORWARD_MAX_ATTEMPTS`, then `dead` (`worker
//! redrive-forwards` puts dead rows back). At least once: a worker killed
//! mid-delivery loses its lease and another sends the same request again,
//! with the same `webhook-id`, which is what receivers deduplicate on.
//!
//! # The request
//!
//! `POST <FORWARD_<SOURCE>_URL>` with the provider's body byte for byte, its
//! `Content-Type`, and the Standard Webhooks headers: `webhook-id`
//! (`fwd_<inbox id>_<destination>`, the same on every attempt),
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` with the
//! destination's secret. Stripe's own `Stripe-Signature` is passed on for
//! receivers that verify again (its timestamp ages, so a late retry may fail
//! Stripe's tolerance: ours is the one to check). Telegram's
//! `X-Telegram-Bot-Api-Secret-Token` is never stored, so never passed on:
//! it is our secret with Telegram, not the receiver's.
//!
//! # Order and isolation
//!
//! Each destination has its own loop, its own deliveries in flight and its
//! own claims, so a destination that hangs holds back only itself. Telegram
//! updates go out one at a time in `update_id` order (only a destination's
//! lowest pending one is claimable); a dead update stops blocking the later
//! ones. Stripe events, which carry no order, go out `FORWARD_CONCURRENCY`
//! at a time.
//!
//! # Where forwards may go
//!
//! The same rules as callbacks ([`crate::webhook_client`]): public
//! addresses, plus `FORWARD_ALLOW_PRIVATE_NETWORKS`, checked at every
//! connection. A refused forward is dead at once (the answer would be the
//! same), and the attempt says why.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::config::{Config, ForwardDestination};
use common::domain::Provider;
use common::signature::{self, headers};
use common::store::{ForwardAttempt, ForwardDelivery, ForwardNext, InboxEvent, NewForward, Store};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

use crate::deliveries::{self, Pace};
use crate::listen::listen;
use crate::webhook_client::{self, Outcome, SignedPost, post_signed, refused_literal, truncate};

/// Notification channel the forwards' insert trigger uses.
pub const CHANNEL: &str = "webhook_forwards";

/// The forwards an inbox event makes: one per destination of its source,
/// with the provider's order when it has one (Telegram's `update_id`).
pub fn forwards_for(config: &Config, event: &InboxEvent) -> Vec<NewForward> {
    let order_key = match event.provider {
        Provider::Telegram => serde_json::from_slice::<serde_json::Value>(&event.body)
            .ok()
            .and_then(|update| update.get("update_id")?.as_i64()),
        _ => None,
    };
    config
        .forward
        .destinations_of(event.provider)
        .map(|destination| NewForward {
            inbox_id: event.id,
            source: event.provider,
            destination: destination.name.clone(),
            order_key,
        })
        .collect()
}

/// Delivers forwards to every configured destination until `shutdown`, then
/// finishes the deliveries in flight (each bounded by the timeout). Without
/// destinations it only waits for `shutdown`.
pub async fn run(
    store: Store,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &config.forward;
    if settings.destinations.is_empty() {
        shutdown.cancelled().await;
        return Ok(());
    }
    let client = webhook_client::client(settings.timeout, &settings.policy, "forwards")?;
    // Each configured destination's counters exist from the start at 0, so
    // their first increment is an increase (as the worker's alert counters).
    // The recorder first: the metrics task may not have installed it yet.
    common::metrics::install();
    for destination in &settings.destinations {
        let (source, name) = (destination.source.as_str(), destination.name.clone());
        metrics::counter!(common::metrics::FORWARDS_RECEIVED, "source" => source, "destination" => name.clone())
            .increment(0);
        for outcome in ["delivered", "retrying", "dead", "refused"] {
            metrics::counter!(common::metrics::FORWARD_ATTEMPTS,
                "source" => source, "destination" => name.clone(), "outcome" => outcome)
            .increment(0);
        }
    }
    let mut loops = JoinSet::new();
    for destination in &settings.destinations {
        let (store, config, client, shutdown) = (
            store.clone(),
            config.clone(),
            client.clone(),
            shutdown.clone(),
        );
        let destination = destination.clone();
        tracing::info!(destination = %destination.name, "forwarding started");
        loops.spawn(
            async move { destination_loop(&store, &config, &client, &destination, &shutdown).await }
                .with_current_subscriber(),
        );
    }
    while loops.join_next().await.is_some() {}
    tracing::info!("forwarding stopped");
    Ok(())
}

/// Claims and delivers one destination's forwards, at most
/// `FORWARD_CONCURRENCY` in flight, woken by the notification (its own
/// listener) or the poll interval.
async fn destination_loop(
    store: &Store,
    config: &Arc<Config>,
    client: &reqwest::Client,
    destination: &ForwardDestination,
    shutdown: &CancellationToken,
) {
    let settings = &config.forward;
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(
        listen(store.clone(), CHANNEL, wake.clone(), shutdown.clone()).with_current_subscriber(),
    );
    // No gap: a Telegram destination's next update is claimable only once
    // the one before it is delivered, so each claim follows a delivery.
    let pace = Pace {
        concurrency: settings.concurrency,
        poll_interval: settings.poll_interval,
        gap: Duration::ZERO,
    };
    let claim = |room: usize| async move {
        store
            .claim_forwards(&destination.name, room as i64, settings.lease)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(
                    %error, destination = %destination.name,
                    "forwarding: could not claim deliveries; will retry"
                );
                Vec::new()
            })
    };
    let start = |forward| {
        let (store, config, client, destination) = (
            store.clone(),
            config.clone(),
            client.clone(),
            destination.clone(),
        );
        async move { deliver(&store, &config, &client, &destination, forward).await }
            .with_current_subscriber()
    };
    deliveries::run(pace, &wake, shutdown, claim, start).await;
    listener.abort();
}

/// The provider headers passed on: the content type, and Stripe's own
/// signature. Only what is listed here leaves; the inbox never stored
/// Telegram's secret token in the first place.
fn passed_on(forward: &ForwardDelivery) -> (String, Vec<(&'static str, String)>) {
    let stored = |name: &str| {
        forward
            .headers
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let content_type = stored("content-type").unwrap_or_else(|| "application/json".to_owned());
    let mut extra = Vec::new();
    if forward.source == Provider::Stripe
        && let Some(signature) = stored(headers::STRIPE_SIGNATURE)
    {
        extra.push((headers::STRIPE_SIGNATURE, signature));
    }
    (content_type, extra)
}

/// One attempt: sign, POST, record. Never returns an error: every outcome is
/// written to the attempt log (if even that fails, the lease expires and the
/// attempt is made again).
async fn deliver(
    store: &Store,
    config: &Config,
    client: &reqwest::Client,
    destination: &ForwardDestination,
    forward: ForwardDelivery,
) {
    let settings = &config.forward;
    let started_at = Utc::now();
    let clock = Instant::now();
    let url_var = format!("FORWARD_{}_URL", destination.name.to_uppercase());
    let result = match refused_literal(&settings.policy, &destination.url) {
        Some(refused) => Outcome::Refused(refused),
        None => {
            let (content_type, extra) = passed_on(&forward);
            let request = SignedPost {
                url: &destination.url,
                webhook_id: &forward.webhook_id,
                content_type: &content_type,
                body: forward.body.clone(),
                extra,
            };
            post_signed(client, request, |timestamp, body, _| {
                signature::sign(&destination.secret, &forward.webhook_id, timestamp, body)
            })
            .await
        }
    };
    let duration = clock.elapsed();
    let (status_code, error) = match &result {
        Outcome::Delivered(code) => (Some(*code), None),
        Outcome::Failed(code, error) => (*code, Some(error.clone())),
        Outcome::Refused(refused) => (None, Some(truncate(refused.describe(&url_var)))),
    };
    let next = match &result {
        Outcome::Delivered(_) => ForwardNext::Delivered,
        Outcome::Refused(_) => ForwardNext::Dead,
        Outcome::Failed(..) if forward.attempts as u32 >= settings.max_attempts => {
            ForwardNext::Dead
        }
        Outcome::Failed(..) => {
            let delay = settings
                .backoff
                .spread(forward.attempts as u32, &mut rand::rng());
            ForwardNext::RetryAt(
                Utc::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
            )
        }
    };
    let outcome = match (&result, &next) {
        (Outcome::Refused(_), _) => "refused",
        (_, ForwardNext::Delivered) => "delivered",
        (_, ForwardNext::RetryAt(_)) => "retrying",
        (_, ForwardNext::Dead) => "dead",
    };
    metrics::counter!(common::metrics::FORWARD_ATTEMPTS,
        "source" => forward.source.as_str(), "destination" => destination.name.clone(), "outcome" => outcome)
    .increment(1);
    let (webhook_id, attempt) = (&forward.webhook_id, forward.attempts);
    match &next {
        ForwardNext::Delivered => tracing::debug!(
            webhook_id, destination = %destination.name, attempt, order_key = forward.order_key,
            ms = duration.as_millis() as u64, "event forwarded"
        ),
        ForwardNext::RetryAt(at) => tracing::info!(
            webhook_id, destination = %destination.name, attempt, status_code, error, retry_at = %at,
            "forwarding failed; will retry"
        ),
        ForwardNext::Dead => tracing::warn!(
            webhook_id, destination = %destination.name, attempt, status_code, error,
            "forward dead-lettered (worker redrive-forwards sends it again)"
        ),
    }
    let attempt = ForwardAttempt {
        id: forward.id,
        attempt: forward.attempts,
        started_at,
        duration,
        status_code,
        error,
        next,
    };
    if let Err(e) = store.record_forward_attempt(&attempt).await {
        tracing::warn!(error = %e, webhook_id, "could not record a forward attempt");
    }
}

/// Sets the forwarding gauges (called when metrics are scraped): pending,
/// failing and dead rows and the oldest pending one, per source and
/// destination; configured destinations with none show 0.
pub async fn refresh_gauges(store: &Store, config: &Config) {
    use common::metrics::{FORWARDS_OLDEST_UNDELIVERED, FORWARDS_UNDELIVERED};
    let Ok(backlogs) = store.forward_backlogs().await else {
        return;
    };
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for backlog in &backlogs {
        let (source, destination) = (backlog.source.as_str(), backlog.destination.clone());
        for (state, count) in [
            ("pending", backlog.pending),
            ("failing", backlog.failing),
            ("dead", backlog.dead),
        ] {
            metrics::gauge!(FORWARDS_UNDELIVERED, "source" => source, "destination" => destination.clone(), "state" => state)
                .set(count as f64);
        }
        metrics::gauge!(FORWARDS_OLDEST_UNDELIVERED, "source" => source, "destination" => destination.clone())
            .set(backlog.oldest_pending_secs);
        seen.insert((source.to_owned(), destination));
    }
    for destination in &config.forward.destinations {
        let key = (
            destination.source.as_str().to_owned(),
            destination.name.clone(),
        );
        if seen.contains(&key) {
            continue;
        }
        for state in ["pending", "failing", "dead"] {
            metrics::gauge!(FORWARDS_UNDELIVERED, "source" => key.0.clone(), "destination" => key.1.clone(), "state" => state)
                .set(0.0);
        }
        metrics::gauge!(FORWARDS_OLDEST_UNDELIVERED, "source" => key.0.clone(), "destination" => key.1.clone())
            .set(0.0);
    }
}
