//! The gateway and a worker on Redis behind Sentinel (`REDIS_SENTINELS`,
//! `REDIS_SENTINEL_MASTER`): a real primary, replica and sentinel started by
//! the test, and a `SENTINEL FAILOVER` mid-traffic that the processes follow
//! to the new primary, losing nothing and sending nothing twice.

mod send_harness;

use common::domain::MessageStatus;
use common::test_support::redis_servers::RedisSentinel;
use send_harness::{Harness, messages, post_message, wait_for};

const API_KEY: &str = "sentinel-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_worker_follow_a_sentinel_failover() {
    let redis = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap();
    let mut h = Harness::new().await;
    h.use_redis(&[
        ("REDIS_SENTINELS", &redis.sentinel_url()),
        ("REDIS_SENTINEL_MASTER", RedisSentinel::MASTER),
    ])
    .await;
    h.set("API_KEYS", &format!("sentinel:{API_KEY}"));
    // Writes the old primary took but had not passed on are the reconciler's.
    h.set("RECONCILE_INTERVAL_SECS", "1");
    h.set("RECONCILE_AFTER_SECS", "5");
    let base = h.serve_gateway().await;
    let worker = h.start_worker().await;

    let mut ids = h.submit(messages(100)).await;
    let redis = tokio::task::spawn_blocking(move || {
        redis.failover();
        redis
    })
    .await
    .unwrap();
    assert_eq!(redis.current_primary(), redis.replica.port);

    // The old primary is a replica now: the first writes meet READONLY, and
    // the connections move to the new primary within seconds.
    let (more, failed_pushes) = h
        .traffic_through_an_outage(10, 10, std::time::Duration::from_millis(300))
        .await;
    ids.extend(more);
    assert!(
        failed_pushes < 10,
        "the queue never followed the new primary"
    );

    // The gateway's own connection follows too: it accepts and enqueues.
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<common::domain::MessageId>::new(),
    ));
    wait_for(20, "the gateway to accept on the new primary", || {
        let (base, accepted) = (base.clone(), accepted.clone());
        async move {
            let response = post_message(&base, API_KEY).await;
            let ok = response.status() == 202;
            let body: serde_json::Value = response.json().await.unwrap();
            if let Some(id) = body["message_id"].as_str() {
                accepted.lock().unwrap().push(id.parse().unwrap());
            }
            ok
        }
    })
    .await;
    ids.extend(accepted.lock().unwrap().iter().copied());

    h.wait_status(&ids, MessageStatus::Accepted, 90).await;
    let stats = h.sim.stats();
    assert_eq!(stats.distinct_idempotency_keys, ids.len() as u64, "lost");
    assert_eq!(stats.accepted_twice, 0, "sent twice");
    // The queue lives on the new primary now.
    let keys: u64 = redis.replica.cli(&["DBSIZE"]).parse().unwrap();
    assert!(keys > 0);
    worker.stop().await.unwrap();
}
