//! Telegram's `X-Telegram-Bot-Api-Secret-Token`: a shared token echoed back
//! verbatim on every update, no HMAC.

use std::fmt;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{SignatureError, WebhookVerifier, headers, required_header};

/// Accepts `token` if it equals any configured secret. Digests are compared
/// rather than the strings so that the comparison time does not depend on
/// the secret's length or contents.
pub fn verify_telegram(secrets: &[String], token: &str) -> Result<(), SignatureError> {
    let given = Sha256::digest(token.as_bytes());
    let matched = secrets
        .iter()
        // An empty token would accept any request with an empty header.
        .filter(|secret| !secret.is_empty())
        .any(|secret| bool::from(Sha256::digest(secret.as_bytes()).ct_eq(&given)));
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[derive(Clone)]
pub struct TelegramVerifier {
    pub secrets: Vec<String>,
}

impl fmt::Debug for TelegramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramVerifier")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl WebhookVerifier for TelegramVerifier {
    fn provider(&self) -> &'static str {
        "telegram"
    }

    /// Telegram signs nothing, so neither the body nor the time matter.
    fn verify(&self, map: &HeaderMap, _body: &[u8], _now: i64) -> Result<(), SignatureError> {
        let token = required_header(map, headers::TELEGRAM_SECRET_TOKEN)?;
        verify_telegram(&self.secrets, token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn verifier(list: &[&str]) -> TelegramVerifier {
        TelegramVerifier {
            secrets: list.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn with_token(token: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            "X-Telegram-Bot-Api-Secret-Token",
            HeaderValue::from_str(token).unwrap(),
        );
        map
    }

    #[test]
    fn exact_token_matches() {
        let v = verifier(&["tg_Secret-123"]);
        assert_eq!(v.provider(), "telegram");
        assert_eq!(v.verify(&with_token("tg_Secret-123"), b"{}", 0), Ok(()));
    }

    #[test]
    fn near_misses_fail() {
        let v = verifier(&["tg_Secret-123"]);
        for bad in ["tg_secret-123", "tg_Secret-12", "tg_Secret-1234", "x"] {
            assert_eq!(
                v.verify(&with_token(bad), b"{}", 0),
                Err(SignatureError::Mismatch),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn several_secrets() {
        let v = verifier(&["old-token", "new-token"]);
        assert_eq!(v.verify(&with_token("old-token"), b"", 0), Ok(()));
        assert_eq!(v.verify(&with_token("new-token"), b"", 0), Ok(()));
        assert_eq!(
            verifier(&[]).verify(&with_token("new-token"), b"", 0),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_or_empty_header() {
        let v = verifier(&["tok"]);
        let missing = Err(SignatureError::Missing(headers::TELEGRAM_SECRET_TOKEN));
        assert_eq!(v.verify(&HeaderMap::new(), b"", 0), missing);
        assert_eq!(v.verify(&with_token(""), b"", 0), missing);
        assert_eq!(
            verify_telegram(&["".into()], ""),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn debug_hides_tokens() {
        assert!(!format!("{:?}", verifier(&["hidden-token"])).contains("hidden-token"));
    }
}
