//! The send queue: apalis-redis, with a versioned job payload.
//!
//! The gateway pushes many jobs in one round trip (apalis-redis' batch push
//! script); workers consume with apalis. A message's first job uses the
//! message's own id as task id, so pushing it again while it is still in Redis
//! (a reconciler pass) is a no-op.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apalis::prelude::{TaskBuilder, TaskId};
use apalis_redis::{Config as QueueConfig, ConnectionManager, RedisTask};
use redis::{ConnectionAddr, ErrorKind, RedisError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
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

/// Every Redis connection of the gateway and the workers is made here: the
/// queue (apalis-redis' storage and our own scripts), the rate limiter's
/// `RATELIMIT_STORAGE_URI`, the status polls' budget. So `tls` (from
/// `REDIS_TLS_CA_FILE`) applies to each `rediss://` URL alike.
///
/// Connects without waiting for Redis to be up: commands fail fast while it
/// is down and the connection manager reconnects in the background. A
/// `rediss://` server whose certificate does not verify is an error naming
/// the roots it was checked against; there is no fallback to plaintext nor
/// to an unverified connection.
pub async fn connect(url: &str, tls: &RedisTls) -> Result<ConnectionManager, RedisError> {
    let client = tls.client(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(1);
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| tls.explain(e))
}

/// How a `rediss://` connection verifies the server's certificate: against
/// the CA certificates of `REDIS_TLS_CA_FILE` only, or, without it, the
/// system's root certificates (rustls-native-certs: the OS trust store, e.g.
/// Debian's `ca-certificates`). `redis://` URLs do not use it.
#[derive(Clone, Default)]
pub struct RedisTls {
    ca_file: Option<CaFile>,
}

#[derive(Clone)]
struct CaFile {
    path: PathBuf,
    pem: Arc<[u8]>,
    certificates: usize,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ca_file {
            None => f.write_str("RedisTls(system roots)"),
            Some(ca) => write!(
                f,
                "RedisTls({}, {} certificates)",
                ca.path.display(),
                ca.certificates
            ),
        }
    }
}

impl RedisTls {
    /// The system's root certificates.
    pub fn system_roots() -> RedisTls {
        RedisTls::default()
    }

    /// The CA certificates of a PEM file, which must hold at least one, each
    /// usable as a trust anchor. The error says what is wrong with the file.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<RedisTls, String> {
        let path = path.as_ref();
        let shown = path.display();
        let pem = std::fs::read(path).map_err(|e| format!("cannot read '{shown}': {e}"))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("'{shown}' is not a PEM file of certificates: {e}"))?;
        if certificates.is_empty() {
            return Err(format!(
                "'{shown}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (n, certificate) in certificates.iter().enumerate() {
            roots.add(certificate.clone()).map_err(|e| {
                format!(
                    "'{shown}': certificate {} of {} is not a usable CA certificate: {e}",
                    n + 1,
                    certificates.len()
                )
            })?;
        }
        Ok(RedisTls {
            ca_file: Some(CaFile {
                path: path.to_owned(),
                pem: pem.into(),
                certificates: certificates.len(),
            }),
        })
    }

    pub fn has_ca_file(&self) -> bool {
        self.ca_file.is_some()
    }

    /// A client for `url`: a `rediss://` one trusts the CA file's
    /// certificates when there is one (and then only those), else the
    /// system's roots. A URL asking to skip verification (`#insecure`) is
    /// refused.
    pub fn client(&self, url: &str) -> Result<redis::Client, RedisError> {
        let client = redis::Client::open(url)?;
        let ConnectionAddr::TcpTls { insecure, .. } = client.get_connection_info().addr() else {
            return Ok(client);
        };
        if *insecure {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "a rediss:// URL with #insecure would skip verifying the server's certificate",
                "remove #insecure; for a private CA, set REDIS_TLS_CA_FILE".to_owned(),
            )));
        }
        match &self.ca_file {
            None => Ok(client),
            Some(ca) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.pem.to_vec()),
                },
            ),
        }
    }

    /// Says which roots a TLS handshake that failed was checked against.
    fn explain(&self, error: RedisError) -> RedisError {
        let Some(tls) = tls_error(&error) else {
            return error;
        };
        let roots = match &self.ca_file {
            Some(ca) => format!("REDIS_TLS_CA_FILE ('{}')", ca.path.display()),
            None => "the system's root certificates (REDIS_TLS_CA_FILE is not set: set it \
                     to the CA certificate of a server with a private CA)"
                .to_owned(),
        };
        let what = match tls {
            rustls::Error::InvalidCertificate(_) => {
                "TLS: the Redis server's certificate does not verify"
            }
            _ => "TLS: the handshake with the Redis server failed",
        };
        RedisError::from((ErrorKind::Io, what, format!("{tls}; trusted: {roots}")))
    }
}

/// The rustls error under a failed connection, if that is why it failed:
/// the redis crate keeps the `io::Error` from tokio-rustls behind an `Arc`.
fn tls_error(error: &RedisError) -> Option<&rustls::Error> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    let source = std::error::Error::source(error)?;
    let io = match source.downcast_ref::<Shared>() {
        Some(shared) => shared.downcast_ref::<std::io::Error>()?,
        None => source.downcast_ref::<std::io::Error>()?,
    };
    io.get_ref()?.downcast_ref::<rustls::Error>()
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
