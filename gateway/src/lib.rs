//! The HTTP gateway: validates, stores and enqueues messages, answers 202.

pub mod accept;
pub mod app;
pub mod auth;
pub mod cli;
pub mod error;
pub mod inbox_writer;
pub mod json;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod validation;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use common::config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connects to the dependencies, waiting a while for them at start-up (as in
/// a compose stack where they start together), and migrates the database.
/// Shared with the worker.
pub use common::startup::connect;

/// Time past `REQUEST_TIMEOUT_SECS` that requests still open after the
/// gateway stopped listening get before their connections are closed: every
/// handler has answered by then, so only a client that never finished sending
/// its request is cut.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// Serves until `stop` resolves (SIGTERM or SIGINT in the binary), then shuts
/// down without cutting off a client:
///
/// 1. For `GATEWAY_SHUTDOWN_DELAY_SECS` it keeps accepting connections, but
///    `/health` answers 503 and every response closes its connection, so load
///    balancers and pooled clients move elsewhere. A request already on its
///    way (in the listen backlog, or written on a kept-alive connection) is
///    answered rather than reset.
/// 2. It stops listening and lets in-flight requests finish, for at most
///    `REQUEST_TIMEOUT_SECS` plus a margin.
pub async fn serve(
    listener: TcpListener,
    state: app::AppState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let draining = state.draining.clone();
    let delay = state.config.shutdown_delay;
    let drain_bound = longest_shutdown(&state.config) - delay;
    let stopped_listening = CancellationToken::new();
    let stop_listening = {
        let stopped_listening = stopped_listening.clone();
        async move {
            stop.await;
            tracing::info!(
                delay_secs = delay.as_secs(),
                "shutting down: still accepting, /health answers 503"
            );
            draining.cancel();
            tokio::time::sleep(delay).await;
            tracing::info!("stopped listening; finishing in-flight requests");
            stopped_listening.cancel();
        }
    };
    let app = app::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stop_listening)
        .into_future();
    let drain_deadline = async {
        stopped_listening.cancelled().await;
        tokio::time::sleep(drain_bound).await;
    };
    tokio::select! {
        served = server => served?,
        () = drain_deadline => {
            tracing::warn!(after_secs = drain_bound.as_secs(), "requests still open; closing their connections");
        }
    }
    Ok(())
}

/// The longest a shutdown takes, from the signal to the exit.
pub fn longest_shutdown(config: &Config) -> Duration {
    config.shutdown_delay + config.request_timeout + DRAIN_MARGIN
}

/// SIGTERM (from an orchestrator) or SIGINT (Ctrl-C).
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
}
