//! Applies stored webhook events (the inbox) to messages.
//!
//! Due events are claimed in batches (`FOR UPDATE SKIP LOCKED` in one short
//! statement that leases them), so any number of workers can share the
//! inbox, and each worker works on `INBOX_CONCURRENCY` batches at once. A
//! worker wakes on the `webhook_inbox` notification that the gateway's insert
//! sends on commit, and also polls, so a lost notification only delays an
//! event by one poll interval.
//!
//! Sent's `message.*` events become status changes through
//! `Store::change_statuses`, a whole batch at a time (in the order the
//! changes happened at Sent): every event lands in the message's timeline,
//! but the status only ever moves forward, so events may arrive in any order.
//! An event for a Sent id no message carries yet waits as `unmatched` until
//! the send record appears (the statement that stores its Sent ids makes it
//! due again; a periodic re-check backs that up), for at most
//! `INBOX_UNMATCHED_TTL_SECS`.
//! Failed processing is retried with exponential backoff and, after
//! `INBOX_MAX_ATTEMPTS`, parked with its error (`worker inbox-redrive` puts
//! parked events back); a batch the database refuses is applied event by
//! event, so one bad event fails alone. Stripe and Telegram events go to
//! their forwarding destinations when configured ([`crate::forward`]: a
//! `webhook_forwards` row each, the event `processed`). Other families (and
//! providers without a destination) are kept as `not_applicable`.
//!
//! # Replies
//!
//! A `message.received` (a contact writing to one of our numbers) is routed
//! to the tenant whose message to that number is the newest created within
//! `REPLY_WINDOW_DAYS` (`Store::reply_targets`), and the route is recorded
//! on the inbox row (`reply_state`, `reply_client`, and `message_id`, the
//! message it answers), so the pull API's `inbound` source shows it to that
//! tenant (and to admins). When the tenant has an inbound URL
//! (`INBOUND_URLS` for keys of `API_KEYS`, `api_keys.inbound_url` for
//! managed ones), a `message.inbound` callback is queued in the outbox and
//! delivered like status callbacks ([`crate::callbacks`]). A reply from a
//! number nobody wrote to in the window is `unroutable`: kept, readable by
//! admins, counted (`worker_replies_total{outcome="unroutable"}`).
//!
//! Housekeeping (a task of its own in each worker): the unmatched re-check,
//! and the purge of finished rows past their retention ([`crate::purge`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::config::Config;
use common::domain::{MessageId, MessageStatus, Provider, api_time};
use common::sent::webhook::{self, InboundMessage, Parsed, StatusUpdate};
use common::store::{
    INBOX_HOUSEKEEPING_BATCH, InboxEvent, InboxFinish, InboxResult, NewInboundCallback, ReplyRoute,
    StatusChange, Store,
};
use common::telemetry::TraceContext;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

use crate::batches::in_batches;
use crate::deliveries::NextClaim;
use crate::listen::listen;
use crate::purge::{PURGE_INTERVAL, purge_and_log};

/// Notification channel the inbox's insert trigger uses.
pub const CHANNEL: &str = "webhook_inbox";

