//! What Sent answers, as its official SDK says it can answer, and what the
//! worker makes of it: a 2xx with no readable id is an anomaly shown on the
//! message; lost webhooks are covered by the status poll, which marks a
//! message stale when Sent stays silent; a scheduled message is held by the
//! gateway until its time and can be cancelled until then.

mod send_harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use chrono::Utc;
use common::domain::{EventSource, MessageStatus};
use common::queue::SendJob;
use common::sent::classify::CODE_NO_ID;
use common::sent::client::SentClient;
use common::store::{CODE_STALE, STATUS_POLLS};
use send_harness::{Harness, message, wait_for};
use serde_json::{Value, json};
use worker::poll::{Polled, poll};

/// A stand-in for Sent that answers every send with `answer`, counting calls.
async fn stub_sent(answer: Value) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().route(
        "/v3/messages",
        axum::routing::post(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            async move { (StatusCode::ACCEPTED, axum::Json(answer)) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_without_any_id_is_accepted_but_shown_as_an_anomaly() {
    let (base, calls) = stub_sent(json!({
        "success": true,
        "data": {"status": "QUEUED", "template_id": null, "template_name": null,
                 "recipients": [{"message_id": null, "to": null, "channel": null, "body": null}]},
        "error": null, "meta": null
    }))
    .await;
    let mut h = Harness::new().await;
    h.set("SENT_BASE_URL", &base);
    let ids = h.submit(vec![message("welcome")]).await;
    let worker = h.start_worker().await;
    let record = h
        .wait_status(&ids, MessageStatus::Accepted, 20)
        .await
        .remove(0);
    worker.stop().await.unwrap();

    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried: Sent has it");
    assert_eq!(record.provider_message_id, None);
    assert_eq!(record.last_error_code.as_deref(), Some(CODE_NO_ID));
    assert!(
        record
            .last_error
            .as_deref()
            .unwrap()
            .contains("no message_id in any of 1 recipients"),
        "{record:?}"
    );
    let accepted = h
        .events(ids[0])
        .await
        .into_iter()
        .find(|e| e.status == "accepted")
        .unwrap();
    assert_eq!(accepted.detail.unwrap()["code"], CODE_NO_ID);
    assert!(
        common::metrics::render().contains(common::metrics::SENT_UNREADABLE_ANSWERS),
        "counted"
    );
    let snapshot = h.store.dashboard(None).await.unwrap();
    assert!(
        snapshot
            .failure_reasons
            .iter()
            .any(|r| r.error_code == CODE_NO_ID && r.status == "accepted"),
        "on the status page: {:?}",
        snapshot.failure_reasons
    );
}

/// Webhooks lost (no endpoint set at the sim): the poll asks Sent and applies
/// its answer like a webhook would, with `poll` as the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_poll_covers_lost_webhooks() {
    let mut h = Harness::new().await;
    h.set("STATUS_POLL_AFTER_SECS", "1");
    h.set("STATUS_POLLS_PER_MINUTE", "600");
    let ids = h.submit(vec![message("welcome")]).await;
    let worker = h.start_worker().await;
    let record = h
        .wait_status(&ids, MessageStatus::Delivered, 30)
        .await
        .remove(0);
    worker.stop().await.unwrap();
    assert_eq!(record.last_error_code, None);
    let events = h.events(ids[0]).await;
    let delivered = events.iter().find(|e| e.status == "delivered").unwrap();
    assert_eq!(delivered.source, EventSource::Poll);
    assert!(delivered.applied);
    let detail = delivered.detail.as_ref().unwrap();
    assert_eq!(detail["sent_status"], "DELIVERED");
    assert_eq!(detail["poll"], 1);
    assert_eq!(
        detail["sent_message_id"],
        record.provider_message_id.unwrap().as_str()
    );
}

/// Sent never says anything new about the message: it is asked at most
/// `STATUS_POLLS` times, then marked stale, and never again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_marked_stale_after_the_last_poll() {
    let h = Harness::new().await;
    let ids = h.store_only(vec![message("welcome")]).await;
    let id = ids[0].to_string();
    // Accepted by Sent under an id the sim has never heard of, long ago.
    sqlx::query(
        "UPDATE messages SET status = 'accepted', provider_message_ids = '{sim-unknown-id}',
                provider_message_id = 'sim-unknown-id', updated_at = now() - interval '1 hour',
                accepted_at = now() - interval '1 hour'
          WHERE id = $1",
    )
    .bind(&id)
    .execute(h.store.pool())
    .await
    .unwrap();
    let config = h.config();
    let client = SentClient::new(&config.sent, config.require_sent_api_key().unwrap(), 1).unwrap();
    let due_now = [Duration::ZERO; STATUS_POLLS];
    let not_yet = [Duration::from_secs(7200); STATUS_POLLS];
    assert_eq!(h.store.claim_status_poll(&not_yet).await.unwrap(), None);

    let mut outcomes = Vec::new();
    while let Some(target) = h.store.claim_status_poll(&due_now).await.unwrap() {
        assert_eq!(target.id.to_string(), id);
        assert_eq!(target.provider_message_id, "sim-unknown-id");
        outcomes.push(poll(&h.store, &client, &target).await.unwrap());
        assert!(outcomes.len() <= STATUS_POLLS, "polled too often");
    }
    assert_eq!(
        outcomes,
        [
            Polled::Failed,
            Polled::Failed,
            Polled::Failed,
            Polled::Stale
        ]
    );
    let events = h.events(ids[0]).await;
    let polls: Vec<&str> = events
        .iter()
        .filter(|e| e.source == EventSource::Poll)
        .map(|e| e.status.as_str())
        .collect();
    assert_eq!(polls, ["polled", "polled", "polled", "polled", "stale"]);
    assert!(
        events
            .iter()
            .filter(|e| e.source == EventSource::Poll)
            .all(|e| !e.applied)
    );
    assert_eq!(
        events.last().unwrap().detail.as_ref().unwrap()["code"],
        "not_found"
    );
    let record = h.message(ids[0]).await;
    assert_eq!(record.status, MessageStatus::Accepted);
    assert_eq!(record.last_error_code.as_deref(), Some(CODE_STALE));
    // The status page lists it with the failures.
    let snapshot = h.store.dashboard(None).await.unwrap();
    assert!(
        snapshot
            .recent_failures
            .iter()
            .any(|f| f.message_id == id && f.last_error_code.as_deref() == Some(CODE_STALE)),
        "{:?}",
        snapshot.recent_failures
    );
    assert!(
        snapshot
            .failure_reasons
            .iter()
            .any(|r| r.error_code == CODE_STALE && r.messages == 1)
    );
}

/// A message with a time is held by the gateway: `scheduled`, not sent, and
/// cancellable, until its job comes due; then it goes to Sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_waits_for_its_time() {
    let h = Harness::new().await;
    let mut held = message("welcome");
    let at = Utc::now() + chrono::Duration::seconds(3);
    held.scheduled_at = Some(at);
    let ids = h.store_only(vec![held]).await;
    h.queue
        .enqueue_due(&[(
            SendJob::new(ids[0], Default::default()),
            Some(SystemTime::from(at)),
        )])
        .await
        .unwrap();
    let worker = h.start_worker().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.message(ids[0]).await.status, MessageStatus::Scheduled);
    assert_eq!(h.sim.stats().send_requests, 0, "not sent before its time");
    let record = h
        .wait_status(&ids, MessageStatus::Accepted, 20)
        .await
        .remove(0);
    worker.stop().await.unwrap();
    let events = h.events(ids[0]).await;
    assert_eq!(events[0].status, "scheduled");
    assert!(events[0].detail.as_ref().unwrap()["scheduled_at"].is_string());
    assert!(record.provider_message_id.is_some());
    assert!(events.iter().any(|e| e.status == "sending" && e.at >= at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_message_sent_has_not_got_can_be_cancelled() {
    const KEY: &str = "cancel-key-0123456789";
    let mut h = Harness::new().await;
    h.set("API_KEYS", &format!("canceller:{KEY}"));
    let base = h.serve_gateway().await;
    let http = reqwest::Client::new();
    let send = |body: Value| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let response = http
                .post(format!("{base}/api/messages/send"))
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let cancel = |id: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let response = http
                .post(format!("{base}/api/messages/{id}/cancel"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let later = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let scheduled = send(
        json!({"phone_number": "+14155550123", "template_name": "welcome",
        "scheduled_at": later}),
    )
    .await;
    assert_eq!(
        h.message(scheduled.parse().unwrap()).await.status,
        MessageStatus::Scheduled
    );

    let (status, body) = cancel(scheduled.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let timeline: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["scheduled", "cancelled"]);
    let (status, body) = cancel(scheduled.clone()).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "not_cancellable");
    assert_eq!(body["status"], "cancelled");

    // Once Sent has it, it is too late.
    let now = send(json!({"phone_number": "+14155550123", "template_name": "welcome"})).await;
    let worker = h.start_worker().await;
    h.wait_status(&[now.parse().unwrap()], MessageStatus::Accepted, 20)
        .await;
    let (status, body) = cancel(now.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["status"], "accepted");
    assert!(
        body["error"].as_str().unwrap().contains("no cancel call"),
        "{body}"
    );

    // The cancelled message's job, when it comes, sends nothing; and another
    // client's message is not found.
    let (status, _) = cancel("01JDX3S9Q8M6B2W4V7N5K0R1TZ".into()).await;
    assert_eq!(status, 404);
    worker.stop().await.unwrap();
    wait_for(5, "one send only", || async {
        h.sim.stats().accepted_requests == 1
    })
    .await;
}
