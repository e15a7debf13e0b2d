//! Group commit of accepted messages. Concurrent requests hand their
//! submissions to a few committer tasks; each takes everything waiting, writes
//! it to Postgres in one transaction, pushes the jobs to Redis in one round
//! trip, and only then answers every request. Under load a batch grows by
//! itself (while one commit runs, the next requests queue up), so there is no
//! timer to tune and no added latency when idle.

use std::sync::Arc;
use std::time::SystemTime;

use common::domain::MessageId;
use common::queue::{SendJob, SendQueue};
use common::store::{Store, Submission, SubmitOutcome};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::ApiError;

/// Most messages written in one transaction.
const MAX_BATCH_MESSAGES: usize = 2000;
/// Concurrent transactions; enough to overlap one batch's commit with the next.
const COMMITTERS: usize = 4;

struct Pending {
    submission: Submission,
    reply: oneshot::Sender<Result<SubmitOutcome, ApiError>>,
}

#[derive(Clone)]
pub struct Accepter {
    tx: mpsc::Sender<Pending>,
}

impl Accepter {
    pub fn start(store: Store, queue: SendQueue, idempotency_ttl: std::time::Duration) -> Accepter {
        let (tx, rx) = mpsc::channel::<Pending>(16 * 1024);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..COMMITTERS {
            let (rx, store, queue) = (rx.clone(), store.clone(), queue.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx).await {
                    commit(&store, &queue, idempotency_ttl, batch).await;
                }
            });
        }
        Accepter { tx }
    }

    /// Durably stores and enqueues the submission, or says why it could not.
    pub async fn submit(&self, submission: Submission) -> Result<SubmitOutcome, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { submission, reply })
            .await
            .map_err(|_| ApiError::Unavailable("shutting down"))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("committer stopped".into()))?
    }
}

async fn next_batch(rx: &Mutex<mpsc::Receiver<Pending>>) -> Option<Vec<Pending>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut size = first.submission.messages.len().max(1);
    let mut batch = vec![first];
    while size < MAX_BATCH_MESSAGES {
        match rx.try_recv() {
            Ok(next) => {
                size += next.submission.messages.len().max(1);
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn commit(store: &Store, queue: &SendQueue, ttl: std::time::Duration, batch: Vec<Pending>) {
    let submissions: Vec<Submission> = batch.iter().map(|p| p.submission.clone()).collect();
    let outcomes = match store.submit(&submissions, ttl).await {
        Ok(outcomes) => outcomes,
        Err(error) => {
            let error = ApiError::from(error);
            for pending in batch {
                let _ = pending.reply.send(Err(clone_error(&error)));
            }
            return;
        }
    };

    // A scheduled message is held here until its time (and can be
    // cancelled until then): its job is due at `scheduled_at`.
    let jobs: Vec<(SendJob, Option<SystemTime>)> = batch
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == SubmitOutcome::Stored)
        .flat_map(|(p, _)| {
            p.submission.messages.iter().map(|m| {
                (
                    SendJob::new(m.id, p.submission.trace.clone()),
                    m.scheduled_at.map(SystemTime::from),
                )
            })
        })
        .collect();
    if let Err(error) = queue.enqueue_due(&jobs).await {
        tracing::warn!(%error, messages = jobs.len(), "enqueue failed; withdrawing the batch");
        let stored: Vec<&Submission> = submissions
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == SubmitOutcome::Stored)
            .map(|(s, _)| s)
            .collect();
        if let Err(error) = store.withdraw(&stored).await {
            // The messages stay; the worker's reconciler enqueues them.
            let ids: Vec<MessageId> = stored
                .iter()
                .flat_map(|s| s.messages.iter().map(|m| m.id))
                .collect();
            tracing::error!(%error, ?ids, "could not withdraw messages after an enqueue failure");
        }
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            // A replay may point at a message of this very batch, which is gone.
            let answer = match outcome {
                SubmitOutcome::Conflict => Ok(SubmitOutcome::Conflict),
                _ => Err(ApiError::Unavailable("redis")),
            };
            let _ = pending.reply.send(answer);
        }
        return;
    }
    metrics::counter!(common::metrics::MESSAGES_ACCEPTED).increment(jobs.len() as u64);
    for (pending, outcome) in batch.into_iter().zip(outcomes) {
        let _ = pending.reply.send(Ok(outcome));
    }
}

fn clone_error(error: &ApiError) -> ApiError {
    match error {
        ApiError::Unavailable(d) => ApiError::Unavailable(d),
        other => ApiError::Internal(other.to_string()),
    }
}
