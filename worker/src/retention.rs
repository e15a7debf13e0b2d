//! Retention of messages (`MESSAGE_RETENTION_DAYS`) and the partitions that
//! make it cheap (migrations/20261211100000_partitioned_messages.sql,
//! common/src/store/partitions.rs). At the worker's start and every
//! [`RETENTION_INTERVAL`], every worker:
//! - creates the weeks of partitions ahead ([`PARTITIONS_AHEAD_WEEKS`]), so
//!   an accept never lacks one (`PARTITIONS_AHEAD_WEEKS`);
//! - drops each week whose messages were all created more than
//!   `MESSAGE_RETENTION_DAYS` ago, with their timelines and callbacks, as
//!   whole tables (no row-by-row delete), unless a message in it is not yet
//!   handed to Sent (`queued`, `sending`, `scheduled` by the gateway) or
//!   changed status since the cutoff without finishing (`accepted`,
//!   `scheduled` by Sent, `sent`): such a week is held, whole, until it has
//!   none, and reported (log and gauges).
//!
//! Workers take turns through an advisory lock. Neither creating nor
//! dropping a week takes a lock an accept, a status change or a read waits
//! for: weeks are attached, and detached concurrently, then dropped.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::config::Config;
use common::store::{Holders, MessagePartition, Retirement, Store};
use tokio_util::sync::CancellationToken;

// Callbacks are deleted before a week is dropped, as many per statement as
// the other purges delete.
use crate::purge::PURGE_CHUNK;

/// Time between passes. Partitions are created weeks ahead, and a week
/// becomes droppable once a week: an hour is plenty.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// After a failed pass, the next one.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Weeks of messages dropped.
pub const PARTITIONS_DROPPED: &str = "worker_message_partitions_dropped_total";
/// Weeks past retention kept because of the messages in them.
pub const PARTITIONS_HELD: &str = "worker_message_partitions_held";
/// The messages holding them, `{reason="unsent|recent"}` (recent ones are
/// counted only in weeks no unsent message holds: see `Holders`).
pub const PARTITIONS_HELD_MESSAGES: &str = "worker_message_partitions_held_messages";
/// Weeks of partitions created after the current one.
pub const PARTITIONS_AHEAD: &str = "worker_message_partitions_ahead";

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Weeks created ahead.
    pub created: i32,
    /// Whole weeks of partitions after now.
    pub ahead_weeks: i64,
    /// Weeks dropped, with their messages (-1: a drop a stopped worker
    /// left half done, finished).
    pub dropped: Vec<(String, i64)>,
    /// Weeks kept past retention, and by what.
    pub held: Vec<(String, Holders)>,
    /// Weeks another worker was dropping: the next pass looks again.
    pub busy: Vec<String>,
}

/// Runs a pass at start and every [`RETENTION_INTERVAL`] until `shutdown`;
/// a failed pass (Postgres down at start) is tried again after
/// [`RETRY_AFTER`].
pub async fn run(
    store: Store,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let wait = match retain(&store, config.worker.message_retention, Utc::now()).await {
            Ok(report) => {
                record(&report);
                RETENTION_INTERVAL
            }
            Err(error) => {
                tracing::warn!(%error, "message partition maintenance failed");
                RETRY_AFTER
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass at `now`: creates the weeks ahead, then drops the weeks past
/// `retention` (none with `None`) that nothing holds.
pub async fn retain(
    store: &Store,
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<RetentionReport, sqlx::Error> {
    let mut report = RetentionReport {
        created: store.ensure_message_partitions().await?,
        ..RetentionReport::default()
    };
    for name in store.finish_interrupted_drops().await? {
        report.dropped.push((name, -1));
    }
    let partitions = store.message_partitions().await?;
    report.ahead_weeks = partitions
        .last()
        .map_or(0, |p| (p.upper_at - now).num_weeks().max(0));
    let Some(retention) = retention else {
        return Ok(report);
    };
    let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    for partition in partitions {
        if partition.upper_at > cutoff {
            break;
        }
        match retire(store, &partition, cutoff).await? {
            Retirement::Dropped { messages } => report.dropped.push((partition.name, messages)),
            Retirement::Held(holders) => report.held.push((partition.name, holders)),
            Retirement::Busy => report.busy.push(partition.name),
        }
    }
    Ok(report)
}

/// Drops one week past the cutoff unless held: its callbacks first, in
/// chunks, then the week in one short transaction.
async fn retire(
    store: &Store,
    partition: &MessagePartition,
    cutoff: DateTime<Utc>,
) -> Result<Retirement, sqlx::Error> {
    let holders = store.partition_holders(partition, cutoff).await?;
    if holders.any() {
        return Ok(Retirement::Held(holders));
    }
    while store
        .delete_partition_callbacks(partition, PURGE_CHUNK)
        .await?
        == PURGE_CHUNK as u64
    {}
    store.drop_message_partition(partition, cutoff).await
}

fn record(report: &RetentionReport) {
    if report.created > 0 {
        tracing::info!(weeks = report.created, "created message partitions ahead");
    }
    metrics::gauge!(PARTITIONS_AHEAD).set(report.ahead_weeks as f64);
    for (partition, messages) in &report.dropped {
        tracing::info!(
            partition,
            messages,
            "dropped a week of messages past MESSAGE_RETENTION_DAYS"
        );
        metrics::counter!(PARTITIONS_DROPPED).increment(1);
    }
    for (partition, holders) in &report.held {
        tracing::warn!(
            partition,
            unsent = holders.unsent,
            recent = holders.recent,
            "a week of messages past MESSAGE_RETENTION_DAYS is held: some of its messages are not yet \
             handed to Sent (unsent) or still changing (recent)"
        );
    }
    for partition in &report.busy {
        tracing::info!(
            partition,
            "a week of messages could not be locked in time; next pass retries"
        );
    }
    metrics::gauge!(PARTITIONS_HELD).set(report.held.len() as f64);
    let sum = |f: fn(&Holders) -> i64| report.held.iter().map(|(_, h)| f(h)).sum::<i64>() as f64;
    metrics::gauge!(PARTITIONS_HELD_MESSAGES, "reason" => "unsent").set(sum(|h| h.unsent));
    metrics::gauge!(PARTITIONS_HELD_MESSAGES, "reason" => "recent").set(sum(|h| h.recent));
}

/// The retention metrics' HELP texts, and the counter at 0 from the start.
pub(crate) fn describe() {
    metrics::describe_counter!(
        PARTITIONS_DROPPED,
        "Weeks of messages dropped past MESSAGE_RETENTION_DAYS"
    );
    metrics::describe_gauge!(
        PARTITIONS_HELD,
        "Weeks of messages past MESSAGE_RETENTION_DAYS kept because some of their messages may not go yet"
    );
    metrics::describe_gauge!(
        PARTITIONS_HELD_MESSAGES,
        "Messages holding those weeks: unsent (not handed to Sent) or recent (a status change since the cutoff)"
    );
    metrics::describe_gauge!(
        PARTITIONS_AHEAD,
        "Whole weeks of message partitions created ahead of now"
    );
    metrics::counter!(PARTITIONS_DROPPED).increment(0);
}
