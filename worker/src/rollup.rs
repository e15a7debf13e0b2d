//! The dashboard's rollups (migrations/20261210100000_dashboard_rollups.sql):
//! every [`ROLLUP_INTERVAL`], the events committed since the last step are
//! folded into them ([`Store::roll_up_dashboard`]), step after step until
//! caught up, and rows older than the views show are pruned. Every worker
//! runs this loop: a step locks the rollups' watermark row with SKIP LOCKED,
//! so one worker folds and the others skip, and no lease is needed. Readers
//! add the events not yet folded in themselves, so a stopped loop makes the
//! status page slower (by the events behind, `dashboard_rollup_behind_events`),
//! never wrong.

use std::time::Duration;

use common::store::{ROLLUP_BATCH, Store};
use tokio_util::sync::CancellationToken;

/// Time between steps. A step folds the ids the previous one saw, so the
/// events readers add up themselves are about two intervals' worth (each
/// costs a reader about 4 µs, at any table size: bench/dashboard.sh).
pub const ROLLUP_INTERVAL: Duration = Duration::from_secs(1);
/// Steps between prunes of old rollup rows.
const PRUNE_EVERY: u32 = 3600;
/// Steps in a row at most before waiting for the next interval.
const MAX_STEPS: usize = 50;

/// Rolls up every [`ROLLUP_INTERVAL`] until `shutdown`.
pub async fn run(store: Store, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut interval = tokio::time::interval(ROLLUP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        if let Err(error) = catch_up(&store).await {
            tracing::warn!(%error, "dashboard rollup step failed");
        }
        if ticks.is_multiple_of(PRUNE_EVERY) {
            match store.prune_dashboard_rollups().await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned old dashboard rollup rows"),
                Err(error) => tracing::warn!(%error, "dashboard rollup prune failed"),
            }
        }
        ticks = ticks.wrapping_add(1);
    }
}

/// Steps until a step folds less than a full batch (or another worker holds
/// the watermark); records how far behind the rollups are.
pub async fn catch_up(store: &Store) -> Result<(), sqlx::Error> {
    for _ in 0..MAX_STEPS {
        let Some(step) = store.roll_up_dashboard(ROLLUP_BATCH).await? else {
            return Ok(());
        };
        metrics::gauge!(common::metrics::DASHBOARD_ROLLUP_BEHIND).set(step.behind as f64);
        if step.folded < ROLLUP_BATCH {
            return Ok(());
        }
    }
    Ok(())
}
