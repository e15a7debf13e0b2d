//! Rate limiting with one algorithm (GCRA: a burst of `count`, then one more
//! every `period / count`) in two places: in process memory (governor), or in
//! Redis so that every gateway instance, or every worker, shares one budget.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter as Governor};
use redis::aio::ConnectionManager;

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

#[derive(Clone)]
pub enum RateLimiter {
    Memory(Arc<MemoryLimiters>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
}

#[derive(Default)]
pub struct MemoryLimiters {
    by_quota: Mutex<HashMap<Quota, Arc<DefaultKeyedRateLimiter<String>>>>,
}

const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return allow_at - now
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
"#;

impl RateLimiter {
    pub fn memory() -> RateLimiter {
        RateLimiter::Memory(Arc::default())
    }

    pub fn redis(conn: ConnectionManager, prefix: impl Into<String>) -> RateLimiter {
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
        match self {
            RateLimiter::Memory(limiters) => Ok(limiters.check(key, quota)),
            RateLimiter::Redis { conn, prefix } => {
                static SCRIPT: std::sync::LazyLock<redis::Script> =
                    std::sync::LazyLock::new(|| redis::Script::new(GCRA_SCRIPT));
                let wait_us: u64 = SCRIPT
                    .key(format!("{prefix}:ratelimit:{key}:{quota}"))
                    .arg(quota.emission_interval().as_micros() as u64)
                    .arg(quota.period.as_micros() as u64)
                    .invoke_async(&mut conn.clone())
                    .await?;
                Ok(if wait_us == 0 {
                    Ok(())
                } else {
                    Err(RetryAfter(Duration::from_micros(wait_us)))
                })
            }
        }
    }
}

impl MemoryLimiters {
    fn check(&self, key: &str, quota: Quota) -> Result<(), RetryAfter> {
        let limiter = {
            let mut map = self.by_quota.lock().expect("rate limiter lock poisoned");
            map.entry(quota)
                .or_insert_with(|| {
                    let q = governor::Quota::with_period(quota.emission_interval())
                        .expect("non-zero interval")
                        .allow_burst(quota.count);
                    Arc::new(Governor::keyed(q))
                })
                .clone()
        };
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            RetryAfter(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }
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

    #[test]
    fn memory_limiter_allows_the_burst_then_says_when() {
        let limiter = MemoryLimiters::default();
        let quota = Quota::per_minute(3);
        for _ in 0..3 {
            assert!(limiter.check("a", quota).is_ok());
        }
        let wait = limiter.check("a", quota).unwrap_err();
        assert!(wait.0 <= Duration::from_secs(20) && wait.seconds() >= 1);
        assert!(
            limiter.check("b", quota).is_ok(),
            "keys have their own budget"
        );
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
