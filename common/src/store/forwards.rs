//! Forwarding of verified provider events (Stripe, Telegram) to the
//! operator's own services: one `webhook_forwards` row per inbox event and
//! destination, written by the inbox processor, delivered by the worker.
//!
//! Claims are leases, as for callbacks: a claimed row stays `pending` with
//! `next_attempt_at` pushed past the lease and `attempts` bumped, and the
//! statement commits before any HTTP call. A destination's rows that carry
//! the provider's order (`order_key`, Telegram's `update_id`) go out one at a
//! time in that order: only the pending one with the lowest key is
//! claimable, and a `dead` row no longer holds the others back. Rows without
//! one (Stripe promises no order) go out concurrently.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Store;
use super::inbox::interval;
use crate::domain::Provider;

/// A forward to create: this inbox event goes to this destination.
#[derive(Debug, Clone)]
pub struct NewForward {
    pub inbox_id: i64,
    pub source: Provider,
    pub destination: String,
    pub order_key: Option<i64>,
}

/// A claimed forward, with what the request needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ForwardDelivery {
    pub id: i64,
    pub webhook_id: String,
    pub source: Provider,
    pub destination: String,
    pub order_key: Option<i64>,
    /// Attempts including this one; also the claim's fencing token.
    pub attempts: i32,
    /// The provider's body, byte for byte, and the headers stored with it.
    pub body: Vec<u8>,
    pub headers: serde_json::Value,
}

/// A forward as operators and tests see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ForwardRecord {
    pub id: i64,
    pub inbox_id: i64,
    pub source: Provider,
    pub destination: String,
    pub webhook_id: String,
    pub order_key: Option<i64>,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ForwardAttemptRecord {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
}

/// What happened to the row after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ForwardNext {
    Delivered,
    RetryAt(DateTime<Utc>),
    /// Attempts exhausted, or refused by the outbound policy: dead-lettered.
    Dead,
}

/// One attempt's outcome, to record.
#[derive(Debug, Clone)]
pub struct ForwardAttempt {
    pub id: i64,
    /// The claim's `attempts`.
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub next: ForwardNext,
}

/// Per source and destination, what the metrics and the dashboard show.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ForwardBacklog {
    pub source: Provider,
    pub destination: String,
    /// Pending rows (due, leased or waiting for a retry).
    pub pending: i64,
    /// Pending rows whose last attempt failed.
    pub failing: i64,
    pub dead: i64,
    /// Age of the oldest pending row, in seconds (0 when none).
    pub oldest_pending_secs: f64,
}

const RECORD_COLUMNS: &str =
    "id, inbox_id, source, destination, webhook_id, order_key, state, attempts,
    next_attempt_at, last_status_code, last_error, created_at, completed_at";

