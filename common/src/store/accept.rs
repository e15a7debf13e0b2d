//! Accepting submissions: many requests' messages written in one transaction
//! (group commit), with `Idempotency-Key` claims that are safe under
//! concurrent duplicates.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Store;
use crate::domain::{Channel, MessageId, PhoneNumber};
use crate::telemetry::TraceContext;

/// A message as the gateway accepted it.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: MessageId,
    pub phone_number: PhoneNumber,
    pub template_id: Option<String>,
    pub template_name: Option<String>,
    pub parameters: Value,
    /// Free text instead of a template.
    pub text: Option<String>,
    /// https media for MMS.
    pub media_urls: Vec<String>,
    pub channels: Vec<Channel>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub sandbox: bool,
    pub callback_url: Option<String>,
    pub metadata: Value,
}

/// The claim an `Idempotency-Key` header makes.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    pub route: String,
    /// Hash of what the request asked for; a repeat with another hash is a conflict.
    pub request_hash: Vec<u8>,
}

/// One request's worth of messages and the answer it will get.
#[derive(Debug, Clone)]
pub struct Submission {
    pub client: String,
    pub idempotency: Option<IdempotencyClaim>,
    pub messages: Vec<NewMessage>,
    pub created_at: DateTime<Utc>,
    /// The request's trace, stored with each message (see the migration
    /// `message_trace_context`).
    pub trace: TraceContext,
    pub response_status: u16,
    pub response_body: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// Stored now; the caller enqueues its messages and answers.
    Stored,
    /// An earlier request with the same key and body: answer what it got.
    Replay { status: u16, body: Value },
    /// The key was used before with a different body.
    Conflict,
}

impl Store {
    /// Writes all submissions in one transaction and says, for each, whether it
    /// was stored or is a repeat of an earlier one.
    pub async fn submit(
        &self,
        submissions: &[Submission],
        idempotency_ttl: std::time::Duration,
    ) -> Result<Vec<SubmitOutcome>, sqlx::Error> {
        // Within one batch the first request with a key leads; later ones with
        // the same key follow it like any other repeat.
        let mut leaders: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, s) in submissions.iter().enumerate() {
            if let Some(claim) = &s.idempotency {
                leaders.entry((&s.client, &claim.key)).or_insert(i);
            }
        }
        let mut claimants: Vec<usize> = leaders.values().copied().collect();
        claimants.sort_unstable();

