//! The gateway binary, run as a child process at debug level, never prints a
//! secret: not the API keys (good, managed or wrong ones), not the webhook
//! secrets of any provider, not the Sent API key, not the database password,
//! whatever it is sent. Its whole stdout and stderr are scanned. (The worker's
//! side, and this process's own captured logs, are in
//! worker/tests/no_secrets_in_logs.rs.)

mod support;

use common::signature::{WebhookSecret, sign, sign_legacy, sign_stripe};
use common::store::NewApiKey;
use common::test_support::{TestDatabase, TestRedis};
use serde_json::json;
use support::GatewayProcess;

const API_KEY: &str = "gwlogs-api-key-3e8a1c5f9b7d2046";
const MANAGED_KEY: &str = "gwlogs-managed-key-7c1f3a9e5d2b8064";
const WRONG_KEY: &str = "gwlogs-wrong-key-2f6b9d4e1a7c3058";
const SENT_KEY: &str = "gwlogs-sent-api-key-9a4c2e7f1b5d3086";
/// base64 of "gwlogs-webhook-secret-0123456789".
const WEBHOOK_SECRET: &str = "whsec_Z3dsb2dzLXdlYmhvb2stc2VjcmV0LTAxMjM0NTY3ODk=";
const LEGACY_SECRET: &str = "gwlogs-legacy-secret-5e1d";
const STRIPE_SECRET: &str = "whsec_gwlogs_stripe_4b8f2a";
const TELEGRAM_TOKEN: &str = "gwlogs-telegram-token-8c3e";
const DB_PASSWORD: &str = "gwlogs-db-password-6a2f";
const CALLBACK_SECRET: &str = "whsec_Z3dsb2dzLWNhbGxiYWNrLXNlY3JldC0wMQ==";

fn secrets() -> Vec<String> {
    let mut all = common::test_support::leakable_forms(&[
        API_KEY,
        MANAGED_KEY,
        WRONG_KEY,
        SENT_KEY,
        WEBHOOK_SECRET,
        LEGACY_SECRET,
        STRIPE_SECRET,
        TELEGRAM_TOKEN,
        DB_PASSWORD,
        CALLBACK_SECRET,
    ]);
    all.push("gwlogs-webhook-secret-0123456789".into());
    all
}

/// Runs the gateway binary with `log_level` and `log_format` through every
/// scenario, stops it with SIGTERM, and returns its whole output.
async fn run_gateway(log_level: &str, log_format: &str) -> String {
    let db = TestDatabase::new().await;
    let redis = TestRedis::new();
    db.store
        .create_api_key(&NewApiKey {
            name: "managed".into(),
            key_hash: gateway::auth::hash_key(MANAGED_KEY).to_vec(),
            key_prefix: MANAGED_KEY[..8].into(),
            callback_secret: CALLBACK_SECRET.into(),
            rate_limit: None,
        })
        .await
        .unwrap();
    // Local Postgres trusts the connection; the password is there to be leaked.
    let mut database_url = reqwest::Url::parse(&db.url).unwrap();
    database_url.set_password(Some(DB_PASSWORD)).unwrap();
    let redis_prefix = redis.prefix.clone();
    let gateway = GatewayProcess::start(&[
        ("APP_ENV", "testing"),
        ("LOG_LEVEL", log_level),
        ("LOG_FORMAT", log_format),
        ("DATABASE_URL", database_url.as_str()),
        ("REDIS_URL", &redis.url),
        ("REDIS_PREFIX", &redis_prefix),
        ("API_KEYS", &format!("logs:{API_KEY}")),
        ("SENT_DM_API_KEY", SENT_KEY),
        (
            "SENT_DM_WEBHOOK_SECRET",
            &format!("{WEBHOOK_SECRET},{LEGACY_SECRET}"),
        ),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("TELEGRAM_WEBHOOK_SECRET_TOKEN", TELEGRAM_TOKEN),
        ("GATEWAY_SHUTDOWN_DELAY_SECS", "0"),
    ])
    .await;
    scenarios(&reqwest::Client::new(), &gateway.base).await;
    strip_ansi(&gateway.stop().await)
}

/// The pretty format colours field names; the scan reads the plain text.
fn strip_ansi(text: &str) -> String {
    regex::Regex::new("\x1b\\[[0-9;]*m")
        .unwrap()
        .replace_all(text, "")
        .into_owned()
}

