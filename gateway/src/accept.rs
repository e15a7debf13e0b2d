//! Accepting messages: concurrent requests' submissions are group-committed
//! ([`common::group_commit`]): a committer writes everything waiting to
//! Postgres in one transaction, pushes the jobs to Redis in one round trip,
//! and only then answers every request.

use std::time::{Duration, SystemTime};

use common::domain::MessageId;
use common::group_commit::{Batching, GroupCommit};
use common::queue::{SendJob, SendQueue};
use common::store::{Store, Submission, SubmitOutcome};

use crate::error::ApiError;

/// Most messages written in one transaction (a batch request carries up to
/// 1000).
const MAX_BATCH_MESSAGES: usize = 2000;
/// Concurrent transactions; enough to overlap one batch's commit with the next.
const COMMITTERS: usize = 4;
/// Submissions waiting for a committer before requests wait too.
const QUEUE: usize = 16 * 1024;

#[derive(Clone)]
pub struct Accepter {
    commits: GroupCommit<Submission, Result<SubmitOutcome, ApiError>>,
}

impl Accepter {
    pub fn start(store: Store, queue: SendQueue, idempotency_ttl: Duration) -> Accepter {
        let batching = Batching::new(COMMITTERS, MAX_BATCH_MESSAGES)
            .weighed(|s: &Submission| s.messages.len().max(1), MAX_BATCH_MESSAGES)
            .queue(QUEUE);
        let commits = GroupCommit::start(batching, move |batch: Vec<Submission>| {
            let (store, queue) = (store.clone(), queue.clone());
            async move { commit(&store, &queue, idempotency_ttl, batch).await }
        });
        Accepter { commits }
    }

    /// Durably stores and enqueues the submission, or says why it could not.
    pub async fn submit(&self, submission: Submission) -> Result<SubmitOutcome, ApiError> {
        self.commits.submit(submission).await?
    }
}

/// Stores the batch, then enqueues its jobs. When Redis refuses them, the
/// stored messages are withdrawn and their requests answered 503.
async fn commit(
    store: &Store,
    queue: &SendQueue,
    ttl: Duration,
    batch: Vec<Submission>,
) -> Result<Vec<Result<SubmitOutcome, ApiError>>, sqlx::Error> {
    let outcomes = store.submit(&batch, ttl).await?;
    let stored: Vec<&Submission> = batch
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == SubmitOutcome::Stored)
        .map(|(s, _)| s)
        .collect();
    // A scheduled message is held here until its time (and can be
    // cancelled until then): its job is due at `scheduled_at`.
    let jobs: Vec<(SendJob, Option<SystemTime>)> = stored
        .iter()
        .flat_map(|s| {
            s.messages.iter().map(|m| {
                (
                    SendJob::new(m.id, s.trace.clone()).for_client(&s.client),
                    m.scheduled_at.map(SystemTime::from),
                )
            })
        })
        .collect();
    if let Err(error) = queue.enqueue_due(&jobs).await {
        tracing::warn!(%error, messages = jobs.len(), "enqueue failed; withdrawing the batch");
        if let Err(error) = store.withdraw(&stored).await {
            // The messages stay; the worker's reconciler enqueues them.
            let ids: Vec<MessageId> = stored
                .iter()
                .flat_map(|s| s.messages.iter().map(|m| m.id))
                .collect();
            tracing::error!(%error, ?ids, "could not withdraw messages after an enqueue failure");
        }
        // A replay may point at a message of this very batch, which is gone.
        return Ok(outcomes
            .into_iter()
            .map(|outcome| match outcome {
                SubmitOutcome::Conflict => Ok(SubmitOutcome::Conflict),
                _ => Err(ApiError::Unavailable("redis")),
            })
            .collect());
    }
    metrics::counter!(common::metrics::MESSAGES_ACCEPTED).increment(jobs.len() as u64);
    Ok(outcomes.into_iter().map(Ok).collect())
}
