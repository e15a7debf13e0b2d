//! The send path's writes against real Postgres: starting attempts and
//! recording acceptances many messages per statement, through the same
//! guarded update as every other status change.

use std::time::Duration;

use chrono::Utc;
use common::domain::{Channel, EventSource, MessageId, MessageStatus, PhoneNumber};
use common::store::{Acceptance, NewMessage, StatusChange, Store, Submission, Unsent};
use common::telemetry::TraceContext;
use common::test_support::{TestDatabase, message_id_at, scans_of, updates_of};
use serde_json::json;

fn message(callback_url: Option<&str>) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        phone_number: PhoneNumber::parse("+14155550123").unwrap(),
        template_id: None,
        template_name: Some("welcome".into()),
        parameters: json!({"name": "Ada"}),
        text: None,
        media_urls: vec![],
        channels: vec![Channel::Sms],
        scheduled_at: None,
        sandbox: false,
        callback_url: callback_url.map(Into::into),
        metadata: json!({}),
    }
}

/// Stores messages as the gateway does; they are `queued`.
async fn store_messages(store: &Store, messages: Vec<NewMessage>) -> Vec<MessageId> {
    store_traced(store, messages, TraceContext::new()).await
}

/// Stores messages as a request with trace context `trace` would.
async fn store_traced(
    store: &Store,
    messages: Vec<NewMessage>,
    trace: TraceContext,
) -> Vec<MessageId> {
    let ids = messages.iter().map(|m| m.id).collect();
    let submission = Submission {
        client: "tests".into(),
        idempotency: None,
        messages,
        created_at: Utc::now(),
        trace,
        response_status: 202,
        response_body: json!({}),
    };
    store
        .submit(&[submission], Duration::from_secs(60))
        .await
        .unwrap();
    ids
}

fn accepted(id: MessageId, provider_ids: &[&str], attempt: i32) -> Acceptance {
    let mut change = StatusChange::new(MessageStatus::Accepted, EventSource::Worker);
    change.attempt = Some(attempt);
    change.detail = Some(json!({"provider_message_ids": provider_ids}));
    Acceptance {
        id,
        provider_ids: provider_ids.iter().map(|s| s.to_string()).collect(),
        change,
    }
}

async fn timeline(store: &Store, id: MessageId) -> Vec<(String, bool, Option<i32>)> {
    store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.status, e.applied, e.attempt))
        .collect()
}

