//! `POST /webhooks/{sent,stripe,telegram}` against a real gateway (in
//! process, on a random port) with its own Postgres database and Redis prefix.
//! Processing of the stored events is the worker's, tested in worker/tests.

use std::collections::HashMap;

use chrono::Utc;
use common::config::Config;
use common::signature::{WebhookSecret, sign, sign_legacy, sign_stripe};
use common::store::{InboxRecord, Store};
use common::test_support::{
    LEGACY_WEBHOOK_SECRET as LEGACY_SECRET, SENT_WEBHOOK_SECRET as SENT_SECRET, TestDatabase,
    TestRedis, drop_database, free_port,
};
use gateway::test_support::RunningGateway;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// A second, older secret still accepted during a rotation.
const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ENDPOINT_ID: &str = "3f2b8c1e-7d4a-4e2b-9c1a-5b6d7e8f9a0b";
const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
const TELEGRAM_TOKEN: &str = "tg_Secret-123";

struct App {
    base: String,
    http: reqwest::Client,
    db: TestDatabase,
    _redis: TestRedis,
}

impl App {
    async fn start(extra: &[(&str, &str)]) -> App {
        let db = TestDatabase::new().await;
        let redis = TestRedis::new();
        let base = serve(&db.url, db.store.clone(), &redis, extra).await;
        App {
            base,
            http: reqwest::Client::new(),
            db,
            _redis: redis,
        }
    }

    fn store(&self) -> &Store {
        &self.db.store
    }

    async fn post(
        &self,
        path: &str,
        headers: HeaderMap,
        body: impl Into<Vec<u8>>,
    ) -> (StatusCode, Value) {
        post(
            &self.http,
            &format!("{}{path}", self.base),
            headers,
            body.into(),
        )
        .await
    }

    async fn inbox(&self, provider: &str) -> Vec<InboxRecord> {
        self.store().inbox_events(Some(provider)).await.unwrap()
    }
}

fn config(database_url: &str, redis: &TestRedis, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("APP_ENV", "testing"),
        ("DATABASE_URL", database_url),
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_PREFIX", redis.prefix.as_str()),
        ("LOG_LEVEL", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let sent_secrets = format!("{SENT_SECRET},{OLD_SECRET},{LEGACY_SECRET}");
    vars.insert("SENT_DM_WEBHOOK_SECRET".into(), sent_secrets);
    vars.insert("STRIPE_WEBHOOK_SECRET".into(), STRIPE_SECRET.into());
    vars.insert(
        "TELEGRAM_WEBHOOK_SECRET_TOKEN".into(),
        TELEGRAM_TOKEN.into(),
    );
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_map(&vars).expect("test configuration")
}

/// Starts the gateway on 127.0.0.1:0 and returns its base URL.
async fn serve(
    database_url: &str,
    store: Store,
    redis: &TestRedis,
    extra: &[(&str, &str)],
) -> String {
    RunningGateway::start(config(database_url, redis, extra), store)
        .await
        .detach()
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let response = http
        .post(url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let is_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(is_json, "every answer is JSON, got {status} {body}");
    (status, body)
}

/// The contract's error shape: `{"error": sentence, "code": machine code}`.
#[track_caller]
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["code"], code, "{}", answer.1);
    assert!(
        answer.1["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{}",
        answer.1
    );
}

#[track_caller]
fn assert_received(answer: &(StatusCode, Value)) {
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1, json!({"received": true}));
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// Headers of a Sent delivery signed with `secret` at `timestamp`.
fn sent_headers(secret: &str, body: &[u8], timestamp: i64, event_id: Option<&str>) -> HeaderMap {
    let ts = timestamp.to_string();
    let signature = sign(
        &WebhookSecret::parse(secret).unwrap(),
        ENDPOINT_ID,
        &ts,
        body,
    );
    let mut map = headers(&[
        ("content-type", "application/json"),
        ("x-webhook-id", ENDPOINT_ID),
        ("x-webhook-timestamp", &ts),
        ("x-webhook-signature", &signature),
    ]);
    if let Some(id) = event_id {
        map.insert("x-webhook-event-id", HeaderValue::from_str(id).unwrap());
    }
    map
}

fn delivered(message_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "field": "message", "event": "message.delivered", "timestamp": "2026-01-15T10:35:00Z",
        "payload": {"message_id": message_id, "message_status": "DELIVERED", "channel": "sms",
                    "outbound_number": "+14155551234", "updated_at": "2026-01-15T10:34:58Z"}
    }))
    .unwrap()
}

