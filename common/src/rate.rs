//! Rate limiting with one algorithm (GCRA: a burst of `count`, then one more
//! every `period / count`) in two places: in process memory, or in Redis so
//! that every gateway instance, or every worker, shares one budget. Either
//! can grant part of a request for several units (a batch of messages).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::redis_conn::Redis;

/// `count` requests per `period`, written `10/minute`, `500/second` or
/// `100 per hour` as in the original integration's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Quota {
    pub fn per_minute(count: u32) -> Quota {
        Quota {
            count: NonZeroU32::new(count).expect("quota count must be positive"),
            period: Duration::from_secs(60),
        }
    }

    fn emission_interval(&self) -> Duration {
        self.period / self.count.get()
    }
}

impl FromStr for Quota {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let (count, unit) = s
            .split_once('/')
            .or_else(|| s.split_once(" per "))
            .ok_or("expected a value like 10/minute")?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| "count must be a positive integer")?;
        let count = NonZeroU32::new(count).ok_or("count must be positive")?;
        let seconds = match unit.trim().trim_end_matches('s') {
            "second" | "sec" => 1,
            "minute" | "min" => 60,
            "hour" => 3600,
            "day" => 86400,
            other => {
                return Err(format!(
                    "unknown unit '{other}' (second, minute, hour, day)"
                ));
            }
        };
        Ok(Quota {
            count,
            period: Duration::from_secs(seconds),
        })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            86400 => "day",
            _ => return write!(f, "{}/{}s", self.count, self.period.as_secs()),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// A request over its budget: when it may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, never 0.
    pub fn seconds(&self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// What a request for `n` units got: some of them, or none and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u32,
    /// When the next unit frees up, if fewer were granted than asked.
    pub retry_after: Option<RetryAfter>,
}

#[derive(Clone)]
pub enum RateLimiter {
    Memory(Arc<MemoryLimiters>),
    Redis { conn: Redis, prefix: String },
}

/// GCRA with `tat` (the theoretical arrival time of the next unit) per key.
/// A key whose `tat` has passed is as good as new, so it is forgotten: memory
/// is bounded by the clients active within one period.
#[derive(Default)]
pub struct MemoryLimiters {
    tats: Mutex<HashMap<String, u64>>,
    checks: AtomicU64,
}

/// Checks between two sweeps of forgotten keys.
const SWEEP_EVERY: u64 = 4096;

/// The algorithm, in microseconds, as the Redis script below runs it: up to
/// `n` units, `(granted, new tat, wait for the next unit)`.
fn gcra(tat: u64, now: u64, interval: u64, period: u64, n: u32) -> (u32, u64, u64) {
    let tat = tat.max(now);
    let available = (now + period).saturating_sub(tat) / interval.max(1);
    let granted = available.min(u64::from(n)) as u32;
    if granted == 0 {
        return (0, tat, tat + interval - period - now);
    }
    (granted, tat + u64::from(granted) * interval, 0)
}

const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local granted = math.min(n, math.floor((now + period - tat) / interval))
if granted <= 0 then
  return {0, tat + interval - period - now}
end
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {granted, 0}
"#;

impl RateLimiter {
    pub fn memory() -> RateLimiter {
        RateLimiter::Memory(Arc::default())
    }

    pub fn redis(conn: Redis, prefix: impl Into<String>) -> RateLimiter {
        RateLimiter::Redis {
            conn,
            prefix: prefix.into(),
        }
    }

    /// Takes one unit of `key`'s budget under `quota`, or says how long to wait.
    /// A Redis failure is returned as an error for the caller to decide on.
    pub async fn check(
        &self,
        key: &str,
        quota: Quota,
    ) -> Result<Result<(), RetryAfter>, redis::RedisError> {
        let grant = self.take_up_to(key, quota, 1).await?;
        Ok(match grant.retry_after {
            Some(retry) if grant.granted == 0 => Err(retry),
            _ => Ok(()),
        })
    }

    /// Takes as many of `n` units as the budget has (a batch of messages
    /// takes one per message).
    pub async fn take_up_to(
        &self,
        key: &str,
        quota: Quota,
        n: u32,
    ) -> Result<Grant, redis::RedisError> {
        let (interval, period) = micros(quota);
        let (granted, wait_us) = match self {
            RateLimiter::Memory(limiters) => {
                limiters.take(&format!("{key}:{quota}"), interval, period, n)
            }
            RateLimiter::Redis { conn, prefix } => {
                static SCRIPT: std::sync::LazyLock<redis::Script> =
                    std::sync::LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));
                SCRIPT
                    .key(format!("{prefix}:ratelimit:{key}:{quota}"))
                    .arg(interval)
                    .arg(period)
                    .arg(n)
                    .invoke_async(&mut conn.clone())
                    .await?
            }
        };
        Ok(Grant {
            granted,
            retry_after: (granted < n).then(|| {
                // Past the granted units the next frees up one interval on.
                let wait = if granted == 0 { wait_us } else { interval };
                RetryAfter(Duration::from_micros(wait))
            }),
        })
    }
}

impl MemoryLimiters {
    fn take(&self, key: &str, interval: u64, period: u64, n: u32) -> (u32, u64) {
        let now = now_micros();
        let mut tats = self.tats.lock().expect("rate limiter lock poisoned");
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(key).copied().unwrap_or(now);
        let (granted, new_tat, wait) = gcra(tat, now, interval, period, n);
        if granted > 0 {
            tats.insert(key.to_owned(), new_tat);
        }
        (granted, wait)
    }

