//! Property-based tests of every request parser, driven through the real
//! router: one gateway per test (in process, own database and Redis prefix),
//! many generated requests per gateway.
//!
//! The properties, for every generated request:
//! - never a 5xx (a panic would be a 500 from the catch-panic layer);
//! - every answer is JSON, and a 4xx has the contract's shape (`error` and
//!   `code`, both non-empty strings);
//! - a 2xx only when the input was valid, and a 2xx whenever it was; validity
//!   is decided by an oracle written here from the contract, independently
//!   of `validation.rs`.
//!
//! `PROPTEST_CASES` sets the number of cases of every property (default a
//! few hundred, so the file runs in seconds inside `cargo nextest run`).

mod support;

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::{DateTime, Duration, FixedOffset, Utc};
use common::domain::PhoneNumber;
use common::signature::{
    SentVerifier, StripeVerifier, TelegramVerifier, WebhookSecret, WebhookVerifier, sign,
    sign_legacy,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use support::{API_KEY, OTHER_KEY, TestApp};

// --- Running properties against one gateway ---------------------------------

/// Cases per property: `PROPTEST_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> Config {
    Config {
        cases: cases(default),
        // Each shrink step is an HTTP request; a few hundred find the minimum.
        max_shrink_iters: 512,
        // No regression files in the source tree; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Default number of cases of the HTTP properties.
const HTTP_CASES: u32 = 256;
/// Default number of cases of the pure-function properties (microseconds each).
const PURE_CASES: u32 = 2048;

/// One gateway, and a runtime to drive it from proptest's synchronous runner.
struct Harness {
    app: Option<TestApp>,
    rt: tokio::runtime::Runtime,
}

impl Harness {
    fn new(overrides: &[(&str, &str)]) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = rt.block_on(TestApp::spawn(overrides));
        Harness { app: Some(app), rt }
    }

    /// Runs `test` on `cases` values of `strategy`; panics with the smallest
    /// failing input.
    fn check<S>(
        &self,
        default_cases: u32,
        strategy: S,
        test: impl AsyncFn(&TestApp, S::Value) -> Result<(), TestCaseError>,
    ) where
        S: Strategy,
    {
        let app = self.app.as_ref().unwrap();
        let mut runner = TestRunner::new(config(default_cases));
        let result = runner.run(&strategy, |value| self.rt.block_on(test(app, value)));
        if let Err(error) = result {
            panic!("{error}");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The app's pools and tasks belong to this runtime: drop them in it.
        let app = self.app.take();
        self.rt.block_on(async move { drop(app) });
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
    text: String,
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a complete body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// POSTs raw bytes with the test's API key.
async fn post_bytes(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
    answer(app.post(path).header(CONTENT_TYPE, content_type).body(body)).await
}

async fn post_json(app: &TestApp, path: &str, body: &Value) -> Answer {
    post_bytes(
        app,
        path,
        "application/json",
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

/// What holds for every answer: no 5xx, JSON, the error shape on a 4xx, and
/// a request id.
fn shape(a: &Answer) -> Result<(), TestCaseError> {
    prop_assert!(a.status < 500, "server error {}: {}", a.status, a.text);
    let is_json = a
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    prop_assert!(is_json, "not JSON: {} {:?} {}", a.status, a.headers, a.text);
    prop_assert!(!a.body.is_null(), "unparseable body: {}", a.text);
    if (400..500).contains(&a.status) {
        prop_assert!(
            a.body["error"].as_str().is_some_and(|s| !s.is_empty()),
            "no error sentence: {}",
            a.text
        );
        prop_assert!(
            a.body["code"].as_str().is_some_and(|s| !s.is_empty()),
            "no error code: {}",
            a.text
        );
    }
    prop_assert!(a.headers.contains_key("x-request-id"), "{:?}", a.headers);
    Ok(())
}

// --- The oracle: validity as the contract states it --------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Valid,
    Invalid,
    /// On a boundary the oracle cannot call exactly (a time window edge).
    Unsure,
}

use Verdict::{Invalid, Unsure, Valid};

static E164: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^\+[1-9][0-9]{1,14}$").unwrap());

const SEND_FIELDS: [&str; 11] = [
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
const ORDER_FIELDS: [&str; 3] = ["phone_number", "order_number", "total"];
const CHANNELS: [&str; 5] = ["sms", "whatsapp", "rcs", "mms", "sent"];

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
                && url::Url::parse(s)
                    .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
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
enum Route {
    Send,
    Welcome,
    Order,
    Batch,
}

const ROUTES: [Route; 4] = [Route::Send, Route::Welcome, Route::Order, Route::Batch];

impl Route {
    fn path(self) -> &'static str {
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

    fn fields(self) -> &'static [&'static str] {
        match self {
            Route::Send => &SEND_FIELDS,
            Route::Welcome => &WELCOME_FIELDS,
            Route::Order => &ORDER_FIELDS,
            Route::Batch => &["messages"],
        }
    }

    fn valid_body(self) -> Value {
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

fn valid_send() -> Value {
    json!({
        "phone_number": "+14155550123", "template_id": "tmpl_123", "template_name": "welcome",
        "parameters": {"name": "Ada"}, "channels": ["sms", "whatsapp"], "sandbox": false,
        "callback_url": "https://client.example/hooks/sent-status", "metadata": {"order": "A-17"}
    })
}

/// Checks an answer of `route` against the oracle's verdict on `body`.
fn expect(route: Route, body: &Value, a: &Answer) -> Result<(), TestCaseError> {
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

// --- Generators ---------------------------------------------------------------

/// Characters that stress parsers: NUL, BOM, bidi override, combining
/// marks, emoji, other scripts' digits, quotes and escapes.
fn nasty_char() -> impl Strategy<Value = char> + Clone {
    prop::sample::select(vec![
        '\0', '\u{FEFF}', '\u{202E}', '\u{0301}', '😀', '\u{FFFF}', '"', '\\', '\n', '\r', '\t',
        ' ', '٣', '+', '/', '%', '\u{7F}', '\u{85}', '\u{2028}',
    ])
}

fn any_char() -> impl Strategy<Value = char> + Clone {
    prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => any::<char>(),
        1 => nasty_char(),
    ]
}

/// A string of up to `max` characters of every kind.
fn text(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(any_char(), 0..=max)
        .prop_map(String::from_iter)
        .boxed()
}

/// A string whose length is within 2 characters of `limit`.
fn around(limit: usize) -> BoxedStrategy<String> {
    prop::collection::vec(any_char(), limit.saturating_sub(2)..=limit + 2)
        .prop_map(String::from_iter)
        .boxed()
}

/// Phone numbers: valid ones, and every near miss.
fn phone() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "\\+[1-9][0-9]{1,14}",
        1 => "\\+[0-9]{0,17}",
        1 => "[+0-9 ()-]{0,20}",
        1 => "[ \t]?\\+[1-9][0-9]{1,14}[ \\n\t]?",
        1 => "\\+[1-9][0-9٠-٩０-９]{1,14}",
        1 => "[＋﹢][1-9][0-9]{5,10}",
        1 => text(20),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
    ]
    .boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text(24).prop_map(Value::String),
        phone().prop_map(Value::String),
    ]
    .boxed()
}

/// Object keys: the routes' own field names half the time.
fn key() -> BoxedStrategy<String> {
    let fields: Vec<String> = SEND_FIELDS
        .iter()
        .chain(&ORDER_FIELDS)
        .chain(&["name", "messages"])
        .map(|s| s.to_string())
        .collect();
    prop_oneof![prop::sample::select(fields), text(12)].boxed()
}

/// Any JSON value, a few levels deep.
fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

/// A string-to-string map near the given limits, with some values of the
/// wrong type.
fn string_map(entries: usize, key_len: usize, value_len: usize) -> BoxedStrategy<Value> {
    let key = prop_oneof![4 => text(8), 1 => around(key_len)];
    let value = prop_oneof![
        6 => text(8).prop_map(Value::String),
        1 => around(value_len).prop_map(Value::String),
        1 => leaf(),
    ];
    let size = prop_oneof![0..4usize, entries - 2..=entries + 2];
    size.prop_flat_map(move |n| prop::collection::vec((key.clone(), value.clone()), n))
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
        .boxed()
}

fn channels() -> BoxedStrategy<Value> {
    let channel = prop_oneof![
        4 => prop::sample::select(CHANNELS.to_vec()).prop_map(|c| json!(c)),
        1 => prop::sample::select(vec!["SMS", "email", "", " sms", "whatsapp\0"]).prop_map(|c| json!(c)),
        1 => leaf(),
    ];
    prop_oneof![
        4 => prop::collection::vec(channel, 0..7).prop_map(Value::Array),
        1 => leaf(),
    ]
    .boxed()
}

fn scheduled_at() -> BoxedStrategy<Value> {
    let offsets = prop::sample::select(vec![0, 3600, 5 * 3600 + 1800, -8 * 3600]);
    prop_oneof![
        3 => (-86_400i64..40 * 86_400, offsets).prop_map(|(secs, zone)| {
            let zone = FixedOffset::east_opt(zone).unwrap();
            json!((Utc::now() + Duration::seconds(secs)).with_timezone(&zone).to_rfc3339())
        }),
        1 => prop::sample::select(vec![
            "2026-12-01T09:00:00", "2026-13-01T09:00:00Z", "tomorrow", "", "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z", "2026-12-01T09:00:00+24:00",
        ]).prop_map(|s| json!(s)),
        1 => leaf(),
    ]
    .boxed()
}

fn media_urls() -> BoxedStrategy<Value> {
    let url = prop_oneof![
        4 => text(10).prop_map(|t| json!(format!("https://cdn.example/{t}.png"))),
        1 => prop::sample::select(vec!["http://cdn.example/a.png", "https://", "cdn.example/a.png", ""])
            .prop_map(|s| json!(s)),
        1 => leaf(),
    ];
    prop_oneof![
        4 => prop::collection::vec(url, 0..12).prop_map(Value::Array),
        1 => leaf(),
    ]
    .boxed()
}

fn callback_url() -> BoxedStrategy<Value> {
    let long = format!("https://client.example/{}", "a".repeat(2030));
    prop_oneof![
        3 => prop::sample::select(vec![
            "https://client.example/hook".to_owned(), "http://client.example/hook".to_owned(),
            "ftp://client.example/x".to_owned(), "https://".to_owned(), "not a url".to_owned(),
            "https://client.example/\0".to_owned(), " https://client.example/hook".to_owned(),
            "https://[::1]:8443/x".to_owned(), "javascript:alert(1)".to_owned(),
            "file:///etc/passwd".to_owned(), "https://ex ample.com".to_owned(),
            "https://client.example/\r\nSet-Cookie: a=b".to_owned(), long,
        ]).prop_map(Value::String),
        1 => text(30).prop_map(|t| json!(format!("https://client.example/{t}"))),
        1 => leaf(),
    ]
    .boxed()
}

/// A value for `field` of `route`: mostly near-valid, sometimes anything.
fn value_for(field: &str) -> BoxedStrategy<Value> {
    let specific = match field {
        "phone_number" => phone().prop_map(Value::String).boxed(),
        "template_id" | "template_name" | "name" | "order_number" | "total" => {
            prop_oneof![text(10), around(100)]
                .prop_map(Value::String)
                .boxed()
        }
        "parameters" => string_map(100, 128, 1024),
        "metadata" => string_map(20, 64, 512),
        "channels" => channels(),
        "scheduled_at" => scheduled_at(),
        "callback_url" => callback_url(),
        "text" => prop_oneof![text(20), around(1600)]
            .prop_map(Value::String)
            .boxed(),
        "media_urls" => media_urls(),
        "sandbox" => prop_oneof![any::<bool>().prop_map(Value::Bool), leaf()].boxed(),
        "messages" => prop::collection::vec(prop_oneof![Just(valid_send()), json_value()], 0..4)
            .prop_map(Value::Array)
            .boxed(),
        _ => json_value(),
    };
    prop_oneof![4 => specific, 1 => number(), 1 => json_value()].boxed()
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(String, Value),
    Remove(String),
    Add(String, Value),
}

fn mutation(fields: &'static [&'static str]) -> BoxedStrategy<Mutation> {
    let field = prop::sample::select(fields.to_vec());
    prop_oneof![
        6 => field.clone().prop_flat_map(|f| value_for(f).prop_map(move |v| Mutation::Set(f.to_owned(), v))),
        1 => field.prop_map(|f| Mutation::Remove(f.to_owned())),
        1 => (text(12), json_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
    ]
    .boxed()
}

fn apply(mut body: Value, mutation: &Mutation) -> Value {
    let o = body.as_object_mut().unwrap();
    match mutation {
        Mutation::Set(k, v) | Mutation::Add(k, v) => {
            o.insert(k.clone(), v.clone());
        }
        Mutation::Remove(k) => {
            o.remove(k);
        }
    }
    body
}

/// A valid body of `route` with one or two fields changed.
fn near_valid(route: Route) -> BoxedStrategy<Value> {
    prop::collection::vec(mutation(route.fields()), 1..=2)
        .prop_map(move |ms| ms.iter().fold(route.valid_body(), apply))
        .boxed()
}

/// A batch of valid, near-valid and arbitrary items.
fn batch_items() -> BoxedStrategy<Value> {
    let item = prop_oneof![
        2 => Just(valid_send()),
        4 => near_valid(Route::Send),
        1 => json_value(),
    ];
    prop::collection::vec(item, 1..=12)
        .prop_map(|items| json!({ "messages": items }))
        .boxed()
}

/// Bytes a header value may hold as the client sends it: no controls but
/// tab, so no CR, LF or NUL (the client refuses those: see bad_input.rs).
/// Trimmed, since HTTP drops leading and trailing whitespace.
fn header_bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
    let byte = prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff];
    prop::collection::vec(byte, 0..=max)
        .prop_map(|mut v| {
            while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
                v.pop();
            }
            let start = v.iter().position(|b| *b != b' ' && *b != b'\t');
            v.drain(..start.unwrap_or(v.len()));
            v
        })
        .boxed()
}

/// A header value as the gateway's `HeaderValue::to_str` reads it.
fn header_text(bytes: &[u8]) -> Option<&str> {
    bytes
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(bytes).unwrap())
}

