//! Managed API keys. Only a SHA-256 of each key is stored.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Store;
use crate::domain::{Provider, Role};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub name: String,
    pub key_prefix: String,
    pub callback_secret: String,
    pub rate_limit: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub role: Role,
    /// The callback secret before the last `rotate-secret`, which signs
    /// too until `previous_callback_secret_until`.
    pub previous_callback_secret: Option<String>,
    pub previous_callback_secret_until: Option<DateTime<Utc>>,
    /// Where replies routed to this key's client go (`message.inbound`).
    pub inbound_url: Option<String>,
    /// The provider sources a tenant key may read with the pull API.
    pub pull_sources: Vec<Provider>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub key_hash: Vec<u8>,
    pub key_prefix: String,
    pub callback_secret: String,
    pub rate_limit: Option<String>,
}

/// A managed key's callback secrets, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredCallbackSecrets {
    pub callback_secret: String,
    pub previous_callback_secret: Option<String>,
    pub previous_callback_secret_until: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "name, key_prefix, callback_secret, rate_limit, created_at, revoked_at, role,
     previous_callback_secret, previous_callback_secret_until, inbound_url, pull_sources";

impl Store {
    /// A tenant key. Fails with a unique violation when the name is taken.
    pub async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, sqlx::Error> {
        self.create_api_key_with_role(key, Role::Tenant).await
    }

    /// Fails with a unique violation when the name is taken.
    pub async fn create_api_key_with_role(
        &self,
        key: &NewApiKey,
        role: Role,
    ) -> Result<ApiKeyRecord, sqlx::Error> {
        sqlx::query_as(&format!(
            "INSERT INTO api_keys (name, key_hash, key_prefix, callback_secret, rate_limit, role)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        ))
        .bind(&key.name)
        .bind(&key.key_hash)
        .bind(&key.key_prefix)
        .bind(&key.callback_secret)
        .bind(&key.rate_limit)
        .bind(role)
        .fetch_one(&self.pool)
        .await
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY name"))
            .fetch_all(&self.pool)
            .await
    }

    /// Which of `names` the table holds, revoked keys included (a revoked
    /// key's name still owns its messages).
    pub async fn api_key_names_taken(&self, names: &[String]) -> Result<Vec<String>, sqlx::Error> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT name FROM api_keys WHERE name = ANY($1) ORDER BY name")
                .bind(names)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    /// Returns whether an active key of that name existed.
    pub async fn revoke_api_key(&self, name: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// The active key with this hash, if any.
    pub async fn api_key_by_hash(&self, hash: &[u8]) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
    }

    /// The callback secret of a managed key, by name.
    pub async fn callback_secret(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
        Ok(self
            .callback_secrets(name)
            .await?
            .map(|secrets| secrets.callback_secret))
    }

    /// The callback secrets of a managed key, by name: the current one and,
    /// after a rotation, the previous one with the time it stops signing.
    pub async fn callback_secrets(
        &self,
        name: &str,
    ) -> Result<Option<StoredCallbackSecrets>, sqlx::Error> {
        sqlx::query_as(
            "SELECT callback_secret, previous_callback_secret, previous_callback_secret_until
               FROM api_keys WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }

    /// Sets (or, with `None`, clears) where a managed key's replies go.
    /// Returns whether a key of that name exists.
    pub async fn set_inbound_url(
        &self,
        name: &str,
        url: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        Ok(
            sqlx::query("UPDATE api_keys SET inbound_url = $2 WHERE name = $1")
                .bind(name)
                .bind(url)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// Sets the provider sources a managed key may read with the pull API
    /// (empty: none). Returns whether a key of that name exists.
    pub async fn set_pull_sources(
        &self,
        name: &str,
        sources: &[Provider],
    ) -> Result<bool, sqlx::Error> {
        Ok(
            sqlx::query("UPDATE api_keys SET pull_sources = $2 WHERE name = $1")
                .bind(name)
                .bind(sources)
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    /// Gives a managed key a new callback secret; the one it replaces keeps
    /// signing for `transition` (none: it stops at once). A secret still in
    /// an earlier transition is dropped. `None` when no key has that name.
    pub async fn rotate_callback_secret(
        &self,
        name: &str,
        new_secret: &str,
        transition: Duration,
    ) -> Result<Option<StoredCallbackSecrets>, sqlx::Error> {
        sqlx::query_as(
            "UPDATE api_keys
                SET previous_callback_secret = CASE WHEN $3::interval > interval '0' THEN callback_secret END,
                    previous_callback_secret_until = CASE WHEN $3::interval > interval '0' THEN now() + $3::interval END,
                    callback_secret = $2
              WHERE name = $1
             RETURNING callback_secret, previous_callback_secret, previous_callback_secret_until",
        )
        .bind(name)
        .bind(new_secret)
        .bind(chrono::Duration::from_std(transition).unwrap_or(chrono::Duration::days(36_500)))
        .fetch_optional(&self.pool)
        .await
    }
}
