//! Webhooks.

use chrono::Utc;
use common::signature::{WebhookSecret, sign, sign_legacy};
use proptest::prelude::*;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

use crate::generators::{around, header_bytes, json_value, leaf, text};
use crate::harness::{HTTP_CASES, Harness, answer, shape};
use crate::support::TestApp;

pub(crate) use common::test_support::SENT_WEBHOOK_SECRET as WEBHOOK_SECRET;
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
