//! The oracle: validity as the contract states it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};

use crate::harness::{Answer, shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Valid,
    Invalid,
    /// On a boundary the oracle cannot call exactly (a time window edge).
    Unsure,
}

use Verdict::{Invalid, Unsure, Valid};

pub(crate) static E164: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^\+[1-9][0-9]{1,14}$").unwrap());

pub(crate) const SEND_FIELDS: [&str; 11] = [
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
const WELCOME_FIELDS: [&str; 2] = ["phone_number", "name"];
pub(crate) const ORDER_FIELDS: [&str; 3] = ["phone_number", "order_number", "total"];
pub(crate) const CHANNELS: [&str; 5] = ["sms", "whatsapp", "rcs", "mms", "sent"];

/// A field that is there and not `null` (`null` means absent).
fn present<'a>(o: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    o.get(field).filter(|v| !v.is_null())
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Text that can be stored: Postgres text and jsonb cannot hold U+0000.
fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// An optional string of at most `max` characters (and at least `min`).
fn text_ok(v: Option<&Value>, required: bool, min: usize, max: usize) -> bool {
    match v {
        None => !required,
        Some(Value::String(s)) => (min..=max).contains(&chars(s)) && storable(s),
        Some(_) => false,
    }
}

fn phone_ok(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::String(s)) if E164.is_match(s))
}

/// An optional string-to-string map within the given limits.
fn map_ok(v: Option<&Value>, entries: usize, key: usize, value: usize) -> bool {
    match v {
        None => true,
        Some(Value::Object(map)) => {
            map.len() <= entries
                && map.iter().all(|(k, v)| {
                    chars(k) <= key
                        && storable(k)
                        && matches!(v, Value::String(s) if chars(s) <= value && storable(s))
                })
        }
        Some(_) => false,
    }
}

/// A `callback_url` host the gateway takes (the harness allows no private
/// network): not `localhost`, and not a non-public address (loopback,
/// private, link-local, metadata, ULA...; CONTRACT.md). Written from the
/// IANA special-purpose registries with the standard library's predicates,
/// not from the gateway's own table.
fn public_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name != "localhost" && !name.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => public_v4(*ip),
        url::Host::Ipv6(ip) => public_v6(*ip),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 88 && c == 99)
        || (a == 198 && (b == 18 || b == 19)))
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4-mapped, IPv4-compatible and NAT64 forms reach the IPv4 address
    // in their last 32 bits; 6to4 the one in bits 16..48.
    let last = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if (s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xffff)) || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return public_v4(last);
    }
    if s[0] == 0x2002 {
        return public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    // Global unicast is 2000::/3, less its special-purpose blocks: IETF
    // protocol assignments 2001::/23, documentation 2001:db8::/32 and 3fff::/20.
    (s[0] & 0xe000) == 0x2000
        && !(s[0] == 0x2001 && s[1] < 0x200)
        && !(s[0] == 0x2001 && s[1] == 0xdb8)
        && !(s[0] == 0x3fff && s[1] < 0x1000)
}

fn only(o: &Map<String, Value>, fields: &[&str]) -> bool {
    o.keys().all(|k| fields.contains(&k.as_str()))
}

fn all(checks: &[bool]) -> Verdict {
    if checks.iter().all(|ok| *ok) {
        Valid
    } else {
        Invalid
    }
}

