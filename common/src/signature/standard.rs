//! Standard Webhooks scheme, as Sent uses it (with `x-webhook-*` header
//! names) and as we use it for outgoing status callbacks.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::{
    SignatureError, WebhookVerifier, check_tolerance, header, headers, hmac_sha256, legacy,
    parse_unix, required_header,
};

const PREFIX: &str = "whsec_";

/// Secrets are pasted by people; Sent's own checker re-pads missing `=`.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An HMAC key for the Standard Webhooks scheme.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl WebhookSecret {
    /// Accepts `whsec_<base64>` or the bare base64, padded or not.
    pub fn parse(text: &str) -> Result<WebhookSecret, SignatureError> {
        let text = text.trim();
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        let key = LENIENT
            .decode(encoded)
            .map_err(|_| SignatureError::BadSecret)?;
        Self::from_bytes(key)
    }

    /// An empty key would let anyone forge signatures, so it is refused.
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Result<WebhookSecret, SignatureError> {
        let key = key.into();
        if key.is_empty() {
            return Err(SignatureError::BadSecret);
        }
        Ok(WebhookSecret { key })
    }

    /// Bytes of the HMAC key.
    pub fn key_len(&self) -> usize {
        self.key.len()
    }

    /// A new random 32-byte secret.
    pub fn generate() -> WebhookSecret {
        WebhookSecret {
            key: rand::random::<[u8; 32]>().to_vec(),
        }
    }

    /// The canonical `whsec_<padded base64>` form, for showing to a client once.
    pub fn to_whsec_string(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        hmac_sha256(
            &self.key,
            &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
        )
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The signature header value `v1,<base64>` for one message.
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: &str, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(secret.mac(id, timestamp, body)))
}

