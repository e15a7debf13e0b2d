//! API key authentication: `Authorization: Bearer <key>` or `X-API-Key`.
//! Keys come from `API_KEYS` and from the `api_keys` table (hashed).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use common::config::BootstrapKey;
use common::domain::{Provider, Role};
use common::rate::{MemoryLimiters, Quota, RetryAfter};
use common::store::Store;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::client_ip::client_address;
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

/// Who is calling: the name of their API key, its role, and its own limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub name: String,
    pub role: Role,
    pub rate_limit: Option<Quota>,
    /// Provider sources this (tenant) key may read with the pull API
    /// (`gateway keys create --pull`); an admin reads every source.
    pub pull_sources: Vec<Provider>,
}

impl Client {
    /// Whose messages the status page shows this client: its own (a
    /// tenant), or every client's (`None`, an admin).
    pub fn dashboard_scope(&self) -> Option<&str> {
        match self.role {
            Role::Admin => None,
            Role::Tenant => Some(&self.name),
        }
    }

    /// Whether this client may read `provider`'s stored events.
    pub fn may_pull(&self, provider: Provider) -> bool {
        self.role == Role::Admin || self.pull_sources.contains(&provider)
    }
}

type KeyHash = [u8; 32];

/// How long a lookup of a managed key is trusted; revocation takes effect within it.
const CACHE_TTL: Duration = Duration::from_secs(10);
/// Most keys each cache holds. Unknown keys have a cache of their own, so a
/// flood of random keys empties only theirs, never the valid keys'.
const CACHE_MAX: usize = 10_000;

pub struct KeyRing {
    bootstrap: Vec<(KeyHash, String, Role)>,
    store: Store,
    known: Mutex<HashMap<KeyHash, (Client, Instant)>>,
    unknown: Mutex<HashMap<KeyHash, Instant>>,
}

/// Remembers `value` under `hash`, emptying a full cache first (a recent
/// entry is worth more than an old one, and emptying is O(1) amortized).
fn remember<V>(cache: &Mutex<HashMap<KeyHash, V>>, hash: KeyHash, value: V) {
    let mut cache = cache.lock().unwrap();
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(hash, value);
}

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

impl KeyRing {
    pub fn new(bootstrap: &[BootstrapKey], store: Store) -> KeyRing {
        KeyRing {
            bootstrap: bootstrap
                .iter()
                .map(|key| (hash_key(key.key.expose()), key.name.clone(), key.role))
                .collect(),
            store,
            known: Mutex::default(),
            unknown: Mutex::default(),
        }
    }

    /// The client a key belongs to. Bootstrap keys are compared in constant
    /// time (every one, every time); managed keys are found by their SHA-256.
    pub async fn authenticate(&self, key: &str) -> Result<Client, ApiError> {
        let hash = hash_key(key);
        let mut found = None;
        for (candidate, name, role) in &self.bootstrap {
            if bool::from(candidate.ct_eq(&hash)) {
                found = Some((name, *role));
            }
        }
        if let Some((name, role)) = found {
            return Ok(Client {
                name: name.clone(),
                role,
                rate_limit: None,
                pull_sources: Vec::new(),
            });
        }
        if let Some((client, at)) = self.known.lock().unwrap().get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(client.clone());
        }
        if let Some(at) = self.unknown.lock().unwrap().get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return Err(ApiError::Unauthorized);
        }
        let record = self.store.api_key_by_hash(&hash).await?;
        let Some(record) = record else {
            remember(&self.unknown, hash, Instant::now());
            return Err(ApiError::Unauthorized);
        };
        let client = Client {
            name: record.name,
            role: record.role,
            rate_limit: record.rate_limit.and_then(|q| q.parse().ok()),
            pull_sources: record.pull_sources,
        };
        remember(&self.known, hash, (client.clone(), Instant::now()));
        Ok(client)
    }

    /// Unknown keys remembered (for tests).
    pub fn unknown_cached(&self) -> usize {
        self.unknown.lock().unwrap().len()
    }
}

/// Failed authentications per client address (its /64 for IPv6), counted in
/// this gateway: past `RATELIMIT_AUTH_FAILURES`, the client gets `429` before
/// its key is even looked up, so guessing keys costs neither Postgres nor
/// the caches anything. Memory is bounded by the clients that failed within
/// one period.
pub struct FailedAuth {
    limiters: MemoryLimiters,
    quota: Quota,
}

impl FailedAuth {
    pub fn new(quota: Quota) -> FailedAuth {
        FailedAuth {
            limiters: MemoryLimiters::default(),
            quota,
        }
    }

    fn refused(&self, client: &str) -> Option<RetryAfter> {
        self.limiters.peek(client, self.quota).err()
    }

    fn failed(&self, client: &str) {
        let _ = self.limiters.check(client, self.quota);
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
    let address = client_address(&request, &state.config.gateway.trusted_proxies);
    if let (Some(failures), Some(address)) = (&state.auth_failures, &address)
        && let Some(retry) = failures.refused(address)
    {
        metrics::counter!(common::metrics::RATE_LIMITED, "class" => "auth_failures").increment(1);
        return Err(ApiError::RateLimited {
            retry_after: retry.seconds(),
        });
    }
    let authenticated = match presented_key(request.headers()) {
        Some(key) => state.keys.authenticate(key).await,
        None => Err(ApiError::Unauthorized),
    };
    if let (Err(ApiError::Unauthorized), Some(failures), Some(address)) =
        (&authenticated, &state.auth_failures, &address)
    {
        failures.failed(address);
    }
    let client = authenticated?;
    tracing::Span::current().record("client", client.name.as_str());
    request.extensions_mut().insert(client);
    Ok(next.run(request).await)
}

/// Start-up check: no name of `API_KEYS` is also a managed key's (revoked
/// ones included, as a revoked key's name still owns its messages). A name
/// is one client: the two keys would see each other's messages, and the
/// managed key's callbacks would be signed with the bootstrap key's secret.
pub async fn refuse_shared_key_names(
    config: &common::config::Config,
    store: &Store,
) -> anyhow::Result<()> {
    let names: Vec<String> = config.api_keys.iter().map(|k| k.name.clone()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let taken = store.api_key_names_taken(&names).await?;
    if let Some(name) = taken.first() {
        anyhow::bail!(
            "configuration error: API_KEYS: '{name}' is also the name of a managed key in the \
             api_keys table (`gateway keys list`); rename the API_KEYS entry"
        );
    }
    Ok(())
}
