//! Re-driving dead-lettered messages: back to `queued`, and a new job each.

use common::domain::MessageId;
use common::queue::{SendJob, SendQueue};
use common::store::Store;

/// Which dead-lettered messages to re-drive.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<MessageId>),
}

/// Re-drives the selected dead-lettered messages and returns their ids.
/// Ids that are not dead-lettered are left alone. Should the enqueue fail,
/// the messages are `queued` in Postgres and the reconciler enqueues them.
pub async fn redrive(
    store: &Store,
    queue: &SendQueue,
    selection: &Selection,
) -> anyhow::Result<Vec<MessageId>> {
    let ids: Option<Vec<String>> = match selection {
        Selection::All => None,
        Selection::Ids(ids) => Some(ids.iter().map(ToString::to_string).collect()),
    };
    let redriven = store.redrive(ids.as_deref()).await?;
    let ids: Vec<MessageId> = redriven.iter().map(|m| m.id).collect();
    let jobs: Vec<SendJob> = redriven
        .into_iter()
        .map(|message| SendJob::new(message.id, message.trace))
        .collect();
    for chunk in jobs.chunks(500) {
        // A new task id each: the message's first task may still be in Redis, finished.
        queue.enqueue_again(chunk).await.map_err(|e| {
            anyhow::anyhow!(
                "{} message(s) re-driven in Postgres but not enqueued ({e}); the reconciler will enqueue them",
                ids.len()
            )
        })?;
    }
    Ok(ids)
}
