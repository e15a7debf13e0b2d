//! Reading messages and moving them through their statuses. Every status
//! change goes through one guarded UPDATE (`status_rank`), so no code path can
//! move a message backwards, and writes its timeline event in the same statement.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Store;
use crate::domain::{MessageId, MessageStatus};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRecord {
    pub id: String,
    pub client: String,
    pub phone_number: String,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    pub parameters: Value,
    pub channels: Vec<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub sandbox: bool,
    pub callback_url: Option<String>,
    pub metadata: Value,
    pub status: String,
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
    pub source: String,
    pub attempt: Option<i32>,
    pub detail: Option<Value>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub status: Option<MessageStatus>,
    pub since: Option<DateTime<Utc>>,
    /// Return messages older than this id (the previous page's last id).
    pub before: Option<String>,
    pub limit: i64,
}

/// A status change and the timeline event that records it.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub status: MessageStatus,
    /// Timeline name of the event when it differs from the status
    /// (`retrying`, `dead_lettered`, ...).
    pub event: Option<&'static str>,
    pub source: &'static str,
    pub attempt: Option<i32>,
    pub detail: Option<Value>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

impl StatusChange {
    pub fn new(status: MessageStatus, source: &'static str) -> StatusChange {
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

const COLUMNS: &str = "id, client, phone_number, template_id, template_name, parameters, channels, scheduled_at,
    sandbox, callback_url, metadata, status, attempts, provider_message_id, last_error_code, last_error,
    dead_lettered_at, created_at, updated_at";

impl Store {
    pub async fn message(
        &self,
        client: &str,
        id: &str,
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

    pub async fn events(&self, id: &str) -> Result<Vec<EventRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT status, applied, source, attempt, detail, at FROM message_events WHERE message_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
    }

    /// The client's messages, newest first.
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
              ORDER BY id DESC LIMIT $5"
        ))
        .bind(client)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.since)
        .bind(filter.before.as_deref())
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Starts a send attempt: the message must still be waiting to be sent
    /// (`queued` or `sending`, a retry). Returns `None` when another job already
    /// took it further, which makes duplicate jobs harmless.
    pub async fn begin_attempt(&self, id: MessageId) -> Result<Option<MessageRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "WITH updated AS (
               UPDATE messages
                  SET status = 'sending', attempts = attempts + 1, updated_at = now(),
                      sending_at = coalesce(sending_at, now()), next_attempt_at = NULL
                WHERE id = $1 AND status IN ('queued', 'sending')
               RETURNING {COLUMNS}
             ), event AS (
               INSERT INTO message_events (message_id, status, source, attempt)
               SELECT id, 'sending', 'worker', attempts FROM updated
             )
             SELECT {COLUMNS} FROM updated"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
    }

    /// Applies `change` if it is progress for the message, and records it in
    /// the timeline either way. Returns whether the status changed.
    ///
    /// When it changed and the message has a `callback_url`, the same
    /// statement queues the status callback (`status_callbacks`), so a change
    /// and its callback are committed together or not at all. The row lock
    /// taken by `prev` makes `previous_status` exact under concurrent changes.
    pub async fn change_status(
        &self,
        id: &str,
        change: &StatusChange,
    ) -> Result<bool, sqlx::Error> {
        let (applied,): (bool,) = sqlx::query_as(
            "WITH prev AS (
               SELECT id, status FROM messages WHERE id = $1 FOR UPDATE
             ), updated AS (
               UPDATE messages m
                  SET status = $2, updated_at = now(),
                      last_error_code = coalesce($6, last_error_code),
                      last_error = coalesce($7, last_error),
                      accepted_at  = CASE WHEN $2 = 'accepted'  THEN coalesce(accepted_at, $8) ELSE accepted_at END,
                      sent_at      = CASE WHEN $2 = 'sent'      THEN coalesce(sent_at, $8) ELSE sent_at END,
                      delivered_at = CASE WHEN $2 = 'delivered' THEN coalesce(delivered_at, $8) ELSE delivered_at END,
                      read_at      = CASE WHEN $2 = 'read'      THEN coalesce(read_at, $8) ELSE read_at END,
                      failed_at    = CASE WHEN $2 IN ('failed', 'blocked', 'filtered', 'cancelled')
                                          THEN coalesce(failed_at, $8) ELSE failed_at END
                 FROM prev
                WHERE m.id = prev.id AND status_rank($2) > status_rank(m.status)
               RETURNING m.id, prev.status AS previous_status, m.client, m.callback_url
             ), event AS (
               INSERT INTO message_events (message_id, status, applied, source, attempt, detail, at)
               SELECT $1, coalesce($9, $2), EXISTS (SELECT 1 FROM updated), $3, $4, $5, $8
                WHERE EXISTS (SELECT 1 FROM prev)
             ), callback AS (
               INSERT INTO status_callbacks (message_id, client, url, status, previous_status, at, error_code, error, channel)
               SELECT id, client, callback_url, $2, previous_status, $8, $6, $7, $5::jsonb ->> 'channel'
                 FROM updated WHERE callback_url IS NOT NULL
             )
             SELECT EXISTS (SELECT 1 FROM updated)",
        )
        .bind(id)
        .bind(change.status.as_str())
        .bind(change.source)
        .bind(change.attempt)
        .bind(&change.detail)
        .bind(&change.error_code)
        .bind(&change.error)
        .bind(change.at)
        .bind(change.event)
        .fetch_one(&self.pool)
        .await?;
        Ok(applied)
    }

    /// Sent took the message: store its ids and move to `accepted`.
    pub async fn record_accepted(
        &self,
        id: MessageId,
        provider_ids: &[String],
        change: &StatusChange,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query(
            "UPDATE messages SET provider_message_ids = $2, provider_message_id = $2[1],
                    last_error_code = NULL, last_error = NULL
              WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(provider_ids)
        .execute(&self.pool)
        .await?;
        self.change_status(&id.to_string(), change).await
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

    /// Retries exhausted: `failed`, and marked dead-lettered so an operator can re-drive it.
    pub async fn dead_letter(
        &self,
        id: MessageId,
        change: &StatusChange,
    ) -> Result<bool, sqlx::Error> {
        let applied = self.change_status(&id.to_string(), change).await?;
        if applied {
            sqlx::query("UPDATE messages SET dead_lettered_at = now() WHERE id = $1")
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
        }
        Ok(applied)
    }

    /// Puts dead-lettered messages (all, or the given ids) back to `queued`.
    /// The one deliberate backwards move, made by an operator and recorded.
    pub async fn redrive(&self, ids: Option<&[String]>) -> Result<Vec<MessageId>, sqlx::Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "WITH redriven AS (
               UPDATE messages
                  SET status = 'queued', dead_lettered_at = NULL, failed_at = NULL, attempts = 0,
                      next_attempt_at = NULL, updated_at = now()
                WHERE dead_lettered_at IS NOT NULL AND ($1::text[] IS NULL OR id = ANY($1))
               RETURNING id
             ), event AS (
               INSERT INTO message_events (message_id, status, source) SELECT id, 'queued', 'operator' FROM redriven
             )
             SELECT id FROM redriven",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id,)| id.parse().ok())
            .collect())
    }

    /// Messages that should have a job but have shown no progress for
    /// `older_than`: queued ones, and sending ones whose retry is long overdue.
    pub async fn stalled_messages(
        &self,
        older_than: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<MessageId>, sqlx::Error> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM messages
              WHERE (status = 'queued' AND updated_at < now() - $1::interval)
                 OR (status = 'sending' AND coalesce(next_attempt_at, updated_at) < now() - $1::interval)
              ORDER BY updated_at LIMIT $2",
        )
        .bind(chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::minutes(2)))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id,)| id.parse().ok())
            .collect())
    }

    /// Deletes idempotency records past their lifetime.
    pub async fn purge_expired_idempotency(&self) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM idempotency_records WHERE expires_at < now()")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
