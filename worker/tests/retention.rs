//! Retention (worker/src/retention.rs) against real Postgres, a pass run "in
//! the future" (`now` given) so that weeks of today's messages are past
//! MESSAGE_RETENTION_DAYS: a finished week is dropped with its timelines,
//! callbacks and callback attempts, and the dashboard's status counts lose
//! exactly its messages (an event not folded in yet included); a week with
//! a queued message is held, reported, and its messages stay readable and
//! sendable; a week whose last message Sent reported `sent` long ago goes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use common::domain::{Channel, EventSource, MessageId, MessageStatus, PhoneNumber};
use common::store::{NewMessage, StatusChange, Store, Submission};
use common::telemetry::TraceContext;
use common::test_support::TestDatabase;
use serde_json::json;
use worker::retention::{Held, retain};

const DAY: Duration = Duration::from_secs(86_400);
const RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// A message created at `at` (its id's time), with a callback URL.
async fn message_at(store: &Store, client: &str, at: SystemTime) -> MessageId {
    let id: MessageId = ulid::Ulid::from_datetime(at).to_string().parse().unwrap();
    let submission = Submission {
        client: client.into(),
        idempotency: None,
        messages: vec![NewMessage {
            id,
            phone_number: PhoneNumber::parse("+14155550123").unwrap(),
            template_id: None,
            template_name: Some("welcome".into()),
            parameters: json!({}),
            text: None,
            media_urls: vec![],
            channels: vec![Channel::Sms],
            scheduled_at: None,
            sandbox: false,
            callback_url: Some("https://client.example/cb".into()),
            metadata: json!({}),
        }],
        created_at: Utc::now(),
        trace: TraceContext::new(),
        response_status: 202,
        response_body: json!({}),
    };
    store
        .submit(&[submission], Duration::from_secs(60))
        .await
        .unwrap();
    id
}

async fn move_to(store: &Store, id: MessageId, statuses: &[MessageStatus]) {
    for &status in statuses {
        let source = if status == MessageStatus::Sending {
            EventSource::Worker
        } else {
            EventSource::Sent
        };
        assert!(
            store
                .change_status(id, &StatusChange::new(status, source))
                .await
                .unwrap()
        );
    }
}

