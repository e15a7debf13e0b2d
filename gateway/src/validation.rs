//! Validation of request bodies into domain values, collecting every
//! problem by field (messages worded as in the original integration).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::domain::{Channel, PhoneNumber, TEMPLATE_FIELD_MAX, TemplateRef};
use common::outbound::OutboundPolicy;
use serde_json::{Map, Value};

use crate::error::FieldErrors;

pub const MISSING: &str = "Missing data for required field.";
const NOT_STRING: &str = "Not a valid string.";
const UNKNOWN: &str = "Unknown field.";
/// Postgres stores no U+0000 in text or jsonb: such a string could never be
/// committed (and would fail every request of its group commit with it).
const NUL: &str = "Must not contain the NUL character.";

// The limits of the sending routes, used by the validator below and by the
// bodies' schemas (`routes::messages::types`).
pub const METADATA_MAX_KEYS: usize = 20;
pub const METADATA_MAX_KEY_CHARS: usize = 64;
pub const METADATA_MAX_VALUE_CHARS: usize = 512;
pub const PARAMETERS_MAX_KEYS: usize = 100;
pub const PARAMETER_MAX_KEY_CHARS: usize = 128;
pub const PARAMETER_MAX_CHARS: usize = 1024;
/// The fields of the shortcut routes (`name`, `order_number`, `total`).
pub const SHORTCUT_FIELD_MAX: usize = 100;
/// Most messages in one batch.
pub const BATCH_MAX: usize = 1000;
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Most `media_urls` in one message.
pub const MEDIA_URLS_MAX: usize = 10;
/// Longest URL (`callback_url`, each of `media_urls`).
pub const URL_MAX_CHARS: usize = 2048;

/// A validated send request. Its JSON form is canonical (sorted maps), so
/// it is what an `Idempotency-Key` repeat is compared on. The fields added
/// for free text are left out of it when empty, so that a template
/// request's form, and so its `Idempotency-Key` hash, is what it was before.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SendRequest {
    pub phone_number: PhoneNumber,
    /// The template, or `None` for free `text`: exactly one of the two.
    pub template: Option<TemplateRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub media_urls: Vec<String>,
    pub parameters: BTreeMap<String, String>,
    pub channels: Vec<Channel>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub sandbox: bool,
    pub callback_url: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Reads fields off one JSON object, remembering each problem.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    pub errors: FieldErrors,
}

impl<'a> Fields<'a> {
    pub fn new(object: &'a Map<String, Value>, allowed: &[&str]) -> Fields<'a> {
        let mut fields = Fields {
            object,
            errors: FieldErrors::new(),
        };
        for key in object.keys() {
            if !allowed.contains(&key.as_str()) {
                fields.error(key, UNKNOWN);
            }
        }
        fields
    }

    pub fn error(&mut self, field: &str, problem: impl Into<String>) {
        // Field names come from the request (unknown fields, map keys) and
        // error bodies can be stored (idempotent replays): no NUL in them.
        self.errors
            .entry(field.replace('\0', "\u{FFFD}"))
            .or_default()
            .push(problem.into());
    }

    fn present(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field).filter(|v| !v.is_null())
    }

    pub fn string(
        &mut self,
        field: &str,
        required: bool,
        max_chars: Option<usize>,
    ) -> Option<String> {
        match self.present(field) {
            None => {
                if required {
                    self.error(field, MISSING);
                }
                None
            }
            Some(Value::String(s)) => {
                if s.contains('\0') {
                    self.error(field, NUL);
                    return None;
                }
                if let Some(max) = max_chars
                    && s.chars().count() > max
                {
                    self.error(field, format!("Longer than maximum length {max}."));
                    return None;
                }
                Some(s.clone())
            }
            Some(_) => {
                self.error(field, NOT_STRING);
                None
            }
        }
    }

    pub fn phone(&mut self, field: &str) -> Option<PhoneNumber> {
        let raw = self.string(field, true, None)?;
        PhoneNumber::parse(&raw)
            .map_err(|e| self.error(field, e))
            .ok()
    }

