//! Isolation for integration tests: each test gets its own Postgres database,
//! cloned from a migrated template (fast), and its own Redis key prefix. Both
//! are removed when the test ends.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection};

use crate::store::{MIGRATOR, Store};

pub mod redis_servers;
pub use redis_servers::TlsRedis;

/// The tests' Sent webhook secret: key bytes 0x00..0x1f (SENT_API.md's vector).
pub const SENT_WEBHOOK_SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The original integration's testing secret, for its legacy hex signatures;
/// also the testing profile's default.
pub use crate::config::TESTING_WEBHOOK_SECRET as LEGACY_WEBHOOK_SECRET;

/// Server to create test databases on (`TEST_DATABASE_URL`, else local trust auth).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{name}")
}

/// A fresh, migrated database that is dropped with this value.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub store: Store,
}

impl TestDatabase {
    pub async fn new() -> TestDatabase {
        let template = ensure_template().await;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "gwtest_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect to Postgres for tests");
        // Two tests may clone the template at once; Postgres refuses while
        // another session copies it, so retry briefly.
        for attempt in 0.. {
            match admin
                .execute(format!(r#"CREATE DATABASE "{name}" TEMPLATE "{template}""#).as_str())
                .await
            {
                Ok(_) => break,
                Err(e) if attempt < 50 => {
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(50 + attempt * 10)).await;
                }
                Err(e) => panic!("create test database: {e}"),
            }
        }
        // CREATE DATABASE ... TEMPLATE copies the tables, not the database's
        // settings (ALTER DATABASE ... SET, which migrations make).
        let settings: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
              WHERE d.datname = $1 AND s.setrole = 0",
        )
        .bind(&template)
        .fetch_optional(&mut admin)
        .await
        .expect("read the template's settings");
        for setting in settings.into_iter().flatten() {
            let (key, value) = setting.split_once('=').expect("name=value");
            admin
                .execute(format!(r#"ALTER DATABASE "{name}" SET {key} = '{value}'"#).as_str())
                .await
                .expect("copy a database setting");
        }
        let url = database_url(&name);
        let store = Store::connect_lazy(&url, 10).expect("test database url");
        TestDatabase { name, url, store }
    }

    /// A store on one connection of its own, so that [`updates_of`] can
    /// read back the statistics of what it did.
    pub async fn single_connection_store(&self) -> Store {
        Store::from_pool(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&self.url)
                .await
                .expect("connect to the test database"),
        )
    }
}

/// Updates of `table` (of all its partitions, if it has any) so far, and
/// how many of them were HOT (wrote no index entry), as Postgres counts
/// them. `store` must have one connection
/// ([`TestDatabase::single_connection_store`]): a backend's counts are
/// flushed when asked, and read by the same backend.
pub async fn updates_of(store: &Store, table: &str) -> (i64, i64) {
    statistics(
        store,
        "SELECT coalesce(sum(n_tup_upd), 0)::bigint, coalesce(sum(n_tup_hot_upd), 0)::bigint
           FROM pg_stat_user_tables, pg_stat_clear_snapshot()
          WHERE relid = $1::regclass
             OR relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)",
        table,
    )
    .await
}

/// Accesses to heap blocks of `table` so far (a block read twice counts
/// twice), for tests that check a statement probes rather than scans.
/// `store` must have one connection, as for [`updates_of`].
pub async fn heap_blocks_read(store: &Store, table: &str) -> i64 {
    let (blocks,): (i64,) = statistics(
        store,
        "SELECT coalesce(heap_blks_read, 0) + coalesce(heap_blks_hit, 0)
           FROM pg_statio_user_tables, pg_stat_clear_snapshot()
          WHERE relid = $1::regclass",
        table,
    )
    .await;
    blocks
}

/// Table rows that plain index scans of `index` have fetched so far (a
/// bitmap scan's fetches count to the table, not to the index), for tests
/// that check which scan a statement's plan makes. `store` must have one
/// connection, as for [`updates_of`].
pub async fn rows_fetched_through(store: &Store, index: &str) -> i64 {
    let (rows,): (i64,) = statistics(
        store,
        "SELECT idx_tup_fetch FROM pg_stat_user_indexes, pg_stat_clear_snapshot()
          WHERE indexrelid = $1::regclass",
        index,
    )
    .await;
    rows
}

/// Scans of `table` so far, sequential or by any of its indexes, for tests
/// that check which partitions a statement reads. `store` must have one
/// connection, as for [`updates_of`].
pub async fn scans_of(store: &Store, table: &str) -> i64 {
    let (scans,): (i64,) = statistics(
        store,
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables, pg_stat_clear_snapshot()
          WHERE relid = $1::regclass",
        table,
    )
    .await;
    scans
}

/// Flushes this backend's statistics, then reads them with `select` (its
/// `$1`: the table or index).
async fn statistics<T>(store: &Store, select: &str, relation: &str) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(store.pool())
        .await
        .expect("flush statistics");
    sqlx::query_as(select)
        .bind(relation)
        .fetch_one(store.pool())
        .await
        .expect("read table statistics")
}

/// Timeline events whose message is gone. The writers keep this at zero,
/// not a foreign key (migrations/20261214000001_timeline_keys_kept_by_writers.sql).
pub async fn orphan_events(store: &Store) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM message_events e
          WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = e.message_id)",
    )
    .fetch_one(store.pool())
    .await
    .expect("count events without their message")
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context rules: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(drop_database(&name));
        })
        .join();
    }
}

/// Drops database `name` (if it exists), closing its connections.
pub async fn drop_database(name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(&admin_url()).await?;
    admin
        .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
        .await
        .map(|_| ())
}

