//! Reading messages and moving them through their statuses. Every status
//! change goes through one guarded UPDATE (`status_rank`), so no code path can
//! move a message backwards, and writes its timeline event in the same statement.
//! The worker's hot path writes many messages per statement (`begin_attempts`,
//! `record_accepted_many`) through the same guarded statements.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::{Reader, Store};
use crate::domain::{Channel, EventSource, MessageId, MessageStatus, PhoneNumber};
use crate::telemetry::TraceContext;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRecord {
    pub id: MessageId,
    pub client: String,
    pub phone_number: PhoneNumber,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    pub parameters: Value,
    pub text: Option<String>,
    pub media_urls: Vec<String>,
    pub channels: Vec<Channel>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub sandbox: bool,
    pub callback_url: Option<String>,
    pub metadata: Value,
    pub status: MessageStatus,
    pub attempts: i32,
    pub provider_message_id: Option<String>,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub dead_lettered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRecord {
    pub status: String,
    pub applied: bool,
    pub source: EventSource,
    pub attempt: Option<i32>,
    pub detail: Option<Value>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub status: Option<MessageStatus>,
    pub since: Option<DateTime<Utc>>,
    /// Return messages older than this id (the previous page's last id).
    pub before: Option<MessageId>,
    pub limit: i64,
}

/// A status change and the timeline event that records it.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub status: MessageStatus,
    /// Timeline name of the event when it differs from the status
    /// (`retrying`, `dead_lettered`, ...).
    pub event: Option<&'static str>,
    pub source: EventSource,
    pub attempt: Option<i32>,
    pub detail: Option<Value>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

impl StatusChange {
    pub fn new(status: MessageStatus, source: EventSource) -> StatusChange {
        StatusChange {
            status,
            event: None,
            source,
            attempt: None,
            detail: None,
            error_code: None,
            error: None,
            at: Utc::now(),
        }
    }
}

/// Sent took a message: its ids and the `accepted` change.
#[derive(Debug, Clone)]
pub struct Acceptance {
    pub id: MessageId,
    pub provider_ids: Vec<String>,
    pub change: StatusChange,
}

/// One message's change, as `apply_changes` writes it.
struct ChangeRow<'a> {
    id: MessageId,
    change: &'a StatusChange,
    /// Sent's ids, when the change is an acceptance.
    provider_ids: Option<&'a [String]>,
}

const COLUMNS: &str = "id, client, phone_number, template_id, template_name, parameters, text, media_urls, channels, scheduled_at,
    sandbox, callback_url, metadata, status, attempts, provider_message_id, last_error_code, last_error,
    dead_lettered_at, created_at, updated_at";

