//! The webhook inbox: every verified inbound event, stored before it is
//! acknowledged, then processed by the worker.
//!
//! Life of a row: `pending` (due at its queue row's `next_attempt_at`) is
//! claimed by one worker at a time (the queue row's lease), then becomes
//! `processed`, `not_applicable`, `unmatched` (waiting for the send record
//! that carries its message id), `pending` again with a later
//! `next_attempt_at` (retry), or `parked` (poison, or waited too long for its
//! message).
//!
//! An event is in `webhook_inbox_queue` while it is `pending` or `unmatched`
//! (migrations/20261214000000_inbox_queue_apart.sql): claims and leases
//! write that narrow row, and the event's own row is written once more, when
//! its outcome is known, with a HOT update (no index of the inbox names a
//! column the finish of a status event writes; a reply's routing writes
//! `reply_xid`, which the replies' indexes name).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::types::Json;

use super::Store;
use crate::domain::{MessageId, Provider};
use crate::telemetry::TraceContext;

/// Unmatched events the housekeeping statements take at most a call
/// ([`Store::rematch_inbox`], [`Store::expire_unmatched_inbox`]).
pub const INBOX_HOUSEKEEPING_BATCH: u64 = 1_000;

#[derive(Debug, Clone)]
pub struct InboxInsert {
    pub provider: Provider,
    pub event_id: String,
    pub event_type: Option<String>,
    pub headers: Value,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxInsertOutcome {
    Stored,
    /// Stored, and flagged: its event id was already stored with another body.
    StoredReusedEventId,
    /// Its body is already stored: the same event again.
    Duplicate,
}

/// A claimed event, to be processed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxEvent {
    pub id: i64,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: Option<String>,
    pub body: Vec<u8>,
    /// Attempts including this one; also the claim's fencing token.
    pub attempts: i32,
    pub received_at: DateTime<Utc>,
}

/// A stored row as operators and tests see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRecord {
    pub id: i64,
    pub provider: Provider,
    pub event_id: String,
    pub event_type: Option<String>,
    pub headers: Value,
    pub body: Vec<u8>,
    pub received_at: DateTime<Utc>,
    pub state: String,
    pub attempts: i32,
    /// When it is due again (its queue row's); `None` once finished.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
    pub subject_id: Option<String>,
    pub message_id: Option<String>,
    /// The event id was already stored with another body.
    pub event_id_reused: bool,
    /// A reply's routing: `routed` (to `reply_client`) or `unroutable`.
    pub reply_state: Option<String>,
    pub reply_client: Option<String>,
}

/// How processing of a claimed event ended.
#[derive(Debug, Clone, PartialEq)]
pub enum InboxResult {
    /// Applied to these messages (our ids).
    Processed { message_ids: Vec<String> },
    /// Stored for the record; nothing for us to do (inbound, other families).
    NotApplicable,
    /// Handed to its forwarding destinations (`webhook_forwards`), which
    /// deliver it from here: `processed` in the inbox.
    Forwarded,
    /// A contact's message (`message.received`), routed to the tenant that
    /// last wrote to its number (`None`: unroutable): `processed`, with the
    /// route recorded for the pull API's `inbound` source.
    Reply { route: Option<ReplyRoute> },
    /// About Sent's message `subject_id`, which no message of ours carries yet.
    Unmatched { subject_id: String },
    /// Failed; try again at `at`.
    Retry { at: DateTime<Utc>, error: String },
    /// Failed for good (poison): kept with its error for an operator.
    Parked { error: String },
}

/// Whose a reply is: the tenant (API key name) and our message it answers
/// (the tenant's latest to that number).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyRoute {
    pub client: String,
    pub message_id: String,
}

/// The outcome of one claimed event; `attempts` must be the claim's value.
#[derive(Debug, Clone)]
pub struct InboxFinish {
    pub id: i64,
    pub attempts: i32,
    pub result: InboxResult,
}

