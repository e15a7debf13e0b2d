//! Group commit: concurrent tasks hand their write to a few committer tasks;
//! a committer takes everything waiting, writes it in one transaction (or one
//! statement), and answers each task only after the commit. One commit for
//! everything waiting costs about what one commit for a single item costs, so
//! throughput grows with load. A batch grows by itself: while one commit
//! runs, the next items queue up. So there is no timer to tune and no added
//! latency when idle (a lone item is written at once, alone).
//!
//! With [`Batching::hold`], a committer that finds items while another
//! commit runs holds its batch open until a running commit ends (or the
//! batch fills, or the hold passes), so the committers take turns instead
//! of writing side by side: larger batches, so fewer statements to plan for
//! the same items (about 0.6x in the worker's send path). Idle, it adds
//! nothing: with no commit running, a batch goes at once.
//!
//! A committer may keep a state across a burst, i.e. while batches are
//! waiting back-to-back ([`GroupCommit::start_with_state`]): typically a
//! pooled connection, whose acquisition costs a round trip of its own.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify, mpsc, oneshot};

/// A failed batch fails every write in it; each submitter gets the same error.
pub type CommitError = Arc<sqlx::Error>;

/// How items are grouped into batches.
pub struct Batching<I> {
    committers: usize,
    max_items: usize,
    weight: fn(&I) -> usize,
    max_weight: usize,
    queue: usize,
    hold: Option<Duration>,
}

impl<I> Batching<I> {
    /// `committers` tasks, each writing one batch at a time, of up to
    /// `max_items` items. Room for four rounds of full batches to wait before
    /// `submit` waits too.
    pub fn new(committers: usize, max_items: usize) -> Batching<I> {
        let (committers, max_items) = (committers.max(1), max_items.max(1));
        Batching {
            committers,
            max_items,
            weight: |_| 1,
            max_weight: usize::MAX,
            queue: max_items.saturating_mul(committers).saturating_mul(4),
            hold: None,
        }
    }

    /// Also limits a batch by the total `weight` of its items (messages,
    /// bytes): a batch takes no more items once it weighs `max_weight`, so
    /// its last item may carry it over by less than that item's weight. A
    /// batch always takes one item, however heavy.
    pub fn weighed(self, weight: fn(&I) -> usize, max_weight: usize) -> Batching<I> {
        Batching {
            weight,
            max_weight,
            ..self
        }
    }

    /// A batch formed while another commit runs waits for a running commit
    /// to end, for up to `hold`, taking items meanwhile (see the module's
    /// documentation). The bound keeps a commit that waits for a lock from
    /// stopping every write behind it for longer. A committer that ends a
    /// commit while another holds its batch ends its burst: a state kept
    /// across bursts ([`GroupCommit::start_with_state`]) is kept less often.
    pub fn hold(self, hold: Duration) -> Batching<I> {
        Batching {
            hold: Some(hold),
            ..self
        }
    }

    /// How many items may wait for a committer before `submit` waits too.
    pub fn queue(self, capacity: usize) -> Batching<I> {
        Batching {
            queue: capacity.max(1),
            ..self
        }
    }
}

impl<I> Clone for Batching<I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I> Copy for Batching<I> {}

struct Pending<I, O> {
    item: I,
    reply: oneshot::Sender<Result<O, CommitError>>,
}

/// What the committers share: the items waiting (one committer takes
/// from them at a time), and the commits running, with a signal at the end
/// of each (for [`Batching::hold`]).
struct Queue<I, O> {
    rx: Mutex<mpsc::Receiver<Pending<I, O>>>,
    writing: AtomicUsize,
    written: Notify,
}

