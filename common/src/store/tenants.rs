//! A tenant's data, deleted on request (`gateway tenants purge NAME`).

use super::Store;

/// What [`Store::purge_tenant`] deleted (or would delete), by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantPurge {
    pub messages: u64,
    /// Their timelines.
    pub message_events: u64,
    pub status_callbacks: u64,
    pub callback_attempts: u64,
    pub idempotency_records: u64,
    /// Sent's webhook events applied to those messages (they carry the
    /// recipient's number too).
    pub webhook_events: u64,
}

/// The client's messages, for the statements below.
const MESSAGES: &str = "SELECT id FROM messages WHERE client = $1";

impl Store {
    /// Deletes every row of `client`: its messages with their timelines,
    /// status callbacks and their attempts, the webhook events applied to
    /// them, and its idempotency records. One transaction: all of it or
    /// nothing. With `dry_run`, counts the same rows and deletes nothing.
    ///
    /// Each table is deleted from explicitly, so each count is exact (the
    /// foreign keys' cascades would delete the dependent rows silently);
    /// rows a still active key adds meanwhile go with their message. The
    /// webhook inbox has no index on the message, so that step reads it
    /// whole: an operator's command, run rarely.
    pub async fn purge_tenant(
        &self,
        client: &str,
        dry_run: bool,
    ) -> Result<TenantPurge, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut delete = async |sql: String| -> Result<u64, sqlx::Error> {
            Ok(sqlx::query(&sql)
                .bind(client)
                .execute(&mut *tx)
                .await?
                .rows_affected())
        };
        let callback_attempts = delete(format!(
            "DELETE FROM callback_attempts WHERE callback_id IN
               (SELECT id FROM status_callbacks WHERE message_id IN ({MESSAGES}))"
        ))
        .await?;
        let status_callbacks = delete(format!(
            "DELETE FROM status_callbacks WHERE message_id IN ({MESSAGES})"
        ))
        .await?;
        let message_events = delete(format!(
            "DELETE FROM message_events WHERE message_id IN ({MESSAGES})"
        ))
        .await?;
        let webhook_events = delete(format!(
            "DELETE FROM webhook_inbox WHERE message_id IN ({MESSAGES})"
        ))
        .await?;
        let messages = delete("DELETE FROM messages WHERE client = $1".into()).await?;
        let idempotency_records =
            delete("DELETE FROM idempotency_records WHERE client = $1".into()).await?;
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(TenantPurge {
            messages,
            message_events,
            status_callbacks,
            callback_attempts,
            idempotency_records,
            webhook_events,
        })
    }
}