        let mut tx = self.pool.begin().await?;
        let won: Vec<(String, String)> = if claimants.is_empty() {
            Vec::new()
        } else {
            let ttl =
                chrono::Duration::from_std(idempotency_ttl).unwrap_or(chrono::Duration::days(1));
            let pick = |f: fn(&Submission) -> String| {
                claimants
                    .iter()
                    .map(|&i| f(&submissions[i]))
                    .collect::<Vec<_>>()
            };
            sqlx::query_as(
                "INSERT INTO idempotency_records
                   (client, idempotency_key, route, request_hash, response_status, response_body, created_at, expires_at)
                 SELECT c, k, r, h, s, b, t, t + $8::interval
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int[], $6::jsonb[], $7::timestamptz[])
                     AS u(c, k, r, h, s, b, t)
                 ON CONFLICT (client, idempotency_key) DO UPDATE
                   SET route = EXCLUDED.route, request_hash = EXCLUDED.request_hash,
                       response_status = EXCLUDED.response_status, response_body = EXCLUDED.response_body,
                       created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
                   WHERE idempotency_records.expires_at < now()
                 RETURNING client, idempotency_key",
            )
            .bind(pick(|s| s.client.clone()))
            .bind(pick(|s| s.idempotency.as_ref().unwrap().key.clone()))
            .bind(pick(|s| s.idempotency.as_ref().unwrap().route.clone()))
            .bind(claimants.iter().map(|&i| submissions[i].idempotency.as_ref().unwrap().request_hash.clone()).collect::<Vec<_>>())
            .bind(claimants.iter().map(|&i| submissions[i].response_status as i32).collect::<Vec<_>>())
            .bind(claimants.iter().map(|&i| submissions[i].response_body.clone()).collect::<Vec<_>>())
            .bind(claimants.iter().map(|&i| submissions[i].created_at).collect::<Vec<_>>())
            .bind(ttl)
            .fetch_all(&mut *tx)
            .await?
        };
        let won: std::collections::HashSet<(String, String)> = won.into_iter().collect();

        let stored: Vec<bool> = submissions
            .iter()
            .enumerate()
            .map(|(i, s)| match &s.idempotency {
                None => true,
                Some(claim) => {
                    leaders.get(&(s.client.as_str(), claim.key.as_str())) == Some(&i)
                        && won.contains(&(s.client.clone(), claim.key.clone()))
                }
            })
            .collect();

        let rows: Vec<(&Submission, &NewMessage)> = submissions
            .iter()
            .zip(&stored)
            .filter(|(_, stored)| **stored)
            .flat_map(|(s, _)| s.messages.iter().map(move |m| (s, m)))
            .collect();
        if !rows.is_empty() {
            insert_messages(&mut tx, &rows).await?;
        }
        tx.commit().await?;

        let mut outcomes = Vec::with_capacity(submissions.len());
        let mut earlier: HashMap<(String, String), (Vec<u8>, i32, Value)> = HashMap::new();
        let repeats: Vec<&Submission> = submissions
            .iter()
            .zip(&stored)
            .filter(|(_, s)| !**s)
            .map(|(s, _)| s)
            .collect();
        if !repeats.is_empty() {
            let found: Vec<(String, String, Vec<u8>, i32, Value)> = sqlx::query_as(
                "SELECT r.client, r.idempotency_key, r.request_hash, r.response_status, r.response_body
                   FROM idempotency_records r
                   JOIN unnest($1::text[], $2::text[]) AS u(c, k) ON r.client = u.c AND r.idempotency_key = u.k",
            )
            .bind(repeats.iter().map(|s| s.client.clone()).collect::<Vec<_>>())
            .bind(repeats.iter().map(|s| s.idempotency.as_ref().unwrap().key.clone()).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await?;
            earlier = found
                .into_iter()
                .map(|(c, k, h, s, b)| ((c, k), (h, s, b)))
                .collect();
        }
        for (s, stored) in submissions.iter().zip(stored) {
            if stored {
                outcomes.push(SubmitOutcome::Stored);
                continue;
            }
            let claim = s
                .idempotency
                .as_ref()
                .expect("only keyed submissions repeat");
            outcomes.push(match earlier.get(&(s.client.clone(), claim.key.clone())) {
                Some((hash, status, body)) if *hash == claim.request_hash => {
                    SubmitOutcome::Replay {
                        status: *status as u16,
                        body: body.clone(),
                    }
                }
                _ => SubmitOutcome::Conflict,
            });
        }
        Ok(outcomes)
    }

    /// Undoes `submit` for submissions whose jobs could not be enqueued, so a
    /// client that was answered 503 has left nothing behind.
    pub async fn withdraw(&self, submissions: &[&Submission]) -> Result<(), sqlx::Error> {
        let ids: Vec<String> = submissions
            .iter()
            .flat_map(|s| s.messages.iter().map(|m| m.id.to_string()))
            .collect();
        let keyed: Vec<(String, String)> = submissions
            .iter()
            .filter_map(|s| {
                s.idempotency
                    .as_ref()
                    .map(|c| (s.client.clone(), c.key.clone()))
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        // The timeline has no foreign key (migrations/
        // 20261214000001_timeline_keys_kept_by_writers.sql): the messages'
        // events go in the same statement. `= ANY($1)` lets Postgres plan only
        // their weeks.
        sqlx::query(
            "WITH gone AS (
               DELETE FROM messages WHERE id = ANY($1) AND status IN ('queued', 'scheduled') RETURNING id
             )
             DELETE FROM message_events WHERE message_id = ANY($1) AND message_id IN (SELECT id FROM gone)",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM idempotency_records r USING unnest($1::text[], $2::text[]) AS u(c, k)
              WHERE r.client = u.c AND r.idempotency_key = u.k",
        )
        .bind(keyed.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
        .bind(keyed.iter().map(|k| k.1.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
}

async fn insert_messages(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[(&Submission, &NewMessage)],
) -> Result<(), sqlx::Error> {
    let col = |f: fn(&Submission, &NewMessage) -> Option<String>| {
        rows.iter().map(|(s, m)| f(s, m)).collect::<Vec<_>>()
    };
    // A message with a time is held by the gateway (`scheduled`) until its
    // job comes due; the rest are `queued` at once.
    sqlx::query(
        "WITH inserted AS (
           INSERT INTO messages (id, client, idempotency_key, phone_number, template_id, template_name,
                                 parameters, text, media_urls, channels, scheduled_at, sandbox, callback_url,
                                 metadata, created_at, updated_at, trace_context, status)
           SELECT id, client, key, phone, tid, tname, params, txt,
                  coalesce(ARRAY(SELECT jsonb_array_elements_text(media)), '{}'),
                  string_to_array(chans, ','), sched, sandbox, cb, meta, created, created, trace,
                  CASE WHEN sched IS NULL THEN 'queued' ELSE 'scheduled' END
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[],
                         $8::text[], $9::timestamptz[], $10::bool[], $11::text[], $12::jsonb[], $13::timestamptz[],
                         $14::jsonb[], $15::text[], $16::jsonb[])
               AS u(id, client, key, phone, tid, tname, params, chans, sched, sandbox, cb, meta, created, trace,
                    txt, media)
           RETURNING id, client, created_at, status, scheduled_at
         )
         INSERT INTO message_events (message_id, status, source, at, client, detail)
         SELECT id, status, 'gateway', created_at, client,
                CASE WHEN scheduled_at IS NOT NULL THEN jsonb_build_object('scheduled_at', scheduled_at) END
           FROM inserted",
    )
    .bind(col(|_, m| Some(m.id.to_string())))
    .bind(col(|s, _| Some(s.client.clone())))
    .bind(col(|s, _| s.idempotency.as_ref().map(|c| c.key.clone())))
    .bind(col(|_, m| Some(m.phone_number.to_string())))
    .bind(col(|_, m| m.template_id.clone()))
    .bind(col(|_, m| m.template_name.clone()))
    .bind(rows.iter().map(|(_, m)| m.parameters.clone()).collect::<Vec<_>>())
    .bind(col(|_, m| {
        Some(m.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(","))
    }))
    .bind(rows.iter().map(|(_, m)| m.scheduled_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.sandbox).collect::<Vec<_>>())
    .bind(col(|_, m| m.callback_url.clone()))
    .bind(rows.iter().map(|(_, m)| m.metadata.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(s, _)| s.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(s, _)| trace_column(&s.trace)).collect::<Vec<_>>())
    .bind(col(|_, m| m.text.clone()))
    .bind(rows.iter().map(|(_, m)| Value::from(m.media_urls.clone())).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// NULL for no trace, rather than `{}` in every row.
fn trace_column(trace: &TraceContext) -> Option<Value> {
    (!trace.is_empty()).then(|| serde_json::to_value(trace).expect("a string map serializes"))
}