/// The template's name carries a hash of the migrations, so a changed schema
/// gets a new template and old ones never serve stale tables.
async fn ensure_template() -> String {
    let mut hasher = Sha256::new();
    for m in MIGRATOR.iter() {
        hasher.update(m.version.to_le_bytes());
        hasher.update(&*m.checksum);
    }
    let template = format!("gwtemplate_{}", &hex::encode(hasher.finalize())[..16]);
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("connect to Postgres for tests");
    // One test process at a time builds the template.
    admin
        .execute("SELECT pg_advisory_lock(727274)")
        .await
        .unwrap();
    let exists: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate")
            .bind(&template)
            .fetch_optional(&mut admin)
            .await
            .unwrap();
    if exists.is_none() {
        let building = format!("{template}_building");
        admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{building}" WITH (FORCE)"#).as_str())
            .await
            .unwrap();
        admin
            .execute(format!(r#"CREATE DATABASE "{building}""#).as_str())
            .await
            .unwrap();
        {
            let mut conn = PgConnection::connect(&database_url(&building))
                .await
                .unwrap();
            MIGRATOR.run(&mut conn).await.expect("migrate template");
            conn.close().await.unwrap();
        }
        admin
            .execute(format!(r#"ALTER DATABASE "{building}" RENAME TO "{template}""#).as_str())
            .await
            .unwrap();
        admin
            .execute(format!(r#"ALTER DATABASE "{template}" WITH is_template true"#).as_str())
            .await
            .unwrap();
    }
    admin
        .execute("SELECT pg_advisory_unlock(727274)")
        .await
        .unwrap();
    template
}

/// A Redis key prefix of this test's own; its keys are deleted on drop.
pub struct TestRedis {
    pub prefix: String,
    pub url: String,
}

impl TestRedis {
    pub fn new() -> TestRedis {
        TestRedis {
            prefix: format!(
                "gwtest:{}",
                ulid::Ulid::generate().to_string().to_lowercase()
            ),
            url: redis_url(),
        }
    }

    /// A `KEYS` pattern of every key of this prefix: the rate limits' start
    /// with it, the queue shards' with a hash tag around it
    /// (`{prefix:send:0}:...`). The prefix is unique, so nothing else matches.
    pub fn pattern(&self) -> String {
        format!("*{}*", self.prefix)
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        TestRedis::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(self.pattern())
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

/// A loopback port nothing listens on (for a child process to bind, or for
/// a dependency that is down).
pub fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    socket.local_addr().expect("its address").port()
}

/// Starts one of this workspace's binaries, as a test runs it: in the temp
/// directory, no stdin, killed with the test, and everything it prints in a
/// file of its own (returned, for a test to read or scan).
pub fn spawn_logging(
    command: &mut tokio::process::Command,
    name: &str,
) -> (tokio::process::Child, PathBuf) {
    let log = std::env::temp_dir().join(format!("{name}-test-{}.log", ulid::Ulid::generate()));
    let file = std::fs::File::create(&log).expect("create the log file");
    let child = command
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone the log file"))
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start the {name} binary: {e}"));
    (child, log)
}

/// `secrets` and the other forms each could leak in: for a `whsec_` secret,
/// its base64 without the prefix and padding, and its key bytes as hex and
/// (when they are text) as text.
pub fn leakable_forms(secrets: &[&str]) -> Vec<String> {
    use base64::Engine;
    let mut all: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
    for whsec in secrets.iter().filter(|s| s.starts_with("whsec_")) {
        let encoded = whsec.trim_start_matches("whsec_").trim_end_matches('=');
        all.push(encoded.to_owned());
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded) {
            all.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
            if let Ok(text) = String::from_utf8(bytes) {
                all.push(text);
            }
        }
    }
    all
}

/// Fails naming each of `secrets` found in `logs` (`what` says whose), with
/// the first lines that hold it.
#[track_caller]
pub fn assert_no_secret(what: &str, logs: &str, secrets: &[String]) {
    let leaks: Vec<String> = secrets
        .iter()
        .filter(|secret| logs.contains(secret.as_str()))
        .map(|secret| {
            let lines: Vec<&str> = logs
                .lines()
                .filter(|l| l.contains(secret.as_str()))
                .take(3)
                .collect();
            format!("{secret}:\n  {}", lines.join("\n  "))
        })
        .collect();
    assert!(leaks.is_empty(), "secrets in {what}:\n{}", leaks.join("\n"));
}

/// A message id made at `at`: its message is in the week of `at`.
pub fn message_id_at(at: std::time::SystemTime) -> crate::domain::MessageId {
    ulid::Ulid::from_datetime(at)
        .to_string()
        .parse()
        .expect("a ULID is a message id")
}

/// A name no other test uses at the same time (roles are cluster-wide).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

/// Roles and databases a test made, dropped when it ends (databases first:
/// a role that owns one cannot be dropped).
#[derive(Default)]
pub struct Cleanup {
    pub databases: Vec<String>,
    pub roles: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let databases = std::mem::take(&mut self.databases);
        let roles = std::mem::take(&mut self.roles);
        // Its own thread and runtime: a drop cannot await, and the test's
        // runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(mut admin) = PgConnection::connect(&admin_url()).await else {
                    return;
                };
                for db in databases {
                    let _ = admin
                        .execute(format!(r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#).as_str())
                        .await;
                }
                for role in roles {
                    let _ = admin
                        .execute(format!(r#"DROP ROLE IF EXISTS "{role}""#).as_str())
                        .await;
                }
            });
        })
        .join();
    }
}
