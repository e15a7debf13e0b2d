//! Postgres storage. All SQL of the project lives in this module.

mod accept;
mod callbacks;
mod dashboard;
mod forwards;
mod inbound;
mod inbox;
mod keys;
mod lookup;
mod messages;
mod partitions;
mod pull;
mod purge;
mod tenants;

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

pub use accept::{IdempotencyClaim, NewMessage, Submission, SubmitOutcome};
pub use callbacks::{
    CallbackAttempt, CallbackAttemptRecord, CallbackDelivery, CallbackKind, CallbackNext,
    CallbackRecord, InboundCallbackRecord, NewInboundCallback,
};
pub use dashboard::{
    DashboardSnapshot, DeliveryLatency, FailureReason, ForwardingSummary, LATENCY_EXACT_UP_TO,
    LATENCY_WINDOW_HOURS, RECENT_FAILURES, ROLLUP_BATCH, RecentFailure, RollupStep, StatusCount,
    THROUGHPUT_MINUTES, ThroughputMinute, page_queries,
};
pub use forwards::{
    ForwardAttempt, ForwardAttemptRecord, ForwardBacklog, ForwardDelivery, ForwardNext,
    ForwardRecord, NewForward,
};
pub use inbound::ReplyTarget;
pub use inbox::{
    INBOX_HOUSEKEEPING_BATCH, InboxEvent, InboxFinish, InboxInsert, InboxInsertOutcome,
    InboxRecord, InboxResult, ReplyRoute,
};
pub use keys::{ApiKeyRecord, NewApiKey, StoredCallbackSecrets};
pub use lookup::{LOOKUP_LIMIT, Lookup};
pub use messages::{
    Acceptance, CODE_STALE, DEAD_LETTERED, EventRecord, MessageFilter, MessageRecord, PollTarget,
    STATUS_POLLS, StatusChange, Unsent,
};
pub use partitions::{Holders, MessagePartition, PARTITIONS_AHEAD_WEEKS, Retirement};
pub use pull::{EventCursor, PulledEvent};
pub use purge::{PurgeBound, Purged};
pub use tenants::TenantPurge;

/// The schema's migrations. A database may hold migrations newer than this
/// binary's (`ignore_missing`): during a rolling deploy the new release has
/// migrated it while processes of the previous one still start and run.
/// That is safe because every migration keeps the previous release working
/// (columns are added nullable or with a default; nothing it reads is
/// dropped or renamed in the same release).
pub static MIGRATOR: LazyLock<sqlx::migrate::Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("../migrations");
    migrator.set_ignore_missing(true);
    migrator
});

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// `DATABASE_DIRECT_URL`, for migrations and LISTEN.
    direct: Option<String>,
    /// `DATABASE_READ_URL`: the streaming replica that [`Reader`] reads.
    read: Option<PgPool>,
}

/// The read-only queries that tolerate a replica's lag, and only those: the
/// status page's numbers and the message list. They read the replica of
/// `DATABASE_READ_URL` when set ([`Store::with_read_url`]), so they may miss
/// the last writes (by the replica's replay lag), and the primary without it.
/// Everything else, a message by id included, is on [`Store`] and reads the
/// primary, so a client following its message never sees it go missing or
/// back.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    pool: &'a PgPool,
}

