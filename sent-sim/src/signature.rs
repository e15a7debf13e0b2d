//! Webhook signing as Sent does it (SENT_API.md, "Signature"): the Standard
//! Webhooks construction with the endpoint id in the id slot. The simulator's
//! own code, independent of the gateway's verifier.

use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Sent's checker re-pads a secret's base64, so padding is optional here too.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The HMAC key of a webhook endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// `whsec_<base64>` or the bare base64, padded or not; never empty.
    pub fn parse(secret: &str) -> Option<SigningKey> {
        let secret = secret.trim();
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        LENIENT
            .decode(encoded)
            .ok()
            .filter(|key| !key.is_empty())
            .map(SigningKey)
    }

    /// `v1,` + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)).
    pub fn sign(&self, webhook_id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard Webhooks' published vector (SENT_API.md).
    #[test]
    fn standard_webhooks_vector() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// The Sent-shaped vector (SENT_API.md): key bytes 0x00..0x1f.
    #[test]
    fn sent_shaped_vector() {
        let body = br#"{"field":"message","event":"message.delivered","timestamp":"2026-01-01T00:00:00Z","payload":{"message_id":"8ba7b830-9dad-11d1-80b4-00c04fd430c8","message_status":"DELIVERED","channel":"sms","outbound_number":"+14155551234","updated_at":"2026-01-01T00:00:00Z"}}"#;
        assert_eq!(body.len(), 260);
        let expected = "v1,pA4KecBT+XKBwvwclddFJwtdC9xq3usd+xQocZ4jK/4=";
        for secret in [
            "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            // Unprefixed and unpadded: the same key.
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        ] {
            let key = SigningKey::parse(secret).unwrap();
            assert_eq!(key.0, (0u8..32).collect::<Vec<_>>());
            assert_eq!(
                key.sign("3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b", "1767225600", body),
                expected
            );
        }
    }

    #[test]
    fn bad_and_empty_secrets_are_refused() {
        for bad in ["whsec_!!!", "whsec_", ""] {
            assert!(SigningKey::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            format!("{:?}", SigningKey::parse("whsec_AAEC").unwrap()),
            "SigningKey(<redacted>)"
        );
    }
}
