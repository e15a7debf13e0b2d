//! The built-in status page, rendered by a real headless Chromium (Debian's
//! `chromium` package; `scripts/test.sh` installs it). The test fails, not
//! skips, when Chromium is missing. Set `DASHBOARD_SCREENSHOT=/tmp/x.png` to
//! also save screenshots of the page (and of its key prompt, `x-key.png`).

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::domain::{EventSource, MessageStatus};
use common::store::StatusChange;
use serde_json::{Value, json};
use support::{TestApp, split};

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return path.into();
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!(
        "Chromium is needed for the status page test and was not found: \
         `apt-get install -y chromium` (scripts/test.sh does), or set CHROMIUM"
    );
}

struct Rendered {
    dom: String,
    /// Chromium's log, where the console and CSP violations go.
    log: String,
}

/// Loads `url` in headless Chromium, lets its scripts run, and returns the DOM.
async fn render(url: &str, extra: &[String]) -> Rendered {
    let profile = std::env::temp_dir().join(format!("gw-chromium-{}", ulid::Ulid::generate()));
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("Chromium finished within 90 s")
        .expect("Chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "Chromium failed: {log}");
    Rendered {
        dom: String::from_utf8_lossy(&output.stdout).into_owned(),
        log,
    }
}

/// The text of the first element after `marker` that has `class="{class}"`.
fn text_after(dom: &str, marker: &str, class: &str) -> String {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the page:\n{dom}"));
    let rest = &dom[start..];
    let open = format!("class=\"{class}\">");
    let at = rest
        .find(&open)
        .unwrap_or_else(|| panic!("no .{class} after {marker}"))
        + open.len();
    rest[at..].split('<').next().unwrap().to_owned()
}

/// The text of the element with this id.
fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("#{id} not in the page"));
    let rest = &dom[start..];
    rest[rest.find('>').unwrap() + 1..]
        .split('<')
        .next()
        .unwrap()
        .to_owned()
}

/// The opening tag of the element with this id.
fn tag_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let start = dom.find(&marker).unwrap();
    let open = dom[..start].rfind('<').unwrap();
    &dom[open..start + dom[start..].find('>').unwrap()]
}

async fn send(app: &TestApp) -> String {
    let (status, _, body) = app
        .post_json("/api/messages/send", &support::send_body())
        .await;
    assert_eq!(status, 202, "{body}");
    body["message_id"].as_str().unwrap().to_owned()
}

async fn change(
    app: &TestApp,
    id: &str,
    status: MessageStatus,
    at: DateTime<Utc>,
    error: Option<(&str, &str)>,
) {
    let mut change = StatusChange::new(status, EventSource::Sent);
    change.at = at;
    if let Some((code, text)) = error {
        change.error_code = Some(code.to_owned());
        change.error = Some(text.to_owned());
    }
    assert!(
        app.state
            .store
            .change_status(id.parse().unwrap(), &change)
            .await
            .unwrap()
    );
}

/// Six messages: queued, sent, two delivered (6 s and 4 s after Sent took
/// them), one failed and, newest, one blocked.
async fn seed(app: &TestApp) -> (String, String) {
    let now = Utc::now() - chrono::Duration::seconds(1);
    let secs = chrono::Duration::seconds;
    let _queued = send(app).await;
    let sent = send(app).await;
    change(app, &sent, MessageStatus::Accepted, now - secs(3), None).await;
    change(app, &sent, MessageStatus::Sent, now - secs(2), None).await;
    for latency in [6, 4] {
        let id = send(app).await;
        change(app, &id, MessageStatus::Accepted, now - secs(latency), None).await;
        change(app, &id, MessageStatus::Delivered, now, None).await;
    }
    let failed = send(app).await;
    let reason = ("invalid_number", "Number is not reachable");
    change(
        app,
        &failed,
        MessageStatus::Failed,
        now - secs(30),
        Some(reason),
    )
    .await;
    let blocked = send(app).await;
    let reason = ("carrier_blocked", "<b>Blocked</b> by the carrier");
    change(
        app,
        &blocked,
        MessageStatus::Blocked,
        now - secs(5),
        Some(reason),
    )
    .await;
    // As if they had been created a little earlier, before Sent took them.
    sqlx::query("UPDATE messages SET created_at = created_at - interval '40 seconds'")
        .execute(app.state.store.pool())
        .await
        .unwrap();
    (failed, blocked)
}