    pub fn string_map(
        &mut self,
        field: &str,
        max_keys: usize,
        max_key: usize,
        max_value: usize,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.present(field) {
            None => {}
            Some(Value::Object(map)) => {
                if map.len() > max_keys {
                    self.error(field, format!("At most {max_keys} entries."));
                    return out;
                }
                for (key, value) in map {
                    match value {
                        Value::String(s) if key.contains('\0') || s.contains('\0') => {
                            self.error(&format!("{field}.{key}"), NUL)
                        }
                        Value::String(s)
                            if key.chars().count() <= max_key && s.chars().count() <= max_value =>
                        {
                            out.insert(key.clone(), s.clone());
                        }
                        Value::String(_) => self.error(
                            &format!("{field}.{key}"),
                            format!(
                                "Keys up to {max_key} and values up to {max_value} characters."
                            ),
                        ),
                        _ => self.error(&format!("{field}.{key}"), NOT_STRING),
                    }
                }
            }
            Some(_) => self.error(field, "Not a valid mapping type."),
        }
        out
    }

    pub fn boolean(&mut self, field: &str) -> bool {
        match self.present(field) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.error(field, "Not a valid boolean.");
                false
            }
        }
    }

    pub fn finish<T>(self, value: Option<T>) -> Result<T, FieldErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(self.errors),
        }
    }
}

pub struct SendRules<'a> {
    pub allow_http_callbacks: bool,
    /// `TEXT_MAX_CHARS`.
    pub text_max_chars: usize,
    /// Which `callback_url` hosts are refused (`CALLBACK_ALLOW_PRIVATE_NETWORKS`).
    pub callback_policy: &'a OutboundPolicy,
}

const SEND_FIELDS: &[&str] = &[
    "phone_number",
    "template_id",
    "template_name",
    "text",
    "media_urls",
    "parameters",
    "channels",
    "scheduled_at",
    "sandbox",
    "callback_url",
    "metadata",
];

pub fn send_request(
    object: &Map<String, Value>,
    rules: &SendRules<'_>,
    now: DateTime<Utc>,
) -> Result<SendRequest, FieldErrors> {
    let mut f = Fields::new(object, SEND_FIELDS);
    let phone_number = f.phone("phone_number");
    let text = f.string("text", false, Some(rules.text_max_chars));
    if text.as_deref() == Some("") {
        f.error("text", "Must not be empty.");
    }
    // Whether a text was given, valid or not: either way no template is asked for.
    let text_given = f.present("text").is_some();
    let template = template(&mut f, text_given);
    let parameters = f.string_map(
        "parameters",
        PARAMETERS_MAX_KEYS,
        PARAMETER_MAX_KEY_CHARS,
        PARAMETER_MAX_CHARS,
    );
    if text.is_some() && !parameters.is_empty() {
        f.error("parameters", "Only with a template, not with text.");
    }
    let media_urls = media_urls(&mut f);
    let channels = channels(&mut f);
    // Sent refuses MMS with nothing attached; a template may carry its own
    // media, so only free text is checked here.
    if text.is_some() && media_urls.is_empty() && channels.contains(&Channel::Mms) {
        f.error("media_urls", "Required when text is sent on mms.");
    }
    let scheduled_at = scheduled_at(&mut f, now);
    let sandbox = f.boolean("sandbox");
    let callback_url = callback_url(&mut f, rules);
    let metadata = f.string_map(
        "metadata",
        METADATA_MAX_KEYS,
        METADATA_MAX_KEY_CHARS,
        METADATA_MAX_VALUE_CHARS,
    );
    let request = phone_number
        .zip(template)
        .map(|(phone_number, template)| SendRequest {
            phone_number,
            template,
            text,
            media_urls,
            parameters,
            channels,
            scheduled_at,
            sandbox,
            callback_url,
            metadata,
        });
    f.finish(request)
}

