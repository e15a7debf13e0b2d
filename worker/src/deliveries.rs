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
