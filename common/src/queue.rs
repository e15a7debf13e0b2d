//! The send queue: apalis-redis, with a versioned job payload.
//!
//! The gateway pushes many jobs in one round trip (apalis-redis' batch push
//! script); workers consume with apalis. A message's first job uses the
//! message's own id as task id, so pushing it again while it is still in Redis
//! (a reconciler pass) is a no-op.
//!
//! The queue is `QUEUE_SHARDS` apalis queues (default 1); a message's jobs
//! all go to the shard its id (or its client, `QUEUE_SHARD_BY`) picks, and
//! every worker serves every shard.
//! Each shard's name is a Redis Cluster hash tag (`{sentgw:send:0}`), so all
//! of one shard's keys, and so every script on them, sit in one slot, while
//! different shards spread over the cluster's nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apalis::prelude::{TaskBuilder, TaskId};
use apalis_redis::{Config as QueueConfig, RedisTask};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use ulid::Ulid;

use crate::domain::MessageId;
use crate::redis_conn::Redis;

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
        /// The message's client (key name), which picks its shard under
        /// `QUEUE_SHARD_BY=client`. Jobs queued before it existed have none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
}

impl SendJob {
    pub fn new(message_id: MessageId, trace: BTreeMap<String, String>) -> SendJob {
        SendJob::V1 {
            message_id,
            trace,
            client: None,
        }
    }

    /// The job of a message of `client`.
    pub fn for_client(self, name: &str) -> SendJob {
        match self {
            SendJob::V1 {
                message_id, trace, ..
            } => SendJob::V1 {
                message_id,
                trace,
                client: Some(name.to_owned()),
            },
        }
    }

    pub fn message_id(&self) -> MessageId {
        match self {
            SendJob::V1 { message_id, .. } => *message_id,
        }
    }

    pub fn client(&self) -> Option<&str> {
        match self {
            SendJob::V1 { client, .. } => client.as_deref(),
        }
    }

    pub fn trace(&self) -> &BTreeMap<String, String> {
        match self {
            SendJob::V1 { trace, .. } => trace,
        }
    }
}

crate::domain::text_enum! {
    /// What picks a message's shard (`QUEUE_SHARD_BY`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
    pub enum ShardBy {
        /// The message id: shards fill evenly, for throughput beyond one
        /// Redis node. Each shard serves in order, so a client's flood is
        /// everyone's.
        #[default]
        Message = "message",
        /// The client: a client's messages share a shard, and each shard has
        /// workers of its own, so a client flooding its shard holds back only
        /// the clients that share it (with `QUEUE_SHARDS` well above the
        /// number of busy clients, few), and the Sent budget goes to the
        /// shards' waiting sends alike.
        Client = "client",
    }
}

/// How the send queue is laid out: `QUEUE_SHARDS` and `QUEUE_SHARD_BY`.
/// Gateways and workers of a deployment must agree (a job pushed to a shard
/// no worker serves waits for the reconciler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    pub shards: u16,
    pub by: ShardBy,
}

impl Sharding {
    /// One shard.
    pub const ONE: Sharding = Sharding {
        shards: 1,
        by: ShardBy::Message,
    };
}

/// The send queue's shards, and the Redis connection they are reached by.
#[derive(Clone)]
pub struct SendQueue {
    conn: Redis,
    shards: Arc<[QueueConfig]>,
    by: ShardBy,
}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// The apalis queue of shard `shard` under a deployment's Redis prefix: its
/// name is a hash tag. Pub/sub events (a PUBLISH per task pushed and
/// finished) are off: nothing subscribes, and workers poll.
fn shard_config(prefix: &str, shard: u16) -> QueueConfig {
    QueueConfig::default()
        .queue(format!("{{{prefix}:send:{shard}}}"))
        .emit_events(false)
}

impl SendQueue {
    pub fn new(conn: Redis, prefix: &str, sharding: Sharding) -> SendQueue {
        SendQueue {
            conn,
            shards: (0..sharding.shards.max(1))
                .map(|shard| shard_config(prefix, shard))
                .collect(),
            by: sharding.by,
        }
    }

    pub fn sharded_by(&self) -> ShardBy {
        self.by
    }

    /// The apalis configuration of each shard, in shard order.
    pub fn shards(&self) -> &[QueueConfig] {
        &self.shards
    }

    /// The shard of a job: by client (a stable hash of its name) or by
    /// message id (its random bits, so shards fill evenly).
    pub fn shard_of(&self, job: &SendJob) -> &QueueConfig {
        &self.shards[self.shard_index(job)]
    }

    fn shard_index(&self, job: &SendJob) -> usize {
        let n = self.shards.len() as u128;
        let key = match (self.by, job.client()) {
            (ShardBy::Client, Some(client)) => {
                let digest = sha2::Sha256::digest(client.as_bytes());
                u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
            }
            _ => u128::from(job.message_id().ulid()),
        };
        (key % n) as usize
    }

    pub fn connection(&self) -> Redis {
        self.conn.clone()
    }