// --- JSON bodies through the real router --------------------------------------

#[test]
fn arbitrary_json_is_never_a_server_error() {
    let h = Harness::new(&[]);
    let body = prop_oneof![
        3 => prop::collection::btree_map(key(), value_for("any"), 0..8)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => json_value(),
    ];
    h.check(
        HTTP_CASES,
        (prop::sample::select(ROUTES.to_vec()), body),
        async |app: &TestApp, (route, body): (Route, Value)| {
            let a = post_json(app, route.path(), &body).await;
            expect(route, &body, &a)
        },
    );
}

#[test]
fn near_valid_bodies_are_accepted_exactly_when_valid() {
    let h = Harness::new(&[]);
    let case = prop::sample::select(ROUTES.to_vec())
        .prop_flat_map(|route| (Just(route), near_valid(route)));
    h.check(
        HTTP_CASES,
        case,
        async |app: &TestApp, (route, body): (Route, Value)| {
            let a = post_json(app, route.path(), &body).await;
            expect(route, &body, &a)
        },
    );
}

#[test]
fn batch_items_stand_or_fall_alone() {
    let h = Harness::new(&[]);
    h.check(
        HTTP_CASES / 2,
        batch_items(),
        async |app: &TestApp, body: Value| {
            // With an Idempotency-Key, so the answer (errors included) is stored.
            let request = app
                .post(Route::Batch.path())
                .header("idempotency-key", ulid::Ulid::generate().to_string())
                .json(&body);
            let a = answer(request).await;
            expect(Route::Batch, &body, &a)
        },
    );
}

