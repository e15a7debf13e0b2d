//! The load run: mixed traffic at a fixed rate below saturation for
//! minutes, then a ramp (each step 25% harder) until a part of the loop
//! falls behind, then the accounting of every message accepted on the way.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ledger::{self, Ledger};
use crate::stack::{Stack, StackOptions};
use crate::statements::{self, Statement};
use crate::traffic::{Mix, Op, OpStats, Recorder, Traffic};

#[derive(Debug, Clone)]
pub struct Plan {
    /// Operations per second of the sustained phase.
    pub rate: f64,
    pub duration: Duration,
    /// Length of one ramp step; the first step is 25% above `rate`.
    pub step: Duration,
    pub max_steps: usize,
    pub settle_timeout: Duration,
    /// Directory of the binaries to load (default: next to this one).
    pub bin: Option<std::path::PathBuf>,
    /// On a Postgres of the run's own, whose costliest statements are
    /// reported.
    pub private_postgres: bool,
}

/// A step counts as keeping up while under 1% of operations fail, p99 stays
/// under this, the client never has to skip an operation, and at its end
/// no more messages are late ([`LATE_AFTER`]) than it has operations a
/// second (about a second of its messages: 1.05 an operation).
const P99_LIMIT_MS: f64 = 1_000.0;
const ERROR_LIMIT: f64 = 0.01;
/// A message is late when it has no final status this long after it was
/// accepted: sent-sim reports its four steps 100 ms apart, so a loop that
/// keeps up ends a message in about half a second. Late messages count
/// every part that can fall behind (the sends, sent-sim's webhooks, the
/// inbox, the status changes): a gateway that answers on time while the
/// rest falls behind has not kept up.
const LATE_AFTER: Duration = Duration::from_secs(2);

pub struct Phase {
    pub target_rate: f64,
    /// As scheduled: the open-loop client issues every operation due, or
    /// counts it skipped.
    pub seconds: f64,
    pub ops: BTreeMap<Op, OpStats>,
    pub skipped: u64,
    /// Messages late (of this phase or earlier ones) when the phase's last
    /// operation was answered.
    pub late: i64,
}

impl Phase {
    pub fn achieved_ok_per_sec(&self) -> f64 {
        self.ops.values().map(OpStats::ok).sum::<u64>() as f64 / self.seconds
    }

    fn total(&self) -> u64 {
        self.ops.values().map(OpStats::total).sum()
    }

    pub fn error_share(&self) -> f64 {
        let errors: u64 = self.ops.values().map(OpStats::errors).sum();
        errors as f64 / self.total().max(1) as f64
    }

    pub fn worst_p99_ms(&self) -> f64 {
        self.ops
            .values()
            .filter(|op| op.total() > 0)
            .map(|op| op.quantile_ms(0.99))
            .fold(0.0, f64::max)
    }

    pub fn kept_up(&self) -> bool {
        self.skipped == 0
            && self.error_share() < ERROR_LIMIT
            && self.worst_p99_ms() < P99_LIMIT_MS
            && self.total() as f64 >= 0.95 * self.target_rate * self.seconds
            && self.late as f64 <= self.target_rate
    }
}

pub struct LoadReport {
    pub sustained: Phase,
    pub ramp: Vec<Phase>,
    pub ledger: Ledger,
    pub rss_mb: Vec<(String, f64)>,
    /// With `Plan::private_postgres`, from the first operation to the end
    /// of the accounting.
    pub statements: Option<Vec<Statement>>,
}

