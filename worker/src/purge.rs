//! Retention of the inbox and of status callbacks: every worker deletes, every
//! ten minutes, finished inbox events older than `INBOX_RETENTION_DAYS` and
//! finished status callbacks older than `CALLBACK_RETENTION_DAYS`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::config::Config;
use common::store::{Purged, Store};

use crate::batches::in_batches;

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
    Ok(PurgeReport {
        inbox_events: purge_table(store, Purged::Inbox, config.inbox.retention).await?,
        callbacks: purge_table(store, Purged::Callbacks, config.callbacks.retention).await?,
    })
}

/// One table's pass, oldest rows first (see `common::store::Purged`): at
/// most [`PURGE_MAX_CHUNKS`] chunks, each starting where the last ended.
async fn purge_table(
    store: &Store,
    purged: Purged,
    retention: Option<Duration>,
) -> Result<u64, sqlx::Error> {
    let Some(retention) = retention else {
        return Ok(0);
    };
    let bound = store.purge_bound(purged, retention).await?;
    // Where the last chunk ended, for the next to start after.
    let after = &AtomicI64::new(0);
    in_batches(PURGE_MAX_CHUNKS, PURGE_CHUNK as u64, move || async move {
        let (deleted, last) = store
            .purge_chunk(purged, bound, after.load(Ordering::Relaxed), PURGE_CHUNK)
            .await?;
        after.store(last, Ordering::Relaxed);
        Ok(deleted)
    })
    .await
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