impl Store {
    /// Creates forwards, once each: an event processed twice (its inbox
    /// lease expired mid-way) does not forward twice. Returns the source
    /// and destination of each new row. Workers are woken by the
    /// `webhook_forwards` notification.
    pub async fn insert_forwards(
        &self,
        forwards: &[NewForward],
    ) -> Result<Vec<(Provider, String)>, sqlx::Error> {
        if forwards.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_as(
            "INSERT INTO webhook_forwards (inbox_id, source, destination, webhook_id, order_key)
             SELECT i, s, d, 'fwd_' || i || '_' || d, o
               FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(i, s, d, o)
             ON CONFLICT (inbox_id, destination) DO NOTHING
             RETURNING source, destination",
        )
        .bind(forwards.iter().map(|f| f.inbox_id).collect::<Vec<_>>())
        .bind(forwards.iter().map(|f| f.source).collect::<Vec<_>>())
        .bind(
            forwards
                .iter()
                .map(|f| f.destination.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(forwards.iter().map(|f| f.order_key).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await
    }

    /// Claims up to `limit` due forwards of `destination`, leased for
    /// `lease`, oldest first. Of the rows with an `order_key`, only the
    /// destination's pending one with the lowest key is claimable (so they
    /// go out one by one, in order, across all workers); the others as many
    /// as `limit` allows.
    ///
    /// Each part reads only what it may claim: the ordered head is one probe
    /// of `webhook_forwards_ordered`, the unordered rows come from their own
    /// index. (Filtering every due row for "no lower pending key" made each
    /// claim walk the whole ordered backlog: 33 ms per claim at 2,000
    /// pending Telegram updates, and Telegram forwarding fell to 8/s.) The
    /// head is not locked by its read: the update waits for a concurrent
    /// claimer of it and then finds it leased (not due), so it is never
    /// claimed twice, and a row behind it is never claimed instead.
    pub async fn claim_forwards(
        &self,
        destination: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<ForwardDelivery>, sqlx::Error> {
        sqlx::query_as(
            "WITH head AS (
               SELECT h.id FROM (SELECT id, next_attempt_at FROM webhook_forwards
                                  WHERE destination = $1 AND state = 'pending' AND order_key IS NOT NULL
                                  ORDER BY order_key, id LIMIT 1) h
                WHERE h.next_attempt_at <= now()
             ), unordered AS (
               SELECT id FROM webhook_forwards
                WHERE destination = $1 AND state = 'pending' AND order_key IS NULL AND next_attempt_at <= now()
                ORDER BY next_attempt_at, id
                LIMIT greatest($2 - (SELECT count(*) FROM head), 0) FOR UPDATE SKIP LOCKED
             ), claimed AS (
               UPDATE webhook_forwards SET attempts = attempts + 1, next_attempt_at = now() + $3::interval
                WHERE id IN (SELECT id FROM head WHERE $2 > 0 UNION ALL SELECT id FROM unordered)
                  AND state = 'pending' AND next_attempt_at <= now()
               RETURNING id, webhook_id, source, destination, order_key, attempts, inbox_id
             )
             SELECT c.id, c.webhook_id, c.source, c.destination, c.order_key, c.attempts, w.body, w.headers
               FROM claimed c JOIN webhook_inbox w ON w.id = c.inbox_id
              ORDER BY c.order_key NULLS LAST, c.id",
        )
        .bind(destination)
        .bind(limit)
        .bind(interval(lease))
        .fetch_all(&self.pool)
        .await
    }

    /// Records an attempt and moves the forward on, in one statement. An
    /// attempt whose claim was superseded (lease expired, claimed again) is
    /// still recorded but does not move the row.
    pub async fn record_forward_attempt(
        &self,
        attempt: &ForwardAttempt,
    ) -> Result<(), sqlx::Error> {
        let (state, next_at) = match attempt.next {
            ForwardNext::Delivered => ("delivered", None),
            ForwardNext::RetryAt(at) => ("pending", Some(at)),
            ForwardNext::Dead => ("dead", None),
        };
        sqlx::query(
            "WITH logged AS (
               INSERT INTO forward_attempts (forward_id, attempt, started_at, duration_ms, status_code, error)
               VALUES ($1, $2, $3, $4, $5, $6)
             )
             UPDATE webhook_forwards
                SET state = $7, next_attempt_at = coalesce($8, next_attempt_at),
                    last_status_code = $5, last_error = $6,
                    completed_at = CASE WHEN $7 = 'pending' THEN NULL ELSE now() END
              WHERE id = $1 AND attempts = $2 AND state = 'pending'",
        )
        .bind(attempt.id)
        .bind(attempt.attempt)
        .bind(attempt.started_at)
        .bind(i32::try_from(attempt.duration.as_millis()).unwrap_or(i32::MAX))
        .bind(attempt.status_code.map(i32::from))
        .bind(&attempt.error)
        .bind(state)
        .bind(next_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts dead forwards (all, or these ids) back to `pending` with their
    /// attempts reset, and wakes the workers. Returns their ids; ids that
    /// are not dead are left alone. A re-driven ordered row goes out after
    /// the pending rows with lower keys, and before those with higher ones.
    pub async fn redrive_forwards(&self, ids: Option<&[i64]>) -> Result<Vec<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64,)> = sqlx::query_as(
            "UPDATE webhook_forwards
                SET state = 'pending', attempts = 0, next_attempt_at = now(), completed_at = NULL
              WHERE state = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1))
             RETURNING id",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        if !rows.is_empty() {
            sqlx::query("SELECT pg_notify('webhook_forwards', '')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let mut ids: Vec<i64> = rows.into_iter().map(|(id,)| id).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Per source and destination: pending, failing and dead forwards and
    /// the age of the oldest pending one (read when metrics are scraped).
    pub async fn forward_backlogs(&self) -> Result<Vec<ForwardBacklog>, sqlx::Error> {
        sqlx::query_as(
            "SELECT source, destination,
                    count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'pending' AND last_error IS NOT NULL) AS failing,
                    count(*) FILTER (WHERE state = 'dead') AS dead,
                    coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'pending')), 0)::float8
                      AS oldest_pending_secs
               FROM webhook_forwards WHERE state IN ('pending', 'dead')
              GROUP BY source, destination ORDER BY source, destination",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Forwards, oldest first, optionally of one destination.
    pub async fn forwards(
        &self,
        destination: Option<&str>,
    ) -> Result<Vec<ForwardRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {RECORD_COLUMNS} FROM webhook_forwards
              WHERE $1::text IS NULL OR destination = $1 ORDER BY id"
        ))
        .bind(destination)
        .fetch_all(&self.pool)
        .await
    }

    /// The attempts of one forward, oldest first.
    pub async fn forward_attempts(
        &self,
        forward_id: i64,
    ) -> Result<Vec<ForwardAttemptRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, status_code, error FROM forward_attempts
              WHERE forward_id = $1 ORDER BY id",
        )
        .bind(forward_id)
        .fetch_all(&self.pool)
        .await
    }
}
