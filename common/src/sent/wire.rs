//! Serde types of Sent's v3 API as SENT_API.md describes it, shared by the
//! worker's client and `sent-sim`. Readers are lenient (missing optional
//! fields default, unknown fields are ignored); writers omit `None` fields
//! except where Sent writes an explicit `null` (`data` / `error`).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Value of `meta.version` on every v3 answer.
pub const API_VERSION: &str = "v3";
/// Channel names accepted in `SendRequest::channel` (`sent` means "Sent picks").
pub const CHANNELS: [&str; 5] = ["sms", "whatsapp", "rcs", "mms", "sent"];

/// Body of `POST /v3/messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// Recipients in E.164; one message per recipient and channel.
    #[serde(default)]
    pub to: Vec<String>,
    /// Template to send (id preferred, else name); absent when `text` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateBody>,
    /// Channels to send on; absent or `["sent"]` lets Sent pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Vec<String>>,
    /// Free-form text instead of a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// RFC 3339 instant with an explicit offset, 1 minute to 30 days ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// Validate and answer realistically without any side effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<bool>,
    /// Public media URLs (MMS, WhatsApp media).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_urls: Option<Vec<String>>,
    /// MMS subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Template reference of a send: `id` and `name` are alternatives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateBody {
    /// Sent's template id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Template name, used when there is no id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Template variables, string to string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
}

/// The envelope of every v3 answer, success or failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// True on 2xx answers.
    #[serde(default)]
    pub success: bool,
    /// The payload on success, `null` on failure.
    #[serde(default)]
    pub data: Option<T>,
    /// The error on failure, `null` on success.
    #[serde(default)]
    pub error: Option<ApiError>,
    /// Request metadata.
    #[serde(default)]
    pub meta: Meta,
}

impl<T> Envelope<T> {
    /// A success envelope around `data`.
    pub fn ok(data: T, meta: Meta) -> Self {
        Envelope {
            success: true,
            data: Some(data),
            error: None,
            meta,
        }
    }

    /// A failure envelope around `error`.
    pub fn err(error: ApiError, meta: Meta) -> Self {
        Envelope {
            success: false,
            data: None,
            error: Some(error),
            meta,
        }
    }
}

/// `meta` of an envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Sent's id of the request (also in `X-Request-Id`).
    #[serde(default)]
    pub request_id: String,
    /// When the answer was produced (RFC 3339).
    #[serde(default)]
    pub timestamp: String,
    /// API version, `v3`.
    #[serde(default)]
    pub version: String,
}

/// `data` of a `202` to `POST /v3/messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendData {
    /// Status of the request, `QUEUED`.
    #[serde(default)]
    pub status: String,
    /// Resolved template id (null for free text).
    #[serde(default)]
    pub template_id: Option<String>,
    /// Resolved template name (null for free text or when unknown).
    #[serde(default)]
    pub template_name: Option<String>,
    /// One entry per recipient and channel, each a separate message.
    #[serde(default)]
    pub recipients: Vec<Recipient>,
}

/// One message created by a send.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// Sent's message id, stable across webhook events.
    pub message_id: String,
    /// The recipient number.
    #[serde(default)]
    pub to: String,
    /// The channel this message goes out on.
    #[serde(default)]
    pub channel: String,
    /// Rendered message text, when known.
    #[serde(default)]
    pub body: Option<String>,
}

/// `error` of a failure envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable code such as `VALIDATION_002` or `BUSINESS_002`.
    #[serde(default)]
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Field-level problems (validation errors), else null.
    #[serde(default)]
    pub details: Option<BTreeMap<String, Vec<String>>>,
    /// Link to the documentation of the code.
    #[serde(default)]
    pub doc_url: Option<String>,
}

/// `data` of `GET /v3/messages/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageInfo {
    /// Sent's message id.
    #[serde(alias = "message_id")]
    pub id: String,
    /// Current status (`QUEUED`, `SENT`, `DELIVERED`, `FAILED`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Channel actually used.
    #[serde(default)]
    pub channel: Option<String>,
    /// Recipient number (E.164).
    #[serde(default)]
    pub phone: Option<String>,
    /// `outbound` for messages we send.
    #[serde(default)]
    pub direction: Option<String>,
    /// Account the message belongs to.
    #[serde(default)]
    pub customer_id: Option<String>,
    /// Template id, when a template was sent.
    #[serde(default)]
    pub template_id: Option<String>,
    /// Template name, when known.
    #[serde(default)]
    pub template_name: Option<String>,
    /// Rendered content.
    #[serde(default)]
    pub message_body: Option<MessageBody>,
    /// When the send was accepted (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Scheduled send time; only on scheduled messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// Status history, oldest first.
    #[serde(default)]
    pub events: Vec<MessageEventEntry>,
}

