//! Validation of `POST /v3/messages` and the magic inputs that trigger
//! Sent's permanent errors deterministically.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use http::StatusCode;
use uuid::Uuid;

use super::response::{Details, Failure};
use super::wire::{SendRequest, ShapeProblem};
use crate::lifecycle::Forced;

/// Most recipients one send may name.
pub(crate) const MAX_RECIPIENTS: usize = 1_000;
const MAX_TEMPLATE_REF: usize = 100;
/// Channel names of `channel`, exactly as Sent spells them (case-sensitive).
const CHANNEL_NAMES: &str = "sms, whatsapp, rcs, mms, sent";

/// One entry of `channel`: a named channel, or `sent` / no channel (Sent picks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelChoice {
    /// Sent picks: the 202 shows `channel` and `body` as `null`; the message
    /// goes out on the simulator's auto channel.
    Auto,
    Named(&'static str),
}

/// A send that passed validation, with everything the messages need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValidSend {
    pub to: Vec<String>,
    pub channels: Vec<ChannelChoice>,
    pub template_id: Option<Arc<str>>,
    pub template_name: Option<Arc<str>>,
    pub body: Option<Arc<str>>,
    pub subject: Option<Arc<str>>,
    pub media_urls: Option<Arc<[String]>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub forced: Option<Forced>,
}

impl ValidSend {
    pub fn message_count(&self) -> usize {
        self.to.len() * self.channels.len()
    }
}
/// `^\+[1-9]\d{1,14}$`
pub(crate) fn is_e164(number: &str) -> bool {
    let bytes = number.as_bytes();
    (3..=16).contains(&bytes.len())
        && bytes[0] == b'+'
        && (b'1'..=b'9').contains(&bytes[1])
        && bytes[2..].iter().all(u8::is_ascii_digit)
}

/// `^[A-Za-z0-9_-]{1,255}$`
pub(crate) fn is_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Collects field problems; the answer's code is the first problem's.
#[derive(Default)]
struct Problems {
    code: Option<&'static str>,
    details: Details,
}

impl Problems {
    fn add(&mut self, code: &'static str, field: &str, problem: String) {
        self.code.get_or_insert(code);
        self.details
            .entry(field.to_owned())
            .or_default()
            .push(problem);
    }

    fn into_failure(self) -> Option<Failure> {
        let code = self.code?;
        Some(Failure::validation(
            code,
            "The request is invalid",
            self.details,
        ))
    }
}

/// The 400 for a body whose shape is wrong (not JSON, wrong types, keys Sent
/// does not define): `VALIDATION_001`, each field named in `details`.
pub(crate) fn shape_failure(problems: &[ShapeProblem]) -> Failure {
    let mut collected = Problems::default();
    for problem in problems {
        collected.add("VALIDATION_001", &problem.field, problem.problem.clone());
    }
    collected.into_failure().unwrap_or_else(|| {
        Failure::validation("VALIDATION_001", "The request is invalid", Details::new())
    })
}

fn named_channel(name: &str) -> Option<&'static str> {
    match name {
        "sms" => Some("sms"),
        "whatsapp" => Some("whatsapp"),
        "rcs" => Some("rcs"),
        "mms" => Some("mms"),
        _ => None,
    }
}

