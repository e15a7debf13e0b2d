//! Status callbacks (the outbox): rows written by `change_status` in the same
//! statement as the change, delivered by the worker, every attempt recorded.
//! The same outbox carries `message.inbound` callbacks (`kind = 'inbound'`,
//! [`Store::insert_inbound_callbacks`]): a reply routed to a tenant, its body
//! made when it was routed, signed and delivered like a status callback.
//!
//! Claims are leases, as for the inbox: a claimed row stays `pending` with
//! `leased_until` set (in no index, so the claim is a HOT update) and
//! `attempts` bumped, and the
//! transaction ends before any HTTP call. Callbacks of one message go out in
//! order: only its oldest pending callback is ever claimable. Clients
//! (API keys) are served round-robin, each within its share of a worker's
//! deliveries ([`Store::claim_callbacks`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Store;
use super::inbox::interval;
use crate::domain::MessageId;

/// A claimed delivery, with what the request needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallbackDelivery {
    pub id: i64,
    pub webhook_id: String,
    /// `status` or `inbound`.
    pub kind: CallbackKind,
    /// A status callback's message (none for an inbound one).
    pub message_id: Option<String>,
    pub client: String,
    pub url: String,
    /// A status callback's status (none for an inbound one).
    pub status: Option<String>,
    pub previous_status: Option<String>,
    pub at: DateTime<Utc>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub channel: Option<String>,
    /// Attempts including this one; also the claim's fencing token.
    pub attempts: i32,
    /// The message's metadata, echoed to the client (`null` for inbound).
    pub metadata: Value,
    /// An inbound callback's whole body.
    pub payload: Option<Value>,
    /// An inbound callback's inbox row.
    pub inbox_id: Option<i64>,
}

/// What an outbox row announces (`status_callbacks.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum CallbackKind {
    /// A message's status changed (`message.status`).
    Status,
    /// A contact replied (`message.inbound`).
    Inbound,
}

impl std::fmt::Display for CallbackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallbackKind::Status => "status",
            CallbackKind::Inbound => "inbound",
        })
    }
}

/// A `message.inbound` callback to queue: a reply routed to `client`.
#[derive(Debug, Clone)]
pub struct NewInboundCallback {
    pub inbox_id: i64,
    pub client: String,
    pub url: String,
    pub payload: Value,
    pub at: DateTime<Utc>,
}

