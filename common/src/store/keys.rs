//! Managed API keys. Only a SHA-256 of each key is stored.

use chrono::{DateTime, Utc};

use super::Store;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub name: String,
    pub key_prefix: String,
    pub callback_secret: String,
    pub rate_limit: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub key_hash: Vec<u8>,
    pub key_prefix: String,
    pub callback_secret: String,
    pub rate_limit: Option<String>,
}

const COLUMNS: &str = "name, key_prefix, callback_secret, rate_limit, created_at, revoked_at";

impl Store {
    /// Fails with a unique violation when the name is taken.
    pub async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, sqlx::Error> {
        sqlx::query_as(&format!(
            "INSERT INTO api_keys (name, key_hash, key_prefix, callback_secret, rate_limit)
             VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
        ))
        .bind(&key.name)
        .bind(&key.key_hash)
        .bind(&key.key_prefix)
        .bind(&key.callback_secret)
        .bind(&key.rate_limit)
        .fetch_one(&self.pool)
        .await
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY name"))
            .fetch_all(&self.pool)
            .await
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
        let row: Option<(String,)> =
            sqlx::query_as("SELECT callback_secret FROM api_keys WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(s,)| s))
    }
}
