//! Applies stored webhook events (the inbox) to messages.
//!
//! Due events are claimed in batches (`FOR UPDATE SKIP LOCKED` in one short
//! statement that leases them), so any number of workers can share the
//! inbox. A worker wakes on the `webhook_inbox` notification that the
//! gateway's insert sends on commit, and also polls, so a lost notification
//! only delays an event by one poll interval.
//!
//! Sent's `message.*` events become status changes through
//! `Store::change_status`: every event lands in the message's timeline, but
//! the status only ever moves forward, so events may arrive in any order. An
//! event for a Sent id no message carries yet waits as `unmatched` until the
//! send record appears (a trigger on `messages` makes it due again; a periodic
//! re-check backs that up), for at most `INBOX_UNMATCHED_TTL_SECS`. Failed
//! processing is retried with exponential backoff and, after
//! `INBOX_MAX_ATTEMPTS`, parked with its error. Inbound messages and other
//! families (and other providers) are kept as `not_applicable`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::config::Config;
use common::domain::MessageStatus;
use common::sent::wire::MessageEventPayload;
use common::store::{InboxEvent, InboxFinish, InboxResult, StatusChange, Store};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Notification channel the inbox's insert trigger uses.
pub const CHANNEL: &str = "webhook_inbox";

/// Processes the inbox until `shutdown` is cancelled. The batch in hand is
/// finished first; anything claimed but not finished is picked up again by
/// some worker when its lease ends.
pub async fn run(
    store: Store,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &config.inbox;
    let wake = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(
        store.clone(),
        CHANNEL,
        wake.clone(),
        shutdown.clone(),
    ));
    let mut next_housekeeping = Instant::now();
    tracing::info!("inbox processor started");
    while !shutdown.is_cancelled() {
        if Instant::now() >= next_housekeeping {
            if let Err(error) = housekeeping(&store, &config).await {
                tracing::warn!(%error, "inbox housekeeping failed");
            }
            next_housekeeping = Instant::now() + settings.rematch_interval;
        }
        let more = match process_due(&store, &config).await {
            Ok(claimed) => claimed as i64 >= settings.batch_size,
            Err(error) => {
                tracing::warn!(%error, "inbox: could not claim events; will retry");
                false
            }
        };
        if more {
            continue;
        }
        let until_housekeeping = next_housekeeping.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(settings.poll_interval.min(until_housekeeping)) => {}
        }
    }
    listener.abort();
    tracing::info!("inbox processor stopped");
    Ok(())
}

/// Claims one batch of due events, processes it and records the outcomes.
/// Returns how many events were claimed.
pub async fn process_due(store: &Store, config: &Config) -> Result<usize, sqlx::Error> {
    let settings = &config.inbox;
    let events = store
        .claim_inbox(settings.batch_size, settings.lease)
        .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let claimed = events.len();
    let finished: Vec<InboxFinish> = futures::stream::iter(events)
        .map(|event| async move {
            let result = process(store, config, &event).await;
            InboxFinish {
                id: event.id,
                attempts: event.attempts,
                result,
            }
        })
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    store.finish_inbox(&finished).await?;
    Ok(claimed)
}

/// Re-checks unmatched events against new send records, and parks the ones
/// that waited too long.
pub async fn housekeeping(store: &Store, config: &Config) -> Result<(), sqlx::Error> {
    let rematched = store.rematch_inbox().await?;
    if rematched > 0 {
        tracing::info!(
            events = rematched,
            "unmatched webhook events found their message"
        );
    }
    let expired = store
        .expire_unmatched_inbox(config.inbox.unmatched_ttl)
        .await?;
    if expired > 0 {
        tracing::warn!(
            events = expired,
            "unmatched webhook events parked: their message never appeared"
        );
    }
    Ok(())
}

/// One event's outcome; processing errors become a retry or, when attempts
/// are used up, parking.
async fn process(store: &Store, config: &Config, event: &InboxEvent) -> InboxResult {
    match apply(store, event).await {
        Ok(result) => result,
        Err(error) => {
            let settings = &config.inbox;
            if event.attempts as u32 >= settings.max_attempts {
                tracing::error!(
                    inbox_id = event.id,
                    provider = %event.provider,
                    event_id = %event.event_id,
                    attempts = event.attempts,
                    %error,
                    "webhook event parked after repeated processing failures"
                );
                InboxResult::Parked { error }
            } else {
                let delay = backoff(
                    settings.backoff_base,
                    settings.backoff_max,
                    event.attempts as u32,
                );
                tracing::warn!(
                    inbox_id = event.id,
                    event_id = %event.event_id,
                    attempts = event.attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    %error,
                    "webhook event processing failed; will retry"
                );
                InboxResult::Retry {
                    at: Utc::now()
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
                    error,
                }
            }
        }
    }
}

