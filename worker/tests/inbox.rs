//! The worker's inbox processing, end to end: signed events POSTed to the real
//! gateway, stored in its inbox, applied by `worker::inbox::run`.

mod inbox_support;

use common::domain::{EventSource, MessageStatus, Provider};
use std::sync::{Arc, Mutex};

use common::signature::sign_legacy;
use common::store::{InboxFinish, InboxInsert, InboxResult, Store};
use common::test_support::{TestDatabase, heap_blocks_read, rows_fetched_through, updates_of};
use inbox_support::*;
use serde_json::json;
use sqlx::Executor;

#[tokio::test]
async fn out_of_order_events_end_in_the_right_status() {
    let stack = Stack::start(&[]).await;
    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["sent-1"]).await;
    stack.start_inbox();

    // delivered first, then a late sent and queued: recorded, not applied.
    let t = |s: u32| format!("2026-01-15T10:35:{s:02}+00:00");
    assert_eq!(
        stack
            .post_sent(
                &sent_event("message.delivered", "sent-1", &t(30)),
                "e-delivered"
            )
            .await,
        200
    );
    stack.wait_inbox_state("e-delivered", "processed").await;
    // Each waits for the previous, so the timeline's order is known.
    let queued = json!({"field": "messages", "sub_type": "message.queued",
                        "value": {"message_id": "sent-1", "message_status": "QUEUED", "updated_at": t(10)}});
    let failed = json!({"field": "message", "event": "message.failed",
                        "payload": {"message_id": "sent-1", "message_status": "FAILED", "updated_at": t(40),
                                    "reason_code": "DELIVERY_007", "reason": "late failure"}});
    for (body, event_id) in [
        // A late sent.
        (sent_event("message.sent", "sent-1", &t(20)), "e-sent"),
        // The older variant envelope: sub_type / value, field "messages".
        (queued, "e-queued"),
        // A failure after delivery (a reroute) does not undo it either.
        (failed, "e-failed"),
        // Sent retrying the delivered event: stored once, applied once.
        (
            sent_event("message.delivered", "sent-1", &t(30)),
            "e-delivered",
        ),
    ] {
        assert_eq!(stack.post_sent(&body, event_id).await, 200);
        let row = stack.wait_inbox_state(event_id, "processed").await;
        assert_eq!(row.message_id.as_deref(), Some(id.as_str()));
    }
    let message = stack.message(&id).await;
    assert_eq!(message.status, MessageStatus::Delivered);
    assert_eq!(
        message.last_error, None,
        "an unapplied failure leaves no error behind"
    );

    // Then read, which is progress.
    assert_eq!(
        stack
            .post_sent(&sent_event("message.read", "sent-1", &t(50)), "e-read")
            .await,
        200
    );
    stack.wait_inbox_state("e-read", "processed").await;
    assert_eq!(stack.message(&id).await.status, MessageStatus::Read);

    let events = stack.store().events(id.parse().unwrap()).await.unwrap();
    let from_sent: Vec<(&str, bool)> = events
        .iter()
        .filter(|e| e.source == EventSource::Sent)
        .map(|e| (e.status.as_str(), e.applied))
        .collect();
    assert_eq!(
        from_sent,
        [
            ("delivered", true),
            ("sent", false),
            ("accepted", false),
            ("failed", false),
            ("read", true)
        ]
    );
    let delivered = events
        .iter()
        .find(|e| e.source == EventSource::Sent && e.status == "delivered")
        .unwrap();
    assert_eq!(
        delivered.at,
        "2026-01-15T10:35:30Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
    let detail = delivered.detail.as_ref().unwrap();
    assert_eq!(detail["event"], "message.delivered");
    assert_eq!(detail["event_id"], "e-delivered");
    assert_eq!(detail["channel"], "sms");
    let late_failure = events
        .iter()
        .find(|e| e.status == "failed")
        .unwrap()
        .detail
        .clone()
        .unwrap();
    assert_eq!(late_failure["reason_code"], "DELIVERY_007");
}

