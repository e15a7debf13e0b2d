//! Start-up of a process that needs Postgres and Redis: wait a while for
//! them (in a compose stack they start together), migrate, connect.

use std::future::Future;
use std::time::Duration;

use crate::config::Config;
use crate::redis_conn::Redis;
use crate::store::Store;

/// How long a process waits for its dependencies before giving up.
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// Connects to Postgres (migrating it) and Redis, retrying each for up to
/// [`STARTUP_WAIT`]. The error names the variable to check.
pub async fn connect(config: &Config) -> anyhow::Result<(Store, Redis)> {
    let direct = config.database_direct_url.as_ref().map(|url| url.expose());
    let open = || -> anyhow::Result<Store> {
        Store::connect_lazy(
            config.database_url.expose(),
            config.database_max_connections,
        )
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?
        .with_direct_url(direct)
        // Not waited for: a replica that is down fails only its readers (503).
        .with_read_url(config.database_read_url.as_ref().map(|url| url.expose()))
        .map_err(|e| anyhow::anyhow!("DATABASE_READ_URL: {e}"))
    };
    // The schema is checked (and migrated) through a pool of its own, closed
    // before the process's pool opens its first session. A migration's
    // database defaults (`plan_cache_mode`, migrations/20261209000030) reach
    // only sessions started after it: a session kept from before kept the
    // generic plans that setting exists to prevent (a gateway's inbox insert
    // planned on an empty inbox scanned the whole inbox for every batch,
    // from a fresh install until the gateway restarted).
    let before = open()?;
    retry("postgres (DATABASE_URL)", || async {
        // A pooler may know only the databases it serves: create through Postgres.
        Store::ensure_database(direct.unwrap_or(config.database_url.expose())).await?;
        before.ping().await
    })
    .await?;
    if config.migrate_on_start {
        // Once reachable, a failed migration is not worth waiting out.
        before
            .migrate()
            .await
            .map_err(|e| anyhow::anyhow!("migrating the database (DATABASE_URL): {e}"))?;
    } else {
        retry(
            "the schema (MIGRATE_ON_START=false: run `gateway migrate` first)",
            || async {
                match before.schema_is_current().await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("migrations not applied yet".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
    }
    before.pool().close().await;
    let store = open()?;
    let redis = retry(&format!("redis ({})", config.redis.variable()), || {
        crate::redis_conn::open(&config.redis, &config.redis_tls)
    })
    .await?;
    Ok((store, redis))
}

/// Runs `attempt` until it succeeds, once a second for up to [`STARTUP_WAIT`].
pub async fn retry<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "waiting for {what}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => anyhow::bail!("{what} unreachable: {e}"),
        }
    }
}
