//! What happens to a message after the 202: its status steps and the
//! webhook each step emits.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::Sim;
use crate::faults::chance;
use crate::stats::bump;
use crate::store::{MessageMeta, Reason, Status};
use crate::util::sleep_or_cancel;
use crate::webhook::{Event, deliver};

/// Carrier-side failure (recipients ending in `0000`, and `SENT_SIM_FAIL_RATE`).
pub(crate) const DELIVERY_FAILED: Reason = Reason {
    code: "DELIVERY_007",
    text: "The carrier could not deliver the message",
};
/// Account precondition (recipients ending in `9999`).
pub(crate) const BLOCKED_PRECONDITION: Reason = Reason {
    code: "BUSINESS_029",
    text: "Message blocked: an account precondition is not met",
};
/// Insufficient balance discovered after the 202 (template `sim_async_no_balance`).
pub(crate) const BLOCKED_BALANCE: Reason = Reason {
    code: "BUSINESS_003",
    text: "Message blocked: insufficient balance",
};

/// An outcome chosen by a magic input rather than by the configured mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forced {
    BlockedBalance,
}

/// The statuses a message will go through, first one included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub steps: Vec<(Status, Option<Reason>)>,
    /// Deliver the last two events in swapped order.
    pub reorder: bool,
}

pub(crate) fn plan(sim: &Sim, meta: &MessageMeta, forced: Option<Forced>) -> Plan {
    let mut steps = Vec::with_capacity(6);
    if meta.scheduled_at.is_some() {
        steps.push((Status::Scheduled, None));
    }
    steps.push((Status::Queued, None));
    let blocked = match forced {
        Some(Forced::BlockedBalance) => Some(BLOCKED_BALANCE),
        None if meta.to.ends_with("9999") => Some(BLOCKED_PRECONDITION),
        None => None,
    };
    if let Some(reason) = blocked {
        steps.push((Status::Blocked, Some(reason)));
    } else if meta.to.ends_with("0000") {
        steps.extend([
            (Status::Routed, None),
            (Status::Sent, None),
            (Status::Failed, Some(DELIVERY_FAILED)),
        ]);
    } else if chance(sim.config.fail_rate) {
        steps.push((Status::Routed, None));
        if rand::random::<bool>() {
            steps.push((Status::Sent, None));
        }
        steps.push((Status::Failed, Some(DELIVERY_FAILED)));
    } else {
        steps.extend([
            (Status::Routed, None),
            (Status::Sent, None),
            (Status::Delivered, None),
        ]);
        if matches!(meta.channel, "whatsapp" | "rcs") && chance(sim.config.read_rate) {
            steps.push((Status::Read, None));
        }
    }
    Plan {
        steps,
        reorder: chance(sim.faults.get().reorder_webhook),
    }
}

/// Stores the message with its first status and runs its lifecycle in the background.
pub(crate) fn start(sim: &Arc<Sim>, meta: Arc<MessageMeta>, forced: Option<Forced>) {
    let plan = plan(sim, &meta, forced);
    sim.store.insert(Arc::clone(&meta), plan.steps[0].0);
    let sim = Arc::clone(sim);
    tokio::spawn(async move { run(&sim, &meta, plan).await });
}

async fn run(sim: &Arc<Sim>, meta: &MessageMeta, plan: Plan) {
    let last = plan.steps.len() - 1;
    let mut held: Option<Event> = None;
    for (index, &(status, reason)) in plan.steps.iter().enumerate() {
        let at = if index == 0 {
            meta.created_at
        } else {
            let wait = match (plan.steps[index - 1].0, meta.scheduled_at) {
                (Status::Scheduled, Some(when)) => (when - Utc::now()).to_std().unwrap_or_default(),
                _ => sim.config.step_delay,
            };
            if wait > Duration::ZERO && !sleep_or_cancel(wait, &sim.cancel).await {
                return;
            }
            let at = Utc::now();
            if !sim.store.transition(&meta.id, status, at, reason) {
                return;
            }
            at
        };
        if sim.webhooks.url().is_none() {
            continue;
        }
        let event = Event::message(meta, status, at, reason, sim.config.webhook_envelope);
        if plan.reorder && last > 0 && index == last - 1 {
            held = Some(event);
            continue;
        }
        deliver(sim, event).await;
        if let Some(late) = held.take() {
            bump(&sim.counters.fault_reorder_webhook);
            deliver(sim, late).await;
        }
    }
    sim.store.finish(&meta.id);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::SimConfig;

    /// A scheduled message is held (SCHEDULED) until its time, then goes
    /// through the normal lifecycle. (Over HTTP the earliest time is a minute ahead.)
    #[tokio::test]
    async fn scheduled_message_moves_on_at_its_time() {
        let sim = Arc::new(
            Sim::new(SimConfig {
                step_delay: Duration::from_millis(5),
                record: None,
                ..SimConfig::default()
            })
            .unwrap(),
        );
        let created_at = Utc::now();
        let meta = Arc::new(MessageMeta {
            id: Uuid::new_v4(),
            account: 0,
            account_id: "acct".into(),
            to: "+14155550123".into(),
            channel: "sms",
            template_id: None,
            template_name: None,
            body: Some("hi".into()),
            subject: None,
            media_urls: None,
            request_id: "req".into(),
            created_at,
            scheduled_at: Some(created_at + chrono::Duration::milliseconds(300)),
        });
        start(&sim, Arc::clone(&meta), None);
        let status = || sim.store.info(&meta.id, 0).unwrap().status;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(status(), "SCHEDULED");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while status() != "DELIVERED" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stuck at {}",
                status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let info = sim.store.info(&meta.id, 0).unwrap();
        let history: Vec<&str> = info.events.iter().map(|e| e.status).collect();
        assert_eq!(
            history,
            ["SCHEDULED", "QUEUED", "ROUTED", "SENT", "DELIVERED"]
        );
        let queued_at = chrono::DateTime::parse_from_rfc3339(&info.events[1].timestamp).unwrap();
        // Timestamps are written to the millisecond (util.rs), so compare
        // with the scheduled time cut the same way.
        use chrono::SubsecRound;
        assert!(
            queued_at >= meta.scheduled_at.unwrap().trunc_subsecs(3),
            "released no sooner than its time"
        );
        assert!(info.scheduled_at.is_some());
        sim.cancel.cancel();
    }
}