/// Processes the inbox until `shutdown` is cancelled, up to
/// `INBOX_CONCURRENCY` batches at a time. The batches in hand are finished
/// first; anything claimed but not finished is picked up again by some
/// worker when its lease ends.
///
/// Notifications (and polling) wake one lane only, the leader. A lane that
/// claims a full batch wakes a helper lane before working on it, so a backlog
/// is worked on by every lane, while a trickle of events is taken by the
/// leader alone, in batches of whatever arrived since its last claim (at
/// most one claim every [`CLAIM_GAP`]): waking a lane per notification would
/// split a steady stream into batches of a few events, each paying four
/// statements.
pub async fn run(
    store: Store,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let leader = Arc::new(Notify::new());
    let helpers = Arc::new(Notify::new());
    let listener = tokio::spawn(
        listen(store.clone(), CHANNEL, leader.clone(), shutdown.clone()).with_current_subscriber(),
    );
    tracing::info!(
        batches = config.inbox.concurrency,
        batch_size = config.inbox.batch_size,
        "inbox processor started"
    );
    // Tasks log through the caller's subscriber (a test may capture it).
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (store, config, shutdown) = (store.clone(), config.clone(), shutdown.clone());
        tasks.spawn(
            async move { housekeeping_loop(&store, &config, &shutdown).await }
                .with_current_subscriber(),
        );
    }
    for lane in 0..config.inbox.concurrency {
        let (store, config, shutdown, helpers) = (
            store.clone(),
            config.clone(),
            shutdown.clone(),
            helpers.clone(),
        );
        let wake = if lane == 0 {
            leader.clone()
        } else {
            helpers.clone()
        };
        tasks.spawn(
            async move { process_lane(&store, &config, &wake, &helpers, &shutdown).await }
                .with_current_subscriber(),
        );
    }
    while tasks.join_next().await.is_some() {}
    listener.abort();
    tracing::info!("inbox processor stopped");
    Ok(())
}

/// Claims of a lane that took less than a full batch at least this far
/// apart (a full batch is followed at once). A batch of status events costs
/// four statements, each planned for its batch, whatever its size, and a
/// leader woken by every commit of the gateway's inbox claimed 3 events at
/// a time in the whole loop at 150 operations/s. Spaced 50 ms, a claim
/// takes what came due meanwhile (10 events there), and the inbox's
/// statements took half the Postgres time they took (`bench/load.sh`
/// profiled by statement; see the README). A status is at most this much
/// later.
const CLAIM_GAP: Duration = Duration::from_millis(50);

/// One batch at a time until `shutdown`, woken by `wake` (or the poll
/// interval), claims at least [`CLAIM_GAP`] apart unless the last was full;
/// a full batch wakes one of the `helpers`.
async fn process_lane(
    store: &Store,
    config: &Config,
    wake: &Notify,
    helpers: &Notify,
    shutdown: &CancellationToken,
) {
    let settings = &config.inbox;
    let mut next_claim = NextClaim::new(CLAIM_GAP);
    while !shutdown.is_cancelled() {
        if !next_claim.ready(shutdown).await {
            break;
        }
        let at = Instant::now();
        let more = match process_due(store, config, || helpers.notify_one()).await {
            Ok(claimed) => claimed as i64 >= settings.batch_size,
            Err(error) => {
                tracing::warn!(%error, "inbox: could not claim events; will retry");
                false
            }
        };
        next_claim.after(at, more);
        if more {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
}

/// The unmatched re-check every `INBOX_REMATCH_INTERVAL_SECS`, and the purge
/// every ten minutes (the first of each at start), until `shutdown`. A
/// re-check looks at the events that started waiting since the previous
/// complete one began, and [`REMATCH_MARGIN`] before; the one a purge
/// follows (at start, then every ten minutes) at every waiting event.
async fn housekeeping_loop(store: &Store, config: &Config, shutdown: &CancellationToken) {
    let mut next_purge = Instant::now();
    let mut last_pass: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let lookback = last_pass
            .filter(|_| started < next_purge)
            .map(|at| at.elapsed() + REMATCH_MARGIN);
        match housekeeping(store, config, lookback).await {
            Ok(true) => last_pass = Some(started),
            // Stopped at its limit: the next pass looks back as far again.
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "inbox housekeeping failed"),
        }
        if Instant::now() >= next_purge {
            purge_and_log(store, config).await;
            next_purge = Instant::now() + PURGE_INTERVAL;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(config.inbox.rematch_interval) => {}
        }
    }
}

