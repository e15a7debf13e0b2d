//! Sent's webhook events, read once: every envelope variant SENT_API.md
//! lists, and the original Flask integration's shape.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::wire::MessageEventPayload;
use crate::domain::{EventSource, MessageStatus, PhoneNumber};
use crate::store::StatusChange;

/// A stored body, understood.
pub fn read(body: &[u8], received_at: DateTime<Utc>) -> Result<Parsed, String> {
    let mut body: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    strip_nul(&mut body);
    parse_sent(&body, received_at)
}

/// Postgres text and jsonb hold no U+0000: one in any field read from an
/// event would fail the update of a whole batch, not just this event.
fn strip_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(items) => items.iter_mut().for_each(strip_nul),
        Value::Object(map) => map.values_mut().for_each(strip_nul),
        _ => {}
    }
}

/// A Sent event, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Other families, events without a status we know.
    NotApplicable(&'static str),
    Status(StatusUpdate),
    /// `message.received`: a contact wrote to one of our numbers.
    Inbound(InboundMessage),
}

/// A `message.received` event: a contact's message (a reply, usually) to one
/// of the account's numbers. Every field but the time is optional at Sent.
/// Serialized, it is the body of a `message.inbound` callback without its
/// envelope ([`InboundCallback`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InboundMessage {
    /// `inbound_number`: the contact's number (E.164), as Sent reported it.
    #[cfg_attr(feature = "openapi", schema(example = "+14155550123"))]
    pub from: Option<String>,
    /// `outbound_number`: the number of ours the contact wrote to.
    pub to: Option<String>,
    /// `null` for a media-only message.
    pub text: Option<String>,
    /// Attachments as Sent reports them (`url`, `mime_type`, `size_bytes`,
    /// `hash_sha256`); the URLs are the carrier's and expire.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub media: Vec<Value>,
    #[cfg_attr(feature = "openapi", schema(example = "sms"))]
    pub channel: Option<String>,
    /// Sent's id of the inbound message.
    pub sent_message_id: Option<String>,
    /// `received_at`, else `updated_at`, else the envelope's `timestamp`,
    /// else when we received the event.
    #[serde(serialize_with = "crate::domain::serialize_api_time")]
    pub received_at: DateTime<Utc>,
}

impl InboundMessage {
    /// The contact's number, when it is a valid E.164 number: what a reply
    /// is routed by.
    pub fn contact(&self) -> Option<PhoneNumber> {
        self.from
            .as_deref()
            .and_then(|n| PhoneNumber::parse(n).ok())
    }

    /// The body of the `message.inbound` callback, and of the pull API's
    /// `inbound` events: `event_id` is Sent's event id (deduplicate on it),
    /// `in_reply_to` our id of the message the reply was routed by (none:
    /// unroutable).
    pub fn callback(&self, event_id: &str, in_reply_to: Option<&str>) -> InboundCallback {
        InboundCallback {
            kind: "message.inbound",
            event_id: event_id.to_owned(),
            message: self.clone(),
            in_reply_to: in_reply_to.map(str::to_owned),
        }
    }

    /// [`InboundMessage::callback`] as JSON.
    pub fn payload(&self, event_id: &str, in_reply_to: Option<&str>) -> Value {
        serde_json::to_value(self.callback(event_id, in_reply_to))
            .expect("an inbound callback serializes")
    }
}

/// A reply to one of a tenant's messages: the body of the signed
/// `message.inbound` callback POSTed to the tenant's inbound URL, and the
/// `payload` of the pull API's `inbound` events.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InboundCallback {
    /// Always `message.inbound`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "message.inbound"))]
    pub kind: &'static str,
    /// Sent's event id: the same for the callback and the pull API;
    /// deduplicate on it.
    pub event_id: String,
    /// The contact's message.
    #[serde(flatten)]
    pub message: InboundMessage,
    /// Our id of the message this replies to: the tenant's latest to the
    /// contact's number within `REPLY_WINDOW_DAYS`; `null` when unroutable
    /// (admins only see those).
    pub in_reply_to: Option<String>,
}

