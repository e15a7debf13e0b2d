//! `gateway keys create|list|revoke`: managed API keys.

use base64::Engine;
use common::signature::standard::WebhookSecret;
use common::store::{NewApiKey, Store};
use rand::RngCore;

use crate::auth::hash_key;

/// Makes a key: `sgw_` and 32 random bytes, URL-safe base64.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "sgw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub async fn create(store: &Store, name: &str, rate_limit: Option<String>) -> anyhow::Result<()> {
    if let Some(quota) = &rate_limit {
        quota
            .parse::<common::rate::Quota>()
            .map_err(|e| anyhow::anyhow!("--rate-limit: {e}"))?;
    }
    let key = generate_key();
    let callback_secret = WebhookSecret::generate().to_whsec_string();
    let record = store
        .create_api_key(&NewApiKey {
            name: name.to_owned(),
            key_hash: hash_key(&key).to_vec(),
            key_prefix: key[..8].to_owned(),
            callback_secret: callback_secret.clone(),
            rate_limit,
        })
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                anyhow::anyhow!("a key named '{name}' exists")
            }
            other => other.into(),
        })?;
    println!("name:            {}", record.name);
    println!("api key:         {key}");
    println!("callback secret: {callback_secret}");
    println!("Store the key now: only its hash is kept.");
    Ok(())
}

pub async fn list(store: &Store) -> anyhow::Result<()> {
    println!(
        "{:<24} {:<10} {:<14} {:<26} revoked",
        "name", "prefix", "rate limit", "created"
    );
    for key in store.api_keys().await? {
        println!(
            "{:<24} {:<10} {:<14} {:<26} {}",
            key.name,
            key.key_prefix,
            key.rate_limit.unwrap_or_else(|| "default".into()),
            key.created_at.to_rfc3339(),
            key.revoked_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

pub async fn revoke(store: &Store, name: &str) -> anyhow::Result<()> {
    if store.revoke_api_key(name).await? {
        println!("revoked '{name}' (gateways stop accepting it within 10 seconds)");
        Ok(())
    } else {
        anyhow::bail!("no active key named '{name}'")
    }
}
