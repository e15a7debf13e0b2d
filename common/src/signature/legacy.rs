//! The original Flask integration's scheme: hex HMAC-SHA256 of the raw body,
//! keyed by the secret string as given. No timestamp, so no replay
//! protection; only accepted while configuration allows it.

use subtle::ConstantTimeEq;

use super::{SignatureError, hmac_sha256};

/// Lowercase hex HMAC-SHA256 of `body`, the `X-Webhook-Signature` value.
pub fn sign_legacy(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// Accepts the header (hex, either case) if it matches any secret.
pub fn verify_legacy(secrets: &[String], header: &str, body: &[u8]) -> Result<(), SignatureError> {
    let mut given = [0u8; 32];
    hex::decode_to_slice(header.trim(), &mut given).map_err(|_| SignatureError::Malformed)?;
    let matched = secrets
        .iter()
        // An empty key is public knowledge, so it must never verify anything.
        .filter(|secret| !secret.is_empty())
        .any(|secret| bool::from(hmac_sha256(secret.as_bytes(), &[body]).ct_eq(&given)));
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // printf '%s' '{"event":"message.delivered","message_id":"m_1"}' | openssl dgst -sha256 -hmac 'flask-legacy-secret'
    const SECRET: &str = "flask-legacy-secret";
    const BODY: &[u8] = br#"{"event":"message.delivered","message_id":"m_1"}"#;
    const SIG: &str = "21799c778b9d415a71dafa876e7f5c5f9f9cd60b5c613f46725698a71a98156e";

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn openssl_vector() {
        assert_eq!(sign_legacy(SECRET, BODY), SIG);
        assert_eq!(verify_legacy(&secrets(&[SECRET]), SIG, BODY), Ok(()));
    }

    #[test]
    fn secret_is_used_as_given_not_base64_decoded() {
        let whsec = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let by_string = hex::encode(hmac_sha256(whsec.as_bytes(), &[BODY]));
        assert_eq!(sign_legacy(whsec, BODY), by_string);
    }

    #[test]
    fn uppercase_and_surrounding_space_accepted() {
        let upper = format!(" {} ", SIG.to_uppercase());
        assert_eq!(verify_legacy(&secrets(&[SECRET]), &upper, BODY), Ok(()));
    }

    #[test]
    fn altered_body_fails() {
        let mut body = BODY.to_vec();
        body[5] ^= 0x20;
        assert_eq!(
            verify_legacy(&secrets(&[SECRET]), SIG, &body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rotation_and_empty_secrets() {
        assert_eq!(verify_legacy(&secrets(&["old", SECRET]), SIG, BODY), Ok(()));
        assert_eq!(
            verify_legacy(&secrets(&["old"]), SIG, BODY),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_legacy(&[], SIG, BODY), Err(SignatureError::Mismatch));
        let empty_sig = sign_legacy("", BODY);
        assert_eq!(
            verify_legacy(&secrets(&[""]), &empty_sig, BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let s = secrets(&[SECRET]);
        for bad in [
            "",
            "zz",
            &SIG[..62],
            &format!("{SIG}00"),
            &format!("sha256={SIG}"),
        ] {
            assert_eq!(
                verify_legacy(&s, bad, BODY),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }
}