// --- The original integration's webhook tests, ported ---------------------

#[tokio::test]
async fn seed_missing_signature_is_401() {
    let app = App::start(&[]).await;
    let answer = app.post("/webhooks/sent", HeaderMap::new(), "{}").await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
    assert!(app.inbox("sent").await.is_empty());
}

#[tokio::test]
async fn seed_invalid_signature_is_401() {
    let app = App::start(&[]).await;
    let answer = app
        .post(
            "/webhooks/sent",
            headers(&[("X-Webhook-Signature", "invalid")]),
            "{}",
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
    assert!(app.inbox("sent").await.is_empty());
}

#[tokio::test]
async fn seed_valid_legacy_signature_is_200_and_stored() {
    let app = App::start(&[]).await;
    let payload = r#"{"type": "message.delivered", "data": {"id": "msg_123"}}"#;
    let signature = sign_legacy(LEGACY_SECRET, payload.as_bytes());
    let answer = app
        .post(
            "/webhooks/sent",
            headers(&[("X-Webhook-Signature", &signature)]),
            payload,
        )
        .await;
    assert_received(&answer);
    let rows = app.inbox("sent").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].body, payload.as_bytes());
    assert_eq!(rows[0].event_type.as_deref(), Some("message.delivered"));
    assert_eq!(rows[0].state, "pending");
}

/// The seed's fourth test (a `message.failed` event is logged at error level)
/// is about processing, which is the worker's: see worker/tests/inbox.rs
/// `seed_failed_event_is_logged_as_error`. Here: it is accepted and stored.
#[tokio::test]
async fn seed_failed_event_is_accepted() {
    let app = App::start(&[]).await;
    let payload =
        r#"{"type": "message.failed", "data": {"id": "msg_123", "error": {"message": "Invalid"}}}"#;
    let signature = sign_legacy(LEGACY_SECRET, payload.as_bytes());
    let answer = app
        .post(
            "/webhooks/sent",
            headers(&[("X-Webhook-Signature", &signature)]),
            payload,
        )
        .await;
    assert_received(&answer);
    assert_eq!(
        app.inbox("sent").await[0].event_type.as_deref(),
        Some("message.failed")
    );
}

// --- Sent's current scheme --------------------------------------------------

#[tokio::test]
async fn standard_signature_is_stored_with_its_headers() {
    let app = App::start(&[]).await;
    let body = delivered("8ba7b830-9dad-11d1-80b4-00c04fd430c8");
    let answer = app
        .post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now(), Some("evt_1")),
            body.clone(),
        )
        .await;
    assert_received(&answer);
    let rows = app.inbox("sent").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.provider.as_str(), row.event_id.as_str()),
        ("sent", "evt_1")
    );
    assert_eq!(row.event_type.as_deref(), Some("message.delivered"));
    assert_eq!(row.body, body);
    assert_eq!(row.headers["x-webhook-id"], ENDPOINT_ID);
    assert_eq!(row.headers["x-webhook-event-id"], "evt_1");
    assert!(
        row.headers["x-webhook-signature"]
            .as_str()
            .unwrap()
            .starts_with("v1,")
    );
    assert!(row.headers["x-request-id"].is_string());
    let stored = row.headers.to_string();
    assert!(
        !stored.contains(SENT_SECRET.trim_start_matches("whsec_")),
        "no secret in the stored headers"
    );
    assert!((Utc::now() - row.received_at).num_seconds().abs() < 60);
}

#[tokio::test]
async fn documented_vector_is_accepted() {
    // SENT_API.md's Sent-shaped vector, signed at 2026-01-01: accepted by a
    // gateway whose tolerance covers that date, rejected as stale otherwise.
    let body = br#"{"field":"message","event":"message.delivered","timestamp":"2026-01-01T00:00:00Z","payload":{"message_id":"8ba7b830-9dad-11d1-80b4-00c04fd430c8","message_status":"DELIVERED","channel":"sms","outbound_number":"+14155551234","updated_at":"2026-01-01T00:00:00Z"}}"#;
    let vector = headers(&[
        ("x-webhook-id", ENDPOINT_ID),
        ("x-webhook-timestamp", "1767225600"),
        (
            "x-webhook-signature",
            "v1,pA4KecBT+XKBwvwclddFJwtdC9xq3usd+xQocZ4jK/4=",
        ),
    ]);
    let wide = App::start(&[("WEBHOOK_TOLERANCE_SECS", "315360000")]).await;
    assert_received(
        &wide
            .post("/webhooks/sent", vector.clone(), body.to_vec())
            .await,
    );
    // No X-Webhook-Event-ID: the fallback key is message id + event + updated_at.
    let rows = wide.inbox("sent").await;
    assert_eq!(
        rows[0].event_id,
        "8ba7b830-9dad-11d1-80b4-00c04fd430c8:message.delivered:2026-01-01T00:00:00Z"
    );
    let strict = App::start(&[]).await;
    let answer = strict.post("/webhooks/sent", vector, body.to_vec()).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
}

