//! The HTTP gateway: validates, stores and enqueues messages, answers 202.

pub mod accept;
pub mod app;
pub mod auth;
pub mod cli;
pub mod error;
pub mod json;
pub mod rate_limit;
pub mod routes;
pub mod validation;

use std::net::SocketAddr;

use common::config::Config;
use common::store::Store;
use tokio::net::TcpListener;

/// Connects to the dependencies, waiting a while for them at start-up (as in
/// a compose stack where they start together), and migrates the database.
pub async fn connect(config: &Config) -> anyhow::Result<(Store, redis::aio::ConnectionManager)> {
    let store = Store::connect_lazy(config.database_url.expose(), config.database_max_connections)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    retry_startup("postgres (DATABASE_URL)", || store.migrate()).await?;
    let redis = retry_startup("redis (REDIS_URL)", || common::queue::connect(config.redis_url.expose())).await?;
    Ok((store, redis))
}

async fn retry_startup<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "waiting for {what}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => anyhow::bail!("{what} unreachable: {e}"),
        }
    }
}

/// Serves until SIGTERM or SIGINT, then drains in-flight requests.
pub async fn serve(listener: TcpListener, state: app::AppState) -> anyhow::Result<()> {
    let app = app::router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        signal.recv().await;
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}