/// Checks a send whose shape is right.
pub(crate) fn validate(request: &SendRequest, now: DateTime<Utc>) -> Result<ValidSend, Failure> {
    let mut problems = Problems::default();

    let mut to: Vec<String> = Vec::with_capacity(request.to.len());
    if request.to.is_empty() {
        problems.add(
            "VALIDATION_001",
            "to",
            "at least one recipient is required".into(),
        );
    } else if request.to.len() > MAX_RECIPIENTS {
        problems.add(
            "VALIDATION_007",
            "to",
            format!("at most {MAX_RECIPIENTS} recipients per request"),
        );
    } else {
        for (index, number) in request.to.iter().enumerate() {
            if !is_e164(number) {
                problems.add(
                    "VALIDATION_002",
                    "to",
                    format!("to[{index}] {number:?} is not an E.164 number"),
                );
            } else if !to.contains(number) {
                to.push(number.clone());
            }
        }
    }

    let template = request.template.as_ref();
    let nonempty = |value: Option<&String>| value.filter(|v| !v.trim().is_empty()).cloned();
    let template_id = nonempty(template.and_then(|t| t.id.as_ref()));
    let template_name = nonempty(template.and_then(|t| t.name.as_ref()));
    let text = nonempty(request.text.as_ref());
    for (field, value) in [
        ("template.id", &template_id),
        ("template.name", &template_name),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_TEMPLATE_REF) {
            problems.add(
                "VALIDATION_003",
                field,
                format!("at most {MAX_TEMPLATE_REF} characters"),
            );
        }
    }
    match (template, &text) {
        (None, None) => problems.add(
            "VALIDATION_003",
            "template",
            "a template (id or name) or text is required".into(),
        ),
        (Some(_), Some(_)) => problems.add(
            "VALIDATION_003",
            "text",
            "provide either template or text, not both".into(),
        ),
        (Some(_), None) if template_id.is_none() && template_name.is_none() => problems.add(
            "VALIDATION_003",
            "template",
            "a template id or name is required".into(),
        ),
        _ => {}
    }
    if template_id.is_some() && template_name.is_some() {
        problems.add(
            "VALIDATION_003",
            "template",
            "template.id and template.name are mutually exclusive".into(),
        );
    }

    let mut channels: Vec<ChannelChoice> = Vec::with_capacity(2);
    for name in request.channel.iter().flatten() {
        let choice = match (name.as_str(), named_channel(name)) {
            ("sent", _) => ChannelChoice::Auto,
            (_, Some(channel)) => ChannelChoice::Named(channel),
            (_, None) => {
                problems.add(
                    "VALIDATION_004",
                    "channel",
                    format!("{name:?} is not one of {CHANNEL_NAMES} (names are case-sensitive)"),
                );
                continue;
            }
        };
        if !channels.contains(&choice) {
            channels.push(choice);
        }
    }
    if channels.is_empty() {
        channels.push(ChannelChoice::Auto);
    }

    for (channel, entries) in request.channels.iter().flatten() {
        if channel == "sent" {
            problems.add(
                "VALIDATION_004",
                "channels",
                "sent is auto-detect, not a channel: it cannot hold sender numbers".into(),
            );
        } else if named_channel(channel).is_none() {
            problems.add(
                "VALIDATION_004",
                "channels",
                format!("{channel:?} is not one of sms, whatsapp, rcs, mms"),
            );
        }
        for (index, entry) in entries.iter().enumerate() {
            for number in entry.from.iter().flatten() {
                if !is_e164(number) {
                    problems.add(
                        "VALIDATION_002",
                        "channels",
                        format!(
                            "channels.{channel}[{index}].from: {number:?} is not an E.164 number"
                        ),
                    );
                }
            }
        }
    }

    let mut scheduled_at = None;
    if let Some(text) = request.scheduled_at.as_deref() {
        match DateTime::parse_from_rfc3339(text) {
            Err(_) => problems.add(
                "VALIDATION_005",
                "scheduled_at",
                "must be an RFC 3339 date-time with an offset".into(),
            ),
            Ok(at) => {
                let at = at.with_timezone(&Utc);
                if at < now + Duration::minutes(1) || at > now + Duration::days(30) {
                    problems.add(
                        "VALIDATION_005",
                        "scheduled_at",
                        "must be between 1 minute and 30 days ahead".into(),
                    );
                } else {
                    scheduled_at = Some(at);
                }
            }
        }
    }

    let media_urls = request.media_urls.clone().unwrap_or_default();
    for url in &media_urls {
        if !is_https_url(url) {
            problems.add(
                "VALIDATION_001",
                "media_urls",
                format!("{url:?} is not an https URL"),
            );
        }
    }
    // The simulator's templates carry no media: mms needs media_urls.
    if media_urls.is_empty() && channels.contains(&ChannelChoice::Named("mms")) {
        problems.add(
            "VALIDATION_001",
            "media_urls",
            "mms needs something attached: media_urls is empty and the template has no media"
                .into(),
        );
    }

    if let Some(failure) = problems.into_failure() {
        return Err(failure);
    }

    // Sent resolves a name to its template's id; the simulator derives a stable one.
    let resolved_id = template_id
        .clone()
        .or_else(|| template_name.as_deref().map(derived_template_id));
    let body = text.or_else(|| {
        template.map(|t| {
            render(
                resolved_label(&template_name, &template_id),
                t.parameters.as_ref(),
            )
        })
    });
    Ok(ValidSend {
        to,
        channels,
        template_id: resolved_id.map(Arc::from),
        template_name: template_name.map(Arc::from),
        body: body.map(Arc::from),
        subject: nonempty(request.subject.as_ref()).map(Arc::from),
        media_urls: (!media_urls.is_empty()).then(|| Arc::from(media_urls)),
        scheduled_at,
        forced: forced_outcome(request),
    })
}

/// `https://host/...`
fn is_https_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some())
}

fn resolved_label<'a>(name: &'a Option<String>, id: &'a Option<String>) -> &'a str {
    name.as_deref().or(id.as_deref()).unwrap_or("template")
}

