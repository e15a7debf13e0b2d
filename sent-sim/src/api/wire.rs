//! Sent's v3 shapes as the simulator reads and writes them, written from
//! SENT_API.md and the official SDK's types (`sentdm` 0.46.0:
//! `message_send_params.py`, `message_send_response.py`, `error_detail.py`,
//! `api_meta.py`, `message_retrieve_status_response.py`, `message_event.py`).
//! The simulator's own: nothing here is shared with the project's client, so
//! a mistake there is not repeated here.
//!
//! Requests are read strictly: a key Sent's request type does not define, or
//! a value of the wrong JSON type, is a 400 `VALIDATION_001` naming the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Value of `meta.version`.
pub(crate) const API_VERSION: &str = "v3";

// ---------------------------------------------------------------- requests

/// Body of `POST /v3/messages` (`MessageSendParams`), after the shape check.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SendRequest {
    pub to: Vec<String>,
    pub template: Option<TemplateRef>,
    pub channel: Option<Vec<String>>,
    /// Sender numbers per channel; validated, otherwise unused by the simulator.
    pub channels: Option<BTreeMap<String, Vec<SenderEntry>>>,
    pub text: Option<String>,
    pub scheduled_at: Option<String>,
    pub sandbox: Option<bool>,
    pub media_urls: Option<Vec<String>>,
    pub subject: Option<String>,
}

/// `template` of a send (`Template`): `id` and `name` are mutually exclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TemplateRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub parameters: Option<BTreeMap<String, String>>,
}

/// One entry of a channel's list in `channels` (`Channel`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SenderEntry {
    pub country: Option<String>,
    pub from: Option<Vec<String>>,
    pub strategy: Option<String>,
}

/// Keys of `MessageSendParams` that travel in the body (the SDK sends
/// `idempotency_key` and `x_profile_id` as headers).
const SEND_KEYS: [&str; 9] = [
    "channel",
    "channels",
    "media_urls",
    "sandbox",
    "scheduled_at",
    "subject",
    "template",
    "text",
    "to",
];
const TEMPLATE_KEYS: [&str; 3] = ["id", "name", "parameters"];
const SENDER_KEYS: [&str; 3] = ["country", "from", "strategy"];

/// A shape problem: the field (dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShapeProblem {
    pub field: String,
    pub problem: String,
}

/// The outcome of reading a send body: the request if its shape is right,
/// the shape problems otherwise, and the undefined keys seen either way.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub request: Option<SendRequest>,
    pub problems: Vec<ShapeProblem>,
    /// Dotted paths of keys Sent's request type does not define.
    pub unknown_fields: Vec<String>,
}

/// Reads a send body. Any problem (not JSON, not an object, a wrong type, an
/// undefined key) leaves `request` empty.
pub(crate) fn parse_send(body: &[u8]) -> Parsed {
    let mut reader = Reader::default();
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => {
            reader.problem("body", format!("not valid JSON: {err}"));
            return reader.finish(None);
        }
    };
    let Value::Object(object) = value else {
        reader.problem("body", "must be a JSON object".into());
        return reader.finish(None);
    };
    reader.unknown_keys(&object, &SEND_KEYS, "");
    let request = SendRequest {
        to: match object.get("to") {
            None => Vec::new(),
            Some(value) => reader.strings(value, "to").unwrap_or_default(),
        },
        template: reader.nullable(&object, "template", |r, v| r.template(v)),
        channel: reader.nullable(&object, "channel", |r, v| r.strings(v, "channel")),
        channels: reader.nullable(&object, "channels", |r, v| r.channels(v)),
        text: reader.nullable(&object, "text", |r, v| r.string(v, "text")),
        scheduled_at: reader.nullable(&object, "scheduled_at", |r, v| r.string(v, "scheduled_at")),
        // `sandbox: bool` is the one optional key that is not nullable.
        sandbox: object.get("sandbox").and_then(|v| match v {
            Value::Bool(b) => Some(*b),
            other => {
                reader.problem("sandbox", format!("must be a boolean, got {}", kind(other)));
                None
            }
        }),
        media_urls: reader.nullable(&object, "media_urls", |r, v| r.strings(v, "media_urls")),
        subject: reader.nullable(&object, "subject", |r, v| r.string(v, "subject")),
    };
    reader.finish(Some(request))
}

