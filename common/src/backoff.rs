//! Exponential backoff, written once for every retry of the worker: sends
//! (full jitter, and the start-up check that they fit inside Sent's
//! idempotency window), webhook events and status callbacks (a quarter of
//! jitter on top).

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: attempt `n` (1-based) waits a random
/// time in `[0, min(max, base * 2^(n-1))]`, and never less than `Retry-After`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let ceiling = self.ceiling(attempt);
        let jittered = if ceiling.is_zero() {
            ceiling
        } else {
            rng.random_range(Duration::ZERO..=ceiling)
        };
        jittered.max(retry_after.unwrap_or_default())
    }

    /// Attempt `n` (1-based) waits its ceiling plus up to a quarter more, at
    /// most `max` (or `base` when that is larger): for retries of our own
    /// work (webhook events, callbacks), where the wait should not drop to
    /// nothing but retries failing together should not fire together.
    pub fn spread(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let jitter = ceiling.mul_f64(rng.random::<f64>() * 0.25);
        (ceiling + jitter).min(self.max.max(self.base))
    }

    /// The longest a message can spend between its first attempt and its
    /// last: every retry waits its ceiling or the longest `Retry-After`
    /// honoured, whichever is longer, and every attempt takes `timeout`.
    pub fn worst_case(
        &self,
        max_attempts: u32,
        retry_after_cap: Duration,
        timeout: Duration,
    ) -> Duration {
        let wait = |attempt| self.ceiling(attempt).max(retry_after_cap);
        let retries = max_attempts.saturating_sub(1);
        // From the 32nd retry on the ceiling no longer grows: count those at
        // once, so a huge WORKER_MAX_ATTEMPTS costs nothing to check.
        let growing = (1..=retries.min(31)).map(wait);
        let steady = wait(32).saturating_mul(retries.saturating_sub(31));
        growing.fold(
            timeout.saturating_mul(max_attempts).saturating_add(steady),
            Duration::saturating_add,
        )
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_full_jitter() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        assert_eq!(backoff.ceiling(1), Duration::from_secs(1));
        assert_eq!(backoff.ceiling(2), Duration::from_secs(2));
        assert_eq!(backoff.ceiling(5), Duration::from_secs(16));
        assert_eq!(backoff.ceiling(6), Duration::from_secs(30));
        assert_eq!(backoff.ceiling(1000), Duration::from_secs(30));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..2000)
            .map(|_| backoff.delay(4, None, &mut rng))
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(8)));
        // Full jitter: spread over the whole range, not bunched near the top.
        assert!(delays.iter().any(|d| *d < Duration::from_secs(1)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(7)));
    }

    #[test]
    fn spread_grows_with_a_quarter_of_jitter_and_is_capped() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let first = backoff.spread(1, &mut rng);
            assert!(first >= backoff.base && first <= backoff.base.mul_f64(1.25));
            let fourth = backoff.spread(4, &mut rng);
            assert!(fourth >= Duration::from_secs(8) && fourth <= Duration::from_secs(10));
            assert_eq!(backoff.spread(40, &mut rng), backoff.max);
        }
    }

    #[test]
    fn worst_case_adds_every_wait_and_attempt() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        };
        let hour = Duration::from_secs(3600);
        // 7 retries of at most an hour each (Retry-After), 8 attempts of 10 s.
        assert_eq!(
            backoff.worst_case(8, hour, Duration::from_secs(10)),
            hour * 7 + Duration::from_secs(80)
        );
        assert_eq!(
            backoff.worst_case(1, hour, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            backoff.worst_case(u32::MAX, hour, hour),
            hour * u32::MAX + hour * (u32::MAX - 1)
        );
        let fast = Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_secs(7200),
        };
        // Ceilings 1 ms, 2 ms, ... reach 2 h at the 24th retry.
        let slow_sum: Duration = (1..40).map(|n| fast.ceiling(n).max(hour)).sum();
        assert_eq!(fast.worst_case(40, hour, Duration::ZERO), slow_sum);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for attempt in 1..10 {
            assert!(
                backoff.delay(attempt, Some(Duration::from_secs(5)), &mut rng)
                    >= Duration::from_secs(5)
            );
        }
    }
}