#[test]
fn phone_numbers_are_accepted_exactly_when_e164() {
    let h = Harness::new(&[]);
    let case = (
        prop::sample::select(vec![Route::Send, Route::Welcome]),
        phone(),
    );
    h.check(
        HTTP_CASES,
        case,
        async |app: &TestApp, (route, phone): (Route, String)| {
            let mut body = route.valid_body();
            body["phone_number"] = json!(phone);
            let a = post_json(app, route.path(), &body).await;
            expect(route, &body, &a)?;
            prop_assert_eq!(a.status == 202, E164.is_match(&phone), "{:?}", phone);
            Ok(())
        },
    );
}

#[test]
fn huge_parameter_maps_are_refused_past_100_entries() {
    let h = Harness::new(&[]);
    let case = (0usize..400, text(6), prop::bool::ANY);
    h.check(
        HTTP_CASES / 2,
        case,
        async |app: &TestApp, (n, value, metadata): (usize, String, bool)| {
            let map: Map<String, Value> = (0..n).map(|i| (format!("p{i}"), json!(value))).collect();
            let mut body = valid_send();
            body[if metadata { "metadata" } else { "parameters" }] = Value::Object(map);
            let a = post_json(app, Route::Send.path(), &body).await;
            expect(Route::Send, &body, &a)
        },
    );
}

