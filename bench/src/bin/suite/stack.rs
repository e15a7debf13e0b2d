//! The whole product as separate processes, the way an operator runs it:
//! sent-sim, one gateway, N workers, on loopback ports of their own, with a
//! database and a Redis key prefix of their own. Redis and Postgres are the
//! machine's, or private servers this stack starts (and may restart).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

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
    /// `LOG_LEVEL` of the gateway and workers.
    pub log_level: &'static str,
}

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
    pub redis_url: String,
    pub prefix: String,
    pub gateway: Service,
    pub workers: Vec<Service>,
    pub sim: Service,
    redis: Option<(Service, u16)>,
    postgres: Option<PrivatePostgres>,
    /// Gateway and worker settings.
    env: Vec<(String, String)>,
}

impl Stack {
    pub async fn start(options: StackOptions, results: &Path) -> anyhow::Result<Stack> {
        let bin = std::env::current_exe()?
            .parent()
            .context("the suite binary has a directory")?
            .to_owned();
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
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let prefix = format!("suite:{run}");

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
                ],
            ),
            &dir,
        )?;

        let env: Vec<(String, String)> = [
            ("APP_ENV", "production"),
            ("LOG_LEVEL", options.log_level),
            ("DATABASE_URL", database_url.as_str()),
            ("DATABASE_MAX_CONNECTIONS", "16"),
            ("REDIS_URL", redis_url.as_str()),
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
            redis_url,
            prefix,
            gateway,
            workers: Vec::new(),
            sim,
            redis,
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

    /// Send jobs in Redis: due, and scheduled for later.
    pub async fn jobs_in_redis(&self) -> anyhow::Result<u64> {
        let conn = common::redis_conn::connect(
            &self.redis_url,
            &common::redis_conn::RedisTls::system_roots(),
        )
        .await?;
        let (due, later) = common::queue::SendQueue::new(conn, &self.prefix, 1)
            .depth()
            .await?;
        Ok(due + later)
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
        if self.redis.take().is_none() {
            delete_keys(&self.redis_url, &self.prefix).await;
        }
        Ok(())
    }
}

/// Removes the stack's keys from the machine's Redis (best effort).
async fn delete_keys(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
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
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
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
