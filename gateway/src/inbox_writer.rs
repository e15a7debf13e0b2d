//! Writing verified webhook events to the inbox, group-committed
//! ([`common::group_commit`]) as messages are: each committer inserts
//! everything waiting in one transaction and answers after the commit.

use common::group_commit::{Batching, CommitError, GroupCommit};
use common::store::{InboxInsert, InboxInsertOutcome, Store};
use sqlx::Postgres;
use sqlx::pool::PoolConnection;

/// Most events written in one transaction.
const MAX_BATCH_EVENTS: usize = 1000;
/// Most body bytes written in one transaction (bodies can be up to `MAX_BODY_BYTES`).
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Concurrent transactions: two overlap one batch's commit with the next.
/// More made smaller batches and cost more CPU per event, without more
/// throughput (see `bench/webhooks.sh`).
const COMMITTERS: usize = 2;
/// Events waiting for a committer before requests wait too.
const QUEUE: usize = 16 * 1024;

#[derive(Clone)]
pub struct InboxWriter {
    commits: GroupCommit<InboxInsert, InboxInsertOutcome>,
}

impl InboxWriter {
    /// A committer keeps its connection for a burst of back-to-back batches:
    /// taking one from the pool costs a round trip (the pool checks it),
    /// which for the small batches of moderate load is as much as the insert.
    pub fn start(store: Store) -> InboxWriter {
        let batching = Batching::new(COMMITTERS, MAX_BATCH_EVENTS)
            .weighed(|e: &InboxInsert| e.body.len(), MAX_BATCH_BYTES)
            .queue(QUEUE);
        let commits = GroupCommit::start_with_state(
            batching,
            move |conn: Option<PoolConnection<Postgres>>, events: Vec<InboxInsert>| {
                let store = store.clone();
                async move {
                    let mut conn = match conn {
                        Some(conn) => conn,
                        None => match store.pool().acquire().await {
                            Ok(conn) => conn,
                            Err(error) => return (None, Err(error)),
                        },
                    };
                    match Store::insert_inbox_with(&mut *conn, &events).await {
                        Ok(outcomes) => (Some(conn), Ok(outcomes)),
                        Err(error) => {
                            // The connection may be broken: do not reuse it.
                            conn.close_on_drop();
                            (None, Err(error))
                        }
                    }
                }
            },
        );
        InboxWriter { commits }
    }

    /// Durably stores the event (or finds it already stored), or says why it
    /// could not: then the caller must not acknowledge it.
    pub async fn store(&self, event: InboxInsert) -> Result<InboxInsertOutcome, CommitError> {
        self.commits.submit(event).await
    }
}
