//! The webhook inbox: every verified inbound event, stored before it is
//! acknowledged, then processed by the worker.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Store;

#[derive(Debug, Clone)]
pub struct InboxInsert {
    pub provider: String,
    pub event_id: String,
    pub event_type: Option<String>,
    pub headers: Value,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxInsertOutcome {
    Stored,
    Duplicate,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxEvent {
    pub id: i64,
    pub provider: String,
    pub event_id: String,
    pub event_type: Option<String>,
    pub body: Vec<u8>,
    pub attempts: i32,
    pub received_at: DateTime<Utc>,
}

impl Store {
    /// Stores a batch of events in one transaction; an event id already in the
    /// inbox is a duplicate delivery and is not stored again.
    pub async fn insert_inbox(&self, events: &[InboxInsert]) -> Result<Vec<InboxInsertOutcome>, sqlx::Error> {
        let stored: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO webhook_inbox (provider, event_id, event_type, headers, body)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::bytea[])
             ON CONFLICT (provider, event_id) DO NOTHING
             RETURNING provider, event_id",
        )
        .bind(events.iter().map(|e| e.provider.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.headers.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.body.clone()).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        // The same event twice in one batch is stored once: the first counts.
        let mut fresh: std::collections::HashSet<(String, String)> = stored.into_iter().collect();
        Ok(events
            .iter()
            .map(|e| {
                if fresh.remove(&(e.provider.clone(), e.event_id.clone())) {
                    InboxInsertOutcome::Stored
                } else {
                    InboxInsertOutcome::Duplicate
                }
            })
            .collect())
    }
}
