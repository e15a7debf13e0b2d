//! Tenants kept apart, at the gateway: what the status page's data shows to
//! a tenant key and to an admin key; names shared by a bootstrap and a
//! managed key, refused by `gateway keys create` and at start-up; the
//! operator's commands `keys create --admin`, `keys secret`, `keys
//! rotate-secret` and `tenants purge`, run as the binary.

mod support;

use std::process::Output;
use std::time::Duration;

use common::config::{Config, Secret};
use common::domain::{EventSource, MessageStatus, Role};
use common::signature::WebhookSecret;
use common::signature::callback::derived_secret;
use common::store::{NewApiKey, StatusChange};
use serde_json::{Value, json};
use support::{API_KEY, OTHER_KEY, TestApp, send_body, split};

const ADMIN_KEY: &str = "admin-key-0123456789";
/// A signing key for the binary's runs (published in this file, so it is
/// in `config::PUBLISHED_SECRETS`).
const SIGNING_KEY: &str = "tests-callback-signing-key-0123456789abcdef";

/// tester and other are tenants; ops is an admin (the `:admin` marker).
async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let keys = format!("tester:{API_KEY},other:{OTHER_KEY},ops:{ADMIN_KEY}:admin");
    let mut vars = vec![("API_KEYS", keys.as_str())];
    vars.extend_from_slice(extra);
    TestApp::spawn(&vars).await
}

