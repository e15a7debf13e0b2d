//! Serde types of Sent's v3 API, as the worker writes requests and reads
//! answers. The readers follow the official SDK's response types (`sentdm`
//! 0.46.0): every field the SDK marks optional is an `Option` here, so a
//! `null` or a missing key never costs the fields that are present, and
//! unknown fields are ignored. `sent-sim` has its own types on purpose: the
//! stand-in and the client must not agree merely because they share code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /v3/messages` (the SDK's `MessageSendParams`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SendRequest {
    /// Recipients in E.164; one message per recipient and channel.
    pub to: Vec<String>,
    /// Template to send (id preferred, else name); absent when `text` is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateBody>,
    /// Channels to send on; absent lets Sent pick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Vec<String>>,
    /// Free-form text instead of a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// RFC 3339 instant with an explicit offset, 1 minute to 30 days ahead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// Validate and answer realistically without any side effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<bool>,
    /// Public https media URLs (MMS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_urls: Option<Vec<String>>,
}

/// Template reference of a send: `id` and `name` are mutually exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TemplateBody {
    /// Sent's template id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Template name, used when there is no id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Template variables, string to string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
}

/// The envelope of every v3 answer, success or failure.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope<T> {
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub data: Option<T>,
    #[serde(default)]
    pub error: Option<ApiError>,
    #[serde(default)]
    pub meta: Option<Meta>,
}

impl<T> Envelope<T> {
    /// Sent's id of the request, when the answer carries one.
    pub fn request_id(&self) -> Option<&str> {
        self.meta
            .as_ref()
            .and_then(|m| m.request_id.as_deref())
            .filter(|id| !id.is_empty())
    }
}

/// `meta` of an envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// `data` of a `202` to `POST /v3/messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SendData {
    /// `QUEUED`, also for scheduled sends.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub template_id: Option<String>,
    #[serde(default)]
    pub template_name: Option<String>,
    /// One entry per recipient and channel, each a separate message.
    #[serde(default)]
    pub recipients: Option<Vec<Option<Recipient>>>,
}

/// One message created by a send. When Sent picks the channel, `channel`
/// and `body` are `null`: the normal answer, not an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Recipient {
    /// Sent's message id, stable across webhook events.
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
}

/// `error` of a failure envelope (the SDK's `ErrorDetail`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// Stable code such as `VALIDATION_002` or `BUSINESS_002`.
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Field-level problems (validation errors).
    #[serde(default)]
    pub details: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub doc_url: Option<String>,
}

/// `data` of `GET /v3/messages/{id}` (the SDK's `MessageRetrieveStatusResponse`),
/// the fields the status poll reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageInfo {
    #[serde(default)]
    pub id: Option<String>,
    /// Current status (`QUEUED`, `SENT`, `DELIVERED`, `FAILED`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// Channel actually used.
    #[serde(default)]
    pub channel: Option<String>,
    /// Why the message is at its status (FAILED, FILTERED, BLOCKED).
    #[serde(default)]
    pub reason_code: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Payload of a `message.*` webhook event; the envelope around it, in all
/// its variants, is read by the worker's inbox (`parse_sent`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEventPayload {
    /// Sent's message id, as in the 202's `recipients[].message_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
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

    /// Sent's answer when it picks the channel: `channel` and `body` null.
    #[test]
    fn an_auto_channel_202_keeps_its_ids() {
        let ok: Envelope<SendData> = serde_json::from_str(
            r#"{"success":true,"data":{"status":"QUEUED","template_id":"t","template_name":null,
                "recipients":[{"message_id":"m1","to":"+14155550123","channel":null,"body":null}]},
                "error":null,"meta":null}"#,
        )
        .unwrap();
        let recipients = ok.data.unwrap().recipients.unwrap();
        assert_eq!(
            recipients[0].as_ref().unwrap().message_id.as_deref(),
            Some("m1")
        );
        assert_eq!(ok.meta, None);
    }

    #[test]
    fn an_error_with_nulls_keeps_its_code() {
        let err: Envelope<SendData> = serde_json::from_str(
            r#"{"success":null,"data":null,"error":{"code":"VALIDATION_002","message":null,
                "details":null},"meta":{"request_id":null}}"#,
        )
        .unwrap();
        assert_eq!(err.request_id(), None);
        assert_eq!(err.error.unwrap().code.as_deref(), Some("VALIDATION_002"));
    }
}
