//! Tenants kept apart, at the worker: callbacks of bootstrap keys signed
//! with secrets derived from `CALLBACK_SIGNING_KEY`, with the old and the
//! new secret side by side during a transition (checked with the project's
//! Standard Webhooks verifier); a managed key's rotated secret; fair
//! callback claims, so one client's hanging receiver does not hold up
//! another's callbacks; and `gateway tenants purge`, against real Postgres.

mod inbox_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use common::config::{Config, Secret};
use common::signature::WebhookSecret;
use common::signature::callback::{derived_secret, legacy_secret};
use common::store::NewApiKey;
use common::test_support::updates_of;
use inbox_support::*;

const SIGNING_KEY: &str = "tests-callback-signing-key-0123456789abcdef";
const PREVIOUS_SIGNING_KEY: &str = "tests-previous-callback-signing-key-0123456789";
const OTHER_API_KEY: &str = "key-other-0002";

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver that records every request and answers 200; `hang` makes it
/// never answer.
async fn receiver(hang: bool) -> (Seen, String) {
    let seen = Seen::default();
    let handler = move |State(seen): State<Seen>, headers: HeaderMap, body: Bytes| async move {
        seen.lock().unwrap().push((headers, body));
        if hang {
            std::future::pending::<()>().await;
        }
        "ok"
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(handler))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, url)
}

async fn wait_for(seen: &Seen, count: usize) -> Vec<(HeaderMap, Bytes)> {
    eventually(&format!("{count} callback requests"), || async {
        let seen = seen.lock().unwrap().clone();
        (seen.len() >= count).then_some(seen)
    })
    .await
}

fn signatures(headers: &HeaderMap) -> usize {
    headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .count()
}

/// One callback of the bootstrap key `tester`, under these settings.
async fn bootstrap_callback(extra: &[(&str, &str)]) -> (HeaderMap, Bytes) {
    let stack = Stack::start(extra).await;
    let (seen, url) = receiver(false).await;
    stack.start_callbacks();
    let id = stack.submit(API_KEY, Some(&url)).await;
    stack.accept(&id, &["sent-signing"]).await;
    wait_for(&seen, 1).await.remove(0)
}

#[tokio::test]
async fn bootstrap_callbacks_are_signed_with_the_derived_secret_and_during_a_transition_the_old_too()
 {
    let current = derived_secret(&Secret::new(SIGNING_KEY), CLIENT);
    let previous = derived_secret(&Secret::new(PREVIOUS_SIGNING_KEY), CLIENT);
    let legacy = legacy_secret(&Secret::new(API_KEY));

    // The signing key alone: one signature, by the derived secret; the
    // secret the API key used to give does not verify it.
    let (headers, body) = bootstrap_callback(&[("CALLBACK_SIGNING_KEY", SIGNING_KEY)]).await;
    assert_eq!(signatures(&headers), 1);
    assert!(verifies(&current, &headers, &body));
    assert!(!verifies(&legacy, &headers, &body));
    assert!(!verifies(
        &derived_secret(&Secret::new(SIGNING_KEY), "someone-else"),
        &headers,
        &body
    ));

    // Upgrading from the API-key secret, and rotating the signing key at
    // once: a receiver holding any of the three accepts the callback.
    let (headers, body) = bootstrap_callback(&[
        ("CALLBACK_SIGNING_KEY", SIGNING_KEY),
        ("CALLBACK_SIGNING_KEY_PREVIOUS", PREVIOUS_SIGNING_KEY),
        ("CALLBACK_LEGACY_SECRET_UNTIL", "2999-01-01T00:00:00Z"),
    ])
    .await;
    assert_eq!(signatures(&headers), 3, "{headers:?}");
    for secret in [&current, &previous, &legacy] {
        assert!(verifies(secret, &headers, &body));
    }
    assert!(
        headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .all(|entry| entry.starts_with("v1,"))
    );

    // After the legacy date, the API-key secret signs no more.
    let (headers, body) = bootstrap_callback(&[
        ("CALLBACK_SIGNING_KEY", SIGNING_KEY),
        ("CALLBACK_LEGACY_SECRET_UNTIL", "2020-01-01T00:00:00Z"),
    ])
    .await;
    assert_eq!(signatures(&headers), 1);
    assert!(verifies(&current, &headers, &body));
    assert!(!verifies(&legacy, &headers, &body));
}