/// A callback row as operators and tests see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallbackRecord {
    pub id: i64,
    pub webhook_id: String,
    pub message_id: String,
    pub client: String,
    pub url: String,
    pub status: String,
    pub previous_status: Option<String>,
    pub at: DateTime<Utc>,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A `message.inbound` callback as operators and tests see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboundCallbackRecord {
    pub id: i64,
    pub webhook_id: String,
    pub client: String,
    pub url: String,
    pub state: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub payload: Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallbackAttemptRecord {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
}

/// What happened to the row after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CallbackNext {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// One attempt's outcome, to record.
#[derive(Debug, Clone)]
pub struct CallbackAttempt {
    pub id: i64,
    /// The claim's `attempts`.
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub next: CallbackNext,
}

const RECORD_COLUMNS: &str =
    "id, webhook_id, message_id, client, url, status, previous_status, at, state, attempts,
    next_attempt_at, last_status_code, last_error, created_at, completed_at";

impl Store {
    /// Claims up to `limit` due callbacks (each the oldest pending one of its
    /// message), leased for `lease`, fairly across clients: round-robin (each
    /// client's oldest due callback, then each one's second, ...), and none
    /// for a client past `per_client` deliveries in flight (`in_flight`, this
    /// worker's, by client). So a client whose receiver hangs holds at most
    /// `per_client` of a worker's deliveries, and its backlog does not queue
    /// the other clients' callbacks behind it.
    ///
    /// The clients with pending callbacks are found by skipping through
    /// `status_callbacks_client_due`, one probe each, and each client's due
    /// callbacks are read from it in order, at most `per_client`: the cost
    /// grows with the clients, not with the backlog.
    pub async fn claim_callbacks(
        &self,
        limit: i64,
        lease: Duration,
        per_client: i64,
        in_flight: &HashMap<String, usize>,
    ) -> Result<Vec<CallbackDelivery>, sqlx::Error> {
        let (busy, counts): (Vec<&str>, Vec<i64>) = in_flight
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(client, n)| (client.as_str(), *n as i64))
            .unzip();
        let mut claimed: Vec<CallbackDelivery> = sqlx::query_as(
            "WITH RECURSIVE clients (client) AS (
               (SELECT client FROM status_callbacks WHERE state = 'pending' ORDER BY client LIMIT 1)
               UNION ALL
               SELECT (SELECT s.client FROM status_callbacks s
                        WHERE s.state = 'pending' AND s.client > c.client ORDER BY s.client LIMIT 1)
                 FROM clients c WHERE c.client IS NOT NULL
             ),
             room AS (
               SELECT c.client, $3 - coalesce(f.n, 0) AS room
                 FROM clients c LEFT JOIN unnest($4::text[], $5::bigint[]) AS f (client, n) ON f.client = c.client
                WHERE c.client IS NOT NULL AND $3 - coalesce(f.n, 0) > 0
             ),
             candidates AS (
               SELECT d.id, d.next_attempt_at, r.room,
                      row_number() OVER (PARTITION BY r.client ORDER BY d.next_attempt_at, d.id) AS turn
                 FROM room r CROSS JOIN LATERAL (
                        SELECT s.id, s.next_attempt_at FROM status_callbacks s
                         WHERE s.client = r.client AND s.state = 'pending' AND s.next_attempt_at <= now()
                           AND (s.leased_until IS NULL OR s.leased_until <= now())
                           AND NOT EXISTS (SELECT 1 FROM status_callbacks e
                                            WHERE e.message_id = s.message_id AND e.state = 'pending' AND e.id < s.id)
                         ORDER BY s.next_attempt_at, s.id
                         -- Lock no more than can be claimed: every row lock is a
                         -- WAL record, and locking $3 rows to claim one wrote 17
                         -- lock records per callback (bench/wal.sh).
                         LIMIT least(r.room, $1) FOR UPDATE SKIP LOCKED) d
             ),
             claimed AS (
               UPDATE status_callbacks SET attempts = attempts + 1, leased_until = now() + $2::interval
                WHERE id IN (SELECT id FROM candidates WHERE turn <= room
                              ORDER BY turn, next_attempt_at, id LIMIT $1)
               RETURNING *
             )
             SELECT c.id, c.webhook_id, c.kind, c.message_id, c.client, c.url, c.status, c.previous_status,
                    c.at, c.error_code, c.error, c.channel, c.attempts,
                    'null'::jsonb AS metadata, c.payload, c.inbox_id
               FROM claimed c
              ORDER BY c.id",
        )
        .bind(limit)
        .bind(interval(lease))
        .bind(per_client)
        .bind(busy)
        .bind(counts)
        .fetch_all(&self.pool)
        .await?;
        // The messages' metadata by their ids, a statement of its own: given
        // as values, the ids let Postgres plan only their weeks of
        // `messages`, where a join planned all of them on every claim.
        let ids: Vec<&str> = claimed
            .iter()
            .filter_map(|c| c.message_id.as_deref())
            .collect();
        let metadata: HashMap<String, Value> = if ids.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as("SELECT id, metadata FROM messages WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect()
        };
        // A status callback whose message is gone (purged) has nothing to say.
        claimed.retain_mut(|c| match c.message_id.as_ref().map(|id| metadata.get(id)) {
            Some(Some(found)) => {
                c.metadata = found.clone();
                true
            }
            Some(None) => c.kind == CallbackKind::Inbound,
            None => true,
        });
        Ok(claimed)
    }

    /// Queues `message.inbound` callbacks, one per inbox row at most (a row
    /// processed again queues none). Workers are woken by the outbox's
    /// notification.
    pub async fn insert_inbound_callbacks(
        &self,
        callbacks: &[NewInboundCallback],
    ) -> Result<u64, sqlx::Error> {
        if callbacks.is_empty() {
            return Ok(0);
        }
        Ok(sqlx::query(
            "INSERT INTO status_callbacks (kind, inbox_id, client, url, payload, at)
             SELECT 'inbound', i, c, u, p, a
               FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[])
                    AS x(i, c, u, p, a)
             ON CONFLICT (inbox_id) WHERE inbox_id IS NOT NULL DO NOTHING",
        )
        .bind(callbacks.iter().map(|c| c.inbox_id).collect::<Vec<_>>())
        .bind(
            callbacks
                .iter()
                .map(|c| c.client.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(callbacks.iter().map(|c| c.url.as_str()).collect::<Vec<_>>())
        .bind(callbacks.iter().map(|c| &c.payload).collect::<Vec<_>>())
        .bind(callbacks.iter().map(|c| c.at).collect::<Vec<_>>())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// The `message.inbound` callback of an inbox row, if one was queued.
    pub async fn inbound_callback(
        &self,
        inbox_id: i64,
    ) -> Result<Option<InboundCallbackRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, webhook_id, client, url, state, attempts, last_status_code, last_error, payload
               FROM status_callbacks WHERE inbox_id = $1",
        )
        .bind(inbox_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records attempts and moves their callbacks on, in one statement (the
    /// worker group-commits its deliveries' outcomes). An attempt whose
    /// claim was superseded (lease expired, claimed again) is still recorded
    /// but does not move the row.
    pub async fn record_callback_attempts(
        &self,
        attempts: &[CallbackAttempt],
    ) -> Result<(), sqlx::Error> {
        let mut states = Vec::with_capacity(attempts.len());
        let mut next_at = Vec::with_capacity(attempts.len());
        for attempt in attempts {
            let (state, at) = match attempt.next {
                CallbackNext::Delivered => ("delivered", None),
                CallbackNext::RetryAt(at) => ("pending", Some(at)),
                CallbackNext::GiveUp => ("failed", None),
            };
            states.push(state);
            next_at.push(at);
        }
        sqlx::query(
            "WITH u AS (
               SELECT * FROM unnest($1::bigint[], $2::int[], $3::timestamptz[], $4::int[], $5::int[],
                                    $6::text[], $7::text[], $8::timestamptz[])
                        AS u(id, attempt, started_at, duration_ms, status_code, error, state, next_at)
             ), logged AS (
               INSERT INTO callback_attempts (callback_id, attempt, started_at, duration_ms, status_code, error)
               SELECT id, attempt, started_at, duration_ms, status_code, error FROM u
             )
             UPDATE status_callbacks s
                SET state = u.state, next_attempt_at = coalesce(u.next_at, s.next_attempt_at),
                    leased_until = NULL, last_status_code = u.status_code, last_error = u.error,
                    completed_at = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END
               FROM u
              WHERE s.id = u.id AND s.attempts = u.attempt AND s.state = 'pending'",
        )
        .bind(attempts.iter().map(|a| a.id).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.started_at).collect::<Vec<_>>())
        .bind(
            attempts
                .iter()
                .map(|a| i32::try_from(a.duration.as_millis()).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| a.status_code.map(i32::from))
                .collect::<Vec<_>>(),
        )
        .bind(attempts.iter().map(|a| a.error.as_deref()).collect::<Vec<_>>())
        .bind(&states)
        .bind(&next_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A message's callbacks, oldest first.
    pub async fn callbacks_for_message(
        &self,
        message_id: MessageId,
    ) -> Result<Vec<CallbackRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {RECORD_COLUMNS} FROM status_callbacks WHERE message_id = $1 ORDER BY id"
        ))
        .bind(message_id)
        .fetch_all(&self.pool)
        .await
    }

    /// The attempts of one callback, oldest first.
    pub async fn callback_attempts(
        &self,
        callback_id: i64,
    ) -> Result<Vec<CallbackAttemptRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, status_code, error FROM callback_attempts
              WHERE callback_id = $1 ORDER BY id",
        )
        .bind(callback_id)
        .fetch_all(&self.pool)
        .await
    }
}
