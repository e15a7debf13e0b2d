//! The claim-and-deliver loop of the outboxes (status callbacks, forwards):
//! claim as many due rows as there is room for, deliver each in a task of
//! its own, and claim again when a delivery ends, when the outbox's
//! notification wakes us, or every poll interval. Claims are spaced by
//! [`NextClaim`], which the inbox's lanes use too.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a loop claims.
pub struct Pace {
    /// Deliveries in flight at most.
    pub concurrency: usize,
    /// Claim at least this often without a wake-up.
    pub poll_interval: Duration,
    /// Claims at least this far apart. A claim costs Postgres about as much
    /// for one row as for thirty, and under load every delivery that ends
    /// would otherwise claim the one row due since: spacing claims lets each
    /// take what came due meanwhile. An idle loop's first claim is at once.
    pub gap: Duration,
}

/// Runs until `shutdown` is cancelled, then waits for the deliveries in
/// flight. `claim(room)` returns up to `room` due rows (logging its own
/// errors; an error claims nothing this round); `deliver(row)` is called
/// in the loop, so it can take what the claim's next round must see (a
/// client's slot), and returns the delivery to run.
pub async fn run<T, C, CF, D, DF>(
    pace: Pace,
    wake: &Notify,
    shutdown: &CancellationToken,
    mut claim: C,
    mut deliver: D,
) where
    C: FnMut(usize) -> CF,
    CF: Future<Output = Vec<T>>,
    D: FnMut(T) -> DF,
    DF: Future<Output = ()> + Send + 'static,
{
    let mut in_flight = JoinSet::new();
    let mut next_claim = NextClaim::new(pace.gap);
    while !shutdown.is_cancelled() {
        if !next_claim.ready(shutdown).await {
            break;
        }
        // Deliveries that ended during the gap make room too, not only the
        // one that woke us.
        while in_flight.try_join_next().is_some() {}
        let room = pace.concurrency.saturating_sub(in_flight.len());
        if room > 0 {
            // Bounded by the room, not by a batch size: always spaced.
            next_claim.after(Instant::now(), false);
            for row in claim(room).await {
                in_flight.spawn(deliver(row));
            }
        }
        tokio::select! {
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pace.poll_interval) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// When a claim loop may claim next: at once at first and after a full
/// claim (a backlog), else `gap` after its last claim began. Claims cost
/// Postgres about as much for one row as for many, so spacing them lets
/// each take what came due meanwhile.
pub struct NextClaim {
    gap: Duration,
    next: Option<Instant>,
}

impl NextClaim {
    pub fn new(gap: Duration) -> NextClaim {
        NextClaim { gap, next: None }
    }

    /// Waits until the next claim may begin; `false` when `shutdown` came
    /// first.
    pub async fn ready(&self, shutdown: &CancellationToken) -> bool {
        let Some(next) = self.next else {
            return !shutdown.is_cancelled();
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => true,
            _ = shutdown.cancelled() => false,
        }
    }

    /// A claim began `at`; `full` when it took all it could (more is due).
    pub fn after(&mut self, at: Instant, full: bool) {
        self.next = (!full).then_some(at + self.gap);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A backlog is claimed a full room at a time: the deliveries that ended
    /// while the loop waited out the gap all make room, not only the one the
    /// loop woke for (which once made each claim take a single row, so a
    /// backlog drained at one delivery per gap).
    #[tokio::test(start_paused = true)]
    async fn a_backlog_is_claimed_a_full_room_at_a_time() {
        const BACKLOG: usize = 40;
        const CONCURRENCY: usize = 4;
        let (wake, shutdown) = (Notify::new(), CancellationToken::new());
        let (left, claims, delivered) = (
            AtomicUsize::new(BACKLOG),
            AtomicUsize::new(0),
            Arc::new(AtomicUsize::new(0)),
        );
        let pace = Pace {
            concurrency: CONCURRENCY,
            poll_interval: Duration::from_secs(1),
            gap: Duration::from_millis(25),
        };
        let claim = |room: usize| {
            claims.fetch_add(1, Ordering::Relaxed);
            let taken = room.min(left.load(Ordering::Relaxed));
            left.fetch_sub(taken, Ordering::Relaxed);
            if left.load(Ordering::Relaxed) == 0 {
                shutdown.cancel();
            }
            async move { vec![(); taken] }
        };
        let deliver = |()| {
            let delivered = delivered.clone();
            async move {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        };
        run(pace, &wake, &shutdown, claim, deliver).await;
        assert_eq!(delivered.load(Ordering::Relaxed), BACKLOG);
        assert_eq!(claims.load(Ordering::Relaxed), BACKLOG / CONCURRENCY);
    }

    /// A trickle is claimed at most every gap; a backlog at once.
    #[tokio::test(start_paused = true)]
    async fn claims_wait_out_the_gap_unless_the_last_was_full() {
        const GAP: Duration = Duration::from_millis(50);
        let shutdown = CancellationToken::new();
        let mut next = NextClaim::new(GAP);
        let start = Instant::now();
        assert!(next.ready(&shutdown).await);
        assert_eq!(start.elapsed(), Duration::ZERO, "the first claim waited");

        next.after(Instant::now(), false);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(next.ready(&shutdown).await);
        assert_eq!(
            start.elapsed(),
            GAP,
            "a claim after a partial batch did not wait out the gap"
        );

        next.after(Instant::now(), true);
        assert!(next.ready(&shutdown).await);
        assert_eq!(start.elapsed(), GAP, "a claim after a full batch waited");

        next.after(Instant::now(), false);
        shutdown.cancel();
        assert!(!next.ready(&shutdown).await, "a shutdown was waited out");
        assert_eq!(start.elapsed(), GAP, "a shutdown waited for the gap");
    }
}
