//! The dashboard's rollups (migrations/20261210100000_dashboard_rollups.sql,
//! `Store::roll_up_dashboard`) against real Postgres: after a mixed workload
//! (submissions, scheduled ones, attempts, retries, dead letters, cancels,
//! webhooks out of order and repeated, a re-drive, a withdrawn submission),
//! the counts by status are `count(*)` of `messages`, both while events wait
//! to be folded in and once they are; an event that commits after a higher
//! id is folded in, not skipped; a tenant's numbers are its own; and the
//! dashboard role reads the views, never the rollups.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use common::domain::{Channel, EventSource, MessageId, MessageStatus, PhoneNumber};
use common::store::{
    Acceptance, DEAD_LETTERED, NewMessage, StatusChange, Store, Submission, ThroughputMinute,
};
use common::telemetry::TraceContext;
use common::test_support::{TestDatabase, orphan_events};
use serde_json::json;
use sqlx::{Connection, PgConnection};

fn submission(client: &str, count: usize, scheduled: bool) -> Submission {
    let messages: Vec<NewMessage> = (0..count)
        .map(|_| NewMessage {
            id: MessageId::new(),
            phone_number: PhoneNumber::parse("+14155550123").unwrap(),
            template_id: None,
            template_name: Some("welcome".into()),
            parameters: json!({}),
            text: None,
            media_urls: vec![],
            channels: vec![Channel::Sms],
            scheduled_at: scheduled.then(|| Utc::now() + chrono::Duration::hours(1)),
            sandbox: false,
            callback_url: None,
            metadata: json!({}),
        })
        .collect();
    Submission {
        client: client.into(),
        idempotency: None,
        messages,
        created_at: Utc::now(),
        trace: TraceContext::new(),
        response_status: 202,
        response_body: json!({}),
    }
}

async fn submit(store: &Store, client: &str, count: usize, scheduled: bool) -> Vec<MessageId> {
    let s = submission(client, count, scheduled);
    let ids = s.messages.iter().map(|m| m.id).collect();
    store.submit(&[s], Duration::from_secs(60)).await.unwrap();
    ids
}

fn change(status: MessageStatus, source: EventSource) -> StatusChange {
    StatusChange::new(status, source)
}

type Counts = BTreeMap<(String, String), i64>;

/// `count(*)` by client and status: the truth.
async fn truth(store: &Store) -> Counts {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT client, status, count(*) FROM messages GROUP BY 1, 2")
            .fetch_all(store.pool())
            .await
            .unwrap();
    rows.into_iter().map(|(c, s, n)| ((c, s), n)).collect()
}

/// The rollup table alone (what is folded in), zero rows left out: its rows
/// of each client, after checking that its rows of every client at once
/// (client `''`) are their sums.
async fn rolled_up(store: &Store) -> Counts {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT client, status, messages FROM dashboard_status_counts WHERE messages <> 0",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let (everyone, each): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.0.is_empty());
    let mut sums = BTreeMap::new();
    for (_, status, n) in &each {
        *sums.entry(status.clone()).or_insert(0) += n;
    }
    sums.retain(|_, n| *n != 0);
    let everyone: BTreeMap<String, i64> = everyone.into_iter().map(|(_, s, n)| (s, n)).collect();
    assert_eq!(
        everyone, sums,
        "the rows of every client are the sums of each one's"
    );
    each.into_iter().map(|(c, s, n)| ((c, s), n)).collect()
}

/// What the status page shows, per client, for the given clients.
async fn page(store: &Store, clients: &[&str]) -> Counts {
    let mut counts = Counts::new();
    for client in clients {
        for c in store.dashboard(Some(client)).await.unwrap().status_counts {
            counts.insert((client.to_string(), c.status), c.messages);
        }
    }
    counts
}

/// What `message_status_counts` shows, and the truth summed over clients.
async fn view_and_truth_by_status(store: &Store) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let view: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, messages FROM message_status_counts")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let mut by_status = BTreeMap::new();
    for ((_, status), n) in truth(store).await {
        *by_status.entry(status).or_insert(0) += n;
    }
    (view.into_iter().collect(), by_status)
}

