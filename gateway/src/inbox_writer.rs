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
/// Concurrent transactions: two overlap one batch's commit with the next.
/// More made smaller batches and cost more CPU per event in the gateway and
/// in Postgres (bench/webhooks.sh: 4 committers averaged 9 events a batch, 2
/// averaged 17, for about 25% less CPU per event) without more throughput.
const COMMITTERS: usize = 2;

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
            tokio::spawn(async move { committer(&store, &rx).await });
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

/// One committer: waits for a batch, takes a connection, and keeps it for as
/// long as more batches are waiting (a burst), then gives it back. Taking a
/// connection from the pool costs a round trip (the pool checks it), which
/// for the small batches of moderate load was as much as the insert itself.
async fn committer(store: &Store, rx: &Mutex<mpsc::Receiver<Pending>>) {
    while let Some(mut batch) = next_batch(rx).await {
        let mut conn = match store.pool().acquire().await {
            Ok(conn) => conn,
            Err(error) => {
                fail(batch, &error);
                continue;
            }
        };
        loop {
            let (events, replies): (Vec<InboxInsert>, Vec<_>) =
                batch.into_iter().map(|p| (p.event, p.reply)).unzip();
            let started = std::time::Instant::now();
            match Store::insert_inbox_with(&mut *conn, &events).await {
                Ok(outcomes) => {
                    tracing::debug!(
                        events = events.len(),
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        "inbox batch committed"
                    );
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    // The connection may be broken: do not reuse it.
                    conn.close_on_drop();
                    fail_replies(replies, events.len(), &error);
                    break;
                }
            }
            match try_next_batch(rx) {
                Some(next) => batch = next,
                None => break,
            }
        }
    }
}

/// Everything waiting, up to the batch limits; waits for the first event.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Pending>>) -> Option<Vec<Pending>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    Some(fill(&mut rx, first))
}

/// Everything waiting now, if anything is and no other committer is already
/// waiting for it.
fn try_next_batch(rx: &Mutex<mpsc::Receiver<Pending>>) -> Option<Vec<Pending>> {
    let mut rx = rx.try_lock().ok()?;
    let first = rx.try_recv().ok()?;
    Some(fill(&mut rx, first))
}

fn fill(rx: &mut mpsc::Receiver<Pending>, first: Pending) -> Vec<Pending> {
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
    batch
}

fn fail(batch: Vec<Pending>, error: &sqlx::Error) {
    let n = batch.len();
    fail_replies(batch.into_iter().map(|p| p.reply).collect(), n, error);
}

/// Whatever the cause, the events are not stored: the sender must retry,
/// which a 503 asks for. (A 500 would too, but this is almost always the
/// database being unreachable.)
fn fail_replies(
    replies: Vec<oneshot::Sender<Result<InboxInsertOutcome, ApiError>>>,
    events: usize,
    error: &sqlx::Error,
) {
    tracing::warn!(%error, events, "could not store webhook events");
    for reply in replies {
        let _ = reply.send(Err(ApiError::Unavailable("postgres")));
    }
}
