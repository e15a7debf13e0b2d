//! API key authentication: `Authorization: Bearer <key>` or `X-API-Key`.
//! Keys come from `API_KEYS` and from the `api_keys` table (hashed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use common::config::Secret;
use common::rate::Quota;
use common::store::Store;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// Who may call a group of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    ApiKey,
    /// An API key, unless `DASHBOARD_PUBLIC=true`.
    Dashboard,
    /// Anyone (webhooks prove who they are with their signature).
    Open,
}

/// Who is calling: the name of their API key, and its own limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub name: String,
    pub rate_limit: Option<Quota>,
}

type KeyHash = [u8; 32];

/// How long a lookup of a managed key is trusted; revocation takes effect within it.
const CACHE_TTL: Duration = Duration::from_secs(10);

pub struct KeyRing {
    bootstrap: Vec<(KeyHash, String)>,
    store: Store,
    cache: Mutex<HashMap<KeyHash, (Option<Client>, Instant)>>,
}

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

impl KeyRing {
    pub fn new(bootstrap: &[(String, Secret)], store: Store) -> KeyRing {
        KeyRing {
            bootstrap: bootstrap
                .iter()
                .map(|(name, key)| (hash_key(key.expose()), name.clone()))
                .collect(),
            store,
            cache: Mutex::default(),
        }
    }

    /// The client a key belongs to. Bootstrap keys are compared in constant
    /// time (every one, every time); managed keys are found by their SHA-256.
    pub async fn authenticate(&self, key: &str) -> Result<Client, ApiError> {
        let hash = hash_key(key);
        let mut found = None;
        for (candidate, name) in &self.bootstrap {
            if bool::from(candidate.ct_eq(&hash)) {
                found = Some(name);
            }
        }
        if let Some(name) = found {
            return Ok(Client {
                name: name.clone(),
                rate_limit: None,
            });
        }
        if let Some((client, at)) = self.cache.lock().unwrap().get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return client.clone().ok_or(ApiError::Unauthorized);
        }
        let client = self
            .store
            .api_key_by_hash(&hash)
            .await?
            .map(|record| Client {
                name: record.name,
                rate_limit: record.rate_limit.and_then(|q| q.parse().ok()),
            });
        let mut cache = self.cache.lock().unwrap();
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(hash, (client.clone(), Instant::now()));
        client.ok_or(ApiError::Unauthorized)
    }
}

pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Middleware for `/api/...`: puts the `Client` in the request's extensions.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = presented_key(request.headers()).ok_or(ApiError::Unauthorized)?;
    let client = state.keys.authenticate(key).await?;
    tracing::Span::current().record("client", client.name.as_str());
    request.extensions_mut().insert(client);
    Ok(next.run(request).await)
}