pub async fn run(plan: Plan, results: &std::path::Path) -> anyhow::Result<LoadReport> {
    let mut stack = Stack::start(
        StackOptions {
            name: "load".into(),
            workers: 2,
            private_redis: false,
            private_postgres: plan.private_postgres,
            redis_cluster: false,
            log_level: "warn",
            bin: plan.bin.clone(),
            env: Vec::new(),
        },
        results,
    )
    .await?;
    let db = stack.database().await?;
    if plan.private_postgres {
        statements::reset(&db).await?;
    }
    let recorder = Recorder::new();
    let traffic = Traffic::new(&stack.gateway_url, recorder.clone(), Mix::MIXED);
    let mut servers = SharedServers::default();

    let sustained = phase(
        &mut stack,
        &db,
        &mut servers,
        &traffic,
        &recorder,
        plan.rate,
        plan.duration,
    )
    .await?;
    let mut ramp: Vec<Phase> = Vec::new();
    let mut rate = plan.rate;
    for _ in 0..plan.max_steps {
        rate *= 1.25;
        let step = phase(
            &mut stack,
            &db,
            &mut servers,
            &traffic,
            &recorder,
            rate,
            plan.step,
        )
        .await?;
        let kept_up = step.kept_up();
        ramp.push(step);
        if !kept_up {
            break;
        }
    }

    let ledger = ledger::of_run(&stack, &recorder, plan.settle_timeout).await?;
    let statements = if plan.private_postgres {
        Some(statements::costliest(&db).await?)
    } else {
        None
    };
    let mut rss_mb = stack.rss_report();
    rss_mb.extend(servers.report());
    stack.stop().await?;
    Ok(LoadReport {
        sustained,
        ramp,
        ledger,
        rss_mb,
        statements,
    })
}

async fn phase(
    stack: &mut Stack,
    db: &sqlx::PgPool,
    servers: &mut SharedServers,
    traffic: &Traffic,
    recorder: &Recorder,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let skipped_before = recorder.skipped.load(std::sync::atomic::Ordering::Relaxed);
    let mut driving = {
        let traffic = traffic.clone();
        tokio::spawn(async move { traffic.run(rate, duration).await })
    };
    // Sampling memory meanwhile, but ending when the traffic does, so that
    // the late messages are counted then. (Its length, measured to the next
    // whole second of this loop, made a step up to 10% short of its rate.)
    loop {
        tokio::select! {
            ended = &mut driving => break ended?,
            () = stack.sleep_sampling(Duration::from_secs(1)) => servers.sample(),
        }
    }
    stack.check_alive()?;
    let late = late_messages(db).await?;
    Ok(Phase {
        target_rate: rate,
        seconds: duration.as_secs_f64(),
        ops: recorder.take_ops(),
        skipped: recorder.skipped.load(std::sync::atomic::Ordering::Relaxed) - skipped_before,
        late,
    })
}

/// Messages accepted more than [`LATE_AFTER`] ago that have no final
/// status yet. Read from `messages.status` alone, so that `--bin` may load
/// any earlier release.
async fn late_messages(db: &sqlx::PgPool) -> anyhow::Result<i64> {
    let final_statuses: Vec<&str> = ledger::DELIVERED
        .into_iter()
        .chain(ledger::FAILED)
        .collect();
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE created_at < now() - make_interval(secs => $1) AND status <> ALL($2)",
    )
    .bind(LATE_AFTER.as_secs_f64())
    .bind(&final_statuses)
    .fetch_one(db)
    .await?)
}

/// Peak memory of the machine's Redis and Postgres while the run went on.
/// Postgres is many processes sharing its buffers: their proportional set
/// sizes (PSS) are summed, so shared memory is counted once.
#[derive(Default)]
struct SharedServers {
    redis_kb: u64,
    postgres_kb: u64,
}

impl SharedServers {
    fn sample(&mut self) {
        let mut postgres = 0;
        for (pid, command) in processes() {
            match command.as_str() {
                "redis-server" => self.redis_kb = self.redis_kb.max(pss_kb(pid)),
                "postgres" => postgres += pss_kb(pid),
                _ => {}
            }
        }
        self.postgres_kb = self.postgres_kb.max(postgres);
    }

    fn report(&self) -> Vec<(String, f64)> {
        vec![
            (
                "redis-server (shared)".into(),
                self.redis_kb as f64 / 1024.0,
            ),
            (
                "postgres, all processes (shared)".into(),
                self.postgres_kb as f64 / 1024.0,
            ),
        ]
    }
}

fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some((pid, command.trim().to_owned()))
        })
        .collect()
}

fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("Pss:"))?;
            line[4..].split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}