impl Store {
    pub async fn message(
        &self,
        client: &str,
        id: MessageId,
    ) -> Result<Option<MessageRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM messages WHERE id = $1 AND client = $2"
        ))
        .bind(id)
        .bind(client)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn message_by_id(&self, id: MessageId) -> Result<Option<MessageRecord>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM messages WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn events(&self, id: MessageId) -> Result<Vec<EventRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT status, applied, source, attempt, detail, at FROM message_events WHERE message_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// Starts a send attempt: the message must still be waiting to be sent
    /// (`queued`, `sending` for a retry, or `scheduled` by the gateway and
    /// not yet handed to Sent). Returns `None` when another job already took
    /// it further (or it was cancelled), which makes duplicate jobs harmless.
    pub async fn begin_attempt(&self, id: MessageId) -> Result<Option<MessageRecord>, sqlx::Error> {
        Ok(self.begin_attempts(&[id]).await?.pop().flatten())
    }

    /// [`Store::begin_attempt`] for many messages in one statement (the
    /// worker's group commit). The answer is in the order of `ids`; an id given
    /// twice starts one attempt, and its second place gets `None` like any
    /// duplicate job. Rows are locked in id order, so concurrent batches
    /// cannot deadlock. The lock is taken by id alone, then the status is
    /// checked.
    pub async fn begin_attempts(
        &self,
        ids: &[MessageId],
    ) -> Result<Vec<Option<MessageRecord>>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<MessageRecord> = sqlx::query_as(&format!(
            "WITH locked AS (
               SELECT id AS locked_id, status AS prev_status FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE
             ), updated AS (
               UPDATE messages
                  SET status = 'sending', attempts = attempts + 1, updated_at = now(),
                      sending_at = coalesce(sending_at, now()), next_attempt_at = NULL
                 FROM locked
                WHERE id = locked_id AND id = ANY($1)
                  AND (status IN ('queued', 'sending') OR (status = 'scheduled' AND accepted_at IS NULL))
               RETURNING {COLUMNS}, prev_status
             ), event AS (
               INSERT INTO message_events (message_id, status, source, attempt, client, prev_status)
               SELECT id, 'sending', 'worker', attempts, client, prev_status FROM updated
             )
             SELECT {COLUMNS} FROM updated"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut started: HashMap<MessageId, MessageRecord> =
            rows.into_iter().map(|m| (m.id, m)).collect();
        Ok(ids.iter().map(|id| started.remove(id)).collect())
    }

    /// Applies `change` if it is progress for the message, and records it in
    /// the timeline either way. Returns whether the status changed.
    ///
    /// When it changed and the message has a `callback_url`, the same
    /// statement queues the status callback (`status_callbacks`), so a change
    /// and its callback are committed together or not at all. The row lock
    /// taken before the update makes `previous_status` exact under concurrent
    /// changes.
    pub async fn change_status(
        &self,
        id: MessageId,
        change: &StatusChange,
    ) -> Result<bool, sqlx::Error> {
        let row = ChangeRow {
            id,
            change,
            provider_ids: None,
        };
        Ok(self.apply_changes(&[row]).await?[0])
    }

    /// [`Store::change_status`] for many changes at once (the inbox applies a
    /// batch of webhook events this way): one statement per round, each
    /// message once per round, so a message given twice is changed in the
    /// order given. Says, in order, whether each status changed.
    pub async fn change_statuses(
        &self,
        changes: &[(MessageId, &StatusChange)],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let rows: Vec<ChangeRow> = changes
            .iter()
            .map(|&(id, change)| ChangeRow {
                id,
                change,
                provider_ids: None,
            })
            .collect();
        self.apply_changes(&rows).await
    }

    /// Sent took the message: store its ids and move to `accepted`, in one
    /// statement. The ids are stored (and the last error cleared) even when
    /// the status has already moved further; the status itself only moves
    /// forward, as in [`Store::change_status`].
    pub async fn record_accepted(
        &self,
        id: MessageId,
        provider_ids: &[String],
        change: &StatusChange,
    ) -> Result<bool, sqlx::Error> {
        let row = ChangeRow {
            id,
            change,
            provider_ids: Some(provider_ids),
        };
        Ok(self.apply_changes(&[row]).await?[0])
    }

    /// [`Store::record_accepted`] for many messages in one statement (the
    /// worker's group commit). Says, in order, whether each status changed.
    pub async fn record_accepted_many(
        &self,
        accepted: &[Acceptance],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let rows: Vec<ChangeRow> = accepted
            .iter()
            .map(|a| ChangeRow {
                id: a.id,
                change: &a.change,
                provider_ids: Some(&a.provider_ids),
            })
            .collect();
        self.apply_changes(&rows).await
    }

    /// The one guarded status update: every change of status goes through
    /// here. Returns, in order, whether each row's status changed. A message
    /// given twice is changed by two statements, in the order given.
    async fn apply_changes(&self, rows: &[ChangeRow<'_>]) -> Result<Vec<bool>, sqlx::Error> {
        let mut applied = vec![false; rows.len()];
        let mut pending: Vec<usize> = (0..rows.len()).collect();
        while !pending.is_empty() {
            // Each round takes each message once: the first of its rows left.
            let mut seen = std::collections::HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) =
                pending.into_iter().partition(|&i| seen.insert(rows[i].id));
            let changed = self
                .apply_distinct(&round.iter().map(|&i| &rows[i]).collect::<Vec<_>>())
                .await?;
            for (i, changed) in round.into_iter().zip(changed) {
                applied[i] = changed;
            }
            pending = later;
        }
        Ok(applied)
    }

    /// `apply_changes` for rows of distinct messages.
    ///
    /// `prev` locks the messages in id order (concurrent batches cannot
    /// deadlock) and reads their status as of the lock; a change applies when
    /// it ranks above that status. `updated` writes the applied changes, and
    /// Sent's ids of acceptances whether applied or not; every row gets its
    /// timeline event; applied changes of messages with a `callback_url` get
    /// their callback row. `prev` carries the message's client and status
    /// before the change, which the event stores for the dashboard's readers
    /// (migrations/20261213000000_events_carry_their_client.sql); `updated`
    /// returns its `prev` row with the callback URL, so the callback needs no
    /// join. Each row comes back with whether it applied, and with how many
    /// waiting webhook events the batch woke (for the wake's sake only).
    async fn apply_distinct(&self, rows: &[&ChangeRow<'_>]) -> Result<Vec<bool>, sqlx::Error> {
        // Webhook events that arrived before the Sent ids stored here wait
        // for them in the inbox's queue: the same statement makes them due,
        // once (an uncorrelated subquery runs once, after `updated`), and
        // only a batch with an acceptance has it (migrations/20261217000000).
        let wake = if rows.iter().any(|r| r.provider_ids.is_some()) {
            "(SELECT webhook_inbox_wake(ARRAY(SELECT unnest(provider_ids) FROM updated)))"
        } else {
            "0::bigint"
        };
        let found: Vec<(MessageId, bool, i64)> = sqlx::query_as(&format!(
            "WITH input AS (
               SELECT u.*, CASE WHEN u.provider_json IS NOT NULL
                                THEN ARRAY(SELECT jsonb_array_elements_text(u.provider_json)) END AS provider_ids
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::jsonb[], $6::text[], $7::text[],
                             $8::timestamptz[], $9::text[], $10::jsonb[])
                        AS u(id, status, source, attempt, detail, error_code, error, at, event, provider_json)
             ), prev AS (
               SELECT i.*, m.client, m.status AS previous_status,
                      status_rank(i.status) > status_rank(m.status) AS advance
                 FROM messages m JOIN input i ON i.id = m.id
                -- Redundant with the join, but values: Postgres plans only
                -- the weeks of `messages` these ids are in.
                WHERE m.id = ANY($1::text[])
                ORDER BY m.id
                  FOR UPDATE OF m
             ), updated AS (
               UPDATE messages m
                  SET status = CASE WHEN p.advance THEN p.status ELSE m.status END,
                      updated_at = CASE WHEN p.advance THEN now() ELSE m.updated_at END,
                      provider_message_ids = coalesce(p.provider_ids, m.provider_message_ids),
                      provider_message_id = CASE WHEN p.provider_ids IS NULL THEN m.provider_message_id
                                                 ELSE p.provider_ids[1] END,
                      last_error_code = CASE WHEN p.advance AND p.error_code IS NOT NULL THEN p.error_code
                                             WHEN p.provider_ids IS NOT NULL THEN NULL
                                             ELSE m.last_error_code END,
                      last_error = CASE WHEN p.advance AND p.error IS NOT NULL THEN p.error
                                        WHEN p.provider_ids IS NOT NULL THEN NULL
                                        ELSE m.last_error END,
                      accepted_at  = CASE WHEN p.advance AND p.status = 'accepted'
                                          THEN coalesce(m.accepted_at, p.at) ELSE m.accepted_at END,
                      sent_at      = CASE WHEN p.advance AND p.status = 'sent'
                                          THEN coalesce(m.sent_at, p.at) ELSE m.sent_at END,
                      delivered_at = CASE WHEN p.advance AND p.status = 'delivered'
                                          THEN coalesce(m.delivered_at, p.at) ELSE m.delivered_at END,
                      read_at      = CASE WHEN p.advance AND p.status = 'read'
                                          THEN coalesce(m.read_at, p.at) ELSE m.read_at END,
                      failed_at    = CASE WHEN p.advance AND p.status IN ('failed', 'blocked', 'filtered', 'cancelled')
                                          THEN coalesce(m.failed_at, p.at) ELSE m.failed_at END,
                      dead_lettered_at = CASE WHEN p.advance AND p.event = 'dead_lettered'
                                              THEN now() ELSE m.dead_lettered_at END
                 FROM prev p
                WHERE m.id = p.id AND m.id = ANY($1::text[]) AND (p.advance OR p.provider_ids IS NOT NULL)
               RETURNING m.callback_url, p.*
             ), event AS (
               INSERT INTO message_events (message_id, status, applied, source, attempt, detail, at, client, prev_status)
               SELECT id, coalesce(event, status), advance, source, attempt, detail, at, client, previous_status
                 FROM prev
             ), callback AS (
               INSERT INTO status_callbacks (message_id, client, url, status, previous_status, at, error_code, error, channel)
               SELECT id, client, callback_url, status, previous_status, at, error_code, error,
                      detail ->> 'channel'
                 FROM updated
                WHERE advance AND callback_url IS NOT NULL
             )
             SELECT id, advance, {wake} FROM prev"
        ))
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.change.status).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.change.source).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.change.attempt).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.change.detail.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.change.error_code.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.change.error.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.change.at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.change.event).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.provider_ids.map(|ids| Value::from(ids.to_vec()))).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        // A message that does not exist is not in the answer: nothing applied.
        let applied: HashMap<MessageId, bool> = found
            .into_iter()
            .map(|(id, advance, _)| (id, advance))
            .collect();
        Ok(rows
            .iter()
            .map(|r| applied.get(&r.id).copied().unwrap_or(false))
            .collect())
    }

    /// Cancels one of `client`'s messages if Sent does not have it yet: it is
    /// `queued`, or `scheduled` by the gateway and not handed to Sent. Sent's
    /// v3 has no cancel call, so that is the only window. Returns `None` for
    /// an unknown message, else its status before and whether it was
    /// cancelled. The row lock makes this exact against a worker starting
    /// the send at the same moment: one of the two wins.
    pub async fn cancel(
        &self,
        client: &str,
        id: MessageId,
    ) -> Result<Option<(MessageStatus, bool)>, sqlx::Error> {
        let row: Option<(String, bool)> = sqlx::query_as(
            "WITH target AS (
               SELECT id, status, accepted_at FROM messages WHERE id = $1 AND client = $2 FOR UPDATE
             ), cancelled AS (
               UPDATE messages m
                  SET status = 'cancelled', failed_at = now(), updated_at = now(), next_attempt_at = NULL
                 FROM target t
                WHERE m.id = t.id AND (t.status = 'queued' OR (t.status = 'scheduled' AND t.accepted_at IS NULL))
               RETURNING m.id, m.client, m.callback_url, t.status AS previous_status, m.updated_at AS at
             ), event AS (
               INSERT INTO message_events (message_id, status, source, detail, at, client, prev_status)
               SELECT id, 'cancelled', 'gateway', jsonb_build_object('by', 'client'), at, client, previous_status
                 FROM cancelled
             ), callback AS (
               INSERT INTO status_callbacks (message_id, client, url, status, previous_status, at)
               SELECT id, client, callback_url, 'cancelled', previous_status, at
                 FROM cancelled WHERE callback_url IS NOT NULL
             )
             SELECT t.status, EXISTS (SELECT 1 FROM cancelled) FROM target t",
        )
        .bind(id)
        .bind(client)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(status, cancelled)| Some((status.parse().ok()?, cancelled))))
    }

    /// Claims the next message due for a status poll and counts the poll.
    /// A message is due when it waits for Sent's word (`accepted`,
    /// `scheduled` at Sent, `sent`) and neither its status nor a poll has
    /// moved for the gap of its next poll: `gaps[status_polls]`. Claiming
    /// counts the poll, so two workers never ask about the same message and
    /// a message is asked about at most `gaps.len()` times.
    pub async fn claim_status_poll(
        &self,
        gaps: &[std::time::Duration; STATUS_POLLS],
    ) -> Result<Option<PollTarget>, sqlx::Error> {
        let gaps: Vec<chrono::Duration> = gaps
            .iter()
            .map(|g| chrono::Duration::from_std(*g).unwrap_or(chrono::Duration::days(1)))
            .collect();
        sqlx::query_as(
            "UPDATE messages m SET status_polls = status_polls + 1, last_polled_at = now()
              WHERE m.id = (
                SELECT id FROM messages
                 -- messages_status_poll_due's condition, then the status (in no
                 -- index, so that a change of it is a HOT update). The last
                 -- change is never older than the acceptance, so accepted_at
                 -- bounds each number of polls' range of the index.
                 WHERE provider_message_id IS NOT NULL AND accepted_at IS NOT NULL AND status_polls < 4
                   AND delivered_at IS NULL AND read_at IS NULL AND failed_at IS NULL
                   AND status IN ('accepted', 'scheduled', 'sent')
                   AND ((status_polls = 0 AND accepted_at < now() - $1::interval
                         AND greatest(updated_at, last_polled_at) < now() - $1::interval)
                     OR (status_polls = 1 AND accepted_at < now() - $2::interval
                         AND greatest(updated_at, last_polled_at) < now() - $2::interval)
                     OR (status_polls = 2 AND accepted_at < now() - $3::interval
                         AND greatest(updated_at, last_polled_at) < now() - $3::interval)
                     OR (status_polls = 3 AND accepted_at < now() - $4::interval
                         AND greatest(updated_at, last_polled_at) < now() - $4::interval))
                 LIMIT 1
                   FOR UPDATE SKIP LOCKED)
             RETURNING m.id, m.provider_message_id, m.status_polls",
        )
        .bind(gaps[0])
        .bind(gaps[1])
        .bind(gaps[2])
        .bind(gaps[3])
        .fetch_optional(&self.pool)
        .await
    }

    /// Records in the timeline that Sent was asked about a message and what it
    /// said (when the answer changed nothing, or could not be applied). A
    /// stale mark (`detail.stale`) also goes on the message itself
    /// (`last_error_code: sent_status_stale`), where the status page shows it.
    ///
    /// The event is written only while its message exists, which the lock
    /// keeps until this commits (the timeline has no foreign key:
    /// migrations/20261214000001_timeline_keys_kept_by_writers.sql).
    pub async fn record_poll(&self, id: MessageId, detail: &Value) -> Result<(), sqlx::Error> {
        let stale = detail["stale"] == true;
        sqlx::query(
            "WITH message AS (
               SELECT id FROM messages WHERE id = $1 FOR KEY SHARE
             ), marked AS (
               UPDATE messages SET last_error_code = $4, last_error = $5
                WHERE id = $1 AND $4::text IS NOT NULL
             )
             INSERT INTO message_events (message_id, status, applied, source, detail)
             SELECT id, $2, false, 'poll', $3 FROM message",
        )
        .bind(id)
        .bind(if stale { "stale" } else { "polled" })
        .bind(detail)
        .bind(stale.then_some(CODE_STALE))
        .bind(stale.then(|| detail["reason"].as_str().unwrap_or_default().to_owned()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A failed attempt that will be retried at `retry_at`: the status stays
    /// `sending`, the timeline gets a `retrying` event.
    pub async fn record_retry(
        &self,
        id: MessageId,
        attempt: i32,
        code: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "WITH updated AS (
               UPDATE messages SET last_error_code = $2, last_error = $3, next_attempt_at = $4, updated_at = now()
                WHERE id = $1 AND status = 'sending'
               RETURNING id
             )
             INSERT INTO message_events (message_id, status, applied, source, attempt, detail)
             SELECT id, 'retrying', false, 'worker', $5,
                    jsonb_build_object('code', $2, 'error', $3, 'retry_at', $4) FROM updated",
        )
        .bind(id.to_string())
        .bind(code)
        .bind(error)
        .bind(retry_at)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Retries exhausted: `failed`, and marked dead-lettered so an operator
    /// can re-drive it, in the same statement (`change.event` is
    /// `dead_lettered`), so no reader sees the one without the other.
    pub async fn dead_letter(
        &self,
        id: MessageId,
        change: &StatusChange,
    ) -> Result<bool, sqlx::Error> {
        debug_assert_eq!(change.event, Some(DEAD_LETTERED));
        self.change_status(id, change).await
    }

    /// Puts dead-lettered messages (all, or the given ids) back to `queued`.
    /// The one deliberate backwards move, made by an operator and recorded.
    /// `accepted_at` goes with `failed_at` (a duplicate job's acceptance can
    /// land just before a dead-letter): the reconciler and retention find
    /// the messages Sent does not have by both being unset.
    ///
    /// With `first_attempt_after`, a message whose first attempt is older is
    /// left alone and returned as refused: Sent may have taken that attempt
    /// and forgotten its `Idempotency-Key` by the time the re-drive's own
    /// attempts end, so re-sending it could send it twice.
    pub async fn redrive(
        &self,
        ids: Option<&[String]>,
        first_attempt_after: Option<DateTime<Utc>>,
    ) -> Result<(Vec<Unsent>, Vec<String>), sqlx::Error> {
        let rows: Vec<(String, String, Option<Json<TraceContext>>, bool)> = sqlx::query_as(
            "WITH chosen AS (
               SELECT id, status, $2::timestamptz IS NULL OR sending_at IS NULL OR sending_at >= $2 AS safe
                 FROM messages
                WHERE dead_lettered_at IS NOT NULL AND ($1::text[] IS NULL OR id = ANY($1))
                ORDER BY id
                  FOR UPDATE
             ), redriven AS (
               UPDATE messages m
                  SET status = 'queued', dead_lettered_at = NULL, failed_at = NULL, accepted_at = NULL, attempts = 0,
                      next_attempt_at = NULL, updated_at = now()
                 FROM chosen c
                WHERE m.id = c.id AND c.safe
               RETURNING m.id, m.client, m.trace_context, c.status AS prev_status
             ), event AS (
               INSERT INTO message_events (message_id, status, source, client, prev_status)
               SELECT id, 'queued', 'operator', client, prev_status FROM redriven
             )
             SELECT id, client, trace_context, true FROM redriven
             UNION ALL
             SELECT id, '', NULL, false FROM chosen WHERE NOT safe",
        )
        .bind(ids)
        .bind(first_attempt_after)
        .fetch_all(&self.pool)
        .await?;
        let (done, refused): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.3);
        Ok((
            Unsent::from_rows(
                done.into_iter()
                    .map(|(id, client, trace, _)| (id, client, trace))
                    .collect(),
            ),
            refused.into_iter().map(|(id, ..)| id).collect(),
        ))
    }

    /// Messages that should have a job but have shown no progress for
    /// `older_than`: queued ones, sending ones whose retry is long overdue,
    /// and ones the gateway held until a time now long past.
    pub async fn stalled_messages(
        &self,
        older_than: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<Unsent>, sqlx::Error> {
        let rows = sqlx::query_as(
            "SELECT id, client, trace_context FROM messages
              -- messages_unsent's condition: no status is indexed (HOT changes).
              WHERE accepted_at IS NULL AND failed_at IS NULL
                AND ((status = 'queued' AND updated_at < now() - $1::interval)
                  OR (status = 'sending' AND coalesce(next_attempt_at, updated_at) < now() - $1::interval)
                  OR (status = 'scheduled' AND scheduled_at < now() - $1::interval))
              ORDER BY updated_at LIMIT $2",
        )
        .bind(chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::minutes(2)))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(Unsent::from_rows(rows))
    }

    /// Deletes up to `limit` idempotency records past their lifetime, oldest
    /// first (through their index): a short statement however many expired,
    /// called again while it finds a full chunk.
    pub async fn purge_expired_idempotency(&self, limit: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "DELETE FROM idempotency_records WHERE (client, idempotency_key) IN (
               SELECT client, idempotency_key FROM idempotency_records
                WHERE expires_at < now() ORDER BY expires_at LIMIT $1)",
        )
        .bind(limit)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

