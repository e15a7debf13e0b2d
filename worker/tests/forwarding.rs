//! Forwarding of verified Stripe and Telegram events (issue 15): a Stripe
//! event signed with Stripe's scheme and Telegram updates, POSTed to the real
//! gateway, reach local receivers byte for byte, signed by the Standard
//! Webhooks scheme (checked by the `standardwebhooks` Python library when it
//! can be installed, and by HMAC written out here in any case), Telegram's in
//! `update_id` order; a dead update does not block later ones and is
//! re-driven; a slow destination does not hold up another; and a worker
//! SIGKILLed mid-delivery, with the receiver down for a while first, loses
//! nothing (each `webhook-id` counted once).

mod inbox_support;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use common::signature::sign_stripe;
use common::test_support::free_port;
use hmac::{Hmac, Mac};
use inbox_support::*;
use serde_json::{Value, json};
use sha2::Sha256;

/// Stripe's endpoint secret (the HMAC key as is, Stripe's scheme).
const STRIPE_SECRET: &str = "whsec_stripe_test_secret";
const TELEGRAM_TOKEN: &str = "tg_Secret-123";
/// The destinations' Standard Webhooks secrets, one each.
const STRIPE_FORWARD_SECRET: &str = SENT_SECRET;
const TELEGRAM_FORWARD_SECRET: &str = "whsec_Z3dsb2dzLWNhbGxiYWNrLXNlY3JldC0wMQ==";

/// How the receiver answers one request (its body), given how many times
/// that body was seen before.
type Plan = Box<dyn Fn(&[u8], usize) -> u16 + Send>;

/// A destination: records every request, answers from its plan, optionally
/// slowly.
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    plan: Arc<Mutex<Plan>>,
    delay: Arc<Mutex<Duration>>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            seen: Arc::default(),
            plan: Arc::new(Mutex::new(Box::new(|_, _| 200))),
            delay: Arc::default(),
        }
    }

    /// Listens on `port` (0: any); returns the URL.
    async fn start(&self, port: u16) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn plan(&self, plan: impl Fn(&[u8], usize) -> u16 + Send + 'static) {
        *self.plan.lock().unwrap() = Box::new(plan);
    }

    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<(HeaderMap, Bytes)> {
        eventually(&format!("{count} forwarded requests"), || async {
            let requests = self.requests();
            (requests.len() >= count).then_some(requests)
        })
        .await
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let before = {
        let mut seen = receiver.seen.lock().unwrap();
        let before = seen.iter().filter(|(_, b)| *b == body).count();
        seen.push((headers, body.clone()));
        before
    };
    let delay = *receiver.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let code = (receiver.plan.lock().unwrap())(&body, before);
    StatusCode::from_u16(code).unwrap()
}

fn update_id(body: &[u8]) -> i64 {
    serde_json::from_slice::<Value>(body).unwrap()["update_id"]
        .as_i64()
        .unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

/// Standard Webhooks verification, written out: HMAC-SHA256 over
/// `id.timestamp.body` with the secret's base64-decoded key.
fn verify_standard_webhooks(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let (id, timestamp) = (
        header(headers, "webhook-id"),
        header(headers, "webhook-timestamp"),
    );
    let signed_at: i64 = timestamp.parse().unwrap();
    assert!((Utc::now().timestamp() - signed_at).abs() < 300);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let signature = header(headers, "webhook-signature");
    assert!(
        signature.split(' ').any(|s| s == expected),
        "{signature} is not {expected}"
    );
}

/// The `standardwebhooks` Python package in a venv under target/ (made on
/// first use, as scripts/sdk-check.sh does for the SDK); `None` when it
/// cannot be installed (offline), and then only our own check runs.
fn python_verifier() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join("target/swh-venv");
    let python = venv.join("bin/python");
    let has = |python: &PathBuf| {
        std::process::Command::new(python)
            .args(["-c", "import standardwebhooks"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let made = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "standardwebhooks==1.1.0",
                ])
                .status()
                .is_ok_and(|s| s.success());
        if !made || !has(&python) {
            eprintln!("standardwebhooks is not installable here: our own verifier only");
            return None;
        }
    }
    Some(python)
}

/// Verifies each request with `standardwebhooks.Webhook(secret).verify`.
fn verify_with_python(python: &PathBuf, secret: &str, requests: &[(HeaderMap, Bytes)]) {
    let cases: Vec<Value> = requests
        .iter()
        .map(|(headers, body)| {
            json!({"body": STANDARD.encode(body), "headers": {
                "webhook-id": header(headers, "webhook-id"),
                "webhook-timestamp": header(headers, "webhook-timestamp"),
                "webhook-signature": header(headers, "webhook-signature")}})
        })
        .collect();
    let script = "import base64, json, sys\n\
        from standardwebhooks.webhooks import Webhook\n\
        secret, cases = sys.argv[1], json.load(sys.stdin)\n\
        for case in cases:\n    Webhook(secret).verify(base64.b64decode(case['body']), case['headers'])\n\
        print(len(cases))\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&cases).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "standardwebhooks refused a signature: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        requests.len().to_string()
    );
}

