//! Status callbacks: every status change of a message with a `callback_url`
//! is POSTed there, signed by the Standard Webhooks scheme, retried, and each
//! attempt recorded. Signatures are checked here with hmac + base64 directly,
//! not with the project's own verifier.

mod inbox_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use common::domain::{EventSource, MessageStatus};
use common::outbound::OutboundPolicy;
use common::store::{NewApiKey, StatusChange};
use hmac::{Hmac, Mac};
use inbox_support::*;
use serde_json::{Value, json};
use sha2::Sha256;

/// A client's callback endpoint: records every request, answers from a plan
/// of status codes (then 200), optionally slowly.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    plan: Arc<Mutex<VecDeque<u16>>>,
    delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    async fn start(plan: &[u16]) -> (Receiver, String) {
        let receiver = Receiver::default();
        receiver.plan.lock().unwrap().extend(plan);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn requests(&self) -> Vec<(HeaderMap, Value)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(h, b)| (h.clone(), serde_json::from_slice(b).unwrap()))
            .collect()
    }

    fn raw(&self) -> Vec<(HeaderMap, Bytes)> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<(HeaderMap, Value)> {
        eventually(&format!("{count} callback requests"), || async {
            let requests = self.requests();
            (requests.len() >= count).then_some(requests)
        })
        .await
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receiver.seen.lock().unwrap().push((headers, body));
    let delay = *receiver.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let code = receiver.plan.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

/// Standard Webhooks verification, written out: HMAC-SHA256 over
/// `id.timestamp.body` with the secret's key, base64, `v1,` prefix.
fn verify_standard_webhooks(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(format!("missing {name}"))
    };
    let (id, timestamp, signature) = (
        get("webhook-id")?,
        get("webhook-timestamp")?,
        get("webhook-signature")?,
    );
    let signed_at: i64 = timestamp.parse().map_err(|_| "timestamp not a number")?;
    if (Utc::now().timestamp() - signed_at).abs() > 300 {
        return Err("stale timestamp".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    if signature.split(' ').any(|candidate| candidate == expected) {
        Ok(())
    } else {
        Err(format!("signature {signature} is not {expected}"))
    }
}

/// The documented derivation for bootstrap (`API_KEYS`) keys, recomputed:
/// `HMAC-SHA256(CALLBACK_SIGNING_KEY, "callback-secret:" + name)`, with the
/// development key the testing profile signs with when none is set.
fn bootstrap_key(name: &str) -> Vec<u8> {
    let signing_key = common::config::DEVELOPMENT_CALLBACK_SIGNING_KEY;
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_key.as_bytes()).unwrap();
    mac.update(format!("callback-secret:{name}").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[tokio::test]
async fn callbacks_are_signed_and_carry_each_change() {
    let stack = Stack::start(&[]).await;
    let (receiver, url) = Receiver::start(&[]).await;
    stack.start_callbacks();
    stack.start_inbox();
    let id = stack.submit(API_KEY, Some(&url)).await;
    stack.accept(&id, &["sent-cb"]).await;
    let failed = json!({"field": "message", "event": "message.failed",
        "payload": {"message_id": "sent-cb", "message_status": "FAILED", "channel": "whatsapp",
                    "reason_code": "DELIVERY_007", "reason": "Handset unreachable",
                    "updated_at": "2026-01-15T10:00:00Z"}});
    assert_eq!(stack.post_sent(&failed, "cb-failed").await, 200);

    let requests = receiver.wait_for(2).await;
    let key = bootstrap_key(CLIENT);
    for (headers, body) in receiver.raw() {
        verify_standard_webhooks(&key, &headers, &body).unwrap();
        assert_eq!(headers["content-type"], "application/json");
    }
    let (_, accepted) = &requests[0];
    assert_eq!(accepted["message_id"], id.as_str());
    assert_eq!(accepted["event"], "message.accepted");
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["previous_status"], "queued");
    assert_eq!(accepted["metadata"], json!({"order": "A-17"}));
    assert!(accepted["at"].as_str().unwrap().ends_with('Z'));
    let (_, failure) = &requests[1];
    assert_eq!(failure["status"], "failed");
    assert_eq!(failure["previous_status"], "accepted");
    assert_eq!(failure["at"], "2026-01-15T10:00:00.000Z");
    assert_eq!(failure["error_code"], "DELIVERY_007");
    assert_eq!(failure["error"], "Handset unreachable");
    assert_eq!(failure["channel"], "whatsapp");
    // Distinct deliveries have distinct ids.
    assert_ne!(requests[0].0["webhook-id"], requests[1].0["webhook-id"]);

    let rows = eventually("both callbacks recorded as delivered", || async {
        let rows = stack
            .store()
            .callbacks_for_message(id.parse().unwrap())
            .await
            .unwrap();
        rows.iter().all(|r| r.state == "delivered").then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 2);
    let attempts = stack.store().callback_attempts(rows[0].id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0].attempt,
            attempts[0].status_code,
            attempts[0].error.as_deref()
        ),
        (1, Some(200), None)
    );
    // Another secret does not verify.
    let (headers, body) = &receiver.raw()[0];
    assert!(verify_standard_webhooks(&bootstrap_key("someone-else"), headers, body).is_err());
}

#[tokio::test]
async fn managed_keys_sign_with_their_own_secret() {
    let stack = Stack::start(&[]).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let key_bytes: [u8; 32] = rand::random();
    let secret = format!("whsec_{}", STANDARD.encode(key_bytes));
    let api_key = "sgw_managed_key_for_callbacks";
    stack
        .store()
        .create_api_key(&NewApiKey {
            name: "managed".into(),
            key_hash: gateway::auth::hash_key(api_key).to_vec(),
            key_prefix: api_key[..8].into(),
            callback_secret: secret,
            rate_limit: None,
        })
        .await
        .unwrap();
    stack.start_callbacks();
    let id = stack.submit(api_key, Some(&url)).await;
    stack.accept(&id, &["sent-managed"]).await;
    receiver.wait_for(1).await;
    let (headers, body) = &receiver.raw()[0];
    verify_standard_webhooks(&key_bytes, headers, body).unwrap();
    assert!(verify_standard_webhooks(&bootstrap_key("managed"), headers, body).is_err());
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id() {
    let stack = Stack::start(&[]).await;
    let (receiver, url) = Receiver::start(&[500, 503]).await;
    stack.start_callbacks();
    let id = stack.submit(API_KEY, Some(&url)).await;
    stack.accept(&id, &["sent-retry"]).await;
    let requests = receiver.wait_for(3).await;
    let ids: Vec<_> = requests
        .iter()
        .map(|(h, _)| h["webhook-id"].clone())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let bodies: Vec<_> = requests.iter().map(|(_, b)| b.clone()).collect();
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "the body is the same on every attempt"
    );
    let key = bootstrap_key(CLIENT);
    for (headers, body) in receiver.raw() {
        verify_standard_webhooks(&key, &headers, &body).unwrap();
    }
    let row = eventually("the callback to be delivered", || async {
        let rows = stack
            .store()
            .callbacks_for_message(id.parse().unwrap())
            .await
            .unwrap();
        rows.into_iter().next().filter(|r| r.state == "delivered")
    })
    .await;
    assert_eq!(row.attempts, 3);
    let attempts = stack.store().callback_attempts(row.id).await.unwrap();
    let codes: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt, a.status_code))
        .collect();
    assert_eq!(codes, [(1, Some(500)), (2, Some(503)), (3, Some(200))]);
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("HTTP 500 Internal Server Error")
    );
    assert!(
        attempts
            .windows(2)
            .all(|w| w[0].started_at < w[1].started_at)
    );
}