/// Claims one batch of due events, processes it and records the outcomes.
/// Returns how many events were claimed.
///
/// A batch costs four statements whatever its size: the claim, one lookup of
/// every Sent id it names, the status changes (`Store::change_statuses`, one
/// statement per round of distinct messages), and the outcomes, rather than
/// a statement (and a commit) per event.
/// `on_full_batch` runs when the claim was a full batch (more are likely due).
pub async fn process_due(
    store: &Store,
    config: &Config,
    on_full_batch: impl FnOnce(),
) -> Result<usize, sqlx::Error> {
    let settings = &config.inbox;
    let started = Instant::now();
    let events = store
        .claim_inbox(settings.batch_size, settings.lease)
        .await?;
    if events.is_empty() {
        return Ok(0);
    }
    if events.len() as i64 >= settings.batch_size {
        on_full_batch();
    }
    let claimed = events.len();
    let claim_ms = started.elapsed().as_secs_f64() * 1000.0;
    let finished = process_batch(store, config, &events).await;
    let apply_ms = started.elapsed().as_secs_f64() * 1000.0 - claim_ms;
    store.finish_inbox(&finished).await?;
    for finish in &finished {
        let outcome = match &finish.result {
            InboxResult::Reply { route } => {
                let outcome = if route.is_some() {
                    "routed"
                } else {
                    "unroutable"
                };
                metrics::counter!(common::metrics::REPLIES, "outcome" => outcome).increment(1);
                "reply"
            }
            InboxResult::Processed { .. } => "processed",
            InboxResult::NotApplicable => "not_applicable",
            InboxResult::Forwarded => "forwarded",
            InboxResult::Unmatched { .. } => "unmatched",
            InboxResult::Retry { .. } => "retry",
            InboxResult::Parked { .. } => "parked",
        };
        metrics::counter!(common::metrics::INBOX_EVENTS, "outcome" => outcome).increment(1);
    }
    tracing::debug!(
        events = claimed,
        claim_ms,
        apply_ms,
        finish_ms = started.elapsed().as_secs_f64() * 1000.0 - claim_ms - apply_ms,
        "inbox batch"
    );
    Ok(claimed)
}

/// Housekeeping statements a pass runs at most, each (a backlog beyond is
/// worked off over passes).
const HOUSEKEEPING_CALLS: usize = 100;

/// How far before the previous re-check a re-check looks: an event set
/// waiting by a transaction that began then (its `now()`) and committed
/// after that re-check read the queue. Transactions are far shorter; the
/// full re-check with each purge covers an acceptance that committed later
/// still (or a jump of Postgres' clock): 0.5 s at 100,000 waiting events.
const REMATCH_MARGIN: Duration = Duration::from_secs(300);

/// Re-checks unmatched events against new send records (those that started
/// waiting within `lookback`, or all), and parks the ones that waited too
/// long. Says whether the re-check went to the end (it stops after
/// [`HOUSEKEEPING_CALLS`] full batches).
pub async fn housekeeping(
    store: &Store,
    config: &Config,
    lookback: Option<Duration>,
) -> Result<bool, sqlx::Error> {
    let rematched = in_batches(HOUSEKEEPING_CALLS, INBOX_HOUSEKEEPING_BATCH, || {
        store.rematch_inbox(lookback)
    })
    .await?;
    let complete = rematched < HOUSEKEEPING_CALLS as u64 * INBOX_HOUSEKEEPING_BATCH;
    if rematched > 0 {
        tracing::info!(
            events = rematched,
            "unmatched webhook events found their message"
        );
    }
    let ttl = config.inbox.unmatched_ttl;
    let expired = in_batches(HOUSEKEEPING_CALLS, INBOX_HOUSEKEEPING_BATCH, || {
        store.expire_unmatched_inbox(ttl)
    })
    .await?;
    if expired > 0 {
        tracing::warn!(
            events = expired,
            "unmatched webhook events parked: their message never appeared"
        );
    }
    Ok(complete)
}

