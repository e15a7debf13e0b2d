//! The gateway's shutdown: never reset a request already on its way.

use std::time::Duration;

use common::config::Config;
use common::http_server::{self, Limits};
use tokio::net::TcpListener;

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
    let delay = state.config.gateway.shutdown_delay;
    let limits = Limits {
        idle_timeout: state.config.gateway.idle_timeout,
        drain: longest_shutdown(&state.config) - delay,
    };
    let stop_listening = async move {
        stop.await;
        tracing::info!(
            delay_secs = delay.as_secs(),
            "shutting down: still accepting, /health answers 503"
        );
        draining.cancel();
        tokio::time::sleep(delay).await;
    };
    http_server::serve(listener, app::router(state), limits, stop_listening).await;
}

/// The longest a shutdown takes, from the signal to the exit.
pub fn longest_shutdown(config: &Config) -> Duration {
    config.gateway.shutdown_delay + config.gateway.request_timeout + DRAIN_MARGIN
}