/// Steps until nothing is behind (the first step of a round only notes the
/// highest id; the next folds it in once every transaction of the cluster
/// that was running then has ended, which another test's open transaction
/// may delay).
async fn catch_up(store: &Store) {
    for _ in 0..600 {
        let step = store
            .roll_up_dashboard(3)
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

/// Every way of reading the counts agrees with `count(*)`.
async fn assert_counts_true(store: &Store, when: &str) {
    let truth = truth(store).await;
    assert_eq!(page(store, &["a", "b"]).await, truth, "status page, {when}");
    let (view, by_status) = view_and_truth_by_status(store).await;
    assert_eq!(view, by_status, "message_status_counts, {when}");
    let admin: BTreeMap<String, i64> = store
        .dashboard(None)
        .await
        .unwrap()
        .status_counts
        .into_iter()
        .map(|c| (c.status, c.messages))
        .collect();
    assert_eq!(admin, by_status, "admin's status page, {when}");
}

#[tokio::test]
async fn the_rollup_is_count_star_after_a_mixed_workload() {
    let db = TestDatabase::new().await;
    let store = &db.store;

    // Round 1: submissions (two scheduled by the gateway), attempts, a retry.
    let a = submit(store, "a", 8, false).await;
    let b = submit(store, "b", 5, false).await;
    let held = submit(store, "a", 2, true).await;
    assert_counts_true(store, "after submitting (nothing folded in)").await;
    store.roll_up_dashboard(1000).await.unwrap();
    let started = store
        .begin_attempts(&[
            a[0], a[1], a[2], a[3], a[4], a[5], b[0], b[1], b[2], held[0],
        ])
        .await
        .unwrap();
    assert!(started.iter().all(Option::is_some));
    // A second attempt of one that is sending: sending -> sending.
    store.begin_attempt(a[5]).await.unwrap().unwrap();
    store
        .record_retry(a[5], 2, "timeout", "Sent timed out", Utc::now())
        .await
        .unwrap();
    assert_counts_true(store, "after attempts (half folded in)").await;
    catch_up(store).await;
    assert_eq!(
        rolled_up(store).await,
        truth(store).await,
        "folded in, round 1"
    );

    // Round 2: Sent accepts some; webhooks out of order, repeated, and late.
    let accepted: Vec<Acceptance> = [a[0], a[1], a[2], a[3], b[0], b[1], held[0]]
        .iter()
        .map(|&id| Acceptance {
            id,
            provider_ids: vec![format!("sent_{id}")],
            change: change(MessageStatus::Accepted, EventSource::Worker),
        })
        .collect();
    store.record_accepted_many(&accepted).await.unwrap();
    let delivered = change(MessageStatus::Delivered, EventSource::Sent);
    let sent = change(MessageStatus::Sent, EventSource::Sent);
    let read = change(MessageStatus::Read, EventSource::Sent);
    let failed = {
        let mut c = change(MessageStatus::Failed, EventSource::Sent);
        c.error_code = Some("unreachable".into());
        c.error = Some("no route".into());
        c
    };
    let applied = store
        .change_statuses(&[
            // Delivered before sent: sent arrives late and moves nothing.
            (a[0], &delivered),
            (a[0], &sent),
            (a[0], &delivered),
            (a[1], &sent),
            (a[1], &read),
            (a[2], &failed),
            // A delivery reported after the failure ranks above it.
            (a[2], &delivered),
            (b[0], &sent),
            (b[1], &failed),
            (b[1], &sent),
        ])
        .await
        .unwrap();
    assert_eq!(
        applied,
        [
            true, false, false, true, true, true, true, true, true, false
        ]
    );
    // Cancels: a queued one moves; one already sending does not.
    assert_eq!(
        store.cancel("a", a[6]).await.unwrap(),
        Some((MessageStatus::Queued, true))
    );
    assert_eq!(
        store.cancel("b", b[2]).await.unwrap(),
        Some((MessageStatus::Sending, false))
    );
    assert_eq!(
        store.cancel("a", held[1]).await.unwrap(),
        Some((MessageStatus::Scheduled, true))
    );
    assert_counts_true(store, "after webhooks (not folded in)").await;
    store.roll_up_dashboard(2).await.unwrap();
    assert_counts_true(store, "after webhooks (a step later)").await;
    catch_up(store).await;
    assert_eq!(
        rolled_up(store).await,
        truth(store).await,
        "folded in, round 2"
    );

    // Round 3: retries run out, an operator re-drives, a submission is withdrawn.
    let mut dead = change(MessageStatus::Failed, EventSource::Worker);
    dead.event = Some(DEAD_LETTERED);
    dead.error_code = Some("sent_5xx".into());
    assert!(store.dead_letter(a[5], &dead).await.unwrap());
    assert!(store.dead_letter(b[2], &dead).await.unwrap());
    catch_up(store).await;
    let (redriven, refused) = store
        .redrive(Some(&[b[2].to_string()]), None)
        .await
        .unwrap();
    assert_eq!((redriven.len(), refused.len()), (1, 0));
    let gone = submission("b", 3, false);
    store
        .submit(std::slice::from_ref(&gone), Duration::from_secs(60))
        .await
        .unwrap();
    catch_up(store).await;
    // Withdrawn after being folded in, and a message deleted before.
    store.withdraw(&[&gone]).await.unwrap();
    let late = submission("a", 2, false);
    store
        .submit(std::slice::from_ref(&late), Duration::from_secs(60))
        .await
        .unwrap();
    store.withdraw(&[&late]).await.unwrap();
    assert_counts_true(store, "after re-drive and withdrawals").await;
    catch_up(store).await;
    assert_eq!(
        rolled_up(store).await,
        truth(store).await,
        "folded in, round 3"
    );
    assert_counts_true(store, "at the end").await;

    // The other rollups: every message created is counted once, in its minute.
    let created: i64 = store
        .dashboard(None)
        .await
        .unwrap()
        .throughput
        .iter()
        .map(|m: &ThroughputMinute| m.created)
        .sum();
    // A withdrawn submission stays counted as created once folded in (it
    // was, for a moment); one withdrawn before that never was.
    assert_eq!(created, 8 + 5 + 2 + 3);
    let failures: Vec<(String, i64)> =
        sqlx::query_as("SELECT error_code, messages FROM failure_reasons ORDER BY error_code")
            .fetch_all(store.pool())
            .await
            .unwrap();
    // a[2] failed, then was delivered: still a failure that happened.
    assert_eq!(
        failures,
        [
            ("sent_5xx".to_owned(), 2),
            ("unknown".to_owned(), 2),
            ("unreachable".to_owned(), 2)
        ]
    );

    // Every writer above stored, on each event the dashboard counts, the
    // message's client and the status it left: what the readers would
    // otherwise look up (migrations/20261213000000_events_carry_their_client.sql).
    let (counted, differing): (i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE e.client IS DISTINCT FROM m.client OR e.prev_status IS DISTINCT FROM (
                  SELECT dashboard_status_of(p.status) FROM message_events p
                   WHERE p.message_id = e.message_id AND p.id < e.id AND p.applied
                     AND dashboard_status_of(p.status) IS NOT NULL
                   ORDER BY p.id DESC LIMIT 1))
           FROM message_events e JOIN messages m ON m.id = e.message_id
          WHERE e.applied AND dashboard_status_of(e.status) IS NOT NULL",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(counted > 40, "{counted} counted events");
    assert_eq!(
        differing, 0,
        "events whose client or previous status differs"
    );
    // And every event has its message.
    assert_eq!(
        orphan_events(store).await,
        0,
        "events without their message"
    );
}

#[tokio::test]
async fn an_event_committed_after_a_higher_id_is_folded_in() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    let ids = submit(store, "a", 3, false).await;
    catch_up(store).await;

    // A transaction takes an event id and stays open...
    let mut slow = PgConnection::connect(&db.url).await.unwrap();
    let mut slow_tx = slow.begin().await.unwrap();
    sqlx::query(
        "WITH moved AS (UPDATE messages SET status = 'cancelled', failed_at = now() WHERE id = $1 RETURNING id)
         INSERT INTO message_events (message_id, status, source) SELECT id, 'cancelled', 'gateway' FROM moved",
    )
    .bind(ids[0])
    .execute(&mut *slow_tx)
    .await
    .unwrap();
    // ...while a higher id commits, and steps run.
    store.begin_attempt(ids[1]).await.unwrap().unwrap();
    for _ in 0..4 {
        store.roll_up_dashboard(1000).await.unwrap();
    }
    // The higher id waits for the lower one: nothing was folded in.
    assert_eq!(
        rolled_up(store).await,
        Counts::from([(("a".to_owned(), "queued".to_owned()), 3)]),
        "before the late commit"
    );
    assert_counts_true(store, "before the late commit").await;
    slow_tx.commit().await.unwrap();
    assert_counts_true(store, "right after the late commit").await;
    catch_up(store).await;
    assert_eq!(
        rolled_up(store).await,
        truth(store).await,
        "after the late commit"
    );
    assert_eq!(
        truth(store)
            .await
            .get(&("a".to_owned(), "cancelled".to_owned())),
        Some(&1)
    );
}

#[tokio::test]
async fn a_tenant_sees_its_own_and_the_dashboard_role_only_the_views() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    let a = submit(store, "a", 4, false).await;
    submit(store, "b", 2, false).await;
    store.begin_attempts(&[a[0], a[1]]).await.unwrap();
    catch_up(store).await;
    store.cancel("a", a[2]).await.unwrap();

    let of = |client: &str, status: &str| (client.to_owned(), status.to_owned());
    assert_eq!(
        page(store, &["a"]).await,
        Counts::from([
            (of("a", "queued"), 1),
            (of("a", "sending"), 2),
            (of("a", "cancelled"), 1)
        ])
    );
    assert_eq!(
        page(store, &["b"]).await,
        Counts::from([(of("b", "queued"), 2)])
    );
    let nobody = store.dashboard(Some("nobody")).await.unwrap();
    assert!(nobody.status_counts.is_empty());
    assert!(nobody.throughput.iter().all(|m| m.created == 0));

    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query("SET ROLE dashboard_reader")
        .execute(&mut *conn)
        .await
        .unwrap();
    for table in [
        "dashboard_status_counts",
        "dashboard_minutes",
        "dashboard_latency",
        "dashboard_failures",
        "dashboard_rollup_state",
    ] {
        let denied = sqlx::query(&format!("SELECT 1 FROM {table} LIMIT 1"))
            .fetch_optional(&mut *conn)
            .await;
        assert!(denied.is_err(), "dashboard_reader reads {table}");
    }
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, messages FROM message_status_counts")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(counts.iter().map(|c| c.1).sum::<i64>(), 6);
    for view in [
        "message_throughput_per_minute",
        "delivery_latency_hourly",
        "failure_reasons",
        "recent_failures",
    ] {
        sqlx::query(&format!("SELECT * FROM {view}"))
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{view}: {e}"));
    }
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
}

