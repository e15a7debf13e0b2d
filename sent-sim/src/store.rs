//! In-memory state: messages, the idempotency cache and per-key rate windows.
//! Each map is split into shards behind short-held mutexes.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::StatusCode;
use uuid::Uuid;

use crate::api::wire::{EventEntry, Media, MessageBody, MessageInfo};
use crate::util::rfc3339;

const SHARDS: usize = 16;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn shards<T: Default>() -> Box<[Mutex<T>]> {
    (0..SHARDS).map(|_| Mutex::new(T::default())).collect()
}

/// Message statuses the simulator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Scheduled,
    Queued,
    Routed,
    Sent,
    Delivered,
    Read,
    Failed,
    Blocked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "SCHEDULED",
            Status::Queued => "QUEUED",
            Status::Routed => "ROUTED",
            Status::Sent => "SENT",
            Status::Delivered => "DELIVERED",
            Status::Read => "READ",
            Status::Failed => "FAILED",
            Status::Blocked => "BLOCKED",
        }
    }

    /// The webhook event name, e.g. `message.delivered`.
    pub fn event(self) -> &'static str {
        match self {
            Status::Scheduled => "message.scheduled",
            Status::Queued => "message.queued",
            Status::Routed => "message.routed",
            Status::Sent => "message.sent",
            Status::Delivered => "message.delivered",
            Status::Read => "message.read",
            Status::Failed => "message.failed",
            Status::Blocked => "message.blocked",
        }
    }
}

/// Why a message ended FAILED or BLOCKED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reason {
    pub code: &'static str,
    pub text: &'static str,
}

/// What never changes about a message; shared by the store and its lifecycle.
#[derive(Debug)]
pub(crate) struct MessageMeta {
    pub id: Uuid,
    pub account: usize,
    pub account_id: Arc<str>,
    pub to: String,
    /// The channel it goes out on (the auto channel when Sent picks).
    pub channel: &'static str,
    pub template_id: Option<Arc<str>>,
    pub template_name: Option<Arc<str>>,
    pub body: Option<Arc<str>>,
    pub subject: Option<Arc<str>>,
    pub media_urls: Option<Arc<[String]>>,
    pub request_id: Arc<str>,
    pub created_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Record {
    meta: Arc<MessageMeta>,
    status: Status,
    events: Vec<(Status, DateTime<Utc>, Option<Reason>)>,
    finished_at: Option<Instant>,
}

/// All messages, by id.
#[derive(Debug)]
pub(crate) struct MessageStore {
    shards: Box<[Mutex<HashMap<Uuid, Record>>]>,
}

impl MessageStore {
    pub fn new() -> Self {
        MessageStore { shards: shards() }
    }

    fn shard(&self, id: &Uuid) -> &Mutex<HashMap<Uuid, Record>> {
        &self.shards[(id.as_u128() as usize) % SHARDS]
    }

    pub fn insert(&self, meta: Arc<MessageMeta>, status: Status) {
        let record = Record {
            events: vec![(status, meta.created_at, None)],
            meta,
            status,
            finished_at: None,
        };
        lock(self.shard(&record.meta.id)).insert(record.meta.id, record);
    }

    /// Records a status change; false when the message is gone.
    pub fn transition(
        &self,
        id: &Uuid,
        status: Status,
        at: DateTime<Utc>,
        reason: Option<Reason>,
    ) -> bool {
        match lock(self.shard(id)).get_mut(id) {
            Some(record) => {
                record.status = status;
                record.events.push((status, at, reason));
                true
            }
            None => false,
        }
    }

    /// Marks the end of a message's lifecycle; retention counts from here.
    pub fn finish(&self, id: &Uuid) {
        if let Some(record) = lock(self.shard(id)).get_mut(id) {
            record.finished_at = Some(Instant::now());
        }
    }