/// Forwards of Stripe events in every state, by SQL: in the last 24 hours
/// two delivered, one pending, one failing (pending, its attempt failed, 150
/// s old: the oldest undelivered) and one dead; older, one delivered and one
/// dead. So stripe/stripe: received 5, forwarded 2, pending 2, failing 1,
/// dead 2.
async fn seed_forwards(app: &TestApp) {
    sqlx::query(
        "WITH seeded (n, state, age, attempts, last_error) AS (
           VALUES (1, 'delivered', interval '1 hour', 1, NULL),
                  (2, 'delivered', interval '23 hours', 2, NULL),
                  (3, 'delivered', interval '30 hours', 1, NULL),
                  (4, 'pending', interval '10 seconds', 0, NULL),
                  (5, 'pending', interval '150 seconds', 2, 'HTTP 503'),
                  (6, 'dead', interval '2 hours', 8, 'HTTP 500'),
                  (7, 'dead', interval '48 hours', 8, 'HTTP 500')
         ), inbox AS (
           INSERT INTO webhook_inbox (provider, event_id, body, state, received_at, processed_at)
           SELECT 'stripe', 'evt_dash_' || n, convert_to(json_build_object('id', 'evt_dash_' || n)::text, 'UTF8'),
                  'processed', now() - age, now() - age FROM seeded
           RETURNING id, event_id
         )
         INSERT INTO webhook_forwards (inbox_id, source, destination, webhook_id, state, attempts,
                                       last_error, created_at, completed_at)
         SELECT i.id, 'stripe', 'stripe', 'fwd_' || i.id || '_stripe', s.state, s.attempts, s.last_error,
                now() - s.age, CASE WHEN s.state <> 'pending' THEN now() - s.age END
           FROM seeded s JOIN inbox i ON i.event_id = 'evt_dash_' || s.n",
    )
    .execute(app.state.store.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn the_status_page_shows_the_numbers_in_a_real_browser() {
    let app = TestApp::spawn(&[("DASHBOARD_PUBLIC", "true")]).await;
    let (failed, blocked) = seed(&app).await;
    seed_forwards(&app).await;

    let rendered = render(&app.url("/dashboard"), &["--dump-dom".to_owned()]).await;
    let dom = &rendered.dom;

    // Rendered by the script: the content is shown, the key form is not.
    assert!(!tag_of(dom, "content").contains("hidden"), "{dom}");
    assert!(tag_of(dom, "key-form").contains("hidden"));
    assert!(tag_of(dom, "error").contains("hidden"), "{dom}");
    assert_eq!(text_of(dom, "scope"), "All clients");
    assert_eq!(text_of(dom, "total"), "6");
    for (status, count) in [
        ("queued", "1"),
        ("scheduled", "0"),
        ("sending", "0"),
        ("accepted", "0"),
        ("sent", "1"),
        ("delivered", "2"),
        ("read", "0"),
        ("failed", "1"),
        ("blocked", "1"),
        ("filtered", "0"),
        ("cancelled", "0"),
    ] {
        let card = format!("data-status=\"{status}\"");
        assert_eq!(text_after(dom, &card, "count"), count, "{status}");
    }
    // The last hour: 6 created, 3 accepted by Sent, 2 delivered, 2 failed.
    for (series, total) in [
        ("created", "6"),
        ("accepted", "3"),
        ("delivered", "2"),
        ("failed", "2"),
    ] {
        let item = format!("data-series=\"{series}\"");
        assert_eq!(text_after(dom, &item, "value"), total, "{series}");
    }
    assert_eq!(dom.matches("<polyline").count(), 4);
    // Latencies 6 s and 4 s: p50 5 s, p90 5.8 s, p99 5.98 s.
    assert_eq!(text_of(dom, "latency-delivered"), "2");
    assert_eq!(text_of(dom, "latency-p50"), "5.0 s");
    assert_eq!(text_of(dom, "latency-p90"), "5.8 s");
    assert_eq!(text_of(dom, "latency-p99"), "6.0 s");
    // Failure reasons, and the newest failure first, its error as text.
    assert!(dom.contains("data-error-code=\"invalid_number\""));
    assert!(dom.contains("data-error-code=\"carrier_blocked\""));
    let newest = dom
        .find(&format!("data-message-id=\"{blocked}\""))
        .expect("the newest failure is listed");
    let older = dom
        .find(&format!("data-message-id=\"{failed}\""))
        .expect("the older failure is listed");
    assert!(newest < older, "newest failure first");
    assert!(dom.contains("&lt;b&gt;Blocked&lt;/b&gt; by the carrier"));
    assert!(!dom.contains("<b>Blocked</b>"));
    // Forwarding, in every client's view.
    assert!(!tag_of(dom, "forwarding-panel").contains("hidden"), "{dom}");
    let stripe = "data-forward=\"stripe/stripe\"";
    for (class, value) in [
        ("num received", "5"),
        ("num forwarded", "2"),
        ("num pending", "2"),
        ("num failing", "1"),
        ("num dead", "2"),
    ] {
        assert_eq!(text_after(dom, stripe, class), value, "{class}");
    }
    let oldest = text_after(dom, stripe, "num oldest");
    assert!(oldest.ends_with(" min"), "150 s and more: {oldest}");
    // Nothing was refused by the Content-Security-Policy, no script error.
    assert!(
        !rendered.log.contains("Content Security Policy") && !rendered.log.contains("Uncaught"),
        "{}",
        rendered.log
    );

    if let Ok(path) = std::env::var("DASHBOARD_SCREENSHOT") {
        let extra = [
            format!("--screenshot={path}"),
            "--window-size=1280,900".to_owned(),
            "--hide-scrollbars".to_owned(),
        ];
        render(&app.url("/dashboard"), &extra).await;
        assert!(std::fs::metadata(&path).is_ok_and(|m| m.len() > 0));
    }
}

#[tokio::test]
async fn without_dashboard_public_the_page_asks_for_a_key() {
    let app = TestApp::spawn(&[]).await;
    let rendered = render(&app.url("/dashboard"), &["--dump-dom".to_owned()]).await;
    let dom = &rendered.dom;
    assert!(!tag_of(dom, "key-form").contains("hidden"), "{dom}");
    assert!(tag_of(dom, "content").contains("hidden"));
    assert!(!dom.contains("data-status="), "no numbers without a key");
    if let Ok(path) = std::env::var("DASHBOARD_SCREENSHOT") {
        let path = path.replace(".png", "-key.png");
        let extra = [
            format!("--screenshot={path}"),
            "--window-size=1280,500".to_owned(),
        ];
        render(&app.url("/dashboard"), &extra).await;
    }
}

/// The key prompt, driven in the browser over the DevTools protocol: a wrong
/// key is refused, a right one is kept in sessionStorage and shows the numbers.
#[tokio::test]
async fn the_page_takes_a_key_and_keeps_it_for_the_tab() {
    let app = TestApp::spawn(&[]).await;
    send(&app).await;
    send(&app).await;
    let mut browser = Browser::launch(&app.url("/dashboard")).await;
    let script = r#"(async () => {
        const $ = (id) => document.getElementById(id);
        const until = async (test) => {
            for (let i = 0; i < 200; i++) {
                if (test()) return true;
                await new Promise((resolve) => setTimeout(resolve, 50));
            }
            return false;
        };
        if (!await until(() => $("key-form") && !$("key-form").hidden)) return {step: "no key prompt"};
        $("key").value = "wrong-key";
        $("key-form").requestSubmit();
        if (!await until(() => !$("key-error").hidden)) return {step: "wrong key not refused"};
        const refused = $("key-error").textContent;
        $("key").value = "KEY";
        $("key-form").requestSubmit();
        if (!await until(() => !$("content").hidden)) return {step: "no numbers", text: document.body.innerText};
        return {
            step: "done", refused, total: $("total").textContent, scope: $("scope").textContent,
            queued: document.querySelector('[data-status="queued"] .count').textContent,
            stored: sessionStorage.getItem("sent-gateway.api-key"), forget: !$("forget").hidden,
            prompt: !$("key-form").hidden, forwarding: !$("forwarding-panel").hidden,
        };
    })()"#
        .replace("KEY", support::API_KEY);
    let result = browser.evaluate(&script).await;
    assert_eq!(
        result,
        json!({"step": "done", "refused": "That key was refused.", "total": "2", "queued": "2",
               "scope": "Messages of tester", "stored": support::API_KEY, "forget": true,
               "prompt": false, "forwarding": false}),
    );
    // "Forget key" drops it and asks again.
    let result = browser
        .evaluate(
            r#"(async () => {
                document.getElementById("forget").click();
                for (let i = 0; i < 200 && document.getElementById("key-form").hidden; i++) {
                    await new Promise((resolve) => setTimeout(resolve, 50));
                }
                return {prompt: !document.getElementById("key-form").hidden,
                        stored: sessionStorage.getItem("sent-gateway.api-key")};
            })()"#,
        )
        .await;
    assert_eq!(result, json!({"prompt": true, "stored": null}));
}