#[tokio::test]
async fn a_rotated_managed_secret_signs_beside_the_new_one_until_its_time() {
    let stack = Stack::start(&[]).await;
    let (seen, url) = receiver(false).await;
    let config: Config = (*stack.config).clone();
    let mut first = HashMap::new();
    for (name, days) in [("keeps", 7), ("drops", 0), ("ended", 7)] {
        let secret = WebhookSecret::generate();
        let api_key = format!("sgw_{name}_0123456789");
        stack
            .store()
            .create_api_key(&NewApiKey {
                name: name.into(),
                key_hash: gateway::auth::hash_key(&api_key).to_vec(),
                key_prefix: api_key[..8].into(),
                callback_secret: secret.to_whsec_string(),
                rate_limit: None,
            })
            .await
            .unwrap();
        gateway::cli::rotate_secret(
            stack.store(),
            &config,
            name,
            Duration::from_secs(days * 86_400),
        )
        .await
        .unwrap();
        first.insert(name, (secret, api_key));
    }
    // "ended": its transition is over.
    sqlx::query(
        "UPDATE api_keys SET previous_callback_secret_until = now() - interval '1 second'
          WHERE name = 'ended'",
    )
    .execute(stack.store().pool())
    .await
    .unwrap();
    stack.start_callbacks();
    for (name, (_, api_key)) in &first {
        let id = stack.submit(api_key, Some(&format!("{url}?{name}"))).await;
        stack.accept(&id, &[&format!("sent-{name}")]).await;
    }
    let requests = wait_for(&seen, 3).await;
    for (headers, body) in requests {
        let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let client = client_of(&stack, payload["message_id"].as_str().unwrap()).await;
        let name = client.as_str();
        let stored = stack.store().callback_secrets(name).await.unwrap().unwrap();
        let new = WebhookSecret::parse(&stored.callback_secret).unwrap();
        let (old, _) = &first[name];
        assert!(verifies(&new, &headers, &body), "{name}");
        let (count, old_verifies) = match name {
            "keeps" => (2, true),
            _ => (1, false),
        };
        assert_eq!(signatures(&headers), count, "{name}");
        assert_eq!(verifies(old, &headers, &body), old_verifies, "{name}");
    }
}

