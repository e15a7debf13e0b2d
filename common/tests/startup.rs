//! Opening the database at start-up: creating it on a fresh server and
//! running on a database that a newer release has migrated.

use common::store::Store;
use common::test_support::{self, TestDatabase};

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