    /// The message as `GET /v3/messages/{id}` shows it, if it belongs to `account`.
    pub fn info(&self, id: &Uuid, account: usize) -> Option<MessageInfo> {
        let shard = lock(self.shard(id));
        let record = shard.get(id).filter(|r| r.meta.account == account)?;
        let meta = &record.meta;
        let reason = record
            .events
            .last()
            .and_then(|(status, _, reason)| reason.filter(|_| *status == record.status));
        let mms = meta.channel == "mms";
        Some(MessageInfo {
            id: meta.id.to_string(),
            status: record.status.as_str(),
            channel: meta.channel,
            phone: meta.to.clone(),
            direction: "outbound",
            customer_id: meta.account_id.to_string(),
            template_id: meta.template_id.as_deref().map(str::to_owned),
            template_name: meta.template_name.as_deref().map(str::to_owned),
            message_body: MessageBody {
                content: meta.body.as_deref().map(str::to_owned),
                subject: meta.subject.as_deref().filter(|_| mms).map(str::to_owned),
                media: meta
                    .media_urls
                    .as_deref()
                    .filter(|_| mms)
                    .map(|urls| urls.iter().map(|url| Media { url: url.clone() }).collect()),
            },
            created_at: rfc3339(meta.created_at),
            events: record
                .events
                .iter()
                .map(|(status, at, reason)| EventEntry {
                    status: status.as_str(),
                    timestamp: rfc3339(*at),
                    reason_code: reason.map(|r| r.code),
                    reason: reason.map(|r| r.text),
                })
                .collect(),
            reason_code: reason.map(|r| r.code),
            reason: reason.map(|r| r.text),
            scheduled_at: meta.scheduled_at.map(rfc3339),
        })
    }

    /// Forgets messages whose lifecycle ended more than `retention` ago.
    pub fn prune(&self, retention: Duration) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            let before = shard.len();
            shard.retain(|_, record| {
                record
                    .finished_at
                    .is_none_or(|at| now.duration_since(at) < retention)
            });
            removed += before - shard.len();
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct IdemKey {
    account: usize,
    key: Box<str>,
}

#[derive(Debug, Default)]
struct IdemEntry {
    state: IdemState,
    /// Accepted sends under this key, ever (survives TTL expiry).
    accepted: u32,
}

#[derive(Debug, Default)]
enum IdemState {
    #[default]
    Free,
    InFlight,
    Done {
        status: StatusCode,
        body: Bytes,
        expires: Instant,
    },
}

/// Outcome of looking an idempotency key up.
#[derive(Debug)]
pub(crate) enum Begin<'a> {
    /// First use (or expired): the caller processes the request.
    Proceed(InFlight<'a>),
    /// A completed answer to replay.
    Replay { status: StatusCode, body: Bytes },
    /// The same key is being processed right now.
    Conflict,
}

/// Completed idempotent answers, per API key; keys in flight block duplicates.
#[derive(Debug)]
pub(crate) struct IdempotencyCache {
    ttl: Duration,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<IdemKey, IdemEntry>>]>,
}

impl IdempotencyCache {
    pub fn new(ttl: Duration) -> Self {
        IdempotencyCache {
            ttl,
            hasher: RandomState::new(),
            shards: shards(),
        }
    }

    fn shard(&self, key: &IdemKey) -> &Mutex<HashMap<IdemKey, IdemEntry>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    pub fn begin(&self, account: usize, key: &str) -> Begin<'_> {
        let key = IdemKey {
            account,
            key: key.into(),
        };
        let mut shard = lock(self.shard(&key));
        let entry = shard.entry(key.clone()).or_default();
        match &entry.state {
            IdemState::InFlight => return Begin::Conflict,
            IdemState::Done {
                status,
                body,
                expires,
            } if *expires > Instant::now() => {
                return Begin::Replay {
                    status: *status,
                    body: body.clone(),
                };
            }
            IdemState::Done { .. } | IdemState::Free => entry.state = IdemState::InFlight,
        }
        drop(shard);
        Begin::Proceed(InFlight {
            cache: self,
            key: Some(key),
        })
    }

    /// Frees the bodies of expired answers (their keys' counts stay).
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            let mut shard = lock(shard);
            for entry in shard.values_mut() {
                if matches!(entry.state, IdemState::Done { expires, .. } if expires <= now) {
                    entry.state = IdemState::Free;
                }
            }
        }
    }

    fn release(&self, key: &IdemKey) {
        let mut shard = lock(self.shard(key));
        if let Some(entry) = shard.get_mut(key) {
            if matches!(entry.state, IdemState::InFlight) {
                entry.state = IdemState::Free;
            }
            if entry.accepted == 0 && matches!(entry.state, IdemState::Free) {
                shard.remove(key);
            }
        }
    }
}

/// How many times a key had been accepted before the send that just completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptedBefore(pub u32);

/// A key marked in flight; freed on drop unless completed.
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    cache: &'a IdempotencyCache,
    key: Option<IdemKey>,
}