#[tokio::test]
async fn deliveries_are_given_up_after_the_last_attempt() {
    let stack = Stack::start(&[("CALLBACK_MAX_ATTEMPTS", "3")]).await;
    let (receiver, url) = Receiver::start(&[500, 500, 500, 500, 500]).await;
    stack.start_callbacks();
    let id = stack.submit(API_KEY, Some(&url)).await;
    stack.accept(&id, &["sent-give-up"]).await;
    let row = eventually("the callback to be given up", || async {
        let rows = stack
            .store()
            .callbacks_for_message(id.parse().unwrap())
            .await
            .unwrap();
        rows.into_iter().next().filter(|r| r.state == "failed")
    })
    .await;
    assert_eq!((row.attempts, row.last_status_code), (3, Some(500)));
    assert!(row.completed_at.is_some());
    assert_eq!(
        stack.store().callback_attempts(row.id).await.unwrap().len(),
        3
    );
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn unreachable_and_slow_endpoints_are_recorded() {
    let stack = Stack::start(&[
        ("CALLBACK_MAX_ATTEMPTS", "2"),
        ("CALLBACK_TIMEOUT_SECS", "1"),
    ])
    .await;
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", socket.local_addr().unwrap())
    };
    let (slow, slow_url) = Receiver::start(&[]).await;
    *slow.delay.lock().unwrap() = Duration::from_secs(5);
    stack.start_callbacks();
    let refused = stack.submit(API_KEY, Some(&closed)).await;
    let timed_out = stack.submit(API_KEY, Some(&slow_url)).await;
    stack.accept(&refused, &["sent-refused"]).await;
    stack.accept(&timed_out, &["sent-slow"]).await;
    for (id, expected) in [(&refused, "connection failed"), (&timed_out, "timeout")] {
        let row = eventually("the callback to be given up", || async {
            let rows = stack
                .store()
                .callbacks_for_message(id.parse().unwrap())
                .await
                .unwrap();
            rows.into_iter().next().filter(|r| r.state == "failed")
        })
        .await;
        let attempts = stack.store().callback_attempts(row.id).await.unwrap();
        assert_eq!(attempts.len(), 2);
        for attempt in attempts {
            assert_eq!(attempt.status_code, None);
            let error = attempt.error.unwrap();
            assert!(error.starts_with(expected), "{error}");
            assert!(
                !error.contains("127.0.0.1"),
                "no URL in the stored error: {error}"
            );
        }
    }
}