/// The client (API key name) of a message.
async fn client_of(stack: &Stack, id: &str) -> String {
    let (client,): (String,) = sqlx::query_as("SELECT client FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(stack.store().pool())
        .await
        .unwrap();
    client
}

/// Claims go round-robin across clients and stop at the per-client cap.
#[tokio::test]
async fn callbacks_are_claimed_round_robin_within_each_clients_share() {
    let stack = Stack::start(&[(
        "API_KEYS",
        &format!("{CLIENT}:{API_KEY},other:{OTHER_API_KEY}"),
    )])
    .await;
    // Ten of tester's, then two of other's, all due.
    for (key, count) in [(API_KEY, 10), (OTHER_API_KEY, 2)] {
        for _ in 0..count {
            let id = stack.submit(key, Some("http://127.0.0.1:9/hook")).await;
            stack.accept(&id, &[&format!("sent-{id}")]).await;
        }
    }
    let store = stack.store();
    let lease = Duration::from_secs(600);
    let by_client = |claimed: &[common::store::CallbackDelivery]| {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for delivery in claimed {
            *counts.entry(delivery.client.clone()).or_default() += 1;
        }
        counts
    };
    // Four places: each client's oldest, then each one's second.
    let claimed = store
        .claim_callbacks(4, lease, 10, &HashMap::new())
        .await
        .unwrap();
    assert_eq!(
        by_client(&claimed),
        HashMap::from([("tester".into(), 2), ("other".into(), 2)])
    );
    // tester has 2 in flight, its cap is 3: one more, though 8 are due.
    let in_flight = HashMap::from([("tester".to_owned(), 2), ("other".to_owned(), 2)]);
    let claimed = store
        .claim_callbacks(10, lease, 3, &in_flight)
        .await
        .unwrap();
    assert_eq!(by_client(&claimed), HashMap::from([("tester".into(), 1)]));
    // At its cap, nothing.
    let in_flight = HashMap::from([("tester".to_owned(), 3)]);
    assert!(
        store
            .claim_callbacks(10, lease, 3, &in_flight)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A callback's claim is a lease apart from its due time: not claimed
/// again while leased, claimed again (next attempt) once the lease runs out,
/// and the claim writes no index entry (Postgres counts a HOT update).
#[tokio::test]
async fn a_claimed_callback_is_leased_then_claimed_again_and_the_claim_is_a_hot_update() {
    let stack = Stack::start(&[]).await;
    let id = stack.submit(API_KEY, Some("http://127.0.0.1:9/hook")).await;
    stack.accept(&id, &[&format!("sent-{id}")]).await;
    let store = stack.db.single_connection_store().await;
    let before = updates_of(&store, "status_callbacks").await;
    let first = store
        .claim_callbacks(10, Duration::from_millis(300), 10, &HashMap::new())
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let after = updates_of(&store, "status_callbacks").await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "the claim is one HOT update"
    );
    let no_one_in_flight = HashMap::new();
    let claim = || store.claim_callbacks(10, Duration::from_secs(60), 10, &no_one_in_flight);
    assert!(claim().await.unwrap().is_empty(), "leased");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = claim().await.unwrap();
    assert_eq!(
        (again.len(), again[0].id, again[0].attempts),
        (1, first[0].id, 2)
    );
}

/// While one tenant's receiver hangs (and the callback timeout is long),
/// with many of its callbacks pending, another tenant's later callbacks
/// are all delivered; the hanging tenant holds no more than its share.
#[tokio::test]
async fn a_hanging_receiver_does_not_hold_up_another_tenants_callbacks() {
    let stack = Stack::start(&[
        (
            "API_KEYS",
            &format!("{CLIENT}:{API_KEY},other:{OTHER_API_KEY}"),
        ),
        ("CALLBACK_CONCURRENCY", "4"),
        ("CALLBACK_TIMEOUT_SECS", "3600"),
    ])
    .await;
    assert_eq!(stack.config.callbacks.per_client_concurrency, 2);
    let (hung, hanging_url) = receiver(true).await;
    let (answered, url) = receiver(false).await;
    for i in 0..12 {
        let id = stack.submit(OTHER_API_KEY, Some(&hanging_url)).await;
        stack.accept(&id, &[&format!("sent-hang-{i}")]).await;
    }
    stack.start_callbacks();
    wait_for(&hung, 2).await;

    let mut mine = Vec::new();
    for i in 0..6 {
        let id = stack.submit(API_KEY, Some(&url)).await;
        stack.accept(&id, &[&format!("sent-mine-{i}")]).await;
        mine.push(id);
    }
    let delivered = wait_for(&answered, 6).await;
    let mut ids: Vec<String> = delivered
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<serde_json::Value>(body).unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    mine.sort();
    assert_eq!(ids, mine);
    // The hanging tenant never had more than its two deliveries out; the
    // other ten of its callbacks wait, unclaimed.
    assert_eq!(hung.lock().unwrap().len(), 2);
    let (pending, never_tried): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE attempts = 0) FROM status_callbacks
          WHERE client = 'other' AND state = 'pending'",
    )
    .fetch_one(stack.store().pool())
    .await
    .unwrap();
    assert_eq!((pending, never_tried), (12, 10));
}

