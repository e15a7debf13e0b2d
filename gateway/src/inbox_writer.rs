//! Group commit of verified webhook events into the inbox, as `accept.rs`
//! does for messages: concurrent requests hand their event to a few committer
//! tasks; each takes everything waiting, inserts it in one transaction, and
//! only after the commit answers every request. A batch grows by itself under
//! load and is a single row when idle, so there is no timer to tune.

use std::sync::Arc;

use common::store::{InboxInsert, InboxInsertOutcome, Store};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::ApiError;

/// Most events written in one transaction.
const MAX_BATCH_EVENTS: usize = 1000;
/// Most body bytes written in one transaction (bodies can be up to `MAX_BODY_BYTES`).
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Concurrent transactions; enough to overlap one batch's commit with the next.
const COMMITTERS: usize = 4;

struct Pending {
    event: InboxInsert,
    reply: oneshot::Sender<Result<InboxInsertOutcome, ApiError>>,
}

#[derive(Clone)]
pub struct InboxWriter {
    tx: mpsc::Sender<Pending>,
}

impl InboxWriter {
    pub fn start(store: Store) -> InboxWriter {
        let (tx, rx) = mpsc::channel::<Pending>(16 * 1024);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..COMMITTERS {
            let (rx, store) = (rx.clone(), store.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx).await {
                    commit(&store, batch).await;
                }
            });
        }
        InboxWriter { tx }
    }

    /// Durably stores the event (or finds it already stored), or says why it
    /// could not: then the caller must not acknowledge it.
    pub async fn store(&self, event: InboxInsert) -> Result<InboxInsertOutcome, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { event, reply })
            .await
            .map_err(|_| ApiError::Unavailable("shutting down"))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("inbox committer stopped".into()))?
    }
}

async fn next_batch(rx: &Mutex<mpsc::Receiver<Pending>>) -> Option<Vec<Pending>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut bytes = first.event.body.len();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_EVENTS && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(next) => {
                bytes += next.event.body.len();
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn commit(store: &Store, batch: Vec<Pending>) {
    let (events, replies): (Vec<InboxInsert>, Vec<_>) =
        batch.into_iter().map(|p| (p.event, p.reply)).unzip();
    match store.insert_inbox(&events).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) => {
            // Whatever the cause, the events are not stored: the sender must
            // retry, which a 503 asks for. (A 500 would too, but this is
            // almost always the database being unreachable.)
            tracing::warn!(%error, events = events.len(), "could not store webhook events");
            for reply in replies {
                let _ = reply.send(Err(ApiError::Unavailable("postgres")));
            }
        }
    }
}
