//! The whole product as separate processes, the way an operator runs it:
//! sent-sim, one gateway, N workers, on loopback ports of their own, with a
//! database and a Redis key prefix of their own. Redis and Postgres are the
//! machine's, or private servers this stack starts (and may restart); Redis
//! can also be a Redis Cluster of the stack's own.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::config::Secret;
use common::queue::{SendQueue, Sharding};
use common::redis_conn::{RedisTarget, RedisTls};
use common::test_support::redis_servers::{RedisCluster, RedisProcess};

/// The stack runs in the production profile, which refuses any secret
/// published in the repository: the key and the webhook secret are made
/// for the run.
pub static API_KEY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("suite-{}{}", ulid::Ulid::generate(), ulid::Ulid::generate())
});
pub const CLIENT: &str = "suite";
const SIM_KEY: &str = "sim_suite_key";
/// Derives the callback secrets of the bootstrap key (production requires it).
pub static CALLBACK_SIGNING_KEY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "suite-signing-{}{}",
        ulid::Ulid::generate(),
        ulid::Ulid::generate()
    )
});
/// The sim's signing secret, which the gateway checks.
pub static WEBHOOK_SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| common::signature::WebhookSecret::generate().to_whsec_string());

/// What a stack is made of.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Names the database, key prefix and log directory.
    pub name: String,
    pub workers: usize,
    /// A Redis server of the stack's own, so it can be restarted.
    pub private_redis: bool,
    /// A Postgres cluster of the stack's own, so it can be restarted.
    pub private_postgres: bool,
    /// A Redis Cluster of the stack's own (3 primaries, each with a replica)
    /// instead of the machine's Redis, so a primary can be killed; the queue
    /// is then spread over [`CLUSTER_QUEUE_SHARDS`] shards.
    pub redis_cluster: bool,
    /// `LOG_LEVEL` of the gateway and workers.
    pub log_level: &'static str,
    /// Directory of the gateway, worker and sent-sim binaries: by default
    /// the one this binary is in.
    pub bin: Option<PathBuf>,
    /// Settings added to (or overriding) the defaults of every process.
    pub env: Vec<(String, String)>,
}

/// `QUEUE_SHARDS` on a Redis Cluster: one shard per primary.
pub const CLUSTER_QUEUE_SHARDS: u16 = 3;

/// A child process of the stack, with its log file; it can be killed and
/// started again.
pub struct Service {
    pub name: String,
    command: Command,
    child: Child,
    log: PathBuf,
    /// Highest resident set seen for this service (all its incarnations), kB.
    pub peak_rss_kb: u64,
}

impl Service {
    /// Starts `command`, its output appended to `<dir>/<name>.log`.
    fn start(name: &str, mut command: Command, dir: &Path) -> anyhow::Result<Service> {
        let log = dir.join(format!("{name}.log"));
        let child = spawn_logged(&mut command, &log)?;
        Ok(Service {
            name: name.to_owned(),
            command,
            child,
            log,
            peak_rss_kb: 0,
        })
    }

