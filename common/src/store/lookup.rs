//! The dashboard's lookup: what an operator reaches for first when a
//! customer calls. A message by its id, or a phone number's newest
//! messages, each with its timeline and its status callbacks' attempts,
//! scoped to one client unless the caller is an admin.

use super::Store;
use crate::domain::{MessageId, PhoneNumber};

/// What the operator typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Message(MessageId),
    Phone(PhoneNumber),
}

/// Most messages a phone number's lookup returns (newest first).
pub const LOOKUP_LIMIT: i64 = 10;

impl Store {
    /// The ids of the messages `lookup` finds, newest first: of the client
    /// `scope`, or of every client (`None`, an admin). A phone number is
    /// read through `messages_phone_number`.
    pub async fn lookup_message_ids(
        &self,
        lookup: &Lookup,
        scope: Option<&str>,
    ) -> Result<Vec<MessageId>, sqlx::Error> {
        let (id, phone) = match lookup {
            Lookup::Message(id) => (Some(id.to_string()), None),
            Lookup::Phone(phone) => (None, Some(phone.as_str().to_owned())),
        };
        sqlx::query_scalar(
            "SELECT id FROM messages
              WHERE ($1::text IS NULL OR id = $1) AND ($2::text IS NULL OR phone_number = $2)
                AND ($3::text IS NULL OR client = $3)
              ORDER BY created_at DESC LIMIT $4",
        )
        .bind(id)
        .bind(phone)
        .bind(scope)
        .bind(LOOKUP_LIMIT)
        .fetch_all(&self.pool)
        .await
    }
}