async fn apply(store: &Store, event: &InboxEvent) -> Result<InboxResult, String> {
    if event.provider != "sent" {
        // Stored for the record; nothing in this service consumes them yet.
        return Ok(InboxResult::NotApplicable);
    }
    let body: Value =
        serde_json::from_slice(&event.body).map_err(|e| format!("body is not JSON: {e}"))?;
    let update = match parse_sent(&body, event.received_at)? {
        Parsed::NotApplicable(why) => {
            tracing::debug!(inbox_id = event.id, event_id = %event.event_id, why, "webhook event not applicable");
            return Ok(InboxResult::NotApplicable);
        }
        Parsed::Status(update) => update,
    };
    let ids = store
        .messages_by_provider_id(&update.sent_message_id)
        .await
        .map_err(|e| format!("database: {e}"))?;
    if ids.is_empty() {
        tracing::info!(
            event_id = %event.event_id,
            sent_message_id = %update.sent_message_id,
            event = %update.event,
            "webhook event for a message not known yet; waiting for its send record"
        );
        return Ok(InboxResult::Unmatched {
            subject_id: update.sent_message_id,
        });
    }
    for id in &ids {
        let change = update.change(&event.event_id);
        let applied = store
            .change_status(id, &change)
            .await
            .map_err(|e| format!("database: {e}"))?;
        update.log(id, &event.event_id, applied);
    }
    Ok(InboxResult::Processed { message_ids: ids })
}

/// A Sent event, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Inbound messages, other families, events without a status we know.
    NotApplicable(&'static str),
    Status(StatusUpdate),
}

/// A status change Sent reports for one of its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// Event name as Sent sent it (`message.delivered`), or made from the status.
    pub event: String,
    pub sent_message_id: String,
    pub status: MessageStatus,
    pub sent_status: Option<String>,
    pub channel: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    /// When the change happened at Sent (`updated_at`, else the envelope's
    /// `timestamp`, else when we received it).
    pub at: DateTime<Utc>,
}

impl StatusUpdate {
    fn change(&self, event_id: &str) -> StatusChange {
        let mut detail = Map::new();
        detail.insert("event".into(), json!(self.event));
        detail.insert("event_id".into(), json!(event_id));
        detail.insert("sent_message_id".into(), json!(self.sent_message_id));
        for (key, value) in [
            ("sent_status", &self.sent_status),
            ("channel", &self.channel),
            ("reason_code", &self.reason_code),
            ("reason", &self.reason),
        ] {
            if let Some(value) = value {
                detail.insert(key.into(), json!(value));
            }
        }
        StatusChange {
            detail: Some(Value::Object(detail)),
            error_code: self.reason_code.clone(),
            error: self.reason.clone(),
            at: self.at,
            ..StatusChange::new(self.status, "sent")
        }
    }

    fn log(&self, message_id: &str, event_id: &str, applied: bool) {
        let (code, reason, channel) = (
            self.reason_code.as_deref().unwrap_or(""),
            self.reason.as_deref().unwrap_or(""),
            self.channel.as_deref().unwrap_or(""),
        );
        match self.status {
            MessageStatus::Failed => tracing::error!(
                message_id, sent_message_id = %self.sent_message_id, event_id, reason_code = code, reason,
                channel, applied, "message failed at Sent"
            ),
            MessageStatus::Blocked | MessageStatus::Filtered => tracing::warn!(
                message_id, sent_message_id = %self.sent_message_id, event_id, status = %self.status,
                reason_code = code, reason, channel, applied, "message {} at Sent", self.status
            ),
            _ => tracing::debug!(
                message_id, event_id, status = %self.status, channel, applied, "message status from Sent"
            ),
        }
    }
}

