//! Group commit for the send path's writes to Postgres. Concurrent jobs hand
//! their write (start an attempt, record an acceptance) to a committer task;
//! it takes everything waiting, writes it in one statement, and answers each
//! job after the commit. Under load a batch grows by itself (while one
//! statement runs, the next writes queue up), so there is no timer to tune
//! and no added latency when idle. Same design as the gateway's `accept.rs`.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// A failed batch fails every write in it; each job gets the same error.
pub type CommitError = Arc<sqlx::Error>;

struct Pending<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O, CommitError>>,
}

/// Hands items to committer tasks that write them in batches with `write`,
/// which answers one output per input, in order.
pub struct GroupCommit<I, O> {
    tx: mpsc::Sender<Pending<I, O>>,
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts `committers` tasks, each writing up to `max_batch` items per
    /// call. They stop when this value is dropped.
    pub fn start<W, F>(committers: usize, max_batch: usize, write: W) -> GroupCommit<I, O>
    where
        W: Fn(Vec<I>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Pending<I, O>>(4 * max_batch.max(1) * committers.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let write = Arc::new(write);
        for _ in 0..committers.max(1) {
            let (rx, write) = (rx.clone(), write.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx, max_batch).await {
                    commit(&*write, batch).await;
                }
            });
        }
        GroupCommit { tx }
    }

    /// Writes `item` with others waiting at the same time; answers after the commit.
    pub async fn submit(&self, item: I) -> Result<O, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { item, reply })
            .await
            .map_err(|_| Arc::new(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| Arc::new(sqlx::Error::PoolClosed))?
    }
}

/// Waits for one item, then takes whatever else is already waiting.
async fn next_batch<I, O>(
    rx: &Mutex<mpsc::Receiver<Pending<I, O>>>,
    max_batch: usize,
) -> Option<Vec<Pending<I, O>>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn commit<I, O, W, F>(write: &W, batch: Vec<Pending<I, O>>)
where
    W: Fn(Vec<I>) -> F,
    F: Future<Output = Result<Vec<O>, sqlx::Error>>,
{
    let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().map(|p| (p.item, p.reply)).unzip();
    let expected = items.len();
    match write(items).await {
        Ok(outputs) if outputs.len() == expected => {
            for (reply, output) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(output));
            }
        }
        Ok(outputs) => {
            let error = Arc::new(sqlx::Error::Protocol(format!(
                "group commit: {} answers for {expected} writes",
                outputs.len()
            )));
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_writes_share_a_batch_and_get_their_own_answers() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let group = Arc::new(GroupCommit::start(1, 100, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        }));
        let answers = futures::future::join_all((0..50u32).map(|i| {
            let group = group.clone();
            async move { group.submit(i).await.unwrap() }
        }))
        .await;
        assert_eq!(answers, (0..50u32).map(|i| i * 10).collect::<Vec<_>>());
        // The first write goes alone; the others wait for it and go together.
        assert!(calls.load(Ordering::SeqCst) <= 3, "{calls:?} statements");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_writes() {
        let group = GroupCommit::start(2, 10, |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(sqlx::Error::PoolTimedOut)
        });
        let error = group.submit(1).await.unwrap_err();
        assert!(matches!(*error, sqlx::Error::PoolTimedOut));
    }

    #[tokio::test]
    async fn batches_stay_under_their_cap() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let group = Arc::new(GroupCommit::start(1, 4, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { Ok(items) }
        }));
        futures::future::join_all((0..20u32).map(|i| {
            let group = group.clone();
            async move { group.submit(i).await.unwrap() }
        }))
        .await;
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
    }
}
