//! Replies to messages (issue 15), end to end with real Postgres and Redis:
//! sent-sim emits a signed `message.received` through the real gateway's
//! webhook route; the worker routes it to the tenant that last wrote to the
//! contact's number and delivers a signed `message.inbound` to that
//! tenant's inbound URL (a key of `API_KEYS` with `INBOUND_URLS`, a managed
//! key with `api_keys.inbound_url`), and to no other tenant. The pull API's
//! `inbound` source shows a tenant its own replies only, and an admin all of
//! them, including one from a number nobody wrote to (unroutable, counted).

mod inbox_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::signature::WebhookSecret;
use common::signature::callback::derived_secret;
use common::store::NewApiKey;
use inbox_support::*;
use sent_sim::SimConfig;
use serde_json::{Value, json};

const OTHER_KEY: &str = "sgw_other_tenant_key_0001";
const ADMIN_KEY: &str = "key-admin-0001";
const A_NUMBER: &str = "+14155550101";
const B_NUMBER: &str = "+14155550202";

/// An inbound URL's receiver: every request, as received; answers 200.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

impl Inbox {
    async fn start() -> (Inbox, String) {
        let inbox = Inbox::default();
        let app = axum::Router::new()
            .route(
                "/replies",
                axum::routing::post(
                    |State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes| async move {
                        inbox.0.lock().unwrap().push((headers, body));
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/replies", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (inbox, url)
    }

    fn received(&self) -> Vec<(HeaderMap, Bytes)> {
        self.0.lock().unwrap().clone()
    }
}

/// The body of a request signed with `secret` (and no other's).
fn verified(secret: &WebhookSecret, headers: &HeaderMap, body: &[u8]) -> Value {
    assert!(
        verifies(secret, headers, body),
        "signed with the tenant's callback secret"
    );
    serde_json::from_slice(body).unwrap()
}

/// The contact at `from` writes to the account, through sent-sim.
async fn reply(stack: &Stack, sim: &str, from: &str, text: &str) -> String {
    let answer: Value = stack
        .http
        .post(format!("{sim}/_sim/inbound"))
        .json(&json!({"from": from, "text": text}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["delivered"], true, "{answer}");
    answer["event_id"].as_str().unwrap().to_owned()
}

/// The pull API's whole `inbound` feed as `key` sees it.
async fn pull(stack: &Stack, key: &str) -> Vec<Value> {
    let (status, page) = events(stack, key, "inbound").await;
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().unwrap().clone()
}

/// A page of the pull API's `source` as `key` sees it: status and body.
async fn events(stack: &Stack, key: &str, source: &str) -> (u16, Value) {
    let response = stack
        .http
        .get(format!(
            "{}/api/events?source={source}&limit=100",
            stack.base
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_reply_reaches_the_tenant_that_wrote_to_the_number_and_no_other() {
    common::metrics::install();
    let (a_inbox, a_url) = Inbox::start().await;
    let (b_inbox, b_url) = Inbox::start().await;
    let stack = Stack::start(&[
        (
            "API_KEYS",
            &format!("{CLIENT}:{API_KEY},admin:{ADMIN_KEY}:admin"),
        ),
        ("INBOUND_URLS", &format!("{CLIENT}:{a_url}")),
        ("SENT_DM_WEBHOOK_SECRET", sent_sim::DEV_WEBHOOK_SECRET),
    ])
    .await;
    // Tenant B: a managed key, its inbound URL in the database.
    let b_secret = WebhookSecret::generate();
    stack
        .store()
        .create_api_key(&NewApiKey {
            name: "other".into(),
            key_hash: gateway::auth::hash_key(OTHER_KEY).to_vec(),
            key_prefix: OTHER_KEY[..8].into(),
            callback_secret: b_secret.to_whsec_string(),
            rate_limit: None,
        })
        .await
        .unwrap();
    assert!(
        stack
            .store()
            .set_inbound_url("other", Some(&b_url))
            .await
            .unwrap()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = sent_sim::spawn(SimConfig::default(), listener)
        .await
        .unwrap();
    sim.set_webhook_url(Some(format!("{}/webhooks/sent", stack.base)));
    let sim_url = sim.base_url();
    stack.start_inbox();
    stack.start_callbacks();

    // B wrote to A's number first, then A: the newest message decides.
    stack.submit_to(OTHER_KEY, A_NUMBER, None).await;
    let a_message = stack.submit_to(API_KEY, A_NUMBER, None).await;
    let b_message = stack.submit_to(OTHER_KEY, B_NUMBER, None).await;

    let to_a = reply(&stack, &sim_url, A_NUMBER, "Yes for A").await;
    let routed = stack.wait_inbox_state(&to_a, "processed").await;
    assert_eq!(
        (
            routed.reply_state.as_deref(),
            routed.reply_client.as_deref()
        ),
        (Some("routed"), Some(CLIENT))
    );
    let delivered = eventually("A's message.inbound", || async {
        let received = a_inbox.received();
        (!received.is_empty()).then_some(received)
    })
    .await;
    let a_secret = derived_secret(&stack.config.callback_signing.key, CLIENT);
    let body = verified(&a_secret, &delivered[0].0, &delivered[0].1);
    assert_eq!(body["type"], "message.inbound");
    assert_eq!(body["event_id"], to_a.as_str());
    assert_eq!(body["from"], A_NUMBER);
    assert_eq!(body["text"], "Yes for A");
    assert_eq!(body["channel"], "sms");
    assert_eq!(body["in_reply_to"], a_message.as_str());
    assert!(
        !verifies(&b_secret, &delivered[0].0, &delivered[0].1),
        "not signed with B's secret"
    );
    // The outbox recorded the delivery.
    let callback = eventually("the callback to be recorded delivered", || async {
        stack
            .store()
            .inbound_callback(routed.id)
            .await
            .unwrap()
            .filter(|c| c.state == "delivered")
    })
    .await;
    assert_eq!((callback.client.as_str(), callback.attempts), (CLIENT, 1));
    assert_eq!(
        callback.webhook_id,
        delivered[0].0["webhook-id"].to_str().unwrap()
    );

    // A reply to B's number reaches B (its managed key's URL and secret).
    let to_b = reply(&stack, &sim_url, B_NUMBER, "B here").await;
    let b_delivered = eventually("B's message.inbound", || async {
        let received = b_inbox.received();
        (!received.is_empty()).then_some(received)
    })
    .await;
    let body = verified(&b_secret, &b_delivered[0].0, &b_delivered[0].1);
    assert_eq!(
        (body["event_id"].as_str(), body["in_reply_to"].as_str()),
        (Some(to_b.as_str()), Some(b_message.as_str()))
    );

    // A number nobody wrote to: unroutable, kept for admins, counted.
    let stranger = reply(&stack, &sim_url, "+14155550999", "who is this").await;
    let unroutable = stack.wait_inbox_state(&stranger, "processed").await;
    assert_eq!(
        (
            unroutable.reply_state.as_deref(),
            unroutable.reply_client,
            unroutable.message_id
        ),
        (Some("unroutable"), None, None)
    );
    assert!(
        stack
            .store()
            .inbound_callback(unroutable.id)
            .await
            .unwrap()
            .is_none()
    );
    let metrics = common::metrics::render();
    assert!(
        metrics.contains(r#"worker_replies_total{outcome="unroutable"}"#)
            && metrics.contains(r#"worker_replies_total{outcome="routed"}"#),
        "{metrics}"
    );

    // Each receiver got its own reply only (once each).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a_inbox.received().len(), 1);
    assert_eq!(b_inbox.received().len(), 1);

    // The pull API: each tenant its own; the admin all, in routing order.
    let ids = |events: &[Value]| -> Vec<(String, Value)> {
        events
            .iter()
            .map(|e| {
                (
                    e["event_id"].as_str().unwrap().to_owned(),
                    e["routed_to"].clone(),
                )
            })
            .collect()
    };
    let admin = eventually("the admin's feed to hold the three replies", || async {
        let events = pull(&stack, ADMIN_KEY).await;
        (events.len() == 3).then_some(events)
    })
    .await;
    assert_eq!(
        ids(&admin),
        [
            (to_a.clone(), json!(CLIENT)),
            (to_b.clone(), json!("other")),
            (stranger.clone(), Value::Null)
        ]
    );
    let a_feed = pull(&stack, API_KEY).await;
    assert_eq!(ids(&a_feed), [(to_a.clone(), json!(CLIENT))]);
    assert_eq!(a_feed[0]["source"], "inbound");
    assert_eq!(a_feed[0]["event_type"], "message.inbound");
    // The same body the callback carried.
    assert_eq!(
        a_feed[0]["payload"],
        serde_json::from_slice::<Value>(&delivered[0].1).unwrap()
    );
    let b_feed = pull(&stack, OTHER_KEY).await;
    assert_eq!(ids(&b_feed), [(to_b.clone(), json!("other"))]);
    // A tenant still reads no provider events.
    assert_eq!(events(&stack, OTHER_KEY, "sent").await.0, 400);
}

/// A tenant without an inbound URL still has its replies routed to it, and
/// reads them with the pull API; a reply older than the window's messages is
/// unroutable.
#[tokio::test]
async fn replies_are_routed_without_an_inbound_url_and_only_within_the_window() {
    let stack = Stack::start(&[("REPLY_WINDOW_DAYS", "1")]).await;
    stack.start_inbox();
    let id = stack.submit_to(API_KEY, A_NUMBER, None).await;
    let old = stack.submit_to(API_KEY, B_NUMBER, None).await;
    sqlx::query("UPDATE messages SET created_at = now() - interval '2 days' WHERE id = $1")
        .bind(&old)
        .execute(stack.store().pool())
        .await
        .unwrap();
    let received = |number: &str, text: &str| {
        json!({"field": "message", "event": "message.received", "timestamp": "2026-01-15T10:35:00Z",
               "payload": {"message_id": format!("in-{text}"), "inbound_number": number,
                           "text": text, "received_at": "2026-01-15T10:35:00Z"}})
    };
    assert_eq!(stack.post_sent(&received(A_NUMBER, "hi"), "r1").await, 200);
    assert_eq!(
        stack.post_sent(&received(B_NUMBER, "late"), "r2").await,
        200
    );
    let routed = stack.wait_inbox_state("r1", "processed").await;
    assert_eq!(routed.reply_client.as_deref(), Some(CLIENT));
    assert_eq!(routed.message_id.as_deref(), Some(id.as_str()));
    assert!(
        stack
            .store()
            .inbound_callback(routed.id)
            .await
            .unwrap()
            .is_none(),
        "no inbound URL: no callback"
    );
    let late = stack.wait_inbox_state("r2", "processed").await;
    assert_eq!(late.reply_state.as_deref(), Some("unroutable"));
    let feed = eventually("the tenant's feed", || async {
        let events = pull(&stack, API_KEY).await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0]["event_id"], "r1");
    assert_eq!(feed[0]["payload"]["text"], "hi");
    assert_eq!(feed[0]["payload"]["in_reply_to"], id.as_str());
}

/// `gateway keys create --inbound-url` and `gateway keys set-inbound-url`:
/// managed keys only, URLs judged like callback URLs, cleared with `--clear`.
#[tokio::test]
async fn inbound_urls_of_managed_keys_are_set_checked_and_cleared() {
    let stack = Stack::start(&[]).await;
    let (store, config) = (stack.store(), &stack.config);
    let url = "http://127.0.0.1:9/replies";
    gateway::cli::create(
        store,
        config,
        "shop",
        None,
        common::domain::Role::Tenant,
        gateway::cli::KeyGrants {
            inbound_url: Some(url.into()),
            pull: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert_eq!(inbound_url(store, "shop").await.as_deref(), Some(url));
    for (name, bad) in [
        ("shop", "ftp://shop.example/in"),
        ("shop", "not a url"),
        // A key of API_KEYS takes INBOUND_URLS.
        (CLIENT, "https://shop.example/in"),
        ("nobody", "https://shop.example/in"),
    ] {
        let set = gateway::cli::set_inbound_url(store, config, name, Some(bad)).await;
        assert!(set.is_err(), "{name} {bad}");
    }
    assert!(
        gateway::cli::create(
            store,
            config,
            "other-shop",
            None,
            common::domain::Role::Tenant,
            gateway::cli::KeyGrants {
                inbound_url: Some("gopher://x".into()),
                pull: Vec::new(),
            }
        )
        .await
        .is_err()
    );
    gateway::cli::set_inbound_url(store, config, "shop", None)
        .await
        .unwrap();
    assert_eq!(inbound_url(store, "shop").await, None);
}

/// A managed key's stored inbound URL.
async fn inbound_url(store: &common::store::Store, name: &str) -> Option<String> {
    let keys = store.api_keys().await.unwrap();
    keys.into_iter()
        .find(|k| k.name == name)
        .unwrap()
        .inbound_url
}