/// Checks a signature header (space-separated `v1,<base64>` entries) against
/// every secret, so a rotation can keep the old secret for a grace period.
///
/// The signature is checked before the clock: a stale but genuine request is
/// then reported as `TimestampOutOfTolerance`, a forged one as `Mismatch`,
/// which keeps the two apart in logs and metrics.
pub fn verify(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    tolerance: Duration,
    now: i64,
) -> Result<(), SignatureError> {
    let signed_at = parse_unix(timestamp)?;
    let candidates: Vec<[u8; 32]> = signature_header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok()?.try_into().ok())
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let matched = secrets.iter().any(|secret| {
        let expected = secret.mac(id, timestamp, body);
        candidates
            .iter()
            .any(|candidate| bool::from(candidate.ct_eq(&expected)))
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    check_tolerance(signed_at, tolerance, now)
}

/// Sent's inbound webhooks: the Standard Webhooks scheme, or the old Flask
/// integration's bare hex HMAC while `allow_legacy` is on.
#[derive(Clone)]
pub struct SentVerifier {
    pub secrets: Vec<WebhookSecret>,
    /// Raw secret strings, used as HMAC keys as given (no base64 decoding).
    pub legacy_secrets: Vec<String>,
    pub allow_legacy: bool,
    pub tolerance: Duration,
}

impl fmt::Debug for SentVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentVerifier")
            .field("secrets", &self.secrets.len())
            .field("legacy_secrets", &self.legacy_secrets.len())
            .field("allow_legacy", &self.allow_legacy)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl WebhookVerifier for SentVerifier {
    fn provider(&self) -> &'static str {
        "sent"
    }

    fn verify(&self, map: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let signature = required_header(map, headers::SENT_SIGNATURE)?;
        match header(map, headers::SENT_TIMESTAMP)? {
            Some(timestamp) => {
                let id = required_header(map, headers::SENT_ID)?;
                verify(
                    &self.secrets,
                    id,
                    timestamp,
                    signature,
                    body,
                    self.tolerance,
                    now,
                )
            }
            None if self.allow_legacy => {
                legacy::verify_legacy(&self.legacy_secrets, signature, body)
            }
            None => Err(SignatureError::Missing(headers::SENT_TIMESTAMP)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{DEFAULT_TOLERANCE, sign_legacy};
    use http::HeaderValue;

    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: &str = "1614265330";
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const SENT_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const SENT_ID: &str = "3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b";
    const SENT_TS: &str = "1767225600";
    const SENT_BODY: &[u8] = br#"{"field":"message","event":"message.delivered","timestamp":"2026-01-01T00:00:00Z","payload":{"message_id":"8ba7b830-9dad-11d1-80b4-00c04fd430c8","message_status":"DELIVERED","channel":"sms","outbound_number":"+14155551234","updated_at":"2026-01-01T00:00:00Z"}}"#;
    const SENT_SIG: &str = "v1,pA4KecBT+XKBwvwclddFJwtdC9xq3usd+xQocZ4jK/4=";
    const SENT_NOW: i64 = 1767225600;

    fn secret(text: &str) -> WebhookSecret {
        WebhookSecret::parse(text).unwrap()
    }

    fn check(
        secrets: &[WebhookSecret],
        header: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        verify(
            secrets,
            SENT_ID,
            SENT_TS,
            header,
            body,
            DEFAULT_TOLERANCE,
            now,
        )
    }

    #[test]
    fn standard_webhooks_vector() {
        assert_eq!(sign(&secret(SW_SECRET), SW_ID, SW_TS, SW_BODY), SW_SIG);
        let now = 1614265330;
        assert_eq!(
            verify(
                &[secret(SW_SECRET)],
                SW_ID,
                SW_TS,
                SW_SIG,
                SW_BODY,
                DEFAULT_TOLERANCE,
                now
            ),
            Ok(())
        );
    }

    #[test]
    fn sent_shaped_vector() {
        assert_eq!(SENT_BODY.len(), 260);
        let s = secret(SENT_SECRET);
        assert_eq!(s.key, (0u8..32).collect::<Vec<_>>());
        assert_eq!(sign(&s, SENT_ID, SENT_TS, SENT_BODY), SENT_SIG);
        assert_eq!(check(&[s], SENT_SIG, SENT_BODY, SENT_NOW), Ok(()));
    }

    #[test]
    fn one_altered_body_byte_fails() {
        let s = [secret(SENT_SECRET)];
        for i in [0, SENT_BODY.len() / 2, SENT_BODY.len() - 1] {
            let mut body = SENT_BODY.to_vec();
            body[i] ^= 0x01;
            assert_eq!(
                check(&s, SENT_SIG, &body, SENT_NOW),
                Err(SignatureError::Mismatch)
            );
        }
        let mut longer = SENT_BODY.to_vec();
        longer.push(b'\n');
        assert_eq!(
            check(&s, SENT_SIG, &longer, SENT_NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn altered_id_or_timestamp_fails() {
        let s = [secret(SENT_SECRET)];
        let r = verify(
            &s,
            "other-id",
            SENT_TS,
            SENT_SIG,
            SENT_BODY,
            DEFAULT_TOLERANCE,
            SENT_NOW,
        );
        assert_eq!(r, Err(SignatureError::Mismatch));
        let r = verify(
            &s,
            SENT_ID,
            "1767225601",
            SENT_SIG,
            SENT_BODY,
            DEFAULT_TOLERANCE,
            SENT_NOW,
        );
        assert_eq!(r, Err(SignatureError::Mismatch));
    }

    #[test]
    fn timestamp_tolerance() {
        let s = [secret(SENT_SECRET)];
        assert_eq!(check(&s, SENT_SIG, SENT_BODY, SENT_NOW + 300), Ok(()));
        assert_eq!(check(&s, SENT_SIG, SENT_BODY, SENT_NOW - 300), Ok(()));
        assert_eq!(
            check(&s, SENT_SIG, SENT_BODY, SENT_NOW + 301),
            Err(SignatureError::TimestampOutOfTolerance)
        );
        assert_eq!(
            check(&s, SENT_SIG, SENT_BODY, SENT_NOW - 301),
            Err(SignatureError::TimestampOutOfTolerance)
        );
        let r = verify(
            &s,
            SENT_ID,
            SENT_TS,
            SENT_SIG,
            SENT_BODY,
            Duration::from_secs(3600),
            SENT_NOW + 3600,
        );
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn forged_and_stale_reports_mismatch() {
        let other = [WebhookSecret::generate()];
        assert_eq!(
            check(&other, SENT_SIG, SENT_BODY, SENT_NOW + 10_000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_accepts_any_configured_secret() {
        let secrets = [WebhookSecret::generate(), secret(SENT_SECRET)];
        assert_eq!(check(&secrets, SENT_SIG, SENT_BODY, SENT_NOW), Ok(()));
        assert_eq!(
            check(&secrets[..1], SENT_SIG, SENT_BODY, SENT_NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(&[], SENT_SIG, SENT_BODY, SENT_NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn multiple_entries_any_may_match() {
        let s = [secret(SENT_SECRET)];
        let wrong = sign(&WebhookSecret::generate(), SENT_ID, SENT_TS, SENT_BODY);
        let header = format!("v1a,AAAA {wrong} {SENT_SIG} v1,garbage");
        assert_eq!(check(&s, &header, SENT_BODY, SENT_NOW), Ok(()));
        let header = format!("  {SENT_SIG}  ");
        assert_eq!(check(&s, &header, SENT_BODY, SENT_NOW), Ok(()));
        assert_eq!(
            check(&s, &wrong, SENT_BODY, SENT_NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn garbage_header_is_malformed() {
        let s = [secret(SENT_SECRET)];
        for bad in [
            "",
            "garbage",
            "pA4KecBT+XKBwvwclddFJwtdC9xq3usd+xQocZ4jK/4=",
            "v2,pA4KecBT+XKBwvwclddFJwtdC9xq3usd+xQocZ4jK/4=",
            "v1,",
            "v1,not base64!",
            "v1,AAAA",
        ] {
            assert_eq!(
                check(&s, bad, SENT_BODY, SENT_NOW),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        let r = verify(
            &s,
            SENT_ID,
            "soon",
            SENT_SIG,
            SENT_BODY,
            DEFAULT_TOLERANCE,
            SENT_NOW,
        );
        assert_eq!(r, Err(SignatureError::Malformed));
    }

    #[test]
    fn secret_parsing_forms() {
        let canonical = secret(SENT_SECRET);
        assert_eq!(
            secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            canonical
        );
        assert_eq!(
            secret("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
            canonical
        );
        assert_eq!(
            secret("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
            canonical
        );
        assert_eq!(secret(&format!(" {SENT_SECRET}\n")), canonical);
        assert_eq!(canonical.to_whsec_string(), SENT_SECRET);
        for bad in ["", "whsec_", "whsec_!!!!", "not base64 at all", "A"] {
            assert_eq!(
                WebhookSecret::parse(bad),
                Err(SignatureError::BadSecret),
                "{bad:?}"
            );
        }
        assert_eq!(
            WebhookSecret::from_bytes(Vec::new()),
            Err(SignatureError::BadSecret)
        );
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert_ne!(a, b);
        let text = a.to_whsec_string();
        assert!(text.starts_with("whsec_"));
        assert_eq!(secret(&text), a);
        let sig = sign(&a, "id", "100", b"{}");
        assert_eq!(
            verify(&[a], "id", "100", &sig, b"{}", DEFAULT_TOLERANCE, 100),
            Ok(())
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let s = secret(SENT_SECRET);
        let shown = format!("{s:?}");
        assert!(!shown.contains("AAECAw"));
        assert!(!shown.contains('['));
        let v = SentVerifier {
            secrets: vec![s],
            legacy_secrets: vec!["legacy-secret".into()],
            allow_legacy: true,
            tolerance: DEFAULT_TOLERANCE,
        };
        let shown = format!("{v:?}");
        assert!(
            !shown.contains("AAECAw") && !shown.contains("legacy-secret"),
            "{shown}"
        );
    }

    fn sent_verifier(allow_legacy: bool) -> SentVerifier {
        SentVerifier {
            secrets: vec![secret(SENT_SECRET)],
            legacy_secrets: vec!["flask-secret".into()],
            allow_legacy,
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    fn request(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn sent_verifier_standard_scheme() {
        let v = sent_verifier(false);
        assert_eq!(v.provider(), "sent");
        let ok = request(&[
            ("X-Webhook-Id", SENT_ID),
            ("X-Webhook-Timestamp", SENT_TS),
            ("X-Webhook-Signature", SENT_SIG),
        ]);
        assert_eq!(v.verify(&ok, SENT_BODY, SENT_NOW), Ok(()));
        assert_eq!(
            v.verify(&ok, b"{}", SENT_NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v.verify(&ok, SENT_BODY, SENT_NOW + 301),
            Err(SignatureError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn sent_verifier_missing_headers() {
        let v = sent_verifier(false);
        let no_sig = request(&[("x-webhook-id", SENT_ID), ("x-webhook-timestamp", SENT_TS)]);
        assert_eq!(
            v.verify(&no_sig, SENT_BODY, SENT_NOW),
            Err(SignatureError::Missing(headers::SENT_SIGNATURE))
        );
        let no_id = request(&[
            ("x-webhook-timestamp", SENT_TS),
            ("x-webhook-signature", SENT_SIG),
        ]);
        assert_eq!(
            v.verify(&no_id, SENT_BODY, SENT_NOW),
            Err(SignatureError::Missing(headers::SENT_ID))
        );
        let no_ts = request(&[("x-webhook-id", SENT_ID), ("x-webhook-signature", SENT_SIG)]);
        assert_eq!(
            v.verify(&no_ts, SENT_BODY, SENT_NOW),
            Err(SignatureError::Missing(headers::SENT_TIMESTAMP))
        );
        assert_eq!(
            v.verify(&HeaderMap::new(), SENT_BODY, SENT_NOW),
            Err(SignatureError::Missing(headers::SENT_SIGNATURE))
        );
    }

    #[test]
    fn sent_verifier_legacy_only_when_allowed_and_no_timestamp() {
        let body = br#"{"event":"message.delivered"}"#;
        let hex_sig = sign_legacy("flask-secret", body);
        let legacy = request(&[("x-webhook-signature", &hex_sig)]);
        assert_eq!(sent_verifier(true).verify(&legacy, body, SENT_NOW), Ok(()));
        assert_eq!(
            sent_verifier(false).verify(&legacy, body, SENT_NOW),
            Err(SignatureError::Missing(headers::SENT_TIMESTAMP))
        );
        assert_eq!(
            sent_verifier(true).verify(&legacy, b"{}", SENT_NOW),
            Err(SignatureError::Mismatch)
        );
        // With a timestamp present the standard scheme is mandatory, so a
        // legacy signature cannot be used to skip the replay check.
        let downgraded = request(&[
            ("x-webhook-id", SENT_ID),
            ("x-webhook-timestamp", SENT_TS),
            ("x-webhook-signature", &hex_sig),
        ]);
        assert_eq!(
            sent_verifier(true).verify(&downgraded, body, SENT_NOW),
            Err(SignatureError::Malformed)
        );
    }
}
