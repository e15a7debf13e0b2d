//! The reconciler: Postgres is the record of what must be sent, Redis only
//! the means. Every `reconcile_interval`, messages that should have a job but
//! have shown no progress for `reconcile_after` are enqueued again. That
//! covers a gateway that stored a message but failed to enqueue it, a retry
//! whose job was lost, and Redis losing its data. A message's first job has
//! the message id as task id, so a job still in Redis is not duplicated.
//!
//! One worker of the fleet reconciles per interval (a Redis lease); the pass
//! also frees finished apalis tasks and expired idempotency records.

use std::sync::Arc;
use std::time::Duration;

use common::config::Config;
use common::queue::{SendJob, SendQueue};
use common::store::{Store, Unsent};
use tokio_util::sync::CancellationToken;

use crate::batches::in_batches;

/// Stalled messages handled per pass at most.
const MAX_STALLED: i64 = 1000;
/// Finished tasks removed per Redis call, and calls per pass at most.
const PRUNE_BATCH: usize = 1000;
const MAX_PRUNE_CALLS: usize = 1000;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub enqueued: usize,
    pub pruned_tasks: usize,
    pub purged_idempotency: u64,
}

/// Reconciles every `config.worker.reconcile_interval` until `shutdown`.
pub async fn run(
    store: Store,
    queue: SendQueue,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut interval = tokio::time::interval(config.worker.reconcile_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let owner = ulid::Ulid::generate().to_string();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        match take_lease(&queue, &config, &owner).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, "reconciler: redis unavailable; skipping this pass");
                continue;
            }
        }
        match pass(&store, &queue, config.worker.reconcile_after).await {
            Ok(report) if report != PassReport::default() => tracing::info!(?report, "reconciled"),
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %format!("{error:#}"), "reconcile pass failed"),
        }
    }
}

/// One pass: free finished tasks, enqueue stalled messages, purge idempotency records.
pub async fn pass(
    store: &Store,
    queue: &SendQueue,
    reconcile_after: Duration,
) -> anyhow::Result<PassReport> {
    // First free finished task ids, so that a stalled message whose first
    // task is long done can be enqueued under its id again.
    let pruned_tasks = in_batches(MAX_PRUNE_CALLS, PRUNE_BATCH, move || async move {
        Ok::<_, anyhow::Error>(
            queue.prune_done(PRUNE_BATCH).await? + queue.prune_dead(PRUNE_BATCH).await?,
        )
    })
    .await?;
    let stalled = store.stalled_messages(reconcile_after, MAX_STALLED).await?;
    let enqueued = stalled.len();
    if !stalled.is_empty() {
        let jobs: Vec<SendJob> = stalled.into_iter().map(Unsent::job).collect();
        for chunk in jobs.chunks(200) {
            queue.enqueue(chunk).await?;
        }
        tracing::info!(count = jobs.len(), "re-enqueued stalled messages");
    }
    let purged_idempotency = in_batches(MAX_PRUNE_CALLS, PRUNE_BATCH as u64, || {
        store.purge_expired_idempotency(PRUNE_BATCH as i64)
    })
    .await?;
    Ok(PassReport {
        enqueued,
        pruned_tasks,
        purged_idempotency,
    })
}

/// Only one worker reconciles per interval: a lease in Redis that expires on its own.
async fn take_lease(
    queue: &SendQueue,
    config: &Config,
    owner: &str,
) -> Result<bool, redis::RedisError> {
    let lease = config
        .worker
        .reconcile_interval
        .saturating_sub(Duration::from_millis(100))
        .max(Duration::from_millis(100));
    let taken: Option<String> = redis::cmd("SET")
        .arg(format!("{}:reconcile:lease", config.redis_prefix))
        .arg(owner)
        .arg("NX")
        .arg("PX")
        .arg(lease.as_millis() as u64)
        .query_async(&mut queue.connection())
        .await?;
    Ok(taken.is_some())
}
