//! Applies stored webhook events (the inbox) to messages. (Being written.)

use std::sync::Arc;

use common::config::Config;
use common::store::Store;
use tokio_util::sync::CancellationToken;

/// Processes the inbox until `shutdown` is cancelled.
pub async fn run(store: Store, config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _ = (store, config);
    shutdown.cancelled().await;
    Ok(())
}
