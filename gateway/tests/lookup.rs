//! `GET /dashboard/lookup` (issue 15): a message by id or a phone number's
//! messages, with timelines and callback attempts; a tenant key finds only
//! its own, an admin key everyone's; a key is needed even on a public page.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use common::config::Config;
use common::domain::{EventSource, MessageStatus};
use common::store::{CallbackAttempt, CallbackNext, StatusChange};
use common::test_support::{TestDatabase, TestRedis};
use gateway::test_support::RunningGateway;
use serde_json::{Value, json};

const ADMIN_KEY: &str = "key-admin-00000001";
const SHOP_KEY: &str = "key-shop-000000001";
const BANK_KEY: &str = "key-bank-000000001";
const PHONE: &str = "+14155550123";

async fn get(base: &str, key: Option<&str>, q: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .get(format!("{base}/dashboard/lookup"))
        .query(&[("q", q)]);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn send(base: &str, key: &str, phone: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/messages/send"))
        .bearer_auth(key)
        .json(&json!({"phone_number": phone, "template_id": "tmpl_1",
                      "callback_url": "https://receiver.example/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["message_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn finds_by_id_or_phone_with_timeline_and_callbacks_scoped_to_the_tenant() {
    let db = TestDatabase::new().await;
    let redis = TestRedis::new();
    let vars: HashMap<String, String> = [
        ("APP_ENV", "testing"),
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_PREFIX", redis.prefix.as_str()),
        ("DASHBOARD_PUBLIC", "true"),
        (
            "API_KEYS",
            &format!("ops:{ADMIN_KEY}:admin,shop:{SHOP_KEY},bank:{BANK_KEY}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_map(&vars).unwrap();
    let base = RunningGateway::start(config, db.store.clone())
        .await
        .detach();

    let shop = send(&base, SHOP_KEY, PHONE).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let bank = send(&base, BANK_KEY, PHONE).await;
    send(&base, SHOP_KEY, "+14155550199").await;
    // The shop's message is accepted: a callback, and one failed attempt of it.
    db.store
        .change_status(
            shop.parse().unwrap(),
            &StatusChange::new(MessageStatus::Accepted, EventSource::Worker),
        )
        .await
        .unwrap();
    let callback = db
        .store
        .callbacks_for_message(shop.parse().unwrap())
        .await
        .unwrap()[0]
        .clone();
    db.store
        .record_callback_attempts(&[CallbackAttempt {
            id: callback.id,
            attempt: 0,
            started_at: Utc::now(),
            duration: Duration::from_millis(12),
            status_code: Some(503),
            error: Some("HTTP 503".into()),
            next: CallbackNext::RetryAt(Utc::now()),
        }])
        .await
        .unwrap();

    // A tenant: its own messages to the number, not the other tenant's.
    let (status, body) = get(&base, Some(SHOP_KEY), PHONE).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client"], "shop");
    let found: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(found, [shop.as_str()]);
    let message = &body["messages"][0];
    let timeline: Vec<&str> = message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["queued", "accepted"]);
    assert_eq!(message["callbacks"][0]["status"], "accepted");
    assert_eq!(message["callbacks"][0]["attempts"][0]["status_code"], 503);
    assert_eq!(message["callbacks"][0]["attempts"][0]["error"], "HTTP 503");
    let (_, body) = get(&base, Some(SHOP_KEY), &bank).await;
    assert_eq!(body["messages"], json!([]));

    // An admin: everyone's, newest first; by id too.
    let (_, body) = get(&base, Some(ADMIN_KEY), PHONE).await;
    assert_eq!(body["client"], Value::Null);
    let found: Vec<(&str, &str)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["message_id"].as_str().unwrap(),
                m["client"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, [(bank.as_str(), "bank"), (shop.as_str(), "shop")]);
    let (_, body) = get(&base, Some(ADMIN_KEY), &bank).await;
    assert_eq!(body["messages"][0]["message_id"], bank.as_str());

    // Input named; a key needed even with DASHBOARD_PUBLIC=true.
    let (status, body) = get(&base, Some(ADMIN_KEY), "4155550123").await;
    assert_eq!(status, 400);
    assert!(body["messages"]["q"].is_array(), "{body}");
    let (status, _) = get(&base, None, PHONE).await;
    assert_eq!(status, 401);
}
