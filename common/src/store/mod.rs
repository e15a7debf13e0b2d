//! Postgres storage. All SQL of the project lives in this module.

mod accept;
mod callbacks;
mod dashboard;
mod inbox;
mod keys;
mod messages;

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use accept::{IdempotencyClaim, NewMessage, Submission, SubmitOutcome};
pub use callbacks::{
    CallbackAttempt, CallbackAttemptRecord, CallbackDelivery, CallbackNext, CallbackRecord,
};
pub use dashboard::{
    DashboardSnapshot, DeliveryLatency, FailureReason, LATENCY_WINDOW_HOURS, RECENT_FAILURES,
    RecentFailure, StatusCount, THROUGHPUT_MINUTES, ThroughputMinute,
};
pub use inbox::{
    InboxEvent, InboxFinish, InboxInsert, InboxInsertOutcome, InboxRecord, InboxResult,
};
pub use keys::{ApiKeyRecord, NewApiKey};
pub use messages::{
    Acceptance, CODE_STALE, DEAD_LETTERED, EventRecord, MessageFilter, MessageRecord, PollTarget,
    STATUS_POLLS, StatusChange, Unsent,
};

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
}

impl Store {
    /// Connects lazily: the process starts even while Postgres is down, and
    /// requests answer 503 until it is back. `acquire_timeout` bounds how long a
    /// request waits for a connection, so an outage never hangs a client.
    ///
    /// Every statement is planned for its parameters and the tables as they
    /// are now (`plan_cache_mode`). Postgres' default keeps a prepared
    /// statement's generic plan once it looks no worse, and a plan made
    /// while `messages` was nearly empty scans the whole table for every
    /// event of a batch: on a fresh database under steady load, the
    /// webhook lookups by Sent id went from milliseconds to seconds. The
    /// price is planning every statement: at saturation, about 20% of the
    /// gateway's batch throughput and 12% of its single sends (README,
    /// Benchmarks). Predictable latency is worth more than that headroom.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Store, sqlx::Error> {
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()?
            .options([("plan_cache_mode", "force_custom_plan")])
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Store { pool })
    }

    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
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
        MIGRATOR.run(&self.pool).await
    }

    /// Webhook events waiting to be processed and callbacks waiting to be
    /// delivered, for the worker's gauges.
    pub async fn backlogs(&self) -> Result<(i64, i64), sqlx::Error> {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_inbox WHERE state = 'pending'),
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
}

/// `CREATE DATABASE` lost a race: `duplicate_database`, or the unique index
/// of `pg_database` when both creations got past that check at once.
fn created_concurrently(sqlstate: Option<&str>) -> bool {
    matches!(sqlstate, Some("42P04" | "23505"))
}
