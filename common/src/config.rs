//! Configuration, parsed once from the environment (and `.env`) into typed
//! structs. A bad or missing value stops the process at start-up with an error
//! that names the variable.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::backoff::Backoff;
use crate::domain::{Role, TemplateRef};
use crate::outbound::OutboundPolicy;
use crate::queue::Sharding;
use crate::rate::Quota;
use crate::redis_conn::{RedisTarget, RedisTls};

/// The testing profile's Sent webhook secret when none is set: the original
/// integration's, for its legacy signatures.
pub const TESTING_WEBHOOK_SECRET: &str = "test-webhook-secret";

/// `CALLBACK_SIGNING_KEY` outside production when none is set (published, so
/// production requires one of its own).
pub const DEVELOPMENT_CALLBACK_SIGNING_KEY: &str = "development-only-callback-signing-key";

/// Secrets this repository publishes (README, compose, `.env.example`,
/// scripts, docs, tests), which the production profile refuses: anyone can
/// read them. `common/tests/published_secrets.rs` scans the repository and
/// fails on one missing here.
pub const PUBLISHED_SECRETS: &[&str] = &[
    // scripts/dev.sh and sent-sim's development defaults
    "dev-key-change-me",
    "whsec_ZGV2LXNlY3JldC1vbmx5LWZvci1sb2NhbC11c2U=",
    "whsec_c2VudC1zaW0tZGV2ZWxvcG1lbnQtb25seS1zZWNyZXQ=",
    // a configuration test's malformed forward secret (refused anyway)
    "not-a-whsec",
    // the testing profile's default and the tests' Sent secrets
    TESTING_WEBHOOK_SECRET,
    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_Xj9ewGkiVNnH+XXqBTTychKVCHtaU0UHbyVfbS9cJRQ=",
    "whsec_Z3dsb2dzLWNhbGxiYWNrLXNlY3JldC0wMQ==",
    "whsec_Z3dsb2dzLXdlYmhvb2stc2VjcmV0LTAxMjM0NTY3ODk=",
    "whsec_bG9ncy10ZXN0LXdlYmhvb2stc2VjcmV0LTAxMjM0NTY=",
    "whsec_bG9ncy1tYW5hZ2VkLWNhbGxiYWNrLXNlY3JldC0wMQ==",
    "whsec_gwlogs_stripe_4b8f2a",
    "whsec_logs_stripe_secret_91c3e7",
    "whsec_someone_else",
    "whsec_stripe_test_secret",
    "whsec_AAEC",
    "whsec_x",
    "whsec_!!!",
    "whsec_!!!!",
    // the unit tests of this module
    "justakey",
    "key-aaaaaaaa",
    "key-bbbbbbbb",
    "supersecretkey",
    // placeholders in the README and the runbook
    "whsec_new",
    "whsec_old",
    // CALLBACK_SIGNING_KEY: the development default, the demo's, the tests'
    DEVELOPMENT_CALLBACK_SIGNING_KEY,
    "local-demo-callback-signing-key-0123456789",
    "tests-callback-signing-key-0123456789abcdef",
    "tests-previous-callback-signing-key-0123456789",
    "whsec_qFlI2q+Wn6TSvH1odBCtVp2mCeEr7IkkrAxvsXSu9y0=",
];

/// Deployment profile, as in the original integration (`APP_ENV` or `FLASK_CONFIG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Development,
    Testing,
    Production,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "development" | "default" | "dev" => Ok(Profile::Development),
            "testing" | "test" => Ok(Profile::Testing),
            "production" | "prod" => Ok(Profile::Production),
            other => Err(format!(
                "unknown profile '{other}' (expected development, testing or production)"
            )),
        }
    }
}

/// A value that must never be printed: `Debug` shows only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `LOG_LEVEL`: level for this project's crates (`debug`, `info`, ...),
    /// or a full `tracing` filter directive.
    pub level: String,
    pub format: LogFormat,
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// `RATELIMIT_STORAGE_URI`: `None` for `memory://`, else where in Redis
    /// the gateways share their limits.
    pub storage: Option<RedisTarget>,
    pub messages: Quota,
    pub webhooks: Quota,
    pub default: Quota,
    /// `RATELIMIT_AUTH_FAILURES`: failed authentications per client address
    /// (per gateway); past it, 429 before any key is looked up.
    pub auth_failures: Quota,
}

#[derive(Debug, Clone)]
pub struct SentConfig {
    pub api_key: Option<Secret>,
    pub base_url: String,
    pub timeout: Duration,
    /// Fleet-wide outbound budget in messages per minute; 0 means no limit.
    pub messages_per_minute: u32,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `SENT_DM_WEBHOOK_SECRET`: comma-separated, newest first, for rotation.
    pub sent_secrets: Vec<Secret>,
    pub tolerance: Duration,
    pub allow_legacy_signature: bool,
    pub stripe_secrets: Vec<Secret>,
    pub telegram_secret_tokens: Vec<Secret>,
}

#[derive(Debug, Clone)]
pub struct TemplateConfig {
    /// `WELCOME_TEMPLATE_ID` and `WELCOME_TEMPLATE_NAME`.
    pub welcome: TemplateRef,
    /// `ORDER_CONFIRMATION_TEMPLATE_ID` and `ORDER_CONFIRMATION_TEMPLATE_NAME`.
    pub order_confirmation: TemplateRef,
}

/// Processing of the webhook inbox by the worker (`INBOX_*`).
#[derive(Debug, Clone)]
pub struct InboxConfig {
    /// Events claimed per round trip.
    pub batch_size: i64,
    /// Batches one worker processes at once.
    pub concurrency: usize,
    /// Processing attempts before an event is parked as poison.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How long a claim lasts; a worker that dies mid-way loses it after this.
    pub lease: Duration,
    /// Polling fallback when no notification arrives.
    pub poll_interval: Duration,
    /// How often unmatched events are checked against new send records.
    pub rematch_interval: Duration,
    /// How long an event waits for its message before it is parked.
    pub unmatched_ttl: Duration,
    /// How long finished events (`processed`, `not_applicable`) are kept;
    /// `None` keeps them forever (`INBOX_RETENTION_DAYS=0`).
    pub retention: Option<Duration>,
}

/// Delivery of status callbacks to clients (`CALLBACK_*`).
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    /// Timeout of one POST, connection included.
    pub timeout: Duration,
    /// Attempts before a callback is given up.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Callbacks delivered at once by one worker.
    pub concurrency: usize,
    pub poll_interval: Duration,
    /// How long finished callbacks and their attempts are kept; `None`
    /// keeps them forever (`CALLBACK_RETENTION_DAYS=0`).
    pub retention: Option<Duration>,
    /// Most deliveries of one client (API key) in flight at once in one
    /// worker (`CALLBACK_PER_CLIENT_CONCURRENCY`, default half of
    /// `concurrency`), so a client whose receiver hangs leaves the rest to
    /// the others.
    pub per_client_concurrency: usize,
}

/// Forwarding of verified Stripe and Telegram events to the operator's own
/// services (`FORWARD_*`; issue 15). Read by the worker only.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// One per source whose `FORWARD_<SOURCE>_URL` is set.
    pub destinations: Vec<ForwardDestination>,
    /// Timeout of one POST, connection included (`FORWARD_TIMEOUT_SECS`).
    pub timeout: Duration,
    /// Attempts before a forward is dead-lettered (`FORWARD_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Deliveries in flight to one destination from one worker
    /// (`FORWARD_CONCURRENCY`); ordered sources (Telegram) have one at most.
    pub concurrency: usize,
    pub poll_interval: Duration,
    /// How long a claim lasts (`FORWARD_LEASE_SECS`, default twice the
    /// timeout and 30 s): a killed worker's deliveries are retried after it.
    pub lease: Duration,
    /// Where forwards may go: public addresses, plus the networks of
    /// `FORWARD_ALLOW_PRIVATE_NETWORKS`. Its own list, not the callbacks':
    /// a destination is the operator's own service (usually inside the
    /// network), while a `callback_url` is a client's; sharing one list
    /// would open the private network to every client's callbacks just to
    /// reach one internal service.
    pub policy: OutboundPolicy,
}

/// Where one source's events go.
#[derive(Clone)]
pub struct ForwardDestination {
    /// The destination's name: its source's ("stripe", "telegram").
    pub name: String,
    pub source: crate::domain::Provider,
    pub url: String,
    /// Signs the forwarded requests (Standard Webhooks).
    pub secret: crate::signature::WebhookSecret,
}

impl fmt::Debug for ForwardDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a token: only its origin is shown.
        let origin = url::Url::parse(&self.url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        f.debug_struct("ForwardDestination")
            .field("name", &self.name)
            .field("origin", &origin)
            .field("secret", &self.secret)
            .finish()
    }
}

impl ForwardConfig {
    /// The destinations of `source`'s events.
    pub fn destinations_of(
        &self,
        source: crate::domain::Provider,
    ) -> impl Iterator<Item = &ForwardDestination> {
        self.destinations.iter().filter(move |d| d.source == source)
    }
}