/// Hands items to committer tasks that write them in batches with a writer,
/// which answers one output per input, in order. An output may itself be a
/// `Result` when items of one batch can fail on their own.
pub struct GroupCommit<I, O> {
    tx: mpsc::Sender<Pending<I, O>>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        GroupCommit {
            tx: self.tx.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts the committer tasks; each batch is written by `write`. They
    /// stop when the last clone of this value is dropped. Must be called
    /// within a Tokio runtime.
    pub fn start<W, F>(batching: Batching<I>, write: W) -> GroupCommit<I, O>
    where
        W: Fn(Vec<I>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'static,
    {
        GroupCommit::start_with_state(batching, move |_: Option<()>, items| {
            let written = write(items);
            async move { (None, written.await) }
        })
    }

    /// As [`GroupCommit::start`], with a state that a committer keeps across
    /// a burst. `write` gets `None` for the first batch of a burst and the
    /// state it returned for the next ones; the burst goes on while batches
    /// are waiting and no other committer is waiting for them, then the state
    /// is dropped. `write` returns `None` to end the burst at once (a
    /// connection that failed must not be reused).
    pub fn start_with_state<S, W, F>(batching: Batching<I>, write: W) -> GroupCommit<I, O>
    where
        S: Send + 'static,
        W: Fn(Option<S>, Vec<I>) -> F + Send + Sync + 'static,
        F: Future<Output = (Option<S>, Result<Vec<O>, sqlx::Error>)> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Pending<I, O>>(batching.queue);
        let queue = Arc::new(Queue {
            rx: Mutex::new(rx),
            writing: AtomicUsize::new(0),
            written: Notify::new(),
        });
        let write = Arc::new(write);
        for _ in 0..batching.committers {
            let (queue, write) = (queue.clone(), write.clone());
            tokio::spawn(async move { committer(&queue, batching, &*write).await });
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

/// Waits for a batch, writes it, and goes on with the next one while a burst
/// lasts (see [`GroupCommit::start_with_state`]).
async fn committer<I, O, S, W, F>(queue: &Queue<I, O>, batching: Batching<I>, write: &W)
where
    W: Fn(Option<S>, Vec<I>) -> F,
    F: Future<Output = (Option<S>, Result<Vec<O>, sqlx::Error>)>,
{
    while let Some((mut batch, mut writing)) = next_batch(queue, batching).await {
        let mut state = None;
        loop {
            state = commit(write, state, batch).await;
            drop(writing);
            if state.is_none() {
                break;
            }
            match try_next_batch(queue, batching).await {
                Some(next) => (batch, writing) = next,
                None => break,
            }
        }
    }
}

/// A batch, and its mark as being written.
type Batch<'q, I, O> = (Vec<Pending<I, O>>, Writing<'q, I, O>);

/// Counts a batch as being written from when it is taken until it is
/// dropped, after its commit (or a panic in it), which it signals.
struct Writing<'q, I, O>(&'q Queue<I, O>);

impl<I, O> Drop for Writing<'_, I, O> {
    fn drop(&mut self) {
        self.0.writing.fetch_sub(1, Ordering::SeqCst);
        self.0.written.notify_waiters();
    }
}

/// Waits for one item, then takes whatever else is waiting (and, with a
/// hold, what comes while it holds the batch).
async fn next_batch<I, O>(queue: &Queue<I, O>, batching: Batching<I>) -> Option<Batch<'_, I, O>> {
    let mut rx = queue.rx.lock().await;
    let first = rx.recv().await?;
    Some(fill(queue, &mut rx, first, batching).await)
}

/// What is waiting now (and, with a hold, what comes while it holds the
/// batch), if anything is and no other committer is already taking items.
async fn try_next_batch<I, O>(
    queue: &Queue<I, O>,
    batching: Batching<I>,
) -> Option<Batch<'_, I, O>> {
    let mut rx = queue.rx.try_lock().ok()?;
    let first = rx.try_recv().ok()?;
    Some(fill(queue, &mut rx, first, batching).await)
}

/// `first` and whatever else is waiting, up to the batch limits; with
/// [`Batching::hold`], while another commit runs, also what comes until it
/// ends or the hold passes. The batch is marked as being written before
/// `rx` (held by the caller) is let go, so that the next committer to take
/// items sees it.
async fn fill<'q, I, O>(
    queue: &'q Queue<I, O>,
    rx: &mut mpsc::Receiver<Pending<I, O>>,
    first: Pending<I, O>,
    batching: Batching<I>,
) -> Batch<'q, I, O> {
    let mut batch = Vec::new();
    let mut weight = 0usize;
    // Adds an item; says whether the batch has room for another.
    let mut add = |next: Pending<I, O>, batch: &mut Vec<_>| {
        weight = weight.saturating_add((batching.weight)(&next.item));
        batch.push(next);
        batch.len() < batching.max_items && weight < batching.max_weight
    };
    let mut room = add(first, &mut batch);
    while room {
        match rx.try_recv() {
            Ok(next) => room = add(next, &mut batch),
            Err(_) => break,
        }
    }
    if room && let Some(hold) = batching.hold {
        hold_open(queue, rx, hold, |next| add(next, &mut batch)).await;
    }
    queue.writing.fetch_add(1, Ordering::SeqCst);
    (batch, Writing(queue))
}

/// While another commit runs, `add`s what comes until a commit ends, `hold`
/// passes, or `add` says the batch is full.
async fn hold_open<I, O>(
    queue: &Queue<I, O>,
    rx: &mut mpsc::Receiver<Pending<I, O>>,
    hold: Duration,
    mut add: impl FnMut(Pending<I, O>) -> bool,
) {
    // Listening before looking: a commit that ends in between still wakes us.
    let mut written = pin!(queue.written.notified());
    written.as_mut().enable();
    if queue.writing.load(Ordering::SeqCst) == 0 {
        return;
    }
    let mut held = pin!(tokio::time::sleep(hold));
    loop {
        tokio::select! {
            _ = &mut written => return,
            _ = &mut held => return,
            next = rx.recv() => {
                if !next.is_some_and(&mut add) {
                    return;
                }
            }
        }
    }
}

