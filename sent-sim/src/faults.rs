//! Fault injection: which share of sends and webhooks misbehave, and how.

use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Fault shares (0.0..=1.0) in effect; JSON body of `POST /_sim/faults`.
/// Fields left out of that JSON take their defaults (no fault, 2000 ms slow).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Sends answered 429 `BUSINESS_002` with `Retry-After`.
    pub rate_429: f64,
    /// Sends answered 500 / 502 / 503 / 504.
    pub rate_5xx: f64,
    /// Sends answered only after `slow_ms`.
    pub slow: f64,
    /// Delay of a slow answer, in milliseconds.
    pub slow_ms: u64,
    /// Sends whose connection is closed without an answer (half of them after the send was accepted).
    pub drop: f64,
    /// Webhook events delivered twice with the same event id.
    pub duplicate_webhook: f64,
    /// Messages whose last two events are delivered in swapped order.
    pub reorder_webhook: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rate_429: 0.0,
            rate_5xx: 0.0,
            slow: 0.0,
            slow_ms: 2_000,
            drop: 0.0,
            duplicate_webhook: 0.0,
            reorder_webhook: 0.0,
        }
    }
}

impl Faults {
    /// Names the first share outside 0.0..=1.0, or 429 + 5xx above 1.0.
    pub fn validate(&self) -> Result<(), String> {
        let shares = [
            ("rate_429", self.rate_429),
            ("rate_5xx", self.rate_5xx),
            ("slow", self.slow),
            ("drop", self.drop),
            ("duplicate_webhook", self.duplicate_webhook),
            ("reorder_webhook", self.reorder_webhook),
        ];
        for (name, value) in shares {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} must be between 0.0 and 1.0, got {value}"));
            }
        }
        if self.rate_429 + self.rate_5xx > 1.0 {
            return Err("rate_429 + rate_5xx must not exceed 1.0".to_owned());
        }
        Ok(())
    }

    /// The same faults with every share forced into 0.0..=1.0 (NaN becomes 0).
    pub fn clamped(mut self) -> Self {
        for share in [
            &mut self.rate_429,
            &mut self.rate_5xx,
            &mut self.slow,
            &mut self.drop,
            &mut self.duplicate_webhook,
            &mut self.reorder_webhook,
        ] {
            *share = if share.is_nan() {
                0.0
            } else {
                share.clamp(0.0, 1.0)
            };
        }
        self.rate_5xx = self.rate_5xx.min(1.0 - self.rate_429);
        self
    }
}

/// What to do to one send, decided once when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendFaults {
    pub slow: Option<Duration>,
    pub drop: Option<DropWhen>,
    pub reject: Option<Reject>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropWhen {
    /// Before any processing: nothing was stored.
    Before,
    /// After the request was fully processed (and, if valid, accepted and stored).
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    RateLimited,
    ServerError,
}

/// The faults in effect, changeable at runtime.
#[derive(Debug)]
pub(crate) struct FaultState {
    current: RwLock<Faults>,
}

impl FaultState {
    pub fn new(faults: Faults) -> Self {
        FaultState {
            current: RwLock::new(faults.clamped()),
        }
    }

    pub fn get(&self) -> Faults {
        *self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, faults: Faults) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = faults.clamped();
    }

    /// Rolls the dice for one send.
    pub fn roll_send(&self) -> SendFaults {
        let faults = self.get();
        let mut result = SendFaults {
            slow: None,
            drop: None,
            reject: None,
        };
        if chance(faults.slow) {
            result.slow = Some(Duration::from_millis(faults.slow_ms));
        }
        if chance(faults.drop) {
            result.drop = Some(if rand::random::<bool>() {
                DropWhen::Before
            } else {
                DropWhen::After
            });
        }
        if faults.rate_429 > 0.0 || faults.rate_5xx > 0.0 {
            let roll = rand::random::<f64>();
            if roll < faults.rate_429 {
                result.reject = Some(Reject::RateLimited);
            } else if roll < faults.rate_429 + faults.rate_5xx {
                result.reject = Some(Reject::ServerError);
            }
        }
        result
    }
}

/// True with probability `share` (exactly never at 0.0, always at 1.0).
pub(crate) fn chance(share: f64) -> bool {
    share > 0.0 && (share >= 1.0 || rand::random::<f64>() < share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_json_keeps_defaults_and_unknown_fields_are_refused() {
        let faults: Faults = serde_json::from_str(r#"{"drop": 0.5}"#).unwrap();
        assert_eq!(faults.drop, 0.5);
        assert_eq!(faults.slow_ms, 2_000);
        assert!(serde_json::from_str::<Faults>(r#"{"dorp": 0.5}"#).is_err());
    }

    #[test]
    fn validation_and_clamping() {
        let bad = Faults {
            rate_429: 0.7,
            rate_5xx: 0.7,
            ..Faults::default()
        };
        assert!(bad.validate().is_err());
        let clamped = bad.clamped();
        assert!(clamped.validate().is_ok());
        assert!(
            Faults {
                slow: 2.0,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn certain_faults_always_fire() {
        let state = FaultState::new(Faults {
            rate_5xx: 1.0,
            slow: 1.0,
            slow_ms: 5,
            drop: 1.0,
            ..Faults::default()
        });
        for _ in 0..100 {
            let roll = state.roll_send();
            assert_eq!(roll.reject, Some(Reject::ServerError));
            assert_eq!(roll.slow, Some(Duration::from_millis(5)));
            assert!(roll.drop.is_some());
        }
        assert_eq!(FaultState::new(Faults::default()).roll_send().reject, None);
    }
}