#[test]
fn deep_nesting_is_a_client_error() {
    let h = Harness::new(&[]);
    let case = (
        prop::sample::select(ROUTES.to_vec()),
        1usize..2000,
        prop::sample::select(vec!["[", "{\"a\":", "[{\"parameters\":"]),
        prop::sample::select(vec!["top", "parameters", "metadata", "channels"]),
    );
    h.check(
        HTTP_CASES / 2,
        case,
        async |app: &TestApp,
               (route, depth, open, place): (Route, usize, &'static str, &'static str)| {
            let close = match open {
                "[" => "]",
                "{\"a\":" => "}",
                _ => "}]",
            };
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let body = if place == "top" {
                nested
            } else {
                // Last, so it wins over a field of the same name.
                let mut valid = serde_json::to_string(&route.valid_body()).unwrap();
                valid.insert_str(valid.len() - 1, &format!(", \"{place}\": {nested}"));
                valid
            };
            let a = post_bytes(app, route.path(), "application/json", body.into_bytes()).await;
            shape(&a)?;
            // A batch item may be nested (it is then refused on its own).
            if route == Route::Batch && a.status == 202 {
                prop_assert!(depth < 128, "{}", a.text);
            } else {
                prop_assert_eq!(a.status, 400, "{}", a.text);
            }
            if depth > 130 {
                prop_assert_eq!(&a.body["code"], "malformed_json", "{}", a.text);
            }
            Ok(())
        },
    );
}

#[test]
fn raw_bytes_and_invalid_utf8_are_client_errors() {
    let h = Harness::new(&[]);
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        // A valid body with a byte sequence spliced in that is not UTF-8.
        (
            prop::sample::select(vec![
                vec![0xff],
                vec![0xc0, 0xaf],
                vec![0xed, 0xa0, 0x80],
                vec![0xf8, 0x88, 0x80, 0x80, 0x80],
                vec![0xe2, 0x82],
                vec![0x00],
            ]),
            0usize..200,
        )
            .prop_map(|(bad, at)| {
                let mut body = serde_json::to_vec(&valid_send()).unwrap();
                let at = at.min(body.len());
                body.splice(at..at, bad);
                body
            }),
    ];
    h.check(
        HTTP_CASES,
        (prop::sample::select(ROUTES.to_vec()), bytes),
        async |app: &TestApp, (route, bytes): (Route, Vec<u8>)| {
            let parsed = serde_json::from_slice::<Value>(&bytes);
            let a = post_bytes(app, route.path(), "application/json", bytes).await;
            match parsed {
                Ok(body) => expect(route, &body, &a),
                Err(_) => {
                    shape(&a)?;
                    prop_assert_eq!(a.status, 400, "{}", a.text);
                    prop_assert_eq!(&a.body["code"], "malformed_json", "{}", a.text);
                    Ok(())
                }
            }
        },
    );
}

// --- Headers -----------------------------------------------------------------

#[derive(Debug, Clone)]
struct Headers {
    authorization: Option<Vec<u8>>,
    api_key: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    idempotency_key: Option<Vec<u8>>,
    request_id: Option<Vec<u8>>,
}