async fn send_as(app: &TestApp, key: &str) -> String {
    let (status, _, body) = split(
        app.http
            .post(app.url("/api/messages/send"))
            .bearer_auth(key)
            .json(&send_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["message_id"].as_str().unwrap().to_owned()
}

async fn fail(app: &TestApp, id: &str, code: &str) {
    let mut change = StatusChange::new(MessageStatus::Failed, EventSource::Sent);
    change.error_code = Some(code.to_owned());
    change.error = Some(format!("{code} happened"));
    assert!(
        app.state
            .store
            .change_status(id.parse().unwrap(), &change)
            .await
            .unwrap()
    );
}

async fn dashboard(app: &TestApp, key: Option<&str>) -> Value {
    let mut request = app.http.get(app.url("/dashboard/data"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let (status, _, body) = split(request.send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The failed messages a dashboard lists, and the error codes it counts.
fn failures(data: &Value) -> (Vec<String>, Vec<String>) {
    let ids = data["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message_id"].as_str().unwrap().to_owned())
        .collect();
    let codes = data["failure_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error_code"].as_str().unwrap().to_owned())
        .collect();
    (ids, codes)
}

fn managed(name: &str, key: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        key_hash: gateway::auth::hash_key(key).to_vec(),
        key_prefix: key[..8].into(),
        callback_secret: WebhookSecret::generate().to_whsec_string(),
        rate_limit: None,
    }
}

#[tokio::test]
async fn a_tenant_key_sees_its_own_messages_and_an_admin_key_every_clients() {
    let app = spawn(&[]).await;
    let mine = [send_as(&app, API_KEY).await, send_as(&app, API_KEY).await];
    let theirs = [
        send_as(&app, OTHER_KEY).await,
        send_as(&app, OTHER_KEY).await,
        send_as(&app, OTHER_KEY).await,
    ];
    fail(&app, &mine[0], "mine_failed").await;
    fail(&app, &theirs[0], "theirs_failed").await;

    // A tenant: its own messages, failures and reasons only.
    let data = dashboard(&app, Some(API_KEY)).await;
    assert_eq!(
        (data["client"].clone(), data["total"].clone()),
        (json!("tester"), json!(2))
    );
    assert_eq!(
        failures(&data),
        (vec![mine[0].clone()], vec!["mine_failed".to_owned()])
    );
    let created: i64 = data["throughput"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["created"].as_i64().unwrap())
        .sum();
    assert_eq!(created, 2);
    let data = dashboard(&app, Some(OTHER_KEY)).await;
    assert_eq!(
        (data["client"].clone(), data["total"].clone()),
        (json!("other"), json!(3))
    );
    assert_eq!(
        failures(&data),
        (vec![theirs[0].clone()], vec!["theirs_failed".to_owned()])
    );

    // An admin (the API_KEYS marker): everyone's.
    let data = dashboard(&app, Some(ADMIN_KEY)).await;
    assert_eq!(
        (data["client"].clone(), data["total"].clone()),
        (Value::Null, json!(5))
    );
    let (ids, mut codes) = failures(&data);
    codes.sort();
    assert_eq!(
        (ids.len(), codes),
        (
            2,
            vec!["mine_failed".to_owned(), "theirs_failed".to_owned()]
        )
    );

    // Managed keys: a tenant by default, an admin when created so.
    let store = &app.db.store;
    store
        .create_api_key(&managed("newcomer", "sgw_newcomer_key_01"))
        .await
        .unwrap();
    store
        .create_api_key_with_role(&managed("boss", "sgw_boss_key_000001"), Role::Admin)
        .await
        .unwrap();
    let data = dashboard(&app, Some("sgw_newcomer_key_01")).await;
    assert_eq!(
        (data["client"].clone(), data["total"].clone()),
        (json!("newcomer"), json!(0))
    );
    assert!(data["recent_failures"].as_array().unwrap().is_empty());
    let data = dashboard(&app, Some("sgw_boss_key_000001")).await;
    assert_eq!(
        (data["client"].clone(), data["total"].clone()),
        (Value::Null, json!(5))
    );

    // With DASHBOARD_PUBLIC, no key: everything, as the operator chose.
    let public = spawn(&[("DASHBOARD_PUBLIC", "true")]).await;
    send_as(&public, API_KEY).await;
    send_as(&public, OTHER_KEY).await;
    let data = dashboard(&public, None).await;
    assert_eq!(
        (data["client"].clone(), data["total"].clone()),
        (Value::Null, json!(2))
    );
}

/// The gateway binary with this test's database and Redis; what it exited
/// with and printed.
async fn gateway(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "testing")
        .env("LOG_LEVEL", "warn")
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", &app.redis.url)
        .env("REDIS_PREFIX", &app.redis.prefix)
        .env(
            "API_KEYS",
            format!("tester:{API_KEY},other:{OTHER_KEY},ops:{ADMIN_KEY}:admin"),
        )
        .env("GATEWAY_BIND", "127.0.0.1:0")
        .envs(env.iter().copied())
        // No .env of the working tree.
        .current_dir(std::env::temp_dir())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the gateway exits within 60 s")
        .expect("the gateway runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_managed_key_cannot_take_a_bootstrap_name_and_may_be_an_admin() {
    let app = spawn(&[]).await;
    let output = gateway(&app, &["keys", "create", "tester"], &[]).await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("'tester'") && stderr.contains("API_KEYS"),
        "{stderr}"
    );
    assert!(app.db.store.api_keys().await.unwrap().is_empty());

    let output = gateway(&app, &["keys", "create", "boss", "--admin"], &[]).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(stdout.contains("role:            admin"), "{stdout}");
    let output = gateway(&app, &["keys", "create", "shop"], &[]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let roles: Vec<(String, Role)> = app
        .db
        .store
        .api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.name, k.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("boss".to_owned(), Role::Admin),
            ("shop".to_owned(), Role::Tenant)
        ]
    );
    // The new admin key sees everything.
    send_as(&app, API_KEY).await;
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api key:"))
        .unwrap()
        .trim()
        .to_owned();
    let data = dashboard(&app, Some(&key)).await;
    assert_eq!(
        (data["client"].clone(), data["total"].clone()),
        (Value::Null, json!(1))
    );
}

#[tokio::test]
async fn start_up_refuses_a_bootstrap_name_that_is_a_managed_key() {
    let app = spawn(&[]).await;
    // Fine while the names differ.
    app.db
        .store
        .create_api_key(&managed("shop", "sgw_shop_key_000001"))
        .await
        .unwrap();
    assert!(app.db.store.revoke_api_key("shop").await.unwrap());
    let output = gateway(&app, &["keys", "list"], &[]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    // A bootstrap key named like the (even revoked) managed one: the
    // gateway does not serve.
    let keys = format!("tester:{API_KEY},shop:{OTHER_KEY}");
    let output = gateway(&app, &[], &[("API_KEYS", &keys)]).await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("API_KEYS") && stderr.contains("'shop'") && stderr.contains("api_keys"),
        "{stderr}"
    );
}

#[tokio::test]
async fn keys_secret_prints_the_current_secret_and_rotate_secret_replaces_it() {
    let app = spawn(&[]).await;
    let env = [("CALLBACK_SIGNING_KEY", SIGNING_KEY)];
    // A bootstrap key's: derived from CALLBACK_SIGNING_KEY and the name.
    let output = gateway(&app, &["keys", "secret", "tester"], &env).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let expected = derived_secret(&Secret::new(SIGNING_KEY), "tester").to_whsec_string();
    assert_eq!(text(&output.stdout), format!("{expected}\n"));
    // The API key plays no part: another name, another secret; the same
    // name under the default key, another.
    let output = gateway(&app, &["keys", "secret", "other"], &env).await;
    assert_ne!(text(&output.stdout).trim(), expected);
    let output = gateway(&app, &["keys", "secret", "tester"], &[]).await;
    assert_ne!(text(&output.stdout).trim(), expected);
    // During the legacy transition, stderr says so (no secret printed there).
    let output = gateway(
        &app,
        &["keys", "secret", "tester"],
        &[
            ("CALLBACK_SIGNING_KEY", SIGNING_KEY),
            ("CALLBACK_LEGACY_SECRET_UNTIL", "2999-01-01T00:00:00Z"),
        ],
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(text(&output.stdout), format!("{expected}\n"));
    assert!(
        stderr.contains("CALLBACK_LEGACY_SECRET_UNTIL") && !stderr.contains("whsec_"),
        "{stderr}"
    );
    // A bootstrap key's secret is not rotated by hand.
    let output = gateway(&app, &["keys", "rotate-secret", "tester"], &env).await;
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("CALLBACK_SIGNING_KEY_PREVIOUS"));

    // A managed key's: the stored one, until rotated.
    let output = gateway(&app, &["keys", "create", "shop"], &env).await;
    let created = text(&output.stdout);
    let first = created
        .lines()
        .find_map(|l| l.strip_prefix("callback secret:"))
        .unwrap()
        .trim()
        .to_owned();
    let output = gateway(&app, &["keys", "secret", "shop"], &env).await;
    assert_eq!(text(&output.stdout).trim(), first);
    let output = gateway(&app, &["keys", "rotate-secret", "shop"], &env).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = gateway(&app, &["keys", "secret", "shop"], &env).await;
    let second = text(&output.stdout).trim().to_owned();
    assert!(second.starts_with("whsec_") && second != first, "{second}");
    assert!(text(&output.stderr).contains("rotate-secret"));
    let stored = app
        .db
        .store
        .callback_secrets("shop")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.callback_secret, second);
    assert_eq!(
        stored.previous_callback_secret.as_deref(),
        Some(first.as_str())
    );
    let left = stored.previous_callback_secret_until.unwrap() - chrono::Utc::now();
    assert!(
        left > chrono::Duration::days(6) && left <= chrono::Duration::days(7),
        "{left}"
    );
    let output = gateway(&app, &["keys", "secret", "nobody"], &env).await;
    assert!(!output.status.success());
}