#[tokio::test]
async fn events_in_one_batch_in_any_order() {
    let stack = Stack::start(&[]).await;
    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["sent-b"]).await;
    // All stored before any worker runs, so one batch holds them all.
    for (i, event) in [
        "message.read",
        "message.sent",
        "message.delivered",
        "message.routed",
    ]
    .iter()
    .enumerate()
    {
        let body = sent_event(event, "sent-b", &format!("2026-01-15T10:00:0{i}Z"));
        assert_eq!(stack.post_sent(&body, &format!("b{i}")).await, 200);
    }
    stack.start_inbox();
    for i in 0..4 {
        stack.wait_inbox_state(&format!("b{i}"), "processed").await;
    }
    assert_eq!(stack.message(&id).await.status, MessageStatus::Read);
    let events = stack.store().events(id.parse().unwrap()).await.unwrap();
    let mut statuses: Vec<&str> = events
        .iter()
        .filter(|e| e.source == EventSource::Sent)
        .map(|e| e.status.as_str())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["accepted", "delivered", "read", "sent"]);
}

#[tokio::test]
async fn unknown_message_id_is_matched_when_the_send_record_appears() {
    let stack = Stack::start(&[]).await;
    stack.start_inbox();
    // Sent's webhook outruns its own 202.
    assert_eq!(
        stack
            .post_sent(
                &sent_event("message.delivered", "sent-early", "2026-01-15T10:00:00Z"),
                "early"
            )
            .await,
        200
    );
    let waiting = stack.wait_inbox_state("early", "unmatched").await;
    assert_eq!(waiting.subject_id.as_deref(), Some("sent-early"));

    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["sent-other", "sent-early"]).await;
    let row = stack.wait_inbox_state("early", "processed").await;
    assert_eq!(row.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(stack.message(&id).await.status, MessageStatus::Delivered);
}

#[tokio::test]
async fn unmatched_events_are_rechecked_periodically() {
    let stack = Stack::start(&[("INBOX_REMATCH_INTERVAL_SECS", "1")]).await;
    stack.start_inbox();
    assert_eq!(
        stack
            .post_sent(
                &sent_event("message.sent", "sent-late", "2026-01-15T10:00:00Z"),
                "late"
            )
            .await,
        200
    );
    stack.wait_inbox_state("late", "unmatched").await;
    let id = stack.submit(API_KEY, None).await;
    // Without the acceptance's wake, only the periodic re-check can find it.
    stack.accept_unwoken(&id, &["sent-late"]).await;
    stack.wait_inbox_state("late", "processed").await;
    assert_eq!(stack.message(&id).await.status, MessageStatus::Sent);
}

/// One acceptance batch of several messages wakes, in the statement that
/// stores their Sent ids, every event waiting for any of them: a message
/// already further along included (its ids are stored again), and no other.
#[tokio::test]
async fn an_acceptance_batch_wakes_the_events_waiting_for_its_sent_ids() {
    use common::store::{Acceptance, StatusChange};

    let stack = Stack::start(&[]).await;
    let pool = stack.store().pool();
    for sent_id in ["sent-a1", "sent-a2", "sent-b", "sent-other"] {
        sqlx::query(
            "WITH event AS (
               INSERT INTO webhook_inbox (provider, event_id, body, state, subject_id)
               VALUES ('sent', $1, convert_to($1, 'UTF8'), 'unmatched', $1) RETURNING id)
             INSERT INTO webhook_inbox_queue (id, waiting_for) SELECT id, $1 FROM event",
        )
        .bind(sent_id)
        .execute(pool)
        .await
        .unwrap();
    }
    let a = stack.submit(API_KEY, None).await.parse().unwrap();
    let b = stack.submit(API_KEY, None).await.parse().unwrap();
    let change = |status| StatusChange::new(status, EventSource::Worker);
    stack
        .store()
        .change_status(b, &change(MessageStatus::Delivered))
        .await
        .unwrap();
    let acceptance = |id, sent_ids: &[&str]| Acceptance {
        id,
        provider_ids: sent_ids.iter().map(|s| s.to_string()).collect(),
        change: change(MessageStatus::Accepted),
    };
    stack
        .store()
        .record_accepted_many(&[
            acceptance(a, &["sent-a1", "sent-a2"]),
            acceptance(b, &["sent-b"]),
        ])
        .await
        .unwrap();

    let states: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT w.event_id, w.state, q.waiting_for
           FROM webhook_inbox w JOIN webhook_inbox_queue q USING (id) ORDER BY w.event_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let state = |id: &str, state: &str, waiting: Option<&str>| {
        (id.to_owned(), state.to_owned(), waiting.map(str::to_owned))
    };
    assert_eq!(
        states,
        [
            state("sent-a1", "pending", None),
            state("sent-a2", "pending", None),
            state("sent-b", "pending", None),
            state("sent-other", "unmatched", Some("sent-other")),
        ]
    );
}