    /// SIGKILL (if it still runs).
    fn kill(&mut self) {
        self.sample_rss();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the process (if it still runs) and starts it again.
    fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = spawn_logged(&mut self.command, &self.log)?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sample_rss(&mut self) {
        if let Some(kb) = status_kb(self.pid(), "VmHWM:") {
            self.peak_rss_kb = self.peak_rss_kb.max(kb);
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

/// A service is killed when dropped, so that a failed run leaves nothing
/// running.
impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Stack {
    pub options: StackOptions,
    bin: PathBuf,
    pub dir: PathBuf,
    pub gateway_url: String,
    pub sim_url: String,
    pub database_url: String,
    admin_url: String,
    database: String,
    /// The machine's Redis, the private one, or the stack's cluster.
    pub redis_target: RedisTarget,
    /// `QUEUE_SHARDS` (and `QUEUE_SHARD_BY`) of the gateway and workers.
    pub sharding: Sharding,
    pub prefix: String,
    pub gateway: Service,
    pub workers: Vec<Service>,
    pub sim: Service,
    redis: Option<(Service, u16)>,
    /// The stack's Redis Cluster: behind a lock so that blocking work on it
    /// (`redis-cli`, killing a node) runs on a blocking thread.
    pub cluster: Option<Arc<Mutex<RedisCluster>>>,
    postgres: Option<PrivatePostgres>,
    /// Gateway and worker settings.
    env: Vec<(String, String)>,
}

impl Stack {
    pub async fn start(options: StackOptions, results: &Path) -> anyhow::Result<Stack> {
        let bin = match &options.bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("the suite binary has a directory")?
                .to_owned(),
        };
        for name in ["gateway", "worker", "sent-sim"] {
            if !bin.join(name).exists() {
                bail!(
                    "{} not found: build the workspace first (cargo build [--release])",
                    bin.join(name).display()
                );
            }
        }
        let dir = results.join(&options.name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let run = format!("{}_{}", options.name.replace('-', "_"), std::process::id());

        let postgres = if options.private_postgres {
            // Absolute and short: the server's socket path lives under it.
            let dir = std::env::temp_dir().join(format!("suite-pg-{run}"));
            Some(PrivatePostgres::start(&dir)?)
        } else {
            None
        };
        let pg_port = postgres.as_ref().map_or(5432, |pg| pg.port);
        let admin_url = format!("postgres://postgres@127.0.0.1:{pg_port}/postgres");
        let database = format!("suite_{run}");
        let database_url = format!("postgres://postgres@127.0.0.1:{pg_port}/{database}");

        let redis = if options.private_redis {
            let port = free_port()?;
            Some((start_redis(&dir, port)?, port))
        } else {
            None
        };
        let redis_port = redis.as_ref().map_or(6379, |(_, port)| *port);
        let mut prefix = format!("suite:{run}");
        let (redis_target, sharding, cluster) = if options.redis_cluster {
            let (cluster, spread) = start_cluster(prefix).await?;
            prefix = spread;
            let urls = lock(&cluster).urls();
            let target = RedisTarget::Cluster(urls.into_iter().map(Secret::new).collect());
            let sharding = Sharding {
                shards: CLUSTER_QUEUE_SHARDS,
                ..Sharding::ONE
            };
            (target, sharding, Some(cluster))
        } else {
            let url = format!("redis://127.0.0.1:{redis_port}");
            (RedisTarget::Single(Secret::new(url)), Sharding::ONE, None)
        };

        let (gateway_port, sim_port) = (free_port()?, free_port()?);
        let gateway_url = format!("http://127.0.0.1:{gateway_port}");
        let sim_url = format!("http://127.0.0.1:{sim_port}");

        let sim = Service::start(
            "sent-sim",
            product(
                &bin,
                "sent-sim",
                &[
                    ("LOG_LEVEL", "warn"),
                    ("SENT_SIM_BIND", &format!("127.0.0.1:{sim_port}")),
                    ("SENT_SIM_API_KEYS", SIM_KEY),
                    (
                        "SENT_SIM_WEBHOOK_URL",
                        &format!("{gateway_url}/webhooks/sent"),
                    ),
                    ("SENT_SIM_WEBHOOK_SECRET", WEBHOOK_SECRET.as_str()),
                    // Sent retries a failed webhook for about a day; the suite's
                    // clock runs faster so an outage is caught up within the run.
                    ("SENT_SIM_WEBHOOK_RETRY_BASE_MS", "250"),
                    ("SENT_SIM_WEBHOOK_RETRIES", "10"),
                    ("SENT_SIM_STEP_DELAY_MS", "100"),
                    ("SENT_SIM_FAIL_RATE", "0.02"),
                    ("SENT_SIM_RETRY_AFTER_SECS", "1"),
                    ("SENT_SIM_MESSAGE_RETENTION_SECS", "60"),
                ]
                .into_iter()
                .chain(env_refs(&options.env))
                .collect::<Vec<_>>(),
            ),
            &dir,
        )?;

        // Where Redis is: the gateway and workers refuse REDIS_URL together
        // with REDIS_CLUSTER_NODES. (The rate limit is off: there is no
        // RATELIMIT_STORAGE_URI to point at the cluster.)
        let redis_env = match &redis_target {
            RedisTarget::Cluster(nodes) => (
                "REDIS_CLUSTER_NODES",
                nodes
                    .iter()
                    .map(Secret::expose)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            RedisTarget::Single(url) => ("REDIS_URL", url.expose().to_owned()),
            RedisTarget::Sentinel { .. } => unreachable!("the suite starts no sentinel"),
        };
        let env: Vec<(String, String)> = [
            ("APP_ENV", "production"),
            ("LOG_LEVEL", options.log_level),
            ("DATABASE_URL", database_url.as_str()),
            ("DATABASE_MAX_CONNECTIONS", "16"),
            (redis_env.0, redis_env.1.as_str()),
            ("QUEUE_SHARDS", &sharding.shards.to_string()),
            ("REDIS_PREFIX", prefix.as_str()),
            ("GATEWAY_BIND", &format!("127.0.0.1:{gateway_port}")),
            ("API_KEYS", &format!("{CLIENT}:{}", *API_KEY)),
            ("CALLBACK_SIGNING_KEY", CALLBACK_SIGNING_KEY.as_str()),
            ("RATELIMIT_ENABLED", "false"),
            ("SENT_BASE_URL", sim_url.as_str()),
            ("SENT_DM_API_KEY", SIM_KEY),
            ("SENT_DM_WEBHOOK_SECRET", WEBHOOK_SECRET.as_str()),
            ("SENT_TIMEOUT_SECS", "5"),
            ("WORKER_METRICS_BIND", "127.0.0.1:0"),
            // Faster clocks than production's, so that every recovery path
            // finishes within a run of seconds: a dead worker is noticed after
            // 3 s, a job Redis lost is re-enqueued after 5 s.
            ("WORKER_HEARTBEAT_SECS", "1"),
            ("WORKER_MISSED_HEARTBEATS", "3"),
            ("WORKER_BACKOFF_BASE_MS", "200"),
            ("WORKER_BACKOFF_MAX_SECS", "3"),
            ("WORKER_SHUTDOWN_GRACE_SECS", "10"),
            ("RECONCILE_INTERVAL_SECS", "1"),
            ("RECONCILE_AFTER_SECS", "5"),
            ("INBOX_POLL_INTERVAL_MS", "200"),
            ("INBOX_BACKOFF_BASE_MS", "100"),
            ("INBOX_BACKOFF_MAX_SECS", "2"),
            ("INBOX_LEASE_SECS", "5"),
            ("INBOX_REMATCH_INTERVAL_SECS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain(options.env.iter().cloned())
        .collect();

        let gateway = Service::start("gateway", product(&bin, "gateway", &env_refs(&env)), &dir)?;
        let mut stack = Stack {
            options,
            bin,
            dir,
            gateway_url,
            sim_url,
            database_url,
            admin_url,
            database,
            redis_target,
            sharding,
            prefix,
            gateway,
            workers: Vec::new(),
            sim,
            redis,
            cluster,
            postgres,
            env,
        };
        stack.wait_ready().await?;
        for _ in 0..stack.options.workers {
            stack.start_worker()?;
        }
        Ok(stack)
    }

    /// Waits for the gateway's readiness check (database and Redis up).
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.gateway.exited() {
                bail!("gateway exited ({status}):\n{}", self.gateway.log_tail());
            }
            let ready = http
                .get(format!("{}/health", self.gateway_url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("gateway not ready after 60 s:\n{}", self.gateway.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn start_worker(&mut self) -> anyhow::Result<()> {
        let name = format!("worker-{}", self.workers.len() + 1);
        let command = product(&self.bin, "worker", &env_refs(&self.env));
        self.workers
            .push(Service::start(&name, command, &self.dir)?);
        Ok(())
    }

    /// SIGKILLs worker `index` and starts it again.
    pub fn kill_and_restart_worker(&mut self, index: usize) -> anyhow::Result<()> {
        self.workers[index].restart()
    }

    /// SIGTERMs the gateway and waits for it to exit: its exit status and how
    /// long it took.
    pub async fn terminate_gateway(
        &mut self,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        self.gateway.sample_rss();
        let started = Instant::now();
        signal(self.gateway.pid(), "TERM")?;
        let deadline = started + Duration::from_secs(40);
        loop {
            if let Some(status) = self.gateway.exited() {
                return Ok((status, started.elapsed()));
            }
            if Instant::now() > deadline {
                bail!("gateway still running 40 s after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the gateway again (on the same port) and waits until it is ready.
    pub async fn restart_gateway(&mut self) -> anyhow::Result<()> {
        self.gateway.restart()?;
        self.wait_ready().await
    }

    /// Kills the private Redis (its data is gone: it keeps nothing on disk,
    /// like the machine's) and starts it empty after `outage`.
    pub async fn restart_redis(&mut self, outage: Duration) -> anyhow::Result<()> {
        let (redis, port) = self
            .redis
            .as_mut()
            .context("the stack has no private Redis")?;
        redis.kill();
        tokio::time::sleep(outage).await;
        redis.restart()?;
        wait_port(*port)
    }

    /// Stops the private Postgres like a crash (`-m immediate`: no
    /// checkpoint, recovery from WAL at start) and starts it after `outage`.
    pub async fn restart_postgres(&mut self, outage: Duration) -> anyhow::Result<()> {
        let postgres = self
            .postgres
            .as_ref()
            .context("the stack has no private Postgres")?;
        postgres.pg_ctl(&["stop", "-m", "immediate"])?;
        tokio::time::sleep(outage).await;
        postgres.pg_ctl(&["start"])
    }

    /// Sends every worker a signal (`STOP` pauses one, `CONT` resumes it).
    pub fn signal_workers(&self, name: &str) -> anyhow::Result<()> {
        for worker in &self.workers {
            signal(worker.pid(), name)?;
        }
        Ok(())
    }

    /// Send jobs in Redis: due, and scheduled for later (every shard).
    pub async fn jobs_in_redis(&self) -> anyhow::Result<u64> {
        let (due, later) = self.queue().await?.depth().await?;
        Ok(due + later)
    }

    /// The stack's send queue, as its gateway and workers see it.
    pub async fn queue(&self) -> anyhow::Result<SendQueue> {
        let conn = common::redis_conn::open(&self.redis_target, &RedisTls::system_roots()).await?;
        Ok(SendQueue::new(conn, &self.prefix, self.sharding))
    }

    /// SIGKILLs the cluster primary that serves `key` with writes of the
    /// last `unreplicated` on it only (its replica SIGSTOPped for that long
    /// before, and SIGCONTed at the kill), and waits (on a blocking thread)
    /// until every surviving node reports the cluster `ok` again with the
    /// dead node marked failed: its replica has taken over its slots.
    pub async fn kill_cluster_primary_of(
        &self,
        key: &str,
        unreplicated: Duration,
    ) -> anyhow::Result<ClusterFailover> {
        let cluster = self
            .cluster
            .clone()
            .context("the stack has no Redis Cluster")?;
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut cluster = lock(&cluster);
            let victim = cluster.primary_of(&key);
            let replica = replica_of(&cluster, victim)?;
            let replica_pid = info_field(&cluster.nodes[replica], "server", "process_id")
                .context("the replica's process_id")?;
            let port = cluster.nodes[victim].port;
            let held = Paused::new(replica_pid)?;
            std::thread::sleep(unreplicated);
            let replication = cluster.nodes[victim].cli(&["INFO", "replication"]);
            // Only the primary: a paused server would hang `redis-cli`.
            let killed_keys = cluster.nodes[victim].cli(&["DBSIZE"]).parse().unwrap_or(0);
            cluster.nodes[victim].kill();
            let killed = Instant::now();
            drop(held);
            let unreplicated_bytes = unreplicated_bytes(&replication, cluster.nodes[replica].port);
            let deadline = killed + Duration::from_secs(60);
            let survivors = cluster
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim);
            for (_, node) in survivors {
                while !failed_over(node, port) {
                    if Instant::now() > deadline {
                        bail!(
                            "the cluster not ok 60 s after its primary on port {port} was \
                             killed:\n{}",
                            node.cli(&["CLUSTER", "NODES"])
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let recovered = killed.elapsed();
            // (Not `primary_of`: it asks node 0 for the key's slot, and node 0
            // may be the one killed.)
            let role = cluster.nodes[replica].cli(&["ROLE"]);
            anyhow::ensure!(
                role.starts_with("master"),
                "the cluster is ok again but the killed primary's replica is not a primary: \
                 {role}"
            );
            Ok(ClusterFailover {
                killed: victim,
                killed_port: port,
                killed_keys,
                replica,
                unreplicated_bytes,
                recovered,
            })
        })
        .await?
    }

    /// Sleeps, sampling every process's memory once a second.
    pub async fn sleep_sampling(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            self.sample_rss();
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        }
    }

    /// Records every process's peak resident set so far.
    pub fn sample_rss(&mut self) {
        self.gateway.sample_rss();
        self.sim.sample_rss();
        for worker in &mut self.workers {
            worker.sample_rss();
        }
        if let Some((redis, _)) = &mut self.redis {
            redis.sample_rss();
        }
    }

    /// A service that exited when it should not have.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for service in std::iter::once(&mut self.gateway)
            .chain(std::iter::once(&mut self.sim))
            .chain(self.workers.iter_mut())
        {
            if let Some(status) = service.exited() {
                bail!(
                    "{} exited ({status}):\n{}",
                    service.name,
                    service.log_tail()
                );
            }
        }
        Ok(())
    }

    /// Peak RSS in MB of every process: ours, and the servers this stack
    /// started (the machine's Redis and Postgres are shared, so they are
    /// measured by the caller if at all).
    pub fn rss_report(&mut self) -> Vec<(String, f64)> {
        self.sample_rss();
        let mut rows = vec![
            (self.gateway.name.clone(), mb(self.gateway.peak_rss_kb)),
            (self.sim.name.clone(), mb(self.sim.peak_rss_kb)),
        ];
        for worker in &self.workers {
            rows.push((worker.name.clone(), mb(worker.peak_rss_kb)));
        }
        if let Some((redis, _)) = &self.redis {
            rows.push(("redis-server".into(), mb(redis.peak_rss_kb)));
        }
        rows
    }

    pub async fn database(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&self.database_url)
            .await?)
    }

    /// Stops every process and removes the stack's database and keys.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // Dropping a service kills it.
        self.workers.clear();
        drop(self.gateway);
        drop(self.sim);
        if self.postgres.take().is_none()
            && let Ok(pool) = sqlx::PgPool::connect(&self.admin_url).await
        {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.database
            ))
            .execute(&pool)
            .await;
        }
        if let Some(cluster) = self.cluster.take() {
            // A cluster of the run's own: its keys go with it.
            tokio::task::spawn_blocking(move || drop(cluster)).await?;
        } else if self.redis.take().is_none()
            && let RedisTarget::Single(url) = &self.redis_target
        {
            delete_keys(url.expose(), &self.prefix).await;
        }
        Ok(())
    }
}

/// What [`Stack::kill_cluster_primary_of`] did.
#[derive(Debug, Clone)]
pub struct ClusterFailover {
    /// Index of the node killed, its port, and the keys it held then.
    pub killed: usize,
    pub killed_port: u16,
    pub killed_keys: u64,
    /// Its replica (paused before the kill, the primary after it), and how
    /// far behind the primary's writes it was at the kill, in bytes of
    /// replication stream (`None` if the primary did not say).
    pub replica: usize,
    pub unreplicated_bytes: Option<u64>,
    /// From the kill until every surviving node reported the cluster `ok`.
    pub recovered: Duration,
}

/// Starts a Redis Cluster of 3 primaries, each with a replica, and picks a
/// key prefix (`base`, or `base-<n>`) whose queue shards' hash tags fall on
/// three different primaries: the slot of a tag is fixed by its text, and
/// with one prefix all three could share a node by chance, so that killing
/// one primary would stop the whole queue rather than a third of it.
async fn start_cluster(base: String) -> anyhow::Result<(Arc<Mutex<RedisCluster>>, String)> {
    tokio::task::spawn_blocking(move || {
        let cluster = RedisCluster::start(3, 1);
        let prefix = (0..200)
            .map(|n| match n {
                0 => base.clone(),
                n => format!("{base}-{n}"),
            })
            .find(|prefix| {
                let primaries: std::collections::BTreeSet<usize> = (0..CLUSTER_QUEUE_SHARDS)
                    .map(|shard| cluster.primary_of(&shard_tag(prefix, shard)))
                    .collect();
                primaries.len() == usize::from(CLUSTER_QUEUE_SHARDS)
            })
            .context("no key prefix spreads the queue's shards over the 3 primaries")?;
        Ok((Arc::new(Mutex::new(cluster)), prefix))
    })
    .await?
}

/// The hash tag of queue shard `shard` under `prefix` (common/src/queue.rs
/// names every key of the shard `{<prefix>:send:<shard>}:...`): the slot of
/// every key of the shard.
fn shard_tag(prefix: &str, shard: u16) -> String {
    format!("{{{prefix}:send:{shard}}}")
}

/// Whether `node` (alive) sees the cluster `ok`, every slot served, and the
/// node on `dead_port` failed (not only suspected): its slots are served by
/// another node, the replica that took over.
fn failed_over(node: &RedisProcess, dead_port: u16) -> bool {
    let info = node.cli(&["CLUSTER", "INFO"]);
    if !(info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")) {
        return false;
    }
    let address = format!("127.0.0.1:{dead_port}@");
    node.cli(&["CLUSTER", "NODES"])
        .lines()
        .filter(|line| line.contains(&address))
        .any(|line| {
            line.split_whitespace()
                .nth(2)
                .is_some_and(|flags| flags.split(',').any(|flag| flag == "fail"))
        })
}

/// The replica of primary `primary`, by the port the primary names in
/// `INFO replication`.
fn replica_of(cluster: &RedisCluster, primary: usize) -> anyhow::Result<usize> {
    let info = cluster.nodes[primary].cli(&["INFO", "replication"]);
    let port: u16 = info
        .lines()
        .find_map(|line| {
            let fields = line.strip_prefix("slave0:")?;
            fields
                .split(',')
                .find_map(|f| f.strip_prefix("port=")?.parse().ok())
        })
        .with_context(|| format!("the primary names no replica:\n{info}"))?;
    cluster
        .nodes
        .iter()
        .position(|node| node.port == port)
        .with_context(|| format!("no node on the replica's port {port}"))
}

/// A numeric field of `INFO <section>`.
fn info_field(node: &RedisProcess, section: &str, field: &str) -> Option<u64> {
    let info = node.cli(&["INFO", section]);
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// The primary's replication offset minus the one its replica on `port`
/// acknowledged, from the primary's `INFO replication`.
fn unreplicated_bytes(info: &str, port: u16) -> Option<u64> {
    let primary: u64 = info.lines().find_map(|line| {
        line.strip_prefix("master_repl_offset:")?
            .trim()
            .parse()
            .ok()
    })?;
    let replica: u64 = info.lines().find_map(|line| {
        let (name, fields) = line.split_once(':')?;
        if !name.starts_with("slave") || !fields.contains(&format!("port={port},")) {
            return None;
        }
        fields
            .split(',')
            .find_map(|f| f.strip_prefix("offset=")?.parse().ok())
    })?;
    Some(primary.saturating_sub(replica))
}

/// A process SIGSTOPped until this is dropped (SIGCONT).
struct Paused(u64);

impl Paused {
    fn new(pid: u64) -> anyhow::Result<Paused> {
        signal(pid as u32, "STOP")?;
        Ok(Paused(pid))
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = signal(self.0 as u32, "CONT");
    }
}

/// The cluster, even if a blocking task panicked while holding it.
fn lock(cluster: &Mutex<RedisCluster>) -> std::sync::MutexGuard<'_, RedisCluster> {
    cluster
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes the stack's keys from the machine's Redis (best effort).
async fn delete_keys(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    // The rate limits' keys start with the prefix, the queue shards' carry
    // it inside a hash tag (`{prefix:send:0}:...`).
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// One of the product's binaries with exactly `env` (and `PATH`).
fn product(bin: &Path, program: &str, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(bin.join(program));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied());
    command
}

fn spawn_logged(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {}", command.get_program().display()))
}

fn start_redis(dir: &Path, port: u16) -> anyhow::Result<Service> {
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"]);
    let redis = Service::start("redis-server", command, dir)?;
    wait_port(port)?;
    Ok(redis)
}

/// A throwaway Postgres cluster (initdb'd per stack), run as the `postgres`
/// user when the suite runs as root, since Postgres refuses root.
struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn start(dir: &Path) -> anyhow::Result<PrivatePostgres> {
        let bin = postgres_bin()?;
        let as_postgres = is_root();
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        if as_postgres {
            run_quiet(
                Command::new("chown").args(["postgres:postgres", &dir.display().to_string()]),
            )?;
        }
        let postgres = PrivatePostgres {
            dir: dir.to_owned(),
            bin,
            port: free_port()?,
            as_postgres,
        };
        let data = dir.join("data").display().to_string();
        run_quiet(&mut postgres.command(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-N"],
        ))?;
        postgres.pg_ctl(&["start"])?;
        Ok(postgres)
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program).display().to_string();
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", &program]).args(args);
            command
        } else {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let data = self.dir.join("data").display().to_string();
        let log = self.dir.join("postgres.log").display().to_string();
        // SUITE_PG_OPTIONS adds server options, e.g. auto_explain's, with
        // `-c logging_collector=on -c log_directory=/tmp/...` to keep the log.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
             -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on {}",
            self.port,
            self.dir.display(),
            std::env::var("SUITE_PG_OPTIONS").unwrap_or_default()
        );
        let mut full = vec!["-D", &data, "-l", &log, "-w", "-o", &options];
        full.extend_from_slice(args);
        run_quiet(&mut self.command("pg_ctl", &full))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn postgres_bin() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(dir.into());
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries: set PG_BIN to their directory")?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql: set PG_BIN")
}

fn is_root() -> bool {
    status_kb(std::process::id(), "Uid:") == Some(0)
}

fn run_quiet(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("{command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    run_quiet(Command::new("kill").args([&format!("-{name}"), &pid.to_string()]))
}

/// A field of `/proc/<pid>/status` as a number (the first one on its line).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("port {port} did not open")
}