fn auth_header() -> BoxedStrategy<Option<Vec<u8>>> {
    let fixed = prop::sample::select(vec![
        format!("Bearer {API_KEY}"),
        format!("bearer {OTHER_KEY}"),
        format!("Bearer   {API_KEY}  "),
        format!("BEARER {API_KEY}"),
        format!("Bearer{API_KEY}"),
        format!("Basic {API_KEY}"),
        format!("Bearer {API_KEY}x"),
        format!("Bearer {}", &API_KEY[1..]),
        "Bearer ".to_owned(),
        String::new(),
    ]);
    prop_oneof![
        2 => Just(None),
        3 => fixed.prop_map(|s| Some(s.into_bytes())),
        1 => header_bytes(80).prop_map(|mut v| { let mut b = b"Bearer ".to_vec(); b.append(&mut v); Some(b) }),
        1 => header_bytes(80).prop_map(Some),
    ]
    .boxed()
}

fn api_key_header() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(API_KEY.as_bytes().to_vec())),
        1 => Just(Some(format!(" {OTHER_KEY}\t").into_bytes())),
        1 => header_bytes(80).prop_map(Some),
    ]
    .boxed()
}

/// Content types with a known answer, and arbitrary ones.
const JSON_TYPES: [&str; 5] = [
    "application/json",
    "application/json; charset=utf-8",
    "application/JSON",
    "application/vnd.api+json",
    "application/problem+json; charset=UTF-8",
];
const OTHER_TYPES: [&str; 7] = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/jsonx",
    "json",
    "",
    "multipart/form-data; boundary=x",
    "text/json",
];

fn content_type_header() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        4 => prop::sample::select(JSON_TYPES.to_vec()).prop_map(|s| Some(s.as_bytes().to_vec())),
        2 => prop::sample::select(OTHER_TYPES.to_vec()).prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => Just(None),
        1 => header_bytes(60).prop_map(|mut v| { let mut b = b"application/".to_vec(); b.append(&mut v); Some(b) }),
        1 => header_bytes(60).prop_map(Some),
    ]
    .boxed()
}

fn idempotency_header() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        2 => Just(None),
        3 => "[!-~]{1,40}".prop_map(|s| Some(s.into_bytes())),
        1 => "[!-~]{250,260}".prop_map(|s| Some(s.into_bytes())),
        1 => header_bytes(300).prop_map(Some),
    ]
    .boxed()
}

fn headers() -> BoxedStrategy<Headers> {
    (
        auth_header(),
        api_key_header(),
        content_type_header(),
        idempotency_header(),
        prop::option::of(header_bytes(200)),
    )
        .prop_map(
            |(authorization, api_key, content_type, idempotency_key, request_id)| Headers {
                authorization,
                api_key,
                content_type,
                idempotency_key,
                request_id,
            },
        )
        .boxed()
}

