//! The pull API's reads (`GET /api/events`): stored inbox events of one
//! source, in an order no late commit can break.
//!
//! # Why not `id > cursor`
//!
//! Identity values are taken when a row is inserted, but transactions commit
//! in any order: a page read while the transaction holding id 7 is still in
//! flight returns 8, and a cursor at 8 would skip 7 for ever once it commits.
//! So each row carries the id of the transaction that inserted it
//! (`commit_xid`, defaulted by Postgres), rows are read in `(commit_xid, id)`
//! order, and only those whose transaction is older than the oldest one
//! still in flight (`pg_snapshot_xmin(pg_current_snapshot())`). Every
//! transaction below that bound has ended, committed or not, so any row
//! that becomes visible later has a larger `commit_xid` than any returned:
//! it sorts after the cursor, never before it. The cost: an event is
//! returned only once every transaction that began before it committed has
//! ended (a long-running transaction anywhere on the server holds the feed
//! back, never loses it).
//!
//! # Replies (`source=inbound`)
//!
//! A reply becomes part of the `inbound` feed when the worker routes it, not
//! when it is stored, and routing happens in any order: so that feed is read
//! in `(reply_xid, id)` order, `reply_xid` being the transaction that routed
//! the row, under the same bound. A tenant reads the replies routed to it;
//! an admin reads them all, unroutable ones included.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::Store;
use crate::domain::Provider;

/// A position in one source's feed: after the row `id` of transaction `xid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct EventCursor {
    pub xid: i64,
    pub id: i64,
}

/// `<xid>-<id>`, opaque to clients.
impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.xid, self.id)
    }
}

impl FromStr for EventCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<EventCursor, ()> {
        let (xid, id) = s.split_once('-').ok_or(())?;
        let digits = |t: &str| {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<i64>().ok())
                .flatten()
        };
        Ok(EventCursor {
            xid: digits(xid).ok_or(())?,
            id: digits(id).ok_or(())?,
        })
    }
}

/// A stored event as the pull API returns it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PulledEvent {
    pub id: i64,
    pub xid: i64,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: Option<String>,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    /// A reply's tenant (API key name); `None`: unroutable, or not a reply.
    pub reply_client: Option<String>,
    /// A routed reply's message (ours) it answers.
    pub message_id: Option<String>,
}

impl PulledEvent {
    pub fn cursor(&self) -> EventCursor {
        EventCursor {
            xid: self.xid,
            id: self.id,
        }
    }
}

impl Store {
    /// Up to `limit` events of `provider` after `after`, in feed order (see
    /// the module docs), only those no in-flight transaction can precede.
    pub async fn pull_events(
        &self,
        provider: Provider,
        after: EventCursor,
        limit: i64,
    ) -> Result<Vec<PulledEvent>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, coalesce(commit_xid, '0'::xid8)::text::bigint AS xid, provider, event_id,
                    event_type, body, received_at, reply_client, message_id
               FROM webhook_inbox
              WHERE provider = $1
                AND (coalesce(commit_xid, '0'::xid8), id) > ($2::bigint::text::xid8, $3)
                AND coalesce(commit_xid, '0'::xid8) < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY coalesce(commit_xid, '0'::xid8), id
              LIMIT $4",
        )
        .bind(provider)
        .bind(after.xid)
        .bind(after.id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}

impl Store {
    /// Up to `limit` replies after `after` in the `inbound` feed (see the
    /// module docs): those routed to `client`, or all of them (`None`, an
    /// admin), unroutable ones included.
    pub async fn pull_replies(
        &self,
        client: Option<&str>,
        after: EventCursor,
        limit: i64,
    ) -> Result<Vec<PulledEvent>, sqlx::Error> {
        // Two statements, so each reads its own partial index.
        let sql = |filter: &str| {
            format!(
                "SELECT id, reply_xid::text::bigint AS xid, provider, event_id, event_type, body,
                        received_at, reply_client, message_id
                   FROM webhook_inbox
                  WHERE reply_xid IS NOT NULL {filter}
                    AND (reply_xid, id) > ($1::bigint::text::xid8, $2)
                    AND reply_xid < pg_snapshot_xmin(pg_current_snapshot())
                  ORDER BY reply_xid, id
                  LIMIT $3"
            )
        };
        let query = match client {
            Some(_) => sql("AND reply_client = $4"),
            None => sql(""),
        };
        let mut query = sqlx::query_as(&query)
            .bind(after.xid)
            .bind(after.id)
            .bind(limit);
        if let Some(client) = client {
            query = query.bind(client);
        }
        query.fetch_all(&self.pool).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_refuse_anything_else() {
        let cursor = EventCursor { xid: 812, id: 7 };
        assert_eq!(cursor.to_string().parse::<EventCursor>(), Ok(cursor));
        for bad in ["", "7", "-7", "1--2", "a-1", "1-+2", "1-2-3", " 1-2"] {
            assert_eq!(bad.parse::<EventCursor>(), Err(()), "{bad:?}");
        }
    }
}