/// Reads every envelope variant SENT_API.md lists (`event` / `sub_type`,
/// `payload` / `value`, `field: "messages"`), plus the original Flask
/// integration's `{"type", "data": {"id", "status", "error"}}`.
pub fn parse_sent(body: &Value, received_at: DateTime<Utc>) -> Result<Parsed, String> {
    let envelope = body.as_object().ok_or("body is not a JSON object")?;
    let text = |map: &Map<String, Value>, key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let name = text(envelope, "event")
        .or_else(|| text(envelope, "sub_type"))
        .or_else(|| text(envelope, "type"));
    let field = text(envelope, "field");
    let family = field.clone().or_else(|| {
        name.as_deref()
            .and_then(|n| n.split('.').next())
            .map(str::to_owned)
    });
    if !matches!(family.as_deref(), Some("message" | "messages")) {
        return Ok(Parsed::NotApplicable("not a message event"));
    }
    if name.as_deref() == Some("message.received") {
        return Ok(Parsed::NotApplicable("inbound message"));
    }
    let payload = ["payload", "value", "data"]
        .iter()
        .find_map(|key| envelope.get(*key).and_then(Value::as_object))
        .ok_or("message event without a payload object")?;
    let mut payload = payload.clone();
    // The Flask-era shape: `id` for the message id, `status`, `error: {code, message}`.
    if !payload.contains_key("message_id")
        && let Some(id) = payload.get("id").cloned()
    {
        payload.insert("message_id".into(), id);
    }
    if !payload.contains_key("message_status")
        && let Some(status) = payload.get("status").cloned()
    {
        payload.insert("message_status".into(), status);
    }
    if let Some(error) = payload.get("error").and_then(Value::as_object).cloned() {
        if !payload.contains_key("reason") && error.get("message").is_some() {
            payload.insert("reason".into(), error["message"].clone());
        }
        if !payload.contains_key("reason_code") && error.get("code").is_some() {
            payload.insert("reason_code".into(), error["code"].clone());
        }
    }
    if payload.get("direction").and_then(Value::as_str) == Some("inbound") {
        return Ok(Parsed::NotApplicable("inbound message"));
    }
    let p: MessageEventPayload = serde_json::from_value(Value::Object(payload))
        .map_err(|e| format!("message event payload: {e}"))?;
    let sent_message_id = p.message_id.trim().to_owned();
    if sent_message_id.is_empty() {
        return Err("message event payload: empty message_id".into());
    }
    let from_name = name
        .as_deref()
        .and_then(|n| n.strip_prefix("message."))
        .and_then(MessageStatus::from_sent);
    let Some(status) = from_name.or_else(|| {
        p.message_status
            .as_deref()
            .and_then(MessageStatus::from_sent)
    }) else {
        return Ok(Parsed::NotApplicable("no status we know"));
    };
    let at = p
        .updated_at
        .as_deref()
        .and_then(parse_time)
        .or_else(|| text(envelope, "timestamp").as_deref().and_then(parse_time))
        .unwrap_or(received_at);
    Ok(Parsed::Status(StatusUpdate {
        event: name.unwrap_or_else(|| format!("message.{status}")),
        sent_message_id,
        status,
        sent_status: p.message_status,
        channel: p.channel,
        reason_code: p.reason_code,
        reason: p.reason,
        at,
    }))
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `base * 2^(attempt-1)`, capped at `max`, plus up to a quarter of jitter so
/// that events failing together do not retry together.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let jitter = exp.mul_f64(rand::random::<f64>() * 0.25);
    (exp + jitter).min(max.max(base))
}

