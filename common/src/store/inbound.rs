//! Replies to messages (`message.received`; issue 15): which tenant a
//! contact's message goes to.

use std::collections::HashMap;
use std::time::Duration;

use super::Store;
use super::inbox::interval;

/// The tenant a reply goes to: the client that most recently created a
/// message to the contact's number, that message, and the key's stored
/// inbound URL (managed keys; `INBOUND_URLS` covers those of `API_KEYS`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReplyTarget {
    pub phone_number: String,
    pub client: String,
    pub message_id: String,
    /// `api_keys.inbound_url` of an active key of that name.
    pub inbound_url: Option<String>,
}

impl Store {
    /// For each of `phone_numbers`, the tenant whose message to it is the
    /// newest created within `window`; numbers nobody wrote to in that time
    /// are absent. One probe of `messages_phone_number` per number.
    pub async fn reply_targets(
        &self,
        phone_numbers: &[&str],
        window: Duration,
    ) -> Result<HashMap<String, ReplyTarget>, sqlx::Error> {
        if phone_numbers.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<ReplyTarget> = sqlx::query_as(
            "SELECT p.phone_number, m.client, m.id AS message_id, k.inbound_url
               FROM unnest($1::text[]) AS p(phone_number)
               CROSS JOIN LATERAL (SELECT id, client FROM messages
                                    WHERE phone_number = p.phone_number
                                      AND created_at > now() - $2::interval
                                    ORDER BY created_at DESC LIMIT 1) m
               LEFT JOIN api_keys k ON k.name = m.client AND k.revoked_at IS NULL",
        )
        .bind(phone_numbers)
        .bind(interval(window))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.phone_number.clone(), row))
            .collect())
    }
}
