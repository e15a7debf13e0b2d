//! The worker process: every component started together, stopped together.

use std::future::Future;
use std::sync::Arc;

use common::config::Config;
use common::queue::SendQueue;
use common::sent::client::SentClient;
use common::store::Store;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::send::{self, Sender};
use crate::{callbacks, forward, inbox, poll, reconcile, retention, rollup};

/// Runs the send worker, the status poll, the reconciler, the inbox
/// processor, the forwarder and the callback sender until `shutdown` is cancelled, then lets each finish its in-flight
/// work (sends: up to `WORKER_SHUTDOWN_GRACE_SECS`). When one component fails,
/// the others are stopped too and its error is returned.
pub async fn run_worker(
    config: Arc<Config>,
    store: Store,
    redis: common::redis_conn::Redis,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // First: a taken WORKER_METRICS_BIND stops the worker before any work.
    let metrics_listener = crate::metrics::bind(&config.worker).await?;
    let stop = shutdown.child_token();
    let sender = Arc::new(Sender::new(
        &config,
        store.clone(),
        redis.clone(),
        stop.clone(),
    )?);
    let queue = SendQueue::new(redis.clone(), &config.redis_prefix, config.sharding);
    let status_client = SentClient::new(&config.sent, config.require_sent_api_key()?, 2)?;
    tracing::info!(
        concurrency = config.worker.concurrency,
        max_attempts = config.worker.max_attempts,
        crash_recovery_secs = (config.worker.heartbeat_interval * config.worker.missed_heartbeats as u32).as_secs(),
        sent = %config.sent.base_url,
        "worker starting"
    );

    let mut components = JoinSet::new();
    spawn(
        &mut components,
        "send",
        send::run(config.clone(), sender, redis.clone(), stop.clone()),
    );
    spawn(
        &mut components,
        "status poll",
        poll::run(
            store.clone(),
            status_client,
            redis,
            config.clone(),
            stop.clone(),
        ),
    );
    spawn(
        &mut components,
        "reconciler",
        reconcile::run(store.clone(), queue.clone(), config.clone(), stop.clone()),
    );
    spawn(
        &mut components,
        "dashboard rollup",
        rollup::run(store.clone(), stop.clone()),
    );
    spawn(
        &mut components,
        "message retention",
        retention::run(store.clone(), config.clone(), stop.clone()),
    );
    spawn(
        &mut components,
        "inbox",
        inbox::run(store.clone(), config.clone(), stop.clone()),
    );
    spawn(
        &mut components,
        "metrics",
        crate::metrics::serve(
            metrics_listener,
            store.clone(),
            queue.clone(),
            config.clone(),
            stop.clone(),
        ),
    );
    spawn(
        &mut components,
        "forwarding",
        forward::run(store.clone(), config.clone(), stop.clone()),
    );
    spawn(
        &mut components,
        "callbacks",
        callbacks::run(store, config, stop.clone()),
    );

    let mut failure = None;
    while let Some(joined) = components.join_next().await {
        let (name, result) =
            joined.unwrap_or_else(|e| ("a component", Err(anyhow::anyhow!("panicked: {e}"))));
        let error = match result {
            Ok(()) if stop.is_cancelled() => continue,
            Ok(()) => anyhow::anyhow!("stopped on its own"),
            Err(error) => error,
        };
        tracing::error!(component = name, error = %format!("{error:#}"), "worker component failed; stopping the worker");
        failure.get_or_insert(error.context(format!("worker component {name}")));
        stop.cancel();
    }
    match failure {
        Some(error) => Err(error),
        None => {
            tracing::info!("worker stopped");
            Ok(())
        }
    }
}

fn spawn(
    set: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
    name: &'static str,
    component: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) {
    set.spawn(async move { (name, component.await) });
}