/// RFC 3339 in UTC with milliseconds, as our API writes times.
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Wakes `wake` on every notification on `channel`, reconnecting as needed
/// (and waking once after each reconnect, for what was missed meanwhile).
pub(crate) async fn listen(
    store: Store,
    channel: &'static str,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let pause = Duration::from_secs(1);
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(store.pool()).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(%error, channel, "LISTEN connection failed; polling meanwhile");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(pause) => continue }
            }
        };
        if let Err(error) = listener.listen(channel).await {
            tracing::debug!(%error, channel, "LISTEN failed; polling meanwhile");
            tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(pause) => continue }
        }
        wake.notify_one();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => wake.notify_one(),
                    // Reconnected: notifications may have been missed.
                    Ok(None) => wake.notify_one(),
                    Err(error) => {
                        tracing::debug!(%error, channel, "LISTEN connection lost");
                        break;
                    }
                },
            }
        }
        tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(pause) => {} }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received() -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn status(body: Value) -> StatusUpdate {
        match parse_sent(&body, received()).unwrap() {
            Parsed::Status(update) => update,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn current_envelope() {
        let u = status(
            json!({"field": "message", "event": "message.delivered", "timestamp": "2026-01-15T10:35:00Z",
            "payload": {"message_id": "m1", "message_status": "DELIVERED", "channel": "sms",
                        "updated_at": "2026-01-15T10:34:59+00:00"}}),
        );
        assert_eq!(u.status, MessageStatus::Delivered);
        assert_eq!(u.sent_message_id, "m1");
        assert_eq!(u.event, "message.delivered");
        assert_eq!(u.channel.as_deref(), Some("sms"));
        assert_eq!(
            u.at,
            "2026-01-15T10:34:59Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn variant_envelopes() {
        let u = status(
            json!({"field": "messages", "sub_type": "message.read", "value": {"message_id": "m2"}}),
        );
        assert_eq!((u.status, u.at), (MessageStatus::Read, received()));
        let u = status(
            json!({"field": "messages", "value": {"message_id": "m3", "message_status": "SENT"},
            "timestamp": "2026-02-01T00:00:00+02:00"}),
        );
        assert_eq!(u.status, MessageStatus::Sent);
        assert_eq!(u.event, "message.sent");
        assert_eq!(
            u.at,
            "2026-01-31T22:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let u = status(json!({"event": "message.routed", "payload": {"message_id": "m4"}}));
        assert_eq!(u.status, MessageStatus::Accepted);
    }

    #[test]
    fn failures_carry_their_reason() {
        let u = status(
            json!({"field": "message", "event": "message.failed", "payload": {"message_id": "m",
            "message_status": "FAILED", "reason_code": "DELIVERY_007", "reason": "Handset unreachable"}}),
        );
        assert_eq!(u.status, MessageStatus::Failed);
        assert_eq!(u.reason_code.as_deref(), Some("DELIVERY_007"));
        let change = u.change("evt");
        assert_eq!(change.error_code.as_deref(), Some("DELIVERY_007"));
        assert_eq!(change.source, "sent");
        assert_eq!(change.detail.unwrap()["event_id"], "evt");
    }

    #[test]
    fn flask_era_shape() {
        let u = status(
            json!({"type": "message.failed", "data": {"id": "msg_123", "error": {"message": "Invalid"}}}),
        );
        assert_eq!(
            (u.status, u.sent_message_id.as_str()),
            (MessageStatus::Failed, "msg_123")
        );
        assert_eq!(u.reason.as_deref(), Some("Invalid"));
        let u = status(
            json!({"type": "message.status.updated", "data": {"id": "m", "status": "delivered"}}),
        );
        assert_eq!(u.status, MessageStatus::Delivered);
    }

    #[test]
    fn not_applicable() {
        for body in [
            json!({"field": "message", "event": "message.received", "payload": {"message_id": "m", "text": "hi"}}),
            json!({"field": "templates", "value": {"id": "t"}}),
            json!({"field": "contact", "event": "contact.updated", "payload": {}}),
            json!({"event": "call.started", "payload": {}}),
            json!({"field": "message", "event": "message.something_new", "payload": {"message_id": "m"}}),
        ] {
            assert!(
                matches!(parse_sent(&body, received()), Ok(Parsed::NotApplicable(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn poison() {
        for body in [
            json!([1, 2]),
            json!({"field": "message", "event": "message.delivered"}),
            json!({"field": "message", "event": "message.delivered", "payload": {"message_status": "DELIVERED"}}),
            json!({"field": "message", "event": "message.delivered", "payload": {"message_id": 7}}),
            json!({"field": "message", "event": "message.delivered", "payload": {"message_id": " "}}),
        ] {
            assert!(parse_sent(&body, received()).is_err(), "{body}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let first = backoff(base, max, 1);
        assert!(first >= base && first <= base.mul_f64(1.25));
        let fourth = backoff(base, max, 4);
        assert!(fourth >= Duration::from_secs(8) && fourth <= Duration::from_secs(10));
        assert_eq!(backoff(base, max, 40), max);
    }
}
