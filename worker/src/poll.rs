//! The status poll: webhooks can be lost (Sent deactivates an endpoint after
//! 10 failed deliveries; an operator can misconfigure the secret), so a
//! message Sent has whose status has not moved for a while is checked with
//! `GET /v3/messages/{id}`. Sent's answer is applied like a webhook: through
//! the same guarded status change (a status never moves backwards), with
//! source `poll` in the timeline. Each message is polled at most
//! [`STATUS_POLLS`] times with growing gaps, then marked stale on its
//! timeline.
//!
//! Polls are paced by a fleet-wide budget in Redis (`STATUS_POLLS_PER_MINUTE`,
//! default 20, a tenth of Sent's documented 200 requests a minute on
//! standard endpoints), so polling never competes with sending.

use std::sync::Arc;
use std::time::Duration;

use common::config::Config;
use common::domain::{EventSource, MessageId, MessageStatus};
use common::rate::{Budget, Quota, RateLimiter};
use common::sent::client::{SentClient, StatusAnswer};
use common::store::{PollTarget, STATUS_POLLS, StatusChange, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Key of the fleet-wide poll budget (under the deployment's Redis prefix).
pub const BUDGET_KEY: &str = "sent:status_polls";
/// Timeline source of what a poll records.
const SOURCE: EventSource = EventSource::Poll;
/// How long to wait when no message is due, or Postgres is unreachable.
const IDLE: Duration = Duration::from_secs(15);

/// What one poll did, for the metric and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// Sent's status moved the message on.
    Changed,
    /// Sent's status is no news; the next poll waits longer.
    Unchanged,
    /// The last poll found no news: the message is marked stale.
    Stale,
    /// Sent does not know the id, or gave no usable answer.
    Failed,
}

impl Polled {
    fn as_str(self) -> &'static str {
        match self {
            Polled::Changed => "changed",
            Polled::Unchanged => "unchanged",
            Polled::Stale => "stale",
            Polled::Failed => "failed",
        }
    }
}

/// Polls due messages until `shutdown`; does nothing when the budget is 0.
pub async fn run(
    store: Store,
    client: SentClient,
    redis: common::redis_conn::Redis,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.worker.status_polls_per_minute == 0 {
        return Ok(());
    }
    let budget = Budget::new(
        RateLimiter::redis(redis, config.redis_prefix.clone()),
        BUDGET_KEY,
        Quota::per_minute(config.worker.status_polls_per_minute),
    );
    let gaps = config.worker.status_poll_gaps();
    while budget.take(&shutdown).await {
        let idle = match store.claim_status_poll(&gaps).await {
            Ok(Some(target)) => match poll(&store, &client, &target).await {
                Ok(_) => false,
                Err(error) => {
                    tracing::warn!(%error, message_id = %target.id, "status poll could not be recorded");
                    true
                }
            },
            Ok(None) => true,
            Err(error) => {
                tracing::warn!(%error, "status poll: postgres unavailable");
                true
            }
        };
        if idle {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(IDLE) => {}
            }
        }
    }
    Ok(())
}

/// Asks Sent about one claimed message and records the answer.
pub async fn poll(
    store: &Store,
    client: &SentClient,
    target: &PollTarget,
) -> Result<Polled, sqlx::Error> {
    let last = target.status_polls as usize >= STATUS_POLLS;
    let mut detail = json!({
        "poll": target.status_polls,
        "sent_message_id": target.provider_message_id,
    });
    let polled = match client.status(&target.provider_message_id).await {
        StatusAnswer::Found(info) => {
            let sent_status = info.status.unwrap_or_default();
            detail["sent_status"] = json!(sent_status);
            for (key, value) in [
                ("channel", &info.channel),
                ("reason_code", &info.reason_code),
                ("reason", &info.reason),
            ] {
                if let Some(value) = value {
                    detail[key] = json!(value);
                }
            }
            match MessageStatus::from_sent(&sent_status) {
                Some(status) => {
                    let change = StatusChange {
                        detail: Some(detail.clone()),
                        error_code: info.reason_code,
                        error: info.reason,
                        ..StatusChange::new(status, SOURCE)
                    };
                    // Recorded in the timeline whether it moved the status or not.
                    if store.change_status(target.id, &change).await? {
                        Polled::Changed
                    } else if last {
                        Polled::Stale
                    } else {
                        Polled::Unchanged
                    }
                }
                None => {
                    detail["error"] = json!("a status this gateway does not know");
                    record(store, target.id, detail.clone(), last).await?
                }
            }
        }
        StatusAnswer::NotFound => {
            detail["code"] = json!("not_found");
            detail["error"] = json!("Sent does not know this message id");
            record(store, target.id, detail.clone(), last).await?
        }
        StatusAnswer::Failed { code, message } => {
            tracing::info!(message_id = %target.id, %code, error = %message, "status poll failed");
            detail["code"] = json!(code);
            detail["error"] = json!(message);
            record(store, target.id, detail.clone(), last).await?
        }
    };
    if polled == Polled::Stale {
        let mut stale = detail;
        stale["stale"] = json!(true);
        stale["reason"] = json!(format!(
            "no news from Sent after {STATUS_POLLS} status polls; no more will be made"
        ));
        store.record_poll(target.id, &stale).await?;
        tracing::warn!(message_id = %target.id, "no status news from Sent after the last poll; marked stale");
    }
    metrics::counter!(common::metrics::SENT_STATUS_POLLS, "outcome" => polled.as_str())
        .increment(1);
    Ok(polled)
}

/// A poll that could not be applied: recorded in the timeline as it is.
async fn record(
    store: &Store,
    id: MessageId,
    detail: Value,
    last: bool,
) -> Result<Polled, sqlx::Error> {
    store.record_poll(id, &detail).await?;
    Ok(if last { Polled::Stale } else { Polled::Failed })
}
