//! The status page's numbers (`Store::dashboard`) against real Postgres: of
//! every client they are what the dashboard views (Grafana, psql) show, and
//! of one client they are that client's alone, adding up to the whole.

use std::time::Duration;

use chrono::Utc;
use common::domain::{Channel, EventSource, MessageId, MessageStatus, PhoneNumber};
use common::store::{
    DashboardSnapshot, FailureReason, NewMessage, RecentFailure, StatusChange, Store, Submission,
    ThroughputMinute,
};
use common::telemetry::TraceContext;
use common::test_support::TestDatabase;
use serde_json::json;

async fn submit(store: &Store, client: &str, count: usize) -> Vec<MessageId> {
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
            scheduled_at: None,
            sandbox: false,
            callback_url: None,
            metadata: json!({}),
        })
        .collect();
    let ids = messages.iter().map(|m| m.id).collect();
    let submission = Submission {
        client: client.into(),
        idempotency: None,
        messages,
        created_at: Utc::now(),
        trace: TraceContext::new(),
        response_status: 202,
        response_body: json!({}),
    };
    store
        .submit(&[submission], Duration::from_secs(60))
        .await
        .unwrap();
    ids
}

async fn change(store: &Store, id: MessageId, status: MessageStatus, code: Option<&str>) {
    let mut change = StatusChange::new(status, EventSource::Sent);
    change.error_code = code.map(str::to_owned);
    change.error = code.map(|c| format!("{c}!"));
    assert!(store.change_status(id, &change).await.unwrap());
}

/// a: 3 messages (one delivered, one failed); b: 2 (one blocked, one accepted).
async fn seed(store: &Store) {
    let a = submit(store, "a", 3).await;
    let b = submit(store, "b", 2).await;
    change(store, a[0], MessageStatus::Accepted, None).await;
    change(store, a[0], MessageStatus::Delivered, None).await;
    change(store, a[1], MessageStatus::Failed, Some("a_reason")).await;
    change(store, b[0], MessageStatus::Blocked, Some("b_reason")).await;
    change(store, b[1], MessageStatus::Accepted, None).await;
}

fn counts(snapshot: &DashboardSnapshot) -> Vec<(String, i64)> {
    snapshot
        .status_counts
        .iter()
        .map(|c| (c.status.clone(), c.messages))
        .collect()
}

#[tokio::test]
async fn every_clients_numbers_are_the_views_and_a_tenants_are_its_own() {
    let db = TestDatabase::new().await;
    let store = &db.store;
    seed(store).await;
    let pool = store.pool();
    let all = store.dashboard(None).await.unwrap();

    // Every client: what the views say.
    let view_counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, messages FROM message_status_counts ORDER BY status_rank(status), status",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(counts(&all), view_counts);
    let view_minutes: Vec<ThroughputMinute> = sqlx::query_as(
        "SELECT minute, created, accepted, delivered, failed FROM message_throughput_per_minute
          WHERE minute > date_trunc('minute', now()) - interval '60 minutes' ORDER BY minute",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_same_minutes(&all.throughput, &view_minutes);
    let view_reasons: Vec<FailureReason> = sqlx::query_as(
        "SELECT error_code, status, messages, last_seen, latest_error FROM failure_reasons
          ORDER BY messages DESC, last_seen DESC NULLS LAST, error_code",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(all.failure_reasons, view_reasons);
    let view_failures: Vec<RecentFailure> = sqlx::query_as(
        "SELECT message_id, client, status, last_error_code, last_error, attempts, dead_lettered,
                failed_at
           FROM recent_failures ORDER BY failed_at DESC NULLS LAST, message_id DESC LIMIT 20",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(all.recent_failures, view_failures);
    assert_eq!(all.latency.delivered, 1);

    // One client: its own, and the two add up to the whole.
    let a = store.dashboard(Some("a")).await.unwrap();
    let b = store.dashboard(Some("b")).await.unwrap();
    assert_eq!(
        counts(&a),
        [
            ("queued".to_owned(), 1),
            ("failed".to_owned(), 1),
            ("delivered".to_owned(), 1)
        ]
    );
    assert_eq!(
        counts(&b),
        [("accepted".to_owned(), 1), ("blocked".to_owned(), 1)]
    );
    let reasons = |s: &DashboardSnapshot| -> Vec<String> {
        s.failure_reasons
            .iter()
            .map(|r| r.error_code.clone())
            .collect()
    };
    assert_eq!(
        (reasons(&a), reasons(&b)),
        (vec!["a_reason".to_owned()], vec!["b_reason".to_owned()])
    );
    assert!(a.recent_failures.iter().all(|f| f.client == "a"));
    assert!(b.recent_failures.iter().all(|f| f.client == "b"));
    assert_eq!(a.recent_failures.len() + b.recent_failures.len(), 2);
    assert_eq!((a.latency.delivered, b.latency.delivered), (1, 0));
    let added: Vec<ThroughputMinute> = a
        .throughput
        .iter()
        .filter_map(|ma| {
            let mb = b.throughput.iter().find(|mb| mb.minute == ma.minute)?;
            Some(ThroughputMinute {
                minute: ma.minute,
                created: ma.created + mb.created,
                accepted: ma.accepted + mb.accepted,
                delivered: ma.delivered + mb.delivered,
                failed: ma.failed + mb.failed,
            })
        })
        .collect();
    assert_same_minutes(&all.throughput, &added);
    let created: i64 = a.throughput.iter().map(|m| m.created).sum();
    assert_eq!(created, 3);
    // A client with nothing sees nothing.
    let none = store.dashboard(Some("nobody")).await.unwrap();
    assert!(none.status_counts.is_empty() && none.recent_failures.is_empty());
}

/// The minutes two series share agree, and they share all but the one a
/// minute boundary between their queries may have moved.
fn assert_same_minutes(left: &[ThroughputMinute], right: &[ThroughputMinute]) {
    let shared: Vec<(&ThroughputMinute, &ThroughputMinute)> = left
        .iter()
        .filter_map(|l| Some((l, right.iter().find(|r| r.minute == l.minute)?)))
        .collect();
    assert!(shared.len() >= 59, "{} minutes shared", shared.len());
    for (l, r) in shared {
        assert_eq!(l, r);
    }
}
