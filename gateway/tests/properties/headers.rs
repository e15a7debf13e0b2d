//! Headers.

use proptest::prelude::*;
use reqwest::header::{HeaderName, HeaderValue};

use crate::generators::{header_bytes, header_text, text};
use crate::harness::{HTTP_CASES, Harness, answer, shape};
use crate::oracle::valid_send;
use crate::support::{API_KEY, OTHER_KEY, TestApp};

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