#[derive(Default)]
struct Reader {
    problems: Vec<ShapeProblem>,
    unknown: Vec<String>,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Reader {
    fn problem(&mut self, field: &str, problem: String) {
        self.problems.push(ShapeProblem {
            field: field.to_owned(),
            problem,
        });
    }

    fn finish(self, request: Option<SendRequest>) -> Parsed {
        let ok = self.problems.is_empty();
        Parsed {
            request: request.filter(|_| ok),
            problems: self.problems,
            unknown_fields: self.unknown,
        }
    }

    fn unknown_keys(&mut self, object: &Map<String, Value>, known: &[&str], prefix: &str) {
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                let field = format!("{prefix}{key}");
                self.problem(&field, "is not a field of this request".into());
                self.unknown.push(field);
            }
        }
    }

    /// An optional, nullable key: absent and `null` are both `None`.
    fn nullable<T>(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
        read: impl FnOnce(&mut Self, &Value) -> Option<T>,
    ) -> Option<T> {
        match object.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => read(self, value),
        }
    }

    fn string(&mut self, value: &Value, field: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(field, format!("must be a string, got {}", kind(other)));
                None
            }
        }
    }

    fn strings(&mut self, value: &Value, field: &str) -> Option<Vec<String>> {
        let Value::Array(items) = value else {
            self.problem(
                field,
                format!("must be a list of strings, got {}", kind(value)),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                other => self.problem(
                    field,
                    format!("{field}[{index}] must be a string, got {}", kind(other)),
                ),
            }
        }
        Some(out)
    }

    fn template(&mut self, value: &Value) -> Option<TemplateRef> {
        let Value::Object(object) = value else {
            self.problem(
                "template",
                format!("must be an object, got {}", kind(value)),
            );
            return None;
        };
        self.unknown_keys(object, &TEMPLATE_KEYS, "template.");
        let parameters = self.nullable(object, "parameters", |r, v| {
            let Value::Object(map) = v else {
                r.problem(
                    "template.parameters",
                    format!("must be an object of strings, got {}", kind(v)),
                );
                return None;
            };
            let mut out = BTreeMap::new();
            for (key, value) in map {
                match value {
                    Value::String(s) => {
                        out.insert(key.clone(), s.clone());
                    }
                    other => r.problem(
                        "template.parameters",
                        format!("{key:?} must be a string, got {}", kind(other)),
                    ),
                }
            }
            Some(out)
        });
        Some(TemplateRef {
            id: self.nullable(object, "id", |r, v| r.string(v, "template.id")),
            name: self.nullable(object, "name", |r, v| r.string(v, "template.name")),
            parameters,
        })
    }

    fn channels(&mut self, value: &Value) -> Option<BTreeMap<String, Vec<SenderEntry>>> {
        let Value::Object(map) = value else {
            self.problem(
                "channels",
                format!(
                    "must be an object of channel -> list of {{country?, from?, strategy?}}, got {}",
                    kind(value)
                ),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (channel, entries) in map {
            let Value::Array(entries) = entries else {
                self.problem(
                    "channels",
                    format!("channels.{channel} must be a list, got {}", kind(entries)),
                );
                continue;
            };
            let mut list = Vec::with_capacity(entries.len());
            for (index, entry) in entries.iter().enumerate() {
                let path = format!("channels.{channel}[{index}]");
                let Value::Object(entry) = entry else {
                    self.problem(
                        "channels",
                        format!("{path} must be an object, got {}", kind(entry)),
                    );
                    continue;
                };
                self.unknown_keys(entry, &SENDER_KEYS, &format!("{path}."));
                list.push(SenderEntry {
                    country: self.nullable(entry, "country", |r, v| r.string(v, "channels")),
                    from: self.nullable(entry, "from", |r, v| r.strings(v, "channels")),
                    strategy: self.nullable(entry, "strategy", |r, v| r.string(v, "channels")),
                });
            }
            out.insert(channel.clone(), list);
        }
        Some(out)
    }
}

// --------------------------------------------------------------- answers

/// Field name -> problems, as in `error.details`.
pub(crate) type Details = BTreeMap<String, Vec<String>>;

/// The envelope of every v3 answer. Every member is optional in Sent's
/// types; the simulator writes `null` rather than leaving keys out.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Envelope<T> {
    pub success: Option<bool>,
    pub data: Option<T>,
    pub error: Option<ApiError>,
    pub meta: Option<Meta>,
}

/// `meta` (`APIMeta`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Meta {
    pub request_id: String,
    pub timestamp: String,
    pub version: &'static str,
}

/// `error` (`ErrorDetail`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ApiError {
    pub code: Option<String>,
    pub message: Option<String>,
    pub details: Option<Details>,
    pub doc_url: Option<String>,
}

/// `data` of a 202 to `POST /v3/messages` (`message_send_response.Data`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SendData {
    pub status: Option<&'static str>,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    pub recipients: Option<Vec<Recipient>>,
    /// Only on a send that carried `scheduled_at`: the SDK documents that
    /// answer as a ScheduledSendMessageResponse, "the same fields plus scheduled_at".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
}

/// `data.recipients[]` (`DataRecipient`): `channel` and `body` are `null`
/// when Sent picks the channel.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Recipient {
    pub message_id: Option<String>,
    pub to: Option<String>,
    pub channel: Option<&'static str>,
    pub body: Option<String>,
}

/// `data` of `GET /v3/messages/{id}` (`message_retrieve_status_response.Data`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MessageInfo {
    pub id: String,
    pub status: &'static str,
    pub channel: &'static str,
    pub phone: String,
    pub direction: &'static str,
    pub customer_id: String,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    pub message_body: MessageBody,
    pub created_at: String,
    pub events: Vec<EventEntry>,
    /// On FAILED, FILTERED and BLOCKED only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Only on a message that is or was held for later (ScheduledMessageResponse).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
}