async fn count(store: &Store, sql: &str, id: MessageId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Rows of a message in each table: messages, events, callbacks, attempts.
async fn rows_of(store: &Store, id: MessageId) -> [i64; 4] {
    [
        count(store, "SELECT count(*) FROM messages WHERE id = $1", id).await,
        count(store, "SELECT count(*) FROM message_events WHERE message_id = $1", id).await,
        count(store, "SELECT count(*) FROM status_callbacks WHERE message_id = $1", id).await,
        count(
            store,
            "SELECT count(*) FROM callback_attempts a JOIN status_callbacks c ON c.id = a.callback_id
              WHERE c.message_id = $1",
            id,
        )
        .await,
    ]
}

type Counts = BTreeMap<(String, String), i64>;

async fn truth(store: &Store) -> Counts {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT client, status, count(*) FROM messages GROUP BY 1, 2")
            .fetch_all(store.pool())
            .await
            .unwrap();
    rows.into_iter().map(|(c, s, n)| ((c, s), n)).collect()
}

/// The rollup's counts (each client's rows, and every client's, client '').
async fn rolled_up(store: &Store) -> Counts {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT client, status, messages FROM dashboard_status_counts WHERE messages <> 0",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(c, s, n)| ((c, s), n)).collect()
}

/// `truth` with a row per status for every client at once, as the rollup keeps it.
fn with_totals(truth: Counts) -> Counts {
    let mut all = truth.clone();
    for ((_, status), n) in truth {
        *all.entry((String::new(), status)).or_insert(0) += n;
    }
    all
}

async fn catch_up(store: &Store) {
    for _ in 0..600 {
        let step = store
            .roll_up_dashboard(1000)
            .await
            .unwrap()
            .expect("no one else steps");
        if step.behind == 0 {
            return;
        }
        if step.folded == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("the rollup did not catch up");
}

#[tokio::test]
async fn a_finished_week_goes_whole_and_an_unsent_message_holds_its_week() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    // The template may be weeks old: the weeks below must exist.
    store.ensure_message_partitions().await.unwrap();
    let now = SystemTime::now();

    // This week: finished messages (one with a callback attempt), one Sent
    // reported `sent` long ago; both go.
    let delivered = message_at(store, "a", now).await;
    move_to(
        store,
        delivered,
        &[
            MessageStatus::Sending,
            MessageStatus::Accepted,
            MessageStatus::Delivered,
        ],
    )
    .await;
    let failed = message_at(store, "b", now).await;
    move_to(
        store,
        failed,
        &[MessageStatus::Sending, MessageStatus::Failed],
    )
    .await;
    let stale = message_at(store, "b", now).await;
    move_to(
        store,
        stale,
        &[
            MessageStatus::Sending,
            MessageStatus::Accepted,
            MessageStatus::Sent,
        ],
    )
    .await;
    sqlx::query(
        "INSERT INTO callback_attempts (callback_id, attempt, started_at, duration_ms, status_code)
         SELECT id, 1, now(), 5, 200 FROM status_callbacks WHERE message_id = $1",
    )
    .bind(delivered.to_string())
    .execute(store.pool())
    .await
    .unwrap();
    // Two weeks on: a queued message, which holds its week, and a delivered one beside it.
    let queued = message_at(store, "a", now + 14 * DAY).await;
    let beside = message_at(store, "a", now + 14 * DAY).await;
    move_to(
        store,
        beside,
        &[
            MessageStatus::Sending,
            MessageStatus::Accepted,
            MessageStatus::Delivered,
        ],
    )
    .await;
    catch_up(store).await;
    // A late webhook not folded in yet: the message is counted as delivered
    // until the rollup folds this in.
    move_to(store, delivered, &[MessageStatus::Read]).await;

    let before = rows_of(store, delivered).await;
    assert_eq!(
        before,
        [1, 5, 4, 3],
        "messages, events, callbacks, attempts"
    );
    let later: DateTime<Utc> = (now + 130 * DAY).into();
    let report = retain(store, Some(RETENTION), later).await.unwrap();

    for id in [delivered, failed, stale] {
        assert_eq!(rows_of(store, id).await, [0; 4], "{id} went with its week");
    }
    let week_of_queued = report
        .held
        .iter()
        .find(|h| h.unsent == 1)
        .expect("the queued message's week is held");
    assert_eq!(
        *week_of_queued,
        Held {
            partition: week_of_queued.partition.clone(),
            unsent: 1,
            recent: 0
        }
    );
    assert_eq!(report.held.len(), 1, "{report:?}");
    assert!(
        !report.dropped.is_empty() && report.busy.is_empty(),
        "{report:?}"
    );
    assert!(report.ahead_weeks >= 0);

    // The held week's messages are all there, readable and still sendable.
    assert_eq!(rows_of(store, beside).await[..2], [1, 4]);
    assert_eq!(store.events(queued).await.unwrap().len(), 1);
    move_to(
        store,
        queued,
        &[MessageStatus::Sending, MessageStatus::Accepted],
    )
    .await;
    assert_eq!(
        store.message_by_id(queued).await.unwrap().unwrap().status,
        MessageStatus::Accepted
    );

    // The counts lost exactly the dropped messages, before and after folding.
    catch_up(store).await;
    assert_eq!(rolled_up(store).await, with_totals(truth(store).await));

    // Once it is finished, and past the cutoff, the held week goes too.
    move_to(store, queued, &[MessageStatus::Delivered]).await;
    let report = retain(store, Some(RETENTION), later).await.unwrap();
    assert!(report.held.is_empty(), "{report:?}");
    assert_eq!(rows_of(store, queued).await, [0; 4]);
    catch_up(store).await;
    assert_eq!(rolled_up(store).await, with_totals(truth(store).await));
}

#[tokio::test]
async fn a_recent_status_change_holds_a_week_and_no_retention_drops_nothing() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    store.ensure_message_partitions().await.unwrap();
    let now = SystemTime::now();
    let sent = message_at(store, "a", now).await;
    move_to(
        store,
        sent,
        &[
            MessageStatus::Sending,
            MessageStatus::Accepted,
            MessageStatus::Sent,
        ],
    )
    .await;

    // MESSAGE_RETENTION_DAYS=0 keeps everything.
    let far: DateTime<Utc> = (now + 400 * DAY).into();
    let report = retain(store, None, far).await.unwrap();
    assert!(
        report.dropped.is_empty() && report.held.is_empty(),
        "{report:?}"
    );
    assert_eq!(rows_of(store, sent).await[0], 1);

    // Sent reported `sent` after the cutoff: its week is held. (The pass
    // runs 130 days on; the change is dated a day before that.)
    let later: DateTime<Utc> = (now + 130 * DAY).into();
    sqlx::query("UPDATE messages SET updated_at = $2 WHERE id = $1")
        .bind(sent.to_string())
        .bind(later - chrono::Duration::days(1))
        .execute(store.pool())
        .await
        .unwrap();
    let report = retain(store, Some(RETENTION), later).await.unwrap();
    assert!(
        report.held.iter().any(|h| h.recent == 1 && h.unsent == 0),
        "{report:?}"
    );
    assert_eq!(rows_of(store, sent).await[0], 1);
}