/// The outcome of every claimed event, in the order of `events`.
async fn process_batch(store: &Store, config: &Config, events: &[InboxEvent]) -> Vec<InboxFinish> {
    let mut results: Vec<Option<InboxResult>> = vec![None; events.len()];
    // Understand each event; status updates go on to be applied.
    let mut updates: Vec<(usize, StatusUpdate)> = Vec::new();
    // Stripe and Telegram events with a destination are forwarded.
    let mut forwarded: Vec<usize> = Vec::new();
    let mut forwards = Vec::new();
    // Replies (`message.received`) go on to be routed.
    let mut replies: Vec<(usize, InboundMessage)> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let to = crate::forward::forwards_for(config, event);
        if !to.is_empty() {
            forwarded.push(i);
            forwards.extend(to);
            continue;
        }
        match understand(event) {
            Ok(Parsed::Status(update)) => updates.push((i, update)),
            Ok(Parsed::Inbound(inbound)) => replies.push((i, inbound)),
            Ok(Parsed::NotApplicable(why)) => {
                tracing::debug!(inbox_id = event.id, event_id = %event.event_id, why, "webhook event not applicable");
                results[i] = Some(InboxResult::NotApplicable);
            }
            Err(error) => results[i] = Some(failure(config, event, error)),
        }
    }
    match store.insert_forwards(&forwards).await {
        Ok(created) => {
            for i in forwarded {
                results[i] = Some(InboxResult::Forwarded);
            }
            for (source, destination) in created {
                metrics::counter!(common::metrics::FORWARDS_RECEIVED,
                    "source" => source.as_str(), "destination" => destination)
                .increment(1);
            }
        }
        Err(error) => {
            for i in forwarded {
                results[i] = Some(failure(config, &events[i], format!("database: {error}")));
            }
        }
    }
    if !replies.is_empty() {
        route_replies(store, config, events, &replies, &mut results).await;
    }
    // Applied in the order the changes happened at Sent, so that a batch
    // holding both a late `sent` and its `delivered` records both as progress.
    updates.sort_by_key(|(i, update)| (update.at, events[*i].id));
    if !updates.is_empty() {
        let mut subjects: Vec<&str> = updates
            .iter()
            .map(|(_, u)| u.sent_message_id.as_str())
            .collect();
        subjects.sort_unstable();
        subjects.dedup();
        match store.messages_by_provider_ids(&subjects).await {
            Ok(messages) => apply(store, config, events, &updates, &messages, &mut results).await,
            Err(error) => {
                for (i, _) in &updates {
                    results[*i] = Some(failure(config, &events[*i], format!("database: {error}")));
                }
            }
        }
    }
    events
        .iter()
        .zip(results)
        .map(|(event, result)| InboxFinish {
            id: event.id,
            attempts: event.attempts,
            result: result.expect("every event has an outcome"),
        })
        .collect()
}

