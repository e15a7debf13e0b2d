//! Retention of the inbox and of status callbacks: every worker deletes, every
//! ten minutes, finished inbox events older than `INBOX_RETENTION_DAYS` and
//! finished status callbacks older than `CALLBACK_RETENTION_DAYS`.

use std::time::Duration;

use common::config::Config;
use common::store::Store;

/// How often a worker deletes finished rows past their retention.
pub(crate) const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// Rows deleted per statement, and statements per pass at most: a large
/// backlog (retention just shortened) is worked off over several passes.
pub(crate) const PURGE_CHUNK: i64 = 5_000;
const PURGE_MAX_CHUNKS: usize = 100;

/// What one purge pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub inbox_events: u64,
    pub callbacks: u64,
}

/// Deletes finished inbox events older than `INBOX_RETENTION_DAYS` and
/// finished status callbacks (with their attempts) older than
/// `CALLBACK_RETENTION_DAYS`. Parked events and pending callbacks are never
/// deleted. Safe to run from every worker at once.
pub async fn purge(store: &Store, config: &Config) -> Result<PurgeReport, sqlx::Error> {
    let mut report = PurgeReport::default();
    if let Some(retention) = config.inbox.retention {
        for _ in 0..PURGE_MAX_CHUNKS {
            let deleted = store.purge_inbox(retention, PURGE_CHUNK).await?;
            report.inbox_events += deleted;
            if deleted < PURGE_CHUNK as u64 {
                break;
            }
        }
    }
    if let Some(retention) = config.callbacks.retention {
        for _ in 0..PURGE_MAX_CHUNKS {
            let deleted = store.purge_callbacks(retention, PURGE_CHUNK).await?;
            report.callbacks += deleted;
            if deleted < PURGE_CHUNK as u64 {
                break;
            }
        }
    }
    Ok(report)
}

/// One [`purge`] pass, logged; a failed pass waits for the next one.
pub(crate) async fn purge_and_log(store: &Store, config: &Config) {
    match purge(store, config).await {
        Ok(report) if report != PurgeReport::default() => {
            tracing::info!(?report, "purged finished rows past their retention")
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "purge of finished rows failed"),
    }
}
