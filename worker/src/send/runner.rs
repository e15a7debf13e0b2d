//! The apalis worker that runs send jobs: the handler, and the loop that
//! keeps an apalis worker running (a new one, under a new name, after a
//! failure). The handler answers apalis `Ok` once the attempt's outcome is
//! recorded, and `Err` only when Postgres or Redis could not be reached.
//!
//! Crash safety comes from apalis-redis: each worker heartbeats; the jobs of
//! a worker silent for `heartbeat_interval x missed_heartbeats` go back on the
//! queue at the next heartbeat of any live worker (default 5 s x 3: 15 to
//! 21 s). The message id as Sent's `Idempotency-Key` makes the second send of
//! a job harmless.
//!
//! Two gaps of apalis-redis 1.0 are covered here: it promotes every due job
//! in one Lua `unpack`, which fails past about 8,000 jobs (so workers promote
//! in bounded steps, [`SendQueue::promote_due`]), and it stops heartbeating
//! while it drains on shutdown (so the drain heartbeats itself).

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis::prelude::{
    BoxDynError, Data, PollSnapshot, PollStrategy, PollWith, WorkerBuilder, WorkerBuilderExt,
    WorkerContext,
};
use apalis_redis::RedisStorage;
use common::config::Config;
use common::queue::{SendJob, SendQueue, ShardBy};
use common::redis_conn::Redis;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::attempt::{Processed, Sender};

/// How often an idle worker looks for due jobs (a busy one fetches again as
/// soon as it has room). apalis-redis puts every job, due now or later, in
/// its scheduled set, and a fetch promotes the due ones: this interval is most
/// of the queue wait of a message sent to an idle worker. An idle fetch costs
/// Redis a few microseconds.
const FETCH_POLL: Duration = Duration::from_millis(20);
/// How often the promoter moves due jobs in bounded steps while there are few.
const PROMOTE_POLL: Duration = Duration::from_millis(50);
/// Due jobs moved to the active list per Redis call.
const PROMOTE_BATCH: usize = 1000;
/// Most jobs one fetch takes from Redis.
const MAX_BATCH: usize = 32;

/// The apalis handler. The attempt runs as a task of its own: jobs use both
/// cores, and an attempt, once started, is recorded even if the worker stops
/// waiting for it.
async fn handle(job: SendJob, sender: Data<Arc<Sender>>) -> Result<(), BoxDynError> {
    let sender = Arc::clone(&sender);
    let span = tracing::info_span!("send", message_id = %job.message_id());
    // The job carries the trace of the request that queued the message.
    common::telemetry::set_parent(&span, job.trace());
    let attempt = async move { sender.process(&job).await }.instrument(span);
    match tokio::spawn(attempt).await {
        Ok(Ok(processed)) => {
            let outcome = match processed {
                Processed::Skipped => "skipped",
                Processed::Accepted => "accepted",
                Processed::Failed { .. } => "failed",
                Processed::Retrying { .. } => "retrying",
                Processed::DeadLettered { .. } => "dead_lettered",
                Processed::Deferred => "deferred",
            };
            metrics::counter!(common::metrics::JOBS, "outcome" => outcome).increment(1);
            Ok(())
        }
        Ok(Err(error)) => {
            metrics::counter!(common::metrics::JOBS, "outcome" => "error").increment(1);
            tracing::warn!(%error, "send job could not be recorded; apalis will retry it");
            Err(error.into())
        }
        Err(join) => Err(Box::new(join)),
    }
}

/// Runs an apalis worker on each shard of the send queue until `shutdown`,
/// then stops fetching and lets in-flight jobs finish for up to
/// `shutdown_grace`. A
/// worker that loses Redis (or is declared dead by its peers) is replaced by
/// a fresh one under a new name.
pub async fn run(
    config: Arc<Config>,
    sender: Arc<Sender>,
    redis: Redis,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queue = SendQueue::new(redis.clone(), &config.redis_prefix, config.sharding);
    // A backlog is promoted in bounded steps before apalis' first fetch.
    while let Ok(PROMOTE_BATCH) = queue.promote_due(PROMOTE_BATCH).await {}
    let promoter = tokio::spawn(promote(queue.clone(), shutdown.clone()));
    // Shards by message id share the work evenly: the process's concurrency
    // is shared out. Shards by client are lanes that must not wait for each
    // other: each has the whole of it (the Sent budget and Postgres pool
    // still bound what runs at once).
    let concurrency = match queue.sharded_by() {
        ShardBy::Message => config
            .worker
            .concurrency
            .div_ceil(queue.shards().len())
            .max(1),
        ShardBy::Client => config.worker.concurrency,
    };
    let shards = queue.shards().iter().map(|shard| {
        let storage = storage_config(&config, shard.clone(), concurrency);
        supervise(&config, &sender, &redis, (storage, concurrency), &shutdown)
    });
    futures::future::join_all(shards).await;
    let _ = promoter.await;
    Ok(())
}