#[tokio::test]
async fn a_recheck_with_a_lookback_reads_only_events_that_started_waiting_since() {
    let stack = Stack::start(&[]).await;
    let pool = stack.store().pool();
    // Two events waiting for Sent ids: one for an hour, one for a minute.
    for (sent_id, waited) in [("sent-hour", "1 hour"), ("sent-minute", "1 minute")] {
        let body = json!({"n": sent_id});
        sqlx::query(
            "WITH event AS (
               INSERT INTO webhook_inbox (provider, event_id, body, state, subject_id)
               VALUES ('sent', $1, $2, 'unmatched', $1) RETURNING id)
             INSERT INTO webhook_inbox_queue (id, waiting_for, next_attempt_at)
             SELECT id, $1, now() - $3::interval FROM event",
        )
        .bind(sent_id)
        .bind(serde_json::to_vec(&body).unwrap())
        .bind(waited)
        .execute(pool)
        .await
        .unwrap();
    }
    let id = stack.submit(API_KEY, None).await;
    stack
        .accept_unwoken(&id, &["sent-hour", "sent-minute"])
        .await;

    let ten_minutes = std::time::Duration::from_secs(600);
    assert_eq!(
        stack
            .store()
            .rematch_inbox(Some(ten_minutes))
            .await
            .unwrap(),
        1
    );
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, state FROM webhook_inbox ORDER BY event_id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        states,
        [
            ("sent-hour".to_owned(), "unmatched".to_owned()),
            ("sent-minute".to_owned(), "pending".to_owned())
        ]
    );
    // A pass without a lookback (a worker's first) reads every waiting event.
    assert_eq!(stack.store().rematch_inbox(None).await.unwrap(), 1);
    assert_eq!(stack.store().rematch_inbox(None).await.unwrap(), 0);
}

#[tokio::test]
async fn a_queue_row_without_its_event_does_not_stop_the_expiry() {
    let stack = Stack::start(&[]).await;
    let pool = stack.store().pool();
    // A thousand orphans at the head of the queue (their events deleted by
    // hand), then an event that waited two days.
    pool.execute(
        "INSERT INTO webhook_inbox_queue (id, waiting_for)
         SELECT -i, 'gone-' || i FROM generate_series(1, 1000) i",
    )
    .await
    .unwrap();
    sqlx::query(
        "WITH event AS (
           INSERT INTO webhook_inbox (provider, event_id, body, state, subject_id, received_at)
           VALUES ('sent', 'old', '{}', 'unmatched', 'sent-old', now() - interval '2 days') RETURNING id)
         INSERT INTO webhook_inbox_queue (id, waiting_for) SELECT id, 'sent-old' FROM event",
    )
    .execute(pool)
    .await
    .unwrap();
    let day = std::time::Duration::from_secs(86_400);
    while stack.store().expire_unmatched_inbox(day).await.unwrap() == 0 {
        let (left,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM webhook_inbox_queue WHERE id < 0")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(left, 0, "the orphans stay in the queue");
    }
    stack.wait_inbox_state("old", "parked").await;
}

#[tokio::test]
async fn unmatched_events_are_parked_after_waiting_too_long() {
    let stack = Stack::start(&[
        ("INBOX_UNMATCHED_TTL_SECS", "1"),
        ("INBOX_REMATCH_INTERVAL_SECS", "1"),
    ])
    .await;
    stack.start_inbox();
    assert_eq!(
        stack
            .post_sent(
                &sent_event("message.sent", "sent-never", "2026-01-15T10:00:00Z"),
                "never"
            )
            .await,
        200
    );
    let row = stack.wait_inbox_state("never", "parked").await;
    assert!(row.last_error.unwrap().contains("sent-never"));
}

#[tokio::test]
async fn poison_event_is_parked_and_does_not_block_others() {
    let stack = Stack::start(&[("INBOX_MAX_ATTEMPTS", "3")]).await;
    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["sent-ok"]).await;
    let poison = json!({"field": "message", "event": "message.delivered",
                        "payload": {"message_status": "DELIVERED", "channel": "sms"}});
    assert_eq!(stack.post_sent(&poison, "poison").await, 200);
    assert_eq!(
        stack
            .post_sent(
                &sent_event("message.sent", "sent-ok", "2026-01-15T10:00:00Z"),
                "fine"
            )
            .await,
        200
    );
    stack.start_inbox();
    let row = stack.wait_inbox_state("poison", "parked").await;
    assert_eq!(row.attempts, 3);
    assert!(
        row.last_error.as_deref().unwrap().contains("message_id"),
        "{:?}",
        row.last_error
    );
    assert!(row.processed_at.is_some());
    stack.wait_inbox_state("fine", "processed").await;
    assert_eq!(stack.message(&id).await.status, MessageStatus::Sent);
}

