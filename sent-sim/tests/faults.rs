//! Fault injection: every class is observable by a client and in the stats.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sent_sim::{Faults, SimConfig};
use serde_json::json;
use support::{Receiver, body, client, parts, send, start, try_send, wait_for};

#[tokio::test]
async fn injected_429_carries_retry_after() {
    let config = SimConfig {
        retry_after_secs: 7,
        faults: Faults {
            rate_429: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let sim = start(config).await;
    let response = send(&client(), &sim, &body("+14155550123"), Some("k")).await;
    assert_eq!(response.headers()["retry-after"], "7");
    let (status, headers, json) = parts(response).await;
    assert_eq!(status, 429);
    assert_eq!(json["error"]["code"], "BUSINESS_002");
    assert!(headers.contains_key("x-request-id"));
    let stats = sim.stats();
    assert_eq!(stats.faults_injected.rate_limited_429, 1);
    assert_eq!(stats.messages_created, 0);
}

#[tokio::test]
async fn injected_5xx_use_sent_codes_and_do_not_store() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Faults {
        rate_5xx: 1.0,
        ..Faults::default()
    });
    let client = client();
    let mut seen = HashMap::new();
    for n in 0..40 {
        let (status, _, json) =
            parts(send(&client, &sim, &body("+14155550123"), Some(&format!("k{n}"))).await).await;
        let code = json["error"]["code"].as_str().unwrap().to_owned();
        let expected = match status.as_u16() {
            500 => "INTERNAL_001",
            502 => "INTERNAL_002",
            503 => "SERVICE_001",
            504 => "INTERNAL_004",
            other => panic!("unexpected status {other}"),
        };
        assert_eq!(code, expected);
        *seen.entry(status.as_u16()).or_insert(0) += 1;
    }
    assert!(seen.len() >= 2, "several kinds of 5xx: {seen:?}");
    // The key is free again: once the fault is off, the retry is a fresh accept.
    sim.set_faults(Faults::default());
    let retry = send(&client, &sim, &body("+14155550123"), Some("k0")).await;
    assert_eq!(retry.status(), 202);
    assert!(!retry.headers().contains_key("idempotent-replayed"));
    let stats = sim.stats();
    assert_eq!(stats.faults_injected.server_errors_5xx, 40);
    assert_eq!(stats.messages_created, 1);
}

#[tokio::test]
async fn slow_answers_arrive_late() {
    let sim = start(SimConfig {
        faults: Faults {
            slow: 1.0,
            slow_ms: 300,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    let response = send(&client(), &sim, &body("+14155550123"), None).await;
    assert_eq!(response.status(), 202);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.stats().faults_injected.slow, 1);
}

#[tokio::test]
async fn dropped_connections_give_no_answer_and_retries_are_deduplicated() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Faults {
        drop: 1.0,
        ..Faults::default()
    });
    let client = client();
    let keys: Vec<String> = (0..20).map(|n| format!("drop-{n}")).collect();
    for key in &keys {
        let result = try_send(&client, &sim, &body("+14155550123"), Some(key)).await;
        let err = result.expect_err("no HTTP answer at all");
        assert!(!err.is_timeout(), "closed, not hung: {err}");
    }
    let stats = sim.stats();
    let faults = &stats.faults_injected;
    assert_eq!(
        faults.dropped_before_processing + faults.dropped_after_processing,
        20
    );
    assert!(faults.dropped_after_processing > 0 && faults.dropped_before_processing > 0);
    // Dropped after processing means accepted and stored.
    assert_eq!(stats.accepted_requests, faults.dropped_after_processing);
    assert_eq!(stats.messages_created, faults.dropped_after_processing);

    // The client retries every send with the same key.
    sim.set_faults(Faults::default());
    let mut replayed = 0;
    for key in &keys {
        let response = send(&client, &sim, &body("+14155550123"), Some(key)).await;
        assert_eq!(response.status(), 202);
        if response.headers().contains_key("idempotent-replayed") {
            replayed += 1;
        }
    }
    let stats = sim.stats();
    assert_eq!(replayed, stats.faults_injected.dropped_after_processing);
    assert_eq!(stats.messages_created, 20, "each key sent exactly once");
    assert_eq!(stats.distinct_idempotency_keys, 20);
    assert_eq!(stats.accepted_twice, 0);
}

#[tokio::test]
async fn duplicate_webhooks_share_the_event_id() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        webhook_url: Some(receiver.url.clone()),
        step_delay: Duration::from_millis(10),
        faults: Faults {
            duplicate_webhook: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let (_, _, json) = parts(send(&client(), &sim, &body("+14155550123"), None).await).await;
    let id = json["data"]["recipients"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(10, "eight deliveries", || async {
        receiver.for_message(&id).len() == 8
    })
    .await;
    let mut by_event: HashMap<String, Vec<support::Delivery>> = HashMap::new();
    for delivery in receiver.for_message(&id) {
        by_event
            .entry(delivery.event_id().to_owned())
            .or_default()
            .push(delivery);
    }
    assert_eq!(by_event.len(), 4);
    for copies in by_event.values() {
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0].body, copies[1].body);
        copies[1].verify(support::SECRET);
    }
    assert_eq!(sim.stats().faults_injected.duplicate_webhooks, 4);
}

#[tokio::test]
async fn reordered_webhooks_deliver_the_last_status_before_the_previous_one() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        webhook_url: Some(receiver.url.clone()),
        step_delay: Duration::from_millis(10),
        faults: Faults {
            reorder_webhook: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let (_, _, json) = parts(send(&client(), &sim, &body("+14155550123"), None).await).await;
    let id = json["data"]["recipients"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(10, "four events", || async {
        receiver.statuses(&id).len() == 4
    })
    .await;
    assert_eq!(
        receiver.statuses(&id),
        ["QUEUED", "ROUTED", "DELIVERED", "SENT"]
    );
    assert_eq!(sim.stats().faults_injected.reordered_webhooks, 1);
}

#[tokio::test]
async fn faults_can_be_changed_over_http() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = format!("{}/_sim/faults", sim.base_url());
    let response = client
        .post(&url)
        .json(&json!({"rate_429": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(sim.faults().rate_429, 1.0);
    assert_eq!(
        send(&client, &sim, &body("+14155550123"), None)
            .await
            .status(),
        429
    );

    for bad in [
        json!({"rate_429": 2.0}),
        json!({"no_such_fault": 0.5}),
        json!({"rate_429": 0.6, "rate_5xx": 0.6}),
    ] {
        let response = client.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    let current: Faults = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(current.rate_429, 1.0);

    client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(
        send(&client, &sim, &body("+14155550123"), None)
            .await
            .status(),
        202
    );
}
