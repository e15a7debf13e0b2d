//! Re-driving dead-lettered messages: back to `queued`, and a new job each.

use std::time::Duration;

use chrono::Utc;
use common::domain::MessageId;
use common::queue::{SendJob, SendQueue};
use common::store::{Store, Unsent};

/// Which dead-lettered messages to re-drive.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Ids(Vec<MessageId>),
}

/// What a re-drive did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Redriven {
    /// Back on the queue.
    pub ids: Vec<MessageId>,
    /// Left dead-lettered: their first attempt is too old to send again
    /// safely (see [`redrive`]).
    pub refused: Vec<String>,
}

/// Re-drives the selected dead-lettered messages. Ids that are not
/// dead-lettered are left alone. Should the enqueue fail, the messages are
/// `queued` in Postgres and the reconciler enqueues them.
///
/// Unless `force`, a message whose first attempt was more than
/// `safe_window` ago is refused: Sent keeps an `Idempotency-Key` for 24
/// hours, so if that attempt reached Sent, a re-drive ending after that
/// could send the message a second time. The caller passes Sent's window
/// less the longest the re-drive's own retries can take.
pub async fn redrive(
    store: &Store,
    queue: &SendQueue,
    selection: &Selection,
    safe_window: Duration,
    force: bool,
) -> anyhow::Result<Redriven> {
    let ids: Option<Vec<String>> = match selection {
        Selection::All => None,
        Selection::Ids(ids) => Some(ids.iter().map(ToString::to_string).collect()),
    };
    let first_attempt_after = (!force).then(|| {
        Utc::now() - chrono::Duration::from_std(safe_window).unwrap_or(chrono::Duration::zero())
    });
    let (redriven, refused) = store.redrive(ids.as_deref(), first_attempt_after).await?;
    let ids: Vec<MessageId> = redriven.iter().map(|m| m.id).collect();
    let jobs: Vec<SendJob> = redriven.into_iter().map(Unsent::job).collect();
    for chunk in jobs.chunks(500) {
        // A new task id each: the message's first task may still be in Redis, finished.
        queue.enqueue_again(chunk).await.map_err(|e| {
            anyhow::anyhow!(
                "{} message(s) re-driven in Postgres but not enqueued ({e}); the reconciler will enqueue them",
                ids.len()
            )
        })?;
    }
    Ok(Redriven { ids, refused })
}