#[tokio::test]
async fn other_events_are_kept_as_not_applicable() {
    common::metrics::install();
    let stack = Stack::start(&[]).await;
    let bodies = [
        json!({"field": "templates", "value": {"id": "tmpl_1", "status": "APPROVED"}}),
        json!({"field": "contact", "event": "contact.updated", "payload": {"id": "c1"}}),
        json!({"event": "call.ended", "payload": {"call_id": "x"}}),
    ];
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(stack.post_sent(body, &format!("na{i}")).await, 200);
    }
    // Other providers' events (stored by the gateway as it stores these).
    let other = |provider: Provider, id: &str| InboxInsert {
        provider,
        event_id: id.into(),
        event_type: Some("x".into()),
        headers: json!({}),
        body: b"{\"id\": 1}".to_vec(),
    };
    stack
        .store()
        .insert_inbox(&[
            other(Provider::Stripe, "evt_1"),
            other(Provider::Telegram, "42"),
        ])
        .await
        .unwrap();
    stack.start_inbox();
    for i in 0..bodies.len() {
        stack
            .wait_inbox_state(&format!("na{i}"), "not_applicable")
            .await;
    }
    eventually("other providers' events", || async {
        let rows = stack.store().inbox_events(None).await.unwrap();
        rows.iter()
            .all(|r| r.state == "not_applicable")
            .then_some(())
    })
    .await;
    assert!(
        common::metrics::render()
            .contains(r#"worker_inbox_events_total{outcome="not_applicable"}"#),
        "counted by outcome"
    );
}

#[tokio::test]
async fn several_workers_share_the_inbox_and_apply_each_event_once() {
    let stack = Stack::start(&[("INBOX_BATCH_SIZE", "3"), ("INBOX_CONCURRENCY", "2")]).await;
    let mut ids = Vec::new();
    for m in 0..8 {
        let id = stack.submit(API_KEY, None).await;
        stack.accept(&id, &[&format!("sent-w{m}")]).await;
        ids.push(id);
    }
    for _ in 0..3 {
        stack.start_inbox();
    }
    let events = ["message.sent", "message.delivered", "message.read"];
    let posts = (0..8).flat_map(|m| {
        events
            .iter()
            .enumerate()
            .map(move |(k, event)| (m, k, *event))
    });
    let stack_ref = &stack;
    futures::future::join_all(posts.map(|(m, k, event)| async move {
        let body = sent_event(
            event,
            &format!("sent-w{m}"),
            &format!("2026-01-15T10:00:0{k}Z"),
        );
        assert_eq!(stack_ref.post_sent(&body, &format!("w{m}-{k}")).await, 200);
    }))
    .await;
    eventually("all events processed", || async {
        let rows = stack.store().inbox_events(Some("sent")).await.unwrap();
        (rows.len() == 24 && rows.iter().all(|r| r.state == "processed")).then_some(())
    })
    .await;
    for id in &ids {
        assert_eq!(stack.message(id).await.status, MessageStatus::Read);
        let from_sent = stack
            .store()
            .events(id.parse().unwrap())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.source == EventSource::Sent)
            .count();
        assert_eq!(from_sent, 3, "each event applied exactly once");
    }
}

/// The original integration's `test_webhook_message_failed`: a failed event
/// is logged at error level. Logs of the worker are captured while it runs.
#[tokio::test]
async fn seed_failed_event_is_logged_as_error() {
    use tracing::instrument::WithSubscriber;

    let stack = Stack::start(&[]).await;
    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["msg_123"]).await;
    let payload =
        r#"{"type": "message.failed", "data": {"id": "msg_123", "error": {"message": "Invalid"}}}"#;
    let signature = sign_legacy(LEGACY_SECRET, payload.as_bytes());
    let response = stack
        .http
        .post(format!("{}/webhooks/sent", stack.base))
        .header("X-Webhook-Signature", signature)
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let logs = Capture::default();
    tokio::spawn(
        worker::inbox::run(
            stack.store().clone(),
            stack.config.clone(),
            stack.shutdown.clone(),
        )
        .with_subscriber(logs.clone()),
    );
    let message = eventually("the message to fail", || async {
        Some(stack.message(&id).await).filter(|m| m.status == MessageStatus::Failed)
    })
    .await;
    assert_eq!(message.last_error.as_deref(), Some("Invalid"));
    let errors = logs.at(tracing::Level::ERROR);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("msg_123") && errors[0].contains(&id) && errors[0].contains("Invalid"),
        "{}",
        errors[0]
    );
}

