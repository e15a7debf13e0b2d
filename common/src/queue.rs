//! The send queue: apalis-redis, with a versioned job payload.
//!
//! The gateway pushes many jobs in one round trip (apalis-redis' batch push
//! script); workers consume with apalis. A message's first job uses the
//! message's own id as task id, so pushing it again while it is still in Redis
//! (a reconciler pass) is a no-op.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use apalis::prelude::{TaskBuilder, TaskId};
use apalis_redis::{Config as QueueConfig, ConnectionManager, RedisTask};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::domain::MessageId;

/// A job on the send queue. Versioned so that a new payload shape can be
/// deployed while jobs of the old one are still queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum SendJob {
    #[serde(rename = "1")]
    V1 {
        message_id: MessageId,
        /// W3C trace context (`traceparent`, `tracestate`) of the request that
        /// queued the message, so one trace covers queue wait and worker.
        #[serde(default)]
        trace: BTreeMap<String, String>,
    },
}

impl SendJob {
    pub fn new(message_id: MessageId, trace: BTreeMap<String, String>) -> SendJob {
        SendJob::V1 { message_id, trace }
    }

    pub fn message_id(&self) -> MessageId {
        match self {
            SendJob::V1 { message_id, .. } => *message_id,
        }
    }

    pub fn trace(&self) -> &BTreeMap<String, String> {
        match self {
            SendJob::V1 { trace, .. } => trace,
        }
    }
}

/// Producer side of the send queue.
#[derive(Clone)]
pub struct SendQueue {
    conn: ConnectionManager,
    config: QueueConfig,
}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("queue", &self.config.queue.as_ref())
            .finish()
    }
}

/// The apalis queue name for a deployment's Redis prefix. Pub/sub events
/// (a PUBLISH per task pushed and finished) are off: nothing subscribes, and
/// workers poll.
pub fn queue_config(prefix: &str) -> QueueConfig {
    QueueConfig::default()
        .queue(format!("{prefix}:send"))
        .emit_events(false)
}

/// Connects without waiting for Redis to be up: commands fail fast while it
/// is down and the connection manager reconnects in the background.
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(1);
    client.get_connection_manager_with_config(config).await
}

