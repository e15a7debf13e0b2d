//! The partitioned layout of `messages` and `message_events`
//! (migrations/20261211100000_partitioned_messages.sql) and retention
//! (worker/src/retention.rs) against real Postgres, each test in its own
//! database.
//!
//! Retention, run "in the future" (`now` given) so that weeks of today's
//! messages are past MESSAGE_RETENTION_DAYS: a finished week is dropped
//! with its timelines, callbacks and callback attempts, and the dashboard's
//! status counts lose exactly its messages (an event not folded in yet
//! included); a week with a queued message is held, reported, and its
//! messages stay readable and sendable; a week whose messages Sent reported
//! `sent` long ago goes, one changed since the cutoff is held.
//!
//! The layout: the upgrade moves an existing installation's rows in place
//! (readable, timelines whole, counts right, still writable); a freshly
//! migrated database accepts messages before any housekeeping ran; accepts
//! running while partitions are created and dropped are all kept; the
//! SQL's ULID prefix is the one our ids start with.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use common::domain::{Channel, EventSource, MessageId, MessageStatus, PhoneNumber};
use common::store::{Holders, MIGRATOR, NewMessage, Retirement, StatusChange, Store, Submission};
use common::telemetry::TraceContext;
use common::test_support::{
    TestDatabase, admin_url, database_url, drop_database, message_id_at, orphan_events, unique,
};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};
use worker::retention::retain;

const DAY: Duration = Duration::from_secs(86_400);
const WEEK: Duration = Duration::from_secs(7 * 86_400);
const RETENTION: Duration = Duration::from_secs(90 * 86_400);
const PARTITIONING: i64 = 20261211100000;
/// The columns today's writers fill on every timeline event
/// (migrations/20261213000000_events_carry_their_client.sql). The history
/// below is written by today's code, so the database "before" has them too;
/// the migration adds them to whichever layout it finds.
const EVENTS_CARRY_CLIENT: i64 = 20261213000000;

/// A submission of messages with these ids, each with a callback URL.
fn submission(client: &str, ids: &[MessageId]) -> Submission {
    Submission {
        client: client.into(),
        idempotency: None,
        messages: ids
            .iter()
            .map(|&id| NewMessage {
                id,
                phone_number: PhoneNumber::parse("+14155550123").unwrap(),
                template_id: None,
                template_name: Some("welcome".into()),
                parameters: json!({"n": 1}),
                text: None,
                media_urls: vec![],
                channels: vec![Channel::Sms],
                scheduled_at: None,
                sandbox: false,
                callback_url: Some("https://client.example/cb".into()),
                metadata: json!({}),
            })
            .collect(),
        created_at: Utc::now(),
        trace: TraceContext::new(),
        response_status: 202,
        response_body: json!({}),
    }
}

async fn submit(store: &Store, client: &str, ids: &[MessageId]) -> Result<(), sqlx::Error> {
    store
        .submit(&[submission(client, ids)], Duration::from_secs(60))
        .await
        .map(|_| ())
}