/// A minimal subscriber that keeps every event's level and fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl Capture {
    fn at(&self, level: tracing::Level) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, text)| text.clone())
            .collect()
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn notifications_wake_the_worker_without_polling() {
    // Polling and re-checks far beyond the test's deadline: only the
    // webhook_inbox notification (sent on the gateway's commit) can wake it.
    let stack = Stack::start(&[
        ("INBOX_POLL_INTERVAL_MS", "600000"),
        ("INBOX_REMATCH_INTERVAL_SECS", "600"),
    ])
    .await;
    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["sent-notify"]).await;
    stack.start_inbox();
    // Let the worker finish its first pass and go to sleep.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (k, event) in ["message.sent", "message.delivered"].iter().enumerate() {
        let body = sent_event(event, "sent-notify", &format!("2026-01-15T10:00:0{k}Z"));
        assert_eq!(stack.post_sent(&body, &format!("n{k}")).await, 200);
        stack.wait_inbox_state(&format!("n{k}"), "processed").await;
    }
    // An unmatched event is woken by the send record (its statement wakes it and
    // notifies).
    assert_eq!(
        stack
            .post_sent(
                &sent_event("message.read", "sent-notify-2", "2026-01-15T10:00:09Z"),
                "n-late"
            )
            .await,
        200
    );
    stack.wait_inbox_state("n-late", "unmatched").await;
    let other = stack.submit(API_KEY, None).await;
    stack.accept(&other, &["sent-notify-2"]).await;
    stack.wait_inbox_state("n-late", "processed").await;
    assert_eq!(stack.message(&other).await.status, MessageStatus::Read);
}

