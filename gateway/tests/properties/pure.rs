//! Pure functions.

use common::domain::PhoneNumber;
use common::signature::{
    SentVerifier, StripeVerifier, TelegramVerifier, WebhookSecret, WebhookVerifier, sign,
};
use proptest::prelude::*;

use crate::generators::{header_bytes, header_text, phone, text};
use crate::harness::{PURE_CASES, config};
use crate::oracle::E164;
use crate::webhooks::WEBHOOK_SECRET;

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
