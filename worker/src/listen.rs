//! Wake-ups by Postgres LISTEN/NOTIFY: the inbox and the callback sender
//! each wait on a channel that a trigger notifies when work arrives, and
//! poll as a fallback.

use std::sync::Arc;
use std::time::Duration;

use common::store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Wakes `wake` on every notification on `channel`, reconnecting as needed
/// (and waking once after each reconnect, for what was missed meanwhile).
pub async fn listen(
    store: Store,
    channel: &'static str,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let pause = Duration::from_secs(1);
    while !shutdown.is_cancelled() {
        let mut listener = match store.listener().await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(%error, channel, "LISTEN connection failed; polling meanwhile");
                tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(pause) => continue }
            }
        };
        if let Err(error) = listener.listen(channel).await {
            tracing::debug!(%error, channel, "LISTEN failed; polling meanwhile");
            tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(pause) => continue }
        }
        wake.notify_one();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => wake.notify_one(),
                    // Reconnected: notifications may have been missed.
                    Ok(None) => wake.notify_one(),
                    Err(error) => {
                        tracing::debug!(%error, channel, "LISTEN connection lost");
                        break;
                    }
                },
            }
        }
        tokio::select! { _ = shutdown.cancelled() => return, _ = tokio::time::sleep(pause) => {} }
    }
}
