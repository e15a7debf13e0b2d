use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// Our id of a message: a ULID, so ids sort by creation time and are valid
/// as Sent's `Idempotency-Key` (`[A-Za-z0-9_-]`) as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(Ulid);

impl MessageId {
    pub fn new() -> MessageId {
        MessageId(Ulid::generate())
    }

    /// The ULID itself (a send job's task id is the message's).
    pub fn ulid(self) -> Ulid {
        self.0
    }

    /// An id below that of every message created at `at` or later, a minute
    /// early for the skew between the gateways' clocks: `id >= bound` lets
    /// Postgres skip the weeks of `messages` before it and stop an id-ordered
    /// scan there.
    pub fn lower_bound(at: chrono::DateTime<chrono::Utc>) -> MessageId {
        let early = at - chrono::Duration::minutes(1);
        MessageId(Ulid::from_parts(early.timestamp_millis().max(0) as u64, 0))
    }
}

impl Default for MessageId {
    fn default() -> Self {
        MessageId::new()
    }
}

impl FromStr for MessageId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(MessageId)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
