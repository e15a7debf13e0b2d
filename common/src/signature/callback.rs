//! The secrets that sign status callbacks (Standard Webhooks), and the
//! transitions during which one callback carries several signatures, so a
//! receiver verifying with either the old or the new secret accepts it
//! (Standard Webhooks verifiers take any matching `v1,` entry).
//!
//! - A **managed** key (`gateway keys create`) has a random secret stored
//!   with it. `gateway keys rotate-secret` makes a new one and keeps the old
//!   one as previous until a time; until then both sign.
//! - A **bootstrap** key (`API_KEYS`) has a secret derived from the server's
//!   `CALLBACK_SIGNING_KEY` and the key's name:
//!   `whsec_` + base64 of `HMAC-SHA256(key = CALLBACK_SIGNING_KEY,
//!   message = "callback-secret:" + name)`, i.e.
//!   `printf %s "callback-secret:$NAME" | openssl dgst -sha256 -hmac "$CALLBACK_SIGNING_KEY" -binary | base64`.
//!   The API key plays no part: a receiver's secret reveals nothing about
//!   the key, and either can change without the other. While
//!   `CALLBACK_SIGNING_KEY_PREVIOUS` is set, the secret derived from it signs
//!   too (a rotation of the signing key).
//! - Releases before this one derived a bootstrap key's secret from the API
//!   key itself (`HMAC-SHA256(key = API key, message = "callback-signing")`).
//!   Until `CALLBACK_LEGACY_SECRET_UNTIL`, that secret signs too, so
//!   receivers keep working across the upgrade while they move to the new
//!   secret (`gateway keys secret NAME`).

use chrono::{DateTime, Utc};

use super::hmac_sha256;
use super::standard::{WebhookSecret, sign};
use crate::config::{CallbackSigning, Secret};
use crate::signature::SignatureError;

/// What is signed, after this prefix the key's name, to derive a bootstrap
/// key's secret from `CALLBACK_SIGNING_KEY`.
pub const DERIVATION_PREFIX: &str = "callback-secret:";

/// What the previous releases signed with the API key to derive its secret.
pub const LEGACY_DERIVATION: &[u8] = b"callback-signing";

/// A bootstrap key's secret under `signing_key` (see the module docs).
pub fn derived_secret(signing_key: &Secret, name: &str) -> WebhookSecret {
    let mac = hmac_sha256(
        signing_key.expose().as_bytes(),
        &[DERIVATION_PREFIX.as_bytes(), name.as_bytes()],
    );
    WebhookSecret::from_bytes(mac.to_vec()).expect("32 bytes")
}

/// The secret the previous releases derived from a bootstrap API key.
pub fn legacy_secret(api_key: &Secret) -> WebhookSecret {
    let mac = hmac_sha256(api_key.expose().as_bytes(), &[LEGACY_DERIVATION]);
    WebhookSecret::from_bytes(mac.to_vec()).expect("32 bytes")
}

/// Why a secret other than the current one still signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A managed key's secret before `gateway keys rotate-secret`.
    PreviousSecret,
    /// Derived from `CALLBACK_SIGNING_KEY_PREVIOUS`.
    PreviousSigningKey,
    /// Derived from the API key, as before this release
    /// (`CALLBACK_LEGACY_SECRET_UNTIL`).
    LegacyFromApiKey,
}

impl Transition {
    pub fn describe(self) -> &'static str {
        match self {
            Transition::PreviousSecret => "the secret before the last rotate-secret",
            Transition::PreviousSigningKey => "derived from CALLBACK_SIGNING_KEY_PREVIOUS",
            Transition::LegacyFromApiKey => {
                "derived from the API key, as before (CALLBACK_LEGACY_SECRET_UNTIL)"
            }
        }
    }
}

/// A secret that signs besides the current one, until a time (`None`: until
/// the operator ends the transition).
#[derive(Debug, Clone)]
pub struct AlsoSigning {
    pub secret: WebhookSecret,
    pub until: Option<DateTime<Utc>>,
    pub why: Transition,
}

/// The secrets of one API key's callbacks: the current one, which receivers
/// should verify with, and those of a transition.
#[derive(Debug, Clone)]
pub struct CallbackSecrets {
    pub current: WebhookSecret,
    pub also: Vec<AlsoSigning>,
}