/// The key the caller presents, as the contract reads the two headers.
/// HTTP drops a value's leading and trailing whitespace on the way, so the
/// gateway sees `Bearer` for `Bearer `.
fn presented_key(h: &Headers) -> Option<&str> {
    fn received(v: &Option<Vec<u8>>) -> Option<&str> {
        Some(header_text(v.as_deref()?)?.trim_matches([' ', '\t']))
    }
    let bearer = received(&h.authorization).and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    bearer
        .or_else(|| received(&h.api_key))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[test]
fn arbitrary_headers_are_never_a_server_error() {
    let h = Harness::new(&[]);
    h.check(
        HTTP_CASES,
        headers(),
        async |app: &TestApp, headers: Headers| {
            let mut request = app
                .http
                .post(app.url("/api/messages/send"))
                .body(serde_json::to_vec(&valid_send()).unwrap());
            let pairs = [
                ("authorization", &headers.authorization),
                ("x-api-key", &headers.api_key),
                ("content-type", &headers.content_type),
                ("idempotency-key", &headers.idempotency_key),
                ("x-request-id", &headers.request_id),
            ];
            for (name, value) in pairs {
                if let Some(value) = value {
                    let value = HeaderValue::from_bytes(value).expect("a sendable header value");
                    request = request.header(HeaderName::from_static(name), value);
                }
            }
            let a = answer(request).await;
            shape(&a)?;
            if let Some(id) = &headers.request_id {
                prop_assert_eq!(
                    a.headers.get("x-request-id").map(|v| v.as_bytes()),
                    Some(&id[..]),
                    "the caller's request id comes back as sent"
                );
            }
            let authorized =
                matches!(presented_key(&headers), Some(k) if k == API_KEY || k == OTHER_KEY);
            let content_type = headers.content_type.as_deref().unwrap_or_default();
            let json_type = JSON_TYPES.iter().any(|t| t.as_bytes() == content_type);
            let other_type = headers.content_type.is_none()
                || OTHER_TYPES.iter().any(|t| t.as_bytes() == content_type);
            let idempotency_ok = headers.idempotency_key.as_ref().is_none_or(|k| {
                !k.is_empty() && k.len() <= 255 && k.iter().all(u8::is_ascii_graphic)
            });
            if !authorized {
                prop_assert_eq!(a.status, 401, "{}", a.text);
                prop_assert_eq!(&a.body["code"], "unauthorized");
            } else if other_type {
                prop_assert_eq!(a.status, 415, "{}", a.text);
            } else if !json_type {
                prop_assert!(
                    a.status == 415 || a.status == 202 || a.status == 400,
                    "{}",
                    a.text
                );
            } else if !idempotency_ok {
                prop_assert_eq!(a.status, 400, "{}", a.text);
                prop_assert!(
                    a.body["messages"]["Idempotency-Key"].is_array(),
                    "{}",
                    a.text
                );
            } else {
                // The body never changes, so a repeated key is a replay.
                prop_assert_eq!(a.status, 202, "{}", a.text);
            }
            Ok(())
        },
    );
}

#[test]
fn arbitrary_paths_and_queries_are_never_a_server_error() {
    let h = Harness::new(&[]);
    let segment = prop_oneof![
        "[0-9A-HJKMNP-TV-Z]{26}",
        text(40).prop_map(|s| percent_encode(s.as_bytes())),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| percent_encode(&b)),
    ];
    let query_value = prop_oneof![
        text(30).prop_map(|s| percent_encode(s.as_bytes())),
        prop::collection::vec(any::<u8>(), 0..30).prop_map(|b| percent_encode(&b)),
        "[0-9-]{1,25}",
        prop::sample::select(vec![
            "queued".to_owned(),
            "delivered".to_owned(),
            "2026-01-01T00:00:00Z".to_owned()
        ]),
    ];
    let query = prop::collection::vec(
        (
            prop::sample::select(vec![
                "status", "since", "limit", "cursor", "other", "limit[]",
            ]),
            query_value,
        ),
        0..5,
    );
    h.check(
        HTTP_CASES,
        (segment, query),
        async |app: &TestApp, (segment, query): (String, Vec<(&'static str, String)>)| {
            let one = answer(app.get(&format!("/api/messages/{segment}"))).await;
            shape(&one)?;
            prop_assert!(
                one.status == 404 || one.status == 400,
                "{} {}",
                one.status,
                one.text
            );
            let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let list = answer(app.get(&format!("/api/messages?{}", query.join("&")))).await;
            shape(&list)?;
            prop_assert!(
                list.status == 200 || list.status == 400,
                "{} {}",
                list.status,
                list.text
            );
            Ok(())
        },
    );
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

// --- Webhooks ------------------------------------------------------------------

const WEBHOOK_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const LEGACY_SECRET: &str = "legacy-webhook-secret";
const ENDPOINT_ID: &str = "3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b";

/// How a webhook request is signed.
#[derive(Debug, Clone)]
enum Signing {
    Good,
    /// Bogus `v1,` entries around the good one.
    GoodAmongOthers(Vec<String>),
    Legacy,
    WrongSecret,
    /// One character of the signature changed.
    Corrupted(usize),
    /// One bit of the body flipped after signing.
    BodyTampered(usize, u8),
    TimestampChanged,
    IdChanged,
    /// Arbitrary values in each signature header.
    Garbage {
        id: Option<Vec<u8>>,
        timestamp: Option<Vec<u8>>,
        signature: Option<Vec<u8>>,
    },
}

#[derive(Debug, Clone)]
struct WebhookCase {
    body: Vec<u8>,
    signing: Signing,
    /// Seconds between the signature's timestamp and now.
    skew: i64,
    event_id: Option<Vec<u8>>,
}

/// Sent's event bodies with fields changed, arbitrary JSON, and raw bytes.
fn webhook_body() -> BoxedStrategy<Vec<u8>> {
    let event = (
        prop_oneof![
            prop::sample::select(vec!["message.sent", "message.delivered", "message.failed", "message.read"]).prop_map(|s| json!(s)),
            text(20).prop_map(Value::String),
            leaf(),
        ],
        prop_oneof![text(40).prop_map(Value::String), around(300).prop_map(Value::String), leaf()],
        prop_oneof![text(30).prop_map(Value::String), leaf()],
        prop::sample::select(vec!["payload", "value", "data", "other"]),
    )
        .prop_map(|(event, message_id, updated_at, container)| {
            serde_json::to_vec(&json!({
                "field": "message", "event": event, "timestamp": "2026-01-15T10:35:00Z",
                container: {"message_id": message_id, "message_status": "DELIVERED", "channel": "sms",
                            "updated_at": updated_at}
            }))
            .unwrap()
        });
    prop_oneof![
        3 => event,
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
    .boxed()
}

fn signing() -> BoxedStrategy<Signing> {
    let garbage = (
        prop::option::of(header_bytes(60)),
        prop::option::of(prop_oneof![
            "[0-9]{1,20}".prop_map(String::into_bytes),
            header_bytes(30)
        ]),
        prop::option::of(prop_oneof![
            "(v1,[A-Za-z0-9+/=]{0,50} ?){0,3}".prop_map(String::into_bytes),
            "[0-9a-fA-F]{60,68}".prop_map(String::into_bytes),
            header_bytes(120)
        ]),
    )
        .prop_map(|(id, timestamp, signature)| Signing::Garbage {
            id,
            timestamp,
            signature,
        });
    prop_oneof![
        4 => Just(Signing::Good),
        1 => prop::collection::vec("v[0-9],[A-Za-z0-9+/]{0,44}={0,2}", 1..4).prop_map(Signing::GoodAmongOthers),
        1 => Just(Signing::Legacy),
        1 => Just(Signing::WrongSecret),
        1 => (3usize..47).prop_map(Signing::Corrupted),
        1 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Signing::BodyTampered(at, bit)),
        1 => Just(Signing::TimestampChanged),
        1 => Just(Signing::IdChanged),
        2 => garbage,
    ]
    .boxed()
}

fn webhook_case() -> BoxedStrategy<WebhookCase> {
    let skew =
        prop_oneof![4 => -60i64..60, 1 => -2000i64..2000, 1 => any::<i64>().prop_map(|s| s / 4)];
    let event_id = prop_oneof![
        2 => Just(None),
        2 => "evt_[a-z0-9]{1,12}".prop_map(|s| Some(s.into_bytes())),
        1 => header_bytes(300).prop_map(Some),
    ];
    (webhook_body(), signing(), skew, event_id)
        .prop_map(|(body, signing, skew, event_id)| WebhookCase {
            body,
            signing,
            skew,
            event_id,
        })
        .boxed()
}

/// Header names and values of a request.
type RawHeaders = Vec<(&'static str, Vec<u8>)>;

/// The request's headers and body, and whether its signature is genuine
/// (`None` when it is genuine but its timestamp is on the tolerance edge).
fn webhook_request(case: &WebhookCase, now: i64) -> (RawHeaders, Vec<u8>, Option<bool>) {
    let secret = WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
    let timestamp = now.saturating_sub(case.skew).to_string();
    let mut body = case.body.clone();
    let mut id = ENDPOINT_ID.to_owned();
    let mut signed_at = timestamp.clone();
    let mut signature = sign(&secret, &id, &timestamp, &body);
    // Within 290 s it verifies, past 310 s it does not; in between, either.
    let fresh = match case.skew.unsigned_abs() {
        0..=290 => Some(true),
        311.. => Some(false),
        _ => None,
    };
    let mut genuine = fresh;
    let mut headers = Vec::new();
    match &case.signing {
        Signing::Good => {}
        Signing::GoodAmongOthers(others) => {
            signature = format!("{} {signature} {}", others.join(" "), others.join(" "));
        }
        Signing::Legacy => genuine = Some(true),
        Signing::WrongSecret => {
            let other = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
            signature = sign(&other, &id, &timestamp, &body);
            genuine = Some(false);
        }
        Signing::Corrupted(at) => {
            let mut bytes = signature.into_bytes();
            bytes[*at] = if bytes[*at] == b'A' { b'B' } else { b'A' };
            signature = String::from_utf8(bytes).unwrap();
            genuine = Some(false);
        }
        Signing::BodyTampered(at, bit) => {
            if body.is_empty() {
                body.push(b' ');
            } else {
                let at = at % body.len();
                body[at] ^= 1 << bit;
            }
            genuine = Some(false);
        }
        Signing::TimestampChanged => {
            signed_at = (now.saturating_sub(case.skew) ^ 1).to_string();
            genuine = Some(false);
        }
        Signing::IdChanged => {
            id.push('x');
            genuine = Some(false);
        }
        Signing::Garbage {
            id,
            timestamp,
            signature,
        } => {
            for (name, value) in [
                ("x-webhook-id", id),
                ("x-webhook-timestamp", timestamp),
                ("x-webhook-signature", signature),
            ] {
                if let Some(value) = value {
                    headers.push((name, value.clone()));
                }
            }
            genuine = Some(false);
        }
    }
    match &case.signing {
        Signing::Garbage { .. } => {}
        Signing::Legacy => headers.push((
            "x-webhook-signature",
            sign_legacy(LEGACY_SECRET, &body).into_bytes(),
        )),
        _ => {
            headers.push(("x-webhook-id", id.into_bytes()));
            headers.push(("x-webhook-timestamp", signed_at.into_bytes()));
            headers.push(("x-webhook-signature", signature.into_bytes()));
        }
    }
    if let Some(event_id) = &case.event_id {
        headers.push(("x-webhook-event-id", event_id.clone()));
    }
    (headers, body, genuine)
}

#[test]
fn webhooks_verify_before_anything_and_never_fail_on_input() {
    let h = Harness::new(&[(
        "SENT_DM_WEBHOOK_SECRET",
        &format!("{WEBHOOK_SECRET},{LEGACY_SECRET}"),
    )]);
    h.check(
        HTTP_CASES,
        webhook_case(),
        async |app: &TestApp, case: WebhookCase| {
            let (headers, body, genuine) = webhook_request(&case, Utc::now().timestamp());
            let mut request = app.http.post(app.url("/webhooks/sent")).body(body.clone());
            for (name, value) in headers {
                request = request.header(name, HeaderValue::from_bytes(&value).unwrap());
            }
            let a = answer(request).await;
            shape(&a)?;
            let is_object = matches!(serde_json::from_slice::<Value>(&body), Ok(Value::Object(_)));
            match genuine {
                Some(false) => {
                    prop_assert_eq!(a.status, 401, "{}", a.text);
                    prop_assert_eq!(&a.body["code"], "invalid_signature");
                }
                Some(true) if is_object => {
                    prop_assert_eq!(a.status, 200, "{}", a.text);
                    prop_assert_eq!(&a.body, &json!({"received": true}));
                }
                Some(true) => {
                    prop_assert_eq!(a.status, 400, "{}", a.text);
                    prop_assert_eq!(&a.body["code"], "malformed_json");
                }
                None => prop_assert!(matches!(a.status, 200 | 400 | 401), "{}", a.text),
            }
            Ok(())
        },
    );
}

// --- Pure functions --------------------------------------------------------------

proptest! {
    #![proptest_config(config(PURE_CASES))]

    /// `PhoneNumber::parse` agrees with the original integration's regex
    /// (with ASCII digits) on every input.
    #[test]
    fn phone_number_parse_agrees_with_the_regex(s in prop_oneof![phone(), text(20), any::<String>()]) {
        prop_assert_eq!(PhoneNumber::parse(&s).is_ok(), E164.is_match(&s), "{:?}", s);
    }

    /// Arbitrary header values never make a verifier panic, and never verify.
    #[test]
    fn verifiers_never_panic_on_arbitrary_headers(
        id in prop::option::of(header_bytes(60)),
        timestamp in prop::option::of(prop_oneof!["[0-9]{0,22}".prop_map(String::into_bytes), header_bytes(30)]),
        signature in prop::option::of(prop_oneof![
            "(v1,[A-Za-z0-9+/=]{0,50} ?){0,3}".prop_map(String::into_bytes),
            "t=[0-9]{0,12},v1=[0-9a-f]{0,70}".prop_map(String::into_bytes),
            header_bytes(200),
        ]),
        body in prop::collection::vec(any::<u8>(), 0..100),
        now in any::<i64>(),
        secret in prop_oneof![Just(WEBHOOK_SECRET.to_owned()), text(40), "whsec_[A-Za-z0-9+/=]{0,40}"],
    ) {
        let mut map = http::HeaderMap::new();
        let names = ["x-webhook-id", "x-webhook-timestamp", "x-webhook-signature"];
        for (name, value) in names.into_iter().zip([&id, &timestamp, &signature]) {
            if let Some(value) = value {
                map.insert(name, http::HeaderValue::from_bytes(value).unwrap());
            }
        }
        for name in ["stripe-signature", "x-telegram-bot-api-secret-token"] {
            if let Some(value) = &signature {
                map.insert(name, http::HeaderValue::from_bytes(value).unwrap());
            }
        }
        let sent = SentVerifier {
            secrets: WebhookSecret::parse(&secret).into_iter().collect(),
            legacy_secrets: vec![secret.clone()],
            allow_legacy: true,
            tolerance: std::time::Duration::from_secs(300),
        };
        let stripe = StripeVerifier { secrets: vec![secret.clone()], tolerance: std::time::Duration::from_secs(300) };
        let telegram = TelegramVerifier { secrets: vec![secret.clone()] };
        prop_assert!(sent.verify(&map, &body, now).is_err());
        prop_assert!(stripe.verify(&map, &body, now).is_err());
        // The Telegram token is the secret itself: only it verifies.
        let token = signature.as_deref().and_then(header_text).map(|t| t.trim_matches([' ', '\t']));
        let token_is_secret = token.is_some_and(|t| !t.is_empty() && t == secret);
        prop_assert_eq!(telegram.verify(&map, &body, now).is_ok(), token_is_secret);
    }

    /// Whatever the key, id, body and time, a signature verifies, and any
    /// one-bit change of the body makes it fail.
    #[test]
    fn standard_signatures_round_trip(
        key in prop::collection::vec(any::<u8>(), 1..64),
        id in "[!-~]{1,60}",
        timestamp in 0i64..4_000_000_000,
        body in prop::collection::vec(any::<u8>(), 0..200),
        flip in any::<(usize, u8)>(),
    ) {
        let secret = WebhookSecret::from_bytes(key).unwrap();
        let ts = timestamp.to_string();
        let signature = sign(&secret, &id, &ts, &body);
        let tolerance = std::time::Duration::from_secs(300);
        let check = |body: &[u8]| common::signature::verify(std::slice::from_ref(&secret), &id, &ts, &signature, body, tolerance, timestamp);
        prop_assert_eq!(check(&body), Ok(()));
        let mut tampered = body.clone();
        if tampered.is_empty() {
            tampered.push(0);
        } else {
            let at = flip.0 % tampered.len();
            tampered[at] ^= 1 << (flip.1 % 8);
        }
        prop_assert_eq!(check(&tampered), Err(common::signature::SignatureError::Mismatch));
    }

    /// Parsing a webhook secret never panics, and never yields an empty key.
    #[test]
    fn secret_parsing_never_panics(text in prop_oneof![any::<String>(), "whsec_[A-Za-z0-9+/=]{0,60}"]) {
        if let Ok(secret) = WebhookSecret::parse(&text) {
            prop_assert!(secret.to_whsec_string().len() > "whsec_".len());
        }
    }
}
