//! Replies to messages (`message.received`; issue 15): which tenant a
//! contact's message goes to.

use std::collections::HashMap;
use std::time::Duration;

use super::Store;
use super::inbox::interval;
use crate::domain::MessageId;

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
    /// are absent. One probe of `messages_phone_number` per number and
    /// partition of `messages` (partitioned by id, a ULID: the bound on the
    /// id leaves out the weeks older than the window).
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
                                      AND id >= $3
                                      AND created_at > now() - $2::interval
                                    ORDER BY created_at DESC LIMIT 1) m
               LEFT JOIN api_keys k ON k.name = m.client AND k.revoked_at IS NULL",
        )
        .bind(phone_numbers)
        .bind(interval(window))
        .bind(oldest_id(window))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.phone_number.clone(), row))
            .collect())
    }
}

/// The smallest message id (a ULID, ordered by creation time) of a message
/// created within `window` of now, with a minute to spare for clock skew
/// between the processes that make ids.
fn oldest_id(window: Duration) -> String {
    MessageId::lower_bound(chrono::Utc::now() - interval(window)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_id_of_a_window_sorts_below_newer_ids_only() {
        let day = Duration::from_secs(86_400);
        let bound = oldest_id(day);
        let now = crate::domain::MessageId::new().to_string();
        assert!(now > bound, "{now} {bound}");
        let two_days_ago = (chrono::Utc::now() - chrono::Duration::days(2)).timestamp_millis();
        let old = ulid::Ulid::from_parts(two_days_ago as u64, u128::MAX).to_string();
        assert!(old < bound, "{old} {bound}");
    }
}
