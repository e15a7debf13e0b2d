//! Every Redis connection of the gateway and the workers: one server
//! (`REDIS_URL`), a Redis Cluster (`REDIS_CLUSTER_NODES`), or the primary that
//! Sentinel names (`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`), each over
//! `redis://` or `rediss://`.
//!
//! [`Redis`] is one type for the three, so the queue (apalis-redis and our
//! own scripts), the rate limiters, the reconciler's lease and the health
//! check are written once. What a cluster needs of the keys (one hash tag per
//! queue) is the queue's business: see [`crate::queue`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::Secret;

/// Where Redis is: parsed once from the environment (see `config.rs`).
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// `REDIS_URL`.
    Single(Secret),
    /// `REDIS_CLUSTER_NODES`: seed nodes; the client learns the rest.
    Cluster(Vec<Secret>),
    /// `REDIS_SENTINELS` and `REDIS_SENTINEL_MASTER`.
    Sentinel {
        sentinels: Vec<Secret>,
        master: String,
    },
}

impl RedisTarget {
    /// The variable that names this target, for errors.
    pub fn variable(&self) -> &'static str {
        match self {
            RedisTarget::Single(_) => "REDIS_URL",
            RedisTarget::Cluster(_) => "REDIS_CLUSTER_NODES",
            RedisTarget::Sentinel { .. } => "REDIS_SENTINELS",
        }
    }

    fn urls(&self) -> Vec<&str> {
        match self {
            RedisTarget::Single(url) => vec![url.expose()],
            RedisTarget::Cluster(urls)
            | RedisTarget::Sentinel {
                sentinels: urls, ..
            } => urls.iter().map(Secret::expose).collect(),
        }
    }

    /// Whether every URL is `rediss://` (a CA file is only for TLS).
    pub fn is_tls(&self) -> bool {
        self.urls().iter().all(|url| url.starts_with("rediss://"))
    }
}

/// A connection to Redis, whatever its topology. Cheap to clone: clones
/// share the underlying multiplexed connection(s).
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelPrimary>),
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Redis::Single(_) => "Redis(single)",
            Redis::Cluster(_) => "Redis(cluster)",
            Redis::Sentinel(_) => "Redis(sentinel)",
        })
    }
}

const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to `target`. A single server or a Sentinel primary connects
/// without waiting for Redis to be up: commands fail fast while it is down and
/// the connection is made again in the background. A cluster needs one seed
/// node to answer. A `rediss://` server whose certificate does not verify is
/// an error naming the roots it was checked against; there is no fallback to
/// plaintext nor to an unverified connection.
pub async fn open(target: &RedisTarget, tls: &RedisTls) -> Result<Redis, RedisError> {
    match target {
        RedisTarget::Single(url) => connect(url.expose(), tls).await,
        RedisTarget::Cluster(nodes) => {
            let mut builder = redis::cluster::ClusterClientBuilder::new(
                nodes
                    .iter()
                    .map(|url| tls.connection_info(url.expose()))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .connection_timeout(CONNECTION_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2);
            if let Some(certificates) = tls.certificates() {
                builder = builder.certs(certificates);
            }
            let client = builder.build()?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| tls.explain(e))?;
            Ok(Redis::Cluster(conn))
        }
        RedisTarget::Sentinel { sentinels, master } => {
            let primary = SentinelPrimary::connect(sentinels, master, tls).await?;
            Ok(Redis::Sentinel(Arc::new(primary)))
        }
    }
}

/// Connects to one server at `url` (also the rate limiter's
/// `RATELIMIT_STORAGE_URI`, and tests).
pub async fn connect(url: &str, tls: &RedisTls) -> Result<Redis, RedisError> {
    Ok(Redis::Single(connect_manager(tls.client(url)?, tls).await?))
}

