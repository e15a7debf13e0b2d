use serde::{Deserialize, Serialize};

text_enum! {
    /// Where a message is in its life. Statuses are ordered by progress; a status
    /// only ever moves forward, so events that arrive out of order (a late `sent`
    /// after `delivered`) are recorded in the timeline but do not change it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum MessageStatus {
        Queued = "queued",
        Scheduled = "scheduled",
        Sending = "sending",
        Accepted = "accepted",
        Sent = "sent",
        Delivered = "delivered",
        Read = "read",
        Failed = "failed",
        Blocked = "blocked",
        Filtered = "filtered",
        Cancelled = "cancelled",
    }
}

impl MessageStatus {
    /// Progress rank. Terminal failures outrank every success short of
    /// `delivered`: a message Sent reports failed after `sent` is failed, but a
    /// stray `failed` after `delivered` (a reroute) does not undo delivery.
    /// `scheduled` ranks above `accepted`: Sent reports a hold
    /// (`message.scheduled`) after it has accepted the message. A message the
    /// gateway holds until its time is `scheduled` too, and leaves it for
    /// `sending` by the worker's hand-off, not by rank.
    /// The same rank lives in SQL (`status_rank` in the migrations) so that the
    /// guarded UPDATE and this function always agree; a test checks both.
    pub fn rank(self) -> u8 {
        match self {
            MessageStatus::Queued => 0,
            MessageStatus::Sending => 1,
            MessageStatus::Accepted => 2,
            MessageStatus::Scheduled => 3,
            MessageStatus::Sent => 4,
            MessageStatus::Failed
            | MessageStatus::Blocked
            | MessageStatus::Filtered
            | MessageStatus::Cancelled => 5,
            MessageStatus::Delivered => 6,
            MessageStatus::Read => 7,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MessageStatus::Read
                | MessageStatus::Failed
                | MessageStatus::Blocked
                | MessageStatus::Filtered
                | MessageStatus::Cancelled
        )
    }

    /// Whether moving from `self` to `next` is progress (and so applied).
    pub fn can_become(self, next: MessageStatus) -> bool {
        next.rank() > self.rank()
    }

    /// Sent's status name (`DELIVERED`, ...) to ours. `ROUTED` and `QUEUED` at
    /// Sent mean Sent has the message: for us that is `accepted`.
    pub fn from_sent(status: &str) -> Option<MessageStatus> {
        Some(match status.to_ascii_uppercase().as_str() {
            "QUEUED" | "ROUTED" | "ACCEPTED" | "PENDING" => MessageStatus::Accepted,
            "SCHEDULED" => MessageStatus::Scheduled,
            "SENT" => MessageStatus::Sent,
            "DELIVERED" => MessageStatus::Delivered,
            "READ" => MessageStatus::Read,
            "FAILED" | "UNDELIVERED" => MessageStatus::Failed,
            "BLOCKED" => MessageStatus::Blocked,
            "FILTERED" => MessageStatus::Filtered,
            "CANCELLED" | "CANCELED" => MessageStatus::Cancelled,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;
    use super::*;

    #[test]
    fn a_late_sent_does_not_undo_delivered() {
        assert!(Sent.can_become(Delivered));
        assert!(!Delivered.can_become(Sent));
        assert!(!Read.can_become(Delivered));
        assert!(!Delivered.can_become(Failed));
    }

    #[test]
    fn failure_after_sent_is_applied() {
        assert!(Sent.can_become(Failed));
        assert!(Accepted.can_become(Blocked));
        assert!(!Failed.can_become(Sent));
        assert!(!Failed.can_become(Blocked));
    }

    #[test]
    fn a_hold_at_sent_shows_after_acceptance_and_ends_when_sent() {
        assert!(Accepted.can_become(Scheduled));
        assert!(Scheduled.can_become(Sent));
        assert!(!Sent.can_become(Scheduled));
        assert!(Scheduled.can_become(Cancelled));
    }

    #[test]
    fn every_order_of_events_ends_in_the_highest_rank() {
        // Applying statuses in any order with can_become ends at the max rank.
        let events = [Accepted, Sent, Delivered, Read];
        for perm in permutations(&events) {
            let mut current = Queued;
            for next in perm {
                if current.can_become(next) {
                    current = next;
                }
            }
            assert_eq!(current, Read);
        }
    }

    fn permutations(items: &[MessageStatus]) -> Vec<Vec<MessageStatus>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut perm in permutations(&rest) {
                perm.insert(0, first);
                out.push(perm);
            }
        }
        out
    }

    #[test]
    fn names_round_trip() {
        for status in MessageStatus::ALL {
            assert_eq!(status.as_str().parse::<MessageStatus>().unwrap(), status);
        }
        assert_eq!(MessageStatus::from_sent("DELIVERED"), Some(Delivered));
        assert_eq!(MessageStatus::from_sent("ROUTED"), Some(Accepted));
        assert_eq!(MessageStatus::from_sent("WHATEVER"), None);
    }
}
