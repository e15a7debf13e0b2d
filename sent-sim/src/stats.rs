//! Counters of what the simulator saw and did, served by `GET /_sim/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the counters (JSON of `GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests to `/v3/...` (any method, any outcome).
    pub requests: u64,
    /// `POST /v3/messages` requests (any outcome).
    pub send_requests: u64,
    /// Sends answered 202 that created messages (not replays, not sandbox).
    pub accepted_requests: u64,
    /// Messages created (one per recipient and channel).
    pub messages_created: u64,
    /// Distinct (API key, `Idempotency-Key`) pairs that had a send accepted.
    pub distinct_idempotency_keys: u64,
    /// Sends answered from the idempotency cache.
    pub idempotent_replays: u64,
    /// Sends answered 409 `CONFLICT_001` (same key still in flight).
    pub conflicts: u64,
    /// Accepted sends whose key had already been accepted before (only after TTL expiry).
    pub accepted_twice: u64,
    /// Accepted sends that carried no `Idempotency-Key`.
    pub sends_without_idempotency_key: u64,
    /// Sandbox sends answered 202 (no side effects).
    pub sandbox_requests: u64,
    /// Keys Sent's request type does not define, seen in send bodies (each
    /// refused with a 400 `VALIDATION_001` naming it). A correct client keeps it at 0.
    #[serde(default)]
    pub unknown_fields: u64,
    /// Sends refused by the real per-minute limit (`SENT_SIM_MESSAGES_PER_MINUTE`).
    pub rate_limited: u64,
    /// Webhook attempts answered 2xx (duplicates included).
    pub webhooks_delivered: u64,
    /// Webhook attempts that failed (non-2xx, timeout, refused).
    pub webhook_failures: u64,
    /// Webhook events given up after the last retry.
    pub webhooks_abandoned: u64,
    /// Faults injected, by kind.
    pub faults_injected: FaultStats,
}

/// Injected faults by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    /// Sends answered 429 `BUSINESS_002` by injection.
    pub rate_limited_429: u64,
    /// Sends answered 5xx by injection.
    pub server_errors_5xx: u64,
    /// Sends answered late.
    pub slow: u64,
    /// Connections closed before the send was processed.
    pub dropped_before_processing: u64,
    /// Connections closed after the send was processed (accepted and stored if valid).
    pub dropped_after_processing: u64,
    /// Webhook events delivered a second time.
    pub duplicate_webhooks: u64,
    /// Messages whose events were delivered out of order.
    pub reordered_webhooks: u64,
}

/// Live counters; all updates are relaxed atomic increments.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub send_requests: AtomicU64,
    pub accepted_requests: AtomicU64,
    pub messages_created: AtomicU64,
    pub distinct_idempotency_keys: AtomicU64,
    pub idempotent_replays: AtomicU64,
    pub conflicts: AtomicU64,
    pub accepted_twice: AtomicU64,
    pub sends_without_idempotency_key: AtomicU64,
    pub sandbox_requests: AtomicU64,
    pub unknown_fields: AtomicU64,
    pub rate_limited: AtomicU64,
    pub webhooks_delivered: AtomicU64,
    pub webhook_failures: AtomicU64,
    pub webhooks_abandoned: AtomicU64,
    pub fault_429: AtomicU64,
    pub fault_5xx: AtomicU64,
    pub fault_slow: AtomicU64,
    pub fault_drop_before: AtomicU64,
    pub fault_drop_after: AtomicU64,
    pub fault_duplicate_webhook: AtomicU64,
    pub fault_reorder_webhook: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            requests: get(&self.requests),
            send_requests: get(&self.send_requests),
            accepted_requests: get(&self.accepted_requests),
            messages_created: get(&self.messages_created),
            distinct_idempotency_keys: get(&self.distinct_idempotency_keys),
            idempotent_replays: get(&self.idempotent_replays),
            conflicts: get(&self.conflicts),
            accepted_twice: get(&self.accepted_twice),
            sends_without_idempotency_key: get(&self.sends_without_idempotency_key),
            sandbox_requests: get(&self.sandbox_requests),
            unknown_fields: get(&self.unknown_fields),
            rate_limited: get(&self.rate_limited),
            webhooks_delivered: get(&self.webhooks_delivered),
            webhook_failures: get(&self.webhook_failures),
            webhooks_abandoned: get(&self.webhooks_abandoned),
            faults_injected: FaultStats {
                rate_limited_429: get(&self.fault_429),
                server_errors_5xx: get(&self.fault_5xx),
                slow: get(&self.fault_slow),
                dropped_before_processing: get(&self.fault_drop_before),
                dropped_after_processing: get(&self.fault_drop_after),
                duplicate_webhooks: get(&self.fault_duplicate_webhook),
                reordered_webhooks: get(&self.fault_reorder_webhook),
            },
        }
    }
}
