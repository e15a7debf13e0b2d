//! What the sending tests share: a fresh database, a Redis prefix and a
//! sent-sim of their own, messages stored as the gateway stores them, a
//! worker in this process or as a child process, and polling helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::config::Config;
use common::domain::{MessageId, MessageStatus, PhoneNumber};
use common::queue::{SendJob, SendQueue};
use common::store::{EventRecord, MessageRecord, NewMessage, Store, Submission};
use common::test_support::{TestDatabase, TestRedis, spawn_logging};
use sent_sim::{SimConfig, SimHandle};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub db: TestDatabase,
    pub redis: TestRedis,
    pub sim: SimHandle,
    pub store: Store,
    pub queue: SendQueue,
    /// The worker's environment; tests change entries before starting it.
    pub vars: HashMap<String, String>,
}

pub struct RunningWorker {
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    /// SIGTERM in process: stop, drain, and return what the worker returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task")
    }
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_sim(SimConfig::default()).await
    }

    pub async fn with_sim(sim_config: SimConfig) -> Harness {
        let db = TestDatabase::new().await;
        let redis = TestRedis::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = sent_sim::spawn(sim_config, listener).await.unwrap();
        let conn =
            common::redis_conn::connect(&redis.url, &common::redis_conn::RedisTls::system_roots())
                .await
                .expect("redis for tests");
        let queue = SendQueue::new(conn, &redis.prefix, common::queue::Sharding::ONE);
        let vars = [
            ("APP_ENV", "testing"),
            ("LOG_LEVEL", "warn"),
            ("DATABASE_URL", db.url.as_str()),
            ("DATABASE_MAX_CONNECTIONS", "10"),
            ("REDIS_URL", redis.url.as_str()),
            ("REDIS_PREFIX", redis.prefix.as_str()),
            ("SENT_BASE_URL", &sim.base_url()),
            ("SENT_DM_API_KEY", sent_sim::DEFAULT_API_KEY),
            ("SENT_TIMEOUT_SECS", "10"),
            ("WORKER_CONCURRENCY", "16"),
            ("WORKER_MAX_ATTEMPTS", "5"),
            ("WORKER_BACKOFF_BASE_MS", "50"),
            ("WORKER_BACKOFF_MAX_SECS", "1"),
            ("WORKER_HEARTBEAT_SECS", "1"),
            ("WORKER_MISSED_HEARTBEATS", "3"),
            ("WORKER_SHUTDOWN_GRACE_SECS", "20"),
            // The reconciler stays out of the way unless a test wants it.
            ("RECONCILE_INTERVAL_SECS", "3600"),
            ("RECONCILE_AFTER_SECS", "120"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let store = db.store.clone();
        Harness {
            db,
            redis,
            sim,
            store,
            queue,
            vars,
        }
    }

    pub fn set(&mut self, var: &str, value: &str) {
        self.vars.insert(var.to_owned(), value.to_owned());
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::new(Config::from_map(&self.vars).expect("test configuration"))
    }

    /// The gateway in this process, on this harness's settings, database and
    /// Redis prefix: its base URL.
    pub async fn serve_gateway(&self) -> String {
        let config = Config::from_map(&self.vars).unwrap();
        gateway::test_support::RunningGateway::start(config, self.store.clone())
            .await
            .detach()
    }

    /// Points the gateway, the worker and `self.queue` at another Redis (a
    /// cluster, a sentinel): `vars` replace `REDIS_URL`.
    pub async fn use_redis(&mut self, vars: &[(&str, &str)]) {
        self.vars.remove("REDIS_URL");
        for (var, value) in vars {
            self.set(var, value);
        }
        let config = self.config();
        let conn = common::redis_conn::open(&config.redis, &config.redis_tls)
            .await
            .expect("the test's Redis");
        self.queue = SendQueue::new(conn, &config.redis_prefix, config.sharding);
    }

    /// A worker in this process, as `worker run` runs it.
    pub async fn start_worker(&self) -> RunningWorker {
        let config = self.config();
        let redis = common::redis_conn::open(&config.redis, &config.redis_tls)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        // A pool of its own, as the worker process has: sharing the test's
        // let a busy worker hold every connection past the pool's 3 s
        // acquire timeout while the test stored messages (PoolTimedOut).
        let store = Store::connect_lazy(&self.db.url, 10).unwrap();
        let handle = tokio::spawn(worker::run_worker(config, store, redis, shutdown.clone()));
        RunningWorker { shutdown, handle }
    }

    /// The worker binary as a child process; its log goes to the returned file.
    pub fn spawn_process(&self, args: &[&str]) -> (tokio::process::Child, PathBuf) {
        self.spawn_process_logging("info", args)
    }

    /// [`Harness::spawn_process`] at `LOG_LEVEL=level`.
    pub fn spawn_process_logging(
        &self,
        level: &str,
        args: &[&str],
    ) -> (tokio::process::Child, PathBuf) {
        spawn_logging(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
                .args(args)
                .envs(&self.vars)
                .env("LOG_LEVEL", level),
            "worker",
        )
    }

    /// Stores messages as the gateway does (one submission each) and enqueues them.
    pub async fn submit(&self, messages: Vec<NewMessage>) -> Vec<MessageId> {
        self.submit_as("tests", messages).await
    }

    /// [`Harness::submit`] for the client (key name) `client`.
    pub async fn submit_as(&self, client: &str, messages: Vec<NewMessage>) -> Vec<MessageId> {
        let ids = self.store_as(client, messages).await;
        let jobs: Vec<SendJob> = ids
            .iter()
            .map(|id| SendJob::new(*id, Default::default()).for_client(client))
            .collect();
        self.queue.enqueue(&jobs).await.unwrap();
        ids
    }

    /// Traffic through a Redis outage: `rounds` batches of `n` messages, each
    /// stored, then pushed (a failed push is left to the reconciler, as the
    /// gateway's messages are), `pause` apart. The ids, and how many pushes
    /// failed.
    pub async fn traffic_through_an_outage(
        &self,
        rounds: usize,
        n: usize,
        pause: Duration,
    ) -> (Vec<MessageId>, usize) {
        let (mut ids, mut failed) = (Vec::new(), 0);
        for _ in 0..rounds {
            let batch = self.store_only(messages(n)).await;
            let jobs: Vec<SendJob> = batch
                .iter()
                .map(|id| SendJob::new(*id, Default::default()))
                .collect();
            failed += usize::from(self.queue.enqueue(&jobs).await.is_err());
            ids.extend(batch);
            tokio::time::sleep(pause).await;
        }
        (ids, failed)
    }

    /// Stores messages without enqueueing them (a gateway that failed half-way).
    pub async fn store_only(&self, messages: Vec<NewMessage>) -> Vec<MessageId> {
        self.store_as("tests", messages).await
    }

    async fn store_as(&self, client: &str, messages: Vec<NewMessage>) -> Vec<MessageId> {
        let ids = messages.iter().map(|m| m.id).collect();
        let submissions: Vec<Submission> = messages
            .into_iter()
            .map(|m| Submission {
                client: client.into(),
                idempotency: None,
                messages: vec![m],
                created_at: Utc::now(),
                trace: Default::default(),
                response_status: 202,
                response_body: json!({}),
            })
            .collect();
        self.store
            .submit(&submissions, Duration::from_secs(3600))
            .await
            .unwrap();
        ids
    }

    pub async fn message(&self, id: MessageId) -> MessageRecord {
        self.store
            .message_by_id(id)
            .await
            .unwrap()
            .expect("message exists")
    }

    pub async fn events(&self, id: MessageId) -> Vec<EventRecord> {
        self.store.events(id).await.unwrap()
    }

    /// Waits until every message has `status`; panics with their states after `secs`.
    pub async fn wait_status(
        &self,
        ids: &[MessageId],
        status: MessageStatus,
        secs: u64,
    ) -> Vec<MessageRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                records.push(self.message(*id).await);
            }
            if records.iter().all(|m| m.status == status) {
                return records;
            }
            if tokio::time::Instant::now() > deadline {
                let states: Vec<_> = records
                    .iter()
                    .map(|m| {
                        (
                            m.id.to_string(),
                            m.status.as_str(),
                            m.attempts,
                            m.last_error_code.as_deref(),
                        )
                    })
                    .collect();
                panic!(
                    "not all {status} after {secs} s: {states:?}\nsim: {:?}",
                    self.sim.stats()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A message for the sim's `welcome` template (or a magic template name).
/// `POST /api/messages/send` of one welcome message to the gateway at
/// `base`, with the API key `key`.
pub async fn post_message(base: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/messages/send"))
        .bearer_auth(key)
        .json(&json!({
            "phone_number": "+14155550123", "template_name": "welcome",
            "parameters": {"name": "Ada"}, "channels": ["sms"]
        }))
        .send()
        .await
        .unwrap()
}

pub fn message(template_name: &str) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        phone_number: PhoneNumber::parse("+14155550123").unwrap(),
        template_id: None,
        template_name: Some(template_name.into()),
        parameters: json!({"name": "Ada"}),
        text: None,
        media_urls: vec![],
        channels: vec![],
        scheduled_at: None,
        sandbox: false,
        callback_url: None,
        metadata: json!({}),
    }
}

pub fn messages(n: usize) -> Vec<NewMessage> {
    (0..n).map(|_| message("welcome")).collect()
}

/// Polls `check` every 50 ms; panics with `what` after `secs` seconds.
pub async fn wait_for<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The timeline as `(event, source, attempt)`.
pub fn timeline(events: &[EventRecord]) -> Vec<(String, String, Option<i32>)> {
    events
        .iter()
        .map(|e| (e.status.clone(), e.source.to_string(), e.attempt))
        .collect()
}

/// The child's log, for failure messages.
pub fn read_log(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A TCP proxy that can be cut (existing connections dropped, new ones
/// refused) and restored: a dependency going away and coming back.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    enabled: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let enabled = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let (on, gen_) = (enabled.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !on.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let cut = gen_.lock().unwrap().clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            enabled,
            generation,
        }
    }

    pub fn cut(&self) {
        self.enabled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let mut generation = self.generation.lock().unwrap();
        generation.cancel();
        *generation = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.enabled
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Harness {
    /// A worker in this process whose Postgres connections go through `proxy`.
    pub async fn start_worker_through(&self, proxy: &Proxy) -> RunningWorker {
        let mut url = reqwest::Url::parse(&self.db.url).unwrap();
        url.set_ip_host(proxy.addr.ip()).unwrap();
        url.set_port(Some(proxy.addr.port())).unwrap();
        let store = Store::connect_lazy(url.as_str(), 5).unwrap();
        let redis = common::redis_conn::connect(
            &self.redis.url,
            &common::redis_conn::RedisTls::system_roots(),
        )
        .await
        .unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker::run_worker(
            self.config(),
            store,
            redis,
            shutdown.clone(),
        ));
        RunningWorker { shutdown, handle }
    }

    /// `host:port` of the test database.
    pub fn db_addr(&self) -> String {
        let url = reqwest::Url::parse(&self.db.url).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
    }
}
