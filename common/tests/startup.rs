//! Opening the database at start-up: creating it on a fresh server,
//! migrating it, and running on a database that a newer release has migrated.

use std::collections::HashMap;

use common::config::Config;
use common::store::Store;
use common::test_support::{self, TestDatabase, TestRedis};

#[tokio::test]
async fn a_database_migrated_by_a_newer_release_still_opens() {
    let db = TestDatabase::new().await;
    // What the next release's migration leaves behind.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000000, 'from the next release', true, '\\x00', 0)",
    )
    .execute(db.store.pool())
    .await
    .unwrap();
    db.store
        .migrate()
        .await
        .expect("older binaries keep running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_on_a_fresh_server_all_find_their_database() {
    let name = format!(
        "gwtest_created_together_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let url = test_support::database_url(&name);
    let starts = (0..8).map(|_| Store::ensure_database(&url));
    let results = futures::future::join_all(starts).await;

    test_support::drop_database(&name).await.unwrap();
    for result in results {
        result.expect("losing the race to create the database is no error");
    }
}

/// The first start on a new database migrates it, and the sessions the
/// process then works with have the settings the migrations gave the
/// database: a session opened before (to wait for Postgres, or to migrate)
/// kept Postgres' defaults, and with them generic plans made on empty tables.
#[tokio::test]
async fn the_first_start_works_with_the_settings_its_migration_made() {
    let name = format!(
        "gwtest_first_start_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    let url = test_support::database_url(&name);
    let redis = TestRedis::new();
    let vars: HashMap<String, String> = [
        ("APP_ENV", "testing"),
        ("DATABASE_URL", url.as_str()),
        // One session: the one the process works with is the only one there is.
        ("DATABASE_MAX_CONNECTIONS", "1"),
        ("REDIS_URL", redis.url.as_str()),
        ("REDIS_PREFIX", redis.prefix.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_map(&vars).unwrap();
    let (store, _) = common::startup::connect(&config).await.unwrap();
    let plan: Result<String, _> = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(store.pool())
        .await;
    store.pool().close().await;
    test_support::drop_database(&name).await.unwrap();
    assert_eq!(plan.unwrap(), "force_custom_plan");
}
