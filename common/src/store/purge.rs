//! Retention of the webhook inbox and of the status-callback log: finished
//! rows past their retention go, oldest first, in chunks.
//!
//! Neither table has an index on a time: each would cost a few hundred
//! bytes of WAL per message (an entry at the insert, another at the finish,
//! and a finish that is no longer HOT), and a BRIN index on the time of
//! writing stops pruning once deleted pages are filled again by new rows
//! (a page range's summary only ever widens, so every range would match).
//! Both tables' ids grow with the time a row was written, so a pass walks
//! the primary key instead: up to the first row written inside the
//! retention (found once per pass), from where its previous chunk ended. A
//! pass reads the rows older than the retention, which are what it deletes
//! and the few it must keep (parked events, callbacks still retrying).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Store;
use super::inbox::interval;

/// A table whose finished rows go after their retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purged {
    /// `processed` and `not_applicable` events, received and finished
    /// before the cutoff; parked events stay for an operator.
    Inbox,
    /// `delivered` and `failed` callbacks, queued and finished before the
    /// cutoff, with their attempts (the foreign key cascades).
    Callbacks,
}

impl Purged {
    /// The table, when a row was written, and the condition of a row that
    /// finished before the cutoff `$1`.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Purged::Inbox => (
                "webhook_inbox",
                "received_at",
                "state IN ('processed', 'not_applicable') AND processed_at < $1",
            ),
            Purged::Callbacks => (
                "status_callbacks",
                "created_at",
                "state IN ('delivered', 'failed') AND completed_at < $1",
            ),
        }
    }
}

/// Where a purge pass stops: below the first row written at or after the
/// cutoff (`None`: every row is older).
#[derive(Debug, Clone, Copy)]
pub struct PurgeBound {
    cutoff: DateTime<Utc>,
    below: Option<i64>,
}

impl Store {
    /// The bound of a pass deleting rows of `purged` finished more than
    /// `older_than` ago (by the database's clock, as every row's times).
    pub async fn purge_bound(
        &self,
        purged: Purged,
        older_than: Duration,
    ) -> Result<PurgeBound, sqlx::Error> {
        let (table, written, _) = purged.columns();
        let (cutoff, below) = sqlx::query_as(&format!(
            "WITH c AS (SELECT now() - $1::interval AS cutoff)
             SELECT cutoff, (SELECT id FROM {table} WHERE {written} >= cutoff ORDER BY id LIMIT 1) FROM c"
        ))
        .bind(interval(older_than))
        .fetch_one(&self.pool)
        .await?;
        Ok(PurgeBound { cutoff, below })
    }

    /// Deletes up to `limit` finished rows of `purged` past the bound's
    /// cutoff, with ids above `after` and below the bound, in id order.
    /// Returns how many, and the id the next chunk starts after.
    pub async fn purge_chunk(
        &self,
        purged: Purged,
        bound: PurgeBound,
        after: i64,
        limit: i64,
    ) -> Result<(u64, i64), sqlx::Error> {
        let (table, written, finished) = purged.columns();
        let (deleted, last): (i64, Option<i64>) = sqlx::query_as(&format!(
            "WITH deleted AS (
               DELETE FROM {table} WHERE id IN (
                 SELECT id FROM {table}
                  WHERE id > $2 AND ($3::bigint IS NULL OR id < $3)
                    AND {written} < $1 AND {finished}
                  ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
               RETURNING id)
             SELECT count(*), max(id) FROM deleted"
        ))
        .bind(bound.cutoff)
        .bind(after)
        .bind(bound.below)
        .bind(limit)
        .fetch_one(&self.pool)
        .await?;
        Ok((deleted as u64, last.unwrap_or(after)))
    }
}