    /// First jobs of new messages: task id = message id.
    pub async fn enqueue(&self, jobs: &[SendJob]) -> Result<(), apalis_redis::Error> {
        let tasks = jobs
            .iter()
            .map(|job| {
                Ok((
                    self.shard_index(job),
                    task(job, job.message_id().ulid(), None)?,
                ))
            })
            .collect::<Result<Vec<_>, apalis_redis::Error>>()?;
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
            .map(|(job, due)| {
                Ok((
                    self.shard_index(job),
                    task(job, job.message_id().ulid(), *due)?,
                ))
            })
            .collect::<Result<Vec<_>, apalis_redis::Error>>()?;
        self.push(tasks).await
    }

    /// Messages that may have had a task before (a re-drive): each job gets a
    /// task id of its own, so an old finished task cannot swallow it.
    pub async fn enqueue_again(&self, jobs: &[SendJob]) -> Result<(), apalis_redis::Error> {
        let tasks = jobs
            .iter()
            .map(|job| Ok((self.shard_index(job), task(job, Ulid::generate(), None)?)))
            .collect::<Result<Vec<_>, apalis_redis::Error>>()?;
        self.push(tasks).await
    }

    /// A retry, due at `run_at`. Each retry is a task of its own.
    pub async fn schedule(
        &self,
        job: &SendJob,
        run_at: SystemTime,
    ) -> Result<(), apalis_redis::Error> {
        self.push(vec![(
            self.shard_index(job),
            task(job, Ulid::generate(), Some(run_at))?,
        )])
        .await
    }

    /// One batch push per shard that has tasks (one round trip with one shard).
    async fn push(&self, tasks: Vec<(usize, RedisTask)>) -> Result<(), apalis_redis::Error> {
        let mut by_shard: Vec<Vec<RedisTask>> = vec![Vec::new(); self.shards.len()];
        for (shard, task) in tasks {
            by_shard[shard].push(task);
        }
        for (shard, tasks) in self.shards.iter().zip(by_shard) {
            if !tasks.is_empty() {
                apalis_redis::queries::push_tasks(&mut self.conn.clone(), shard, &tasks).await?;
            }
        }
        Ok(())
    }

    /// Moves up to `max` due jobs of each shard from its scheduled set to its
    /// active list and returns the most it moved in one shard. apalis-redis
    /// pushes every job, due now or later, into its scheduled set, and its
    /// fetch promotes all due jobs in one Lua `unpack`, which fails beyond
    /// about 8,000 ids: a backlog that large would stop every worker. Workers
    /// call this in bounded steps so that apalis' own promotion only ever sees
    /// a few.
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
        let now = unix_seconds();
        let mut most = 0;
        for shard in self.shards.iter() {
            let moved: usize = PROMOTE
                .key(shard.scheduled_jobs_set())
                .key(shard.active_jobs_list())
                .key(shard.signal_list())
                .arg(now)
                .arg(max.clamp(1, 1000))
                .invoke_async(&mut self.conn.clone())
                .await?;
            most = most.max(moved);
        }
        Ok(most)
    }

    /// Jobs waiting to run now, and jobs scheduled for later (retries), over
    /// all shards.
    pub async fn depth(&self) -> Result<(u64, u64), redis::RedisError> {
        let mut total = (0, 0);
        for shard in self.shards.iter() {
            let (ready, scheduled): (u64, u64) = redis::pipe()
                .llen(shard.active_jobs_list())
                .zcard(shard.scheduled_jobs_set())
                .query_async(&mut self.conn.clone())
                .await?;
            total = (total.0 + ready, total.1 + scheduled);
        }
        Ok(total)
    }

    /// How long the oldest job that is due has been waiting (zero when none).
    /// Every push is filed under the scheduled set with its due time as score.
    pub async fn oldest_due_age(&self) -> Result<Duration, redis::RedisError> {
        let now = unix_seconds();
        let mut oldest = 0;
        for shard in self.shards.iter() {
            let first: Vec<(String, u64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(shard.scheduled_jobs_set())
                .arg("-inf")
                .arg(now)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(1)
                .query_async(&mut self.conn.clone())
                .await?;
            if let Some((_, due)) = first.first() {
                oldest = oldest.max(now.saturating_sub(*due));
            }
        }
        Ok(Duration::from_secs(oldest))
    }

    /// Removes finished tasks' payloads and metadata; apalis keeps them forever otherwise.
    pub async fn prune_done(&self, max: usize) -> Result<usize, redis::RedisError> {
        self.prune(QueueConfig::done_jobs_set, max).await
    }

    /// The same for tasks apalis gave up on (its own retries exhausted, which
    /// only happens when a job kept failing to reach Postgres). The message
    /// itself is still in Postgres, and the reconciler enqueues it again: that
    /// only works once its task id is free.
    pub async fn prune_dead(&self, max: usize) -> Result<usize, redis::RedisError> {
        self.prune(QueueConfig::dead_jobs_set, max).await
    }

    /// Up to `max` tasks of `set` in each shard; how many in all.
    async fn prune(
        &self,
        set: fn(&QueueConfig) -> String,
        max: usize,
    ) -> Result<usize, redis::RedisError> {
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
        let mut pruned = 0;
        for shard in self.shards.iter() {
            let n: usize = PRUNE
                .key(set(shard))
                .key(shard.job_data_hash())
                .key(shard.job_meta_hash())
                .arg(max)
                .invoke_async(&mut self.conn.clone())
                .await?;
            pruned += n;
        }
        Ok(pruned)
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The task of `job`.
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