impl Reader<'_> {
    /// The client's messages, newest first. From the replica when there is
    /// one, so the newest may be missing for the replica's lag.
    pub async fn messages(
        &self,
        client: &str,
        filter: &MessageFilter,
    ) -> Result<Vec<MessageRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM messages
              WHERE client = $1
                AND ($2::text IS NULL OR status = $2)
                AND ($3::timestamptz IS NULL OR created_at >= $3)
                AND ($4::text IS NULL OR id < $4)
                -- ids sort by creation: the scan stops, and earlier weeks
                -- are not read, where `since` begins.
                AND ($6::text IS NULL OR id >= $6)
              ORDER BY id DESC LIMIT $5"
        ))
        .bind(client)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.since)
        .bind(filter.before)
        .bind(filter.limit)
        .bind(filter.since.map(MessageId::lower_bound))
        .fetch_all(self.pool)
        .await
    }
}

/// Timeline event of a message whose retries ran out ([`Store::dead_letter`]).
pub const DEAD_LETTERED: &str = "dead_lettered";

/// `last_error_code` of a message Sent said nothing new about after its last status poll.
pub const CODE_STALE: &str = "sent_status_stale";

/// How many times a message is polled at most (the partial index
/// `messages_status_poll_due` and `claim_status_poll` are written for four).
pub const STATUS_POLLS: usize = 4;

/// A message to ask Sent about: ours, Sent's id of it, and which poll this is (1-based).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PollTarget {
    pub id: MessageId,
    pub provider_message_id: String,
    pub status_polls: i16,
}

/// A message that needs a send job: its client (which may pick its shard)
/// and the trace that job continues.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsent {
    pub id: MessageId,
    pub client: String,
    pub trace: TraceContext,
}

impl Unsent {
    fn from_rows(rows: Vec<(String, String, Option<Json<TraceContext>>)>) -> Vec<Unsent> {
        rows.into_iter()
            .filter_map(|(id, client, trace)| {
                Some(Unsent {
                    id: id.parse().ok()?,
                    client,
                    trace: trace.map(|t| t.0).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Its send job.
    pub fn job(self) -> crate::queue::SendJob {
        crate::queue::SendJob::new(self.id, self.trace).for_client(&self.client)
    }
}
