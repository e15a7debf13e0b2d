//! The partitions of `messages` and `message_events`
//! (migrations/20261211100000_partitioned_messages.sql): a week of message
//! ids each, the two tables' partitions of a week created and dropped
//! together. Created ahead ([`Store::ensure_message_partitions`]) and
//! dropped past `MESSAGE_RETENTION_DAYS` ([`Store::drop_message_partition`])
//! by the worker's housekeeping (worker/src/retention.rs), never by a
//! request.
//!
//! A week is dropped only when none of its messages is still to be sent
//! (`queued`, `scheduled`, `sending`: Sent does not have them, so removing
//! them would lose them) nor changed its status since the cutoff while not
//! finished (`accepted`, `sent`: Sent may still report on them). Otherwise
//! the whole week is held, and reported ([`Holders`]); such rows are rare
//! (a message scheduled months ahead, one stuck in `sending`), and a held
//! week costs disk, never a lost message.

use chrono::{DateTime, Utc};

use super::Store;

/// How far ahead weeks are created: a worker stopped for less than this
/// never leaves an accept without its partition.
pub const PARTITIONS_AHEAD_WEEKS: i32 = 8;

/// Key of the advisory lock that serializes partition maintenance between
/// workers.
const MAINTENANCE_LOCK: i64 = 0x6d73_6770_6172_7473; // "msgparts"

/// How long creating partitions waits for its lock on the parents (SHARE
/// UPDATE EXCLUSIVE: only DDL, a manual VACUUM or ANALYZE of a parent hold
/// one that conflicts) before giving up until the next pass.
const LOCK_TIMEOUT: &str = "5s";

/// One week of messages (or, with no lower bound, the tables as they were
/// before partitioning, `messages_legacy`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MessagePartition {
    /// The `messages` partition.
    pub name: String,
    /// The `message_events` partition of the same ids.
    pub events: String,
    /// The lowest id in it (a ULID time prefix); `None`: every id below `upper_id`.
    pub lower_id: Option<String>,
    /// The ULID time prefix every id in it is below.
    pub upper_id: String,
    /// The time `upper_id` stands for: every message in it was created before.
    pub upper_at: DateTime<Utc>,
}

/// The messages that keep a week from being dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Holders {
    /// `queued`, `sending`, or `scheduled` by the gateway: not handed to
    /// Sent yet.
    pub unsent: i64,
    /// Handed to Sent and unfinished (`accepted`, `scheduled` by Sent,
    /// `sent`) with a status change after the cutoff. Counted only in a
    /// week no unsent message holds: see [`HOLDERS`].
    pub recent: i64,
}

impl Holders {
    pub fn any(&self) -> bool {
        self.unsent + self.recent > 0
    }
}

/// What [`Store::drop_message_partition`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    /// Dropped, with this many messages.
    Dropped { messages: i64 },
    /// Kept: some of its messages may not go yet.
    Held(Holders),
    /// Another worker is at it: the next pass tries again.
    Busy,
}

/// The messages of a partition that hold it, `$1` being the cutoff.
///
/// No index names `status` (status changes stay HOT), but every unsent
/// message is in `messages_unsent` (`accepted_at IS NULL AND failed_at IS
/// NULL`, which `status` implies: the reconciler reads it the same way, and
/// a re-drive clears both), so a week held by a stuck message costs a probe
/// of that small index each pass. Only a week with no unsent message is
/// read whole, for its recent changes: when it is about to be dropped, or
/// while a late status change holds it. (The `CASE` runs that scan only then.)
const HOLDERS: &str = "WITH unsent AS (
                         SELECT count(*) AS n FROM {messages}
                          WHERE accepted_at IS NULL AND failed_at IS NULL
                            AND status IN ('queued', 'scheduled', 'sending'))
                       SELECT n AS unsent,
                              CASE WHEN n > 0 THEN 0 ELSE
                                (SELECT count(*) FROM {messages}
                                  WHERE status IN ('accepted', 'scheduled', 'sent') AND updated_at > $1)
                              END AS recent
                         FROM unsent";

