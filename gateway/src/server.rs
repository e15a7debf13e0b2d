//! The HTTP server around the router: connections, their timeouts, and a
//! shutdown that never resets a request already on its way.
//!
//! hyper's HTTP/1 server rather than `axum::serve`, which runs connections
//! without a timer: a client could hold a connection forever by sending its
//! request head a byte at a time, or by keeping it idle. (The gateway served
//! HTTP/1 only before too; load balancers speak HTTP/1 to their backends.)

use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use common::config::Config;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::app;

/// Time past `REQUEST_TIMEOUT_SECS` that requests still open after the
/// gateway stopped listening get before their connections are closed: every
/// handler has answered by then, so only a client that never reads its
/// answer is cut.
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
///
/// A connection that has not sent a whole request head for
/// `GATEWAY_IDLE_TIMEOUT_SECS` (idle between requests, or sending slowly)
/// is closed.
pub async fn serve(
    listener: TcpListener,
    state: app::AppState,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let draining = state.draining.clone();
    let delay = state.config.shutdown_delay;
    let drain_bound = longest_shutdown(&state.config) - delay;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.idle_timeout);
    let router = app::router(state);
    let connections = GracefulShutdown::new();
    let stop_listening = async {
        stop.await;
        tracing::info!(
            delay_secs = delay.as_secs(),
            "shutting down: still accepting, /health answers 503"
        );
        draining.cancel();
        tokio::time::sleep(delay).await;
    };
    tokio::pin!(stop_listening);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut stop_listening => break,
        };
        // What axum's `ConnectInfo` extractor (the rate limit's client IP) reads.
        let service = router.clone().map_request(move |mut request: Request<_>| {
            request.extensions_mut().insert(ConnectInfo(client));
            request
        });
        let connection = http.serve_connection(io(stream), TowerToHyperService::new(service));
        tokio::spawn(connections.watch(connection));
    }
    drop(listener);
    tracing::info!("stopped listening; finishing in-flight requests");
    if tokio::time::timeout(drain_bound, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            after_secs = drain_bound.as_secs(),
            "requests still open; closing their connections"
        );
    }
}

fn io(stream: TcpStream) -> TokioIo<TcpStream> {
    // Answers are small and written whole: send them without delay.
    let _ = stream.set_nodelay(true);
    TokioIo::new(stream)
}

/// A failed `accept`: the client gave up (try the next one at once), or
/// the process is out of file descriptors or memory (wait for some to free).
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
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