#[tokio::test]
async fn replayed_old_timestamp_is_401() {
    let app = App::start(&[]).await;
    let body = delivered("m-replay");
    for timestamp in [now() - 301, now() - 3600, now() + 600] {
        let answer = app
            .post(
                "/webhooks/sent",
                sent_headers(SENT_SECRET, &body, timestamp, Some("evt_r")),
                body.clone(),
            )
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
        assert!(
            answer.1["error"].as_str().unwrap().contains("timestamp"),
            "{}",
            answer.1
        );
    }
    // Within the tolerance (default 300 s) it is fine.
    let answer = app
        .post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now() - 200, Some("evt_r")),
            body.clone(),
        )
        .await;
    assert_received(&answer);
    assert_eq!(app.inbox("sent").await.len(), 1);
}

#[tokio::test]
async fn tolerance_is_configurable() {
    let app = App::start(&[("WEBHOOK_TOLERANCE_SECS", "30")]).await;
    let body = delivered("m-tol");
    let answer = app
        .post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now() - 120, None),
            body.clone(),
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
}

#[tokio::test]
async fn rotation_accepts_both_secrets() {
    let app = App::start(&[]).await;
    let (body, other) = (delivered("m-rot"), delivered("m-rot-2"));
    let new = app
        .post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now(), Some("evt_new")),
            body.clone(),
        )
        .await;
    assert_received(&new);
    let old = app
        .post(
            "/webhooks/sent",
            sent_headers(OLD_SECRET, &other, now(), Some("evt_old")),
            other.clone(),
        )
        .await;
    assert_received(&old);
    let stranger = WebhookSecret::generate().to_whsec_string();
    let forged = app
        .post(
            "/webhooks/sent",
            sent_headers(&stranger, &body, now(), Some("evt_x")),
            body.clone(),
        )
        .await;
    assert_error(&forged, StatusCode::UNAUTHORIZED, "invalid_signature");
    let ids: Vec<String> = app
        .inbox("sent")
        .await
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(ids, ["evt_new", "evt_old"]);
}

#[tokio::test]
async fn body_altered_by_one_byte_is_401() {
    let app = App::start(&[]).await;
    let body = delivered("m-alter");
    let signed = sent_headers(SENT_SECRET, &body, now(), Some("evt_a"));
    for i in [0, body.len() / 2, body.len() - 1] {
        let mut altered = body.clone();
        altered[i] ^= 0x01;
        let answer = app.post("/webhooks/sent", signed.clone(), altered).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
    }
    let mut longer = body.clone();
    longer.push(b' ');
    assert_error(
        &app.post("/webhooks/sent", signed.clone(), longer).await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    );
    assert!(app.inbox("sent").await.is_empty());
    assert_received(&app.post("/webhooks/sent", signed, body).await);
}