impl Store {
    /// Creates the weeks after the last one up to [`PARTITIONS_AHEAD_WEEKS`]
    /// from now; returns how many it created. Safe from every worker at
    /// once (they take turns); a lock on the parents not granted within
    /// [`LOCK_TIMEOUT`] is an error, and the next pass tries again.
    pub async fn ensure_message_partitions(&self) -> Result<i32, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MAINTENANCE_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
        let created: i32 = sqlx::query_scalar(
            "SELECT message_partitions_ensure(now() + make_interval(weeks => $1))",
        )
        .bind(PARTITIONS_AHEAD_WEEKS)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    /// The partitions of `messages`, oldest first.
    pub async fn message_partitions(&self) -> Result<Vec<MessagePartition>, sqlx::Error> {
        sqlx::query_as(
            "SELECT name, events, lower_id, upper_id, upper_at FROM message_partitions()",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// The messages of `partition` that keep it past `cutoff` ([`HOLDERS`]).
    pub async fn partition_holders(
        &self,
        partition: &MessagePartition,
        cutoff: DateTime<Utc>,
    ) -> Result<Holders, sqlx::Error> {
        sqlx::query_as(&holders_of(&partition.name))
            .bind(cutoff)
            .fetch_one(&self.pool)
            .await
    }

    /// Deletes up to `limit` status callbacks (their attempts cascade) of
    /// the messages of `partition`, through `status_callbacks_message`;
    /// returns how many. Retention calls it in chunks before it drops the
    /// week, so that the drop's own transaction has next to nothing left to
    /// delete. Most are long gone by then (`CALLBACK_RETENTION_DAYS`).
    pub async fn delete_partition_callbacks(
        &self,
        partition: &MessagePartition,
        limit: i64,
    ) -> Result<u64, sqlx::Error> {
        let deleted = sqlx::query(
            "DELETE FROM status_callbacks WHERE id IN (
               SELECT id FROM status_callbacks
                WHERE message_id < $1 AND ($2::text IS NULL OR message_id >= $2)
                LIMIT $3)",
        )
        .bind(&partition.upper_id)
        .bind(&partition.lower_id)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    /// Drops a week of messages with their timelines and callbacks, if every
    /// message in it was created before `cutoff` and none [`Holders`] it,
    /// and takes its messages out of the dashboard's status counts (what the
    /// `messages_dashboard_forget` trigger does for a deleted row, which a
    /// dropped table does not fire).
    ///
    /// The week is first detached from both parents with `DETACH PARTITION
    /// ... CONCURRENTLY` (SHARE UPDATE EXCLUSIVE: no accept, status change
    /// or read waits), then, no longer reachable, counted and dropped at
    /// leisure. The rollups' watermark is held meanwhile (their step skips
    /// it), so the status each message is counted in is known exactly.
    pub async fn drop_message_partition(
        &self,
        partition: &MessagePartition,
        cutoff: DateTime<Utc>,
    ) -> Result<Retirement, sqlx::Error> {
        if partition.upper_at > cutoff {
            return Ok(Retirement::Held(Holders::default()));
        }
        let Some(mut tx) = self.maintenance().await? else {
            return Ok(Retirement::Busy);
        };
        let holders = self.partition_holders(partition, cutoff).await?;
        if holders.any() {
            return Ok(Retirement::Held(holders));
        }
        self.detach("messages", &partition.name).await?;
        self.detach("message_events", &partition.events).await?;
        // Nothing reaches the week any more; a status change that got in
        // before the detach may have made it held again (a late `sent`).
        let holders: Holders = sqlx::query_as(&holders_of(&partition.name))
            .bind(cutoff)
            .fetch_one(&mut *tx)
            .await?;
        if holders.any() {
            let bounds = match &partition.lower_id {
                Some(lower) => format!("FROM ('{lower}') TO ('{}')", partition.upper_id),
                None => format!("FROM (MINVALUE) TO ('{}')", partition.upper_id),
            };
            for (parent, child) in [
                ("messages", &partition.name),
                ("message_events", &partition.events),
            ] {
                sqlx::query(&format!(
                    "ALTER TABLE {parent} ATTACH PARTITION {} FOR VALUES {bounds}",
                    quote(child)
                ))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(Retirement::Held(holders));
        }
        let messages = drop_detached(&mut tx, &partition.name, &partition.events).await?;
        tx.commit().await?;
        Ok(Retirement::Dropped { messages })
    }

    /// Finishes the drops a stopped worker left half done: a detach left
    /// pending is finalized, and a week's tables already detached are
    /// counted out and dropped. Returns the weeks dropped.
    pub async fn finish_interrupted_drops(&self) -> Result<Vec<String>, sqlx::Error> {
        let pending: Vec<(String, String)> = sqlx::query_as(
            "SELECT p.relname::text, c.relname::text
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
              WHERE i.inhdetachpending AND p.relname IN ('messages', 'message_events')",
        )
        .fetch_all(&self.pool)
        .await?;
        for (parent, child) in pending {
            sqlx::query(&format!(
                "ALTER TABLE {parent} DETACH PARTITION {} FINALIZE",
                quote(&child)
            ))
            .execute(&self.pool)
            .await?;
        }
        let detached: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_class
              WHERE relkind = 'r' AND NOT relispartition AND relnamespace = 'public'::regnamespace
                AND relname ~ '^messages_(p[0-9]{8}|legacy)$'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut dropped = Vec::new();
        for name in detached {
            let events = name.replacen("messages_", "message_events_", 1);
            let Some(mut tx) = self.maintenance().await? else {
                break;
            };
            let attached: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1 AND relispartition)",
            )
            .bind(&events)
            .fetch_one(&mut *tx)
            .await?;
            if attached {
                self.detach("message_events", &events).await?;
            }
            drop_detached(&mut tx, &name, &events).await?;
            tx.commit().await?;
            dropped.push(name);
        }
        Ok(dropped)
    }

    /// A transaction holding the advisory lock of partition maintenance and
    /// the rollups' watermark (their step skips it while it is held); `None`
    /// when another worker is at it.
    async fn maintenance(
        &self,
    ) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(MAINTENANCE_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !ours {
            return Ok(None);
        }
        sqlx::query("SELECT done_id FROM dashboard_rollup_state FOR SHARE")
            .execute(&mut *tx)
            .await?;
        Ok(Some(tx))
    }

    /// `DETACH PARTITION ... CONCURRENTLY`, which may not run in a
    /// transaction: on a connection of its own. It waits for the queries
    /// that use the parent to end, blocking none.
    async fn detach(&self, parent: &str, child: &str) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "ALTER TABLE {parent} DETACH PARTITION {} CONCURRENTLY",
            quote(child)
        ))
        .execute(&self.pool)
        .await
        .map(|_| ())
    }
}