/// `template_id` and/or `template_name`, each 1..=100 characters, or
/// neither when the message is free `text`. `Some(None)` is a valid text
/// message; `None` means a problem was recorded.
fn template(f: &mut Fields<'_>, has_text: bool) -> Option<Option<TemplateRef>> {
    let id = f.string("template_id", false, None);
    let name = f.string("template_name", false, None);
    if f.errors.contains_key("template_id") || f.errors.contains_key("template_name") {
        return None;
    }
    match (id.is_some() || name.is_some(), has_text) {
        (false, true) => return Some(None),
        (true, true) => {
            f.error(
                "text",
                "Give either a template (template_id, template_name) or text, not both.",
            );
            return None;
        }
        (false, false) => {
            for field in ["template_id", "template_name", "text"] {
                f.error(
                    field,
                    "One of template_id, template_name or text is required.",
                );
            }
            return None;
        }
        (true, false) => {}
    }
    for (field, value) in [("template_id", &id), ("template_name", &name)] {
        if value
            .as_ref()
            .is_some_and(|v| !(1..=TEMPLATE_FIELD_MAX).contains(&v.chars().count()))
        {
            f.error(field, "Length must be between 1 and 100.");
        }
    }
    TemplateRef::new(id, name).ok().map(Some)
}

/// Up to [`MEDIA_URLS_MAX`] https URLs (Sent fetches them; it takes https only).
fn media_urls(f: &mut Fields<'_>) -> Vec<String> {
    let mut out = Vec::new();
    match f.present("media_urls") {
        None => {}
        Some(Value::Array(items)) if items.len() > MEDIA_URLS_MAX => {
            f.error("media_urls", format!("At most {MEDIA_URLS_MAX} URLs."));
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("media_urls.{i}");
                match item.as_str() {
                    Some(raw) if raw.chars().count() > URL_MAX_CHARS => f.error(
                        &field,
                        format!("Longer than maximum length {URL_MAX_CHARS}."),
                    ),
                    Some(raw) if is_https_url(raw) => out.push(raw.to_owned()),
                    Some(_) => f.error(&field, "Not a valid https URL."),
                    None => f.error(&field, NOT_STRING),
                }
            }
        }
        Some(_) => f.error("media_urls", "Not a valid list."),
    }
    out
}

fn is_https_url(raw: &str) -> bool {
    !raw.contains('\0')
        && url::Url::parse(raw).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
}

fn channels(f: &mut Fields<'_>) -> Vec<Channel> {
    let mut out = Vec::new();
    match f.present("channels") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str().map(str::parse::<Channel>) {
                    Some(Ok(c)) if !out.contains(&c) => out.push(c),
                    Some(Ok(_)) => f.error(&format!("channels.{i}"), "Duplicate channel."),
                    Some(Err(problem)) => f.error(&format!("channels.{i}"), problem),
                    None => f.error(&format!("channels.{i}"), NOT_STRING),
                }
            }
        }
        Some(_) => f.error("channels", "Not a valid list."),
    }
    out
}

fn scheduled_at(f: &mut Fields<'_>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let raw = f.string("scheduled_at", false, None)?;
    match DateTime::parse_from_rfc3339(&raw) {
        Err(_) => {
            f.error(
                "scheduled_at",
                "Not a valid RFC 3339 date-time with offset.",
            );
            None
        }
        Ok(at) => {
            let at = at.with_timezone(&Utc);
            let ahead = at - now;
            if ahead < chrono::Duration::minutes(1) || ahead > chrono::Duration::days(30) {
                f.error(
                    "scheduled_at",
                    "Must be between 1 minute and 30 days from now.",
                );
                None
            } else {
                Some(at)
            }
        }
    }
}

/// Said of a `callback_url` whose host is a private, loopback, link-local
/// (or otherwise non-public) address, or `localhost`.
pub const CALLBACK_NOT_PUBLIC: &str =
    "Must not point at a private, loopback or link-local address.";