/// Routes each reply to the tenant that last wrote to its contact, and
/// queues a `message.inbound` callback for each routed to a tenant with an
/// inbound URL: two statements for the batch. A reply whose contact is not
/// a valid number, or one nobody wrote to within the window, is unroutable.
async fn route_replies(
    store: &Store,
    config: &Config,
    events: &[InboxEvent],
    replies: &[(usize, InboundMessage)],
    results: &mut [Option<InboxResult>],
) {
    let contacts: Vec<Option<_>> = replies.iter().map(|(_, r)| r.contact()).collect();
    let mut numbers: Vec<&str> = contacts.iter().flatten().map(|c| c.as_str()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    let fail = |results: &mut [Option<InboxResult>], error: String| {
        for (i, _) in replies {
            results[*i] = Some(failure(config, &events[*i], error.clone()));
        }
    };
    let targets = match store.reply_targets(&numbers, config.replies.window).await {
        Ok(targets) => targets,
        Err(error) => return fail(results, format!("database: {error}")),
    };
    let mut routes = Vec::with_capacity(replies.len());
    let mut callbacks = Vec::new();
    for ((i, reply), contact) in replies.iter().zip(&contacts) {
        let event = &events[*i];
        let Some(target) = contact.as_ref().and_then(|c| targets.get(c.as_str())) else {
            // Never the number: it is the contact's.
            tracing::info!(inbox_id = event.id, event_id = %event.event_id, "reply unroutable: no message to its number within REPLY_WINDOW_DAYS");
            routes.push((*i, None));
            continue;
        };
        let url = config
            .replies
            .inbound_urls
            .get(&target.client)
            .or(target.inbound_url.as_ref());
        tracing::debug!(inbox_id = event.id, event_id = %event.event_id, client = %target.client,
            in_reply_to = %target.message_id, callback = url.is_some(), "reply routed");
        if let Some(url) = url {
            callbacks.push(NewInboundCallback {
                inbox_id: event.id,
                client: target.client.clone(),
                url: url.clone(),
                payload: reply.payload(&event.event_id, Some(&target.message_id)),
                at: reply.received_at,
            });
        }
        routes.push((
            *i,
            Some(ReplyRoute {
                client: target.client.clone(),
                message_id: target.message_id.clone(),
            }),
        ));
    }
    if let Err(error) = store.insert_inbound_callbacks(&callbacks).await {
        return fail(results, format!("database: {error}"));
    }
    for (i, route) in routes {
        results[i] = Some(InboxResult::Reply { route });
    }
}

/// Applies the status updates whose messages exist, all in one call; the
/// others wait as `unmatched`. Should the batch fail, each event is applied
/// on its own, so that one bad event fails alone.
async fn apply(
    store: &Store,
    config: &Config,
    events: &[InboxEvent],
    updates: &[(usize, StatusUpdate)],
    messages: &HashMap<String, Vec<(MessageId, TraceContext)>>,
    results: &mut [Option<InboxResult>],
) {
    // (event index, our message id, the change)
    let mut changes: Vec<(usize, MessageId, StatusChange)> = Vec::new();
    for (i, update) in updates {
        match messages.get(&update.sent_message_id) {
            Some(ids) => {
                for (id, _) in ids {
                    changes.push((*i, *id, update.change(&events[*i].event_id)));
                }
            }
            None => {
                tracing::info!(
                    event_id = %events[*i].event_id,
                    sent_message_id = %update.sent_message_id,
                    event = %update.event,
                    "webhook event for a message not known yet; waiting for its send record"
                );
                results[*i] = Some(InboxResult::Unmatched {
                    subject_id: update.sent_message_id.clone(),
                });
            }
        }
    }
    if changes.is_empty() {
        return;
    }
    let updates: HashMap<usize, &StatusUpdate> = updates.iter().map(|(i, u)| (*i, u)).collect();
    let traces: HashMap<MessageId, &TraceContext> = messages
        .values()
        .flatten()
        .map(|(id, trace)| (*id, trace))
        .collect();
    let record = |results: &mut [Option<InboxResult>],
                  done: &[(usize, MessageId, StatusChange)],
                  applied: &[bool]| {
        for ((i, id, _), applied) in done.iter().zip(applied) {
            updates[i].log(id, &events[*i].event_id, *applied);
            updates[i].trace(traces[id], id, &events[*i].event_id, *applied);
            match &mut results[*i] {
                Some(InboxResult::Processed { message_ids }) => message_ids.push(id.to_string()),
                slot => {
                    *slot = Some(InboxResult::Processed {
                        message_ids: vec![id.to_string()],
                    })
                }
            }
        }
    };
    let all: Vec<(MessageId, &StatusChange)> = changes.iter().map(|(_, id, c)| (*id, c)).collect();
    match store.change_statuses(&all).await {
        Ok(applied) => record(results, &changes, &applied),
        Err(error) if changes.iter().all(|(i, _, _)| *i == changes[0].0) => {
            let i = changes[0].0;
            results[i] = Some(failure(config, &events[i], format!("database: {error}")));
        }
        Err(error) => {
            tracing::warn!(%error, changes = changes.len(), "applying a batch of webhook events failed; applying them one by one");
            let mut at = 0;
            while at < changes.len() {
                let i = changes[at].0;
                let end = at + changes[at..].iter().take_while(|(j, _, _)| *j == i).count();
                let one: Vec<(MessageId, &StatusChange)> =
                    changes[at..end].iter().map(|(_, id, c)| (*id, c)).collect();
                match store.change_statuses(&one).await {
                    Ok(applied) => record(results, &changes[at..end], &applied),
                    Err(error) => {
                        results[i] = Some(failure(config, &events[i], format!("database: {error}")))
                    }
                }
                at = end;
            }
        }
    }
}

/// A processing error: retry with backoff or, when attempts are used up, park.
fn failure(config: &Config, event: &InboxEvent, error: String) -> InboxResult {
    let settings = &config.inbox;
    if event.attempts as u32 >= settings.max_attempts {
        tracing::error!(
            inbox_id = event.id,
            provider = %event.provider,
            event_id = %event.event_id,
            attempts = event.attempts,
            %error,
            "webhook event parked after repeated processing failures"
        );
        InboxResult::Parked { error }
    } else {
        let delay = settings
            .backoff
            .spread(event.attempts as u32, &mut rand::rng());
        tracing::warn!(
            inbox_id = event.id,
            event_id = %event.event_id,
            attempts = event.attempts,
            retry_in_ms = delay.as_millis() as u64,
            %error,
            "webhook event processing failed; will retry"
        );
        InboxResult::Retry {
            at: Utc::now()
                + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
            error,
        }
    }
}

/// What an event is: a status update for one of Sent's message ids, a
/// contact's message, or nothing for us (other providers, other families).
fn understand(event: &InboxEvent) -> Result<Parsed, String> {
    if event.provider != Provider::Sent {
        // Stored for the record: no FORWARD_<SOURCE>_URL takes them.
        return Ok(Parsed::NotApplicable("not a Sent event, and not forwarded"));
    }
    webhook::read(&event.body, event.received_at)
}

/// What the inbox logs and traces of an update it applied.
trait Report {
    fn trace(&self, trace: &TraceContext, message_id: &MessageId, event_id: &str, applied: bool);
    fn log(&self, message_id: &MessageId, event_id: &str, applied: bool);
}

impl Report for StatusUpdate {
    /// A span in the message's own trace (that of the request that accepted
    /// it), so that the trace shows what Sent reported after the send.
    fn trace(&self, trace: &TraceContext, message_id: &MessageId, event_id: &str, applied: bool) {
        if trace.is_empty() {
            return;
        }
        let span = tracing::info_span!("sent.webhook", %message_id, event_id, status = %self.status,
            sent_at = %api_time(self.at), applied);
        common::telemetry::set_parent(&span, trace);
    }

    fn log(&self, message_id: &MessageId, event_id: &str, applied: bool) {
        let (code, reason, channel) = (
            self.reason_code.as_deref().unwrap_or(""),
            self.reason.as_deref().unwrap_or(""),
            self.channel.as_deref().unwrap_or(""),
        );
        match self.status {
            MessageStatus::Failed => tracing::error!(
                %message_id, sent_message_id = %self.sent_message_id, event_id, reason_code = code, reason,
                channel, applied, "message failed at Sent"
            ),
            MessageStatus::Blocked | MessageStatus::Filtered => tracing::warn!(
                %message_id, sent_message_id = %self.sent_message_id, event_id, status = %self.status,
                reason_code = code, reason, channel, applied, "message {} at Sent", self.status
            ),
            _ => tracing::debug!(
                %message_id, event_id, status = %self.status, channel, applied, "message status from Sent"
            ),
        }
    }
}
