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

impl Store {
    /// Deletes every row of `client`: its messages with their timelines,
    /// status callbacks and their attempts, the webhook events applied to
    /// them, and its idempotency records. One transaction: all of it or
    /// nothing. With `dry_run`, counts the same rows and deletes nothing.
    ///
    /// Each table is deleted from explicitly, so each count is exact. The
    /// messages are locked first, and only those are deleted: a writer that
    /// would add an event or a callback to one of them (each locks the
    /// message's row) waits, then finds it gone, and a message accepted
    /// meanwhile stays whole. (Neither table has a foreign key to
    /// `messages`: migrations/20261214000001_timeline_keys_kept_by_writers.sql.)
    /// The webhook inbox has no index on the message, so that step reads it
    /// whole: an operator's command, run rarely. (An inbox event names its
    /// message only once it is finished, so none of them has a row in
    /// `webhook_inbox_queue` to delete.)
    pub async fn purge_tenant(
        &self,
        client: &str,
        dry_run: bool,
    ) -> Result<TenantPurge, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        // The idempotency records before the messages are read: an accept
        // stores both in one transaction, so a message that stays (accepted
        // after the read) keeps its record, and a retry of its request
        // cannot make a second message.
        let idempotency_records = sqlx::query("DELETE FROM idempotency_records WHERE client = $1")
            .bind(client)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM messages WHERE client = $1 ORDER BY id FOR UPDATE")
                .bind(client)
                .fetch_all(&mut *tx)
                .await?;
        let mut delete = async |sql: &str| -> Result<u64, sqlx::Error> {
            Ok(sqlx::query(sql)
                .bind(&ids)
                .execute(&mut *tx)
                .await?
                .rows_affected())
        };
        let callback_attempts = delete(
            "DELETE FROM callback_attempts WHERE callback_id IN
               (SELECT id FROM status_callbacks WHERE message_id = ANY($1))",
        )
        .await?;
        let status_callbacks =
            delete("DELETE FROM status_callbacks WHERE message_id = ANY($1)").await?;
        // The messages before their timelines: each message's delete trigger
        // reads its last counted event to take it out of the dashboard's
        // status counts (dashboard_forget).
        let messages = delete("DELETE FROM messages WHERE id = ANY($1)").await?;
        let message_events =
            delete("DELETE FROM message_events WHERE message_id = ANY($1)").await?;
        let webhook_events = delete("DELETE FROM webhook_inbox WHERE message_id = ANY($1)").await?;
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
