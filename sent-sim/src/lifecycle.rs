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
        let event = Event::message(meta, status, at, reason);
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
