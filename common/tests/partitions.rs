//! The partitioned layout of `messages` and `message_events`
//! (migrations/20261211100000_partitioned_messages.sql) against real
//! Postgres: the upgrade moves an existing installation's rows in place
//! (readable, timelines whole, counts right, still writable); a freshly
//! migrated database accepts messages before any housekeeping ran; accepts
//! running while partitions are created and dropped are all kept; and the
//! SQL's ULID prefix is the one our ids start with.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use common::domain::{Channel, EventSource, MessageId, MessageStatus, PhoneNumber};
use common::store::{MIGRATOR, NewMessage, Retirement, StatusChange, Store, Submission};
use common::telemetry::TraceContext;
use common::test_support::{TestDatabase, admin_url, database_url, drop_database, unique};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

const PARTITIONING: i64 = 20261211100000;
const WEEK: Duration = Duration::from_secs(7 * 86_400);

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

fn id_at(at: SystemTime) -> MessageId {
    ulid::Ulid::from_datetime(at).to_string().parse().unwrap()
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

type Counts = BTreeMap<(String, String), i64>;

/// `count(*)` by client and status, with the every-client rows ('') the
/// rollup keeps.
async fn truth(store: &Store) -> Counts {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT coalesce(client, ''), status, count(*) FROM messages
          GROUP BY GROUPING SETS ((client, status), (status))",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(c, s, n)| ((c, s), n)).collect()
}

async fn rolled_up(store: &Store) -> Counts {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT client, status, messages FROM dashboard_status_counts WHERE messages <> 0",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(c, s, n)| ((c, s), n)).collect()
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

async fn scalar(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_upgrade_moves_existing_rows_into_the_partitioned_layout() {
    let (name, url) = empty_database().await;
    let before = Migrator {
        migrations: Cow::Owned(
            MIGRATOR
                .iter()
                .filter(|m| m.version < PARTITIONING)
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
    sqlx::query(
        "INSERT INTO callback_attempts (callback_id, attempt, started_at, duration_ms, status_code)
         SELECT id, 1, now(), 5, 200 FROM status_callbacks WHERE message_id = $1",
    )
    .bind(ids[0].to_string())
    .execute(store.pool())
    .await
    .unwrap();
    catch_up(&store).await;
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
    catch_up(&store).await;
    assert_eq!(rolled_up(&store).await, truth(&store).await);
    let failures = scalar(&store, "SELECT count(*) FROM recent_failures").await;
    assert_eq!(failures, 1);
    // The timeline's foreign key still holds on the old partition.
    let orphan = sqlx::query(
        "INSERT INTO message_events (message_id, status, source) VALUES ($1, 'queued', 'gateway')",
    )
    .bind(id_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)).to_string())
    .execute(store.pool())
    .await;
    assert!(orphan.is_err(), "an event without its message is refused");

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
        let id = id_at(now + WEEK * weeks);
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
    for round in 0..15 {
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
        created > 10 && dropped > 10 && held > 0,
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
        assert_eq!(prefix, id_at(at).to_string()[..10]);
    }
}
