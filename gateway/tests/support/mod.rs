//! Spawns the gateway in-process on a random port, with its own database
//! (cloned from the migrated template) and its own Redis key prefix.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::config::Config;
use common::test_support::{TestDatabase, TestRedis, free_port, spawn_logging};
use gateway::test_support::RunningGateway;
use serde_json::Value;

pub const API_KEY: &str = "test-key-0123456789";
pub const OTHER_KEY: &str = "other-key-0123456789";

/// The gateway (its address, state and stop token, through `Deref`), with
/// the test's database, Redis prefix and an HTTP client.
pub struct TestApp {
    pub gateway: RunningGateway,
    pub http: reqwest::Client,
    pub db: TestDatabase,
    pub redis: TestRedis,
}

impl std::ops::Deref for TestApp {
    type Target = RunningGateway;
    fn deref(&self) -> &RunningGateway {
        &self.gateway
    }
}

impl std::ops::DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut RunningGateway {
        &mut self.gateway
    }
}

impl TestApp {
    /// Testing profile (rate limits off, as in the original) plus `overrides`.
    pub async fn spawn(overrides: &[(&str, &str)]) -> TestApp {
        let db = TestDatabase::new().await;
        let redis = TestRedis::new();
        let mut vars: HashMap<String, String> = [
            ("APP_ENV", "testing"),
            ("LOG_LEVEL", "warn"),
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_URL", redis.url.as_str()),
            ("REDIS_PREFIX", redis.prefix.as_str()),
            ("API_KEYS", &format!("tester:{API_KEY},other:{OTHER_KEY}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in overrides {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_map(&vars).expect("test config");
        // Through the configured URL, so a test can route it via a proxy.
        let store = common::store::Store::connect_lazy(config.database_url.expose(), 8).unwrap();
        TestApp {
            gateway: RunningGateway::start(config, store).await,
            http: reqwest::Client::new(),
            db,
            redis,
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(API_KEY)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(API_KEY)
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self.post(path).json(body).send().await.unwrap();
        split(response).await
    }

    /// Jobs waiting in this test's send queue, decoded. apalis-redis files
    /// every push under its scheduled set (due now) until a worker fetches.
    pub async fn queued_jobs(&self) -> Vec<Value> {
        let mut conn = common::redis_conn::connect(
            &self.redis.url,
            &common::redis_conn::RedisTls::system_roots(),
        )
        .await
        .unwrap();
        let mut jobs = Vec::new();
        for shard in self.state.queue.shards() {
            let (mut ids, active): (Vec<String>, Vec<String>) = redis::pipe()
                .zrange(shard.scheduled_jobs_set(), 0, -1)
                .lrange(shard.active_jobs_list(), 0, -1)
                .query_async(&mut conn)
                .await
                .unwrap();
            ids.extend(active);
            for id in ids {
                let data: Vec<u8> = redis::cmd("HGET")
                    .arg(shard.job_data_hash())
                    .arg(&id)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                jobs.push(serde_json::from_slice(&data).unwrap());
            }
        }
        jobs
    }
}

pub async fn split(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

pub fn send_body() -> Value {
    serde_json::json!({
        "phone_number": "+1234567890",
        "template_id": "template-123",
        "template_name": "welcome",
        "parameters": {"name": "John"}
    })
}

/// A TCP proxy to a real service that a test can cut, to see the gateway
/// face an outage of Postgres or Redis without stopping the shared server.
pub struct CutableProxy {
    pub addr: SocketAddr,
    cut: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl CutableProxy {
    pub async fn start(target: &str) -> CutableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = tokio_util::sync::CancellationToken::new();
        let target = target.to_owned();
        let token = cut.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (mut inbound, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = token.cancelled() => break,
                };
                let target = target.clone();
                connections.spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
            // Every open connection is dropped before `cut` returns.
            connections.shutdown().await;
        });
        CutableProxy { addr, cut, task }
    }

    /// Drops every connection and stops listening: the service looks down.
    pub async fn cut(self) {
        self.cut.cancel();
        let _ = self.task.await;
    }
}

/// The gateway binary as a child process, what it prints kept in a file.
pub struct GatewayProcess {
    pub base: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl GatewayProcess {
    /// Starts it on a free port with `vars` (and no trace export), and waits
    /// until it answers.
    pub async fn start(vars: &[(&str, &str)]) -> GatewayProcess {
        let port = free_port();
        let (child, log) = spawn_logging(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
                .envs(vars.iter().copied())
                .env("GATEWAY_BIND", format!("127.0.0.1:{port}"))
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "gateway",
        );
        let process = GatewayProcess {
            base: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http
                .get(format!("{}/health/live", process.base))
                .send()
                .await
                .is_ok()
            {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not start:\n{}", process.output());
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM, as an orchestrator does; returns all it printed.
    pub async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        self.output()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}