    /// Takes one unit of `key`'s budget, or says when one frees up.
    pub fn check(&self, key: &str, quota: Quota) -> Result<(), RetryAfter> {
        let (interval, period) = micros(quota);
        match self.take(&format!("{key}:{quota}"), interval, period, 1) {
            (0, wait) => Err(RetryAfter(Duration::from_micros(wait))),
            _ => Ok(()),
        }
    }

    /// Whether `key` has a unit left, without taking it.
    pub fn peek(&self, key: &str, quota: Quota) -> Result<(), RetryAfter> {
        let (interval, period) = micros(quota);
        let now = now_micros();
        let tat = self
            .tats
            .lock()
            .expect("rate limiter lock poisoned")
            .get(&format!("{key}:{quota}"))
            .copied()
            .unwrap_or(now);
        match gcra(tat, now, interval, period, 1) {
            (0, _, wait) => Err(RetryAfter(Duration::from_micros(wait))),
            _ => Ok(()),
        }
    }

    /// Forgets every key as good as new now; [`MemoryLimiters::take`] does
    /// it every few thousand checks.
    pub fn forget_idle(&self) {
        let now = now_micros();
        self.tats
            .lock()
            .expect("rate limiter lock poisoned")
            .retain(|_, tat| *tat > now);
    }

    /// Keys currently remembered.
    pub fn tracked(&self) -> usize {
        self.tats.lock().expect("rate limiter lock poisoned").len()
    }
}

/// A quota's emission interval and period in microseconds.
fn micros(quota: Quota) -> (u64, u64) {
    (
        quota.emission_interval().as_micros() as u64,
        quota.period.as_micros() as u64,
    )
}

/// Microseconds on a monotonic clock (from the first call).
fn now_micros() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_spellings() {
        assert_eq!("10/minute".parse::<Quota>().unwrap(), Quota::per_minute(10));
        assert_eq!(
            "10 per minute".parse::<Quota>().unwrap(),
            Quota::per_minute(10)
        );
        assert_eq!(
            "500/seconds".parse::<Quota>().unwrap().period,
            Duration::from_secs(1)
        );
        assert!("0/minute".parse::<Quota>().is_err());
        assert!("10/fortnight".parse::<Quota>().is_err());
        assert_eq!(Quota::per_minute(10).to_string(), "10/minute");
    }

    #[tokio::test]
    async fn memory_limiter_allows_the_burst_then_says_when() {
        let limiter = RateLimiter::memory();
        let quota = Quota::per_minute(3);
        for _ in 0..3 {
            assert!(limiter.check("a", quota).await.unwrap().is_ok());
        }
        let wait = limiter.check("a", quota).await.unwrap().unwrap_err();
        assert!(wait.0 <= Duration::from_secs(20) && wait.seconds() >= 1);
        assert!(
            limiter.check("b", quota).await.unwrap().is_ok(),
            "keys have their own budget"
        );
    }

    #[tokio::test]
    async fn a_request_for_many_units_gets_what_is_left() {
        let limiter = RateLimiter::memory();
        let quota = Quota::per_minute(10);
        let first = limiter.take_up_to("batch", quota, 7).await.unwrap();
        assert_eq!(
            first,
            Grant {
                granted: 7,
                retry_after: None
            }
        );
        let second = limiter.take_up_to("batch", quota, 7).await.unwrap();
        assert_eq!(second.granted, 3);
        assert!(second.retry_after.is_some_and(|r| r.seconds() <= 6));
        let none = limiter.take_up_to("batch", quota, 1).await.unwrap();
        assert_eq!(none.granted, 0);
        assert!(none.retry_after.is_some_and(|r| r.seconds() >= 1));
    }

    #[test]
    fn gcra_grants_the_burst_then_one_per_interval() {
        let (interval, period) = (6, 60); // 10 per 60
        let (granted, tat, _) = gcra(0, 100, interval, period, 100);
        assert_eq!((granted, tat), (10, 160));
        let (granted, _, wait) = gcra(tat, 100, interval, period, 1);
        assert_eq!((granted, wait), (0, 6));
        let (granted, tat, _) = gcra(tat, 106, interval, period, 5);
        assert_eq!((granted, tat), (1, 166));
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let limiters = MemoryLimiters::default();
        // 1000 a second: a key used once is as good as new a millisecond later.
        for i in 0..5000 {
            limiters.take(&format!("ip:{i}"), 1000, 1_000_000, 1);
        }
        // The sweep every few thousand checks may already have run.
        assert!(limiters.tracked() > 0);
        std::thread::sleep(Duration::from_millis(5));
        limiters.forget_idle();
        assert_eq!(limiters.tracked(), 0);
    }
}

/// A fleet-wide budget of calls to Sent (sends, status polls): GCRA in
/// Redis under one key, shared by every worker.
#[derive(Clone)]
pub struct Budget {
    limiter: RateLimiter,
    key: &'static str,
    quota: Quota,
}

impl Budget {
    pub fn new(limiter: RateLimiter, key: &'static str, quota: Quota) -> Budget {
        Budget {
            limiter,
            key,
            quota,
        }
    }

    /// Waits for one unit of the budget; false when `shutdown` came first.
    /// While Redis is unreachable it waits and tries again.
    pub async fn take(&self, shutdown: &tokio_util::sync::CancellationToken) -> bool {
        loop {
            let wait = match self.limiter.check(self.key, self.quota).await {
                Ok(Ok(())) => return true,
                // Spread the waiters so they do not all come back at once.
                Ok(Err(retry)) => {
                    retry.0
                        + Duration::from_millis(rand::Rng::random_range(&mut rand::rng(), 0..50))
                }
                Err(error) => {
                    tracing::warn!(%error, budget = self.key, "budget unavailable (redis); waiting");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