/// `gateway tenants purge` removes one tenant's messages, timelines,
/// callbacks and their attempts, the webhook events applied to its
/// messages, and its idempotency records, and leaves another's alone.
#[tokio::test]
async fn purging_a_tenant_leaves_the_others_rows_untouched() {
    let stack = Stack::start(&[(
        "API_KEYS",
        &format!("{CLIENT}:{API_KEY},other:{OTHER_API_KEY}"),
    )])
    .await;
    let (seen, url) = receiver(false).await;
    stack.start_inbox();
    stack.start_callbacks();
    let mut ids: HashMap<&str, Vec<String>> = HashMap::new();
    let mut n = 0;
    for (client, key, count) in [(CLIENT, API_KEY, 2), ("other", OTHER_API_KEY, 1)] {
        for i in 0..count {
            let response = stack
                .http
                .post(format!("{}/api/messages/send", stack.base))
                .bearer_auth(key)
                .header("Idempotency-Key", format!("order-{i}"))
                .json(
                    &serde_json::json!({"phone_number": "+14155550123", "template_id": "t",
                                          "callback_url": url}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let id = response.json::<serde_json::Value>().await.unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned();
            let sent_id = format!("sent-purge-{client}-{i}");
            stack.accept(&id, &[&sent_id]).await;
            let event = sent_event("message.delivered", &sent_id, "2026-01-15T10:00:00Z");
            assert_eq!(
                stack.post_sent(&event, &format!("evt-{client}-{i}")).await,
                200
            );
            ids.entry(client).or_default().push(id);
            n += 2; // accepted and delivered
        }
    }
    wait_for(&seen, n).await;
    let all: Vec<String> = ids.values().flatten().cloned().collect();
    eventually(
        "every callback delivered and every event applied",
        || async {
            let (callbacks, events): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM status_callbacks WHERE state = 'delivered'),
                    (SELECT count(*) FROM webhook_inbox WHERE message_id = ANY($1))",
            )
            .bind(&all)
            .fetch_one(stack.store().pool())
            .await
            .unwrap();
            (callbacks == n as i64 && events == 3).then_some(())
        },
    )
    .await;

    let rows = |ids: Vec<String>, client: &'static str| {
        let pool = stack.store().pool().clone();
        async move {
            let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM messages WHERE id = ANY($1)),
                        (SELECT count(*) FROM message_events WHERE message_id = ANY($1)),
                        (SELECT count(*) FROM status_callbacks WHERE message_id = ANY($1)),
                        (SELECT count(*) FROM callback_attempts a JOIN status_callbacks c
                            ON c.id = a.callback_id WHERE c.message_id = ANY($1)),
                        (SELECT count(*) FROM idempotency_records WHERE client = $2),
                        (SELECT count(*) FROM webhook_inbox WHERE message_id = ANY($1))",
            )
            .bind(ids)
            .bind(client)
            .fetch_one(&pool)
            .await
            .unwrap();
            row
        }
    };
    let mine = ids[CLIENT].clone();
    let theirs = ids["other"].clone();
    let before = rows(mine.clone(), CLIENT).await;
    let others_before = rows(theirs.clone(), "other").await;
    // Two messages: queued, accepted, delivered each; a callback and an
    // attempt per change; an idempotency record and an event each.
    assert_eq!(before, (2, 6, 4, 4, 2, 2));
    assert_eq!(others_before, (1, 3, 2, 2, 1, 1));

    // Folded into the dashboard's status counts, which the purge takes the
    // messages out of again.
    let counted_for = |client: &'static str| {
        let pool = stack.store().pool().clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT coalesce(sum(messages), 0)::bigint FROM dashboard_status_counts WHERE client = $1",
            )
            .bind(client)
            .fetch_one(&pool)
            .await
            .unwrap();
            n
        }
    };
    for _ in 0..3 {
        stack.store().roll_up_dashboard(1000).await.unwrap();
    }
    assert_eq!(
        (counted_for(CLIENT).await, counted_for("other").await),
        (2, 1)
    );

    let config: Config = (*stack.config).clone();
    let purged = gateway::cli::purge_tenant(stack.store(), &config, CLIENT, false)
        .await
        .unwrap();
    let counted = (
        purged.messages,
        purged.message_events,
        purged.status_callbacks,
        purged.callback_attempts,
        purged.idempotency_records,
        purged.webhook_events,
    );
    let as_u64 = |r: (i64, i64, i64, i64, i64, i64)| {
        (
            r.0 as u64, r.1 as u64, r.2 as u64, r.3 as u64, r.4 as u64, r.5 as u64,
        )
    };
    assert_eq!(counted, as_u64(before));
    assert_eq!(rows(mine, CLIENT).await, (0, 0, 0, 0, 0, 0));
    assert_eq!(rows(theirs, "other").await, others_before);
    assert_eq!(
        (counted_for(CLIENT).await, counted_for("other").await),
        (0, 1)
    );
}
