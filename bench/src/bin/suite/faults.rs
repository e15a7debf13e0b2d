//! Fault runs: steady mixed traffic through the whole stack while one thing
//! goes wrong in the middle third of the run, then the accounting. A run
//! fails when an accepted message is lost, sent twice, or left without a
//! final status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sent_sim::Faults;

use crate::ledger::{self, Ledger};
use crate::stack::{Stack, StackOptions};
use crate::traffic::{Mix, Op, OpStats, Recorder, Traffic};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the baseline the others compare with.
    None,
    WorkerSigkill,
    RedisRestart,
    /// On a Redis Cluster of 3 primaries with a replica each, the primary of
    /// queue shard 0 SIGKILLed with its last 2 s of writes not replicated;
    /// its replica takes over.
    RedisClusterFailover,
    PostgresRestart,
    Sent5xx,
    Sent429Storm,
    SentSlow,
    SentDroppedConnections,
    WebhookDuplicatesReordered,
    GatewaySigterm,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::None,
        Fault::WorkerSigkill,
        Fault::RedisRestart,
        Fault::RedisClusterFailover,
        Fault::PostgresRestart,
        Fault::Sent5xx,
        Fault::Sent429Storm,
        Fault::SentSlow,
        Fault::SentDroppedConnections,
        Fault::WebhookDuplicatesReordered,
        Fault::GatewaySigterm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::WorkerSigkill => "worker-sigkill",
            Fault::RedisRestart => "redis-restart",
            Fault::RedisClusterFailover => "redis-cluster-failover",
            Fault::PostgresRestart => "postgres-restart",
            Fault::Sent5xx => "sent-5xx",
            Fault::Sent429Storm => "sent-429-storm",
            Fault::SentSlow => "sent-slow",
            Fault::SentDroppedConnections => "sent-drop",
            Fault::WebhookDuplicatesReordered => "webhook-dup-reorder",
            Fault::GatewaySigterm => "gateway-sigterm",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Fault::None => "no fault",
            Fault::WorkerSigkill => {
                "SIGKILL a worker every 2 s (and start it again), Sent answering in 0.5 s"
            }
            Fault::RedisRestart => "Redis killed, 2 s down, back empty",
            Fault::RedisClusterFailover => {
                "a Redis Cluster primary SIGKILLed mid-traffic, 2 s of its writes unreplicated; its replica takes over"
            }
            Fault::PostgresRestart => "Postgres crash-stopped, 2 s down, WAL recovery",
            Fault::Sent5xx => "30% of sends answered 5xx",
            Fault::Sent429Storm => "every send answered 429 (Retry-After 1 s) for 3 s, twice",
            Fault::SentSlow => "half the sends answered after 2 s",
            Fault::SentDroppedConnections => {
                "30% of send connections dropped (half after Sent took it)"
            }
            Fault::WebhookDuplicatesReordered => {
                "50% of webhooks twice, 50% of messages' last two swapped"
            }
            Fault::GatewaySigterm => "gateway SIGTERM under load, restarted 1 s after it exits",
        }
    }

    fn stack(self, name: &str) -> StackOptions {
        StackOptions {
            name: name.to_owned(),
            workers: 2,
            private_redis: self == Fault::RedisRestart,
            private_postgres: self == Fault::PostgresRestart,
            redis_cluster: self == Fault::RedisClusterFailover,
            log_level: "warn",
            bin: None,
            env: Vec::new(),
        }
    }

    /// The sim's misbehaviour while the fault is on, for the sim's faults.
    fn sim_faults(self) -> Option<Faults> {
        let faults = match self {
            // Every kill cuts sends in flight.
            Fault::WorkerSigkill => Faults {
                slow: 1.0,
                slow_ms: 500,
                ..Faults::default()
            },
            Fault::Sent5xx => Faults {
                rate_5xx: 0.3,
                ..Faults::default()
            },
            Fault::Sent429Storm => Faults {
                rate_429: 1.0,
                ..Faults::default()
            },
            Fault::SentSlow => Faults {
                slow: 0.5,
                slow_ms: 2_000,
                ..Faults::default()
            },
            Fault::SentDroppedConnections => Faults {
                drop: 0.3,
                ..Faults::default()
            },
            Fault::WebhookDuplicatesReordered => Faults {
                duplicate_webhook: 0.5,
                reorder_webhook: 0.5,
                ..Faults::default()
            },
            _ => return None,
        };
        Some(faults)
    }
}

/// How hard and how long.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Operations per second.
    pub rate: f64,
    pub duration: Duration,
    /// Longest wait for the backlog to settle after the traffic.
    pub settle_timeout: Duration,
}

/// What one fault run found.
pub struct FaultReport {
    pub fault: Fault,
    pub ledger: Ledger,
    /// The traffic's answers and latencies.
    pub ops: BTreeMap<Op, OpStats>,
    /// Requests answered 5xx or not at all (the client was told to retry).
    pub refused: u64,
    /// Requests in flight when the gateway got SIGTERM that got no answer.
    pub cut_off: u64,
    /// Notes of what the injection saw (exit status, recovery times).
    pub notes: Vec<String>,
}

impl FaultReport {
    pub fn broken_promises(&self) -> Vec<String> {
        let mut broken = self.ledger.broken_promises();
        if self.cut_off > 0 {
            broken.push(format!(
                "{} requests in flight at SIGTERM got no answer",
                self.cut_off
            ));
        }
        broken
    }
}