/// The stack's variables for forwarding to these URLs, fast retries.
fn forward_vars(stripe_url: &str, telegram_url: &str) -> Vec<(String, String)> {
    [
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("TELEGRAM_WEBHOOK_SECRET_TOKEN", TELEGRAM_TOKEN),
        ("FORWARD_STRIPE_URL", stripe_url),
        ("FORWARD_STRIPE_SECRET", STRIPE_FORWARD_SECRET),
        ("FORWARD_TELEGRAM_URL", telegram_url),
        ("FORWARD_TELEGRAM_SECRET", TELEGRAM_FORWARD_SECRET),
        ("FORWARD_ALLOW_PRIVATE_NETWORKS", LOOPBACK),
        ("FORWARD_BACKOFF_BASE_MS", "20"),
        ("FORWARD_BACKOFF_MAX_SECS", "1"),
        ("FORWARD_POLL_INTERVAL_MS", "200"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn start_stack(vars: &[(String, String)]) -> Stack {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Stack::start(&vars).await
}

fn start_forwarding(stack: &Stack) {
    tokio::spawn(worker::forward::run(
        stack.store().clone(),
        stack.config.clone(),
        stack.shutdown.clone(),
    ));
}

/// POSTs a Stripe event signed with Stripe's scheme; returns the body and
/// its `Stripe-Signature`.
async fn post_stripe(stack: &Stack, id: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({"id": id, "object": "event", "type": "invoice.paid",
        "data": {"object": {"id": format!("in_{id}"), "amount_paid": 1200}}}))
    .unwrap();
    let signature = sign_stripe(STRIPE_SECRET, Utc::now().timestamp(), &body);
    let status = stack
        .http
        .post(format!("{}/webhooks/stripe", stack.base))
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", &signature)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    (body, signature)
}

/// POSTs a Telegram update with the bot's secret token; returns the body.
async fn post_telegram(stack: &Stack, update_id: i64) -> Vec<u8> {
    // Spacing as Telegram's own: the bytes must arrive exactly so.
    let body = format!(
        "{{\"update_id\":{update_id},\n\"message\":{{\"message_id\":{update_id},\"chat\":{{\"id\":42,\"type\":\"private\"}},\"date\":1765000000,\"text\":\"hi {update_id}\"}}}}"
    )
    .into_bytes();
    let status = stack
        .http
        .post(format!("{}/webhooks/telegram", stack.base))
        .header("content-type", "application/json")
        .header("x-telegram-bot-api-secret-token", TELEGRAM_TOKEN)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn stripe_and_telegram_events_reach_their_receivers_signed_byte_for_byte_and_in_order() {
    let (stripe, telegram) = (Receiver::new(), Receiver::new());
    let (stripe_url, telegram_url) = (stripe.start(0).await, telegram.start(0).await);
    // Update 101 fails once: 102 must wait for its retry.
    telegram.plan(|body, before| {
        if update_id(body) == 101 && before == 0 {
            500
        } else {
            200
        }
    });
    let stack = start_stack(&forward_vars(&stripe_url, &telegram_url)).await;

    let mut sent_stripe = Vec::new();
    for id in ["evt_1", "evt_2", "evt_3"] {
        sent_stripe.push(post_stripe(&stack, id).await);
    }
    let mut sent_telegram = Vec::new();
    for update in 100..=105 {
        sent_telegram.push(post_telegram(&stack, update).await);
    }
    stack.start_inbox();
    start_forwarding(&stack);

    let telegram_requests = telegram.wait_for(7).await;
    let order: Vec<i64> = telegram_requests
        .iter()
        .map(|(_, b)| update_id(b))
        .collect();
    assert_eq!(order, [100, 101, 101, 102, 103, 104, 105]);
    // The retry of 101 is the same delivery.
    assert_eq!(
        header(&telegram_requests[1].0, "webhook-id"),
        header(&telegram_requests[2].0, "webhook-id")
    );
    let delivered: Vec<Vec<u8>> = telegram_requests
        .iter()
        .skip(2)
        .map(|(_, b)| b.to_vec())
        .collect();
    assert_eq!(
        [vec![sent_telegram[0].clone()], delivered].concat(),
        sent_telegram
    );
    for (headers, body) in &telegram_requests {
        verify_standard_webhooks(TELEGRAM_FORWARD_SECRET, headers, body);
        assert!(headers.get("x-telegram-bot-api-secret-token").is_none());
        assert!(headers.get("stripe-signature").is_none());
        assert_eq!(header(headers, "content-type"), "application/json");
    }

    let stripe_requests = stripe.wait_for(3).await;
    assert_eq!(stripe_requests.len(), 3);
    for (headers, body) in &stripe_requests {
        verify_standard_webhooks(STRIPE_FORWARD_SECRET, headers, body);
        let (_, signature) = sent_stripe
            .iter()
            .find(|(sent, _)| sent.as_slice() == body.as_ref())
            .expect("a body we sent, byte for byte");
        assert_eq!(header(headers, "stripe-signature"), signature);
        assert_eq!(
            header(headers, "content-type"),
            "application/json; charset=utf-8"
        );
    }
    let ids: HashSet<&str> = stripe_requests
        .iter()
        .map(|(h, _)| header(h, "webhook-id"))
        .collect();
    assert_eq!(ids.len(), 3);

    if let Some(python) = python_verifier() {
        verify_with_python(&python, TELEGRAM_FORWARD_SECRET, &telegram_requests);
        verify_with_python(&python, STRIPE_FORWARD_SECRET, &stripe_requests);
    }

    // Every attempt is recorded; the inbox events are processed.
    let forwards = eventually("every forward delivered", || async {
        let all = stack.store().forwards(None).await.unwrap();
        all.iter().all(|f| f.state == "delivered").then_some(all)
    })
    .await;
    assert_eq!(forwards.len(), 9);
    let failed_once = forwards.iter().find(|f| f.order_key == Some(101)).unwrap();
    let attempts = stack
        .store()
        .forward_attempts(failed_once.id)
        .await
        .unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(),
        [Some(500), Some(200)]
    );
    for event in stack.store().inbox_events(Some("telegram")).await.unwrap() {
        assert_eq!(event.state, "processed");
    }
}

#[tokio::test]
async fn a_dead_update_does_not_block_later_ones_and_is_redriven() {
    let (stripe, telegram) = (Receiver::new(), Receiver::new());
    let (stripe_url, telegram_url) = (stripe.start(0).await, telegram.start(0).await);
    let accept_201 = Arc::new(Mutex::new(false));
    {
        let accept_201 = accept_201.clone();
        telegram.plan(move |body, _| {
            if update_id(body) == 201 && !*accept_201.lock().unwrap() {
                503
            } else {
                200
            }
        });
    }
    let mut vars = forward_vars(&stripe_url, &telegram_url);
    vars.push(("FORWARD_MAX_ATTEMPTS".into(), "2".into()));
    let stack = start_stack(&vars).await;
    for update in 200..=202 {
        post_telegram(&stack, update).await;
    }
    stack.start_inbox();
    start_forwarding(&stack);

    let requests = telegram.wait_for(4).await;
    let order: Vec<i64> = requests.iter().map(|(_, b)| update_id(b)).collect();
    assert_eq!(order, [200, 201, 201, 202]);
    let dead = eventually("201 dead", || async {
        let all = stack.store().forwards(Some("telegram")).await.unwrap();
        all.into_iter()
            .find(|f| f.order_key == Some(201) && f.state == "dead")
    })
    .await;
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.last_status_code, Some(503));
    // Once 202's delivery is recorded: one dead, nothing pending.
    eventually("202 delivered, 201 dead", || async {
        let backlog = stack.store().forward_backlogs().await.unwrap();
        (backlog.len() == 1 && (backlog[0].dead, backlog[0].pending) == (1, 0)).then_some(())
    })
    .await;

    *accept_201.lock().unwrap() = true;
    assert_eq!(
        stack.store().redrive_forwards(None).await.unwrap(),
        [dead.id]
    );
    let requests = telegram.wait_for(5).await;
    assert_eq!(update_id(&requests[4].1), 201);
    assert_eq!(
        header(&requests[4].0, "webhook-id"),
        header(&requests[1].0, "webhook-id")
    );
    eventually("201 delivered after the re-drive", || async {
        let all = stack.store().forwards(Some("telegram")).await.unwrap();
        all.iter().all(|f| f.state == "delivered").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_hanging_destination_does_not_hold_up_another() {
    let (stripe, telegram) = (Receiver::new(), Receiver::new());
    let (stripe_url, telegram_url) = (stripe.start(0).await, telegram.start(0).await);
    *telegram.delay.lock().unwrap() = Duration::from_secs(20);
    let mut vars = forward_vars(&stripe_url, &telegram_url);
    vars.push(("FORWARD_TIMEOUT_SECS".into(), "30".into()));
    let stack = start_stack(&vars).await;
    for update in 300..=302 {
        post_telegram(&stack, update).await;
    }
    stack.start_inbox();
    start_forwarding(&stack);
    telegram.wait_for(1).await;
    for i in 0..5 {
        post_stripe(&stack, &format!("evt_hang_{i}")).await;
    }
    // All of Stripe's arrive while Telegram's first is still held.
    stripe.wait_for(5).await;
    assert_eq!(telegram.requests().len(), 1);
}

/// The worker binary, with the stack's database and Redis and these
/// variables; its log file is returned with it.
fn spawn_worker(stack: &Stack, vars: &[(String, String)]) -> (tokio::process::Child, PathBuf) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    command
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "testing")
        .env("LOG_LEVEL", "info")
        .env("DATABASE_URL", &stack.db.url)
        .env("DATABASE_MAX_CONNECTIONS", "8")
        .env("REDIS_URL", &stack.redis.url)
        .env("REDIS_PREFIX", &stack.redis.prefix)
        .env("API_KEYS", format!("{CLIENT}:{API_KEY}"))
        .env("INBOX_POLL_INTERVAL_MS", "200")
        .envs(vars.iter().map(|(k, v)| (k, v)));
    common::test_support::spawn_logging(&mut command, "worker-forwarding")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_and_a_receiver_down_for_a_while_lose_nothing() {
    let port = free_port();
    let stripe = Receiver::new();
    let stripe_url = stripe.start(0).await;
    let telegram_url = format!("http://127.0.0.1:{port}/hook");
    let mut vars = forward_vars(&stripe_url, &telegram_url);
    vars.extend(
        [
            ("FORWARD_TIMEOUT_SECS", "5"),
            ("FORWARD_LEASE_SECS", "6"),
            ("FORWARD_BACKOFF_BASE_MS", "100"),
            ("FORWARD_MAX_ATTEMPTS", "1000"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let stack = start_stack(&vars).await;
    let mut sent = Vec::new();
    for update in 400..=404 {
        sent.push(post_telegram(&stack, update).await);
    }
    let (mut first, first_log) = spawn_worker(&stack, &vars);

    // The receiver is down: the head update fails, and is retried.
    eventually(
        "three failed attempts while the receiver is down",
        || async {
            let forwards = stack.store().forwards(Some("telegram")).await.unwrap();
            let head = forwards.iter().find(|f| f.order_key == Some(400))?;
            let attempts = stack.store().forward_attempts(head.id).await.unwrap();
            (attempts.len() >= 3).then_some(())
        },
    )
    .await;
    let head = stack.store().forwards(Some("telegram")).await.unwrap()[0].clone();
    let errors = stack.store().forward_attempts(head.id).await.unwrap();
    assert!(
        errors[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("connection failed")),
        "{errors:?}"
    );

    // Up again, holding each request for 3 s: the worker dies while 400 is held.
    let telegram = Receiver::new();
    *telegram.delay.lock().unwrap() = Duration::from_secs(3);
    telegram.start(port).await;
    telegram.wait_for(1).await;
    first.kill().await.unwrap(); // SIGKILL
    *telegram.delay.lock().unwrap() = Duration::ZERO;

    let (mut second, second_log) = spawn_worker(&stack, &vars);
    let delivered = eventually("every update delivered", || async {
        let all = stack.store().forwards(Some("telegram")).await.unwrap();
        (all.len() == 5 && all.iter().all(|f| f.state == "delivered")).then_some(all)
    })
    .await;
    second.kill().await.unwrap();
    let requests = telegram.requests();

    // Counted once per webhook-id: five deliveries, whatever the repeats.
    let mut by_id: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (headers, body) in &requests {
        verify_standard_webhooks(TELEGRAM_FORWARD_SECRET, headers, body);
        by_id
            .entry(header(headers, "webhook-id").to_owned())
            .or_default()
            .push(body.to_vec());
    }
    assert_eq!(
        by_id.len(),
        5,
        "first worker:\n{}\nsecond worker:\n{}",
        std::fs::read_to_string(&first_log).unwrap_or_default(),
        std::fs::read_to_string(&second_log).unwrap_or_default()
    );
    for bodies in by_id.values() {
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "one body per webhook-id"
        );
    }
    // The request the kill interrupted went out again, under the same id.
    let first_id = header(&requests[0].0, "webhook-id");
    assert!(by_id[first_id].len() >= 2, "{:?}", by_id.keys());
    // In update_id order, first appearances and bytes alike.
    let mut firsts = Vec::new();
    for (_, body) in &requests {
        if !firsts.contains(&body.to_vec()) {
            firsts.push(body.to_vec());
        }
    }
    assert_eq!(firsts, sent);
    assert_eq!(delivered.len(), 5);
}