/// How the status callbacks of bootstrap (`API_KEYS`) keys are signed: with
/// a secret derived from a server-side key and the key's name
/// (`common::signature::callback`). Shared: the worker signs, and
/// `gateway keys secret` prints the secret.
#[derive(Debug, Clone)]
pub struct CallbackSigning {
    /// `CALLBACK_SIGNING_KEY` (required in production).
    pub key: Secret,
    /// `CALLBACK_SIGNING_KEY_PREVIOUS`: while set, callbacks are also signed
    /// with the secrets derived from it (a rotation of the signing key).
    pub previous_key: Option<Secret>,
    /// `CALLBACK_LEGACY_SECRET_UNTIL`: until then, callbacks are also signed
    /// with the secret the previous release derived from the API key itself.
    pub legacy_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// A bootstrap key of `API_KEYS`: `name:key`, or `name:key:admin`.
#[derive(Debug, Clone)]
pub struct BootstrapKey {
    pub name: String,
    pub key: Secret,
    pub role: Role,
}

/// How long Sent remembers an `Idempotency-Key` (SENT_API.md).
pub const SENT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: usize,
    pub reconcile_interval: Duration,
    pub reconcile_after: Duration,
    /// On SIGTERM, how long in-flight sends may take to finish before the
    /// process exits anyway (their jobs then return to the queue).
    pub shutdown_grace: Duration,
    /// Where `GET /metrics` listens (`WORKER_METRICS_BIND`, default `0.0.0.0:9100`).
    pub metrics_bind: SocketAddr,
    /// Whether `WORKER_METRICS_BIND` was set. If it was, a taken port stops
    /// the worker; if not, the worker falls back to a free port (so several
    /// workers can run on one host with the defaults).
    pub metrics_bind_set: bool,
    /// A message Sent has (accepted, scheduled at Sent, sent) whose status
    /// has not moved for this long is checked with `GET /v3/messages/{id}`
    /// (`STATUS_POLL_AFTER_SECS`); later polls wait 4, 24 and 96 times as long.
    pub status_poll_after: Duration,
    /// Fleet-wide status polls per minute (`STATUS_POLLS_PER_MINUTE`; 0: none).
    pub status_polls_per_minute: u32,
    /// How long messages are kept, with their timelines and callbacks
    /// (`MESSAGE_RETENTION_DAYS`, default 90, at least 7); `None` keeps them
    /// forever (0). Whole weeks go at once (worker/src/retention.rs), and
    /// never one with a message not yet handed to Sent.
    pub message_retention: Option<Duration>,
}

impl WorkerConfig {
    /// The gaps before each status poll: 15 minutes, 1, 6 and 24 hours by default.
    pub fn status_poll_gaps(&self) -> [Duration; crate::store::STATUS_POLLS] {
        [1, 4, 24, 96].map(|factor| self.status_poll_after * factor)
    }

    /// The longest a message's attempts can take, first to last.
    pub fn worst_retry_time(&self, sent: &SentConfig) -> Duration {
        self.backoff.worst_case(
            self.max_attempts,
            crate::sent::classify::MAX_RETRY_AFTER,
            sent.timeout,
        )
    }

    /// How old a dead-lettered message's first attempt may be for a
    /// re-drive to end inside Sent's idempotency window.
    pub fn redrive_safe_window(&self, sent: &SentConfig) -> Duration {
        SENT_IDEMPOTENCY_WINDOW.saturating_sub(self.worst_retry_time(sent))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub profile: Profile,
    pub service_name: String,
    pub log: LogConfig,
    pub database_url: Secret,
    /// `DATABASE_DIRECT_URL`: Postgres itself, for migrations and LISTEN,
    /// when `DATABASE_URL` goes through a pooler.
    pub database_direct_url: Option<Secret>,
    /// `DATABASE_READ_URL`: a streaming replica for the dashboard and the
    /// message list, which tolerate its lag; the primary without it.
    pub database_read_url: Option<Secret>,
    pub database_max_connections: u32,
    /// `MIGRATE_ON_START` (default true): apply migrations at start-up. Off
    /// where a separate step migrates (`gateway migrate`, a Kubernetes Job):
    /// the process then waits for the schema instead, so pods do not race.
    pub migrate_on_start: bool,
    /// `REDIS_URL`, `REDIS_CLUSTER_NODES` or `REDIS_SENTINELS`.
    pub redis: RedisTarget,
    /// Prefix of every Redis key this deployment owns (queue, rate limits).
    pub redis_prefix: String,
    /// `QUEUE_SHARDS` (default 1): apalis queues the send queue is spread
    /// over, each on its own Redis Cluster slot, by `QUEUE_SHARD_BY`
    /// (`message`, the default, or `client`). Gateways and workers of a
    /// deployment must agree.
    pub sharding: Sharding,
    /// `REDIS_TLS_CA_FILE`: what `rediss://` connections (queue and rate
    /// limits) trust; the system's roots without it.
    pub redis_tls: RedisTls,
    /// `API_KEYS`: bootstrap keys, `name:key` or `name:key:admin`.
    pub api_keys: Vec<BootstrapKey>,
    pub callback_signing: CallbackSigning,
    pub sent: SentConfig,
    /// What only the gateway reads.
    pub gateway: GatewayConfig,
    /// What only the worker reads: its send path, inbox and callbacks.
    pub worker: WorkerConfig,
    pub inbox: InboxConfig,
    pub callbacks: CallbackConfig,
    /// Where status callbacks may go: public addresses, plus the networks of
    /// `CALLBACK_ALLOW_PRIVATE_NETWORKS`. Shared: the gateway checks
    /// `callback_url` hosts against it, the worker every address it connects to.
    pub callback_policy: OutboundPolicy,
    /// Forwarding of Stripe and Telegram events (worker).
    pub forward: ForwardConfig,
    /// Routing of replies (`message.received`) to tenants (worker).
    pub replies: ReplyConfig,
}

/// Replies to messages (issue 15): a contact's message goes to the tenant
/// that last wrote to its number, within `window`.
#[derive(Debug, Clone)]
pub struct ReplyConfig {
    /// `REPLY_WINDOW_DAYS` (default 30): how far back a reply looks for the
    /// message it answers; older conversations are unroutable.
    pub window: Duration,
    /// `INBOUND_URLS=name:url,...`: where the replies of `API_KEYS` clients
    /// go (managed keys keep theirs in the database).
    pub inbound_urls: HashMap<String, String>,
}

/// The gateway's own settings. A worker does not read them, so a bad one
/// does not stop a worker (see [`Process`]).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `GATEWAY_BIND`.
    pub bind: SocketAddr,
    /// `FORWARDED_ALLOW_IPS`: proxies whose `X-Forwarded-For` names the
    /// client (for per-IP rate limits). Empty: the peer is the client.
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    /// Longest free `text` of a message, in Unicode scalar values (`TEXT_MAX_CHARS`).
    pub text_max_chars: usize,
    pub request_timeout: Duration,
    /// After SIGTERM, how long the gateway keeps accepting connections while
    /// `/health` answers 503, so a load balancer can stop routing to it
    /// before it stops listening.
    pub shutdown_delay: Duration,
    /// A connection that has not sent a whole request head for this long
    /// (idle between requests, or sending slowly) is closed.
    pub idle_timeout: Duration,
    pub idempotency_ttl: Duration,
    pub public_dashboard: bool,
    pub rate_limit: RateLimitConfig,
    pub webhooks: WebhookConfig,
    pub templates: TemplateConfig,
}

/// Which process reads the configuration: each parses (and so validates) the
/// shared settings and its own section only, and takes the defaults for the
/// other's, which it never reads. Tests and tools read both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Gateway,
    Worker,
    Both,
}

