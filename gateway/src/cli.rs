//! The operator's commands: `gateway keys
//! create|list|revoke|secret|rotate-secret|set-inbound-url` (managed API keys,
//! callback secrets, where replies go) and `gateway tenants purge`.

use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use common::config::{Config, Profile, check_inbound_url};
use common::domain::{Provider, Role};
use common::signature::callback::CallbackSecrets;
use common::signature::standard::WebhookSecret;
use common::store::{NewApiKey, Store, TenantPurge};
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

/// Whether `API_KEYS` has a key of this name.
fn is_bootstrap(config: &Config, name: &str) -> bool {
    config.api_keys.iter().any(|key| key.name == name)
}

/// What a new key may do besides sending: where its replies go
/// (`--inbound-url`) and which provider sources it may pull (`--pull`).
#[derive(Debug, Clone, Default)]
pub struct KeyGrants {
    pub inbound_url: Option<String>,
    pub pull: Vec<String>,
}

/// `stripe,telegram,...` as providers, or what is wrong.
fn pull_sources(sources: &[String]) -> anyhow::Result<Vec<Provider>> {
    let mut providers: Vec<Provider> = sources
        .iter()
        .map(|s| {
            s.trim()
                .parse::<Provider>()
                .map_err(|e| anyhow::anyhow!("--pull '{s}': {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    providers.sort_by_key(|p| p.as_str());
    providers.dedup();
    Ok(providers)
}

pub async fn create(
    store: &Store,
    config: &Config,
    name: &str,
    rate_limit: Option<String>,
    role: Role,
    grants: KeyGrants,
) -> anyhow::Result<()> {
    let KeyGrants { inbound_url, pull } = grants;
    // One name, one client: a managed key named like a bootstrap one would
    // see its messages and sign its callbacks with its secret.
    if is_bootstrap(config, name) {
        anyhow::bail!(
            "'{name}' is the name of a key in API_KEYS: choose another name (a name is one \
             client, whose messages and callbacks its keys share)"
        );
    }
    if let Some(quota) = &rate_limit {
        quota
            .parse::<common::rate::Quota>()
            .map_err(|e| anyhow::anyhow!("--rate-limit: {e}"))?;
    }
    if let Some(url) = &inbound_url {
        valid_inbound_url(config, url).map_err(|e| anyhow::anyhow!("--inbound-url {e}"))?;
    }
    let pull = pull_sources(&pull)?;
    let key = generate_key();
    let callback_secret = WebhookSecret::generate().to_whsec_string();
    let record = store
        .create_api_key_with_role(
            &NewApiKey {
                name: name.to_owned(),
                key_hash: hash_key(&key).to_vec(),
                key_prefix: key[..8].to_owned(),
                callback_secret: callback_secret.clone(),
                rate_limit,
            },
            role,
        )
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                anyhow::anyhow!("a key named '{name}' exists")
            }
            other => other.into(),
        })?;
    println!("name:            {}", record.name);
    println!("role:            {}", record.role);
    println!("api key:         {key}");
    println!("callback secret: {callback_secret}");
    if let Some(url) = &inbound_url {
        store.set_inbound_url(name, Some(url)).await?;
        println!("inbound url:     {url}");
    }
    if !pull.is_empty() {
        store.set_pull_sources(name, &pull).await?;
        let names: Vec<&str> = pull.iter().map(|p| p.as_str()).collect();
        println!("may pull:        {}", names.join(","));
    }
    println!("Store the key now: only its hash is kept.");
    Ok(())
}

/// `gateway keys set-pull NAME SOURCES|--clear`: the provider sources a
/// managed key may read with the pull API (gateways apply it within the key
/// cache's 10 seconds).
pub async fn set_pull(
    store: &Store,
    config: &Config,
    name: &str,
    sources: &[String],
) -> anyhow::Result<()> {
    if is_bootstrap(config, name) {
        anyhow::bail!(
            "'{name}' is a key of API_KEYS: give it the admin role to read provider events"
        );
    }
    let sources = pull_sources(sources)?;
    if !store.set_pull_sources(name, &sources).await? {
        anyhow::bail!("no managed key named '{name}'");
    }
    let names: Vec<&str> = sources.iter().map(|p| p.as_str()).collect();
    println!(
        "'{name}' may pull: {}",
        if names.is_empty() {
            "no provider source".to_owned()
        } else {
            names.join(",")
        }
    );
    Ok(())
}

/// An inbound URL is judged like a `callback_url`: see [`check_inbound_url`].
fn valid_inbound_url(config: &Config, url: &str) -> Result<(), String> {
    check_inbound_url(
        url,
        config.profile == Profile::Production,
        &config.callback_policy,
    )
}

/// `gateway keys set-inbound-url NAME URL|--clear`: where replies to a
/// managed key's messages go (workers read it when they route a reply).
pub async fn set_inbound_url(
    store: &Store,
    config: &Config,
    name: &str,
    url: Option<&str>,
) -> anyhow::Result<()> {
    if is_bootstrap(config, name) {
        anyhow::bail!("'{name}' is a key of API_KEYS: set its inbound URL in INBOUND_URLS");
    }
    if let Some(url) = url {
        valid_inbound_url(config, url).map_err(|e| anyhow::anyhow!("the URL {e}"))?;
    }
    if !store.set_inbound_url(name, url).await? {
        anyhow::bail!("no managed key named '{name}'");
    }
    match url {
        Some(url) => println!("replies to the messages of '{name}' go to {url}"),
        None => println!(
            "replies to the messages of '{name}' go to no URL (the pull API still has them)"
        ),
    }
    Ok(())
}

pub async fn list(store: &Store) -> anyhow::Result<()> {
    println!(
        "{:<24} {:<7} {:<10} {:<14} {:<26} {:<8} {:<20} revoked",
        "name", "role", "prefix", "rate limit", "created", "inbound", "pull"
    );
    for key in store.api_keys().await? {
        // Whether replies go to a URL, not the URL: it may carry a token.
        let inbound = if key.inbound_url.is_some() {
            "url"
        } else {
            "-"
        };
        let pull: Vec<&str> = key.pull_sources.iter().map(|p| p.as_str()).collect();
        println!(
            "{:<24} {:<7} {:<10} {:<14} {:<26} {:<8} {:<20} {}",
            key.name,
            key.role,
            key.key_prefix,
            key.rate_limit.unwrap_or_else(|| "default".into()),
            key.created_at.to_rfc3339(),
            inbound,
            if pull.is_empty() {
                "-".to_owned()
            } else {
                pull.join(",")
            },
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

/// The callback secrets of a key, bootstrap or managed.
async fn callback_secrets(
    store: &Store,
    config: &Config,
    name: &str,
) -> anyhow::Result<CallbackSecrets> {
    if is_bootstrap(config, name) {
        let keys = config.api_keys.iter().filter(|k| k.name == name);
        return Ok(CallbackSecrets::bootstrap(
            &config.callback_signing,
            name,
            keys.map(|k| &k.key),
        ));
    }
    let Some(stored) = store.callback_secrets(name).await? else {
        anyhow::bail!("no key named '{name}' (in API_KEYS or `gateway keys list`)");
    };
    CallbackSecrets::managed(
        &stored.callback_secret,
        stored.previous_callback_secret.as_deref(),
        stored.previous_callback_secret_until,
    )
    .map_err(|e| anyhow::anyhow!("the stored callback secret of '{name}': {e}"))
}

/// Says on stderr which other secrets sign too, and until when (never the
/// secrets themselves: the receiver needs only the current one).
fn describe_transitions(secrets: &CallbackSecrets) {
    for also in secrets.also_at(Utc::now()) {
        let until = also
            .until
            .map_or("until the operator ends it".to_owned(), |t| {
                format!("until {}", t.to_rfc3339())
            });
        eprintln!("also signing, {until}: {}", also.why.describe());
    }
}

/// `gateway keys secret NAME`: prints the key's current callback secret
/// (the one its receiver should verify with) on stdout, alone.
pub async fn secret(store: &Store, config: &Config, name: &str) -> anyhow::Result<()> {
    let secrets = callback_secrets(store, config, name).await?;
    println!("{}", secrets.current.to_whsec_string());
    describe_transitions(&secrets);
    Ok(())
}

/// `gateway keys rotate-secret NAME`: a new callback secret for a managed
/// key; the old one signs too for `transition`.
pub async fn rotate_secret(
    store: &Store,
    config: &Config,
    name: &str,
    transition: Duration,
) -> anyhow::Result<()> {
    if is_bootstrap(config, name) {
        anyhow::bail!(
            "'{name}' is a key of API_KEYS, whose callback secret is derived from \
             CALLBACK_SIGNING_KEY: rotate that (with CALLBACK_SIGNING_KEY_PREVIOUS, see the README)"
        );
    }
    let new_secret = WebhookSecret::generate().to_whsec_string();
    let Some(stored) = store
        .rotate_callback_secret(name, &new_secret, transition)
        .await?
    else {
        anyhow::bail!("no managed key named '{name}'");
    };
    println!("callback secret: {}", stored.callback_secret);
    match stored.previous_callback_secret_until {
        Some(until) => println!(
            "The previous secret also signs until {} (workers pick the change up within a \
             minute).",
            until.to_rfc3339()
        ),
        None => println!("The previous secret signs no more (within a minute)."),
    }
    Ok(())
}

/// `gateway tenants purge NAME`: deletes the client's data, printing how
/// many rows of each kind.
pub async fn purge_tenant(
    store: &Store,
    config: &Config,
    name: &str,
    dry_run: bool,
) -> anyhow::Result<TenantPurge> {
    let managed_active = store
        .api_keys()
        .await?
        .iter()
        .any(|k| k.name == name && k.revoked_at.is_none());
    if is_bootstrap(config, name) || managed_active {
        eprintln!(
            "note: '{name}' still has an active key, so messages it sends from now on are kept: \
             revoke it (gateway keys revoke, or remove it from API_KEYS) to stop that"
        );
    }
    let purged = store.purge_tenant(name, dry_run).await?;
    println!(
        "{} of tenant '{name}', in one transaction:",
        if dry_run { "would delete" } else { "deleted" }
    );
    for (what, count) in [
        ("messages", purged.messages),
        ("message events (timelines)", purged.message_events),
        ("status callbacks", purged.status_callbacks),
        ("callback attempts", purged.callback_attempts),
        ("idempotency records", purged.idempotency_records),
        ("webhook events", purged.webhook_events),
    ] {
        println!("  {what:<28} {count}");
    }
    Ok(purged)
}
