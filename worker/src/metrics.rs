//! The worker's `GET /metrics` (Prometheus text) on `WORKER_METRICS_BIND`.
//! Gauges about shared state (queue depth, oldest job, backlogs) are read
//! when scraped, so every worker reports the same fleet-wide values.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::config::Config;
use common::http_server::{self, Limits};
use common::queue::SendQueue;
use common::store::Store;
use tokio_util::sync::CancellationToken;

/// Prometheus scrapes every 15 to 60 s on a kept-alive connection; a scrape
/// answers in milliseconds.
const LIMITS: Limits = Limits {
    idle_timeout: Duration::from_secs(75),
    drain: Duration::from_secs(5),
};

#[derive(Clone)]
struct Sources {
    store: Store,
    queue: SendQueue,
}

pub async fn serve(
    store: Store,
    queue: SendQueue,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    common::metrics::install();
    let listener = tokio::net::TcpListener::bind(config.worker.metrics_bind)
        .await
        .map_err(|e| anyhow::anyhow!("WORKER_METRICS_BIND {}: {e}", config.worker.metrics_bind))?;
    tracing::info!(addr = %listener.local_addr()?, "worker metrics listening");
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(Sources { store, queue });
    http_server::serve(listener, app, LIMITS, shutdown.cancelled_owned()).await;
    Ok(())
}

async fn render(State(sources): State<Sources>) -> String {
    refresh_gauges(&sources).await;
    common::metrics::render()
}

async fn refresh_gauges(sources: &Sources) {
    use common::metrics::{INBOX_BACKLOG, QUEUE_DEPTH, QUEUE_OLDEST_AGE};
    if let Ok((ready, scheduled)) = sources.queue.depth().await {
        metrics::gauge!(QUEUE_DEPTH, "state" => "ready").set(ready as f64);
        metrics::gauge!(QUEUE_DEPTH, "state" => "scheduled").set(scheduled as f64);
    }
    if let Ok(age) = sources.queue.oldest_due_age().await {
        metrics::gauge!(QUEUE_OLDEST_AGE).set(age.as_secs_f64());
    }
    if let Ok((inbox, callbacks)) = sources.store.backlogs().await {
        metrics::gauge!(INBOX_BACKLOG, "kind" => "webhooks").set(inbox as f64);
        metrics::gauge!(INBOX_BACKLOG, "kind" => "callbacks").set(callbacks as f64);
    }
}