async fn scenarios(http: &reqwest::Client, base: &str) {
    let send =
        |auth: (&'static str, String), key: Option<&'static str>, body: serde_json::Value| {
            let mut request = http
                .post(format!("{base}/api/messages/send"))
                .header(auth.0, auth.1)
                .json(&body);
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
    let body = json!({"phone_number": "+14155550123", "template_name": "welcome",
        "parameters": {"name": "Ada"}, "callback_url": "https://client.example/hook"});
    let bearer = ("authorization", format!("Bearer {API_KEY}"));
    assert_eq!(send(bearer.clone(), Some("k1"), body.clone()).await, 202);
    assert_eq!(send(bearer.clone(), Some("k1"), body.clone()).await, 202);
    assert_eq!(
        send(
            bearer.clone(),
            Some("k1"),
            json!({"phone_number": "+14155550124", "template_name": "x"})
        )
        .await,
        409
    );
    assert_eq!(
        send(bearer.clone(), None, json!({"phone_number": API_KEY})).await,
        400
    );
    assert_eq!(
        send(("x-api-key", MANAGED_KEY.into()), None, body.clone()).await,
        202
    );
    for auth in [
        ("authorization", format!("Bearer {WRONG_KEY}")),
        ("x-api-key", WRONG_KEY.to_owned()),
        ("authorization", format!("Basic {API_KEY}")),
        ("authorization", format!("Bearer {API_KEY}x")),
    ] {
        assert_eq!(send(auth, None, body.clone()).await, 401);
    }

    let post = |path: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut request = http.post(format!("{base}{path}")).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let event = serde_json::to_vec(&json!({"field": "message", "event": "message.delivered",
        "payload": {"message_id": "m1", "updated_at": "2026-01-01T00:00:00Z"}}))
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let ts = now.to_string();
    let secret = WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
    let sent = |signature: String, ts: &str| {
        vec![
            ("x-webhook-id", "ep_1".to_owned()),
            ("x-webhook-timestamp", ts.to_owned()),
            ("x-webhook-signature", signature),
        ]
    };
    let stale = (now - 3600).to_string();
    for (headers, expected) in [
        (sent(sign(&secret, "ep_1", &ts, &event), &ts), 200),
        (sent(sign(&secret, "ep_1", &ts, b"{}"), &ts), 401),
        (sent(sign(&secret, "ep_1", &stale, &event), &stale), 401),
        (sent(WEBHOOK_SECRET.to_owned(), &ts), 401),
        (
            vec![("x-webhook-signature", sign_legacy(LEGACY_SECRET, &event))],
            200,
        ),
        (vec![("x-webhook-signature", LEGACY_SECRET.to_owned())], 401),
        (vec![], 401),
    ] {
        assert_eq!(
            post("/webhooks/sent", headers, event.clone()).await,
            expected
        );
    }
    let stripe = br#"{"id": "evt_1", "type": "invoice.paid"}"#.to_vec();
    for (signature, expected) in [
        (sign_stripe(STRIPE_SECRET, now, &stripe), 200),
        (sign_stripe(LEGACY_SECRET, now, &stripe), 401),
        (format!("t={now},v1={STRIPE_SECRET}"), 401),
    ] {
        assert_eq!(
            post(
                "/webhooks/stripe",
                vec![("stripe-signature", signature)],
                stripe.clone()
            )
            .await,
            expected
        );
    }
    let update = br#"{"update_id": 1, "message": {"text": "hi"}}"#.to_vec();
    for (token, expected) in [
        (TELEGRAM_TOKEN.to_owned(), 200),
        (format!("{TELEGRAM_TOKEN}x"), 401),
    ] {
        let headers = vec![("x-telegram-bot-api-secret-token", token)];
        assert_eq!(
            post("/webhooks/telegram", headers, update.clone()).await,
            expected
        );
    }
}

#[track_caller]
fn assert_clean(output: &str) {
    assert!(
        output.contains("gateway listening") && output.contains("webhook signature rejected"),
        "the scenarios are not in the output:\n{output}"
    );
    common::test_support::assert_no_secret("the gateway's output", output, &secrets());
}

#[tokio::test]
async fn no_secret_in_the_gateway_binarys_output_at_debug() {
    let output = run_gateway("debug", "pretty").await;
    // Debug lines are there (a stored webhook is logged at debug).
    assert!(
        output.contains("webhook stored"),
        "not at debug level:\n{output}"
    );
    assert_clean(&output);
}

/// Every crate at debug (hyper, sqlx, redis, ...), as JSON with span fields.
#[tokio::test]
async fn no_secret_in_the_gateway_binarys_output_with_every_crate_at_debug() {
    let output = run_gateway("debug,gateway=debug", "json").await;
    assert!(
        output.contains("webhook stored"),
        "not at debug level:\n{output}"
    );
    assert_clean(&output);
}
