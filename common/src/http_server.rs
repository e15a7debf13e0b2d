//! Serving an axum router: connections, their timeouts, and a shutdown that
//! lets requests already on their way finish. The gateway's API and the
//! worker's `/metrics` both use it.
//!
//! hyper's HTTP/1 server rather than `axum::serve`, which runs connections
//! without a timer: a client could hold a connection forever by sending its
//! request head a byte at a time, or by keeping it idle. (HTTP/1 only: load
//! balancers and Prometheus speak it to their backends.)

use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// How connections are kept and how long a shutdown may wait for them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that has not sent a whole request head for this long
    /// (idle between requests, or sending slowly) is closed.
    pub idle_timeout: Duration,
    /// Once listening stopped, how long requests in flight get before their
    /// connections are closed.
    pub drain: Duration,
}

/// Serves `router` on `listener` until `stop_listening` resolves, then stops
/// accepting and waits for the requests in flight, for at most
/// `limits.drain`. Handlers see the client's address as axum's
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop_listening: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    let connections = GracefulShutdown::new();
    // Which server a shutdown line is about: the gateway's API or /metrics.
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |addr| addr.to_string());
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
    tracing::info!(%addr, "stopped listening; finishing in-flight requests");
    if tokio::time::timeout(limits.drain, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            %addr,
            after_secs = limits.drain.as_secs(),
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