/// A configuration error: always names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl Config {
    /// Reads `.env` (if present) and then the process environment.
    pub fn from_env(process: Process) -> Result<Config, ConfigError> {
        let _ = dotenvy::dotenv();
        Config::from_map_for(&std::env::vars().collect(), process)
    }

    /// Every section, as tests and tools need.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        Config::from_map_for(vars, Process::Both)
    }

    pub fn from_map_for(
        vars: &HashMap<String, String>,
        process: Process,
    ) -> Result<Config, ConfigError> {
        let env = Env { vars };
        let none = HashMap::new();
        let env_of = |reads: bool| {
            if reads {
                Env { vars }
            } else {
                Env { vars: &none }
            }
        };
        let gateway_env = env_of(process != Process::Worker);
        let worker_env = env_of(process != Process::Gateway);
        let profile = match env.get("APP_ENV").or_else(|| env.get("FLASK_CONFIG")) {
            Some(v) => v.parse().map_err(|problem| ConfigError {
                var: if env.get("APP_ENV").is_some() {
                    "APP_ENV"
                } else {
                    "FLASK_CONFIG"
                },
                problem,
            })?,
            None => Profile::Development,
        };
        let dev_default = |value: &str| (profile != Profile::Production).then(|| value.to_owned());
        let testing = profile == Profile::Testing;

        let log = LogConfig {
            level: env.string(
                "LOG_LEVEL",
                match profile {
                    Profile::Development => "debug",
                    Profile::Testing => "info",
                    Profile::Production => "warn",
                },
            ),
            format: match env
                .string(
                    "LOG_FORMAT",
                    if profile == Profile::Production {
                        "json"
                    } else {
                        "pretty"
                    },
                )
                .as_str()
            {
                "json" => LogFormat::Json,
                "pretty" | "text" => LogFormat::Pretty,
                other => {
                    return Err(env.bad("LOG_FORMAT", format!("'{other}' is not json or pretty")));
                }
            },
            otlp_endpoint: env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        };

        let rate_limit_uri = gateway_env.string("RATELIMIT_STORAGE_URI", "memory://");
        let rate_limit = RateLimitConfig {
            enabled: gateway_env.parse("RATELIMIT_ENABLED", !testing)?,
            storage: rate_limit_storage(&rate_limit_uri)
                .map_err(|problem| gateway_env.bad("RATELIMIT_STORAGE_URI", problem))?,
            messages: gateway_env.parse("RATELIMIT_MESSAGES", Quota::per_minute(10))?,
            webhooks: gateway_env.parse("RATELIMIT_WEBHOOKS", Quota::per_minute(100))?,
            default: gateway_env.parse("RATELIMIT_DEFAULT", Quota::per_minute(100))?,
            auth_failures: gateway_env.parse("RATELIMIT_AUTH_FAILURES", Quota::per_minute(20))?,
        };

        let sent = SentConfig {
            api_key: env
                .get("SENT_DM_API_KEY")
                .or_else(|| testing.then(|| "test-api-key".to_owned()))
                .map(Secret),
            base_url: env
                .string("SENT_BASE_URL", "https://api.sent.dm")
                .trim_end_matches('/')
                .to_owned(),
            timeout: env.seconds("SENT_TIMEOUT_SECS", 10)?,
            messages_per_minute: env.parse("SENT_MESSAGES_PER_MINUTE", 0)?,
        };

        let webhooks = WebhookConfig {
            sent_secrets: gateway_env
                .list("SENT_DM_WEBHOOK_SECRET")
                .map(Secret)
                .collect(),
            tolerance: gateway_env.seconds("WEBHOOK_TOLERANCE_SECS", 300)?,
            allow_legacy_signature: gateway_env.parse(
                "WEBHOOK_ALLOW_LEGACY_SIGNATURE",
                profile != Profile::Production,
            )?,
            stripe_secrets: gateway_env
                .list("STRIPE_WEBHOOK_SECRET")
                .map(Secret)
                .collect(),
            telegram_secret_tokens: env
                .list("TELEGRAM_WEBHOOK_SECRET_TOKEN")
                .map(Secret)
                .collect(),
        };
        let webhooks = if testing && webhooks.sent_secrets.is_empty() {
            WebhookConfig {
                sent_secrets: vec![Secret::new(TESTING_WEBHOOK_SECRET)],
                ..webhooks
            }
        } else {
            webhooks
        };

        let template = |id_var: &'static str, id: &str, name_var: &str, name: &str| {
            TemplateRef::new(
                Some(gateway_env.string(id_var, id)),
                Some(gateway_env.string(name_var, name)),
            )
            .map_err(|problem| gateway_env.bad(id_var, format!("{problem} (and {name_var})")))
        };
        let templates = TemplateConfig {
            welcome: template(
                "WELCOME_TEMPLATE_ID",
                "welcome-template-id",
                "WELCOME_TEMPLATE_NAME",
                "welcome",
            )?,
            order_confirmation: template(
                "ORDER_CONFIRMATION_TEMPLATE_ID",
                "order-confirmation-id",
                "ORDER_CONFIRMATION_TEMPLATE_NAME",
                "order_confirmation",
            )?,
        };

        let worker = WorkerConfig {
            concurrency: worker_env.parse("WORKER_CONCURRENCY", 64)?,
            max_attempts: worker_env.parse("WORKER_MAX_ATTEMPTS", 8)?,
            backoff: worker_env.backoff(
                ("WORKER_BACKOFF_BASE_MS", 1000),
                ("WORKER_BACKOFF_MAX_SECS", 300),
            )?,
            heartbeat_interval: worker_env.seconds("WORKER_HEARTBEAT_SECS", 5)?,
            missed_heartbeats: worker_env.parse("WORKER_MISSED_HEARTBEATS", 3)?,
            reconcile_interval: worker_env.seconds("RECONCILE_INTERVAL_SECS", 30)?,
            reconcile_after: worker_env.seconds("RECONCILE_AFTER_SECS", 120)?,
            shutdown_grace: worker_env.seconds("WORKER_SHUTDOWN_GRACE_SECS", 30)?,
            status_poll_after: worker_env.positive_seconds("STATUS_POLL_AFTER_SECS", 900)?,
            // Sent documents 200 requests a minute on its standard endpoints;
            // polls take at most a tenth of that by default.
            status_polls_per_minute: worker_env.parse("STATUS_POLLS_PER_MINUTE", 20)?,
            // Tests run many workers on one machine: an ephemeral port each.
            metrics_bind: worker_env.parse(
                "WORKER_METRICS_BIND",
                if testing {
                    "127.0.0.1:0"
                } else {
                    "0.0.0.0:9100"
                }
                .parse()
                .unwrap(),
            )?,
            metrics_bind_set: worker_env.get("WORKER_METRICS_BIND").is_some(),
            message_retention: worker_env.days("MESSAGE_RETENTION_DAYS", 90)?,
        };
        // Messages go a week (a partition) at a time; a shorter retention
        // would also cut into the status polls' last day.
        if worker
            .message_retention
            .is_some_and(|r| r < Duration::from_secs(7 * 86_400))
        {
            return Err(worker_env.bad(
                "MESSAGE_RETENTION_DAYS",
                "must be 0 (keep forever) or at least 7: messages are dropped a week at a time"
                    .into(),
            ));
        }
        if worker.concurrency == 0 {
            return Err(worker_env.bad("WORKER_CONCURRENCY", "must be at least 1".into()));
        }
        if worker.max_attempts == 0 {
            return Err(worker_env.bad("WORKER_MAX_ATTEMPTS", "must be at least 1".into()));
        }
        // Sent keeps an Idempotency-Key for 24 hours: a retry after that
        // could send the message twice.
        let worst = worker.worst_retry_time(&sent);
        if worst > SENT_IDEMPOTENCY_WINDOW {
            return Err(worker_env.bad(
                "WORKER_MAX_ATTEMPTS",
                format!(
                    "retries could run for {}h (WORKER_MAX_ATTEMPTS with WORKER_BACKOFF_MAX_SECS, \
                     the longest Retry-After honoured ({}s) and SENT_TIMEOUT_SECS), past Sent's \
                     24-hour idempotency window, after which a retry could send twice: lower them",
                    worst.as_secs() / 3600,
                    crate::sent::classify::MAX_RETRY_AFTER.as_secs()
                ),
            ));
        }

        let inbox = InboxConfig {
            batch_size: worker_env.parse("INBOX_BATCH_SIZE", 200)?,
            concurrency: worker_env.parse("INBOX_CONCURRENCY", 4)?,
            max_attempts: worker_env.parse("INBOX_MAX_ATTEMPTS", 10)?,
            backoff: worker_env.backoff(
                ("INBOX_BACKOFF_BASE_MS", 1000),
                ("INBOX_BACKOFF_MAX_SECS", 600),
            )?,
            lease: worker_env.seconds("INBOX_LEASE_SECS", 60)?,
            poll_interval: Duration::from_millis(worker_env.parse("INBOX_POLL_INTERVAL_MS", 1000)?),
            rematch_interval: worker_env.seconds("INBOX_REMATCH_INTERVAL_SECS", 30)?,
            unmatched_ttl: worker_env.seconds("INBOX_UNMATCHED_TTL_SECS", 24 * 3600)?,
            retention: worker_env.days("INBOX_RETENTION_DAYS", 30)?,
        };
        // A purged event is no longer recognised as a duplicate: keep events
        // longer than Sent goes on retrying one (about a day).
        if inbox
            .retention
            .is_some_and(|r| r < Duration::from_secs(2 * 86_400))
        {
            return Err(worker_env.bad(
                "INBOX_RETENTION_DAYS",
                "must be 0 (keep forever) or at least 2: Sent retries an event for about a day"
                    .into(),
            ));
        }
        if inbox.batch_size < 1 || inbox.concurrency == 0 || inbox.max_attempts == 0 {
            let var = if inbox.batch_size < 1 {
                "INBOX_BATCH_SIZE"
            } else if inbox.concurrency == 0 {
                "INBOX_CONCURRENCY"
            } else {
                "INBOX_MAX_ATTEMPTS"
            };
            return Err(worker_env.bad(var, "must be at least 1".into()));
        }

        let callbacks = CallbackConfig {
            timeout: worker_env.positive_seconds("CALLBACK_TIMEOUT_SECS", 10)?,
            max_attempts: worker_env.parse("CALLBACK_MAX_ATTEMPTS", 8)?,
            backoff: worker_env.backoff(
                ("CALLBACK_BACKOFF_BASE_MS", 5000),
                ("CALLBACK_BACKOFF_MAX_SECS", 3600),
            )?,
            concurrency: worker_env.parse("CALLBACK_CONCURRENCY", 32)?,
            poll_interval: Duration::from_millis(
                worker_env.parse("CALLBACK_POLL_INTERVAL_MS", 1000)?,
            ),
            retention: worker_env.days("CALLBACK_RETENTION_DAYS", 30)?,
            per_client_concurrency: 0,
        };
        let callbacks = CallbackConfig {
            per_client_concurrency: worker_env.parse(
                "CALLBACK_PER_CLIENT_CONCURRENCY",
                (callbacks.concurrency / 2).max(1),
            )?,
            ..callbacks
        };
        if callbacks.per_client_concurrency == 0
            || callbacks.per_client_concurrency > callbacks.concurrency.max(1)
        {
            return Err(worker_env.bad(
                "CALLBACK_PER_CLIENT_CONCURRENCY",
                "must be at least 1 and at most CALLBACK_CONCURRENCY".into(),
            ));
        }
        if callbacks.max_attempts == 0 || callbacks.concurrency == 0 {
            let var = if callbacks.max_attempts == 0 {
                "CALLBACK_MAX_ATTEMPTS"
            } else {
                "CALLBACK_CONCURRENCY"
            };
            return Err(worker_env.bad(var, "must be at least 1".into()));
        }

        // Comma-separated CIDRs (or addresses); no `*`: allowing every
        // address must be spelled out (`0.0.0.0/0,::/0`).
        let callback_policy = if env
            .list("CALLBACK_ALLOW_PRIVATE_NETWORKS")
            .any(|n| n == "*")
        {
            return Err(env.bad(
                "CALLBACK_ALLOW_PRIVATE_NETWORKS",
                "'*' is not taken here: list the private networks callbacks may reach".into(),
            ));
        } else {
            OutboundPolicy::new(env.networks("CALLBACK_ALLOW_PRIVATE_NETWORKS")?)
        };

        let forward = forward_config(&worker_env, profile)?;

        // `name:key` or `name:key:role`; a key holding a colon is refused
        // rather than read as a role.
        let api_keys = env
            .list("API_KEYS")
            .map(|entry| {
                let fields: Vec<&str> = entry.split(':').map(str::trim).collect();
                let role = match fields.get(2) {
                    None => Ok(Role::Tenant),
                    Some(role) => role.parse::<Role>().map_err(|_| {
                        env.bad(
                            "API_KEYS",
                            format!(
                                "'{role}' after the key of '{}' is not a role: name:key or \
                                 name:key:admin (a key cannot hold ':')",
                                fields[0]
                            ),
                        )
                    }),
                }?;
                match fields[..] {
                    [name, key, ..] if fields.len() <= 3 && !name.is_empty() && key.len() >= 8 => {
                        Ok(BootstrapKey {
                            name: name.to_owned(),
                            key: Secret(key.to_owned()),
                            role,
                        })
                    }
                    _ => Err(env.bad(
                        "API_KEYS",
                        "expected comma-separated name:key or name:key:admin entries, keys of 8 \
                         characters or more"
                            .into(),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        // One name may have several keys (to rotate a key), of one role.
        if let Some(key) = api_keys.iter().find(|k| {
            api_keys
                .iter()
                .any(|other| other.name == k.name && other.role != k.role)
        }) {
            return Err(env.bad(
                "API_KEYS",
                format!("'{}' has keys of different roles", key.name),
            ));
        }

        let gateway = GatewayConfig {
            bind: gateway_env.parse("GATEWAY_BIND", "0.0.0.0:8000".parse().unwrap())?,
            trusted_proxies: gateway_env.networks("FORWARDED_ALLOW_IPS")?,
            max_body_bytes: gateway_env.parse("MAX_BODY_BYTES", 2 * 1024 * 1024)?,
            text_max_chars: gateway_env.parse("TEXT_MAX_CHARS", 1600)?,
            request_timeout: gateway_env.seconds("REQUEST_TIMEOUT_SECS", 15)?,
            shutdown_delay: gateway_env.seconds("GATEWAY_SHUTDOWN_DELAY_SECS", 2)?,
            idle_timeout: gateway_env.positive_seconds("GATEWAY_IDLE_TIMEOUT_SECS", 75)?,
            idempotency_ttl: gateway_env.seconds("IDEMPOTENCY_TTL_SECS", 24 * 3600)?,
            public_dashboard: gateway_env.parse("DASHBOARD_PUBLIC", false)?,
            rate_limit,
            webhooks,
            templates,
        };

        // Required in production, and named, before the signing key is.
        let database_url = Secret(env.required_or(
            "DATABASE_URL",
            dev_default("postgres://postgres@127.0.0.1:5432/sent_gateway"),
        )?);
        let redis = redis_target(&env, dev_default)?;
        let redis_tls = match env.get("REDIS_TLS_CA_FILE") {
            None => RedisTls::system_roots(),
            Some(path) => {
                RedisTls::ca_file(&path).map_err(|problem| env.bad("REDIS_TLS_CA_FILE", problem))?
            }
        };
        if redis_tls.has_ca_file() && !redis.is_tls() {
            return Err(env.bad(
                redis.variable(),
                "is not rediss:// but REDIS_TLS_CA_FILE is set: use rediss:// for TLS".into(),
            ));
        }
        let callback_signing = CallbackSigning {
            key: Secret(env.required_or(
                "CALLBACK_SIGNING_KEY",
                dev_default(DEVELOPMENT_CALLBACK_SIGNING_KEY),
            )?),
            previous_key: env.get("CALLBACK_SIGNING_KEY_PREVIOUS").map(Secret),
            legacy_until: match env.get("CALLBACK_LEGACY_SECRET_UNTIL") {
                None => None,
                Some(raw) => Some(
                    chrono::DateTime::parse_from_rfc3339(&raw)
                        .map_err(|e| {
                            env.bad(
                                "CALLBACK_LEGACY_SECRET_UNTIL",
                                format!(
                                    "'{raw}': {e} (an RFC 3339 time, e.g. 2027-01-31T00:00:00Z)"
                                ),
                            )
                        })?
                        .to_utc(),
                ),
            },
        };

        let replies = reply_config(&worker_env, profile, &api_keys, &callback_policy)?;

        if profile == Profile::Production {
            refuse_in_production(
                &env,
                &api_keys,
                &callback_signing,
                (process != Process::Worker).then_some(&gateway),
            )?;
        }

        Ok(Config {
            profile,
            service_name: env.string("SERVICE_NAME", "sent-gateway"),
            log,
            database_url,
            database_direct_url: env.get("DATABASE_DIRECT_URL").map(Secret),
            database_read_url: env.get("DATABASE_READ_URL").map(Secret),
            database_max_connections: env.parse("DATABASE_MAX_CONNECTIONS", 16)?,
            migrate_on_start: env.parse("MIGRATE_ON_START", true)?,
            redis,
            redis_prefix: env.string("REDIS_PREFIX", "sentgw"),
            sharding: Sharding {
                shards: match env.parse("QUEUE_SHARDS", 1u16)? {
                    0 => return Err(env.bad("QUEUE_SHARDS", "must be at least 1".into())),
                    n => n,
                },
                by: env
                    .string("QUEUE_SHARD_BY", "message")
                    .parse()
                    .map_err(|problem| env.bad("QUEUE_SHARD_BY", problem))?,
            },
            redis_tls,
            api_keys,
            callback_signing,
            sent,
            gateway,
            worker,
            inbox,
            callbacks,
            replies,
            callback_policy,
            forward,
        })
    }

    /// The Sent API key, which only processes that call Sent need.
    pub fn require_sent_api_key(&self) -> Result<&Secret, ConfigError> {
        self.sent.api_key.as_ref().ok_or(ConfigError {
            var: "SENT_DM_API_KEY",
            problem:
                "required to call Sent (point SENT_BASE_URL at sent-sim to run without an account)"
                    .into(),
        })
    }
}

/// `REPLY_WINDOW_DAYS` and `INBOUND_URLS` (issue 15). An inbound URL is
/// judged like a `callback_url`: http(s) (https only in production), its
/// host not an address `CALLBACK_ALLOW_PRIVATE_NETWORKS` refuses; and it
/// must name a key of `API_KEYS`.
fn reply_config(
    env: &Env,
    profile: Profile,
    api_keys: &[BootstrapKey],
    policy: &OutboundPolicy,
) -> Result<ReplyConfig, ConfigError> {
    let days: u64 = env.parse("REPLY_WINDOW_DAYS", 30)?;
    if !(1..=365).contains(&days) {
        return Err(env.bad(
            "REPLY_WINDOW_DAYS",
            "must be between 1 and 365 (days)".into(),
        ));
    }
    let mut inbound_urls = HashMap::new();
    for entry in env.list("INBOUND_URLS") {
        let Some((name, url)) = entry.split_once(':').map(|(n, u)| (n.trim(), u.trim())) else {
            return Err(env.bad(
                "INBOUND_URLS",
                "expected comma-separated name:url entries".into(),
            ));
        };
        if !api_keys.iter().any(|key| key.name == name) {
            return Err(env.bad(
                "INBOUND_URLS",
                format!("'{name}' is not the name of a key in API_KEYS"),
            ));
        }
        check_inbound_url(url, profile == Profile::Production, policy)
            .map_err(|problem| env.bad("INBOUND_URLS", format!("the URL of '{name}' {problem}")))?;
        if inbound_urls
            .insert(name.to_owned(), url.to_owned())
            .is_some()
        {
            return Err(env.bad("INBOUND_URLS", format!("'{name}' is listed twice")));
        }
    }
    Ok(ReplyConfig {
        window: Duration::from_secs(days * 86_400),
        inbound_urls,
    })
}

/// Whether `url` may receive a tenant's replies, as a `callback_url` may its
/// status callbacks: http(s) with a host (https only when `https_only`), not
/// a literal address (or `localhost`) the policy refuses. Names are checked
/// by the worker on every delivery. Says what is wrong, never the URL.
pub fn check_inbound_url(
    url: &str,
    https_only: bool,
    policy: &OutboundPolicy,
) -> Result<(), String> {
    let parsed = url::Url::parse(url)
        .ok()
        .filter(|u| {
            u.host().is_some() && (u.scheme() == "https" || (u.scheme() == "http" && !https_only))
        })
        .ok_or_else(|| {
            if https_only {
                "is not an https URL".to_owned()
            } else {
                "is not an http(s) URL".to_owned()
            }
        })?;
    policy
        .check_host(&parsed.host().expect("checked above"))
        .map_err(|refusal| {
            format!("points at {refusal}: list its network in CALLBACK_ALLOW_PRIVATE_NETWORKS")
        })
}

/// `FORWARD_*` (issue 15): a destination per source whose URL is set, its
/// `whsec_` secret required with it; a URL whose host is an address the
/// policy refuses stops the process here rather than dead-lettering every
/// event.
fn forward_config(env: &Env, profile: Profile) -> Result<ForwardConfig, ConfigError> {
    use crate::domain::Provider;
    use crate::signature::WebhookSecret;
    if env.list("FORWARD_ALLOW_PRIVATE_NETWORKS").any(|n| n == "*") {
        return Err(env.bad(
            "FORWARD_ALLOW_PRIVATE_NETWORKS",
            "'*' is not taken here: list the private networks forwards may reach".into(),
        ));
    }
    let policy = OutboundPolicy::new(env.networks("FORWARD_ALLOW_PRIVATE_NETWORKS")?);
    let sources: [(Provider, &'static str, &'static str); 2] = [
        (
            Provider::Stripe,
            "FORWARD_STRIPE_URL",
            "FORWARD_STRIPE_SECRET",
        ),
        (
            Provider::Telegram,
            "FORWARD_TELEGRAM_URL",
            "FORWARD_TELEGRAM_SECRET",
        ),
    ];
    let mut destinations = Vec::new();
    for (source, url_var, secret_var) in sources {
        let Some(url) = env.get(url_var) else {
            continue;
        };
        let parsed = url::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| env.bad(url_var, "must be an http(s) URL".into()))?;
        if let Err(refusal) = policy.check_host(&parsed.host().expect("checked above")) {
            return Err(env.bad(
                url_var,
                format!("points at {refusal}: list its network in FORWARD_ALLOW_PRIVATE_NETWORKS"),
            ));
        }
        let raw = env.get(secret_var).ok_or_else(|| {
            env.bad(
                secret_var,
                format!("is required with {url_var} (a whsec_ secret the receiver verifies with)"),
            )
        })?;
        if !raw.starts_with("whsec_") {
            return Err(env.bad(secret_var, "must be a whsec_ secret".into()));
        }
        let secret = WebhookSecret::parse(&raw)
            .map_err(|_| env.bad(secret_var, "is not whsec_ and base64".into()))?;
        if profile == Profile::Production
            && (PUBLISHED_SECRETS.contains(&raw.as_str())
                || secret.key_len() < PRODUCTION_WHSEC_MIN_BYTES)
        {
            return Err(env.bad(
                secret_var,
                format!(
                    "is published in this repository or shorter than {PRODUCTION_WHSEC_MIN_BYTES} \
                     bytes: generate one (echo whsec_$(openssl rand -base64 32))"
                ),
            ));
        }
        destinations.push(ForwardDestination {
            name: source.as_str().to_owned(),
            source,
            url,
            secret,
        });
    }
    let timeout = env.positive_seconds("FORWARD_TIMEOUT_SECS", 10)?;
    let config = ForwardConfig {
        destinations,
        timeout,
        max_attempts: env.parse("FORWARD_MAX_ATTEMPTS", 12)?,
        backoff: env.backoff(
            ("FORWARD_BACKOFF_BASE_MS", 5000),
            ("FORWARD_BACKOFF_MAX_SECS", 3600),
        )?,
        concurrency: env.parse("FORWARD_CONCURRENCY", 8)?,
        poll_interval: Duration::from_millis(env.parse("FORWARD_POLL_INTERVAL_MS", 1000)?),
        lease: env.seconds("FORWARD_LEASE_SECS", timeout.as_secs() * 2 + 30)?,
        policy,
    };
    if config.max_attempts == 0 || config.concurrency == 0 {
        let var = if config.max_attempts == 0 {
            "FORWARD_MAX_ATTEMPTS"
        } else {
            "FORWARD_CONCURRENCY"
        };
        return Err(env.bad(var, "must be at least 1".into()));
    }
    // A lease shorter than an attempt would let a second worker send the
    // same event while the first is still waiting for its answer.
    if config.lease <= config.timeout {
        return Err(env.bad(
            "FORWARD_LEASE_SECS",
            "must be longer than FORWARD_TIMEOUT_SECS".into(),
        ));
    }
    Ok(config)
}

/// Shortest bootstrap API key production accepts.
pub const PRODUCTION_KEY_MIN_CHARS: usize = 32;
/// Fewest key bytes of a `whsec_` secret production accepts.
pub const PRODUCTION_WHSEC_MIN_BYTES: usize = 24;

/// What production refuses, naming the variable: secrets anyone can read in
/// this repository, keys short enough to guess, a `whsec_` secret of few
/// bytes, every client trusted to name its own address, and the insecure
/// switches unless `ACKNOWLEDGE_INSECURE` names them. The gateway's section
/// is checked by the gateway only.
fn refuse_in_production(
    env: &Env,
    api_keys: &[BootstrapKey],
    callback_signing: &CallbackSigning,
    gateway: Option<&GatewayConfig>,
) -> Result<(), ConfigError> {
    const GENERATE: &str = "generate one, e.g. `openssl rand -base64 32`";
    let published = |secret: &Secret| PUBLISHED_SECRETS.contains(&secret.expose());
    for (var, key) in [
        ("CALLBACK_SIGNING_KEY", Some(&callback_signing.key)),
        (
            "CALLBACK_SIGNING_KEY_PREVIOUS",
            callback_signing.previous_key.as_ref(),
        ),
    ] {
        let Some(key) = key else { continue };
        if published(key) {
            return Err(env.bad(
                var,
                format!("is published in this project's repository: {GENERATE}"),
            ));
        }
        let chars = key.expose().chars().count();
        if chars < PRODUCTION_KEY_MIN_CHARS {
            return Err(env.bad(
                var,
                format!(
                    "has {chars} characters; production needs at least \
                     {PRODUCTION_KEY_MIN_CHARS}: {GENERATE}"
                ),
            ));
        }
    }
    for BootstrapKey { name, key, .. } in api_keys {
        if published(key) {
            return Err(env.bad(
                "API_KEYS",
                format!(
                    "the key of '{name}' is published in this project's repository: {GENERATE}"
                ),
            ));
        }
        let chars = key.expose().chars().count();
        if chars < PRODUCTION_KEY_MIN_CHARS {
            return Err(env.bad(
                "API_KEYS",
                format!(
                    "the key of '{name}' has {chars} characters; production needs at least \
                     {PRODUCTION_KEY_MIN_CHARS}: {GENERATE}"
                ),
            ));
        }
    }
    let Some(gateway) = gateway else {
        return Ok(());
    };
    let webhooks = &gateway.webhooks;
    for (var, secrets) in [
        ("SENT_DM_WEBHOOK_SECRET", &webhooks.sent_secrets),
        ("STRIPE_WEBHOOK_SECRET", &webhooks.stripe_secrets),
        (
            "TELEGRAM_WEBHOOK_SECRET_TOKEN",
            &webhooks.telegram_secret_tokens,
        ),
    ] {
        if secrets.iter().any(published) {
            return Err(env.bad(
                var,
                "holds a secret published in this project's repository: use the provider's".into(),
            ));
        }
    }
    for secret in &webhooks.sent_secrets {
        let text = secret.expose();
        let bytes = crate::signature::WebhookSecret::parse(text).map_or(0, |s| s.key_len());
        if text.starts_with("whsec_") && bytes < PRODUCTION_WHSEC_MIN_BYTES {
            return Err(env.bad(
                "SENT_DM_WEBHOOK_SECRET",
                format!(
                    "a whsec_ secret of {bytes} bytes; production needs at least \
                     {PRODUCTION_WHSEC_MIN_BYTES}"
                ),
            ));
        }
    }
    let acknowledged: Vec<String> = env.list("ACKNOWLEDGE_INSECURE").collect();
    for (var, on, risk) in [
        (
            "DASHBOARD_PUBLIC",
            gateway.public_dashboard,
            "anyone who reaches the gateway reads the status page",
        ),
        (
            "WEBHOOK_ALLOW_LEGACY_SIGNATURE",
            webhooks.allow_legacy_signature,
            "webhooks are also accepted with the legacy signature, which has no timestamp, so a \
             captured one can be replayed",
        ),
    ] {
        if on && !acknowledged.iter().any(|a| a == var) {
            return Err(env.bad(
                var,
                format!(
                    "is true in production: {risk}; set ACKNOWLEDGE_INSECURE={var} to accept that"
                ),
            ));
        }
    }
    if gateway.trusted_proxies.iter().any(|n| n.prefix_len() == 0) {
        return Err(env.bad(
            "FORWARDED_ALLOW_IPS",
            "trusts every address ('*'), so any client can name the address its rate limit \
             counts: list your proxies"
                .into(),
        ));
    }
    Ok(())
}

/// `RATELIMIT_STORAGE_URI` in the forms of the original integration's
/// limiter (the `limits` library): `memory://`, `redis://` or `rediss://`
/// (one server), `redis+cluster://host:port,host:port` (seed nodes) and
/// `redis+sentinel://host:port,host:port/master` (`rediss+…` for TLS).
fn rate_limit_storage(uri: &str) -> Result<Option<RedisTarget>, String> {
    let hosts = |scheme: &str, list: &str| -> Vec<Secret> {
        list.split(',')
            .map(|host| Secret(format!("{scheme}://{}", host.trim())))
            .collect()
    };
    match uri.split_once("://") {
        None if uri.is_empty() => Ok(None),
        Some(("memory", "")) => Ok(None),
        Some(("redis" | "rediss", _)) => Ok(Some(RedisTarget::Single(Secret(uri.to_owned())))),
        Some((scheme @ ("redis+cluster" | "rediss+cluster"), list)) if !list.is_empty() => {
            let scheme = scheme.trim_end_matches("+cluster");
            Ok(Some(RedisTarget::Cluster(hosts(scheme, list))))
        }
        Some((scheme @ ("redis+sentinel" | "rediss+sentinel"), rest)) => match rest.split_once('/')
        {
            Some((list, master)) if !list.is_empty() && !master.is_empty() => {
                Ok(Some(RedisTarget::Sentinel {
                    sentinels: hosts(scheme.trim_end_matches("+sentinel"), list),
                    master: master.to_owned(),
                }))
            }
            _ => Err(format!(
                "'{uri}': a sentinel URI is {scheme}://host:port[,host:port]/master"
            )),
        },
        _ => Err(format!(
            "'{uri}' is none of memory://, redis://, rediss://, redis+cluster://, \
             redis+sentinel://"
        )),
    }
}

/// Where Redis is. One of `REDIS_URL` (one server), `REDIS_CLUSTER_NODES`
/// (seed nodes of a cluster) or `REDIS_SENTINELS` with
/// `REDIS_SENTINEL_MASTER`; naming two is an error, not a silent choice.
fn redis_target(
    env: &Env,
    dev_default: impl Fn(&str) -> Option<String>,
) -> Result<RedisTarget, ConfigError> {
    let urls = |var: &'static str| -> Result<Vec<Secret>, ConfigError> {
        env.list(var)
            .map(|url| match url.split_once("://") {
                Some(("redis" | "rediss", _)) => Ok(Secret(url)),
                _ => Err(env.bad(var, "each entry must be a redis:// or rediss:// URL".into())),
            })
            .collect()
    };
    let cluster = urls("REDIS_CLUSTER_NODES")?;
    let sentinels = urls("REDIS_SENTINELS")?;
    let single = env.get("REDIS_URL");
    let named = [
        (!cluster.is_empty()).then_some("REDIS_CLUSTER_NODES"),
        (!sentinels.is_empty()).then_some("REDIS_SENTINELS"),
        single.is_some().then_some("REDIS_URL"),
    ];
    if let [first, second, ..] = named.iter().flatten().collect::<Vec<_>>()[..] {
        return Err(env.bad(
            first,
            format!("is set together with {second}: set only the one for your Redis"),
        ));
    }
    let master = env.get("REDIS_SENTINEL_MASTER");
    if !sentinels.is_empty() {
        let master = master.ok_or_else(|| {
            env.bad(
                "REDIS_SENTINEL_MASTER",
                "is required with REDIS_SENTINELS (the name the sentinels monitor)".into(),
            )
        })?;
        return Ok(RedisTarget::Sentinel { sentinels, master });
    }
    if master.is_some() {
        return Err(env.bad(
            "REDIS_SENTINEL_MASTER",
            "is set but REDIS_SENTINELS is not".into(),
        ));
    }
    if !cluster.is_empty() {
        return Ok(RedisTarget::Cluster(cluster));
    }
    Ok(RedisTarget::Single(Secret(env.required_or(
        "REDIS_URL",
        dev_default("redis://127.0.0.1:6379"),
    )?)))
}

struct Env<'a> {
    vars: &'a HashMap<String, String>,
}

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        self.vars
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_owned())
    }

    fn list(&self, var: &str) -> impl Iterator<Item = String> {
        self.get(var)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn bad(&self, var: &'static str, problem: String) -> ConfigError {
        ConfigError { var, problem }
    }

    fn required_or(
        &self,
        var: &'static str,
        default: Option<String>,
    ) -> Result<String, ConfigError> {
        self.get(var).or(default).ok_or(ConfigError {
            var,
            problem: "is required in production".into(),
        })
    }

    fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => parse_value(&raw).map_err(|e| self.bad(var, format!("'{raw}': {e}"))),
        }
    }

    /// A retry schedule: its base in milliseconds and its cap in seconds,
    /// each `(variable, default)`.
    fn backoff(
        &self,
        (base_var, base_ms): (&'static str, u64),
        (max_var, max_secs): (&'static str, u64),
    ) -> Result<Backoff, ConfigError> {
        Ok(Backoff {
            base: Duration::from_millis(self.parse(base_var, base_ms)?),
            max: self.seconds(max_var, max_secs)?,
        })
    }

    fn seconds(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse(var, default).map(Duration::from_secs)
    }

    /// Comma-separated addresses and CIDR networks; `*` is every address.
    fn networks(&self, var: &'static str) -> Result<Vec<IpNet>, ConfigError> {
        let mut networks = Vec::new();
        for item in self.list(var) {
            if item == "*" {
                networks.extend(["0.0.0.0/0", "::/0"].map(|n| n.parse::<IpNet>().unwrap()));
                continue;
            }
            let network = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.bad(var, format!("'{item}' is not an address or a CIDR network"))
                })?;
            networks.push(network);
        }
        Ok(networks)
    }

    /// Whole seconds, at least 1.
    fn positive_seconds(&self, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
        let value = self.seconds(var, default)?;
        if value.is_zero() {
            return Err(self.bad(var, "must be at least 1".into()));
        }
        Ok(value)
    }

    /// Whole days; 0 means never (`None`).
    fn days(&self, var: &'static str, default: u64) -> Result<Option<Duration>, ConfigError> {
        let days: u64 = self.parse(var, default)?;
        Ok((days > 0).then(|| Duration::from_secs(days.saturating_mul(86_400))))
    }
}