impl CallbackSecrets {
    /// A bootstrap key's, by its name and its keys in `API_KEYS` (one name
    /// may have several while a key is rotated).
    pub fn bootstrap<'a>(
        signing: &CallbackSigning,
        name: &str,
        api_keys: impl IntoIterator<Item = &'a Secret>,
    ) -> CallbackSecrets {
        let mut also = Vec::new();
        if let Some(previous) = &signing.previous_key {
            also.push(AlsoSigning {
                secret: derived_secret(previous, name),
                until: None,
                why: Transition::PreviousSigningKey,
            });
        }
        if let Some(until) = signing.legacy_until {
            also.extend(api_keys.into_iter().map(|key| AlsoSigning {
                secret: legacy_secret(key),
                until: Some(until),
                why: Transition::LegacyFromApiKey,
            }));
        }
        CallbackSecrets {
            current: derived_secret(&signing.key, name),
            also,
        }
    }

    /// A managed key's, as stored (`whsec_` texts).
    pub fn managed(
        current: &str,
        previous: Option<&str>,
        previous_until: Option<DateTime<Utc>>,
    ) -> Result<CallbackSecrets, SignatureError> {
        let mut also = Vec::new();
        if let (Some(previous), Some(until)) = (previous, previous_until) {
            also.push(AlsoSigning {
                secret: WebhookSecret::parse(previous)?,
                until: Some(until),
                why: Transition::PreviousSecret,
            });
        }
        Ok(CallbackSecrets {
            current: WebhookSecret::parse(current)?,
            also,
        })
    }

    /// The transitions still signing at `now`.
    pub fn also_at(&self, now: DateTime<Utc>) -> impl Iterator<Item = &AlsoSigning> {
        self.also
            .iter()
            .filter(move |also| also.until.is_none_or(|until| now < until))
    }

    /// Every secret signing at `now`, the current one first, each once.
    pub fn signing_at(&self, now: DateTime<Utc>) -> Vec<&WebhookSecret> {
        let mut secrets = vec![&self.current];
        for also in self.also_at(now) {
            if !secrets.contains(&&also.secret) {
                secrets.push(&also.secret);
            }
        }
        secrets
    }

    /// The `webhook-signature` header at `now`: a `v1,` entry per secret,
    /// space-separated, the current secret's first.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8], now: DateTime<Utc>) -> String {
        self.signing_at(now)
            .into_iter()
            .map(|secret| sign(secret, id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{DEFAULT_TOLERANCE, verify};

    fn signing(previous: Option<&str>, legacy_until: Option<&str>) -> CallbackSigning {
        CallbackSigning {
            key: Secret::new("k".repeat(40)),
            previous_key: previous.map(Secret::new),
            legacy_until: legacy_until.map(|t| t.parse().unwrap()),
        }
    }

    #[test]
    fn derivation_matches_openssl() {
        // NAME=ops CALLBACK_SIGNING_KEY=kkk...k (40 k's), the README's command:
        // printf %s "callback-secret:$NAME" | openssl dgst -sha256 -hmac "$CALLBACK_SIGNING_KEY" -binary | base64
        let secret = derived_secret(&Secret::new("k".repeat(40)), "ops");
        assert_eq!(
            secret.to_whsec_string(),
            "whsec_qFlI2q+Wn6TSvH1odBCtVp2mCeEr7IkkrAxvsXSu9y0="
        );
        // Each name has its own, and the API key plays no part.
        assert_ne!(
            derived_secret(&Secret::new("k".repeat(40)), "other"),
            secret
        );
        // The previous releases' derivation, unchanged.
        assert_eq!(
            legacy_secret(&Secret::new("key-aaaaaaaa")).to_whsec_string(),
            "whsec_Xj9ewGkiVNnH+XXqBTTychKVCHtaU0UHbyVfbS9cJRQ="
        );
    }

    #[test]
    fn transitions_add_signatures_until_they_end() {
        let api_key = Secret::new("key-aaaaaaaa");
        let now: DateTime<Utc> = "2027-01-01T00:00:00Z".parse().unwrap();
        let config = signing(Some(&"p".repeat(40)), Some("2027-01-02T00:00:00Z"));
        let secrets = CallbackSecrets::bootstrap(&config, "ops", [&api_key]);
        let (id, ts, body) = ("cb_1", now.timestamp().to_string(), b"{}".as_slice());
        let header = secrets.sign(id, &ts, body, now);
        assert_eq!(header.split(' ').count(), 3, "{header}");
        for secret in [
            derived_secret(&config.key, "ops"),
            derived_secret(config.previous_key.as_ref().unwrap(), "ops"),
            legacy_secret(&api_key),
        ] {
            verify(
                &[secret],
                id,
                &ts,
                &header,
                body,
                DEFAULT_TOLERANCE,
                now.timestamp(),
            )
            .unwrap();
        }
        // After the legacy date, only the current and the previous key's.
        let later = "2027-01-02T00:00:00Z".parse().unwrap();
        let header = secrets.sign(id, &ts, body, later);
        assert_eq!(header.split(' ').count(), 2, "{header}");
        assert!(
            verify(
                &[legacy_secret(&api_key)],
                id,
                &ts,
                &header,
                body,
                DEFAULT_TOLERANCE,
                now.timestamp()
            )
            .is_err()
        );
        // Without a transition: one signature.
        let plain = CallbackSecrets::bootstrap(&signing(None, None), "ops", [&api_key]);
        assert_eq!(plain.sign(id, &ts, body, now).split(' ').count(), 1);
    }

    #[test]
    fn a_managed_keys_previous_secret_signs_until_its_time() {
        let (current, previous) = (WebhookSecret::generate(), WebhookSecret::generate());
        let until: DateTime<Utc> = "2027-01-08T00:00:00Z".parse().unwrap();
        let secrets = CallbackSecrets::managed(
            &current.to_whsec_string(),
            Some(&previous.to_whsec_string()),
            Some(until),
        )
        .unwrap();
        let before = until - chrono::Duration::seconds(1);
        assert_eq!(secrets.signing_at(before), [&current, &previous]);
        assert_eq!(secrets.signing_at(until), [&current]);
        // A previous secret without a time does not sign.
        let secrets = CallbackSecrets::managed(
            &current.to_whsec_string(),
            Some(&previous.to_whsec_string()),
            None,
        )
        .unwrap();
        assert_eq!(secrets.signing_at(before), [&current]);
    }
}