/// Writes one batch and answers each of its items; returns the state to keep.
async fn commit<I, O, S, W, F>(write: &W, state: Option<S>, batch: Vec<Pending<I, O>>) -> Option<S>
where
    W: Fn(Option<S>, Vec<I>) -> F,
    F: Future<Output = (Option<S>, Result<Vec<O>, sqlx::Error>)>,
{
    let (items, replies): (Vec<I>, Vec<_>) = batch.into_iter().map(|p| (p.item, p.reply)).unzip();
    let expected = items.len();
    let (state, written) = write(state, items).await;
    let error = match written {
        Ok(outputs) if outputs.len() == expected => {
            for (reply, output) in replies.into_iter().zip(outputs) {
                let _ = reply.send(Ok(output));
            }
            return state;
        }
        Ok(outputs) => sqlx::Error::Protocol(format!(
            "group commit: {} answers for {expected} writes",
            outputs.len()
        )),
        Err(error) => error,
    };
    let error = Arc::new(error);
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
    state
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::poll;

    use super::*;

    #[tokio::test]
    async fn concurrent_writes_share_a_batch_and_get_their_own_answers() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let group = GroupCommit::start(Batching::new(1, 100), move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        });
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
        let group = GroupCommit::start(Batching::new(2, 10), |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(sqlx::Error::PoolTimedOut)
        });
        let error = group.submit(1).await.unwrap_err();
        assert!(matches!(*error, sqlx::Error::PoolTimedOut));
    }

    #[tokio::test]
    async fn batches_stay_under_their_cap() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let group = GroupCommit::start(Batching::new(1, 4), move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move { Ok(items) }
        });
        futures::future::join_all((0..20u32).map(|i| {
            let group = group.clone();
            async move { group.submit(i).await.unwrap() }
        }))
        .await;
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
    }

    /// A writer whose first call (the batch holding item 0) waits for
    /// `gate`, after saying so on `started`: items submitted meanwhile queue
    /// up and form the next batches. Each call is logged with the state it
    /// got (the burst number) and the states dropped so far; the state
    /// returned is the burst number, or `None` when a batch holds `end`.
    struct Script {
        log: std::sync::Mutex<Vec<Call>>,
        bursts: AtomicUsize,
        dropped: Arc<std::sync::Mutex<Vec<usize>>>,
        started: Notify,
        gate: Notify,
        end: usize,
    }

    /// One call of the writer: the state it got, its batch, the states dropped before.
    type Call = (Option<usize>, Vec<usize>, Vec<usize>);

    /// A state that records its drop.
    struct Burst(usize, Arc<std::sync::Mutex<Vec<usize>>>);

    impl Drop for Burst {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    impl Script {
        fn new(end: usize) -> Arc<Script> {
            Arc::new(Script {
                log: Default::default(),
                bursts: AtomicUsize::new(0),
                dropped: Default::default(),
                started: Notify::new(),
                gate: Notify::new(),
                end,
            })
        }

        fn start(self: &Arc<Script>, batching: Batching<usize>) -> GroupCommit<usize, usize> {
            let script = self.clone();
            GroupCommit::start_with_state(batching, move |state: Option<Burst>, items| {
                let script = script.clone();
                async move {
                    let got = state.as_ref().map(|b| b.0);
                    let dropped = script.dropped.lock().unwrap().clone();
                    script
                        .log
                        .lock()
                        .unwrap()
                        .push((got, items.clone(), dropped));
                    if items.contains(&0) {
                        script.started.notify_one();
                        script.gate.notified().await;
                    }
                    let state = state.unwrap_or_else(|| {
                        let n = script.bursts.fetch_add(1, Ordering::SeqCst) + 1;
                        Burst(n, script.dropped.clone())
                    });
                    let state = (!items.contains(&script.end)).then_some(state);
                    (state, Ok(items))
                }
            })
        }

        fn log(&self) -> Vec<Call> {
            self.log.lock().unwrap().clone()
        }
    }

    /// Submits item 0; while its batch is being written, submits `queued`
    /// (which wait in the queue); then lets the write of 0 finish and waits
    /// for every answer.
    async fn burst(script: &Script, group: &GroupCommit<usize, usize>, queued: &[usize]) {
        let mut first = pin!(group.submit(0));
        assert!(poll!(&mut first).is_pending());
        script.started.notified().await;
        let mut waiting: Vec<_> = queued.iter().map(|&i| Box::pin(group.submit(i))).collect();
        for submit in &mut waiting {
            assert!(poll!(submit).is_pending(), "queued behind the first batch");
        }
        script.gate.notify_one();
        assert_eq!(first.await.unwrap(), 0);
        for (submit, &i) in waiting.into_iter().zip(queued) {
            assert_eq!(submit.await.unwrap(), i);
        }
    }

    /// A submitted item's answer.
    type Answer<'a> = Pin<Box<dyn Future<Output = Result<usize, CommitError>> + 'a>>;

    /// Submits item 0 and, while its batch is being written, `later` one
    /// at a time, letting the other committer run after each; returns them.
    async fn during_first_commit<'a>(
        script: &Script,
        group: &'a GroupCommit<usize, usize>,
        later: &[usize],
    ) -> (Answer<'a>, Vec<Answer<'a>>) {
        let mut first: Answer = Box::pin(group.submit(0));
        assert!(poll!(&mut first).is_pending());
        script.started.notified().await;
        let mut waiting = Vec::new();
        for &i in later {
            let mut submit: Answer = Box::pin(group.submit(i));
            let _ = poll!(&mut submit);
            tokio::task::yield_now().await;
            waiting.push(submit);
        }
        (first, waiting)
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_formed_during_a_commit_is_held_until_it_ends() {
        let script = Script::new(usize::MAX);
        let group = script.start(Batching::new(2, 100).hold(Duration::from_secs(3600)));
        let started = tokio::time::Instant::now();
        let (first, mut waiting) = during_first_commit(&script, &group, &[1, 2, 3]).await;
        for submit in &mut waiting {
            assert!(poll!(submit).is_pending(), "held while 0 is written");
        }
        script.gate.notify_one();
        first.await.unwrap();
        for submit in waiting {
            submit.await.unwrap();
        }
        // Released by the end of the commit, not by the hold.
        assert_eq!(started.elapsed(), Duration::ZERO);
        let batches: Vec<Vec<usize>> = script.log().into_iter().map(|(_, b, _)| b).collect();
        // Without the hold, the second committer writes each as it comes.
        assert_eq!(batches, [vec![0], vec![1, 2, 3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_batch_goes_when_the_hold_passes() {
        let script = Script::new(usize::MAX);
        let group = script.start(Batching::new(2, 100).hold(Duration::from_secs(5)));
        let (first, waiting) = during_first_commit(&script, &group, &[1, 2]).await;
        let started = tokio::time::Instant::now();
        // The commit of 0 waits (for a lock, say): 1 and 2 go after the hold.
        for submit in waiting {
            submit.await.unwrap();
        }
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        script.gate.notify_one();
        first.await.unwrap();
        let batches: Vec<Vec<usize>> = script.log().into_iter().map(|(_, b, _)| b).collect();
        assert_eq!(batches, [vec![0], vec![1, 2]]);
    }

    #[tokio::test]
    async fn a_batch_stops_taking_items_at_its_weight() {
        let script = Script::new(usize::MAX);
        let group = script.start(Batching::new(1, 100).weighed(|i| *i, 10));
        burst(&script, &group, &[4, 4, 4, 50, 4, 3]).await;
        let batches: Vec<Vec<usize>> = script.log().into_iter().map(|(_, b, _)| b).collect();
        // 4 + 4 is under 10, 4 + 4 + 4 is not: the third 4 is the batch's last.
        // The 50 alone is over the limit: it goes, alone.
        assert_eq!(batches, [vec![0], vec![4, 4, 4], vec![50], vec![4, 3]]);
    }

    #[tokio::test]
    async fn the_state_lasts_for_a_burst() {
        let script = Script::new(usize::MAX);
        let group = script.start(Batching::new(1, 2));
        burst(&script, &group, &[1, 2, 3]).await;
        assert_eq!(group.submit(4).await.unwrap(), 4);
        assert_eq!(
            script.log(),
            [
                // A burst starts without a state; the writer makes one.
                (None, vec![0], vec![]),
                // The batches waiting behind it get that state...
                (Some(1), vec![1, 2], vec![]),
                (Some(1), vec![3], vec![]),
                // ...which is dropped when nothing is waiting any more.
                (None, vec![4], vec![1]),
            ]
        );
    }

    #[tokio::test]
    async fn a_writer_ends_the_burst_by_dropping_its_state() {
        // The batch holding item 0 drops the state (as after an error).
        let script = Script::new(0);
        let group = script.start(Batching::new(1, 10));
        burst(&script, &group, &[1, 2]).await;
        assert_eq!(
            script.log(),
            [(None, vec![0], vec![]), (None, vec![1, 2], vec![1])]
        );
    }
}