impl Store {
    /// Connects lazily: the process starts even while Postgres is down, and
    /// requests answer 503 until it is back. `acquire_timeout` bounds how long a
    /// request waits for a connection, so an outage never hangs a client.
    ///
    /// Nothing session-level is asked of the connection (the planner setting
    /// the store needs is the database's, set by a migration), so `url` may
    /// point at a pooler such as PgBouncer.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Store, sqlx::Error> {
        Ok(Store {
            pool: lazy_pool(url, max_connections)?,
            direct: None,
            read: None,
        })
    }

    /// What needs a session of its own, the migrations (their advisory lock)
    /// and LISTEN, connects to `url` (`DATABASE_DIRECT_URL`) instead of the
    /// pool's: Postgres itself when the pool's goes through a pooler that
    /// shares server sessions between clients (transaction pooling).
    pub fn with_direct_url(self, url: Option<&str>) -> Store {
        Store {
            direct: url.map(str::to_owned),
            ..self
        }
    }

    /// [`Reader`]'s queries read `url` (`DATABASE_READ_URL`, a streaming
    /// replica) instead of the primary: a pool of its own, connected as
    /// lazily and with the same options and size as the primary's, so a
    /// replica that is down makes only those queries fail (503), and only
    /// when asked.
    pub fn with_read_url(self, url: Option<&str>) -> Result<Store, sqlx::Error> {
        let read = match url {
            Some(url) => Some(lazy_pool(url, self.pool.options().get_max_connections())?),
            None => None,
        };
        Ok(Store { read, ..self })
    }

    pub fn from_pool(pool: PgPool) -> Store {
        Store {
            pool,
            direct: None,
            read: None,
        }
    }

    /// The primary's pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The queries that may read the replica: see [`Reader`].
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            pool: self.read.as_ref().unwrap_or(&self.pool),
        }
    }

    /// The replica's pool, when `DATABASE_READ_URL` is set (for its gauges
    /// and health check).
    pub fn read_pool(&self) -> Option<&PgPool> {
        self.read.as_ref()
    }

    /// Creates the database named in `url` if it does not exist yet, so a
    /// fresh machine needs no manual `createdb`. Processes starting together
    /// (a gateway and its workers) race to create it; losing is success.
    pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
        use sqlx::migrate::MigrateDatabase;
        if sqlx::Postgres::database_exists(url).await? {
            return Ok(());
        }
        match sqlx::Postgres::create_database(url).await {
            Err(sqlx::Error::Database(error)) if created_concurrently(error.code().as_deref()) => {
                Ok(())
            }
            created => created,
        }
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match &self.direct {
            Some(url) => {
                let mut conn = PgConnection::connect(url).await?;
                let migrated = MIGRATOR.run(&mut conn).await;
                let _ = conn.close().await;
                migrated
            }
            None => MIGRATOR.run(&self.pool).await,
        }
    }

    /// Whether every migration this build knows has been applied, for a
    /// process started with `MIGRATE_ON_START=false` while another step
    /// migrates. A database newer than this build also counts: migrations
    /// only add, so an older binary runs on a newer schema.
    pub async fn schema_is_current(&self) -> Result<bool, sqlx::Error> {
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .or_else(|e| match &e {
                    // Not migrated at all yet: no table.
                    sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => Ok(None),
                    _ => Err(e),
                })?;
        Ok(applied.is_some_and(|v| v >= latest))
    }

    /// A LISTEN connection, on a session of its own.
    pub async fn listener(&self) -> Result<PgListener, sqlx::Error> {
        match &self.direct {
            Some(url) => PgListener::connect(url).await,
            None => PgListener::connect_with(&self.pool).await,
        }
    }

    /// Webhook events waiting to be processed and callbacks waiting to be
    /// delivered, for the worker's gauges.
    pub async fn backlogs(&self) -> Result<(i64, i64), sqlx::Error> {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_inbox_queue WHERE waiting_for IS NULL),
                    (SELECT count(*) FROM status_callbacks WHERE state = 'pending')",
        )
        .fetch_one(&self.pool)
        .await
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Whether the replica answers; `None` without `DATABASE_READ_URL`.
    pub async fn ping_replica(&self) -> Option<Result<(), sqlx::Error>> {
        let pool = self.read.as_ref()?;
        Some(sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }
}

/// The pool of [`Store::connect_lazy`], the primary's and the replica's alike.
fn lazy_pool(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options))
}

/// `CREATE DATABASE` lost a race: `duplicate_database`, or the unique index
/// of `pg_database` when both creations got past that check at once.
fn created_concurrently(sqlstate: Option<&str>) -> bool {
    matches!(sqlstate, Some("42P04" | "23505"))
}