/// `Template welcome (name=Ada)`: the simulator has no template content.
fn render(label: &str, parameters: Option<&std::collections::BTreeMap<String, String>>) -> String {
    let mut body = format!("Template {label}");
    if let Some(parameters) = parameters.filter(|p| !p.is_empty()) {
        let list: Vec<String> = parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        body.push_str(&format!(" ({})", list.join(", ")));
    }
    body
}

fn derived_template_id(name: &str) -> String {
    let hash = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        (salt, name).hash(&mut hasher);
        hasher.finish()
    };
    Uuid::from_u64_pair(hash(1), hash(2)).to_string()
}

fn template_refs(request: &SendRequest) -> impl Iterator<Item = &str> {
    let template = request.template.as_ref();
    [
        template.and_then(|t| t.id.as_deref()),
        template.and_then(|t| t.name.as_deref()),
    ]
    .into_iter()
    .flatten()
}

/// The synchronous error a magic template id or name stands for.
pub(crate) fn magic_failure(request: &SendRequest) -> Option<Failure> {
    template_refs(request).find_map(|reference| {
        let (status, code, message) = match reference {
            "sim_not_found" => (StatusCode::NOT_FOUND, "RESOURCE_002", "Template not found"),
            "sim_unapproved" => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "BUSINESS_005",
                "Template is not approved",
            ),
            "sim_no_balance" => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "BUSINESS_003",
                "Insufficient account balance",
            ),
            "sim_opted_out" => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "BUSINESS_004",
                "All recipients have opted out",
            ),
            "sim_channel_unavailable" => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "BUSINESS_007",
                "No requested channel is available",
            ),
            "sim_quota" => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "BUSINESS_008",
                "Messaging quota exceeded",
            ),
            "sim_forbidden" => (
                StatusCode::FORBIDDEN,
                "AUTH_004",
                "The account is not allowed to send messages",
            ),
            "sim_limit" => (
                StatusCode::TOO_MANY_REQUESTS,
                "LIMIT_001",
                "Account limit reached",
            ),
            _ => return None,
        };
        Some(Failure::new(status, code, message))
    })
}

