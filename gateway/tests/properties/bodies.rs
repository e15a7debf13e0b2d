//! JSON bodies through the real router.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::generators::{batch_items, json_value, key, near_valid, phone, text, value_for};
use crate::harness::{HTTP_CASES, Harness, answer, post_bytes, post_json, shape};
use crate::oracle::{E164, ROUTES, Route, expect, valid_send};
use crate::support::TestApp;

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