/// A message created at `at` (its id's time).
async fn message_at(store: &Store, client: &str, at: SystemTime) -> MessageId {
    let id = message_id_at(at);
    submit(store, client, &[id]).await.unwrap();
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

/// Sending, accepted by Sent, then `last`.
async fn through(store: &Store, id: MessageId, last: MessageStatus) {
    move_to(
        store,
        id,
        &[MessageStatus::Sending, MessageStatus::Accepted, last],
    )
    .await;
}

async fn scalar(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn count_of(store: &Store, sql: &str, id: MessageId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Rows of a message in each table: messages, events, callbacks, attempts.
async fn rows_of(store: &Store, id: MessageId) -> [i64; 4] {
    [
        count_of(store, "SELECT count(*) FROM messages WHERE id = $1", id).await,
        count_of(store, "SELECT count(*) FROM message_events WHERE message_id = $1", id).await,
        count_of(store, "SELECT count(*) FROM status_callbacks WHERE message_id = $1", id).await,
        count_of(
            store,
            "SELECT count(*) FROM callback_attempts a JOIN status_callbacks c ON c.id = a.callback_id
              WHERE c.message_id = $1",
            id,
        )
        .await,
    ]
}

/// A callback attempt for each of the message's callbacks.
async fn attempt_callbacks(store: &Store, id: MessageId) {
    sqlx::query(
        "INSERT INTO callback_attempts (callback_id, attempt, started_at, duration_ms, status_code)
         SELECT id, 1, now(), 5, 200 FROM status_callbacks WHERE message_id = $1",
    )
    .bind(id.to_string())
    .execute(store.pool())
    .await
    .unwrap();
}

/// Folds every event into the rollups (a step folds what the one before
/// noted, once the transactions running then have ended).
async fn fold_all(store: &Store) {
    for _ in 0..600 {
        let step = store.roll_up_dashboard(10_000).await.unwrap();
        if step.is_some_and(|s| s.behind == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the rollup did not catch up");
}

/// Where the rollup's status counts (each client's and every client's, '')
/// differ from `count(*)`: (client, status, rolled up, counted).
async fn rollup_drift(store: &Store) -> Vec<(String, String, i64, i64)> {
    sqlx::query_as(
        "SELECT client, status, coalesce(r.messages, 0), coalesce(t.n, 0)
           FROM (SELECT client, status, messages FROM dashboard_status_counts) r
           FULL JOIN (SELECT coalesce(client, '') AS client, status, count(*) AS n FROM messages
                       GROUP BY GROUPING SETS ((client, status), (status))) t USING (client, status)
          WHERE coalesce(r.messages, 0) <> coalesce(t.n, 0)",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// An empty database of its own, dropped by the caller.
async fn empty_database() -> (String, String) {
    let name = unique("gwpart").to_lowercase();
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = database_url(&name);
    (name, url)
}

#[tokio::test]
async fn a_finished_week_goes_whole_and_an_unsent_message_holds_its_week() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    // The template may be weeks old: the weeks below must exist.
    store.ensure_message_partitions().await.unwrap();
    let now = SystemTime::now();

    // This week: finished messages (one with a callback attempt), one Sent
    // reported `sent` long ago and one Sent `scheduled` (it has it); all go.
    let delivered = message_at(store, "a", now).await;
    through(store, delivered, MessageStatus::Delivered).await;
    let failed = message_at(store, "b", now).await;
    move_to(
        store,
        failed,
        &[MessageStatus::Sending, MessageStatus::Failed],
    )
    .await;
    let stale = message_at(store, "b", now).await;
    through(store, stale, MessageStatus::Sent).await;
    let scheduled_by_sent = message_at(store, "b", now).await;
    through(store, scheduled_by_sent, MessageStatus::Scheduled).await;
    attempt_callbacks(store, delivered).await;
    // Two weeks on: a queued message, which holds its week, and a delivered one beside it.
    let queued = message_at(store, "a", now + 14 * DAY).await;
    let beside = message_at(store, "a", now + 14 * DAY).await;
    through(store, beside, MessageStatus::Delivered).await;
    fold_all(store).await;
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

    for id in [delivered, failed, stale, scheduled_by_sent] {
        assert_eq!(rows_of(store, id).await, [0; 4], "{id} went with its week");
    }
    // The counts lost exactly the dropped messages, each in the status it
    // was counted in (`delivered`, its `read` not folded in).
    assert_eq!(rollup_drift(store).await, []);
    let (_, week_of_queued) = report
        .held
        .iter()
        .find(|(_, h)| h.unsent == 1)
        .expect("the queued message's week is held");
    assert_eq!(
        *week_of_queued,
        Holders {
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

    fold_all(store).await;
    assert_eq!(rollup_drift(store).await, []);

    // Once it is finished, and past the cutoff, the held week goes too.
    move_to(store, queued, &[MessageStatus::Delivered]).await;
    let report = retain(store, Some(RETENTION), later).await.unwrap();
    assert!(report.held.is_empty(), "{report:?}");
    assert_eq!(rows_of(store, queued).await, [0; 4]);
    fold_all(store).await;
    assert_eq!(rollup_drift(store).await, []);
}

#[tokio::test]
async fn a_recent_status_change_holds_a_week_and_no_retention_drops_nothing() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    store.ensure_message_partitions().await.unwrap();
    let now = SystemTime::now();
    let sent = message_at(store, "a", now).await;
    through(store, sent, MessageStatus::Sent).await;
    let scheduled_by_sent = message_at(store, "a", now).await;
    through(store, scheduled_by_sent, MessageStatus::Scheduled).await;

    // MESSAGE_RETENTION_DAYS=0 keeps everything.
    let far: DateTime<Utc> = (now + 400 * DAY).into();
    let report = retain(store, None, far).await.unwrap();
    assert!(
        report.dropped.is_empty() && report.held.is_empty(),
        "{report:?}"
    );
    assert_eq!(rows_of(store, sent).await[0], 1);

    // Sent reported `sent` and `scheduled` after the cutoff: their week is
    // held. (The pass runs 130 days on; the changes are dated a day before
    // that.)
    let later: DateTime<Utc> = (now + 130 * DAY).into();
    sqlx::query("UPDATE messages SET updated_at = $2 WHERE id = ANY($1)")
        .bind(vec![sent.to_string(), scheduled_by_sent.to_string()])
        .bind(later - chrono::Duration::days(1))
        .execute(store.pool())
        .await
        .unwrap();
    let report = retain(store, Some(RETENTION), later).await.unwrap();
    let held: Vec<Holders> = report.held.iter().map(|(_, h)| *h).collect();
    assert!(
        held.contains(&Holders {
            unsent: 0,
            recent: 2
        }),
        "{report:?}"
    );
    assert_eq!(rows_of(store, sent).await[0], 1);

    // An unsent message beside them holds the week on its own: the recent
    // changes are not counted (that would read the week whole each pass).
    let queued = message_at(store, "a", now).await;
    let report = retain(store, Some(RETENTION), later).await.unwrap();
    let (_, holders) = report
        .held
        .iter()
        .find(|(_, h)| h.unsent > 0)
        .expect("held by the queued message");
    assert_eq!(
        *holders,
        Holders {
            unsent: 1,
            recent: 0
        }
    );
    assert_eq!(rows_of(store, queued).await[0], 1);
}

#[tokio::test]
async fn a_redriven_message_that_sent_had_taken_holds_its_week() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    store.ensure_message_partitions().await.unwrap();
    let now = SystemTime::now();
    let id = message_at(store, "a", now).await;
    // A duplicate job's acceptance lands just before the dead-letter; an
    // operator re-drives the message: it is queued again, not yet with Sent.
    move_to(
        store,
        id,
        &[MessageStatus::Sending, MessageStatus::Accepted],
    )
    .await;
    let mut change = StatusChange::new(MessageStatus::Failed, EventSource::Worker);
    change.event = Some(common::store::DEAD_LETTERED);
    assert!(store.dead_letter(id, &change).await.unwrap());
    let (redriven, refused) = store.redrive(Some(&[id.to_string()]), None).await.unwrap();
    assert_eq!((redriven.len(), refused.len()), (1, 0));

    let later: DateTime<Utc> = (now + 130 * DAY).into();
    let report = retain(store, Some(RETENTION), later).await.unwrap();
    assert!(report.held.iter().any(|(_, h)| h.unsent == 1), "{report:?}");
    assert_eq!(rows_of(store, id).await[0], 1);
}

#[tokio::test]
async fn the_upgrade_moves_existing_rows_into_the_partitioned_layout() {
    let (name, url) = empty_database().await;
    let before = Migrator {
        migrations: Cow::Owned(
            MIGRATOR
                .iter()
                .filter(|m| m.version < PARTITIONING || m.version == EVENTS_CARRY_CLIENT)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    let mut conn = PgConnection::connect(&url).await.unwrap();
    before.run(&mut conn).await.unwrap();
    let store = Store::connect_lazy(&url, 4).unwrap();

    // An installation with history: messages through their statuses, with
    // callbacks and a callback attempt; some folded into the rollups, one
    // change not yet.
    let ids: Vec<MessageId> = (0..6).map(|_| MessageId::new()).collect();
    submit(&store, "a", &ids[..4]).await.unwrap();
    submit(&store, "b", &ids[4..]).await.unwrap();
    let change = |s| StatusChange::new(s, EventSource::Sent);
    for &id in &ids[..5] {
        store
            .change_status(
                id,
                &StatusChange::new(MessageStatus::Sending, EventSource::Worker),
            )
            .await
            .unwrap();
        store
            .change_status(id, &change(MessageStatus::Accepted))
            .await
            .unwrap();
    }
    store
        .change_status(ids[0], &change(MessageStatus::Delivered))
        .await
        .unwrap();
    store
        .change_status(ids[1], &change(MessageStatus::Failed))
        .await
        .unwrap();
    attempt_callbacks(&store, ids[0]).await;
    fold_all(&store).await;
    store
        .change_status(ids[2], &change(MessageStatus::Delivered))
        .await
        .unwrap();
    let mut messages = Vec::new();
    let mut timelines = Vec::new();
    for &id in &ids {
        messages.push(format!(
            "{:?}",
            store.message_by_id(id).await.unwrap().unwrap()
        ));
        timelines.push(format!("{:?}", store.events(id).await.unwrap()));
    }
    let counts = (
        scalar(&store, "SELECT count(*) FROM message_events").await,
        scalar(&store, "SELECT count(*) FROM status_callbacks").await,
        scalar(&store, "SELECT count(*) FROM callback_attempts").await,
    );
    let last_event = scalar(&store, "SELECT max(id) FROM message_events").await;

    MIGRATOR.run(&mut conn).await.unwrap();

    // The old tables are the partition of everything before the first week.
    let legacy: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT name, lower_id FROM message_partitions() LIMIT 1")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(legacy, [("messages_legacy".to_string(), None)]);
    assert_eq!(
        scalar(&store, "SELECT count(*) FROM ONLY messages_legacy").await,
        6,
        "the rows stayed where they were"
    );
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            format!("{:?}", store.message_by_id(id).await.unwrap().unwrap()),
            messages[i]
        );
        assert_eq!(
            format!("{:?}", store.events(id).await.unwrap()),
            timelines[i]
        );
    }
    assert_eq!(
        (
            scalar(&store, "SELECT count(*) FROM message_events").await,
            scalar(&store, "SELECT count(*) FROM status_callbacks").await,
            scalar(&store, "SELECT count(*) FROM callback_attempts").await,
        ),
        counts
    );

    // Still written: an old message moves on (its event in the old table,
    // with an id after the old ones), a new one is accepted; the views
    // and the rollups read the new layout.
    store
        .change_status(ids[3], &change(MessageStatus::Delivered))
        .await
        .unwrap();
    assert!(scalar(&store, "SELECT max(id) FROM message_events").await > last_event);
    let fresh = MessageId::new();
    submit(&store, "a", &[fresh]).await.unwrap();
    assert_eq!(store.events(fresh).await.unwrap().len(), 1);
    fold_all(&store).await;
    assert_eq!(rollup_drift(&store).await, []);
    let failures = scalar(&store, "SELECT count(*) FROM recent_failures").await;
    assert_eq!(failures, 1);
    // Every event still has its message, in the old partition as in the new.
    assert_eq!(orphan_events(&store).await, 0);

    store.pool().close().await;
    conn.close().await.unwrap();
    drop_database(&name).await.unwrap();
}

#[tokio::test]
async fn a_freshly_migrated_database_accepts_before_any_housekeeping() {
    let (name, url) = empty_database().await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    MIGRATOR.run(&mut conn).await.unwrap();
    let store = Store::connect_lazy(&url, 4).unwrap();
    let now = SystemTime::now();
    // Today, and every week up to seven ahead (a gateway's clock ahead, a
    // worker down for weeks).
    for weeks in 0..=7 {
        let id = message_id_at(now + WEEK * weeks);
        submit(&store, "a", &[id])
            .await
            .unwrap_or_else(|e| panic!("{weeks} weeks ahead: {e}"));
        assert!(store.message_by_id(id).await.unwrap().is_some());
    }
    store.pool().close().await;
    conn.close().await.unwrap();
    drop_database(&name).await.unwrap();
}

#[tokio::test]
async fn accepts_during_partition_maintenance_are_all_kept() {
    let db = TestDatabase::new().await;
    let store = db.store.clone();
    store.ensure_message_partitions().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (store, stop) = (store.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<MessageId> = (0..5).map(|_| MessageId::new()).collect();
                submit(&store, &format!("client{w}"), &ids)
                    .await
                    .expect("an accept never fails for partition maintenance");
                accepted.extend(ids);
            }
            accepted
        }));
    }

    // Meanwhile: weeks created far ahead, then dropped again (the weeks
    // after the current one hold no message; the current week, holding
    // queued ones, is held), round after round.
    let far = Utc::now() + chrono::Duration::days(3650);
    let (mut created, mut dropped, mut held) = (0, 0, 0);
    for round in 0..8 {
        created += sqlx::query_scalar::<_, i32>(
            "SELECT message_partitions_ensure(now() + make_interval(weeks => $1))",
        )
        .bind(12 + round)
        .fetch_one(store.pool())
        .await
        .unwrap();
        let now_prefix = &ulid::Ulid::generate().to_string()[..10];
        for partition in store.message_partitions().await.unwrap().into_iter().rev() {
            let current = partition
                .lower_id
                .as_deref()
                .is_none_or(|lo| lo <= now_prefix);
            if !current && partition.upper_at < Utc::now() + chrono::Duration::weeks(10) {
                continue;
            }
            match store.drop_message_partition(&partition, far).await.unwrap() {
                Retirement::Dropped { messages } => {
                    assert_eq!(messages, 0, "only empty weeks ahead go");
                    dropped += 1;
                }
                Retirement::Held(holders) => {
                    assert!(current && holders.unsent > 0, "{partition:?}");
                    held += 1;
                }
                Retirement::Busy => {}
            }
            if current {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut accepted = Vec::new();
    for writer in writers {
        accepted.extend(writer.await.unwrap());
    }
    assert!(
        created > 5 && dropped > 5 && held > 0,
        "created {created}, dropped {dropped}, held {held}"
    );
    assert!(accepted.len() > 50, "{} accepted", accepted.len());
    let ids: Vec<String> = accepted.iter().map(ToString::to_string).collect();
    let (messages, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM messages WHERE id = ANY($1)),
                (SELECT count(*) FROM message_events WHERE message_id = ANY($1))",
    )
    .bind(&ids)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((messages, events), (ids.len() as i64, ids.len() as i64));
}

#[tokio::test]
async fn the_sql_ulid_prefix_is_our_ids_prefix() {
    let db = TestDatabase::new().await;
    for at in [
        SystemTime::UNIX_EPOCH,
        SystemTime::now(),
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_083_200_123),
    ] {
        let prefix: String = sqlx::query_scalar("SELECT ulid_time_prefix($1)")
            .bind(chrono::DateTime::<Utc>::from(at))
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        assert_eq!(prefix, message_id_at(at).to_string()[..10]);
    }
}

/// Dropping a week at scale, for the README (`cargo nextest run -p worker
/// --test partitions --run-ignored only dropping_a_large_week`;
/// `RETENTION_BENCH_MESSAGES`, default 1,000,000, with 4 events each): how
/// long the pass takes, and the slowest accept of a writer running
/// meanwhile (no accept waits for the drop).
#[tokio::test]
#[ignore = "a benchmark: run on its own"]
async fn dropping_a_large_week_blocks_no_accept() {
    let messages: i64 =
        std::env::var("RETENTION_BENCH_MESSAGES").map_or(1_000_000, |n| n.parse().unwrap());
    let db = TestDatabase::new().await;
    let store = db.store.clone();
    store.ensure_message_partitions().await.unwrap();
    let now = SystemTime::now();
    let week: DateTime<Utc> = (now + 2 * WEEK).into();
    let started = std::time::Instant::now();
    sqlx::raw_sql(&format!(
        "INSERT INTO messages (id, client, phone_number, status, created_at, updated_at, accepted_at, delivered_at, failed_at)
         SELECT ulid_time_prefix('{week}') || lpad(i::text, 16, '0'), 'client_' || (i % 20), '+14155550123',
                CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'delivered' END, now(), now(), now(),
                CASE WHEN i % 10 <> 0 THEN now() END, CASE WHEN i % 10 = 0 THEN now() END
           FROM generate_series(1, {messages}) i;
         INSERT INTO message_events (message_id, status, source, at)
         SELECT m.id, s, 'sent', now() FROM messages m
          CROSS JOIN LATERAL (VALUES ('queued'), ('sending'), ('accepted'), (m.status)) e(s)
          WHERE m.id >= ulid_time_prefix('{week}');
         SELECT dashboard_rollup_rebuild();"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE messages, message_events")
        .execute(store.pool())
        .await
        .unwrap();
    eprintln!("loaded {messages} messages in {:?}", started.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let one = std::time::Instant::now();
                submit(&store, "client_1", &[MessageId::new()])
                    .await
                    .unwrap();
                slowest = slowest.max(one.elapsed());
            }
            slowest
        })
    };
    let started = std::time::Instant::now();
    let report = retain(&store, Some(RETENTION), (now + 130 * DAY).into())
        .await
        .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let slowest = writer.await.unwrap();
    assert!(
        report.dropped.iter().any(|(_, n)| *n == messages),
        "{report:?}"
    );
    eprintln!(
        "dropped a week of {messages} messages ({} events) in {took:?}; slowest accept meanwhile {slowest:?}",
        messages * 4
    );
    fold_all(&store).await;
    assert_eq!(rollup_drift(&store).await, []);
}
