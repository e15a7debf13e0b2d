//! Webhook signatures: verifying what providers send us, and signing what we
//! send (status callbacks, the Sent simulator).
//!
//! Each inbound provider is one file implementing [`WebhookVerifier`]; the
//! gateway only sees the trait.

pub mod callback;
pub mod legacy;
pub mod standard;
pub mod stripe;
pub mod telegram;

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

pub use legacy::{sign_legacy, verify_legacy};
pub use standard::{SentVerifier, WebhookSecret, sign, verify};
pub use stripe::{StripeVerifier, sign_stripe, verify_stripe};
pub use telegram::{TelegramVerifier, verify_telegram};

/// Header names, lowercase as `HeaderMap` stores them.
pub mod headers {
    /// Sent's inbound headers (also carry the legacy hex signature).
    pub const SENT_ID: &str = "x-webhook-id";
    pub const SENT_TIMESTAMP: &str = "x-webhook-timestamp";
    pub const SENT_SIGNATURE: &str = "x-webhook-signature";
    /// Sent's per-event id; the one to deduplicate on (not `x-webhook-id`).
    pub const SENT_EVENT_ID: &str = "x-webhook-event-id";
    /// Standard Webhooks names used on our outgoing status callbacks.
    pub const WEBHOOK_ID: &str = "webhook-id";
    pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
    pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
    pub const STRIPE_SIGNATURE: &str = "stripe-signature";
    pub const TELEGRAM_SECRET_TOKEN: &str = "x-telegram-bot-api-secret-token";
}

/// Default allowed clock difference between the signer and us.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("malformed signature header")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp outside the allowed tolerance")]
    TimestampOutOfTolerance,
    #[error("invalid webhook secret")]
    BadSecret,
}

impl SignatureError {
    /// Stable snake_case reason, safe as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
            Self::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            Self::BadSecret => "bad_secret",
        }
    }
}

pub trait WebhookVerifier: Send + Sync {
    /// Provider name as used in the URL and the inbox table: "sent", "stripe", "telegram".
    fn provider(&self) -> &'static str;
    /// Verify the raw request; return Ok(()) or the reason it failed.
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError>;
}

/// HMAC-SHA256 over the concatenation of `parts`, so callers need not build
/// a copy of the (possibly large) body with a prefix.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A header as trimmed text; an empty value counts as absent, and a
/// non-ASCII one cannot be a valid signature.
fn header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, SignatureError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| SignatureError::Malformed)?
                .trim();
            Ok((!text.is_empty()).then_some(text))
        }
    }
}

fn required_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<&'a str, SignatureError> {
    header(headers, name)?.ok_or(SignatureError::Missing(name))
}

/// Rejects a timestamp further than `tolerance` from `now`, in either
/// direction (a future timestamp would otherwise extend the replay window).
fn check_tolerance(timestamp: i64, tolerance: Duration, now: i64) -> Result<(), SignatureError> {
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(SignatureError::TimestampOutOfTolerance);
    }
    Ok(())
}

/// Unix seconds as plain ASCII digits; rejects signs and spaces that
/// `i64::from_str` would let through, since the text itself is signed.
fn parse_unix(text: &str) -> Result<i64, SignatureError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    text.parse().map_err(|_| SignatureError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn reasons_are_stable_snake_case() {
        let all = [
            SignatureError::Missing("x"),
            SignatureError::Malformed,
            SignatureError::Mismatch,
            SignatureError::TimestampOutOfTolerance,
            SignatureError::BadSecret,
        ];
        let reasons: Vec<_> = all.iter().map(SignatureError::reason).collect();
        assert_eq!(
            reasons,
            [
                "missing",
                "malformed",
                "mismatch",
                "timestamp_out_of_tolerance",
                "bad_secret"
            ]
        );
    }

    #[test]
    fn missing_names_the_header() {
        assert_eq!(
            SignatureError::Missing(headers::SENT_SIGNATURE).to_string(),
            "missing header x-webhook-signature"
        );
    }

    #[test]
    fn hmac_matches_openssl() {
        // printf '%s' '{"event":"message.delivered","message_id":"m_1"}' | openssl dgst -sha256 -hmac 'flask-legacy-secret'
        let body = br#"{"event":"message.delivered","message_id":"m_1"}"#;
        assert_eq!(
            hex::encode(hmac_sha256(
                b"flask-legacy-secret",
                &[&body[..10], &body[10..]]
            )),
            "21799c778b9d415a71dafa876e7f5c5f9f9cd60b5c613f46725698a71a98156e"
        );
    }

    #[test]
    fn tolerance_is_symmetric_and_inclusive() {
        let t = Duration::from_secs(300);
        assert_eq!(check_tolerance(1000, t, 1300), Ok(()));
        assert_eq!(check_tolerance(1300, t, 1000), Ok(()));
        assert_eq!(
            check_tolerance(1000, t, 1301),
            Err(SignatureError::TimestampOutOfTolerance)
        );
        assert_eq!(
            check_tolerance(1301, t, 1000),
            Err(SignatureError::TimestampOutOfTolerance)
        );
        assert_eq!(
            check_tolerance(i64::MIN, t, i64::MAX),
            Err(SignatureError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn parse_unix_accepts_only_digits() {
        assert_eq!(parse_unix("1614265330"), Ok(1614265330));
        for bad in ["", "+1", "-1", " 1", "1.0", "abc", "99999999999999999999"] {
            assert_eq!(parse_unix(bad), Err(SignatureError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn header_trims_and_treats_empty_as_absent() {
        let mut map = HeaderMap::new();
        map.insert("x-a", HeaderValue::from_static("  v  "));
        map.insert("x-b", HeaderValue::from_static(""));
        map.insert("x-c", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(header(&map, "x-a"), Ok(Some("v")));
        assert_eq!(header(&map, "X-A"), Ok(Some("v")));
        assert_eq!(header(&map, "x-b"), Ok(None));
        assert_eq!(header(&map, "x-none"), Ok(None));
        assert_eq!(header(&map, "x-c"), Err(SignatureError::Malformed));
        assert_eq!(
            required_header(&map, "x-b"),
            Err(SignatureError::Missing("x-b"))
        );
    }
}