#[tokio::test]
async fn the_data_needs_a_key_unless_public() {
    let app = TestApp::spawn(&[]).await;
    send(&app).await;
    let (status, _, body) = split(
        app.http
            .get(app.url("/dashboard/data"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body["code"]), (401, &json!("unauthorized")));
    let (status, _, _) = split(
        app.http
            .get(app.url("/dashboard/data"))
            .bearer_auth("wrong-key")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    // A tenant key sees its own messages: none for "other", whose key
    // sent nothing (tests/tenants.rs has the admin's view).
    let (status, headers, body) = split(
        app.http
            .get(app.url("/dashboard/data"))
            .header("x-api-key", support::OTHER_KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(
        (&body["client"], &body["total"]),
        (&json!("other"), &json!(0))
    );
    let (_, _, body) = split(app.get("/dashboard/data").send().await.unwrap()).await;
    assert_eq!(
        (&body["client"], &body["total"]),
        (&json!("tester"), &json!(1))
    );
    assert_eq!(body["throughput"].as_array().unwrap().len(), 60);
    assert_eq!(body["statuses"].as_array().unwrap().len(), 11);
    assert_eq!(body["latency"]["p50_seconds"], Value::Null);

    let public = TestApp::spawn(&[("DASHBOARD_PUBLIC", "true")]).await;
    let (status, _, body) = split(
        public
            .http
            .get(public.url("/dashboard/data"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body["total"]), (200, &json!(0)));
    assert_eq!(
        body["client"],
        Value::Null,
        "every client's, as the operator chose"
    );
    // The rest of the API still needs a key.
    let response = public
        .http
        .get(public.url("/api/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

const ADMIN_KEY: &str = "admin-key-0123456789";

/// Forwarding is the operator's: an admin key's data has it, counted per
/// source and destination (a configured destination with no forward yet
/// shows zeros); a tenant key's data has no `forwarding` at all.
#[tokio::test]
async fn forwarding_is_counted_for_admin_keys_only() {
    let api_keys = format!("ops:{ADMIN_KEY}:admin,tester:{}", support::API_KEY);
    let app = TestApp::spawn(&[
        ("API_KEYS", api_keys.as_str()),
        ("FORWARD_TELEGRAM_URL", "https://bot.example/updates"),
        (
            "FORWARD_TELEGRAM_SECRET",
            "whsec_Z3dsb2dzLWNhbGxiYWNrLXNlY3JldC0wMQ==",
        ),
    ])
    .await;
    seed_forwards(&app).await;
    let data = |key: &'static str| {
        let request = app.http.get(app.url("/dashboard/data")).bearer_auth(key);
        async move {
            let (status, _, body) = split(request.send().await.unwrap()).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };

    let admin = data(ADMIN_KEY).await;
    let mut rows = admin["forwarding"].as_array().expect("forwarding").clone();
    let oldest = rows[0]["oldest_pending_seconds"].take().as_f64().unwrap();
    assert!((150.0..200.0).contains(&oldest), "{oldest}");
    assert_eq!(
        rows,
        [
            json!({"source": "stripe", "destination": "stripe", "received_24h": 5, "forwarded_24h": 2,
                   "pending": 2, "failing": 1, "dead": 2, "oldest_pending_seconds": null}),
            json!({"source": "telegram", "destination": "telegram", "received_24h": 0,
                   "forwarded_24h": 0, "pending": 0, "failing": 0, "dead": 0,
                   "oldest_pending_seconds": 0.0}),
        ]
    );
    // The view Grafana reads, as the read-only dashboard role, says the same.
    let mut tx = app.state.store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE dashboard_reader")
        .execute(&mut *tx)
        .await
        .unwrap();
    let view: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT destination, received_24h, forwarded_24h, pending, failing, dead FROM forwarding_summary",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(view, [("stripe".to_owned(), 5, 2, 2, 1, 2)]);

    let tenant = data(support::API_KEY).await;
    assert_eq!(tenant["client"], "tester");
    assert!(
        tenant.get("forwarding").is_none(),
        "a tenant sees no forwarding: {tenant}"
    );
}

/// Whether the HTML has an attribute like `onclick=`.
fn has_event_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(at, _)| {
        let name: String = html[at + 3..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        !name.is_empty() && html[at + 3 + name.len()..].starts_with('=')
    })
}

#[tokio::test]
async fn the_page_and_its_files_fit_the_content_security_policy() {
    let app = TestApp::spawn(&[]).await;
    for (path, content_type) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}"
        );
        assert_eq!(
            headers["content-security-policy"],
            "default-src 'self'; script-src 'self'"
        );
        let text = response.text().await.unwrap();
        if path == "/dashboard" {
            // No inline script, style or handler: the CSP would refuse them.
            assert!(!text.contains("<style"));
            assert!(!text.contains(" style="));
            assert!(!has_event_handler(&text), "inline event handler");
            for script in text.split("<script").skip(1) {
                assert!(script.split('>').next().unwrap().contains("src="));
                assert!(script.split('>').nth(1).unwrap().starts_with("</script"));
            }
            // Nothing from another origin.
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }
}

/// Headless Chromium driven over the DevTools protocol, with just enough of
/// a WebSocket client for it (text frames, client-masked).
struct Browser {
    _process: tokio::process::Child,
    socket: tokio::net::TcpStream,
    profile: PathBuf,
    next_id: u64,
}

impl Browser {
    async fn launch(url: &str) -> Browser {
        use tokio::io::AsyncBufReadExt;
        let profile = std::env::temp_dir().join(format!("gw-chromium-{}", ulid::Ulid::generate()));
        let mut process = tokio::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("Chromium runs");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        let mut lines = tokio::io::BufReader::new(process.stderr.take().unwrap()).lines();
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    return rest.split('/').next().unwrap().to_owned();
                }
            }
            panic!("Chromium exited without a DevTools address");
        })
        .await
        .expect("Chromium started within 60 s");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let http = reqwest::Client::new();
        let page = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let targets: Value = http
                    .get(format!("http://{address}/json/list"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let page = targets.as_array().unwrap().iter().find(|t| {
                    t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
                });
                if let Some(page) = page {
                    return page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the page opened");
        let path = &page[page.find("/devtools/").unwrap()..];
        let socket = websocket_connect(&address, path).await;
        Browser {
            _process: process,
            socket,
            profile,
            next_id: 0,
        }
    }

    /// Evaluates `expression` in the page, awaiting a promise, and returns its
    /// value. Retried while the page is still loading (its first document is
    /// replaced, which destroys the context an evaluation started in).
    async fn evaluate(&mut self, expression: &str) -> Value {
        for _ in 0..50 {
            let answer = self
                .command(
                    "Runtime.evaluate",
                    json!({
                "expression": expression, "awaitPromise": true, "returnByValue": true}),
                )
                .await;
            if answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("context"))
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert!(
                answer["error"].is_null() && answer["result"]["exceptionDetails"].is_null(),
                "{answer}"
            );
            return answer["result"]["result"]["value"].clone();
        }
        panic!("the page never settled");
    }

    async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({"id": id, "method": method, "params": params});
        websocket_send(&mut self.socket, &command.to_string()).await;
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let message: Value =
                    serde_json::from_str(&websocket_receive(&mut self.socket).await).unwrap();
                if message["id"] == id {
                    return message;
                }
            }
        })
        .await
        .expect("the page answered within 30 s")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self._process.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn websocket_connect(address: &str, path: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(socket.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    socket
}

async fn websocket_send(socket: &mut tokio::net::TcpStream, text: &str) {
    use tokio::io::AsyncWriteExt;
    let payload = text.as_bytes();
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    socket.write_all(&frame).await.unwrap();
}

/// The next whole text message (continuation frames joined; pings skipped).
async fn websocket_receive(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut message = Vec::new();
    loop {
        let first = socket.read_u8().await.unwrap();
        let second = socket.read_u8().await.unwrap();
        let len = match second & 0x7f {
            126 => socket.read_u16().await.unwrap() as usize,
            127 => socket.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0; len];
        socket.read_exact(&mut payload).await.unwrap();
        match first & 0x0f {
            0x0 | 0x1 => message.extend_from_slice(&payload),
            0x8 => panic!("the browser closed the connection"),
            _ => continue,
        }
        if first & 0x80 != 0 {
            return String::from_utf8(message).unwrap();
        }
    }
}