/// An http(s) URL whose host is not refused by the callback policy. A
/// literal address is judged as the `url` crate reads it (`2130706433`,
/// `0x7f.1` and `[::ffff:127.0.0.1]` are all 127.0.0.1); names other than
/// `localhost` are not resolved here, but by the worker on every delivery.
fn callback_url(f: &mut Fields<'_>, rules: &SendRules<'_>) -> Option<String> {
    let raw = f.string("callback_url", false, Some(URL_MAX_CHARS))?;
    let parsed = url::Url::parse(&raw).ok().filter(|u| {
        u.host().is_some()
            && (u.scheme() == "https" || (u.scheme() == "http" && rules.allow_http_callbacks))
    });
    match parsed {
        Some(u) => match u.host() {
            Some(host) if rules.callback_policy.check_host(&host).is_err() => {
                f.error("callback_url", CALLBACK_NOT_PUBLIC);
                None
            }
            _ => Some(raw),
        },
        None => {
            f.error(
                "callback_url",
                if rules.allow_http_callbacks {
                    "Not a valid http(s) URL."
                } else {
                    "Not a valid https URL."
                },
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(body: Value) -> Result<SendRequest, FieldErrors> {
        validate_with(body, &OutboundPolicy::default(), false)
    }

    fn validate_with(
        body: Value,
        callback_policy: &OutboundPolicy,
        allow_http_callbacks: bool,
    ) -> Result<SendRequest, FieldErrors> {
        send_request(
            body.as_object().unwrap(),
            &SendRules {
                allow_http_callbacks,
                text_max_chars: 1600,
                callback_policy,
            },
            Utc::now(),
        )
    }

    #[test]
    fn callback_urls_must_not_point_inside_the_network() {
        let with_callback = |url: &str, policy: &OutboundPolicy| {
            validate_with(
                json!({"phone_number": "+14155550123", "template_name": "t", "callback_url": url}),
                policy,
                true,
            )
        };
        let none = OutboundPolicy::default();
        for url in [
            "http://127.0.0.1:9/x",
            "https://127.0.0.1/x",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://172.16.0.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://api.localhost/",
            "http://localhost./",
        ] {
            let errors = with_callback(url, &none).unwrap_err();
            assert_eq!(errors["callback_url"], [CALLBACK_NOT_PUBLIC], "{url}");
        }
        for url in [
            "https://client.example/hook",
            "https://8.8.8.8/hook",
            "http://[2606:4700:4700::1111]/",
            // Names are resolved at delivery, not here.
            "https://internal.corp.example/hook",
        ] {
            assert!(with_callback(url, &none).is_ok(), "{url}");
        }
        let loopback = OutboundPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        for url in [
            "http://127.0.0.1:9/x",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost/",
            "http://2130706433/",
        ] {
            assert!(with_callback(url, &loopback).is_ok(), "{url}");
        }
        let errors = with_callback("http://169.254.169.254/latest", &loopback).unwrap_err();
        assert_eq!(errors["callback_url"], [CALLBACK_NOT_PUBLIC]);
        // Without http, the scheme is what is wrong.
        let errors = validate(
            json!({"phone_number": "+14155550123", "template_name": "t", "callback_url": "http://10.0.0.1/"}),
        )
        .unwrap_err();
        assert_eq!(errors["callback_url"], ["Not a valid https URL."]);
    }

    #[test]
    fn the_original_example_is_valid() {
        let req = validate(
            json!({"phone_number": "+1234567890", "template_id": "template-123",
            "template_name": "welcome", "parameters": {"name": "John"}}),
        )
        .unwrap();
        assert_eq!(req.phone_number.as_str(), "+1234567890");
        assert_eq!(req.parameters["name"], "John");
    }

    #[test]
    fn every_problem_is_reported_by_field() {
        let errors = validate(json!({"phone_number": "invalid", "template_id": "", "parameters": {"n": 1},
            "channels": ["sms", "email"], "sandbox": "yes", "callback_url": "http://x.example", "extra": 1}))
        .unwrap_err();
        assert_eq!(errors["phone_number"], vec!["E.164 format required"]);
        assert_eq!(
            errors["template_id"],
            vec!["Length must be between 1 and 100."]
        );
        assert!(errors.contains_key("parameters.n"));
        assert!(errors["channels.1"][0].starts_with("Must be one of"));
        assert!(errors.contains_key("sandbox"));
        assert!(errors.contains_key("callback_url"));
        assert_eq!(errors["extra"], vec!["Unknown field."]);
    }

    #[test]
    fn empty_body_names_the_required_fields() {
        let errors = validate(json!({})).unwrap_err();
        assert_eq!(errors["phone_number"], vec![MISSING]);
        assert!(errors.contains_key("template_id") && errors.contains_key("template_name"));
        assert!(errors.contains_key("text"));
    }

    #[test]
    fn free_text_and_media() {
        let base = json!({"phone_number": "+14155550123"});
        let with = |extra: Value| {
            let mut body = base.clone();
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            validate(body)
        };
        let ok = with(json!({"text": "Your code is 1234"})).unwrap();
        assert_eq!(ok.template, None);
        assert_eq!(ok.text.as_deref(), Some("Your code is 1234"));
        // 1,600 scalar values, each a multi-byte character, fit; 1,601 do not.
        assert!(with(json!({"text": "é".repeat(1600)})).is_ok());
        let errors = with(json!({"text": "é".repeat(1601)})).unwrap_err();
        assert_eq!(errors["text"], ["Longer than maximum length 1600."]);
        let errors = with(json!({"text": "hi", "template_name": "welcome"})).unwrap_err();
        assert!(errors["text"][0].contains("not both"));
        let errors = with(json!({"text": "hi", "parameters": {"a": "b"}})).unwrap_err();
        assert!(errors.contains_key("parameters"));
        assert!(with(json!({"text": ""})).unwrap_err().contains_key("text"));
        // mms with free text needs media; with a template Sent decides.
        let errors = with(json!({"text": "hi", "channels": ["mms"]})).unwrap_err();
        assert_eq!(errors["media_urls"], ["Required when text is sent on mms."]);
        let mms = with(json!({"text": "hi", "channels": ["mms"],
            "media_urls": ["https://cdn.example/a.jpg"]}))
        .unwrap();
        assert_eq!(mms.media_urls, ["https://cdn.example/a.jpg"]);
        assert!(with(json!({"template_name": "promo", "channels": ["mms"]})).is_ok());
        let errors =
            with(json!({"text": "hi", "media_urls": ["http://cdn.example/a.jpg", 3, "nope"]}))
                .unwrap_err();
        assert_eq!(errors["media_urls.0"], ["Not a valid https URL."]);
        assert_eq!(errors["media_urls.1"], [NOT_STRING]);
        assert_eq!(errors["media_urls.2"], ["Not a valid https URL."]);
        let eleven: Vec<String> = (0..11)
            .map(|i| format!("https://cdn.example/{i}.jpg"))
            .collect();
        assert!(
            with(json!({"text": "hi", "media_urls": eleven}))
                .unwrap_err()
                .contains_key("media_urls")
        );
    }

    /// The canonical form of a template request (what an `Idempotency-Key`
    /// repeat is compared on) is unchanged by the free-text fields.
    #[test]
    fn a_template_requests_canonical_form_is_unchanged() {
        let request =
            validate(json!({"phone_number": "+14155550123", "template_name": "t"})).unwrap();
        let json = serde_json::to_value(&request).unwrap();
        assert!(json.get("text").is_none() && json.get("media_urls").is_none());
        assert_eq!(json["template"], json!({"id": null, "name": "t"}));
    }

    #[test]
    fn scheduled_at_must_be_in_sents_window() {
        let soon = (Utc::now() + chrono::Duration::seconds(10)).to_rfc3339();
        let later = (Utc::now() + chrono::Duration::days(2)).to_rfc3339();
        let naive = "2026-12-01T09:00:00";
        let base = json!({"phone_number": "+14155550123", "template_name": "t"});
        for (value, ok) in [(soon, false), (later, true), (naive.to_owned(), false)] {
            let mut body = base.clone();
            body["scheduled_at"] = json!(value);
            assert_eq!(validate(body).is_ok(), ok, "{value}");
        }
    }
}
