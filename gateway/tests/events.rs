//! `GET /api/events`, the pull API (issue 15): a consumer paging while
//! 10,000 events are stored concurrently from six connections, whose
//! transactions take ids and commit in a shuffled order, sees every event
//! exactly once; and the API's access and input rules.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::config::Config;
use common::domain::Provider;
use common::store::InboxInsert;
use common::test_support::{TestDatabase, TestRedis};
use gateway::test_support::RunningGateway;
use rand::Rng;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "key-admin-00000001";
const TENANT_KEY: &str = "key-tenant-0000001";

async fn start() -> (TestDatabase, TestRedis, String) {
    let db = TestDatabase::new().await;
    let redis = TestRedis::new();
    let vars: HashMap<String, String> = [
        ("APP_ENV", "testing"),
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_PREFIX", redis.prefix.as_str()),
        (
            "API_KEYS",
            &format!("ops:{ADMIN_KEY}:admin,shop:{TENANT_KEY}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_map(&vars).unwrap();
    let base = RunningGateway::start(config, db.store.clone())
        .await
        .detach();
    (db, redis, base)
}

async fn page(http: &reqwest::Client, base: &str, key: &str, query: &str) -> (u16, Value) {
    let response = http
        .get(format!("{base}/api/events?{query}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn stripe_event(n: usize) -> InboxInsert {
    InboxInsert {
        provider: Provider::Stripe,
        event_id: format!("evt_{n}"),
        event_type: Some("invoice.paid".into()),
        headers: json!({}),
        body: serde_json::to_vec(&json!({"id": format!("evt_{n}"), "type": "invoice.paid"}))
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_through_10000_concurrently_committed_events_without_a_gap_or_a_repeat() {
    const EVENTS: usize = 10_000;
    const WRITERS: usize = 6;
    const BATCH: usize = 25;
    let (db, _redis, base) = start().await;
    let http = reqwest::Client::new();

    // Each writer stores batches in its own transaction and holds it open a
    // random while after taking its ids, so commits land out of id order.
    // Their own connections: the gateway's pool stays the reader's.
    let writing_store = common::store::Store::connect_lazy(&db.url, WRITERS as u32).unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = writing_store.clone();
        writers.spawn(async move {
            let mine: Vec<usize> = (0..EVENTS).filter(|n| n % WRITERS == writer).collect();
            for chunk in mine.chunks(BATCH) {
                let events: Vec<InboxInsert> = chunk.iter().map(|n| stripe_event(*n)).collect();
                let mut tx = store.pool().begin().await.expect("a writer's connection");
                common::store::Store::insert_inbox_with(&mut *tx, &events)
                    .await
                    .unwrap();
                let hold = rand::rng().random_range(0..30);
                tokio::time::sleep(Duration::from_millis(hold)).await;
                tx.commit().await.unwrap();
            }
        });
    }

    // The consumer pages meanwhile, small pages, resuming from each cursor.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut writing = true;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < EVENTS && tokio::time::Instant::now() < deadline {
        let query = match &cursor {
            Some(c) => format!("source=stripe&limit=137&after={c}"),
            None => "source=stripe&limit=137".to_owned(),
        };
        let (status, body) = page(&http, &base, ADMIN_KEY, &query).await;
        assert_eq!(status, 200, "{body}");
        let events = body["events"].as_array().unwrap();
        for event in events {
            seen.push(event["event_id"].as_str().unwrap().to_owned());
            assert_eq!(event["source"], "stripe");
            assert_eq!(event["payload"]["id"], event["event_id"]);
        }
        cursor = Some(body["next_cursor"].as_str().unwrap().to_owned());
        if writing && writers.is_empty() {
            writing = false;
        }
        while let Some(done) = writers.try_join_next() {
            done.unwrap();
        }
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was returned twice");
    let expected: HashSet<String> = (0..EVENTS).map(|n| format!("evt_{n}")).collect();
    let missing: Vec<&String> = expected.iter().filter(|e| !unique.contains(e)).collect();
    assert!(
        missing.is_empty(),
        "{} events skipped, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // Nothing new: the same cursor comes back, for the next poll.
    let (_, body) = page(
        &http,
        &base,
        ADMIN_KEY,
        &format!("source=stripe&after={}", cursor.clone().unwrap()),
    )
    .await;
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["next_cursor"].as_str(), cursor.as_deref());
    assert_eq!(body["has_more"], false);
}

#[tokio::test]
async fn only_admin_keys_read_provider_events_and_bad_queries_are_named() {
    let (db, _redis, base) = start().await;
    let http = reqwest::Client::new();
    db.store
        .insert_inbox(&[stripe_event(1), stripe_event(2)])
        .await
        .unwrap();

    let (status, body) = page(&http, &base, TENANT_KEY, "source=stripe").await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "validation_error");
    assert!(body["messages"]["source"].is_array(), "{body}");

    let (status, body) = page(&http, &base, ADMIN_KEY, "source=telegram").await;
    assert_eq!((status, body["events"].clone()), (200, json!([])));
    // Replies are a tenant's to read (its own: worker/tests/replies.rs).
    let (status, body) = page(&http, &base, TENANT_KEY, "source=inbound").await;
    assert_eq!((status, body["events"].clone()), (200, json!([])));

    for (query, field) in [
        ("", "source"),
        ("source=paypal", "source"),
        ("source=stripe&after=7", "after"),
        ("source=stripe&limit=0", "limit"),
        ("source=stripe&limit=1001", "limit"),
    ] {
        let (status, body) = page(&http, &base, ADMIN_KEY, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(body["messages"][field].is_array(), "{query}: {body}");
    }

    // Events appear once every transaction older than theirs has ended (on
    // the whole server: other tests' writers included), so poll.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, body) = page(&http, &base, ADMIN_KEY, "source=stripe&limit=1").await;
        assert_eq!(status, 200);
        if !body["events"].as_array().unwrap().is_empty() {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(body["events"][0]["event_id"], "evt_1");
    assert_eq!(body["has_more"], true);
    let after = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, body) = page(
        &http,
        &base,
        ADMIN_KEY,
        &format!("source=stripe&after={after}"),
    )
    .await;
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["events"][0]["event_id"], "evt_2");
    assert_eq!(body["events"][0]["event_type"], "invoice.paid");

    let unauthenticated = http
        .get(format!("{base}/api/events?source=stripe"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

/// Per-source pull grants (`gateway keys create --pull stripe`): a tenant key
/// reads the provider sources granted to it, and only those.
#[tokio::test]
async fn tenant_keys_read_the_sources_they_were_granted() {
    let (db, _redis, base) = start().await;
    let http = reqwest::Client::new();
    let key = "sgw_granted_tenant_key_01";
    db.store
        .create_api_key(&common::store::NewApiKey {
            name: "billing".into(),
            key_hash: gateway::auth::hash_key(key).to_vec(),
            key_prefix: key[..8].into(),
            callback_secret: common::signature::WebhookSecret::generate().to_whsec_string(),
            rate_limit: None,
        })
        .await
        .unwrap();
    let (status, _) = page(&http, &base, key, "source=stripe").await;
    assert_eq!(status, 400, "no grant yet");
    assert!(
        db.store
            .set_pull_sources("billing", &[Provider::Stripe])
            .await
            .unwrap()
    );
    // A managed key is cached for up to 10 s (so is a revocation).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while page(&http, &base, key, "source=stripe").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "grant not applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = page(&http, &base, key, "source=telegram").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["messages"]["source"].is_array(), "{body}");
    let (status, _) = page(&http, &base, TENANT_KEY, "source=stripe").await;
    assert_eq!(status, 400, "another tenant has no grant");
}