/// An asynchronous outcome a magic template id or name stands for.
fn forced_outcome(request: &SendRequest) -> Option<Forced> {
    template_refs(request)
        .any(|reference| reference == "sim_async_no_balance")
        .then_some(Forced::BlockedBalance)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::wire::parse_send;
    use super::*;

    fn request(value: Value) -> SendRequest {
        let parsed = parse_send(&serde_json::to_vec(&value).unwrap());
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        parsed.request.unwrap()
    }

    fn send(to: &[&str]) -> Value {
        json!({"to": to, "template": {"name": "welcome"}})
    }

    /// The code and the fields named in `details` of a refused send.
    fn refused(value: Value) -> (&'static str, Vec<String>) {
        let failure = validate(&request(value.clone()), Utc::now())
            .expect_err(&format!("{value} must be refused"));
        assert_eq!(failure.status, StatusCode::BAD_REQUEST);
        (failure.code, failure.details.unwrap().into_keys().collect())
    }

    #[test]
    fn e164_and_keys() {
        for good in ["+14155550123", "+12", "+123456789012345"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "14155550123",
            "+0123",
            "+1",
            "+1234567890123456",
            "+1415555012a",
            "",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert!(is_idempotency_key("msg_01H-abc"));
        assert!(!is_idempotency_key(""));
        assert!(!is_idempotency_key("a b"));
        assert!(!is_idempotency_key(&"a".repeat(256)));
    }

    #[test]
    fn fans_out_and_keeps_auto_apart_from_named_channels() {
        let mut value = send(&["+14155550123", "+14155550124", "+14155550123"]);
        value["channel"] = json!(["sent", "whatsapp", "sms", "sms"]);
        let valid = validate(&request(value), Utc::now()).unwrap();
        assert_eq!(valid.to.len(), 2);
        assert_eq!(
            valid.channels,
            [
                ChannelChoice::Auto,
                ChannelChoice::Named("whatsapp"),
                ChannelChoice::Named("sms")
            ]
        );
        assert_eq!(valid.message_count(), 6);
        assert_eq!(valid.template_name.as_deref(), Some("welcome"));
        assert_eq!(valid.template_id.as_deref().map(str::len), Some(36));
        let valid = validate(&request(send(&["+14155550123"])), Utc::now()).unwrap();
        assert_eq!(valid.channels, [ChannelChoice::Auto]);
        let mut empty = send(&["+14155550123"]);
        empty["channel"] = json!([]);
        let valid = validate(&request(empty), Utc::now()).unwrap();
        assert_eq!(valid.channels, [ChannelChoice::Auto]);
    }

    #[test]
    fn reports_every_problem_with_the_first_code() {
        let (code, fields) = refused(json!({
            "to": ["0123"],
            "channel": ["fax"],
            "scheduled_at": "2026-01-01T00:00:00",
        }));
        assert_eq!(code, "VALIDATION_002");
        assert_eq!(fields, ["channel", "scheduled_at", "template", "to"]);
    }

    #[test]
    fn channel_names_are_case_sensitive() {
        for name in ["SMS", "WhatsApp", "Sent", "fax"] {
            let mut value = send(&["+14155550123"]);
            value["channel"] = json!([name]);
            assert_eq!(
                refused(value),
                ("VALIDATION_004", vec!["channel".into()]),
                "{name}"
            );
        }
    }

    #[test]
    fn template_and_text_exactly_one() {
        let both = json!({"to": ["+14155550123"], "template": {"id": "t"}, "text": "hi"});
        assert_eq!(refused(both), ("VALIDATION_003", vec!["text".into()]));
        let neither = json!({"to": ["+14155550123"]});
        assert_eq!(
            refused(neither),
            ("VALIDATION_003", vec!["template".into()])
        );
        let empty = json!({"to": ["+14155550123"], "template": {"parameters": {"a": "b"}}});
        assert_eq!(refused(empty), ("VALIDATION_003", vec!["template".into()]));
        let text = json!({"to": ["+14155550123"], "text": "hi", "template": null});
        assert!(validate(&request(text), Utc::now()).is_ok());
    }

    #[test]
    fn template_id_and_name_are_mutually_exclusive() {
        let both = json!({"to": ["+14155550123"], "template": {"id": "t", "name": "welcome"}});
        assert_eq!(refused(both), ("VALIDATION_003", vec!["template".into()]));
        let id = json!({"to": ["+14155550123"], "template": {"id": "t", "name": null}});
        assert!(validate(&request(id), Utc::now()).is_ok());
    }

    #[test]
    fn media_urls_must_be_https_and_mms_needs_media() {
        let mut http = send(&["+14155550123"]);
        http["media_urls"] = json!([
            "https://cdn.example.com/a.jpg",
            "http://cdn.example.com/b.jpg"
        ]);
        assert_eq!(refused(http), ("VALIDATION_001", vec!["media_urls".into()]));
        for media in [json!(null), json!([])] {
            let value = json!({"to": ["+14155550123"], "text": "hi", "channel": ["mms"], "media_urls": media});
            assert_eq!(
                refused(value),
                ("VALIDATION_001", vec!["media_urls".into()])
            );
        }
        let template_mms =
            json!({"to": ["+14155550123"], "template": {"id": "t"}, "channel": ["sms", "mms"]});
        assert_eq!(
            refused(template_mms),
            ("VALIDATION_001", vec!["media_urls".into()])
        );
        let mms = json!({"to": ["+14155550123"], "text": "hi", "channel": ["mms"],
                         "media_urls": ["https://cdn.example.com/a.jpg"], "subject": "Hi"});
        let valid = validate(&request(mms), Utc::now()).unwrap();
        assert_eq!(valid.media_urls.as_deref().map(<[String]>::len), Some(1));
        assert_eq!(valid.subject.as_deref(), Some("Hi"));
    }

    #[test]
    fn sender_channels_are_checked() {
        let mut good = send(&["+14155550123"]);
        good["channels"] =
            json!({"sms": [{"from": ["+12125550000"], "country": "US"}], "whatsapp": []});
        assert!(validate(&request(good), Utc::now()).is_ok());
        for (channels, code) in [
            (
                json!({"sent": [{"from": ["+12125550000"]}]}),
                "VALIDATION_004",
            ),
            (json!({"SMS": []}), "VALIDATION_004"),
            (json!({"sms": [{"from": ["2125550000"]}]}), "VALIDATION_002"),
        ] {
            let mut value = send(&["+14155550123"]);
            value["channels"] = channels;
            assert_eq!(refused(value), (code, vec!["channels".into()]));
        }
    }

    #[test]
    fn schedule_window() {
        let now = Utc::now();
        let at = |at: DateTime<Utc>| {
            let mut value = send(&["+14155550123"]);
            value["scheduled_at"] = json!(at.to_rfc3339());
            validate(&request(value), now)
        };
        assert!(at(now + Duration::hours(1)).unwrap().scheduled_at.is_some());
        assert!(at(now + Duration::days(31)).is_err());
        assert!(at(now + Duration::seconds(10)).is_err());
    }
}