/// The inbound message a stored body holds, if it is one.
pub fn read_inbound(body: &[u8], received_at: DateTime<Utc>) -> Option<InboundMessage> {
    match read(body, received_at) {
        Ok(Parsed::Inbound(inbound)) => Some(inbound),
        _ => None,
    }
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
    /// The change this update makes, for the message Sent's id belongs to.
    pub fn change(&self, event_id: &str) -> StatusChange {
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
            ..StatusChange::new(self.status, EventSource::Sent)
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
    let payload = ["payload", "value", "data"]
        .iter()
        .find_map(|key| envelope.get(*key).and_then(Value::as_object))
        .ok_or("message event without a payload object")?;
    let inbound = name.as_deref() == Some("message.received")
        || payload.get("direction").and_then(Value::as_str) == Some("inbound");
    if inbound {
        let time = |key: &str| text(payload, key).as_deref().and_then(parse_time);
        return Ok(Parsed::Inbound(InboundMessage {
            from: text(payload, "inbound_number"),
            to: text(payload, "outbound_number"),
            text: payload
                .get("text")
                .or_else(|| payload.get("body"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            media: payload
                .get("media")
                .and_then(Value::as_array)
                .map(|media| media.iter().filter(|m| m.is_object()).cloned().collect())
                .unwrap_or_default(),
            channel: text(payload, "channel"),
            sent_message_id: text(payload, "message_id"),
            received_at: time("received_at")
                .or_else(|| time("updated_at"))
                .or_else(|| text(envelope, "timestamp").as_deref().and_then(parse_time))
                .unwrap_or(received_at),
        }));
    }
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
    let p: MessageEventPayload = serde_json::from_value(Value::Object(payload))
        .map_err(|e| format!("message event payload: {e}"))?;
    let sent_message_id = p.message_id.as_deref().unwrap_or("").trim().to_owned();
    if sent_message_id.is_empty() {
        return Err("message event payload: no message_id".into());
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
        assert_eq!(change.source, EventSource::Sent);
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
    fn inbound_messages() {
        let body = json!({"field": "message", "event": "message.received", "timestamp": "2026-01-15T10:35:01Z",
            "payload": {"message_id": "in_1", "inbound_number": "+14155550123", "outbound_number": "+18005550000",
                        "text": "Yes, please", "channel": "mms", "received_at": "2026-01-15T10:35:00Z",
                        "media": [{"url": "https://carrier.example/a.jpg", "mime_type": "image/jpeg"}, 7]}});
        let Ok(Parsed::Inbound(inbound)) = parse_sent(&body, received()) else {
            panic!("not inbound");
        };
        assert_eq!(inbound.contact().unwrap().as_str(), "+14155550123");
        assert_eq!(
            inbound.payload("evt_1", Some("01J")),
            json!({"type": "message.inbound", "event_id": "evt_1", "from": "+14155550123",
                   "to": "+18005550000", "text": "Yes, please", "channel": "mms", "sent_message_id": "in_1",
                   "media": [{"url": "https://carrier.example/a.jpg", "mime_type": "image/jpeg"}],
                   "received_at": "2026-01-15T10:35:00.000Z", "in_reply_to": "01J"})
        );
        // Every field optional: still an inbound message, routed by nothing.
        let bare =
            json!({"field": "message", "event": "message.received", "payload": {"text": null}});
        let Ok(Parsed::Inbound(inbound)) = parse_sent(&bare, received()) else {
            panic!("not inbound");
        };
        assert_eq!((inbound.contact(), inbound.received_at), (None, received()));
        assert_eq!(inbound.payload("e", None)["in_reply_to"], Value::Null);
        // A number that is not E.164 routes nowhere.
        let odd = json!({"event": "message.received", "payload": {"inbound_number": "0415 555"}});
        assert!(
            matches!(parse_sent(&odd, received()), Ok(Parsed::Inbound(i)) if i.contact().is_none())
        );
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
}