impl SendQueue {
    pub fn new(conn: ConnectionManager, prefix: &str) -> SendQueue {
        SendQueue {
            conn,
            config: queue_config(prefix),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// First jobs of new messages: task id = message id.
    pub async fn enqueue(&self, jobs: &[SendJob]) -> Result<(), apalis_redis::Error> {
        let tasks = jobs
            .iter()
            .map(|job| task(job, job.message_id().ulid(), None))
            .collect::<Result<Vec<_>, _>>()?;
        self.push(tasks).await
    }

    /// [`SendQueue::enqueue`] with a due time for each job: a message the
    /// gateway holds until its `scheduled_at` is not sent before then.
    pub async fn enqueue_due(
        &self,
        jobs: &[(SendJob, Option<SystemTime>)],
    ) -> Result<(), apalis_redis::Error> {
        let tasks = jobs
            .iter()
            .map(|(job, due)| task(job, job.message_id().ulid(), *due))
            .collect::<Result<Vec<_>, _>>()?;
        self.push(tasks).await
    }

    /// Messages that may have had a task before (a re-drive): each job gets a
    /// task id of its own, so an old finished task cannot swallow it.
    pub async fn enqueue_again(&self, jobs: &[SendJob]) -> Result<(), apalis_redis::Error> {
        let tasks = jobs
            .iter()
            .map(|job| task(job, Ulid::generate(), None))
            .collect::<Result<Vec<_>, _>>()?;
        self.push(tasks).await
    }

    /// A retry, due at `run_at`. Each retry is a task of its own.
    pub async fn schedule(
        &self,
        job: &SendJob,
        run_at: SystemTime,
    ) -> Result<(), apalis_redis::Error> {
        self.push(vec![task(job, Ulid::generate(), Some(run_at))?])
            .await
    }

    async fn push(&self, tasks: Vec<RedisTask>) -> Result<(), apalis_redis::Error> {
        if tasks.is_empty() {
            return Ok(());
        }
        apalis_redis::queries::push_tasks(&mut self.conn.clone(), &self.config, &tasks).await?;
        Ok(())
    }

    /// Moves up to `max` due jobs from the scheduled set to the active list
    /// and returns how many it moved. apalis-redis pushes every job, due now
    /// or later, into its scheduled set, and its fetch promotes all due jobs
    /// in one Lua `unpack`, which fails beyond about 8,000 ids: a backlog that
    /// large would stop every worker. Workers call this in bounded steps so
    /// that apalis' own promotion only ever sees a few.
    pub async fn promote_due(&self, max: usize) -> Result<usize, redis::RedisError> {
        static PROMOTE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r#"
                local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
                if #ids > 0 then
                  redis.call('RPUSH', KEYS[2], unpack(ids))
                  redis.call('ZREM', KEYS[1], unpack(ids))
                  redis.call('DEL', KEYS[3])
                  redis.call('LPUSH', KEYS[3], 1)
                end
                return #ids
                "#,
            )
        });
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut conn = self.conn.clone();
        PROMOTE
            .key(self.config.scheduled_jobs_set())
            .key(self.config.active_jobs_list())
            .key(self.config.signal_list())
            .arg(now)
            .arg(max.clamp(1, 1000))
            .invoke_async(&mut conn)
            .await
    }

    /// Jobs waiting to run now, and jobs scheduled for later (retries).
    pub async fn depth(&self) -> Result<(u64, u64), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .llen(self.config.active_jobs_list())
            .zcard(self.config.scheduled_jobs_set())
            .query_async(&mut conn)
            .await
    }

    /// How long the oldest job that is due has been waiting (zero when none).
    /// Every push is filed under the scheduled set with its due time as score.
    pub async fn oldest_due_age(&self) -> Result<Duration, redis::RedisError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut conn = self.conn.clone();
        let oldest: Vec<(String, u64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.config.scheduled_jobs_set())
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(Duration::from_secs(
            oldest
                .first()
                .map(|(_, due)| now.saturating_sub(*due))
                .unwrap_or(0),
        ))
    }

    /// Removes finished tasks' payloads and metadata; apalis keeps them forever otherwise.
    pub async fn prune_done(&self, max: usize) -> Result<usize, redis::RedisError> {
        self.prune(self.config.done_jobs_set(), max).await
    }

    /// The same for tasks apalis gave up on (its own retries exhausted, which
    /// only happens when a job kept failing to reach Postgres). The message
    /// itself is still in Postgres, and the reconciler enqueues it again: that
    /// only works once its task id is free.
    pub async fn prune_dead(&self, max: usize) -> Result<usize, redis::RedisError> {
        self.prune(self.config.dead_jobs_set(), max).await
    }

    async fn prune(&self, set: String, max: usize) -> Result<usize, redis::RedisError> {
        static PRUNE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
            redis::Script::new(
                r#"
                local ids = redis.call('SPOP', KEYS[1], ARGV[1])
                for _, id in ipairs(ids) do
                  redis.call('HDEL', KEYS[2], id)
                  redis.call('DEL', KEYS[3] .. ':' .. id)
                end
                return #ids
                "#,
            )
        });
        let mut conn = self.conn.clone();
        PRUNE
            .key(set)
            .key(self.config.job_data_hash())
            .key(self.config.job_meta_hash())
            .arg(max)
            .invoke_async(&mut conn)
            .await
    }
}

fn task(
    job: &SendJob,
    id: Ulid,
    run_at: Option<SystemTime>,
) -> Result<RedisTask, apalis_redis::Error> {
    let bytes = serde_json::to_vec(job).map_err(apalis_redis::Error::Json)?;
    let mut builder = TaskBuilder::new(bytes).task_id(TaskId::from_ulid(id));
    if let Some(at) = run_at {
        builder = builder.run_at_time(whole_second_after(at));
    }
    Ok(builder.build())
}

/// apalis rounds due times down to the second; rounding up keeps every job at
/// or after the time it was given (a retry's `Retry-After`, a held message's
/// `scheduled_at`).
fn whole_second_after(at: SystemTime) -> SystemTime {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_round_up_to_the_second() {
        let epoch = SystemTime::UNIX_EPOCH;
        let at = epoch + Duration::from_millis(10_001);
        assert_eq!(whole_second_after(at), epoch + Duration::from_secs(11));
        let exact = epoch + Duration::from_secs(10);
        assert_eq!(whole_second_after(exact), exact);
    }

    #[test]
    fn job_payload_is_versioned_json() {
        let id: MessageId = "01JDX3S9Q8M6B2W4V7N5K0R1TZ".parse().unwrap();
        let job = SendJob::new(
            id,
            BTreeMap::from([("traceparent".into(), "00-abc-def-01".into())]),
        );
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["version"], "1");
        assert_eq!(json["message_id"], "01JDX3S9Q8M6B2W4V7N5K0R1TZ");
        assert_eq!(serde_json::from_value::<SendJob>(json).unwrap(), job);
    }
}
