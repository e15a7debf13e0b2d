//! Validation of `POST /v3/messages` and the magic inputs that trigger
//! Sent's permanent errors deterministically.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::sent::wire::SendRequest;
use http::StatusCode;
use uuid::Uuid;

use super::response::{Details, Failure};
use crate::lifecycle::Forced;

/// Most recipients one send may name.
pub(crate) const MAX_RECIPIENTS: usize = 1_000;
const MAX_TEMPLATE_REF: usize = 100;

/// A send that passed validation, with everything the messages need.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ValidSend {
    pub to: Vec<String>,
    pub channels: Vec<&'static str>,
    pub template_id: Option<Arc<str>>,
    pub template_name: Option<Arc<str>>,
    pub body: Option<Arc<str>>,
    pub subject: Option<Arc<str>>,
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
}

/// Checks a parsed send; `auto_channel` replaces an omitted channel or `sent`.
pub(crate) fn validate(
    request: &SendRequest,
    auto_channel: &'static str,
    now: DateTime<Utc>,
) -> Result<ValidSend, Failure> {
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
    if template_id.is_none() && template_name.is_none() && text.is_none() {
        problems.add(
            "VALIDATION_003",
            "template",
            "a template id or name is required unless text is given".into(),
        );
    }

    let mut channels: Vec<&'static str> = Vec::with_capacity(2);
    for name in request.channel.iter().flatten() {
        let channel = match name.to_ascii_lowercase().as_str() {
            "sms" => "sms",
            "whatsapp" => "whatsapp",
            "rcs" => "rcs",
            "mms" => "mms",
            "sent" => auto_channel,
            _ => {
                problems.add(
                    "VALIDATION_004",
                    "channel",
                    format!("{name:?} is not one of sms, whatsapp, rcs, mms, sent"),
                );
                continue;
            }
        };
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    if channels.is_empty() {
        channels.push(auto_channel);
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

    for url in request.media_urls.iter().flatten() {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            problems.add(
                "VALIDATION_001",
                "media_urls",
                format!("{url:?} is not an http(s) URL"),
            );
        }
    }

    if let Some(code) = problems.code {
        return Err(Failure::validation(
            code,
            "The request is invalid",
            problems.details,
        ));
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
        scheduled_at,
        forced: forced_outcome(request),
    })
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
    use common::sent::wire::TemplateBody;

    use super::*;

    fn send(to: &[&str]) -> SendRequest {
        SendRequest {
            to: to.iter().map(|s| s.to_string()).collect(),
            template: Some(TemplateBody {
                name: Some("welcome".into()),
                ..TemplateBody::default()
            }),
            ..SendRequest::default()
        }
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
    fn fans_out_and_resolves_channels() {
        let mut request = send(&["+14155550123", "+14155550124", "+14155550123"]);
        request.channel = Some(vec!["sent".into(), "WhatsApp".into(), "sms".into()]);
        let valid = validate(&request, "sms", Utc::now()).unwrap();
        assert_eq!(valid.to.len(), 2);
        assert_eq!(valid.channels, ["sms", "whatsapp"]);
        assert_eq!(valid.message_count(), 4);
        assert_eq!(valid.template_name.as_deref(), Some("welcome"));
        assert_eq!(valid.template_id.as_deref().map(str::len), Some(36));
    }

    #[test]
    fn reports_every_problem_with_the_first_code() {
        let mut request = send(&["0123"]);
        request.template = None;
        request.channel = Some(vec!["fax".into()]);
        request.scheduled_at = Some("2026-01-01T00:00:00".into());
        let failure = validate(&request, "sms", Utc::now()).unwrap_err();
        assert_eq!(failure.code, "VALIDATION_002");
        let details = failure.details.unwrap();
        for field in ["to", "template", "channel", "scheduled_at"] {
            assert!(details.contains_key(field), "{field}: {details:?}");
        }
    }

    #[test]
    fn schedule_window() {
        let now = Utc::now();
        let mut request = send(&["+14155550123"]);
        request.scheduled_at = Some((now + Duration::hours(1)).to_rfc3339());
        assert!(
            validate(&request, "sms", now)
                .unwrap()
                .scheduled_at
                .is_some()
        );
        request.scheduled_at = Some((now + Duration::days(31)).to_rfc3339());
        assert!(validate(&request, "sms", now).is_err());
        request.scheduled_at = Some((now + Duration::seconds(10)).to_rfc3339());
        assert!(validate(&request, "sms", now).is_err());
    }
}