#[tokio::test]
async fn begin_attempts_starts_waiting_messages_in_order_and_skips_the_rest() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    let ids = store_messages(store, (0..4).map(|_| message(None)).collect()).await;
    // ids[3] is already further than `sending`.
    store.begin_attempt(ids[3]).await.unwrap().unwrap();
    store
        .record_accepted(
            ids[3],
            &["sent-3".into()],
            &accepted(ids[3], &["sent-3"], 1).change,
        )
        .await
        .unwrap();

    let unknown = MessageId::new();
    let asked = [ids[2], ids[0], unknown, ids[3], ids[1], ids[0]];
    let started = store.begin_attempts(&asked).await.unwrap();
    let got: Vec<Option<(MessageId, MessageStatus, i32)>> = started
        .iter()
        .map(|m| m.as_ref().map(|m| (m.id, m.status, m.attempts)))
        .collect();
    let sending = |id: MessageId| Some((id, MessageStatus::Sending, 1));
    assert_eq!(
        got,
        [
            sending(ids[2]),
            sending(ids[0]),
            None,
            None,
            sending(ids[1]),
            None
        ],
        "in the order asked; unknown, accepted and repeated ids get None"
    );
    for id in &ids[..3] {
        assert_eq!(
            timeline(store, *id).await,
            [
                ("queued".into(), true, None),
                ("sending".into(), true, Some(1))
            ]
        );
    }
    assert_eq!(
        store.message_by_id(ids[3]).await.unwrap().unwrap().status,
        MessageStatus::Accepted
    );

    // A retry: `sending` again, attempt 2.
    let again = store.begin_attempts(&[ids[0]]).await.unwrap();
    assert_eq!(again[0].as_ref().unwrap().attempts, 2);
    assert!(store.begin_attempts(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn record_accepted_many_stores_ids_status_events_and_callbacks_in_one_statement() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    let ids = store_messages(
        store,
        vec![
            message(Some("https://client.example/cb")),
            message(None),
            message(Some("https://client.example/cb")),
        ],
    )
    .await;
    store.begin_attempts(&ids).await.unwrap();
    // ids[2] was already delivered (its webhooks came first): its ids are
    // stored, its status stays, and the late acceptance is recorded unapplied.
    for status in [MessageStatus::Accepted, MessageStatus::Delivered] {
        store
            .change_status(ids[2], &StatusChange::new(status, EventSource::Sent))
            .await
            .unwrap();
    }
    let callbacks_before = store.callbacks_for_message(ids[2]).await.unwrap().len();

    let applied = store
        .record_accepted_many(&[
            accepted(ids[0], &["sent-a", "sent-b"], 1),
            accepted(ids[1], &["sent-c"], 1),
            accepted(ids[2], &["sent-d"], 1),
        ])
        .await
        .unwrap();
    assert_eq!(applied, [true, true, false]);

    let first = store.message_by_id(ids[0]).await.unwrap().unwrap();
    assert_eq!(first.status, MessageStatus::Accepted);
    assert_eq!(first.provider_message_id.as_deref(), Some("sent-a"));
    assert!(first.last_error_code.is_none());
    let (provider_ids, accepted_at): (Vec<String>, Option<chrono::DateTime<Utc>>) =
        sqlx::query_as("SELECT provider_message_ids, accepted_at FROM messages WHERE id = $1")
            .bind(ids[0].to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(provider_ids, ["sent-a", "sent-b"]);
    assert!(accepted_at.is_some());
    assert_eq!(
        timeline(store, ids[0]).await,
        [
            ("queued".into(), true, None),
            ("sending".into(), true, Some(1)),
            ("accepted".into(), true, Some(1)),
        ]
    );
    let events = store.events(ids[0]).await.unwrap();
    assert_eq!(
        events[2].detail.as_ref().unwrap()["provider_message_ids"],
        json!(["sent-a", "sent-b"])
    );

    // The callback outbox row comes with the change, from `sending`.
    let callbacks = store.callbacks_for_message(ids[0]).await.unwrap();
    assert_eq!(callbacks.len(), 1);
    assert_eq!(
        (
            callbacks[0].status.as_str(),
            callbacks[0].previous_status.as_deref()
        ),
        ("accepted", Some("sending"))
    );
    assert!(
        store
            .callbacks_for_message(ids[1])
            .await
            .unwrap()
            .is_empty()
    );

    let late = store.message_by_id(ids[2]).await.unwrap().unwrap();
    assert_eq!(
        late.status,
        MessageStatus::Delivered,
        "statuses never move backwards"
    );
    assert_eq!(late.provider_message_id.as_deref(), Some("sent-d"));
    assert_eq!(
        timeline(store, ids[2]).await.last().unwrap(),
        &("accepted".to_owned(), false, Some(1))
    );
    assert_eq!(
        store.callbacks_for_message(ids[2]).await.unwrap().len(),
        callbacks_before,
        "no callback for a change that did not apply"
    );

    // The same message twice in one call: the first applies, the second is a repeat.
    let ids = store_messages(store, vec![message(None)]).await;
    store.begin_attempts(&ids).await.unwrap();
    let applied = store
        .record_accepted_many(&[accepted(ids[0], &["x"], 1), accepted(ids[0], &["y"], 2)])
        .await
        .unwrap();
    assert_eq!(applied, [true, false]);
    assert_eq!(
        timeline(store, ids[0]).await[2..],
        [
            ("accepted".into(), true, Some(1)),
            ("accepted".into(), false, Some(2))
        ]
    );
    // Unknown messages change nothing and leave no event.
    assert_eq!(
        store
            .record_accepted_many(&[accepted(MessageId::new(), &["z"], 1)])
            .await
            .unwrap(),
        [false]
    );
}

#[tokio::test]
async fn a_failure_keeps_its_error_and_an_acceptance_clears_it() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    let ids = store_messages(store, vec![message(None), message(None)]).await;
    store.begin_attempts(&ids).await.unwrap();
    sqlx::query("UPDATE messages SET last_error_code = 'INTERNAL_001', last_error = 'boom'")
        .execute(store.pool())
        .await
        .unwrap();

    let mut failed = StatusChange::new(MessageStatus::Failed, EventSource::Worker);
    failed.error_code = Some("BUSINESS_004".into());
    failed.error = Some("opted out".into());
    assert!(store.change_status(ids[0], &failed).await.unwrap());
    let record = store.message_by_id(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (
            record.status.as_str(),
            record.last_error_code.as_deref(),
            record.last_error.as_deref()
        ),
        ("failed", Some("BUSINESS_004"), Some("opted out"))
    );

    assert!(
        store
            .record_accepted(ids[1], &["s".into()], &accepted(ids[1], &["s"], 1).change)
            .await
            .unwrap()
    );
    let record = store.message_by_id(ids[1]).await.unwrap().unwrap();
    assert_eq!((record.last_error_code, record.last_error), (None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_in_any_order_neither_deadlock_nor_apply_twice() {
    let db = TestDatabase::new().await;
    let store = db.store.clone();
    let ids = store_messages(
        &store,
        (0..30)
            .map(|_| message(Some("https://client.example/cb")))
            .collect(),
    )
    .await;
    store.begin_attempts(&ids).await.unwrap();

    let mut tasks = Vec::new();
    for round in 0..8usize {
        let (store, mut ids) = (store.clone(), ids.clone());
        let n = ids.len();
        ids.rotate_left(round * 7 % n);
        if round % 2 == 1 {
            ids.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let batch: Vec<Acceptance> = ids
                .iter()
                .map(|id| accepted(*id, &[&format!("sent-{round}")], 1))
                .collect();
            store.record_accepted_many(&batch).await.unwrap()
        }));
    }
    let mut applied_total = 0;
    for task in tasks {
        applied_total += task.await.unwrap().into_iter().filter(|a| *a).count();
    }
    assert_eq!(applied_total, ids.len(), "each message accepted once");
    let mut applied = vec![0; ids.len()];
    for (i, id) in ids.iter().enumerate() {
        let events = timeline(&store, *id).await;
        let accepted: Vec<_> = events.iter().filter(|e| e.0 == "accepted").collect();
        assert_eq!(accepted.len(), 8, "every acceptance is in the timeline");
        applied[i] = accepted.iter().filter(|e| e.1).count();
        let callbacks = store.callbacks_for_message(*id).await.unwrap();
        assert_eq!(callbacks.len(), 1, "one callback: the one change");
        assert_eq!(callbacks[0].previous_status.as_deref(), Some("sending"));
    }
    assert!(applied.iter().all(|&n| n == 1), "{applied:?}");
}

/// Every pooled connection plans each statement for its parameters: a
/// generic plan cached while `messages` was small would keep scanning it
/// whole (README, "The whole loop under sustained load"). And it does not
/// test partitions against their CHECK constraints, which never exclude one
/// (migrations/20261217000000_send_path_planned_cheaper.sql).
#[tokio::test]
async fn every_connection_plans_statements_for_their_parameters() {
    let db = TestDatabase::new().await;
    for _ in 0..3 {
        let settings: (String, String) = sqlx::query_as(
            "SELECT current_setting('plan_cache_mode'), current_setting('constraint_exclusion')",
        )
        .fetch_one(db.store.pool())
        .await
        .unwrap();
        assert_eq!(settings, ("force_custom_plan".into(), "off".into()));
    }
}

#[tokio::test]
async fn a_message_keeps_its_requests_trace_for_the_work_that_comes_later() {
    let db = TestDatabase::new().await;
    let trace = TraceContext::from([(
        "traceparent".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    )]);
    let traced = store_traced(&db.store, vec![message(None)], trace.clone()).await[0];
    let untraced = store_messages(&db.store, vec![message(None)]).await[0];
    tokio::time::sleep(Duration::from_millis(10)).await;

    // The reconciler's jobs continue it.
    let mut stalled = db.store.stalled_messages(Duration::ZERO, 10).await.unwrap();
    stalled.sort_by_key(|m| m.id != traced);
    assert_eq!(
        stalled,
        [
            Unsent {
                id: traced,
                client: "tests".into(),
                trace: trace.clone()
            },
            Unsent {
                id: untraced,
                client: "tests".into(),
                trace: TraceContext::new()
            },
        ]
    );

    // So do the webhook events applied to it.
    db.store
        .record_accepted_many(&[
            accepted(traced, &["sent-1"], 1),
            accepted(untraced, &["sent-2"], 1),
        ])
        .await
        .unwrap();
    let found = db
        .store
        .messages_by_provider_ids(&["sent-1", "sent-2"])
        .await
        .unwrap();
    assert_eq!(found["sent-1"], [(traced, trace)]);
    assert_eq!(found["sent-2"], [(untraced, TraceContext::new())]);
}

/// The guarded update ranks statuses in SQL (`status_rank`); the domain ranks
/// them in Rust (`MessageStatus::rank`). They must agree on every status.
#[tokio::test]
async fn sql_status_rank_is_the_domain_rank() {
    let db = TestDatabase::new().await;
    for status in MessageStatus::ALL {
        let (rank,): (Option<i32>,) = sqlx::query_as("SELECT status_rank($1)")
            .bind(status.as_str())
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        assert_eq!(rank, Some(i32::from(status.rank())), "{status}");
    }
}

#[tokio::test]
async fn expired_idempotency_records_go_a_chunk_at_a_time_and_live_ones_stay() {
    let db = TestDatabase::new().await;
    sqlx::query(
        "INSERT INTO idempotency_records
           (client, idempotency_key, route, request_hash, response_status, response_body, created_at, expires_at)
         SELECT 'tests', 'k' || n, '/api/messages/send', '\\x00', 202, '{}', now(),
                CASE WHEN n <= 25 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END
           FROM generate_series(1, 30) n",
    )
    .execute(db.store.pool())
    .await
    .unwrap();
    let mut chunks = Vec::new();
    loop {
        let purged = db.store.purge_expired_idempotency(10).await.unwrap();
        chunks.push(purged);
        if purged < 10 {
            break;
        }
    }
    assert_eq!(chunks, [10, 10, 5]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_records")
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 5);
}

/// A message's everyday status changes write no index entry: `sending` and
/// `sent` are HOT updates as Postgres counts them (no index names the
/// status or the time of a change), while `accepted` (Sent's ids) and
/// `delivered` (which ends the status polls) change an indexed column. A
/// new index naming `status` or `updated_at` makes none of them HOT and
/// fails this test. Nearly all, not all: a row whose page has no room left
/// moves to another page, which is never HOT.
#[tokio::test]
async fn sending_and_sent_are_hot_updates_of_the_message() {
    let db = TestDatabase::new().await;
    let store = db.single_connection_store().await;
    let ids = store_messages(&store, (0..20).map(|_| message(None)).collect()).await;
    let updates = || updates_of(&store, "messages");
    let hot_updates = |before: (i64, i64), after: (i64, i64)| {
        assert_eq!(after.0 - before.0, 20, "one update per message");
        after.1 - before.1
    };

    let before = updates().await;
    store.begin_attempts(&ids).await.unwrap();
    let after_sending = updates().await;
    assert!(hot_updates(before, after_sending) >= 15, "sending is HOT");

    let acceptances: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| accepted(*id, &[&format!("sent-hot-{i}")], 1))
        .collect();
    store.record_accepted_many(&acceptances).await.unwrap();
    let after_accepted = updates().await;
    assert_eq!(
        hot_updates(after_sending, after_accepted),
        0,
        "Sent's ids are indexed"
    );

    let (sent, delivered) = (
        StatusChange::new(MessageStatus::Sent, EventSource::Sent),
        StatusChange::new(MessageStatus::Delivered, EventSource::Sent),
    );
    let all = |change| ids.iter().map(|id| (*id, change)).collect::<Vec<_>>();
    store.change_statuses(&all(&sent)).await.unwrap();
    let after_sent = updates().await;
    assert!(hot_updates(after_accepted, after_sent) >= 15, "sent is HOT");

    store.change_statuses(&all(&delivered)).await.unwrap();
    let after_delivered = updates().await;
    assert_eq!(
        hot_updates(after_sent, after_delivered),
        0,
        "delivered ends the polls' index"
    );
}

/// A poll's timeline record is written only while its message exists (the
/// timeline has no foreign key: the writer checks, and locks the row).
#[tokio::test]
async fn a_poll_of_a_message_gone_writes_no_event() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    let ids = store_messages(store, vec![message(None)]).await;
    store
        .record_poll(ids[0], &json!({"status": "sent"}))
        .await
        .unwrap();
    assert_eq!(timeline(store, ids[0]).await.len(), 2, "queued, polled");

    let gone = MessageId::new();
    store
        .record_poll(gone, &json!({"stale": true, "reason": "x"}))
        .await
        .unwrap();
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_events WHERE message_id = $1")
            .bind(gone.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(events, 0);
}

/// The send path's statements are planned for their ids, and only those
/// ids' weeks of `messages` are planned (`m.id = ANY` of a constant array:
/// Postgres prunes partitions by no join), so a batch of this week's
/// messages must not read another week.
#[tokio::test]
async fn a_batch_reads_only_the_weeks_of_its_messages() {
    let db = TestDatabase::new().await;
    let store = db.single_connection_store().await;
    store.ensure_message_partitions().await.unwrap();
    let mut later = message(None);
    later.id = message_id_at(std::time::SystemTime::now() + Duration::from_secs(14 * 86_400));
    let later = store_messages(&store, vec![later]).await[0];
    let ids = store_messages(&store, (0..5).map(|_| message(None)).collect()).await;
    let (week, later_week): (String, String) = sqlx::query_as(
        "SELECT (SELECT tableoid::regclass::text FROM messages WHERE id = $1),
                (SELECT tableoid::regclass::text FROM messages WHERE id = $2)",
    )
    .bind(ids[0])
    .bind(later)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_ne!(week, later_week);

    let scans = || async {
        (
            scans_of(&store, &week).await,
            scans_of(&store, &later_week).await,
        )
    };
    let before = scans().await;
    store.begin_attempts(&ids).await.unwrap();
    let acceptances: Vec<_> = ids
        .iter()
        .map(|id| accepted(*id, &["sent-week"], 1))
        .collect();
    store.record_accepted_many(&acceptances).await.unwrap();
    let after = scans().await;
    assert!(after.0 > before.0, "this week is read");
    assert_eq!(after.1, before.1, "the later week is not");
    // The later week is read when its message is in the batch.
    let before = scans_of(&store, &later_week).await;
    store.begin_attempts(&[ids[0], later]).await.unwrap();
    assert!(scans_of(&store, &later_week).await > before);
}