/// Keeps an apalis worker running on one shard until `shutdown`.
async fn supervise(
    config: &Config,
    sender: &Arc<Sender>,
    redis: &Redis,
    shard: (apalis_redis::Config, usize),
    shutdown: &CancellationToken,
) {
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        match run_once(config, sender, redis, &shard, shutdown).await {
            Ok(()) if shutdown.is_cancelled() => break,
            Ok(()) => tracing::warn!("send worker stopped unexpectedly; starting a new one"),
            Err(error) => tracing::warn!(%error, "send worker failed; starting a new one"),
        }
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        failures += 1;
        let pause = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Keeps due jobs moving from apalis' scheduled set to its active list (see
/// [`SendQueue::promote_due`]), a bounded step at a time, until `shutdown`.
async fn promote(queue: SendQueue, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        let wait = match queue.promote_due(PROMOTE_BATCH).await {
            Ok(moved) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("promoting due jobs again");
                }
                if moved == PROMOTE_BATCH {
                    Duration::ZERO
                } else {
                    PROMOTE_POLL
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "cannot promote due jobs (redis); retrying");
                }
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The apalis-redis configuration of a shard of the send queue, for a
/// worker taking up to `concurrency` of its jobs at once.
pub fn storage_config(
    config: &Config,
    shard: apalis_redis::Config,
    concurrency: usize,
) -> apalis_redis::Config {
    shard
        // apalis' task leases only mark a task `Running` in its metadata, at
        // the cost of an LREM over the whole active list per task (quadratic
        // in a backlog). Crash recovery does not need them: a fetch puts the
        // task in the worker's in-flight set, and a dead worker's set goes
        // back on the queue.
        .lock_tasks(false)
        .heartbeat_interval(config.worker.heartbeat_interval)
        .missed_heartbeats(config.worker.missed_heartbeats)
        .batch_size(concurrency.clamp(1, MAX_BATCH))
}

async fn run_once(
    config: &Config,
    sender: &Arc<Sender>,
    redis: &Redis,
    (storage, concurrency): &(apalis_redis::Config, usize),
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let name = format!("worker-{}-{}", std::process::id(), ulid::Ulid::generate());
    let workers_set = storage.workers_set();
    let concurrency = *concurrency;
    let storage = RedisStorage::<SendJob, Redis>::new(redis.clone()).with_config(storage.clone());
    let backend = PollWith::new(storage, IdleTicks::new());
    let context = WorkerContext::new(&name);
    let worker = WorkerBuilder::new(context.clone())
        .backend(backend)
        .concurrency(concurrency)
        .data(Arc::clone(sender))
        .build(handle);
    tracing::info!(worker = %name, concurrency, "send worker started");

    let mut events = pin!(worker.stream());
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // apalis does not heartbeat while it drains; a long drain would look
    // like a dead worker and its jobs would be sent again elsewhere.
    let mut drain_heartbeat = tokio::time::interval(
        config
            .worker
            .heartbeat_interval
            .max(Duration::from_millis(100)),
    );
    loop {
        tokio::select! {
            _ = drain_heartbeat.tick(), if drain_deadline.is_some() => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                let beat: Result<i64, _> =
                    redis::cmd("ZADD").arg(&workers_set).arg("XX").arg(now).arg(&name).query_async(&mut redis.clone()).await;
                if let Err(error) = beat {
                    tracing::debug!(%error, "heartbeat while draining failed");
                }
            }
            event = events.next() => match event {
                None => return Ok(()),
                Some(Ok(_)) => {}
                // After a backend error apalis' state machine must not be
                // polled again; in-flight attempts finish on their own tasks.
                Some(Err(error)) => return Err(error.into()),
            },
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                tracing::info!(worker = %name, in_flight = context.task_count(), "stopping: finishing in-flight sends");
                drain_deadline = Some(tokio::time::Instant::now() + config.worker.shutdown_grace);
                if context.stop().is_err() {
                    return Ok(()); // never started
                }
            }
            _ = sleep_until(drain_deadline) => {
                tracing::warn!(
                    worker = %name,
                    in_flight = context.task_count(),
                    "in-flight sends did not finish in time; their jobs return to the queue once this worker's heartbeat lapses"
                );
                return Ok(());
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Wakes an idle worker every [`FETCH_POLL`] so that it fetches due jobs.
///
/// apalis' `StreamStrategy` polls its stream once per fetch: when a tick was
/// already due at that moment it is consumed and no wake-up is armed for the
/// next one, so a worker whose fetch came back empty slept until something
/// else woke it, usually its next heartbeat (5 s, with jobs waiting). This
/// strategy always leaves the next tick armed.
struct IdleTicks(tokio::time::Interval);

impl IdleTicks {
    fn new() -> IdleTicks {
        let mut interval = tokio::time::interval(FETCH_POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        IdleTicks(interval)
    }
}

impl PollStrategy for IdleTicks {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut ticked = false;
        // Ready ticks are consumed until one is pending: its waker is registered.
        while self.0.poll_tick(cx).is_ready() {
            ticked = true;
        }
        if ticked {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