#[tokio::test]
async fn legacy_signature_can_be_switched_off() {
    let app = App::start(&[("WEBHOOK_ALLOW_LEGACY_SIGNATURE", "false")]).await;
    let payload = r#"{"type": "message.delivered", "data": {"id": "msg_123"}}"#;
    let signature = sign_legacy(LEGACY_SECRET, payload.as_bytes());
    let answer = app
        .post(
            "/webhooks/sent",
            headers(&[("X-Webhook-Signature", &signature)]),
            payload,
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
    // A legacy signature next to a timestamp cannot skip the timestamped scheme either.
    let app = App::start(&[]).await;
    let ts = now().to_string();
    let downgrade = headers(&[
        ("x-webhook-id", ENDPOINT_ID),
        ("x-webhook-timestamp", &ts),
        ("x-webhook-signature", &signature),
    ]);
    assert_error(
        &app.post("/webhooks/sent", downgrade, payload).await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    );
}

#[tokio::test]
async fn duplicate_delivery_is_stored_once() {
    let app = App::start(&[]).await;
    let body = delivered("m-dup");
    // A retry is signed again (new timestamp) but carries the same event id.
    let first = app
        .post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now(), Some("evt_dup")),
            body.clone(),
        )
        .await;
    let second = app
        .post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now() + 1, Some("evt_dup")),
            body.clone(),
        )
        .await;
    assert_received(&first);
    assert_received(&second);
    assert_eq!(app.inbox("sent").await.len(), 1);

    // Concurrent duplicates (several in one group commit, or racing ones).
    let url = format!("{}/webhooks/sent", app.base);
    let body2 = delivered("m-dup2");
    let answers = futures::future::join_all((0..20).map(|_| {
        let headers = sent_headers(SENT_SECRET, &body2, now(), Some("evt_dup2"));
        post(&app.http, &url, headers, body2.clone())
    }))
    .await;
    answers.iter().for_each(assert_received);
    let rows = app.inbox("sent").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows.iter().filter(|r| r.event_id == "evt_dup2").count(), 1);
}

#[tokio::test]
async fn a_replayed_body_under_a_fresh_event_id_is_a_duplicate() {
    let app = App::start(&[]).await;
    let body = delivered("m-replay");
    for event_id in ["evt_original", "evt_fresh_1", "evt_fresh_2"] {
        let headers = sent_headers(SENT_SECRET, &body, now(), Some(event_id));
        assert_received(&app.post("/webhooks/sent", headers, body.clone()).await);
    }
    let rows = app.inbox("sent").await;
    assert_eq!(rows.len(), 1, "the same signed body is one event");
    assert_eq!(rows[0].event_id, "evt_original");
    assert!(!rows[0].event_id_reused);
}

#[tokio::test]
async fn an_event_id_seen_with_another_body_is_stored_and_flagged() {
    let app = App::start(&[]).await;
    // A guess of the real event's id arrives first, with another body.
    let (guess, real) = (delivered("m-guess"), delivered("m-real"));
    for body in [&guess, &real] {
        let headers = sent_headers(SENT_SECRET, body, now(), Some("evt_same"));
        assert_received(&app.post("/webhooks/sent", headers, body.clone()).await);
    }
    let rows = app.inbox("sent").await;
    assert_eq!(rows.len(), 2, "the real event is not pre-empted");
    let flags: Vec<(&[u8], bool)> = rows
        .iter()
        .map(|r| (r.body.as_slice(), r.event_id_reused))
        .collect();
    assert!(flags.contains(&(guess.as_slice(), false)));
    assert!(flags.contains(&(real.as_slice(), true)));
}

#[tokio::test]
async fn duplicate_without_event_id_header_is_stored_once() {
    let app = App::start(&[]).await;
    let body = delivered("m-noid");
    assert_received(
        &app.post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now(), None),
            body.clone(),
        )
        .await,
    );
    assert_received(
        &app.post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now(), None),
            body.clone(),
        )
        .await,
    );
    let rows = app.inbox("sent").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].event_id,
        "m-noid:message.delivered:2026-01-15T10:34:58Z"
    );
}

#[tokio::test]
async fn a_burst_is_stored_completely() {
    let app = App::start(&[]).await;
    let url = format!("{}/webhooks/sent", app.base);
    let answers = futures::future::join_all((0..300).map(|i| {
        let body = delivered(&format!("m-burst-{i}"));
        let headers = sent_headers(SENT_SECRET, &body, now(), Some(&format!("evt_burst_{i}")));
        post(&app.http, &url, headers, body)
    }))
    .await;
    answers.iter().for_each(assert_received);
    assert_eq!(app.inbox("sent").await.len(), 300);
}