/// `POST /api/messages/send` (and each batch item), per the contract.
fn send_verdict(body: &Value, now: DateTime<Utc>) -> Verdict {
    let Some(o) = body.as_object() else {
        return Invalid;
    };
    let (id, name) = (present(o, "template_id"), present(o, "template_name"));
    let text = present(o, "text");
    let channels = match present(o, "channels") {
        None => true,
        Some(Value::Array(items)) => {
            let mut seen = HashSet::new();
            items.iter().all(|item| {
                item.as_str()
                    .is_some_and(|c| CHANNELS.contains(&c) && seen.insert(c))
            })
        }
        Some(_) => false,
    };
    let on_mms = matches!(present(o, "channels"), Some(Value::Array(items)) if items.contains(&json!("mms")));
    let (media_ok, has_media) = match present(o, "media_urls") {
        None => (true, false),
        Some(Value::Array(items)) => (
            items.len() <= 10
                && items.iter().all(|item| {
                    item.as_str().is_some_and(|s| {
                        chars(s) <= 2048
                            && storable(s)
                            && url::Url::parse(s)
                                .is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
                    })
                }),
            !items.is_empty(),
        ),
        Some(_) => (false, false),
    };
    // A template or free text, not both; parameters belong to a template;
    // text on mms needs media.
    let content = match (id.is_some() || name.is_some(), text.is_some()) {
        (true, false) => true,
        (false, true) => {
            text_ok(text, true, 1, 1600)
                && present(o, "parameters")
                    .is_none_or(|p| p.as_object().is_some_and(|m| m.is_empty()))
                && (has_media || !on_mms)
        }
        _ => false,
    };
    let callback = match present(o, "callback_url") {
        None => true,
        Some(Value::String(s)) => {
            // The testing profile also takes http.
            chars(s) <= 2048
                && storable(s)
                && url::Url::parse(s).is_ok_and(|u| {
                    matches!(u.scheme(), "https" | "http")
                        && u.host().is_some_and(|host| public_host(&host))
                })
        }
        Some(_) => false,
    };
    let verdict = all(&[
        only(o, &SEND_FIELDS),
        phone_ok(present(o, "phone_number")),
        content,
        media_ok,
        text_ok(id, false, 1, 100),
        text_ok(name, false, 1, 100),
        map_ok(present(o, "parameters"), 100, 128, 1024),
        channels,
        matches!(present(o, "sandbox"), None | Some(Value::Bool(_))),
        callback,
        map_ok(present(o, "metadata"), 20, 64, 512),
    ]);
    // `scheduled_at`: RFC 3339 with an offset, 1 minute to 30 days ahead.
    let scheduled = match present(o, "scheduled_at") {
        None => Valid,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Err(_) => Invalid,
            Ok(at) => {
                let ahead = at.with_timezone(&Utc) - now;
                let near = |edge: Duration| (ahead - edge).num_seconds().abs() <= 5;
                if near(Duration::minutes(1)) || near(Duration::days(30)) {
                    Unsure
                } else if ahead >= Duration::minutes(1) && ahead <= Duration::days(30) {
                    Valid
                } else {
                    Invalid
                }
            }
        },
        Some(_) => Invalid,
    };
    match (verdict, scheduled) {
        (Invalid, _) | (_, Invalid) => Invalid,
        (Valid, Valid) => Valid,
        _ => Unsure,
    }
}

fn welcome_verdict(body: &Value) -> Verdict {
    let Some(o) = body.as_object() else {
        return Invalid;
    };
    all(&[
        only(o, &WELCOME_FIELDS),
        phone_ok(present(o, "phone_number")),
        text_ok(present(o, "name"), false, 0, 100),
    ])
}

fn order_verdict(body: &Value) -> Verdict {
    let Some(o) = body.as_object() else {
        return Invalid;
    };
    all(&[
        only(o, &ORDER_FIELDS),
        phone_ok(present(o, "phone_number")),
        text_ok(present(o, "order_number"), true, 0, 100),
        text_ok(present(o, "total"), true, 0, 100),
    ])
}

/// The batch itself: `{"messages": [1..=1000 items]}` is accepted (each
/// item then stands or falls alone).
fn batch_verdict(body: &Value) -> Verdict {
    let Some(o) = body.as_object() else {
        return Invalid;
    };
    all(&[
        only(o, &["messages"]),
        matches!(o.get("messages"), Some(Value::Array(items)) if (1..=1000).contains(&items.len())),
    ])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Send,
    Welcome,
    Order,
    Batch,
}

pub(crate) const ROUTES: [Route; 4] = [Route::Send, Route::Welcome, Route::Order, Route::Batch];