#[tokio::test]
async fn callbacks_of_one_message_arrive_in_order() {
    let stack = Stack::start(&[]).await;
    // The second delivery fails once: the later ones wait for it.
    let (receiver, url) = Receiver::start(&[200, 500]).await;
    let id = stack.submit(API_KEY, Some(&url)).await;
    stack.accept(&id, &["sent-order"]).await;
    for status in [
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
    ] {
        assert!(
            stack
                .store()
                .change_status(
                    id.parse().unwrap(),
                    &StatusChange::new(status, EventSource::Sent)
                )
                .await
                .unwrap()
        );
    }
    // A change that is not progress makes no callback.
    assert!(
        !stack
            .store()
            .change_status(
                id.parse().unwrap(),
                &StatusChange::new(MessageStatus::Sent, EventSource::Sent)
            )
            .await
            .unwrap()
    );
    stack.start_callbacks();
    let requests = receiver.wait_for(5).await;
    let statuses: Vec<&str> = requests
        .iter()
        .map(|(_, b)| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["accepted", "sent", "sent", "delivered", "read"]);
    let previous: Vec<&str> = requests
        .iter()
        .map(|(_, b)| b["previous_status"].as_str().unwrap())
        .collect();
    assert_eq!(
        previous,
        ["queued", "accepted", "accepted", "sent", "delivered"]
    );
    eventually("all delivered", || async {
        let rows = stack
            .store()
            .callbacks_for_message(id.parse().unwrap())
            .await
            .unwrap();
        (rows.len() == 4 && rows.iter().all(|r| r.state == "delivered")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn messages_without_callback_url_queue_nothing() {
    let stack = Stack::start(&[]).await;
    let id = stack.submit(API_KEY, None).await;
    stack.accept(&id, &["sent-none"]).await;
    assert!(
        stack
            .store()
            .callbacks_for_message(id.parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn notifications_wake_the_sender_without_polling() {
    let stack = Stack::start(&[("CALLBACK_POLL_INTERVAL_MS", "600000")]).await;
    let (receiver, url) = Receiver::start(&[]).await;
    stack.start_callbacks();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = stack.submit(API_KEY, Some(&url)).await;
    stack.accept(&id, &["sent-wake"]).await;
    receiver.wait_for(1).await;
    assert!(
        stack
            .store()
            .change_status(
                id.parse().unwrap(),
                &StatusChange::new(MessageStatus::Delivered, EventSource::Sent)
            )
            .await
            .unwrap()
    );
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[1].1["status"], "delivered");
}

#[tokio::test]
async fn concurrent_changes_queue_a_consistent_chain_of_callbacks() {
    let stack = Stack::start(&[]).await;
    let id = stack
        .submit(API_KEY, Some("http://127.0.0.1:9/never-called"))
        .await;
    let statuses = [
        MessageStatus::Accepted,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
        MessageStatus::Scheduled,
    ];
    let store = stack.store();
    let applied = futures::future::join_all((0..60).map(|i| {
        let change = StatusChange::new(statuses[i % statuses.len()], EventSource::Sent);
        let id = id.clone();
        async move {
            store
                .change_status(id.parse().unwrap(), &change)
                .await
                .unwrap()
        }
    }))
    .await;
    let rows = store
        .callbacks_for_message(id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        applied.iter().filter(|a| **a).count(),
        "one callback per applied change"
    );
    assert_eq!(rows[0].previous_status.as_deref(), Some("queued"));
    for pair in rows.windows(2) {
        assert_eq!(
            pair[1].previous_status.as_deref(),
            Some(pair[0].status.as_str()),
            "{rows:#?}"
        );
        let rank = |s: &str| s.parse::<MessageStatus>().unwrap().rank();
        assert!(rank(&pair[1].status) > rank(&pair[0].status));
    }
    assert_eq!(rows.last().unwrap().status, "read");
    assert_eq!(stack.message(&id).await.status, MessageStatus::Read);
}

/// The callback sender with `stack`'s settings but no private network
/// allowed: the gateway (with the allow list) accepted the URL, but this
/// worker's operator allows nothing.
fn start_callbacks_allowing_nothing(stack: &Stack) {
    let mut config = (*stack.config).clone();
    config.callback_policy = OutboundPolicy::default();
    tokio::spawn(worker::callbacks::run(
        stack.store().clone(),
        Arc::new(config),
        stack.shutdown.clone(),
    ));
}

/// Waits for the message's first callback to be finished, then checks it
/// stays so (no retry is coming: the backoff here is 20 ms).
async fn finished_callback(stack: &Stack, id: &str) -> common::store::CallbackRecord {
    let row = eventually("the callback to be finished", || async {
        let rows = stack
            .store()
            .callbacks_for_message(id.parse().unwrap())
            .await
            .unwrap();
        rows.into_iter().next().filter(|r| r.state != "pending")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = stack
        .store()
        .callbacks_for_message(id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(again[0].attempts, row.attempts, "not retried");
    row
}

/// A name that resolves to a loopback address (here `localhost`, through
/// /etc/hosts) is refused when the worker resolves it: nothing is sent, the
/// reason is recorded on the attempt, and it is not retried.
#[tokio::test]
async fn names_resolving_inside_the_network_are_refused_at_delivery() {
    let stack = Stack::start(&[]).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let by_name = url.replace("127.0.0.1", "localhost");
    start_callbacks_allowing_nothing(&stack);
    let id = stack.submit(API_KEY, Some(&by_name)).await;
    stack.accept(&id, &["sent-by-name"]).await;

    let row = finished_callback(&stack, &id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("failed", 1));
    let attempts = stack.store().callback_attempts(row.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, None);
    let error = attempts[0].error.as_deref().unwrap();
    assert!(
        error.starts_with("refused: callback_url resolves only to non-global addresses (")
            && error.contains("127.0.0.1"),
        "{error}"
    );
    assert!(!error.contains("localhost"), "no URL in the error: {error}");
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the receiver"
    );
}

/// A literal address never reaches a resolver: it is checked before the
/// request, with the same outcome.
#[tokio::test]
async fn literal_addresses_inside_the_network_are_refused_at_delivery() {
    let stack = Stack::start(&[]).await;
    let (receiver, url) = Receiver::start(&[]).await;
    start_callbacks_allowing_nothing(&stack);
    let id = stack.submit(API_KEY, Some(&url)).await;
    stack.accept(&id, &["sent-literal"]).await;

    let row = finished_callback(&stack, &id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("failed", 1));
    let attempts = stack.store().callback_attempts(row.id).await.unwrap();
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("refused: callback_url points at a non-global address (127.0.0.1)")
    );
    assert!(receiver.requests().is_empty());
}

/// With loopback in `CALLBACK_ALLOW_PRIVATE_NETWORKS`, the same name is
/// delivered to.
#[tokio::test]
async fn allowed_networks_are_delivered_to_by_name() {
    let stack = Stack::start(&[("CALLBACK_ALLOW_PRIVATE_NETWORKS", LOOPBACK)]).await;
    let (receiver, url) = Receiver::start(&[]).await;
    let by_name = url.replace("127.0.0.1", "localhost");
    stack.start_callbacks();
    let id = stack.submit(API_KEY, Some(&by_name)).await;
    stack.accept(&id, &["sent-allowed"]).await;
    let requests = receiver.wait_for(1).await;
    assert_eq!(requests[0].1["message_id"], id.as_str());
    let row = finished_callback(&stack, &id).await;
    assert_eq!((row.state.as_str(), row.attempts), ("delivered", 1));
}
