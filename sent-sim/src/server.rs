//! Serves connections with hyper directly, so a handler can ask for its
//! connection to be closed without any HTTP answer (the drop fault): the
//! service then returns an error, and hyper closes the socket.

use std::fmt;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Response extension asking the server to close the connection instead of answering.
#[derive(Debug, Clone, Copy)]
struct DropConnection;

/// A response that is never sent: the connection is closed instead.
pub(crate) fn drop_connection() -> Response {
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(DropConnection);
    response
}

/// True for a [`drop_connection`] response.
pub(crate) fn is_dropped(response: &Response) -> bool {
    response.extensions().get::<DropConnection>().is_some()
}

/// The error that makes hyper abandon the connection.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Accepts connections until `cancel`, then drains in-flight requests.
pub(crate) async fn serve(listener: TcpListener, router: Router, cancel: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    // No header read timeout: it would also close idle keep-alive connections
    // after 30 s, racing clients that reuse pooled connections.
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let router = router.clone();
            async move {
                let response = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if is_dropped(&response) {
                    Err(Dropped)
                } else {
                    Ok(response)
                }
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}