/// Counts a detached week's messages out of the dashboard's status counts,
/// deletes their callbacks left, and drops its two tables; returns how many
/// messages it held. `tx` holds the rollups' watermark.
///
/// The status each message is counted in is that of its last applied event
/// at or below the watermark (dashboard_forget's rule): for the messages
/// with no applied event after it, nearly all of them, that is their status
/// (the rollups count each message in its status), read in one pass of the
/// table; the few others look it up.
async fn drop_detached(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    name: &str,
    events: &str,
) -> Result<i64, sqlx::Error> {
    let (messages, events) = (quote(name), quote(events));
    let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {messages}"))
        .fetch_one(&mut **tx)
        .await?;
    sqlx::query(&format!(
        "WITH done AS (
           SELECT done_id FROM dashboard_rollup_state
         ), late AS (
           SELECT DISTINCT e.message_id
             FROM {events} e, done
            WHERE e.id > done.done_id AND e.applied AND dashboard_status_of(e.status) IS NOT NULL
         ), counted AS (
           SELECT m.client, m.status
             FROM {messages} m
            WHERE EXISTS (SELECT 1 FROM done)
              AND NOT EXISTS (SELECT 1 FROM late WHERE late.message_id = m.id)
           UNION ALL
           SELECT m.client, c.status
             FROM late
             JOIN {messages} m ON m.id = late.message_id
            CROSS JOIN done
            CROSS JOIN LATERAL (
                  SELECT dashboard_status_of(e.status) AS status
                    FROM {events} e
                   WHERE e.message_id = m.id AND e.id <= done.done_id AND e.applied
                     AND dashboard_status_of(e.status) IS NOT NULL
                   ORDER BY e.id DESC
                   LIMIT 1) c
         ), totals AS (
           SELECT coalesce(client, '') AS client, status, count(*) AS n
             FROM counted
            GROUP BY GROUPING SETS ((client, status), (status))
         )
         UPDATE dashboard_status_counts d SET messages = d.messages - t.n
           FROM totals t
          WHERE d.client = t.client AND d.status = t.status"
    ))
    .execute(&mut **tx)
    .await?;
    sqlx::query(&format!(
        "DELETE FROM status_callbacks WHERE message_id IN (SELECT id FROM {messages})"
    ))
    .execute(&mut **tx)
    .await?;
    sqlx::query(&format!("DROP TABLE {events}, {messages}"))
        .execute(&mut **tx)
        .await?;
    Ok(count)
}

fn holders_of(messages: &str) -> String {
    HOLDERS.replace("{messages}", &quote(messages))
}

/// A table name as an SQL identifier (the names come from the catalog).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