/// An event with its queue row, if it has one (`w`, `q`): while queued, the
/// queue's attempts are the current ones.
const RECORDS: &str =
    "SELECT w.id, provider, event_id, event_type, headers, body, received_at, state,
        coalesce(q.attempts, w.attempts) AS attempts, q.next_attempt_at, last_error, processed_at,
        subject_id, message_id, event_id_reused, reply_state, reply_client
   FROM webhook_inbox w LEFT JOIN webhook_inbox_queue q ON q.id = w.id";

impl Store {
    /// Stores a batch of events in one transaction; a body already in the
    /// inbox (for the provider) is a duplicate delivery and is not stored
    /// again, whatever its event id. The table's trigger queues the stored
    /// events and wakes the workers (`webhook_inbox` notification) when this
    /// commits.
    pub async fn insert_inbox(
        &self,
        events: &[InboxInsert],
    ) -> Result<Vec<InboxInsertOutcome>, sqlx::Error> {
        Store::insert_inbox_with(&self.pool, events).await
    }

    /// [`Store::insert_inbox`] on a given connection (or the pool): the
    /// gateway's committers keep one connection through a burst of batches
    /// instead of taking one from the pool (and pinging it) for each.
    pub async fn insert_inbox_with<'e>(
        executor: impl sqlx::PgExecutor<'e>,
        events: &[InboxInsert],
    ) -> Result<Vec<InboxInsertOutcome>, sqlx::Error> {
        let stored: Vec<(Provider, Vec<u8>, bool)> = sqlx::query_as(
            "INSERT INTO webhook_inbox (provider, event_id, event_type, headers, body, event_id_reused)
             SELECT p, e, t, h, b,
                    EXISTS (SELECT 1 FROM webhook_inbox w WHERE w.provider = p AND w.event_id = e)
               FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::bytea[]) AS u(p, e, t, h, b)
             ON CONFLICT (provider, body_sha256) DO NOTHING
             RETURNING provider, body_sha256, event_id_reused",
        )
        .bind(events.iter().map(|e| e.provider).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.event_type.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| &e.headers).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.body.as_slice()).collect::<Vec<_>>())
        .fetch_all(executor)
        .await?;
        // The same body twice in one batch is stored once: the first counts.
        let mut fresh: HashMap<(Provider, Vec<u8>), bool> = stored
            .into_iter()
            .map(|(provider, hash, reused)| ((provider, hash), reused))
            .collect();
        Ok(events
            .iter()
            .map(|e| {
                let key = (e.provider, Sha256::digest(&e.body).to_vec());
                match fresh.remove(&key) {
                    Some(false) => InboxInsertOutcome::Stored,
                    Some(true) => InboxInsertOutcome::StoredReusedEventId,
                    None => InboxInsertOutcome::Duplicate,
                }
            })
            .collect())
    }

    /// Claims up to `limit` due events for this worker, oldest first. The
    /// claim is a lease: the rows stay `pending` but are not due again for
    /// `lease`, so a worker that dies mid-way loses nothing. Rows another
    /// worker is claiming at the same moment are skipped, not waited for.
    pub async fn claim_inbox(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<InboxEvent>, sqlx::Error> {
        // A function: its plan must walk the due index (migrations/20261218000000).
        let mut events: Vec<InboxEvent> =
            sqlx::query_as("SELECT * FROM webhook_inbox_claim($1, $2)")
                .bind(limit)
                .bind(interval(lease))
                .fetch_all(&self.pool)
                .await?;
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    /// Records how claimed events ended, all in one statement. A row whose
    /// `attempts` moved on (its lease expired and another worker claimed it)
    /// is left to that worker. An event going `unmatched` whose message
    /// appeared meanwhile is made due again instead.
    pub async fn finish_inbox(&self, done: &[InboxFinish]) -> Result<(), sqlx::Error> {
        if done.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(done.len());
        let mut attempts = Vec::with_capacity(done.len());
        let mut states = Vec::with_capacity(done.len());
        let mut next = Vec::with_capacity(done.len());
        let mut errors = Vec::with_capacity(done.len());
        let mut subjects = Vec::with_capacity(done.len());
        let mut messages = Vec::with_capacity(done.len());
        let mut replies: Vec<Option<&str>> = Vec::with_capacity(done.len());
        let mut reply_clients: Vec<Option<&str>> = Vec::with_capacity(done.len());
        for finish in done {
            let (reply, reply_client) = match &finish.result {
                InboxResult::Reply { route: Some(route) } => {
                    (Some("routed"), Some(route.client.as_str()))
                }
                InboxResult::Reply { route: None } => (Some("unroutable"), None),
                _ => (None, None),
            };
            replies.push(reply);
            reply_clients.push(reply_client);
            ids.push(finish.id);
            attempts.push(finish.attempts);
            let (state, at, error, subject, message) = match &finish.result {
                InboxResult::Processed { message_ids } => {
                    ("processed", None, None, None, Some(message_ids.join(",")))
                }
                InboxResult::NotApplicable => ("not_applicable", None, None, None, None),
                InboxResult::Forwarded => ("processed", None, None, None, None),
                InboxResult::Reply { route } => (
                    "processed",
                    None,
                    None,
                    None,
                    route.as_ref().map(|r| r.message_id.clone()),
                ),
                InboxResult::Unmatched { subject_id } => {
                    ("unmatched", None, None, Some(subject_id.clone()), None)
                }
                InboxResult::Retry { at, error } => {
                    ("pending", Some(*at), Some(error.clone()), None, None)
                }
                InboxResult::Parked { error } => ("parked", None, Some(error.clone()), None, None),
            };
            states.push(state);
            next.push(at);
            errors.push(error);
            subjects.push(subject);
            messages.push(message);
        }
        // An event found no message, but the message's ids may have been
        // stored since (an acceptance wakes only the events waiting when its
        // wake runs, not those being processed): then it goes back to
        // pending. Only batches with such an event look for messages.
        let state = if states.contains(&"unmatched") {
            "CASE WHEN u.state = 'unmatched' AND EXISTS (SELECT 1 FROM messages_carrying(ARRAY[u.subject]))
                  THEN 'pending' ELSE u.state END"
        } else {
            "u.state"
        };
        // The queue row decides: a claim whose lease ended and that another
        // worker took since (its `attempts` moved on) changes nothing. An
        // event with work left keeps its queue row (due again, or waiting
        // for its Sent id); the others leave the queue. Rows are named by
        // arrays of ids, which keeps each step a probe of a key whatever
        // Postgres estimates of the CTEs (joined, it may read a whole
        // backlog's queue, or the whole inbox).
        sqlx::query(&format!(
            "WITH u AS (
               SELECT u.id, u.attempts, {state} AS state, u.next_at, u.error, u.subject, u.message,
                      u.reply, u.reply_client
                 FROM unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
                             $7::text[], $8::text[], $9::text[])
                      AS u(id, attempts, state, next_at, error, subject, message, reply, reply_client)
             ), ended AS (
               DELETE FROM webhook_inbox_queue q USING u
                WHERE q.id = ANY($1) AND q.id = u.id AND q.attempts = u.attempts AND q.waiting_for IS NULL
                  AND u.state NOT IN ('pending', 'unmatched')
               RETURNING q.id
             ), kept AS (
               UPDATE webhook_inbox_queue q
                  SET next_attempt_at = coalesce(u.next_at, now()), leased_until = NULL,
                      waiting_for = CASE WHEN u.state = 'unmatched' THEN u.subject END
                 FROM u
                WHERE q.id = ANY($1) AND q.id = u.id AND q.attempts = u.attempts AND q.waiting_for IS NULL
                  AND u.state IN ('pending', 'unmatched')
               RETURNING q.id
             )
             UPDATE webhook_inbox w
                SET state = u.state,
                    attempts = u.attempts,
                    last_error = u.error,
                    subject_id = coalesce(u.subject, w.subject_id),
                    message_id = coalesce(u.message, w.message_id),
                    processed_at = CASE WHEN u.state IN ('processed', 'not_applicable', 'parked')
                                        THEN now() END,
                    reply_state = coalesce(u.reply, w.reply_state),
                    reply_client = coalesce(u.reply_client, w.reply_client),
                    reply_xid = CASE WHEN u.reply IS NOT NULL THEN pg_current_xact_id() ELSE w.reply_xid END
               FROM u
              WHERE w.id = u.id AND w.id = ANY (ARRAY(SELECT id FROM ended UNION ALL SELECT id FROM kept))"
        ))
        .bind(&ids)
        .bind(&attempts)
        .bind(&states)
        .bind(&next)
        .bind(&errors)
        .bind(&subjects)
        .bind(&messages)
        .bind(&replies)
        .bind(&reply_clients)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The messages Sent knows by each of `provider_ids`, in one query: Sent
    /// id -> our ids (in id order) with each message's trace. Sent ids no
    /// message carries are absent.
    ///
    /// One GIN probe per Sent id and week (a lateral join in
    /// `messages_carrying`, migrations/20261218000000, whose plan is kept
    /// for the session), not one `&&` over them all: the planner estimates
    /// an overlap with a couple of hundred elements to match most of the
    /// table and scans all of it. `OFFSET 0` keeps the probe per id:
    /// flattened into a join, with weeks of `messages` not yet analyzed,
    /// Postgres chose to read every message once and test it against every
    /// id (44 ms for 100 ids at 3,000 messages, and growing with the table;
    /// 0.7 ms as probes).
    pub async fn messages_by_provider_ids(
        &self,
        provider_ids: &[&str],
    ) -> Result<HashMap<String, Vec<(MessageId, TraceContext)>>, sqlx::Error> {
        let mut found: HashMap<String, Vec<(MessageId, TraceContext)>> = HashMap::new();
        if provider_ids.is_empty() {
            return Ok(found);
        }
        let rows: Vec<(String, MessageId, Option<Json<TraceContext>>)> = sqlx::query_as(
            "SELECT sent_id, message_id, trace_context FROM messages_carrying($1)
              ORDER BY sent_id, message_id",
        )
        .bind(provider_ids)
        .fetch_all(&self.pool)
        .await?;
        for (provider_id, id, trace) in rows {
            let trace = trace.map(|t| t.0).unwrap_or_default();
            found.entry(provider_id).or_default().push((id, trace));
        }
        Ok(found)
    }

    /// Makes unmatched events whose message now exists due again (the safety
    /// net behind the wake of [`Store::record_accepted_many`]), up to
    /// [`INBOX_HOUSEKEEPING_BATCH`] a call, and wakes the workers when it
    /// found any (`webhook_inbox_wake`, migrations/20261217000000). Returns
    /// how many: more than the batch when events share a Sent id.
    ///
    /// With `lookback`, only events that started waiting that long ago or
    /// later (`webhook_inbox_queue_waiting_since`): the acceptance misses
    /// only an event set waiting while its message's ids were being stored,
    /// so the caller looks back past its previous pass, and everywhere
    /// (`None`) at start and every ten minutes. One GIN probe per event and
    /// week (`messages_carrying`: a function call, never a semi-join that
    /// may read every message).
    pub async fn rematch_inbox(&self, lookback: Option<Duration>) -> Result<u64, sqlx::Error> {
        let woken: i64 = sqlx::query_scalar(
            "SELECT webhook_inbox_wake(ARRAY(
               SELECT waiting_for FROM webhook_inbox_queue q
                WHERE waiting_for IS NOT NULL
                  AND ($2::interval IS NULL OR next_attempt_at >= now() - $2::interval)
                  AND EXISTS (SELECT 1 FROM messages_carrying(ARRAY[q.waiting_for]))
                ORDER BY next_attempt_at LIMIT $1))",
        )
        .bind(INBOX_HOUSEKEEPING_BATCH as i64)
        .bind(lookback.map(interval))
        .fetch_one(&self.pool)
        .await?;
        Ok(woken as u64)
    }

    /// Parks unmatched events received more than `max_wait` ago, up to
    /// [`INBOX_HOUSEKEEPING_BATCH`] a call: their send record is not coming.
    /// Returns how many.
    ///
    /// A call looks at the oldest waiting events only (`head`, by id: inbox
    /// ids grow with the time an event was received), not every waiting
    /// event's inbox row: a pass costs a batch of probes however many events
    /// wait. A full batch of expired events makes the caller call again. A
    /// queue row left without its event (deleted by hand) goes too.
    pub async fn expire_unmatched_inbox(&self, max_wait: Duration) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(
            "WITH head AS (
               SELECT id, coalesce((SELECT received_at FROM webhook_inbox w WHERE w.id = q.id) < now() - $1::interval,
                                   true) AS old
                 FROM webhook_inbox_queue q
                WHERE waiting_for IS NOT NULL
                ORDER BY id LIMIT $2
             ), found AS (
               SELECT id FROM webhook_inbox_queue
                WHERE id = ANY (ARRAY(SELECT id FROM head WHERE old)) AND waiting_for IS NOT NULL
                  FOR UPDATE SKIP LOCKED
             ), expired AS (
               DELETE FROM webhook_inbox_queue WHERE id = ANY (ARRAY(SELECT id FROM found)) RETURNING id
             )
             UPDATE webhook_inbox
                SET state = 'parked', processed_at = now(),
                    last_error = 'no message with Sent id ' || coalesce(subject_id, '?') || ' after waiting ' || $1::interval
              WHERE id = ANY (ARRAY(SELECT id FROM expired))",
        )
        .bind(interval(max_wait))
        .bind(INBOX_HOUSEKEEPING_BATCH as i64)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Puts parked events (all, or these inbox ids) back to `pending` with
    /// their attempts reset, and wakes the workers. Returns their ids; ids
    /// that are not parked are left alone.
    pub async fn redrive_inbox(&self, ids: Option<&[i64]>) -> Result<Vec<i64>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64,)> = sqlx::query_as(
            "WITH redriven AS (
               UPDATE webhook_inbox SET state = 'pending', attempts = 0, processed_at = NULL
                WHERE state = 'parked' AND ($1::bigint[] IS NULL OR id = ANY($1))
               RETURNING id
             ), queued AS (
               INSERT INTO webhook_inbox_queue (id) SELECT id FROM redriven
               ON CONFLICT (id) DO UPDATE
                  SET next_attempt_at = now(), attempts = 0, leased_until = NULL, waiting_for = NULL
             )
             SELECT id FROM redriven",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        if !rows.is_empty() {
            sqlx::query("SELECT pg_notify('webhook_inbox', '')")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let mut ids: Vec<i64> = rows.into_iter().map(|(id,)| id).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    pub async fn inbox_event(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<Option<InboxRecord>, sqlx::Error> {
        sqlx::query_as(&format!("{RECORDS} WHERE provider = $1 AND event_id = $2"))
            .bind(provider)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The inbox, oldest first, optionally only one provider's events.
    pub async fn inbox_events(
        &self,
        provider: Option<&str>,
    ) -> Result<Vec<InboxRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "{RECORDS} WHERE $1::text IS NULL OR provider = $1 ORDER BY w.id"
        ))
        .bind(provider)
        .fetch_all(&self.pool)
        .await
    }
}

/// `d` as a Postgres interval, which counts microseconds (sqlx refuses a
/// finer one).
pub(super) fn interval(d: Duration) -> chrono::Duration {
    i64::try_from(d.as_micros()).map_or(chrono::Duration::days(365), chrono::Duration::microseconds)
}