#[tokio::test]
async fn unfamiliar_families_are_stored() {
    let app = App::start(&[]).await;
    for (i, body) in [
        json!({"field": "templates", "value": {"id": "tmpl_1", "status": "APPROVED"}}),
        json!({"field": "contact", "event": "contact.updated", "payload": {"id": "c1"}}),
        json!({"event": "call.started", "payload": {"call_id": "x"}}),
        json!({"field": "message", "event": "message.received", "payload": {"message_id": "in1", "text": "hi"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let body = serde_json::to_vec(&body).unwrap();
        let event_id = format!("evt_f{i}");
        assert_received(&app.post("/webhooks/sent", sent_headers(SENT_SECRET, &body, now(), Some(&event_id)), body).await);
    }
    let kinds: Vec<Option<String>> = app
        .inbox("sent")
        .await
        .into_iter()
        .map(|r| r.event_type)
        .collect();
    assert_eq!(
        kinds,
        [
            Some("templates".into()),
            Some("contact.updated".into()),
            Some("call.started".into()),
            Some("message.received".into())
        ]
    );
}

#[tokio::test]
async fn content_type_is_not_required_but_json_is() {
    let app = App::start(&[]).await;
    for (i, content_type) in [
        None,
        Some("text/plain"),
        Some("application/json; charset=utf-8"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = delivered(&format!("m-ct{i}"));
        let mut signed = sent_headers(SENT_SECRET, &body, now(), Some(&format!("evt_ct{i}")));
        signed.remove("content-type");
        if let Some(ct) = content_type {
            signed.insert("content-type", HeaderValue::from_static(ct));
        }
        assert_received(&app.post("/webhooks/sent", signed, body.clone()).await);
    }
    for bad in [&b"not json"[..], b"{\"field\": ", b"[1, 2, 3]", b""] {
        let answer = app
            .post(
                "/webhooks/sent",
                sent_headers(SENT_SECRET, bad, now(), Some("evt_bad")),
                bad.to_vec(),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_json");
    }
    assert_eq!(app.inbox("sent").await.len(), 3);
}

#[tokio::test]
async fn the_signature_is_checked_before_the_json() {
    let app = App::start(&[]).await;
    let answer = app
        .post(
            "/webhooks/sent",
            headers(&[("x-webhook-signature", "v1,AAAA")]),
            "not json",
        )
        .await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "invalid_signature");
}

#[tokio::test]
async fn other_errors_are_json_too() {
    let app = App::start(&[("MAX_BODY_BYTES", "1024")]).await;
    let response = app
        .http
        .get(format!("{}/webhooks/sent", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    let big = vec![b' '; 4096];
    let answer = app
        .post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &big, now(), None),
            big.clone(),
        )
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_error(
        &app.post("/webhooks/nope", HeaderMap::new(), "{}").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

// --- Postgres down ----------------------------------------------------------

#[tokio::test]
async fn postgres_unreachable_gives_503() {
    // A port nothing listens on.
    let url = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port());
    let store = Store::connect_lazy(&url, 2).unwrap();
    let redis = TestRedis::new();
    let base = serve(&url, store, &redis, &[]).await;
    let body = delivered("m-down");
    let answer = post(
        &reqwest::Client::new(),
        &format!("{base}/webhooks/sent"),
        sent_headers(SENT_SECRET, &body, now(), Some("evt_down")),
        body,
    )
    .await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert!(
        !answer.1.to_string().contains("nowhere"),
        "no internals in a 5xx"
    );
}

#[tokio::test]
async fn postgres_lost_while_running_gives_503() {
    let app = App::start(&[]).await;
    let body = delivered("m-lost");
    assert_received(
        &app.post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now(), Some("evt_l1")),
            body.clone(),
        )
        .await,
    );
    // The database disappears under the running gateway.
    drop_database(&app.db.name).await.unwrap();
    let answer = app
        .post(
            "/webhooks/sent",
            sent_headers(SENT_SECRET, &body, now(), Some("evt_l2")),
            body.clone(),
        )
        .await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
}

// --- Stripe -----------------------------------------------------------------

#[tokio::test]
async fn stripe_vectors() {
    let app = App::start(&[]).await;
    let body = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}"#;
    // stripe.rs's openssl vector, signed at 1700000000: stale for the default tolerance.
    let vector = "t=1700000000,v1=c28ab234d378540ecf7977eddde60d9d39f0806cbeec4799793f3598914672c9";
    let stale = app
        .post(
            "/webhooks/stripe",
            headers(&[("stripe-signature", vector)]),
            body.to_vec(),
        )
        .await;
    assert_error(&stale, StatusCode::UNAUTHORIZED, "invalid_signature");

    let fresh = sign_stripe(STRIPE_SECRET, now(), body);
    assert_received(
        &app.post(
            "/webhooks/stripe",
            headers(&[("stripe-signature", &fresh)]),
            body.to_vec(),
        )
        .await,
    );
    // Another scheme entry next to v1, and a retry of the same event.
    let again = format!("{},v0=deadbeef", sign_stripe(STRIPE_SECRET, now(), body));
    assert_received(
        &app.post(
            "/webhooks/stripe",
            headers(&[("stripe-signature", &again)]),
            body.to_vec(),
        )
        .await,
    );

    let wrong = sign_stripe("whsec_someone_else", now(), body);
    assert_error(
        &app.post(
            "/webhooks/stripe",
            headers(&[("stripe-signature", &wrong)]),
            body.to_vec(),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    );
    assert_error(
        &app.post("/webhooks/stripe", HeaderMap::new(), body.to_vec())
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    );
    let mut altered = body.to_vec();
    altered[3] ^= 1;
    assert_error(
        &app.post(
            "/webhooks/stripe",
            headers(&[("stripe-signature", &fresh)]),
            altered,
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    );

    let rows = app.inbox("stripe").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].event_id.as_str(), rows[0].event_type.as_deref()),
        ("evt_1", Some("payment_intent.succeeded"))
    );
    assert!(rows[0].headers["stripe-signature"].is_string());

    let wide = App::start(&[("WEBHOOK_TOLERANCE_SECS", "315360000")]).await;
    assert_received(
        &wide
            .post(
                "/webhooks/stripe",
                headers(&[("stripe-signature", vector)]),
                body.to_vec(),
            )
            .await,
    );
}

#[tokio::test]
async fn stripe_not_configured_is_404() {
    let app = App::start(&[("STRIPE_WEBHOOK_SECRET", "")]).await;
    let body = br#"{"id":"evt_1","type":"x"}"#;
    let signed = sign_stripe(STRIPE_SECRET, now(), body);
    let answer = app
        .post(
            "/webhooks/stripe",
            headers(&[("stripe-signature", &signed)]),
            body.to_vec(),
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert!(app.inbox("stripe").await.is_empty());
}

// --- Telegram ---------------------------------------------------------------

#[tokio::test]
async fn telegram_vectors() {
    let app = App::start(&[]).await;
    let body = br#"{"update_id":10000,"message":{"message_id":1,"chat":{"id":7,"type":"private"},"date":1767225600,"text":"/start"}}"#;
    let ok = headers(&[
        ("x-telegram-bot-api-secret-token", TELEGRAM_TOKEN),
        ("content-type", "application/json"),
    ]);
    assert_received(
        &app.post("/webhooks/telegram", ok.clone(), body.to_vec())
            .await,
    );
    assert_received(&app.post("/webhooks/telegram", ok, body.to_vec()).await);
    for bad in [Some("tg_secret-123"), Some("tg_Secret-1234"), None] {
        let h = bad
            .map(|t| headers(&[("x-telegram-bot-api-secret-token", t)]))
            .unwrap_or_default();
        assert_error(
            &app.post("/webhooks/telegram", h, body.to_vec()).await,
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
        );
    }
    let rows = app.inbox("telegram").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].event_id.as_str(), rows[0].event_type.as_deref()),
        ("10000", Some("message"))
    );
    // The token is the secret itself: never stored.
    assert!(
        rows[0]
            .headers
            .get("x-telegram-bot-api-secret-token")
            .is_none()
    );
    assert!(!rows[0].headers.to_string().contains(TELEGRAM_TOKEN));
}

#[tokio::test]
async fn telegram_not_configured_is_404() {
    let app = App::start(&[("TELEGRAM_WEBHOOK_SECRET_TOKEN", "")]).await;
    let answer = app
        .post(
            "/webhooks/telegram",
            headers(&[("x-telegram-bot-api-secret-token", TELEGRAM_TOKEN)]),
            "{\"update_id\":1}",
        )
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn sent_not_configured_is_404() {
    // Outside the testing profile nothing defaults the Sent secret.
    let db = TestDatabase::new().await;
    let redis = TestRedis::new();
    let base = serve(
        &db.url,
        db.store.clone(),
        &redis,
        &[("APP_ENV", "development"), ("SENT_DM_WEBHOOK_SECRET", "")],
    )
    .await;
    let body = delivered("m-404");
    let answer = post(
        &reqwest::Client::new(),
        &format!("{base}/webhooks/sent"),
        sent_headers(SENT_SECRET, &body, now(), None),
        body,
    )
    .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
}
