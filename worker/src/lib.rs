//! The worker: drains the send queue and calls Sent, applies webhook events
//! from the inbox, delivers status callbacks, and re-enqueues stalled messages.

pub mod callbacks;
pub mod inbox;
