//! Stripe's `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]` scheme.
//! The secret string (`whsec_...`) is the HMAC key as is: unlike Standard
//! Webhooks, Stripe does not base64-decode it.

use std::fmt;
use std::time::Duration;

use http::HeaderMap;
use subtle::ConstantTimeEq;

use super::{
    SignatureError, WebhookVerifier, check_tolerance, headers, hmac_sha256, parse_unix,
    required_header,
};

fn mac(secret: &str, t: &str, body: &[u8]) -> [u8; 32] {
    hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body])
}

/// The full `Stripe-Signature` header value, for tests and the simulator.
pub fn sign_stripe(secret: &str, t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    format!("t={t},v1={}", hex::encode(mac(secret, &t, body)))
}

/// Accepts the header if any `v1` entry matches any secret and `t` is within
/// `tolerance` of `now`. Other schemes (`v0`, ...) are ignored, as Stripe's
/// own libraries do.
pub fn verify_stripe(
    secrets: &[String],
    header: &str,
    body: &[u8],
    tolerance: Duration,
    now: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" if t.is_none() => t = Some(value.trim()),
            "v1" => {
                let mut sig = [0u8; 32];
                if hex::decode_to_slice(value.trim(), &mut sig).is_ok() {
                    candidates.push(sig);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    let signed_at = parse_unix(t)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let matched = secrets
        .iter()
        // An empty key is public knowledge, so it must never verify anything.
        .filter(|secret| !secret.is_empty())
        .any(|secret| {
            let expected = mac(secret, t, body);
            candidates
                .iter()
                .any(|candidate| bool::from(candidate.ct_eq(&expected)))
        });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    // Checked after the signature so that a stale genuine event and a forged
    // one are reported differently.
    check_tolerance(signed_at, tolerance, now)
}

#[derive(Clone)]
pub struct StripeVerifier {
    pub secrets: Vec<String>,
    pub tolerance: Duration,
}

impl fmt::Debug for StripeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl WebhookVerifier for StripeVerifier {
    fn provider(&self) -> &'static str {
        "stripe"
    }

    fn verify(&self, map: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let header = required_header(map, headers::STRIPE_SIGNATURE)?;
        verify_stripe(&self.secrets, header, body, self.tolerance, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::DEFAULT_TOLERANCE;
    use http::HeaderValue;

    // printf '%s' '1700000000.{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}' \
    //   | openssl dgst -sha256 -hmac 'whsec_stripe_test_secret'
    const SECRET: &str = "whsec_stripe_test_secret";
    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}"#;
    const SIG: &str = "c28ab234d378540ecf7977eddde60d9d39f0806cbeec4799793f3598914672c9";

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn check(
        secret_list: &[&str],
        header: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        verify_stripe(&secrets(secret_list), header, body, DEFAULT_TOLERANCE, now)
    }

    #[test]
    fn openssl_vector() {
        let header = format!("t={T},v1={SIG}");
        assert_eq!(sign_stripe(SECRET, T, BODY), header);
        assert_eq!(check(&[SECRET], &header, BODY, T), Ok(()));
    }

    #[test]
    fn any_v1_entry_and_extra_schemes() {
        let header = format!("t={T},v1={},v1={SIG},v0=deadbeef", "00".repeat(32));
        assert_eq!(check(&[SECRET], &header, BODY, T), Ok(()));
        let spaced = format!(" t = {T} , v1 = {SIG} ");
        assert_eq!(check(&[SECRET], &spaced, BODY, T), Ok(()));
        let upper = format!("t={T},v1={}", SIG.to_uppercase());
        assert_eq!(check(&[SECRET], &upper, BODY, T), Ok(()));
    }

    #[test]
    fn only_v1_counts() {
        let header = format!("t={T},v0={SIG}");
        assert_eq!(
            check(&[SECRET], &header, BODY, T),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn rotation() {
        let header = format!("t={T},v1={SIG}");
        assert_eq!(check(&["whsec_new", SECRET], &header, BODY, T), Ok(()));
        assert_eq!(
            check(&["whsec_new"], &header, BODY, T),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(check(&[], &header, BODY, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn empty_secret_never_verifies() {
        let header = sign_stripe("", T, BODY);
        assert_eq!(
            check(&[""], &header, BODY, T),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn altered_body_or_timestamp_fails() {
        let mut body = BODY.to_vec();
        body[BODY.len() - 2] ^= 0x01;
        let header = format!("t={T},v1={SIG}");
        assert_eq!(
            check(&[SECRET], &header, &body, T),
            Err(SignatureError::Mismatch)
        );
        let moved = format!("t={},v1={SIG}", T + 1);
        assert_eq!(
            check(&[SECRET], &moved, BODY, T),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tolerance() {
        let header = format!("t={T},v1={SIG}");
        assert_eq!(check(&[SECRET], &header, BODY, T + 300), Ok(()));
        assert_eq!(
            check(&[SECRET], &header, BODY, T + 301),
            Err(SignatureError::TimestampOutOfTolerance)
        );
        assert_eq!(
            check(&[SECRET], &header, BODY, T - 301),
            Err(SignatureError::TimestampOutOfTolerance)
        );
        let wide = verify_stripe(
            &secrets(&[SECRET]),
            &header,
            BODY,
            Duration::from_secs(900),
            T + 900,
        );
        assert_eq!(wide, Ok(()));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "".to_string(),
            "garbage".to_string(),
            format!("v1={SIG}"),
            format!("t=,v1={SIG}"),
            format!("t=-5,v1={SIG}"),
            format!("t=soon,v1={SIG}"),
            format!("t={T}"),
            format!("t={T},v1=xyz"),
        ] {
            assert_eq!(
                check(&[SECRET], &bad, BODY, T),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn verifier_reads_the_header() {
        let v = StripeVerifier {
            secrets: secrets(&[SECRET]),
            tolerance: DEFAULT_TOLERANCE,
        };
        assert_eq!(v.provider(), "stripe");
        assert!(!format!("{v:?}").contains(SECRET));
        let mut map = HeaderMap::new();
        assert_eq!(
            v.verify(&map, BODY, T),
            Err(SignatureError::Missing(headers::STRIPE_SIGNATURE))
        );
        map.insert(
            "Stripe-Signature",
            HeaderValue::from_str(&sign_stripe(SECRET, T, BODY)).unwrap(),
        );
        assert_eq!(v.verify(&map, BODY, T + 5), Ok(()));
        assert_eq!(v.verify(&map, b"{}", T + 5), Err(SignatureError::Mismatch));
    }
}
