//! The send path end to end, in process: Postgres and Redis for real, Sent
//! played by sent-sim with its faults.

mod send_harness;

use std::time::Duration;

use common::domain::{Channel, MessageStatus};
use common::queue::SendJob;
use send_harness::{Harness, message, messages, timeline, wait_for};
use sent_sim::{Faults, SimConfig};
use worker::redrive::{Selection, redrive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_is_accepted_with_sents_id_and_a_timeline() {
    let h = Harness::new().await;
    let worker = h.start_worker().await;
    let ids = h.submit(vec![message("welcome")]).await;
    let message = h
        .wait_status(&ids, MessageStatus::Accepted, 20)
        .await
        .remove(0);

    assert_eq!(message.attempts, 1);
    assert!(message.last_error_code.is_none());
    let provider_id = message
        .provider_message_id
        .clone()
        .expect("Sent's message id stored");
    let events = h.events(ids[0]).await;
    assert_eq!(
        timeline(&events),
        [
            ("queued".to_owned(), "gateway".to_owned(), None),
            ("sending".to_owned(), "worker".to_owned(), Some(1)),
            ("accepted".to_owned(), "worker".to_owned(), Some(1)),
        ]
    );
    let detail = events[2].detail.clone().unwrap();
    assert_eq!(
        detail["provider_message_ids"],
        serde_json::json!([provider_id])
    );

    // The id is Sent's: the sim knows the message under it.
    let response = reqwest::Client::new()
        .get(format!("{}/v3/messages/{provider_id}", h.sim.base_url()))
        .header("x-api-key", sent_sim::DEFAULT_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stats = h.sim.stats();
    assert_eq!(
        (
            stats.messages_created,
            stats.distinct_idempotency_keys,
            stats.accepted_twice
        ),
        (1, 1, 0)
    );
    assert_eq!(stats.sends_without_idempotency_key, 0);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_and_channels_reach_sent() {
    let h = Harness::new().await;
    let worker = h.start_worker().await;
    let mut sandboxed = message("welcome");
    sandboxed.sandbox = true;
    let mut two_channels = message("welcome");
    two_channels.channels = vec![Channel::Sms, Channel::Whatsapp];
    let ids = h.submit(vec![sandboxed, two_channels]).await;
    let records = h.wait_status(&ids, MessageStatus::Accepted, 20).await;

    let stats = h.sim.stats();
    assert_eq!(
        stats.sandbox_requests, 1,
        "sandbox messages go to Sent with sandbox: true"
    );
    assert_eq!(
        stats.messages_created, 2,
        "one per channel for the real message, none for the sandbox"
    );
    let detail = h.events(ids[1]).await.pop().unwrap().detail.unwrap();
    assert_eq!(detail["provider_message_ids"].as_array().unwrap().len(), 2);
    assert!(records[0].provider_message_id.is_some());
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_permanent_error_fails_the_message_with_sents_code() {
    let h = Harness::new().await;
    let worker = h.start_worker().await;
    let cases = [
        ("sim_not_found", "RESOURCE_002"),
        ("sim_unapproved", "BUSINESS_005"),
        ("sim_no_balance", "BUSINESS_003"),
        ("sim_opted_out", "BUSINESS_004"),
        ("sim_channel_unavailable", "BUSINESS_007"),
        ("sim_quota", "BUSINESS_008"),
        ("sim_forbidden", "AUTH_004"),
        ("sim_limit", "LIMIT_001"),
    ];
    let mut batch: Vec<_> = cases
        .iter()
        .map(|(template, _)| message(template))
        .collect();
    // Sent's own validation: a template and text together (the gateway
    // would refuse it first).
    let mut invalid = message("welcome");
    invalid.text = Some("and text".into());
    batch.push(invalid);
    let ids = h.submit(batch).await;
    let records = h.wait_status(&ids, MessageStatus::Failed, 20).await;

    let expected: Vec<&str> = cases
        .iter()
        .map(|(_, code)| *code)
        .chain(["VALIDATION_003"])
        .collect();
    for (record, code) in records.iter().zip(expected) {
        assert_eq!(record.last_error_code.as_deref(), Some(code), "{record:?}");
        assert!(record.last_error.as_deref().is_some_and(|e| !e.is_empty()));
        assert_eq!(
            record.attempts, 1,
            "permanent errors are not retried: {code}"
        );
        assert!(
            record.dead_lettered_at.is_none(),
            "a refusal is not a dead letter"
        );
        let events = h.events(record.id).await;
        let names: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
        assert_eq!(names, ["queued", "sending", "failed"]);
        assert_eq!(events[2].detail.as_ref().unwrap()["code"], code);
    }
    assert_eq!(h.sim.stats().messages_created, 0);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_api_key_fails_messages_without_retrying() {
    let mut h = Harness::new().await;
    h.set("SENT_DM_API_KEY", "not-the-key");
    let worker = h.start_worker().await;
    let ids = h.submit(messages(2)).await;
    let records = h.wait_status(&ids, MessageStatus::Failed, 20).await;
    for record in records {
        assert_eq!(record.last_error_code.as_deref(), Some("AUTH_002"));
        assert_eq!(record.attempts, 1);
    }
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_until_accepted() {
    let h = Harness::new().await;
    h.sim.set_faults(Faults {
        rate_5xx: 1.0,
        ..Faults::default()
    });
    let worker = h.start_worker().await;
    let ids = h.submit(messages(3)).await;
    wait_for(20, "a second attempt of every message", || async {
        let mut all = true;
        for id in &ids {
            all &= h.message(*id).await.attempts >= 2;
        }
        all
    })
    .await;
    h.sim.set_faults(Faults::default());
    let records = h.wait_status(&ids, MessageStatus::Accepted, 30).await;

    for record in &records {
        assert!(record.attempts >= 2);
        assert!(record.last_error_code.is_none(), "cleared on acceptance");
        let events = h.events(record.id).await;
        let retries: Vec<_> = events.iter().filter(|e| e.status == "retrying").collect();
        assert!(!retries.is_empty());
        for retry in retries {
            assert!(!retry.applied, "a retry does not change the status");
            let code = retry.detail.as_ref().unwrap()["code"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                [
                    "INTERNAL_001",
                    "INTERNAL_002",
                    "SERVICE_001",
                    "INTERNAL_004"
                ]
                .contains(&code.as_str()),
                "{code}"
            );
        }
    }
    let stats = h.sim.stats();
    assert!(stats.faults_injected.server_errors_5xx >= 3);
    assert_eq!((stats.messages_created, stats.accepted_twice), (3, 0));
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_no_sooner_than_retry_after() {
    let h = Harness::with_sim(SimConfig {
        retry_after_secs: 2,
        ..SimConfig::default()
    })
    .await;
    h.sim.set_faults(Faults {
        rate_429: 1.0,
        ..Faults::default()
    });
    let worker = h.start_worker().await;
    let ids = h.submit(vec![message("welcome")]).await;
    wait_for(20, "two rate-limited attempts", || async {
        h.message(ids[0]).await.attempts >= 2
    })
    .await;
    h.sim.set_faults(Faults::default());
    h.wait_status(&ids, MessageStatus::Accepted, 30).await;

    let events = h.events(ids[0]).await;
    let sends: Vec<_> = events
        .iter()
        .filter(|e| e.status == "sending")
        .map(|e| e.at)
        .collect();
    assert!(sends.len() >= 2);
    for pair in sends.windows(2) {
        let gap = (pair[1] - pair[0]).to_std().unwrap();
        assert!(
            gap >= Duration::from_millis(1950),
            "Retry-After: 2 honoured, waited only {gap:?}"
        );
    }
    let retry = events.iter().find(|e| e.status == "retrying").unwrap();
    assert_eq!(retry.detail.as_ref().unwrap()["code"], "BUSINESS_002");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_dead_letter_and_redrive_brings_them_back() {
    let mut h = Harness::new().await;
    h.set("WORKER_MAX_ATTEMPTS", "3");
    h.sim.set_faults(Faults {
        rate_5xx: 1.0,
        ..Faults::default()
    });
    let worker = h.start_worker().await;
    let ids = h.submit(messages(2)).await;
    let records = h.wait_status(&ids, MessageStatus::Failed, 30).await;

    for record in &records {
        assert_eq!(record.attempts, 3);
        assert!(record.dead_lettered_at.is_some());
        assert_eq!(record.last_error_code.as_deref(), Some("retries_exhausted"));
        let error = record.last_error.as_deref().unwrap();
        assert!(
            error.contains("INTERNAL_") || error.contains("SERVICE_001"),
            "last Sent error kept: {error}"
        );
        let events = h.events(record.id).await;
        let last = events.last().unwrap();
        assert_eq!(last.status, "dead_lettered");
        assert_eq!(last.detail.as_ref().unwrap()["attempts"], 3);
    }

    h.sim.set_faults(Faults::default());
    let window = Duration::from_secs(17 * 3600);
    let redriven = redrive(
        &h.store,
        &h.queue,
        &Selection::Ids(vec![ids[0]]),
        window,
        false,
    )
    .await
    .unwrap();
    assert_eq!(redriven.ids, [ids[0]]);
    let record = h
        .wait_status(&ids[..1], MessageStatus::Accepted, 20)
        .await
        .remove(0);
    assert_eq!(record.attempts, 1, "a re-drive starts the count again");
    assert!(record.dead_lettered_at.is_none());
    assert_eq!(
        h.message(ids[1]).await.status,
        MessageStatus::Failed,
        "only the chosen message"
    );

    // First attempted a day ago: Sent may have forgotten its Idempotency-Key,
    // so only --force sends it again.
    sqlx::query("UPDATE messages SET sending_at = now() - interval '1 day' WHERE id = $1")
        .bind(ids[1].to_string())
        .execute(h.store.pool())
        .await
        .unwrap();
    let refused = redrive(&h.store, &h.queue, &Selection::All, window, false)
        .await
        .unwrap();
    assert!(refused.ids.is_empty());
    assert_eq!(refused.refused, [ids[1].to_string()]);
    assert_eq!(h.message(ids[1]).await.status, MessageStatus::Failed);
    let redriven = redrive(&h.store, &h.queue, &Selection::All, window, true)
        .await
        .unwrap();
    assert_eq!(redriven.ids, [ids[1]]);
    h.wait_status(&ids, MessageStatus::Accepted, 20).await;
    let names: Vec<String> = h
        .events(ids[1])
        .await
        .into_iter()
        .map(|e| e.status)
        .collect();
    assert!(
        names.ends_with(&["queued".into(), "sending".into(), "accepted".into()]),
        "{names:?}"
    );
    assert_eq!(h.sim.stats().accepted_twice, 0);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_never_send_twice() {
    let mut h = Harness::new().await;
    // 24 attempts: the most that fit inside Sent's idempotency window (start-up check).
    h.set("WORKER_MAX_ATTEMPTS", "24");
    h.sim.set_faults(Faults {
        drop: 0.5,
        ..Faults::default()
    });
    let worker = h.start_worker().await;
    let ids = h.submit(messages(30)).await;
    h.wait_status(&ids, MessageStatus::Accepted, 60).await;

    let stats = h.sim.stats();
    assert!(
        stats.faults_injected.dropped_after_processing > 0,
        "{stats:?}"
    );
    assert_eq!(stats.accepted_twice, 0, "{stats:?}");
    assert_eq!(
        stats.messages_created, 30,
        "exactly one message at Sent per message: {stats:?}"
    );
    assert_eq!(stats.distinct_idempotency_keys, 30);
    // Some attempt after a drop-after-acceptance was answered from Sent's cache.
    assert!(stats.idempotent_replays > 0, "{stats:?}");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_jobs_send_once() {
    let h = Harness::new().await;
    let ids = h.submit(messages(1)).await;
    let job = SendJob::new(ids[0], Default::default());
    h.queue.enqueue(std::slice::from_ref(&job)).await.unwrap(); // same task id: no-op
    h.queue.enqueue_again(&[job.clone(), job]).await.unwrap(); // two real duplicates
    let worker = h.start_worker().await;
    h.wait_status(&ids, MessageStatus::Accepted, 20).await;
    wait_for(10, "the queue to drain", || async {
        h.queue.depth().await.unwrap() == (0, 0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stats = h.sim.stats();
    assert_eq!(
        (stats.messages_created, stats.accepted_twice),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(h.message(ids[0]).await.status, MessageStatus::Accepted);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_enqueues_what_redis_does_not_have() {
    let mut h = Harness::new().await;
    h.set("RECONCILE_INTERVAL_SECS", "1");
    h.set("RECONCILE_AFTER_SECS", "1");
    // One message the gateway stored but never enqueued; one whose job Redis lost.
    let never_enqueued = h.store_only(messages(1)).await;
    let lost = h.submit(messages(1)).await;
    let mut conn = h.queue.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(h.redis.pattern())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the lost job's keys");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();

    let worker = h.start_worker().await;
    let ids = [never_enqueued[0], lost[0]];
    h.wait_status(&ids, MessageStatus::Accepted, 30).await;
    assert_eq!(h.sim.stats().messages_created, 2);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_budget_holds_sends_back() {
    let mut h = Harness::new().await;
    // 60 a minute: a burst of 60, then one a second.
    h.set("SENT_MESSAGES_PER_MINUTE", "60");
    let worker = h.start_worker().await;
    let ids = h.submit(messages(63)).await;
    h.wait_status(&ids, MessageStatus::Accepted, 60).await;

    let mut accepted_at = Vec::new();
    for id in &ids {
        accepted_at.push(
            h.events(*id)
                .await
                .into_iter()
                .find(|e| e.status == "accepted")
                .unwrap()
                .at,
        );
    }
    let first = *accepted_at.iter().min().unwrap();
    let last = *accepted_at.iter().max().unwrap();
    let spread = (last - first).to_std().unwrap();
    assert!(
        spread >= Duration::from_secs(2),
        "63 sends at 60/minute take over 2 s, took {spread:?}"
    );
    assert_eq!(h.sim.stats().messages_created, 63);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_wait_out_a_postgres_outage() {
    let h = Harness::new().await;
    let proxy = send_harness::Proxy::start(h.db_addr()).await;
    let worker = h.start_worker_through(&proxy).await;
    // Let the worker's other components reach Postgres once, then cut it off.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    let ids = h.submit(messages(3)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        assert_eq!(
            h.message(*id).await.status,
            MessageStatus::Queued,
            "nothing happens without Postgres"
        );
    }
    assert_eq!(
        h.sim.stats().send_requests,
        0,
        "no call to Sent that could not be recorded"
    );

    proxy.restore();
    let records = h.wait_status(&ids, MessageStatus::Accepted, 60).await;
    assert!(records.iter().all(|r| r.attempts == 1));
    assert_eq!(h.sim.stats().messages_created, 3);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_luas_unpack_limit_still_drains() {
    // apalis-redis promotes all due jobs with one Lua `unpack`, which fails
    // past about 8,000 ids; the worker promotes in bounded steps first.
    let h = Harness::new().await;
    let real = h.submit(messages(1)).await;
    for _ in 0..9 {
        // Jobs for messages that do not exist are skipped after one lookup.
        let jobs: Vec<SendJob> = (0..1000)
            .map(|_| SendJob::new(common::domain::MessageId::new(), Default::default()))
            .collect();
        h.queue.enqueue(&jobs).await.unwrap();
    }
    assert_eq!(
        h.queue.depth().await.unwrap().1,
        9001,
        "every job starts in the scheduled set"
    );
    let worker = h.start_worker().await;
    h.wait_status(&real, MessageStatus::Accepted, 60).await;
    wait_for(60, "the backlog to drain", || async {
        h.queue.depth().await.unwrap() == (0, 0)
    })
    .await;
    worker.stop().await.unwrap();
}
