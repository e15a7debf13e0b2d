//! The whole loop, over real HTTP: a client submits through the gateway, the
//! worker sends to sent-sim, sent-sim POSTs its signed lifecycle webhooks back
//! to the gateway's `/webhooks/sent` (same secret), the gateway stores them in
//! the inbox, and the worker applies them: the message ends `delivered` (or
//! `read`) with its whole timeline, and its client gets a status callback for
//! each change. With the sim's duplicate and reorder faults on, the final
//! status is still right and every event is stored and applied once.

mod send_harness;

use common::domain::EventSource;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use common::store::EventRecord;
use send_harness::{Harness, RunningWorker, wait_for};
use sent_sim::{Faults, SimConfig, WebhookEnvelope};
use serde_json::{Value, json};

const API_KEY: &str = "loop-key-0123456789";
const CLIENT: &str = "loop";

/// Sent's lifecycle events per channel in the sim (`message.` left out).
const SMS_EVENTS: [&str; 4] = ["queued", "routed", "sent", "delivered"];
const WHATSAPP_EVENTS: [&str; 5] = ["queued", "routed", "sent", "delivered", "read"];

struct Loop {
    h: Harness,
    base: String,
    http: reqwest::Client,
    worker: Option<RunningWorker>,
    /// Bodies of the status callbacks the client received, in arrival order.
    callbacks: Arc<Mutex<Vec<Value>>>,
    callback_url: String,
}

