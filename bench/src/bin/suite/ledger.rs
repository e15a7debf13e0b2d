//! The accounting after a run: where every accepted message ended, read
//! from Postgres, and how many times Sent (sent-sim) took each one.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sent_sim::Stats;
use sqlx::PgPool;

use crate::stack::Stack;
use crate::traffic::Recorder;

/// Where the accepted messages are, and what Sent saw.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Messages in requests the client sent (accepted or not).
    pub submitted: u64,
    /// Messages the gateway answered 202 for.
    pub accepted: u64,
    /// Accepted and delivered (or read) at the end.
    pub delivered: u64,
    /// Accepted and ended failed (Sent's verdict or our retries exhausted).
    pub failed: u64,
    /// Of `failed`, those our worker gave up on (retries exhausted, dead-lettered).
    pub dead_lettered: u64,
    /// Accepted, taken by Sent, but no final status yet.
    pub in_flight_at_sent: u64,
    /// Accepted but never taken by Sent by the end (queued or sending), or not
    /// in the database at all: lost.
    pub lost: u64,
    /// Sends Sent accepted a second time for the same message.
    pub sent_twice: u64,
    /// Repeated sends Sent answered from its idempotency cache (not sent twice).
    pub idempotent_replays: u64,
    /// Statuses at the end, for the report.
    pub statuses: BTreeMap<String, u64>,
    /// Webhook inbox rows by state.
    pub inbox: BTreeMap<String, u64>,
    pub sim: Stats,
    /// How long the backlog took to settle after the traffic stopped.
    pub settle: Duration,
}

impl Ledger {
    /// The promises: nothing accepted is lost or sent twice, and everything
    /// reaches a final status.
    pub fn broken_promises(&self) -> Vec<String> {
        let mut broken = Vec::new();
        if self.lost > 0 {
            broken.push(format!("{} accepted messages lost", self.lost));
        }
        if self.sent_twice > 0 {
            broken.push(format!("{} messages sent twice", self.sent_twice));
        }
        if self.in_flight_at_sent > 0 {
            broken.push(format!(
                "{} messages without a final status",
                self.in_flight_at_sent
            ));
        }
        if self.inbox.get("parked").copied().unwrap_or(0) > 0 {
            broken.push(format!("{} webhook events parked", self.inbox["parked"]));
        }
        broken
    }
}

pub const DELIVERED: [&str; 2] = ["delivered", "read"];
pub const FAILED: [&str; 4] = ["failed", "blocked", "filtered", "cancelled"];
const AT_SENT: [&str; 2] = ["accepted", "sent"];

/// The ledger of a run: every message `recorder` saw accepted by `stack`,
/// counted once the backlog has settled (or after `timeout`).
pub async fn of_run(
    stack: &Stack,
    recorder: &Recorder,
    timeout: Duration,
) -> anyhow::Result<Ledger> {
    let db = stack.database().await?;
    let submitted = recorder.submitted.load(Ordering::Relaxed);
    let ledger = settle(
        &db,
        &stack.sim_url,
        submitted,
        &recorder.accepted(),
        timeout,
    )
    .await;
    db.close().await;
    ledger
}

/// Waits up to `timeout` for every accepted message to reach a final status
/// and the inbox to be worked off, then counts.
async fn settle(
    db: &PgPool,
    sim_url: &str,
    submitted: u64,
    accepted: &[String],
    timeout: Duration,
) -> anyhow::Result<Ledger> {
    let started = Instant::now();
    let mut ledger;
    loop {
        ledger = count(db, sim_url, submitted, accepted).await?;
        let inbox_busy = ["pending", "unmatched"]
            .iter()
            .any(|state| ledger.inbox.get(*state).copied().unwrap_or(0) > 0);
        let settled = ledger.delivered + ledger.failed == ledger.accepted && !inbox_busy;
        if settled || started.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ledger.settle = started.elapsed();
    Ok(ledger)
}

async fn count(
    db: &PgPool,
    sim_url: &str,
    submitted: u64,
    accepted: &[String],
) -> anyhow::Result<Ledger> {
    // The same id twice would be a gateway bug; count each once.
    let unique: Vec<&str> = accepted
        .iter()
        .map(String::as_str)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut ledger = Ledger {
        submitted,
        accepted: accepted.len() as u64,
        ..Ledger::default()
    };
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM messages WHERE id = ANY($1) GROUP BY status")
            .bind(&unique)
            .fetch_all(db)
            .await?;
    let mut found = 0;
    for (status, n) in rows {
        let n = n as u64;
        found += n;
        if DELIVERED.contains(&status.as_str()) {
            ledger.delivered += n;
        } else if FAILED.contains(&status.as_str()) {
            ledger.failed += n;
        } else if AT_SENT.contains(&status.as_str()) {
            ledger.in_flight_at_sent += n;
        } else {
            ledger.lost += n;
        }
        ledger.statuses.insert(status, n);
    }
    ledger.lost += ledger.accepted - found;
    if ledger.accepted > found {
        ledger
            .statuses
            .insert("(not in the database)".into(), ledger.accepted - found);
    }
    let inbox: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM webhook_inbox GROUP BY state")
            .fetch_all(db)
            .await?;
    ledger.inbox = inbox.into_iter().map(|(s, n)| (s, n as u64)).collect();

    ledger.sim = reqwest::get(format!("{sim_url}/_sim/stats"))
        .await?
        .json()
        .await?;
    let sim = &ledger.sim;
    // One channel per message: one message at Sent per idempotency key.
    ledger.sent_twice = sim.accepted_twice
        + sim.sends_without_idempotency_key
        + sim
            .messages_created
            .saturating_sub(sim.distinct_idempotency_keys);
    ledger.idempotent_replays = sim.idempotent_replays;
    Ok(ledger)
}