/// `message_body` (`DataMessageBody`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MessageBody {
    pub content: Option<String>,
    /// MMS only.
    pub subject: Option<String>,
    /// MMS only: the URLs handed to the carrier.
    pub media: Option<Vec<Media>>,
}

/// `message_body.media[]` (`DataMessageBodyMedia`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Media {
    pub url: String,
}

/// `data.events[]` (`DataEvent`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventEntry {
    pub status: &'static str,
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// `payload` of a message webhook (`MessageEventPayload`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MessageEventPayload {
    pub message_id: String,
    pub message_status: &'static str,
    pub channel: &'static str,
    pub outbound_number: String,
    /// Left out when the message was not sent from a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    pub account_id: String,
    pub updated_at: String,
    /// Always present, possibly `null`.
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// `message.scheduled` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
}

/// The payload of `message.received`, as the SDK's
/// `InboundMessageEventPayload` reads it.
#[derive(Debug, Serialize)]
pub(crate) struct InboundMessageEventPayload {
    pub message_id: String,
    /// The contact, E.164.
    pub inbound_number: String,
    /// The account's number the contact wrote to.
    pub outbound_number: String,
    pub account_id: String,
    pub channel: String,
    /// Always present, possibly `null` (a media-only message).
    pub text: Option<String>,
    /// Left out when the channel carries none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<InboundMedia>,
    pub received_at: String,
    pub updated_at: String,
}

/// One attachment of an inbound message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InboundMedia {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Parsed {
        parse_send(&serde_json::to_vec(&value).unwrap())
    }

    fn fields(parsed: &Parsed) -> Vec<&str> {
        parsed.problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn reads_every_field_sent_defines() {
        let parsed = parse(json!({
            "to": ["+14155550123"],
            "template": {"id": "t", "name": null, "parameters": {"a": "b"}},
            "channel": ["sms"],
            "channels": {"sms": [{"country": "US", "from": ["+12125550000"], "strategy": "sticky"}, {"from": null}]},
            "text": null,
            "scheduled_at": null,
            "sandbox": false,
            "media_urls": null,
            "subject": null,
        }));
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let request = parsed.request.unwrap();
        assert_eq!(request.template.unwrap().parameters.unwrap()["a"], "b");
        assert_eq!(request.channels.unwrap()["sms"].len(), 2);
        assert_eq!(request.sandbox, Some(false));
    }

    #[test]
    fn undefined_keys_are_named_and_counted_at_every_level() {
        let parsed = parse(json!({
            "to": ["+14155550123"],
            "template": {"id": "t", "variables": {}},
            "channels": {"sms": [{"from": ["+12125550000"], "weight": 1}]},
            "priority": "high",
        }));
        assert!(parsed.request.is_none());
        assert_eq!(
            parsed.unknown_fields,
            ["priority", "template.variables", "channels.sms[0].weight"]
        );
        assert_eq!(
            fields(&parsed),
            ["priority", "template.variables", "channels.sms[0].weight"]
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (body, field) in [
            (json!({"to": "+14155550123"}), "to"),
            (json!({"to": [14155550123u64]}), "to"),
            (json!({"to": null}), "to"),
            (json!({"to": [], "channels": ["sms"]}), "channels"),
            (
                json!({"to": [], "channels": {"sms": {"from": []}}}),
                "channels",
            ),
            (json!({"to": [], "channel": "sms"}), "channel"),
            (json!({"to": [], "template": "welcome"}), "template"),
            (json!({"to": [], "template": {"id": 7}}), "template.id"),
            (
                json!({"to": [], "template": {"parameters": {"n": 1}}}),
                "template.parameters",
            ),
            (json!({"to": [], "sandbox": "yes"}), "sandbox"),
            (json!({"to": [], "sandbox": null}), "sandbox"),
            (json!({"to": [], "text": 5}), "text"),
            (json!({"to": [], "media_urls": "https://x"}), "media_urls"),
            (
                json!({"to": [], "scheduled_at": 1767225600}),
                "scheduled_at",
            ),
            (json!(["+14155550123"]), "body"),
        ] {
            let parsed = parse(body.clone());
            assert!(parsed.request.is_none(), "{body}");
            assert_eq!(fields(&parsed), [field], "{body}");
            assert!(parsed.unknown_fields.is_empty());
        }
        let parsed = parse_send(b"{not json");
        assert_eq!(fields(&parsed), ["body"]);
    }

    #[test]
    fn answers_write_null_for_absent_optional_members() {
        let envelope = Envelope {
            success: Some(true),
            data: Some(SendData {
                status: Some("QUEUED"),
                template_id: None,
                template_name: None,
                recipients: Some(vec![Recipient {
                    message_id: Some("m1".into()),
                    to: Some("+14155550123".into()),
                    channel: None,
                    body: None,
                }]),
                scheduled_at: None,
            }),
            error: None,
            meta: None,
        };
        assert_eq!(
            serde_json::to_value(&envelope).unwrap(),
            json!({
                "success": true,
                "data": {"status": "QUEUED", "template_id": null, "template_name": null,
                         "recipients": [{"message_id": "m1", "to": "+14155550123", "channel": null, "body": null}]},
                "error": null,
                "meta": null,
            })
        );
    }
}
