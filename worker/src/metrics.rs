//! The worker's `GET /metrics` (Prometheus text) on `WORKER_METRICS_BIND`.
//! Gauges about shared state (queue depth, oldest job, backlogs, Redis
//! clients) are read when scraped, so every worker reports the same
//! fleet-wide values; the Postgres pool gauges are this worker's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use common::config::{Config, WorkerConfig};
use common::http_server::{self, Limits};
use common::queue::SendQueue;
use common::store::Store;
use tokio::net::TcpListener;
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
    /// For the forwarding gauges of configured destinations.
    config: Arc<Config>,
}

/// Binds the metrics listener; called before any other part of the worker
/// starts. A taken port stops the worker when `WORKER_METRICS_BIND` was set
/// (the error names it); when it was not, the worker takes a free port on the
/// same address instead and logs which, so several workers can share a host.
pub async fn bind(config: &WorkerConfig) -> anyhow::Result<TcpListener> {
    let addr = config.metrics_bind;
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && !config.metrics_bind_set => {
            let fallback = SocketAddr::new(addr.ip(), 0);
            let listener = TcpListener::bind(fallback).await.map_err(|e| {
                anyhow::anyhow!(
                    "WORKER_METRICS_BIND (not set): {addr} is taken and no free port on {}: {e}",
                    addr.ip()
                )
            })?;
            tracing::warn!(
                default = %addr,
                addr = %listener.local_addr()?,
                "the default metrics port is taken (another worker on this host?): serving metrics on a free port instead; set WORKER_METRICS_BIND to choose one"
            );
            listener
        }
        Err(e) => anyhow::bail!("WORKER_METRICS_BIND {addr}: {e}"),
    };
    tracing::info!(addr = %listener.local_addr()?, "worker metrics listening");
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` (from [`bind`]) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    queue: SendQueue,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    common::metrics::install();
    zero_counters();
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(Arc::new(Sources {
            store,
            queue,
            config,
        }));
    http_server::serve(listener, app, LIMITS, shutdown.cancelled_owned()).await;
    Ok(())
}

/// Counters the alert rules take `increase()` of exist from the start at 0,
/// so that their first increment is an increase (a series that appears at 1
/// has none) and `promtool`/dashboards see them before anything happened.
fn zero_counters() {
    use common::metrics::{JOBS, SENT_UNREADABLE_ANSWERS};
    for outcome in ["accepted", "failed", "retrying", "dead_lettered"] {
        metrics::counter!(JOBS, "outcome" => outcome).increment(0);
    }
    metrics::counter!(SENT_UNREADABLE_ANSWERS).increment(0);
    crate::retention::describe();
}

async fn render(State(sources): State<Arc<Sources>>) -> String {
    refresh_gauges(&sources).await;
    common::metrics::render()
}

async fn refresh_gauges(sources: &Sources) {
    use common::metrics::{
        INBOX_BACKLOG, QUEUE_DEPTH, QUEUE_OLDEST_AGE, REDIS_CLIENTS, WORKER_POSTGRES_POOL,
    };
    common::metrics::record_pool(WORKER_POSTGRES_POOL, sources.store.pool());
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
    crate::forward::refresh_gauges(&sources.store, &sources.config).await;
    let mut conn = sources.queue.connection();
    // One server answers one text; a cluster a text per node, of which the
    // node nearest its client limit is the one to watch.
    let Ok(answer) = redis::cmd("INFO")
        .arg("clients")
        .query_async::<redis::Value>(&mut conn)
        .await
    else {
        return;
    };
    let Some(info) = busiest(&answer) else { return };
    for (field, state) in [
        ("connected_clients", "connected"),
        ("blocked_clients", "blocked"),
    ] {
        if let Some(value) = info_field(&info, field) {
            metrics::gauge!(REDIS_CLIENTS, "state" => state).set(value);
        }
    }
    // Managed Redis may refuse CONFIG: then there is no "max" to show.
    // Redis 7 also reports maxclients in INFO clients.
    let max = match info_field(&info, "maxclients") {
        Some(max) => Some(max),
        None => redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxclients")
            .query_async::<Vec<String>>(&mut conn)
            .await
            .ok()
            .and_then(|pair| pair.get(1).and_then(|v| v.parse().ok())),
    };
    if let Some(max) = max {
        metrics::gauge!(REDIS_CLIENTS, "state" => "max").set(max);
    }
}

/// The `INFO` text of the node with the most clients for its limit, from a
/// server's answer (a text) or a cluster's (a map of node to text).
fn busiest(answer: &redis::Value) -> Option<String> {
    let texts: Vec<String> = match answer {
        redis::Value::Map(nodes) => nodes
            .iter()
            .filter_map(|(_, text)| redis::from_redis_value_ref(text).ok())
            .collect(),
        other => vec![redis::from_redis_value_ref(other).ok()?],
    };
    let load = |info: &String| {
        let connected = info_field(info, "connected_clients").unwrap_or(0.0);
        connected / info_field(info, "maxclients").unwrap_or(f64::MAX)
    };
    texts.into_iter().max_by(|a, b| load(a).total_cmp(&load(b)))
}

/// A numeric `field:value` line of Redis' `INFO` text.
fn info_field(info: &str, field: &str) -> Option<f64> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::{busiest, info_field};

    #[test]
    fn a_clusters_busiest_node_is_reported() {
        let node = |connected: u32| {
            redis::Value::BulkString(
                format!("connected_clients:{connected}\r\nmaxclients:100\r\n").into_bytes(),
            )
        };
        let cluster = redis::Value::Map(vec![
            (redis::Value::SimpleString("a:1".into()), node(5)),
            (redis::Value::SimpleString("b:2".into()), node(60)),
        ]);
        let info = busiest(&cluster).unwrap();
        assert_eq!(info_field(&info, "connected_clients"), Some(60.0));
        assert_eq!(
            busiest(&node(3))
                .as_deref()
                .and_then(|i| info_field(i, "connected_clients")),
            Some(3.0)
        );
    }

    #[test]
    fn reads_info_fields() {
        let info = "# Clients\r\nconnected_clients:7\r\ncluster_connections:0\r\nmaxclients:10000\r\nblocked_clients:2\r\n";
        assert_eq!(info_field(info, "connected_clients"), Some(7.0));
        assert_eq!(info_field(info, "maxclients"), Some(10000.0));
        assert_eq!(info_field(info, "blocked_clients"), Some(2.0));
        assert_eq!(info_field(info, "nope"), None);
    }
}
