//! The gateway and workers on a real Redis Cluster (`REDIS_CLUSTER_NODES`),
//! started by each test with `redis-server --cluster-enabled yes` and
//! `redis-cli --cluster create`: sends end to end with the queue spread over
//! shards on several nodes, retries and the reconciler, limits shared through
//! the cluster, and a primary killed mid-traffic.

mod send_harness;

use std::collections::BTreeSet;
use std::time::Duration;

use common::domain::MessageStatus;
use common::test_support::redis_servers::RedisCluster;
use send_harness::{Harness, messages, post_message, wait_for};
use sent_sim::{Faults, SimConfig};

const API_KEY: &str = "cluster-key-0123456789";
const SHARDS: u16 = 4;

async fn cluster(primaries: usize, replicas: usize) -> RedisCluster {
    tokio::task::spawn_blocking(move || RedisCluster::start(primaries, replicas))
        .await
        .unwrap()
}

/// Points the harness at `cluster` with [`SHARDS`] queue shards, under a key
/// prefix whose shards' hash tags fall on more than one primary (the slot of
/// a tag is fixed by its text: with a random prefix, all four could share a
/// node by chance, and the test would prove nothing about spreading).
async fn use_cluster(h: &mut Harness, cluster: &RedisCluster) -> String {
    let prefix = (0..)
        .map(|n| format!("{}-{n}", h.redis.prefix))
        .find(|prefix| {
            let nodes: BTreeSet<usize> = (0..SHARDS)
                .map(|shard| cluster.primary_of(&format!("{{{prefix}:send:{shard}}}")))
                .collect();
            nodes.len() > 1
        })
        .unwrap();
    h.use_redis(&[
        ("REDIS_CLUSTER_NODES", &cluster.urls().join(",")),
        ("QUEUE_SHARDS", &SHARDS.to_string()),
        ("REDIS_PREFIX", &prefix),
    ])
    .await;
    prefix
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_end_to_end_with_the_queue_spread_over_the_cluster() {
    let cluster = cluster(3, 0).await;
    let mut h = Harness::new().await;
    let prefix = use_cluster(&mut h, &cluster).await;
    h.set("API_KEYS", &format!("cluster:{API_KEY}"));
    let base = h.serve_gateway().await;
    let worker = h.start_worker().await;

    // Through the gateway's HTTP API, and many at once through the queue.
    let mut ids = Vec::new();
    for _ in 0..20 {
        let response = post_message(&base, API_KEY).await;
        assert_eq!(response.status(), 202);
        let body: serde_json::Value = response.json().await.unwrap();
        ids.push(body["message_id"].as_str().unwrap().parse().unwrap());
    }
    ids.extend(h.submit(messages(200)).await);

    let records = h.wait_status(&ids, MessageStatus::Accepted, 60).await;
    assert!(records.iter().all(|m| m.attempts == 1));
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200, "{}", health.text().await.unwrap());
    let stats = h.sim.stats();
    assert_eq!(stats.distinct_idempotency_keys, ids.len() as u64);
    assert_eq!(stats.accepted_twice, 0);

    // Each shard's keys sit on the node of its hash tag, and the shards on
    // more than one node.
    let mut nodes_used = BTreeSet::new();
    for shard in h.queue.shards() {
        let node = cluster.primary_of(&shard.done_jobs_set());
        let done: u64 = cluster.nodes[node]
            .cli(&["SCARD", &shard.done_jobs_set()])
            .parse()
            .unwrap();
        assert!(done > 0, "shard {} of {prefix} ran nothing", shard.queue);
        nodes_used.insert(node);
    }
    assert!(nodes_used.len() > 1, "{nodes_used:?}");
    let holding = cluster.keys_per_node().iter().filter(|&&n| n > 0).count();
    assert!(holding > 1, "{:?}", cluster.keys_per_node());
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_the_reconciler_run_on_the_cluster() {
    let cluster = cluster(3, 0).await;
    let mut h = Harness::with_sim(SimConfig {
        faults: Faults {
            rate_5xx: 0.3,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    use_cluster(&mut h, &cluster).await;
    h.set("WORKER_MAX_ATTEMPTS", "20");
    h.set("RECONCILE_INTERVAL_SECS", "1");
    h.set("RECONCILE_AFTER_SECS", "1");
    let worker = h.start_worker().await;

    // Stored but never queued (a gateway that died half-way): only the
    // reconciler, through its lease and the shards, can send them. Others
    // meet 5xx answers and are retried through the scheduled sets.
    let mut ids = h.store_only(messages(40)).await;
    ids.extend(h.submit(messages(40)).await);
    let records = h.wait_status(&ids, MessageStatus::Accepted, 90).await;
    assert!(
        records.iter().any(|m| m.attempts > 1),
        "no retry happened: the test proves less than it says"
    );
    let stats = h.sim.stats();
    assert_eq!(stats.distinct_idempotency_keys, ids.len() as u64);
    assert_eq!(stats.accepted_twice, 0);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_rate_limits_through_the_cluster() {
    let cluster = cluster(3, 0).await;
    let mut h = Harness::new().await;
    use_cluster(&mut h, &cluster).await;
    let seeds: Vec<String> = cluster
        .urls()
        .iter()
        .map(|url| url.trim_start_matches("redis://").to_owned())
        .collect();
    h.set("API_KEYS", &format!("cluster:{API_KEY}"));
    h.set("RATELIMIT_ENABLED", "true");
    h.set(
        "RATELIMIT_STORAGE_URI",
        &format!("redis+cluster://{}", seeds.join(",")),
    );
    h.set("RATELIMIT_MESSAGES", "5/minute");
    let (a, b) = (h.serve_gateway().await, h.serve_gateway().await);

    let mut statuses = Vec::new();
    for base in [&a, &b, &a, &b, &a, &b, &a] {
        statuses.push(post_message(base, API_KEY).await.status().as_u16());
    }
    // Five in the minute across both gateways, then 429 on either.
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_traffic_loses_nothing_and_sends_nothing_twice() {
    let mut cluster = cluster(3, 1).await;
    let mut h = Harness::new().await;
    use_cluster(&mut h, &cluster).await;
    // Writes acknowledged by a primary that dies before its replica has
    // them are lost with it: the reconciler puts their messages back.
    h.set("RECONCILE_INTERVAL_SECS", "1");
    h.set("RECONCILE_AFTER_SECS", "5");
    let worker = h.start_worker().await;

    let mut ids = h.submit(messages(300)).await;
    let victim = cluster.primary_of(&h.queue.shards()[0].active_jobs_list());
    cluster.nodes[victim].kill();
    // Traffic goes on while the replica takes over.
    let (more, unqueued) = h
        .traffic_through_an_outage(10, 30, Duration::from_millis(200))
        .await;
    ids.extend(more);
    eprintln!("{unqueued} of 10 pushes failed during the failover");
    wait_for(
        30,
        "a replica to take over the killed primary's slots",
        || {
            let ok = cluster
                .nodes
                .iter()
                .enumerate()
                .filter(|(n, _)| *n != victim)
                .all(|(_, node)| node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            async move { ok }
        },
    )
    .await;

    h.wait_status(&ids, MessageStatus::Accepted, 120).await;
    let stats = h.sim.stats();
    assert_eq!(stats.distinct_idempotency_keys, ids.len() as u64, "lost");
    assert_eq!(stats.accepted_twice, 0, "sent twice");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_carries_the_queue() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start_tls(3, 0))
        .await
        .unwrap();
    let mut h = Harness::new().await;
    let ca = cluster.ca_file().unwrap().display().to_string();
    h.set("REDIS_TLS_CA_FILE", &ca);
    use_cluster(&mut h, &cluster).await;
    assert!(cluster.urls()[0].starts_with("rediss://"));
    let worker = h.start_worker().await;

    let ids = h.submit(messages(50)).await;
    h.wait_status(&ids, MessageStatus::Accepted, 60).await;
    assert_eq!(h.sim.stats().distinct_idempotency_keys, 50);
    worker.stop().await.unwrap();
}