#[tokio::test]
async fn latency_percentiles_are_exact_while_few_and_from_the_histograms_after() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    let ids = submit(store, "a", 2, false).await;
    let now = Utc::now() - chrono::Duration::seconds(1);
    for (id, latency) in ids.iter().zip([6, 4]) {
        let mut accepted = change(MessageStatus::Accepted, EventSource::Worker);
        accepted.at = now - chrono::Duration::seconds(latency);
        store.change_status(*id, &accepted).await.unwrap();
        let mut delivered = change(MessageStatus::Delivered, EventSource::Sent);
        delivered.at = now;
        store.change_status(*id, &delivered).await.unwrap();
    }
    catch_up(store).await;
    let exact = store.dashboard(None).await.unwrap().latency;
    assert_eq!(exact.delivered, 2);
    assert!((exact.p50_seconds.unwrap() - 5.0).abs() < 1e-9, "{exact:?}");
    assert!((exact.p90_seconds.unwrap() - 5.8).abs() < 1e-9, "{exact:?}");
    // The view reads the histograms: 4 s and 6 s are in buckets [4, 5) and [6, 7).
    let (delivered, p50): (i64, f64) =
        sqlx::query_as("SELECT delivered, p50_seconds FROM delivery_latency_hourly")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(delivered, 2);
    assert!((4.0..=7.0).contains(&p50), "{p50}");
}