impl Loop {
    async fn start(sim: SimConfig) -> Loop {
        let mut h = Harness::with_sim(sim).await;
        h.set("API_KEYS", &format!("{CLIENT}:{API_KEY}"));
        h.set("SENT_DM_WEBHOOK_SECRET", sent_sim::DEV_WEBHOOK_SECRET);
        h.set("INBOX_POLL_INTERVAL_MS", "200");
        h.set("INBOX_BACKOFF_BASE_MS", "20");
        h.set("INBOX_BACKOFF_MAX_SECS", "1");
        h.set("INBOX_REMATCH_INTERVAL_SECS", "1");
        h.set("CALLBACK_POLL_INTERVAL_MS", "200");
        h.set("CALLBACK_BACKOFF_BASE_MS", "20");
        h.set("CALLBACK_BACKOFF_MAX_SECS", "1");
        // The client's callback endpoint below listens on loopback.
        h.set("CALLBACK_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8,::1/128");

        // The gateway, in process, sharing the worker's database and Redis prefix.
        let base = h.serve_gateway().await;
        // Sent's webhook endpoint is the gateway.
        h.sim.set_webhook_url(Some(format!("{base}/webhooks/sent")));

        // The client's callback endpoint.
        let callbacks = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/status", axum::routing::post(receive))
            .with_state(callbacks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let callback_url = format!("http://{}/status", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let worker = Some(h.start_worker().await);
        Loop {
            h,
            base,
            http: reqwest::Client::new(),
            worker,
            callbacks,
            callback_url,
        }
    }

    /// POSTs one message to the gateway, as a client does; returns its id.
    async fn submit(&self, channel: &str) -> String {
        self.submit_body(json!({
            "phone_number": "+14155550123", "template_name": "welcome",
            "parameters": {"name": "Ada"}, "channels": [channel],
            "callback_url": self.callback_url, "metadata": {"channel": channel}
        }))
        .await
    }

    async fn submit_body(&self, body: Value) -> String {
        let response = self
            .http
            .post(format!("{}/api/messages/send", self.base))
            .bearer_auth(API_KEY)
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

    /// The message as its client reads it.
    async fn view(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/api/messages/{id}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the message has `status` and all `events` of Sent's for it
    /// are processed, then returns its timeline.
    async fn wait_done(&self, id: &str, status: &str, events: usize) -> Vec<EventRecord> {
        wait_for(
            30,
            &format!("{id} to be {status} with {events} events from Sent"),
            || async {
                let view = self.view(id).await;
                let processed: (i64,) = sqlx::query_as(
                "SELECT count(*) FROM webhook_inbox WHERE message_id = $1 AND state = 'processed'",
            )
            .bind(id)
            .fetch_one(self.h.store.pool())
            .await
            .unwrap();
                view["status"] == status && processed.0 as usize >= events
            },
        )
        .await;
        self.h.store.events(id.parse().unwrap()).await.unwrap()
    }

    /// Waits until the client got every callback the message has, and returns
    /// the statuses it received, in order.
    async fn wait_callbacks(&self, id: &str) -> Vec<String> {
        let expected = self
            .h
            .store
            .callbacks_for_message(id.parse().unwrap())
            .await
            .unwrap()
            .len();
        let received = || {
            self.callbacks
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c["message_id"] == id)
                .map(|c| c["status"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        wait_for(30, &format!("{expected} callbacks for {id}"), || async {
            received().len() >= expected
        })
        .await;
        received()
    }

    async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await.unwrap();
        }
        self.h.sim.set_webhook_url(None);
    }
}

async fn receive(State(seen): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> StatusCode {
    seen.lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}

fn statuses<'a>(events: impl IntoIterator<Item = &'a EventRecord>) -> Vec<&'a str> {
    events.into_iter().map(|e| e.status.as_str()).collect()
}

/// Checks one finished message: its final status, a timeline with every step
/// in order (the applied changes strictly forward), exactly one timeline event
/// and one inbox row per Sent event, and callbacks for every change.
async fn check_message(l: &Loop, id: &str, sent_events: &[&str]) {
    let last = *sent_events.last().unwrap();
    let events = l.wait_done(id, last, sent_events.len()).await;
    let view = l.view(id).await;
    assert_eq!(view["status"], last, "{view}");
    assert_eq!(view["attempts"], 1, "{view}");
    let sent_id = view["provider_message_id"].as_str().unwrap().to_owned();

    // Our own steps come first, in order.
    let all = statuses(&events);
    assert_eq!(all[..2], ["queued", "sending"], "{all:?}");
    // Every status the message went through appears, in order of first appearance.
    let mut firsts: Vec<&str> = Vec::new();
    for status in &all {
        if !firsts.contains(status) {
            firsts.push(status);
        }
    }
    let mut expected = vec!["queued", "sending", "accepted", "sent", "delivered"];
    if last == "read" {
        expected.push("read");
    }
    let in_order: Vec<&str> = firsts
        .iter()
        .copied()
        .filter(|s| expected.contains(s))
        .collect();
    // `sent` may be seen after `delivered` when Sent's events were reordered.
    let mut sorted = in_order.clone();
    sorted.sort_by_key(|s| expected.iter().position(|e| e == s));
    assert_eq!(sorted, expected, "timeline: {all:?}");
    // The changes that moved the status only ever went forward, and ended at the last one.
    let applied: Vec<&EventRecord> = events.iter().filter(|e| e.applied).collect();
    let ranks: Vec<u8> = applied
        .iter()
        .map(|e| {
            e.status
                .parse::<common::domain::MessageStatus>()
                .unwrap()
                .rank()
        })
        .collect();
    assert!(
        ranks.windows(2).all(|w| w[0] < w[1]),
        "applied: {:?}",
        statuses(applied.iter().copied())
    );
    assert_eq!(applied.last().unwrap().status, last);

    // One timeline event per Sent event: each event id once, each event once.
    let from_sent: Vec<&EventRecord> = events
        .iter()
        .filter(|e| e.source == EventSource::Sent)
        .collect();
    let mut sent_names: Vec<&str> = from_sent
        .iter()
        .map(|e| e.detail.as_ref().unwrap()["event"].as_str().unwrap())
        .collect();
    sent_names.sort();
    let mut wanted: Vec<String> = sent_events.iter().map(|e| format!("message.{e}")).collect();
    wanted.sort();
    assert_eq!(sent_names, wanted, "timeline: {all:?}");
    let mut event_ids: Vec<&str> = from_sent
        .iter()
        .map(|e| e.detail.as_ref().unwrap()["event_id"].as_str().unwrap())
        .collect();
    event_ids.sort();
    event_ids.dedup();
    assert_eq!(event_ids.len(), sent_events.len(), "{event_ids:?}");
    for e in &from_sent {
        assert_eq!(
            e.detail.as_ref().unwrap()["sent_message_id"],
            sent_id.as_str()
        );
    }

    // One inbox row per event, all applied to this message.
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT event_id, state, message_id FROM webhook_inbox
          WHERE convert_from(body, 'UTF8')::jsonb -> 'payload' ->> 'message_id' = $1 ORDER BY event_id",
    )
    .bind(&sent_id)
    .fetch_all(l.h.store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), sent_events.len(), "{rows:?}");
    let mut row_ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    row_ids.sort();
    assert_eq!(row_ids, event_ids);
    assert!(
        rows.iter()
            .all(|r| r.1 == "processed" && r.2.as_deref() == Some(id)),
        "{rows:?}"
    );

    // The client heard of every change, in order, ending with the last.
    let callbacks = l.wait_callbacks(id).await;
    let changes: Vec<&str> = applied
        .iter()
        .filter(|e| e.source != EventSource::Gateway && e.status != "sending")
        .map(|e| e.status.as_str())
        .collect();
    assert_eq!(callbacks, changes, "callbacks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_goes_from_the_gateway_to_delivered_and_read_through_sents_webhooks() {
    let l = Loop::start(SimConfig {
        read_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    let sms = l.submit("sms").await;
    let whatsapp = l.submit("whatsapp").await;
    check_message(&l, &sms, &SMS_EVENTS).await;
    check_message(&l, &whatsapp, &WHATSAPP_EVENTS).await;

    let view = l.view(&whatsapp).await;
    let timeline: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert!(
        timeline.contains(&"read") && timeline.contains(&"delivered"),
        "{view}"
    );
    wait_for(10, "every webhook attempt", || async {
        l.h.sim.stats().webhooks_delivered >= 9
    })
    .await;
    let stats = l.h.sim.stats();
    assert_eq!(stats.webhooks_delivered, 9, "{stats:?}");
    assert_eq!(stats.webhook_failures, 0, "every webhook answered 2xx");
    let inbox: (i64,) = sqlx::query_as("SELECT count(*) FROM webhook_inbox")
        .fetch_one(l.h.store.pool())
        .await
        .unwrap();
    assert_eq!(inbox.0, 9);
    l.stop().await;
}

/// The gateway's default: no channels, so Sent picks one and its 202 says
/// `"channel": null, "body": null` for the recipient. The message still gets
/// Sent's id, and Sent's webhooks then take it to `delivered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_without_channels_gets_its_id_and_is_delivered() {
    let l = Loop::start(SimConfig::default()).await;
    let auto = l
        .submit_body(
            json!({"phone_number": "+14155550123", "template_name": "welcome",
            "parameters": {"name": "Ada"}, "callback_url": l.callback_url}),
        )
        .await;
    let text = l
        .submit_body(
            json!({"phone_number": "+14155550123", "text": "Your code is 123456",
            "callback_url": l.callback_url}),
        )
        .await;
    for id in [&auto, &text] {
        check_message(&l, id, &SMS_EVENTS).await;
        let view = l.view(id).await;
        assert!(view["provider_message_id"].is_string(), "{view}");
        assert_eq!(view["last_error_code"], Value::Null, "{view}");
        let accepted = view["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["status"] == "accepted" && e["source"] == "worker")
            .unwrap();
        assert_eq!(
            accepted["detail"]["provider_message_ids"][0],
            view["provider_message_id"]
        );
    }
    assert_eq!(l.view(&text).await["text"], "Your code is 123456");
    l.stop().await;
}

/// The other shapes seen in Sent's official material, all at once: every
/// optional field of the answers `null`, webhooks in the `sub_type` / `value`
/// envelope and without `X-Webhook-Event-ID`. The message still ends
/// `delivered`, each of Sent's events applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sents_other_answer_and_webhook_shapes_end_the_same() {
    let l = Loop::start(SimConfig {
        webhook_envelope: WebhookEnvelope::SubType,
        webhook_event_id_header: false,
        null_optionals: true,
        ..SimConfig::default()
    })
    .await;
    let id = l
        .submit_body(
            json!({"phone_number": "+14155550123", "template_name": "welcome",
            "parameters": {"name": "Ada"}, "callback_url": l.callback_url}),
        )
        .await;
    let events = l.wait_done(&id, "delivered", SMS_EVENTS.len()).await;
    let view = l.view(&id).await;
    assert!(view["provider_message_id"].is_string(), "{view}");
    assert_eq!(view["last_error_code"], Value::Null, "{view}");
    let mut from_sent: Vec<&str> = events
        .iter()
        .filter(|e| e.source == EventSource::Sent)
        .map(|e| e.detail.as_ref().unwrap()["event"].as_str().unwrap())
        .collect();
    from_sent.sort();
    let mut wanted: Vec<String> = SMS_EVENTS.iter().map(|e| format!("message.{e}")).collect();
    wanted.sort();
    assert_eq!(from_sent, wanted);
    l.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_webhooks_are_stored_once_and_end_in_the_right_status() {
    let l = Loop::start(SimConfig {
        read_rate: 1.0,
        faults: Faults {
            duplicate_webhook: 1.0,
            reorder_webhook: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let channel = if i % 2 == 0 { "sms" } else { "whatsapp" };
        ids.push((l.submit(channel).await, channel));
    }
    for (id, channel) in &ids {
        let events: &[&str] = if *channel == "sms" {
            &SMS_EVENTS
        } else {
            &WHATSAPP_EVENTS
        };
        check_message(&l, id, events).await;
    }
    let events = 4 * SMS_EVENTS.len() + 4 * WHATSAPP_EVENTS.len();
    // Let any last duplicate land before counting.
    wait_for(10, "every webhook attempt", || async {
        l.h.sim.stats().webhooks_delivered as usize >= 2 * events
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = l.h.sim.stats();
    assert_eq!(
        stats.faults_injected.duplicate_webhooks as usize, events,
        "{stats:?}"
    );
    assert_eq!(stats.faults_injected.reordered_webhooks, 8, "{stats:?}");
    assert_eq!(stats.webhook_failures, 0, "duplicates are answered 200 too");
    assert_eq!(stats.webhooks_delivered as usize, 2 * events);
    // Each event stored once, whatever the number of deliveries.
    let counts: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT state, count(*) FROM webhook_inbox GROUP BY state",
    )
    .fetch_all(l.h.store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(
        counts,
        BTreeMap::from([("processed".to_owned(), events as i64)])
    );
    l.stop().await;
}
