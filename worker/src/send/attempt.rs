//! One attempt to send a message: take a unit of the fleet-wide outbound
//! budget, move the message to `sending` (a short statement of its own: no
//! transaction is held across the call), call Sent, record the outcome. Our
//! retries are our own delayed jobs (exponential backoff, full jitter, never
//! sooner than `Retry-After`); an attempt fails ([`JobError`]) only when
//! Postgres or Redis could not be reached, so that apalis' own retry covers
//! exactly that.
//!
//! The Postgres writes of the hot path are group-committed
//! ([`common::group_commit`]): the `sending` and `accepted` writes of
//! concurrent jobs in one worker go to Postgres together, one statement each
//! per batch, and each job continues once its write is committed.

use std::time::{Duration, SystemTime};

use chrono::Utc;
use common::backoff::Backoff;
use common::config::Config;
use common::domain::{EventSource, MessageId, MessageStatus};
use common::group_commit::{Batching, CommitError, GroupCommit};
use common::queue::{SendJob, SendQueue};
use common::rate::{Budget, Quota, RateLimiter};
use common::sent::classify::{CODE_NO_ID, SendOutcome};
use common::sent::client::{SentClient, send_request};
use common::store::{Acceptance, MessageRecord, StatusChange, Store};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Key of the fleet-wide outbound budget (under the deployment's Redis prefix).
pub const BUDGET_KEY: &str = "sent:outbound";
/// Most writes of one kind in one group-commit statement.
const MAX_COMMIT_BATCH: usize = 256;
/// Group-commit statements of one kind per worker. One committer alone
/// makes batches twice as large (half the planning), but a statement waiting
/// for a row an inbox apply holds then stops every send of the worker behind
/// it: `bench/load.sh` answered sends at 10.5 and 11.0 ms p50 instead of 7.3
/// and 6.9, and took 9 and 64 s to settle instead of half a second. Two that
/// take turns make larger batches (about 15 messages instead of 9), and
/// while one statement waits, each batch of the other waits [`COMMIT_HOLD`]
/// at most.
const COMMITTERS: usize = 2;
/// How long a batch formed while the other committer's statement runs waits
/// for it to end, taking items meanwhile. In a drain of 40,000
/// (`bench/worker.sh`) batches went from about 9 to 15 messages, and the
/// drain from 3,488 and 3,322 to 4,398 and 4,498 messages/s.
const COMMIT_HOLD: Duration = Duration::from_millis(10);
/// Timeline source of everything this module records.
const SOURCE: EventSource = EventSource::Worker;

/// A job that could not be handled because a dependency was unreachable;
/// apalis retries it later.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// A group-committed write failed (the error is shared by its batch).
    #[error("postgres: {0}")]
    Commit(#[from] CommitError),
    #[error("redis: {0}")]
    Redis(#[from] apalis_redis::Error),
}

/// What one job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// The message was not waiting to be sent (a duplicate job, or gone).
    Skipped,
    Accepted,
    /// A permanent error from Sent: the message is `failed`.
    Failed {
        code: String,
    },
    /// A retryable error: a new job is due at `at`.
    Retrying {
        code: String,
        at: SystemTime,
    },
    /// Retries exhausted: `failed` and dead-lettered.
    DeadLettered {
        code: String,
    },
    /// Shutting down before the job started: it went back on the queue.
    Deferred,
}

/// Everything a send job needs; one per worker process.
pub struct Sender {
    store: Store,
    /// `Store::begin_attempts`, group-committed.
    begins: GroupCommit<MessageId, Option<MessageRecord>>,
    /// `Store::record_accepted_many`, group-committed.
    acceptances: GroupCommit<Acceptance, bool>,
    queue: SendQueue,
    client: SentClient,
    budget: Option<Budget>,
    max_attempts: u32,
    backoff: Backoff,
    shutdown: CancellationToken,
}

impl Sender {
    /// `shutdown` only interrupts waiting for budget; a started attempt always finishes.
    /// Starts the group-commit tasks, so it must be called within a Tokio runtime.
    pub fn new(
        config: &Config,
        store: Store,
        redis: common::redis_conn::Redis,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Sender> {
        let api_key = config.require_sent_api_key()?;
        let client = SentClient::new(&config.sent, api_key, config.worker.concurrency)?;
        let budget = (config.sent.messages_per_minute > 0).then(|| {
            Budget::new(
                RateLimiter::redis(redis.clone(), config.redis_prefix.clone()),
                BUDGET_KEY,
                Quota::per_minute(config.sent.messages_per_minute),
            )
        });
        let begins = {
            let store = store.clone();
            GroupCommit::start(
                Batching::new(COMMITTERS, MAX_COMMIT_BATCH).hold(COMMIT_HOLD),
                move |ids: Vec<MessageId>| {
                    let store = store.clone();
                    async move { store.begin_attempts(&ids).await }
                },
            )
        };
        let acceptances = {
            let store = store.clone();
            GroupCommit::start(
                Batching::new(COMMITTERS, MAX_COMMIT_BATCH).hold(COMMIT_HOLD),
                move |accepted: Vec<Acceptance>| {
                    let store = store.clone();
                    async move { store.record_accepted_many(&accepted).await }
                },
            )
        };
        Ok(Sender {
            store,
            begins,
            acceptances,
            queue: SendQueue::new(redis, &config.redis_prefix, config.sharding),
            client,
            budget,
            max_attempts: config.worker.max_attempts,
            backoff: config.worker.backoff,
            shutdown,
        })
    }

    /// Handles one job to the end and records the outcome.
    pub async fn process(&self, job: &SendJob) -> Result<Processed, JobError> {
        let id = job.message_id();
        if !self.take_budget().await {
            // Shutting down while waiting: hand the job back rather than hold it.
            self.queue.enqueue_again(std::slice::from_ref(job)).await?;
            return Ok(Processed::Deferred);
        }
        let Some(message) = self.begins.submit(id).await? else {
            tracing::debug!(message_id = %id, "message is not waiting to be sent; duplicate job skipped");
            return Ok(Processed::Skipped);
        };
        let attempt = message.attempts;
        let request = send_request(&message, Utc::now());
        let outcome = self.client.send(&request, message.id).await;
        tracing::debug!(message_id = %id, attempt, ?outcome, "sent");

        match outcome {
            SendOutcome::Accepted {
                provider_ids,
                request_id,
                replayed,
                unreadable,
            } => {
                let mut change = StatusChange::new(MessageStatus::Accepted, SOURCE);
                change.attempt = Some(attempt);
                let mut detail = json!({
                    "provider_message_ids": provider_ids,
                    "request_id": request_id,
                    "replayed": replayed,
                    "sandbox": message.sandbox,
                });
                if let Some(missing) = unreadable {
                    // Sent has the message, but no webhook or status poll can
                    // ever be matched to it: say so wherever an operator looks.
                    tracing::warn!(message_id = %id, attempt, request_id = request_id.as_deref().unwrap_or(""),
                        %missing, "Sent accepted the message but its answer carries no message id");
                    metrics::counter!(common::metrics::SENT_UNREADABLE_ANSWERS).increment(1);
                    let error = format!(
                        "Sent accepted the message, but no message id could be read from its answer: {missing}"
                    );
                    detail["code"] = json!(CODE_NO_ID);
                    detail["error"] = json!(error);
                    change.error_code = Some(CODE_NO_ID.to_owned());
                    change.error = Some(error);
                }
                change.detail = Some(detail);
                self.acceptances
                    .submit(Acceptance {
                        id,
                        provider_ids,
                        change,
                    })
                    .await?;
                Ok(Processed::Accepted)
            }
            SendOutcome::Permanent {
                code,
                message: error,
            } => {
                tracing::info!(message_id = %id, attempt, %code, %error, "Sent refused the message");
                let mut change = StatusChange::new(MessageStatus::Failed, SOURCE);
                change.attempt = Some(attempt);
                change.detail = Some(json!({"code": code, "error": error}));
                change.error_code = Some(code.clone());
                change.error = Some(error);
                if self.still_sending(id).await? {
                    self.store.change_status(message.id, &change).await?;
                }
                Ok(Processed::Failed { code })
            }
            SendOutcome::Retry {
                code,
                message: error,
                after,
            } => {
                if attempt < self.max_attempts as i32 {
                    let delay = self
                        .backoff
                        .delay(attempt.max(1) as u32, after, &mut rand::rng());
                    let at = SystemTime::now() + delay;
                    tracing::info!(message_id = %id, attempt, %code, %error, ?delay, "retrying later");
                    self.store
                        .record_retry(id, attempt, &code, &error, at.into())
                        .await?;
                    self.queue.schedule(job, at).await?;
                    Ok(Processed::Retrying { code, at })
                } else {
                    tracing::warn!(message_id = %id, attempt, %code, %error, "retries exhausted; dead-lettered");
                    let mut change = StatusChange::new(MessageStatus::Failed, SOURCE);
                    change.event = Some(common::store::DEAD_LETTERED);
                    change.attempt = Some(attempt);
                    change.detail = Some(json!({
                        "code": "retries_exhausted", "attempts": attempt, "last_code": code, "last_error": error,
                    }));
                    change.error_code = Some("retries_exhausted".into());
                    change.error = Some(format!(
                        "gave up after {attempt} attempts; last error {code}: {error}"
                    ));
                    if self.still_sending(id).await? {
                        self.store.dead_letter(id, &change).await?;
                    }
                    Ok(Processed::DeadLettered { code })
                }
            }
        }
    }

    /// Whether the attempt is still the message's latest word: a duplicate job
    /// running at the same time may have had it accepted meanwhile, and a
    /// failure must not overtake that acceptance.
    async fn still_sending(&self, id: MessageId) -> Result<bool, sqlx::Error> {
        let current = self.store.message_by_id(id).await?;
        Ok(current.is_some_and(|m| m.status == MessageStatus::Sending))
    }

    /// Waits for a unit of the outbound budget; false when shutdown came first.
    async fn take_budget(&self) -> bool {
        match &self.budget {
            Some(budget) => budget.take(&self.shutdown).await,
            None => true,
        }
    }
}