impl Route {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Route::Send => "/api/messages/send",
            Route::Welcome => "/api/messages/welcome",
            Route::Order => "/api/messages/order-confirmation",
            Route::Batch => "/api/messages/batch",
        }
    }

    fn verdict(self, body: &Value) -> Verdict {
        match self {
            Route::Send => send_verdict(body, Utc::now()),
            Route::Welcome => welcome_verdict(body),
            Route::Order => order_verdict(body),
            Route::Batch => batch_verdict(body),
        }
    }

    pub(crate) fn fields(self) -> &'static [&'static str] {
        match self {
            Route::Send => &SEND_FIELDS,
            Route::Welcome => &WELCOME_FIELDS,
            Route::Order => &ORDER_FIELDS,
            Route::Batch => &["messages"],
        }
    }

    pub(crate) fn valid_body(self) -> Value {
        match self {
            Route::Send => valid_send(),
            Route::Welcome => json!({"phone_number": "+14155550123", "name": "Ada"}),
            Route::Order => {
                json!({"phone_number": "+14155550123", "order_number": "A-17", "total": "$12.50"})
            }
            Route::Batch => json!({"messages": [valid_send(), valid_send()]}),
        }
    }
}

pub(crate) fn valid_send() -> Value {
    json!({
        "phone_number": "+14155550123", "template_id": "tmpl_123", "template_name": "welcome",
        "parameters": {"name": "Ada"}, "channels": ["sms", "whatsapp"], "sandbox": false,
        "callback_url": "https://client.example/hooks/sent-status", "metadata": {"order": "A-17"}
    })
}

/// Checks an answer of `route` against the oracle's verdict on `body`.
pub(crate) fn expect(route: Route, body: &Value, a: &Answer) -> Result<(), TestCaseError> {
    shape(a)?;
    let verdict = route.verdict(body);
    match verdict {
        Valid => prop_assert_eq!(a.status, 202, "valid input refused: {}", a.text),
        Invalid => prop_assert_eq!(a.status, 400, "invalid input: {}", a.text),
        Unsure => prop_assert!(a.status == 202 || a.status == 400, "{}", a.text),
    }
    if a.status == 400 {
        let code = a.body["code"].as_str().unwrap_or_default();
        prop_assert!(
            code == "validation_error" || code == "malformed_json",
            "{}",
            a.text
        );
        if body.is_object() && code == "validation_error" {
            prop_assert!(
                a.body["messages"]
                    .as_object()
                    .is_some_and(|m| !m.is_empty()),
                "a validation error names its fields: {}",
                a.text
            );
        } else {
            prop_assert_eq!(code, "malformed_json", "{}", a.text);
        }
    }
    if a.status == 202 {
        if route == Route::Batch {
            expect_batch_results(body, a)?;
        } else {
            prop_assert_eq!(&a.body["status"], "queued", "{}", a.text);
            let id = a.body["message_id"].as_str().unwrap_or_default();
            prop_assert!(!id.is_empty(), "{}", a.text);
            let location = a.headers.get("location").map(|v| v.as_bytes().to_vec());
            prop_assert_eq!(location, Some(format!("/api/messages/{id}").into_bytes()));
        }
    }
    Ok(())
}

/// One result per item, in order, each accepted exactly when it is valid.
fn expect_batch_results(body: &Value, a: &Answer) -> Result<(), TestCaseError> {
    let items = body["messages"].as_array().unwrap();
    let results = a.body["results"].as_array();
    prop_assert_eq!(results.map(Vec::len), Some(items.len()), "{}", a.text);
    let now = Utc::now();
    for (item, result) in items.iter().zip(results.unwrap()) {
        let accepted = result["status"] == "queued" && result["message_id"].is_string();
        let refused = result["code"] == "validation_error"
            && result["error"].is_string()
            && result["messages"]
                .as_object()
                .is_some_and(|m| !m.is_empty());
        prop_assert!(accepted ^ refused, "result {result} for {item}");
        match send_verdict(item, now) {
            Valid => prop_assert!(accepted, "valid item refused: {result} for {item}"),
            Invalid => prop_assert!(refused, "invalid item accepted: {result} for {item}"),
            Unsure => {}
        }
    }
    Ok(())
}