/// `FromStr` with the spellings of booleans people write in env files.
fn parse_value<T: FromStr>(raw: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    let normalized = match raw.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" if std::any::type_name::<T>() == "bool" => "true".to_owned(),
        "0" | "no" | "off" | "false" if std::any::type_name::<T>() == "bool" => "false".to_owned(),
        _ => raw.to_owned(),
    };
    normalized.parse::<T>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn development_defaults_need_nothing() {
        let config = Config::from_map(&vars(&[])).unwrap();
        assert_eq!(config.profile, Profile::Development);
        assert!(config.gateway.rate_limit.enabled);
        assert_eq!(config.gateway.rate_limit.messages, Quota::per_minute(10));
        assert_eq!(config.sent.base_url, "https://api.sent.dm");
        assert!(config.gateway.webhooks.allow_legacy_signature);
    }

    #[test]
    fn testing_profile_disables_rate_limits_like_the_original() {
        let config = Config::from_map(&vars(&[("FLASK_CONFIG", "testing")])).unwrap();
        assert!(!config.gateway.rate_limit.enabled);
        assert_eq!(config.sent.api_key.unwrap().expose(), "test-api-key");
    }

    #[test]
    fn production_requires_database_url_and_names_it() {
        let err = Config::from_map(&vars(&[("APP_ENV", "production")])).unwrap_err();
        assert_eq!(err.var, "DATABASE_URL");
        let err = Config::from_map(&vars(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://x/y"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "REDIS_URL");
    }

    #[test]
    fn a_redis_ca_file_that_cannot_be_used_is_named() {
        let dir = std::env::temp_dir().join(format!("redis-ca-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let tls = |path: &std::path::Path| {
            Config::from_map(&vars(&[
                ("REDIS_URL", "rediss://127.0.0.1:6380"),
                ("REDIS_TLS_CA_FILE", path.to_str().unwrap()),
            ]))
        };
        let missing = dir.join("missing.pem");
        let err = tls(&missing).unwrap_err();
        assert_eq!(err.var, "REDIS_TLS_CA_FILE");
        assert!(err.problem.contains("missing.pem"), "{err}");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let err = tls(&not_pem).unwrap_err();
        assert_eq!(err.var, "REDIS_TLS_CA_FILE");
        assert!(err.problem.contains("no PEM certificate"), "{err}");
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = tls(&broken).unwrap_err();
        assert_eq!(err.var, "REDIS_TLS_CA_FILE");
        // Unreadable: a directory.
        let err = tls(&dir).unwrap_err();
        assert_eq!(err.var, "REDIS_TLS_CA_FILE");
        assert!(err.problem.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        // Without it: the system's roots.
        let config = Config::from_map(&vars(&[("REDIS_URL", "rediss://127.0.0.1:6380")])).unwrap();
        assert!(!config.redis_tls.has_ca_file());
    }

    /// A production configuration that passes every check; each case
    /// changes one variable.
    fn production(changes: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let key = "k".repeat(PRODUCTION_KEY_MIN_CHARS);
        let whsec = crate::signature::WebhookSecret::generate().to_whsec_string();
        let mut all = vars(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            ("API_KEYS", &format!("ops:{key}")),
            ("SENT_DM_WEBHOOK_SECRET", &whsec),
            (
                "CALLBACK_SIGNING_KEY",
                &"s".repeat(PRODUCTION_KEY_MIN_CHARS),
            ),
        ]);
        all.extend(vars(changes));
        Config::from_map(&all)
    }

    #[test]
    fn production_requires_a_callback_signing_key_of_its_own() {
        assert!(production(&[]).is_ok());
        let mut missing = vars(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
        ]);
        for process in [Process::Gateway, Process::Worker] {
            let err = Config::from_map_for(&missing, process).unwrap_err();
            assert_eq!(err.var, "CALLBACK_SIGNING_KEY", "{err}");
            assert!(err.to_string().contains("required"), "{err}");
        }
        let short = "s".repeat(PRODUCTION_KEY_MIN_CHARS - 1);
        for (var, value) in [
            ("CALLBACK_SIGNING_KEY", DEVELOPMENT_CALLBACK_SIGNING_KEY),
            ("CALLBACK_SIGNING_KEY", short.as_str()),
            ("CALLBACK_SIGNING_KEY_PREVIOUS", short.as_str()),
            ("CALLBACK_SIGNING_KEY_PREVIOUS", PUBLISHED_SECRETS[0]),
        ] {
            let err = production(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
        // Outside production the development key signs.
        missing.insert("APP_ENV".into(), "development".into());
        let config = Config::from_map(&missing).unwrap();
        assert_eq!(
            config.callback_signing.key.expose(),
            DEVELOPMENT_CALLBACK_SIGNING_KEY
        );
        assert!(config.callback_signing.previous_key.is_none());
        assert!(config.callback_signing.legacy_until.is_none());
    }

    #[test]
    fn the_legacy_secret_transition_takes_an_rfc3339_time() {
        let config = Config::from_map(&vars(&[(
            "CALLBACK_LEGACY_SECRET_UNTIL",
            "2027-01-31T12:00:00+01:00",
        )]))
        .unwrap();
        assert_eq!(
            config.callback_signing.legacy_until.unwrap().to_rfc3339(),
            "2027-01-31T11:00:00+00:00"
        );
        for bad in ["2027-01-31", "next month"] {
            let err =
                Config::from_map(&vars(&[("CALLBACK_LEGACY_SECRET_UNTIL", bad)])).unwrap_err();
            assert_eq!(err.var, "CALLBACK_LEGACY_SECRET_UNTIL", "{err}");
        }
    }

    #[test]
    fn bootstrap_keys_carry_a_role() {
        let config = Config::from_map(&vars(&[(
            "API_KEYS",
            "a:key-aaaaaaaa:admin, b:key-bbbbbbbb, c:key-cccccccc:tenant",
        )]))
        .unwrap();
        let roles: Vec<(&str, Role)> = config
            .api_keys
            .iter()
            .map(|k| (k.name.as_str(), k.role))
            .collect();
        assert_eq!(
            roles,
            [("a", Role::Admin), ("b", Role::Tenant), ("c", Role::Tenant)]
        );
        assert_eq!(config.api_keys[0].key.expose(), "key-aaaaaaaa");
        // Two keys of one name (a rotation) are fine; of two roles, not.
        assert!(Config::from_map(&vars(&[("API_KEYS", "a:key-aaaaaaaa,a:key-bbbbbbbb")])).is_ok());
        for bad in [
            "a:key-aaaaaaaa:root",
            "a:key-aaaaaaaa:admin:x",
            "a:key-aaaaaaaa:admin,a:key-bbbbbbbb",
            ":key-aaaaaaaa:admin",
        ] {
            let err = Config::from_map(&vars(&[("API_KEYS", bad)])).unwrap_err();
            assert_eq!(err.var, "API_KEYS", "{bad}: {err}");
        }
    }

    #[test]
    fn per_client_callback_concurrency_defaults_to_half() {
        let config = Config::from_map(&vars(&[("CALLBACK_CONCURRENCY", "10")])).unwrap();
        assert_eq!(config.callbacks.per_client_concurrency, 5);
        let config = Config::from_map(&vars(&[("CALLBACK_CONCURRENCY", "1")])).unwrap();
        assert_eq!(config.callbacks.per_client_concurrency, 1);
        for bad in ["0", "33"] {
            let err =
                Config::from_map(&vars(&[("CALLBACK_PER_CLIENT_CONCURRENCY", bad)])).unwrap_err();
            assert_eq!(err.var, "CALLBACK_PER_CLIENT_CONCURRENCY");
        }
    }

    #[test]
    fn production_refuses_published_short_and_insecure_settings() {
        assert!(production(&[]).is_ok());
        let published_key = format!("ops:{}", "dev-key-change-me");
        let short_key = format!("ops:{}", "k".repeat(PRODUCTION_KEY_MIN_CHARS - 1));
        let short_whsec = format!("whsec_{}", "AAAA".repeat(5)); // 15 bytes
        for (var, value) in [
            ("API_KEYS", published_key.as_str()),
            ("API_KEYS", short_key.as_str()),
            ("SENT_DM_WEBHOOK_SECRET", PUBLISHED_SECRETS[1]),
            ("SENT_DM_WEBHOOK_SECRET", short_whsec.as_str()),
            ("STRIPE_WEBHOOK_SECRET", "whsec_stripe_test_secret"),
            ("DASHBOARD_PUBLIC", "true"),
            ("WEBHOOK_ALLOW_LEGACY_SIGNATURE", "true"),
            ("FORWARDED_ALLOW_IPS", "*"),
            ("FORWARDED_ALLOW_IPS", "::/0"),
        ] {
            let err = production(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}: {err}");
        }
        // The insecure switches run when acknowledged by name.
        assert!(
            production(&[
                ("DASHBOARD_PUBLIC", "true"),
                ("WEBHOOK_ALLOW_LEGACY_SIGNATURE", "true"),
                (
                    "ACKNOWLEDGE_INSECURE",
                    "DASHBOARD_PUBLIC,WEBHOOK_ALLOW_LEGACY_SIGNATURE"
                ),
            ])
            .is_ok()
        );
        // The gateway's secrets are the gateway's to refuse.
        let mut worker = vars(&[("SENT_DM_WEBHOOK_SECRET", "whsec_x")]);
        worker.extend(vars(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
        ]));
        worker.insert(
            "CALLBACK_SIGNING_KEY".into(),
            "s".repeat(PRODUCTION_KEY_MIN_CHARS),
        );
        assert!(Config::from_map_for(&worker, Process::Worker).is_ok());
        assert!(Config::from_map_for(&worker, Process::Gateway).is_err());
        // Development takes the published development defaults.
        assert!(Config::from_map(&vars(&[("API_KEYS", "dev:dev-key-change-me")])).is_ok());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("RATELIMIT_MESSAGES", "ten per minute"),
            ("GATEWAY_BIND", "nowhere"),
            ("FORWARDED_ALLOW_IPS", "10.0.0.0/33"),
            ("GATEWAY_IDLE_TIMEOUT_SECS", "0"),
            ("MAX_BODY_BYTES", "-1"),
            ("API_KEYS", "justakey"),
            ("RATELIMIT_STORAGE_URI", "memcached://x"),
            ("RATELIMIT_STORAGE_URI", "redis+sentinel://127.0.0.1:26379"),
            ("APP_ENV", "staging"),
            ("QUEUE_SHARDS", "0"),
            ("QUEUE_SHARD_BY", "tenant"),
            ("REDIS_CLUSTER_NODES", "127.0.0.1:7000"),
            ("REDIS_SENTINELS", "sentinel.local:26379"),
            // Sentinels without the name they monitor, and the reverse.
            ("REDIS_SENTINEL_MASTER", "mymaster"),
            ("MIGRATE_ON_START", "sometimes"),
        ] {
            let err = Config::from_map(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn message_retention_is_days_of_at_least_a_week_or_forever() {
        let retention = |value: &str| {
            Config::from_map(&vars(&[("MESSAGE_RETENTION_DAYS", value)]))
                .map(|c| c.worker.message_retention)
        };
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        let default = Config::from_map(&vars(&[]))
            .unwrap()
            .worker
            .message_retention;
        assert_eq!(default, days(90));
        assert_eq!(retention("30").unwrap(), days(30));
        assert_eq!(retention("0").unwrap(), None);
        for bad in ["6", "-1", "ninety"] {
            assert_eq!(retention(bad).unwrap_err().var, "MESSAGE_RETENTION_DAYS");
        }
    }

    #[test]
    fn replies_take_a_window_and_inbound_urls_of_api_keys_only() {
        let keys = ("API_KEYS", "a:key-aaaaaaaa,b:key-bbbbbbbb");
        let config = Config::from_map(&vars(&[keys])).unwrap();
        assert_eq!(config.replies.window, Duration::from_secs(30 * 86_400));
        assert!(config.replies.inbound_urls.is_empty());
        let config = Config::from_map(&vars(&[
            keys,
            ("REPLY_WINDOW_DAYS", "7"),
            (
                "INBOUND_URLS",
                "a:https://a.example/replies?t=1, b:http://b.example:8080/in",
            ),
        ]))
        .unwrap();
        assert_eq!(config.replies.window, Duration::from_secs(7 * 86_400));
        assert_eq!(
            config.replies.inbound_urls["a"],
            "https://a.example/replies?t=1"
        );
        assert_eq!(config.replies.inbound_urls["b"], "http://b.example:8080/in");
        for (var, value) in [
            ("INBOUND_URLS", "c:https://c.example/in"),
            ("INBOUND_URLS", "a"),
            ("INBOUND_URLS", "a:ftp://a.example/"),
            ("INBOUND_URLS", "a:https://127.0.0.1/in"),
            (
                "INBOUND_URLS",
                "a:https://a.example/1,a:https://a.example/2",
            ),
            ("REPLY_WINDOW_DAYS", "0"),
            ("REPLY_WINDOW_DAYS", "a month"),
        ] {
            let error = Config::from_map(&vars(&[keys, (var, value)])).unwrap_err();
            assert_eq!(error.var, var, "{value}");
        }
        let unknown = Config::from_map(&vars(&[keys, ("INBOUND_URLS", "c:https://c.example/")]));
        assert!(unknown.unwrap_err().problem.contains("'c'"));
    }

    #[test]
    fn redis_is_one_server_a_cluster_or_sentinels_and_naming_two_is_an_error() {
        let target = |pairs: &[(&str, &str)]| Config::from_map(&vars(pairs)).map(|c| c.redis);
        assert!(matches!(target(&[]), Ok(RedisTarget::Single(_))));
        let nodes = "redis://127.0.0.1:7000,redis://127.0.0.1:7001";
        let Ok(RedisTarget::Cluster(seeds)) = target(&[("REDIS_CLUSTER_NODES", nodes)]) else {
            panic!("a cluster");
        };
        assert_eq!(seeds.len(), 2);
        let Ok(RedisTarget::Sentinel { sentinels, master }) = target(&[
            ("REDIS_SENTINELS", "redis://127.0.0.1:26379"),
            ("REDIS_SENTINEL_MASTER", "mymaster"),
        ]) else {
            panic!("sentinels");
        };
        assert_eq!((sentinels.len(), master.as_str()), (1, "mymaster"));
        let err = target(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REDIS_CLUSTER_NODES", nodes),
        ])
        .unwrap_err();
        assert_eq!(err.var, "REDIS_CLUSTER_NODES");
        assert!(err.to_string().contains("REDIS_URL"), "{err}");
        let err = target(&[("REDIS_SENTINELS", "redis://127.0.0.1:26379")]).unwrap_err();
        assert_eq!(err.var, "REDIS_SENTINEL_MASTER");
    }

    #[test]
    fn rate_limit_storage_takes_the_original_limiters_uris() {
        let storage = |uri: &str| rate_limit_storage(uri).unwrap();
        assert!(storage("memory://").is_none());
        assert!(matches!(
            storage("rediss://h:6380"),
            Some(RedisTarget::Single(_))
        ));
        let Some(RedisTarget::Cluster(nodes)) = storage("redis+cluster://a:7000,b:7001") else {
            panic!("a cluster");
        };
        let urls: Vec<&str> = nodes.iter().map(Secret::expose).collect();
        assert_eq!(urls, ["redis://a:7000", "redis://b:7001"]);
        let Some(RedisTarget::Sentinel { sentinels, master }) =
            storage("rediss+sentinel://a:26379,b:26379/mymaster")
        else {
            panic!("sentinels");
        };
        assert_eq!(sentinels[1].expose(), "rediss://b:26379");
        assert_eq!(master, "mymaster");
    }

    #[test]
    fn retries_must_end_inside_sents_idempotency_window() {
        // The defaults: 7 retries of at most an hour each.
        assert!(Config::from_map(&vars(&[])).is_ok());
        assert!(Config::from_map(&vars(&[("WORKER_MAX_ATTEMPTS", "24")])).is_ok());
        let err = Config::from_map(&vars(&[("WORKER_MAX_ATTEMPTS", "26")])).unwrap_err();
        assert_eq!(err.var, "WORKER_MAX_ATTEMPTS");
        assert!(err.to_string().contains("WORKER_BACKOFF_MAX_SECS"), "{err}");
        // A longer backoff or timeout makes fewer attempts fit.
        let err = Config::from_map(&vars(&[
            ("WORKER_MAX_ATTEMPTS", "10"),
            ("WORKER_BACKOFF_BASE_MS", "3600000"),
            ("WORKER_BACKOFF_MAX_SECS", "14400"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "WORKER_MAX_ATTEMPTS");
    }

    #[test]
    fn each_process_reads_only_its_own_section() {
        let worker_setting = vars(&[("WORKER_MAX_ATTEMPTS", "many")]);
        assert!(Config::from_map_for(&worker_setting, Process::Gateway).is_ok());
        let err = Config::from_map_for(&worker_setting, Process::Worker).unwrap_err();
        assert_eq!(err.var, "WORKER_MAX_ATTEMPTS");
        assert_eq!(
            Config::from_map(&worker_setting).unwrap_err().var,
            "WORKER_MAX_ATTEMPTS"
        );

        let gateway_setting = vars(&[("GATEWAY_BIND", "nowhere")]);
        assert!(Config::from_map_for(&gateway_setting, Process::Worker).is_ok());
        let err = Config::from_map_for(&gateway_setting, Process::Gateway).unwrap_err();
        assert_eq!(err.var, "GATEWAY_BIND");

        // Shared settings stop both.
        let shared = vars(&[("DATABASE_MAX_CONNECTIONS", "-1")]);
        for process in [Process::Gateway, Process::Worker] {
            let err = Config::from_map_for(&shared, process).unwrap_err();
            assert_eq!(err.var, "DATABASE_MAX_CONNECTIONS");
        }
    }

    #[test]
    fn callback_allow_list_is_shared_and_named_when_bad() {
        let allowed = |process, value| {
            Config::from_map_for(
                &vars(&[("CALLBACK_ALLOW_PRIVATE_NETWORKS", value)]),
                process,
            )
            .map(|c| {
                c.callback_policy
                    .allowed_networks()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            })
        };
        assert!(allowed(Process::Both, "").unwrap().is_empty());
        for process in [Process::Gateway, Process::Worker] {
            assert_eq!(
                allowed(process, "127.0.0.0/8, ::1/128,10.0.0.5").unwrap(),
                ["127.0.0.0/8", "::1/128", "10.0.0.5/32"]
            );
            for bad in ["10.0.0.0/33", "intranet", "*"] {
                let err = allowed(process, bad).unwrap_err();
                assert_eq!(err.var, "CALLBACK_ALLOW_PRIVATE_NETWORKS", "{err}");
            }
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_networks_or_everyone() {
        let parse = |value| {
            Config::from_map(&vars(&[("FORWARDED_ALLOW_IPS", value)]))
                .unwrap()
                .gateway
                .trusted_proxies
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert!(parse("").is_empty());
        assert_eq!(
            parse("10.0.0.0/8, 192.0.2.1, ::1"),
            ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]
        );
        assert_eq!(parse("*"), ["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::from_map(&vars(&[
            ("API_KEYS", "ops:supersecretkey"),
            ("SENT_DM_API_KEY", "sentsecret"),
        ]))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("supersecretkey"));
        assert!(!printed.contains("sentsecret"));
    }

    #[test]
    fn api_keys_and_rotation_lists_parse() {
        let config = Config::from_map(&vars(&[
            ("API_KEYS", "a:key-aaaaaaaa, b:key-bbbbbbbb"),
            ("SENT_DM_WEBHOOK_SECRET", "whsec_new,whsec_old"),
            ("RATELIMIT_ENABLED", "off"),
        ]))
        .unwrap();
        assert_eq!(config.api_keys.len(), 2);
        assert_eq!(config.api_keys[1].name, "b");
        assert_eq!(config.gateway.webhooks.sent_secrets.len(), 2);
        assert!(!config.gateway.rate_limit.enabled);
    }

    /// FORWARD_* (issue 15): a destination per URL, its whsec_ secret
    /// required; a literal private address refused unless its network is
    /// in FORWARD_ALLOW_PRIVATE_NETWORKS (CALLBACK_ALLOW_PRIVATE_NETWORKS
    /// does not count); a published secret refused in production.
    #[test]
    fn forward_destinations_need_a_secret_and_an_allowed_address() {
        let secret = crate::test_support::SENT_WEBHOOK_SECRET;
        let config = Config::from_map(&vars(&[
            ("FORWARD_STRIPE_URL", "https://billing.example/stripe"),
            ("FORWARD_STRIPE_SECRET", secret),
        ]))
        .unwrap();
        let names: Vec<&str> = config
            .forward
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["stripe"]);
        assert!(
            !format!("{config:?}").contains("AAECAwQF"),
            "secret printed"
        );
        let err = Config::from_map(&vars(&[("FORWARD_TELEGRAM_URL", "https://bot.example/")]))
            .unwrap_err();
        assert_eq!(err.var, "FORWARD_TELEGRAM_SECRET", "{err}");
        let private = [
            ("FORWARD_STRIPE_URL", "http://10.0.0.5/stripe"),
            ("FORWARD_STRIPE_SECRET", secret),
            ("CALLBACK_ALLOW_PRIVATE_NETWORKS", "10.0.0.0/8"),
        ];
        let err = Config::from_map(&vars(&private)).unwrap_err();
        assert_eq!(err.var, "FORWARD_STRIPE_URL", "{err}");
        let mut allowed = private.to_vec();
        allowed.push(("FORWARD_ALLOW_PRIVATE_NETWORKS", "10.0.0.0/8"));
        assert!(Config::from_map(&vars(&allowed)).is_ok());
        let err = Config::from_map(&vars(&[
            ("FORWARD_STRIPE_URL", "https://billing.example/stripe"),
            ("FORWARD_STRIPE_SECRET", "not-a-whsec"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "FORWARD_STRIPE_SECRET", "{err}");
        let err = Config::from_map(&vars(&[
            ("FORWARD_STRIPE_URL", "https://billing.example/stripe"),
            ("FORWARD_STRIPE_SECRET", secret),
            ("FORWARD_TIMEOUT_SECS", "60"),
            ("FORWARD_LEASE_SECS", "60"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, "FORWARD_LEASE_SECS", "{err}");
        let err = forward_config(
            &Env {
                vars: &vars(&[
                    ("FORWARD_STRIPE_URL", "https://billing.example/stripe"),
                    ("FORWARD_STRIPE_SECRET", secret),
                ]),
            },
            Profile::Production,
        )
        .unwrap_err();
        assert_eq!(err.var, "FORWARD_STRIPE_SECRET", "{err}");
    }
}