/// Rendered content of a message (subset of Sent's structured body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBody {
    /// Main text.
    #[serde(default)]
    pub content: Option<String>,
    /// MMS subject line.
    #[serde(default)]
    pub subject: Option<String>,
}

/// One entry of a message's status history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEventEntry {
    /// Status reached.
    pub status: String,
    /// When it was reached (RFC 3339).
    pub timestamp: String,
    /// Free text, e.g. the reason of a failure.
    #[serde(default)]
    pub description: Option<String>,
}

/// Webhook body Sent POSTs to an endpoint; accepts the `sub_type` / `value` variants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookEnvelope {
    /// Event family: `message`, `messages`, `templates`, `contact`, ...
    #[serde(default)]
    pub field: String,
    /// Event name such as `message.delivered` (absent for some families).
    #[serde(default, alias = "sub_type", skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// When the event was emitted (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Sent's request id, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Family-specific payload, kept raw; see [`WebhookEnvelope::message_payload`].
    #[serde(default, alias = "value")]
    pub payload: serde_json::Value,
}

impl WebhookEnvelope {
    /// True for the message families (`message`, `messages`).
    pub fn is_message(&self) -> bool {
        matches!(self.field.as_str(), "message" | "messages")
    }

    /// The payload parsed as a message event.
    pub fn message_payload(&self) -> Result<MessageEventPayload, serde_json::Error> {
        self.payload_as()
    }

    /// The payload parsed as any type.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.payload)
    }
}

/// Payload of a `message.*` webhook event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEventPayload {
    /// Sent's message id, as in the 202's `recipients[].message_id`.
    pub message_id: String,
    /// New status (`SENT`, `DELIVERED`, `FAILED`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_status: Option<String>,
    /// Channel actually used after fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Recipient of an outbound message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_number: Option<String>,
    /// Contact of an inbound message (also in older outbound samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_number: Option<String>,
    /// Template id, when a template was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Template name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// Sent account the message belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// When the change happened (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Message text (may be null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Code on failed / filtered / blocked, e.g. `DELIVERY_007`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Human-readable reason on failed / filtered / blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Scheduled time on scheduled / cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// Text of an inbound message (`message.received`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_request_omits_absent_fields() {
        let request = SendRequest {
            to: vec!["+14155550123".into()],
            template: Some(TemplateBody {
                id: Some("tmpl_1".into()),
                ..TemplateBody::default()
            }),
            ..SendRequest::default()
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            json,
            r#"{"to":["+14155550123"],"template":{"id":"tmpl_1"}}"#
        );
    }

    #[test]
    fn envelope_parses_a_202_and_an_error() {
        let ok: Envelope<SendData> = serde_json::from_str(
            r#"{"success":true,"data":{"status":"QUEUED","template_id":"t","template_name":null,
                "recipients":[{"message_id":"m1","to":"+14155550123","channel":"sms","body":"hi"}]},
                "error":null,"meta":{"request_id":"r","timestamp":"2026-01-01T00:00:00Z","version":"v3"}}"#,
        )
        .unwrap();
        assert_eq!(ok.data.unwrap().recipients[0].message_id, "m1");
        let err: Envelope<SendData> = serde_json::from_str(
            r#"{"success":false,"data":null,"error":{"code":"VALIDATION_002","message":"bad",
                "details":{"to":["not E.164"]},"doc_url":null},"meta":{}}"#,
        )
        .unwrap();
        assert_eq!(err.error.unwrap().details.unwrap()["to"], ["not E.164"]);
        let json = serde_json::to_value(Envelope::<SendData>::err(
            ApiError::default(),
            Meta::default(),
        ))
        .unwrap();
        assert!(json["data"].is_null() && json.get("data").is_some());
    }

    #[test]
    fn webhook_envelope_accepts_both_variants() {
        let current: WebhookEnvelope = serde_json::from_str(
            r#"{"field":"message","event":"message.delivered","timestamp":"t",
                "payload":{"message_id":"m1","message_status":"DELIVERED","channel":"sms"}}"#,
        )
        .unwrap();
        let older: WebhookEnvelope = serde_json::from_str(
            r#"{"field":"messages","sub_type":"message.delivered",
                "value":{"message_id":"m1","message_status":"DELIVERED","channel":"sms"}}"#,
        )
        .unwrap();
        assert_eq!(current.event, older.event);
        assert!(current.is_message() && older.is_message());
        assert_eq!(
            current.message_payload().unwrap(),
            older.message_payload().unwrap()
        );
        let unfamiliar: WebhookEnvelope =
            serde_json::from_str(r#"{"field":"templates","value":{"id":1}}"#).unwrap();
        assert!(!unfamiliar.is_message() && unfamiliar.event.is_none());
    }
}