impl InFlight<'_> {
    /// Stores the answer for replay and counts the acceptance.
    pub fn complete(mut self, status: StatusCode, body: Bytes) -> AcceptedBefore {
        let key = self.key.take().expect("completed once");
        let mut shard = lock(self.cache.shard(&key));
        let entry = shard.entry(key).or_default();
        let before = entry.accepted;
        entry.accepted += 1;
        entry.state = IdemState::Done {
            status,
            body,
            expires: Instant::now() + self.cache.ttl,
        };
        AcceptedBefore(before)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cache.release(&key);
        }
    }
}

/// `X-RateLimit-*` values of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

/// Limit reported when no real limit is configured.
const NOMINAL_LIMIT: u64 = 1_000_000;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Window {
    start: Instant,
    used: u64,
}

/// Fixed one-minute windows of messages per API key.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// 0 = unlimited (headers then show a nominal limit).
    limit: u64,
    windows: Box<[Mutex<Window>]>,
}

impl RateLimiter {
    pub fn new(limit: u32, accounts: usize) -> Self {
        let now = Instant::now();
        RateLimiter {
            limit: u64::from(limit),
            windows: (0..accounts)
                .map(|_| {
                    Mutex::new(Window {
                        start: now,
                        used: 0,
                    })
                })
                .collect(),
        }
    }

    fn current(&self, account: usize) -> MutexGuard<'_, Window> {
        let mut window = lock(&self.windows[account]);
        let now = Instant::now();
        if now.duration_since(window.start) >= WINDOW {
            window.start = now;
            window.used = 0;
        }
        window
    }

    fn info(&self, window: &Window) -> RateInfo {
        let limit = if self.limit == 0 {
            NOMINAL_LIMIT
        } else {
            self.limit
        };
        let left = WINDOW.saturating_sub(window.start.elapsed());
        RateInfo {
            limit,
            remaining: limit.saturating_sub(window.used),
            reset_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
        }
    }

    /// The headers for an answer that consumed nothing (`None` account: nominal).
    pub fn peek(&self, account: Option<usize>) -> RateInfo {
        match account {
            Some(account) => self.info(&self.current(account)),
            None => RateInfo {
                limit: if self.limit == 0 {
                    NOMINAL_LIMIT
                } else {
                    self.limit
                },
                remaining: if self.limit == 0 {
                    NOMINAL_LIMIT
                } else {
                    self.limit
                },
                reset_secs: WINDOW.as_secs(),
            },
        }
    }

    /// Takes `messages` from the window, or says how long to wait. An empty
    /// window always admits one send, so an oversized send is not refused forever.
    pub fn take(&self, account: usize, messages: u64) -> Result<RateInfo, RateInfo> {
        let mut window = self.current(account);
        if self.limit > 0 && window.used > 0 && window.used + messages > self.limit {
            return Err(self.info(&window));
        }
        window.used += messages;
        Ok(self.info(&window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_states() {
        let cache = IdempotencyCache::new(Duration::from_secs(60));
        let Begin::Proceed(first) = cache.begin(0, "k") else {
            panic!("fresh key")
        };
        assert!(matches!(cache.begin(0, "k"), Begin::Conflict));
        // Keys are scoped per account.
        assert!(matches!(cache.begin(1, "k"), Begin::Proceed(_)));
        assert_eq!(
            first.complete(StatusCode::ACCEPTED, Bytes::from_static(b"x")),
            AcceptedBefore(0)
        );
        match cache.begin(0, "k") {
            Begin::Replay { status, body } => {
                assert_eq!(status, StatusCode::ACCEPTED);
                assert_eq!(&body[..], b"x");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn abandoned_key_is_freed_and_expired_key_counts_twice() {
        let cache = IdempotencyCache::new(Duration::ZERO);
        drop(cache.begin(0, "k"));
        let Begin::Proceed(again) = cache.begin(0, "k") else {
            panic!("freed on drop")
        };
        assert_eq!(
            again.complete(StatusCode::ACCEPTED, Bytes::new()),
            AcceptedBefore(0)
        );
        cache.sweep();
        let Begin::Proceed(expired) = cache.begin(0, "k") else {
            panic!("expired")
        };
        assert_eq!(
            expired.complete(StatusCode::ACCEPTED, Bytes::new()),
            AcceptedBefore(1)
        );
    }

    #[test]
    fn rate_window() {
        let limiter = RateLimiter::new(3, 1);
        assert_eq!(limiter.take(0, 2).unwrap().remaining, 1);
        assert!(limiter.take(0, 2).is_err());
        assert_eq!(limiter.take(0, 1).unwrap().remaining, 0);
        let unlimited = RateLimiter::new(0, 1);
        assert!(unlimited.take(0, 10_000_000).is_ok());
    }
}
