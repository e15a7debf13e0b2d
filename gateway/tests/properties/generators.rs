//! Generators.

use chrono::{Duration, FixedOffset, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::oracle::{CHANNELS, ORDER_FIELDS, Route, SEND_FIELDS, valid_send};

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
pub(crate) fn text(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(any_char(), 0..=max)
        .prop_map(String::from_iter)
        .boxed()
}

/// A string whose length is within 2 characters of `limit`.
pub(crate) fn around(limit: usize) -> BoxedStrategy<String> {
    prop::collection::vec(any_char(), limit.saturating_sub(2)..=limit + 2)
        .prop_map(String::from_iter)
        .boxed()
}

/// Phone numbers: valid ones, and every near miss.
pub(crate) fn phone() -> BoxedStrategy<String> {
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

pub(crate) fn leaf() -> BoxedStrategy<Value> {
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
pub(crate) fn key() -> BoxedStrategy<String> {
    let fields: Vec<String> = SEND_FIELDS
        .iter()
        .chain(&ORDER_FIELDS)
        .chain(&["name", "messages"])
        .map(|s| s.to_string())
        .collect();
    prop_oneof![prop::sample::select(fields), text(12)].boxed()
}

/// Any JSON value, a few levels deep.
pub(crate) fn json_value() -> BoxedStrategy<Value> {
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
        2 => (prop::sample::select(vec!["http", "https"]), callback_host())
            .prop_map(|(scheme, host)| json!(format!("{scheme}://{host}/hook"))),
        1 => leaf(),
    ]
    .boxed()
}

/// Hosts inside and outside the network, in the spellings a client could
/// use to hide one (the `url` crate reads `2130706433` and `0x7f.1` as
/// 127.0.0.1).
fn callback_host() -> BoxedStrategy<String> {
    prop::sample::select(vec![
        "127.0.0.1",
        "127.0.0.1:9",
        "[::1]",
        "169.254.169.254",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "198.18.0.1",
        "192.0.2.1",
        "224.0.0.1",
        "255.255.255.255",
        "[::ffff:127.0.0.1]",
        "[::ffff:a9fe:a9fe]",
        "[64:ff9b::a00:1]",
        "[2002:7f00:1::1]",
        "[::127.0.0.1]",
        "[fd00::1]",
        "[fe80::1]",
        "[fec0::1]",
        "[ff02::1]",
        "[2001:db8::1]",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.1",
        "localhost",
        "LocalHost.",
        "api.localhost",
        "8.8.8.8",
        "93.184.215.14",
        "[2606:4700:4700::1111]",
        "[::ffff:8.8.8.8]",
        "[2002:808:808::1]",
        "client.example",
        "localhost.example",
    ])
    .prop_map(str::to_owned)
    .boxed()
}

/// A value for `field` of `route`: mostly near-valid, sometimes anything.
pub(crate) fn value_for(field: &str) -> BoxedStrategy<Value> {
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
pub(crate) fn near_valid(route: Route) -> BoxedStrategy<Value> {
    prop::collection::vec(mutation(route.fields()), 1..=2)
        .prop_map(move |ms| ms.iter().fold(route.valid_body(), apply))
        .boxed()
}

/// A batch of valid, near-valid and arbitrary items.
pub(crate) fn batch_items() -> BoxedStrategy<Value> {
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
pub(crate) fn header_bytes(max: usize) -> BoxedStrategy<Vec<u8>> {
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
pub(crate) fn header_text(bytes: &[u8]) -> Option<&str> {
    bytes
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(bytes).unwrap())
}