#[tokio::test]
async fn tenants_purge_deletes_one_clients_rows_and_says_how_many() {
    let app = spawn(&[("CALLBACK_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8")]).await;
    let post = |key: &'static str, idempotency: &'static str| {
        let mut body = send_body();
        body["callback_url"] = json!("http://127.0.0.1:9/hook");
        app.http
            .post(app.url("/api/messages/send"))
            .bearer_auth(key)
            .header("Idempotency-Key", idempotency)
            .json(&body)
            .send()
    };
    let mut ids = Vec::new();
    for (key, idempotency) in [(API_KEY, "a"), (API_KEY, "b"), (OTHER_KEY, "a")] {
        let (status, _, body) = split(post(key, idempotency).await.unwrap()).await;
        assert_eq!(status, 202, "{body}");
        let id = body["message_id"].as_str().unwrap().to_owned();
        fail(&app, &id, "gone").await; // an event and a callback each
        ids.push(id);
    }
    let counts = |client: &'static str| {
        let pool = app.db.store.pool().clone();
        async move {
            let row: (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM messages WHERE client = $1),
                        (SELECT count(*) FROM message_events e JOIN messages m ON m.id = e.message_id
                          WHERE m.client = $1),
                        (SELECT count(*) FROM status_callbacks WHERE client = $1),
                        (SELECT count(*) FROM idempotency_records WHERE client = $1)",
            )
            .bind(client)
            .fetch_one(&pool)
            .await
            .unwrap();
            row
        }
    };
    // queued + failed: two events a message.
    assert_eq!(counts("tester").await, (2, 4, 2, 2));
    assert_eq!(counts("other").await, (1, 2, 1, 1));

    let output = gateway(&app, &["tenants", "purge", "tester", "--dry-run"], &[]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("would delete"));
    assert_eq!(
        counts("tester").await,
        (2, 4, 2, 2),
        "a dry run deletes nothing"
    );

    let output = gateway(&app, &["tenants", "purge", "tester"], &[]).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed: Vec<(String, u64)> = stdout
        .lines()
        .skip(1)
        .map(|line| {
            let (what, count) = line.trim().rsplit_once(' ').unwrap();
            (what.trim().to_owned(), count.parse().unwrap())
        })
        .collect();
    let expected = [
        ("messages", 2),
        ("message events (timelines)", 4),
        ("status callbacks", 2),
        ("callback attempts", 0),
        ("idempotency records", 2),
        ("webhook events", 0),
    ]
    .map(|(what, n)| (what.to_owned(), n));
    assert_eq!(printed, expected, "{stdout}");
    // Its key is still active: the command says so.
    assert!(text(&output.stderr).contains("active key"));
    assert_eq!(counts("tester").await, (0, 0, 0, 0));
    assert_eq!(
        counts("other").await,
        (1, 2, 1, 1),
        "another tenant's rows stay"
    );
    let (status, _, _) = split(
        app.get(&format!("/api/messages/{}", ids[0]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = split(
        app.http
            .get(app.url(&format!("/api/messages/{}", ids[2])))
            .bearer_auth(OTHER_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

/// `Config` reads the marker once; the key ring gives the role to the client.
#[tokio::test]
async fn the_admin_marker_reaches_the_client() {
    let app = spawn(&[]).await;
    let config: &Config = &app.state.config;
    assert_eq!(config.api_keys[2].role, Role::Admin);
    let admin = app.state.keys.authenticate(ADMIN_KEY).await.unwrap();
    let tenant = app.state.keys.authenticate(API_KEY).await.unwrap();
    assert_eq!((admin.role, admin.dashboard_scope()), (Role::Admin, None));
    assert_eq!(
        (tenant.role, tenant.dashboard_scope()),
        (Role::Tenant, Some("tester"))
    );
}