async fn connect_manager(
    client: redis::Client,
    tls: &RedisTls,
) -> Result<ConnectionManager, RedisError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1);
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| tls.explain(e))
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Single(conn) => conn.req_packed_command(cmd),
            Redis::Cluster(conn) => match ApalisRegistration::of(cmd) {
                Some(registration) => Box::pin(registration.run(conn.clone())),
                None => conn.req_packed_command(cmd),
            },
            Redis::Sentinel(primary) => {
                let primary = Arc::clone(primary);
                Box::pin(async move {
                    let mut conn = primary.current();
                    let result = conn.req_packed_command(cmd).await;
                    primary
                        .after(result.as_ref().map(std::slice::from_ref))
                        .await;
                    result
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Redis::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Redis::Sentinel(primary) => {
                let primary = Arc::clone(primary);
                Box::pin(async move {
                    let mut conn = primary.current();
                    let result = conn.req_packed_commands(pipeline, offset, count).await;
                    primary.after(result.as_deref()).await;
                    result
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(conn) => conn.get_db(),
            Redis::Cluster(conn) => conn.get_db(),
            Redis::Sentinel(primary) => primary.current().get_db(),
        }
    }
}

/// apalis-redis' worker registration on a cluster.
///
/// Its `register_worker.lua` also records the queue in a fixed key,
/// `core:apalis:queues:list`, which it does not declare: on a cluster that key
/// lives in a slot of its own, so the script fails ("non local key") unless
/// the queue's slot happens to sit on the same node, and a worker that cannot
/// register never fetches. That list only feeds apalis' board UI, which we do
/// not use. So on a cluster the registration runs as the few commands it
/// needs on the queue's own (declared) keys, and everything else of apalis
/// runs as it is. Recognised by its script's SHA1: an apalis upgrade that
/// changes the script no longer matches, and the cluster tests fail rather
/// than silently running it.
struct ApalisRegistration {
    keys: [Vec<u8>; 2],
    args: Vec<Vec<u8>>,
}

/// SHA1 of apalis-redis 1.0.0's `lua/register_worker.lua`.
const APALIS_REGISTER_WORKER_SHA1: &[u8] = b"0d5fbce91e1dcff1121ece41f7169da3c0e39194";

impl ApalisRegistration {
    /// `EVALSHA <sha> 2 <workers set> <worker metadata> <now> <name>
    /// <threshold> <backend> <service>`.
    fn of(cmd: &Cmd) -> Option<ApalisRegistration> {
        let args: Vec<&[u8]> = cmd
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => Some(bytes),
                _ => None,
            })
            .collect::<Option<_>>()?;
        match args.as_slice() {
            [name, sha, b"2", workers, metadata, rest @ ..]
                if name.eq_ignore_ascii_case(b"EVALSHA")
                    && sha.eq_ignore_ascii_case(APALIS_REGISTER_WORKER_SHA1)
                    && rest.len() == 5 =>
            {
                Some(ApalisRegistration {
                    keys: [workers.to_vec(), metadata.to_vec()],
                    args: rest.iter().map(|a| a.to_vec()).collect(),
                })
            }
            _ => None,
        }
    }

    async fn run(self, mut conn: ClusterConnection) -> Result<Value, RedisError> {
        // The same checks and writes as apalis' script, minus the undeclared key.
        static REGISTER: LazyLock<redis::Script> = LazyLock::new(|| {
            redis::Script::new(
                r#"
                local now, name, threshold = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
                local seen = redis.call('ZSCORE', KEYS[1], name)
                if seen and now - tonumber(seen) < threshold then
                  return redis.error_reply('worker is still active within threshold')
                end
                redis.call('ZADD', KEYS[1], now, name)
                redis.call('HSET', KEYS[2], 'backend_name', ARGV[4], 'service', ARGV[5])
                return 1
                "#,
            )
        });
        let mut invocation = REGISTER.key(&self.keys[0]);
        invocation.key(&self.keys[1]);
        for arg in &self.args {
            invocation.arg(arg);
        }
        invocation.invoke_async(&mut conn).await
    }
}

/// The primary that Sentinel names, followed across failovers: a command that
/// fails because the primary is gone or has become a replica (`READONLY`)
/// makes the next command ask Sentinel again, and a new primary gets a new
/// connection. The failed command itself returns its error; every caller of
/// Redis here already retries or answers 503.
pub struct SentinelPrimary {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    tls: RedisTls,
    current: std::sync::RwLock<(ConnectionAddr, ConnectionManager)>,
}

impl SentinelPrimary {
    async fn connect(
        sentinels: &[Secret],
        master: &str,
        tls: &RedisTls,
    ) -> Result<SentinelPrimary, RedisError> {
        let infos = sentinels
            .iter()
            .map(|url| tls.connection_info(url.expose()))
            .collect::<Result<Vec<_>, _>>()?;
        // The primary is reached as the sentinels are: TLS or not, and with
        // the first sentinel URL's user, password and database (one password
        // for sentinels and data nodes, as most deployments of Sentinel set up).
        let mut node = SentinelNodeConnectionInfo::default();
        if let Some(first) = infos.first() {
            if let ConnectionAddr::TcpTls { .. } = first.addr() {
                node = node.set_tls_mode(redis::TlsMode::Secure);
            }
            node = node.set_redis_connection_info(first.redis_settings().clone());
        }
        let mut sentinel =
            SentinelClient::build(infos, master, Some(node), SentinelServerType::Master)?;
        let client = sentinel.async_get_client().await?;
        let addr = client.get_connection_info().addr().clone();
        let conn = connect_manager(tls.with_roots(client)?, tls).await?;
        Ok(SentinelPrimary {
            sentinel: tokio::sync::Mutex::new(sentinel),
            tls: tls.clone(),
            current: std::sync::RwLock::new((addr, conn)),
        })
    }

    fn current(&self) -> ConnectionManager {
        self.current.read().expect("not poisoned").1.clone()
    }

    /// Follows the primary when `result` says it is gone or demoted. A
    /// server's error reply comes back as a value, not an `Err`, so the
    /// replies are read too (`READONLY`, also from a script that wrote).
    async fn after(&self, result: Result<&[Value], &RedisError>) {
        let lost = match result {
            Err(error) => {
                error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                    || error.is_timeout()
                    || error.to_string().contains("READONLY")
            }
            Ok(values) => values.iter().any(|value| {
                matches!(value, Value::ServerError(error)
                    if error.code() == "READONLY"
                        || error.details().is_some_and(|d| d.contains("READONLY")))
            }),
        };
        if lost && let Err(error) = self.follow().await {
            tracing::warn!(%error, "redis sentinel: cannot find the primary");
        }
    }

    /// Asks Sentinel for the primary; connects to it when it moved.
    async fn follow(&self) -> Result<(), RedisError> {
        // One caller asks at a time; the others find the answer in place.
        let mut sentinel = self.sentinel.lock().await;
        let client = sentinel.async_get_client().await?;
        let addr = client.get_connection_info().addr().clone();
        if self.current.read().expect("not poisoned").0 == addr {
            return Ok(());
        }
        let conn = connect_manager(self.tls.with_roots(client)?, &self.tls).await?;
        tracing::info!(primary = %addr, "redis sentinel: following the new primary");
        *self.current.write().expect("not poisoned") = (addr, conn);
        Ok(())
    }
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

    fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_file.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.pem.to_vec()),
        })
    }

    /// `url` parsed; a `rediss://` URL asking to skip verification
    /// (`#insecure`) is refused.
    fn connection_info(&self, url: &str) -> Result<redis::ConnectionInfo, RedisError> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)?;
        if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "a rediss:// URL with #insecure would skip verifying the server's certificate",
                "remove #insecure; for a private CA, set REDIS_TLS_CA_FILE".to_owned(),
            )));
        }
        Ok(info)
    }

    /// A client for `url`: a `rediss://` one trusts the CA file's
    /// certificates when there is one (and then only those), else the
    /// system's roots.
    pub fn client(&self, url: &str) -> Result<redis::Client, RedisError> {
        self.with_roots(redis::Client::open(self.connection_info(url)?)?)
    }

    /// `client` again, trusting the CA file when it is a TLS one.
    fn with_roots(&self, client: redis::Client) -> Result<redis::Client, RedisError> {
        let info = client.get_connection_info().clone();
        match (info.addr(), self.certificates()) {
            (ConnectionAddr::TcpTls { .. }, Some(certificates)) => {
                redis::Client::build_with_tls(info, certificates)
            }
            _ => Ok(client),
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
