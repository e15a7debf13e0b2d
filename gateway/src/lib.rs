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

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Connects to the dependencies, waiting a while for them at start-up (as in
/// a compose stack where they start together), and migrates the database.
/// Shared with the worker.
pub use common::startup::connect;

/// Serves until SIGTERM or SIGINT, then drains in-flight requests.
pub async fn serve(listener: TcpListener, state: app::AppState) -> anyhow::Result<()> {
    let app = app::router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
