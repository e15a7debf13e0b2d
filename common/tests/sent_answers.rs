//! The worker's reader of Sent's answers against answers built from Sent's
//! official SDK (`sentdm` 0.46.0): `sdk/make_fixtures.py` starts from a full
//! 202 and, one at a time, sets each optional field of the SDK's response
//! models to `null` and removes it, and adds error answers; each body is
//! validated with the SDK's models before it is written, and
//! `scripts/sdk-check.sh` fails when the checked-in file differs from what
//! the SDK makes today. Whatever is null or missing, every id present is
//! read, and every error keeps its code and its retry decision.

use common::sent::classify::{SendOutcome, classify_response};
use serde_json::Value;

#[test]
fn every_answer_the_sdk_allows_is_read() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("fixtures/sent_answers.json")).unwrap();
    assert!(cases.len() > 40, "the fixtures cover every optional field");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let status = case["status"].as_u64().unwrap() as u16;
        let body = serde_json::to_vec(&case["body"]).unwrap();
        let outcome = classify_response(status, None, false, &body);
        let expect = &case["expect"];
        match (&outcome, expect.get("ids")) {
            (
                SendOutcome::Accepted {
                    provider_ids,
                    unreadable,
                    ..
                },
                Some(ids),
            ) => {
                let ids: Vec<&str> = ids
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(provider_ids, &ids, "{name}");
                // No id at all is never a silent success.
                assert_eq!(unreadable.is_some(), ids.is_empty(), "{name}");
            }
            (SendOutcome::Retry { code, .. }, None) => {
                assert_eq!(expect["kind"], "retry", "{name}");
                assert_eq!(code, expect["code"].as_str().unwrap(), "{name}");
            }
            (SendOutcome::Permanent { code, .. }, None) => {
                assert_eq!(expect["kind"], "permanent", "{name}");
                assert_eq!(code, expect["code"].as_str().unwrap(), "{name}");
            }
            (outcome, _) => panic!("{name}: {outcome:?}, expected {expect}"),
        }
    }
}
