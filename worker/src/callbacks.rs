//! Status callbacks to clients. (Being written.)

use std::sync::Arc;

use common::config::Config;
use common::store::Store;
use tokio_util::sync::CancellationToken;

/// Delivers due callbacks until `shutdown` is cancelled.
pub async fn run(store: Store, config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _ = (store, config);
    shutdown.cancelled().await;
    Ok(())
}