/// A claim is a lease kept apart from the event's due time: a claimed event
/// is not claimed again while leased, is claimed again once the lease runs
/// out (its worker died), and the first claimer's late finish is ignored.
/// And neither writes an index entry of the inbox: the claim is a HOT update
/// of the event's queue row, the finish a HOT update of the event (and the
/// queue row's delete).
#[tokio::test]
async fn a_claimed_event_is_leased_then_claimed_again_and_claim_and_finish_are_hot_updates() {
    use std::time::Duration;

    let stack = Stack::start(&[]).await;
    let store = stack.db.single_connection_store().await;
    store
        .insert_inbox(&[stripe_event("evt_lease"), stripe_event("evt_other")])
        .await
        .unwrap();
    let before = updates_of(&store, "webhook_inbox_queue").await;
    let first = store
        .claim_inbox(1, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let after = updates_of(&store, "webhook_inbox_queue").await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "the claim is one HOT update of the queue"
    );
    // Leased: the other event is claimed, this one is not.
    let second = store
        .claim_inbox(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].id, first[0].id);
    assert!(
        store
            .claim_inbox(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );

    // The lease runs out: claimed again, with the next attempt number.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = store
        .claim_inbox(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (first[0].id, 2));

    // The first claimer's late finish is ignored; the second's counts.
    let finish = |attempts| InboxFinish {
        id: first[0].id,
        attempts,
        result: InboxResult::NotApplicable,
    };
    let state = || async {
        store
            .inbox_events(Some("stripe"))
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.id == first[0].id)
            .unwrap()
            .state
    };
    let before = updates_of(&store, "webhook_inbox").await;
    store.finish_inbox(&[finish(1)]).await.unwrap();
    assert_eq!(state().await, "pending");
    store.finish_inbox(&[finish(2)]).await.unwrap();
    assert_eq!(state().await, "not_applicable");
    let after = updates_of(&store, "webhook_inbox").await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "the finish is one HOT update of the event"
    );
    let queued: (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_inbox_queue WHERE id = $1")
        .bind(first[0].id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(queued.0, 0, "a finished event leaves the queue");
}

/// A Stripe event with a body of its own.
fn stripe_event(id: &str) -> InboxInsert {
    InboxInsert {
        provider: Provider::Stripe,
        event_id: id.into(),
        event_type: Some("x".into()),
        headers: json!({}),
        body: format!("{{\"id\": \"{id}\"}}").into_bytes(),
    }
}

/// A database whose inbox tables no autovacuum visits (none runs on this
/// machine; elsewhere one could clean up the dead rows a test needs, or
/// add its own block reads to a count), on one connection, for
/// [`heap_blocks_read`].
async fn unvacuumed_inbox() -> (TestDatabase, Store) {
    let db = TestDatabase::new().await;
    let store = db.single_connection_store().await;
    sqlx::query("ALTER TABLE webhook_inbox SET (autovacuum_enabled = off)")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("ALTER TABLE webhook_inbox_queue SET (autovacuum_enabled = off)")
        .execute(store.pool())
        .await
        .unwrap();
    (db, store)
}

/// Stores `n` Stripe events and finishes them all: the queue's rows are
/// gone, their index entries stay until a vacuum. (The last, empty claim
/// walks past those entries.)
async fn finished_events(store: &Store, n: usize) {
    let events: Vec<InboxInsert> = (0..n)
        .map(|i| InboxInsert {
            body: format!(
                "{{\"id\": \"evt_old_{i}\", \"pad\": \"{}\"}}",
                "x".repeat(200)
            )
            .into_bytes(),
            ..stripe_event(&format!("evt_old_{i}"))
        })
        .collect();
    store.insert_inbox(&events).await.unwrap();
    loop {
        let claimed = store.claim_inbox(500, LEASE).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        let done: Vec<InboxFinish> = claimed
            .iter()
            .map(|e| InboxFinish {
                id: e.id,
                attempts: e.attempts,
                result: InboxResult::NotApplicable,
            })
            .collect();
        store.finish_inbox(&done).await.unwrap();
    }
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// The claim walks the due index with a plain index scan, which marks the
/// dead entries of finished events it meets and passes them afterwards
/// without reading the heap, once no transaction can see their rows (not
/// always so while other tests run: a replica's feedback holds them). A
/// bitmap scan, as planned for a queue without statistics, reads the heap
/// for every entry, every time.
#[tokio::test]
async fn a_claim_walks_the_due_index_with_a_plain_index_scan() {
    let (_db, store) = unvacuumed_inbox().await;
    finished_events(&store, 3_000).await;
    store
        .insert_inbox(&[stripe_event("evt_new")])
        .await
        .unwrap();
    let before = rows_fetched_through(&store, "webhook_inbox_queue_due").await;
    assert_eq!(store.claim_inbox(10, LEASE).await.unwrap().len(), 1);
    let fetched = rows_fetched_through(&store, "webhook_inbox_queue_due").await - before;
    assert!(
        fetched >= 1,
        "the claim fetched no row through the due index: a bitmap scan"
    );
}

#[tokio::test]
async fn a_wake_reads_the_inbox_only_to_wake_and_then_by_key() {
    // One session: the wake's plans are kept for it, made here while the
    // inbox and its queue are empty.
    let (_db, store) = unvacuumed_inbox().await;
    let wake = |ids: &'static [&'static str]| {
        let store = store.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT webhook_inbox_wake($1)")
                .bind(ids)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    assert_eq!(wake(&["sent_none"]).await, 0);
    finished_events(&store, 3_000).await;

    let before = (
        heap_blocks_read(&store, "webhook_inbox").await,
        heap_blocks_read(&store, "webhook_inbox_queue").await,
    );
    assert_eq!(wake(&["sent_none"]).await, 0);
    let read = (
        heap_blocks_read(&store, "webhook_inbox").await - before.0,
        heap_blocks_read(&store, "webhook_inbox_queue").await - before.1,
    );
    assert_eq!(
        read,
        (0, 0),
        "a wake that wakes nothing read (inbox, queue) blocks"
    );

    // An event waiting for its message: woken by a probe of its key.
    store
        .insert_inbox(&[stripe_event("evt_waiting")])
        .await
        .unwrap();
    let claimed = store.claim_inbox(10, LEASE).await.unwrap();
    store
        .finish_inbox(&[InboxFinish {
            id: claimed[0].id,
            attempts: claimed[0].attempts,
            result: InboxResult::Unmatched {
                subject_id: "sent_waited".into(),
            },
        }])
        .await
        .unwrap();
    let before = heap_blocks_read(&store, "webhook_inbox").await;
    assert_eq!(wake(&["sent_waited"]).await, 1);
    let read = heap_blocks_read(&store, "webhook_inbox").await - before;
    assert!(
        read < 10,
        "a wake read {read} blocks of the inbox to wake one event"
    );
}