pub async fn run(
    fault: Fault,
    load: Load,
    results: &std::path::Path,
) -> anyhow::Result<FaultReport> {
    let mut stack = Stack::start(fault.stack(fault.name()), results).await?;
    let recorder = Recorder::new();
    let traffic = Traffic::new(&stack.gateway_url, recorder.clone(), Mix::MIXED);
    let driving = {
        let traffic = traffic.clone();
        tokio::spawn(async move { traffic.run(load.rate, load.duration).await })
    };

    let outcome = inject(fault, &mut stack, &traffic, &recorder, load.duration).await;
    driving.await?;
    // On an error the stack's processes are killed as it is dropped; its
    // database is left for a look.
    let notes = outcome.with_context(|| format!("injecting {}", fault.name()))?;
    stack.check_alive()?;

    let ledger = ledger::of_run(&stack, &recorder, load.settle_timeout).await?;
    let ops = recorder.take_ops();
    let refused = ops.values().map(OpStats::refused).sum();
    let cut_off = recorder
        .cut_off_after_mark
        .load(std::sync::atomic::Ordering::Relaxed);
    stack.stop().await?;
    Ok(FaultReport {
        fault,
        ledger,
        ops,
        refused,
        cut_off,
        notes,
    })
}

/// Waits for the middle third of the run, does the fault, and returns what
/// it noticed.
async fn inject(
    fault: Fault,
    stack: &mut Stack,
    traffic: &Traffic,
    recorder: &Arc<Recorder>,
    duration: Duration,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    let third = duration / 3;
    let mut notes = Vec::new();
    stack.sleep_sampling(third).await;
    match fault {
        Fault::None => {}
        Fault::WorkerSigkill => {
            sim_faults(stack, fault.sim_faults()).await?;
            let mut kills = 0;
            while started.elapsed() < 2 * third {
                stack.kill_and_restart_worker(kills % stack.workers.len())?;
                kills += 1;
                stack.sleep_sampling(Duration::from_secs(2)).await;
            }
            sim_faults(stack, None).await?;
            notes.push(format!("{kills} workers killed"));
        }
        Fault::RedisRestart => {
            // Workers paused, so that a backlog exists only in Redis (and
            // Postgres) when Redis dies.
            stack.signal_workers("STOP")?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let queued = stack.jobs_in_redis().await?;
            stack.restart_redis(Duration::from_secs(2)).await?;
            stack.signal_workers("CONT")?;
            notes.push(format!(
                "{queued} jobs were in Redis when it died (workers paused for 3 s before)"
            ));
        }
        Fault::RedisClusterFailover => {
            // The primary of shard 0's keys (the stack spread the 3 shards
            // over the 3 primaries): a third of the queue loses its node.
            // Its replica is paused for the 2 s before the kill, so that what
            // the primary acknowledged in those 2 s (jobs pushed, taken,
            // finished) is certainly lost with it rather than by a
            // millisecond's chance: jobs pushed then are gone, jobs finished
            // then are back. The stack's reconciler (a pass a second, a
            // message re-enqueued 5 s after its last progress) recovers the
            // lost ones well within the settle timeout, so this fault needs
            // no faster RECONCILE_* settings.
            let queue = stack.queue().await?;
            let key = queue.shards()[0].active_jobs_list();
            let failover = stack
                .kill_cluster_primary_of(&key, Duration::from_secs(2))
                .await?;
            let unreplicated = failover
                .unreplicated_bytes
                .map_or("?".to_owned(), |bytes| bytes.to_string());
            notes.push(format!(
                "killed node {} (port {}, primary of queue shard 0, {} keys) with {unreplicated} \
                 bytes of writes its replica (node {}, paused 2 s) never got; the cluster was \
                 ok again {:.2} s later, that replica the shard's primary",
                failover.killed,
                failover.killed_port,
                failover.killed_keys,
                failover.replica,
                failover.recovered.as_secs_f64(),
            ));
        }
        Fault::PostgresRestart => {
            stack.restart_postgres(Duration::from_secs(2)).await?;
        }
        Fault::Sent429Storm => {
            for _ in 0..2 {
                sim_faults(stack, fault.sim_faults()).await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                sim_faults(stack, None).await?;
                stack.sleep_sampling(Duration::from_secs(2)).await;
            }
        }
        Fault::GatewaySigterm => {
            // Big batches, so that requests are in flight at the signal.
            let mut burst = traffic.burst(16);
            tokio::time::sleep(Duration::from_millis(2)).await;
            let in_flight = recorder.mark();
            let (status, took) = stack.terminate_gateway().await?;
            while burst.join_next().await.is_some() {}
            notes.push(format!(
                "{in_flight} requests in flight at SIGTERM; the gateway exited with {status} \
                 {:.2} s later",
                took.as_secs_f64()
            ));
            anyhow::ensure!(status.success(), "gateway exit status {status}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            stack.restart_gateway().await?;
        }
        _ => {
            sim_faults(stack, fault.sim_faults()).await?;
            stack.sleep_sampling(third).await;
            sim_faults(stack, None).await?;
        }
    }
    let left = duration.saturating_sub(started.elapsed());
    stack.sleep_sampling(left).await;
    Ok(notes)
}

/// Sets the sim's faults (`None`: none).
async fn sim_faults(stack: &Stack, faults: Option<Faults>) -> anyhow::Result<()> {
    reqwest::Client::new()
        .post(format!("{}/_sim/faults", stack.sim_url))
        .json(&faults.unwrap_or_default())
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}
