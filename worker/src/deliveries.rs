//! The claim-and-deliver loop of the outboxes (status callbacks, forwards):
//! claim as many due rows as there is room for, deliver each in a task of
//! its own, and claim again when a delivery ends, when the outbox's
//! notification wakes us, or every poll interval.

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
    let mut last_claim: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        if let Some(at) = last_claim {
            tokio::select! {
                _ = tokio::time::sleep_until(at + pace.gap) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        // Deliveries that ended during the gap make room too, not only the
        // one that woke us.
        while in_flight.try_join_next().is_some() {}
        let room = pace.concurrency.saturating_sub(in_flight.len());
        if room > 0 {
            last_claim = Some(Instant::now());
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
}
