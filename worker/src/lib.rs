//! The worker: drains the send queue and calls Sent, applies webhook events
//! from the inbox, polls Sent for messages whose webhooks are overdue,
//! delivers status callbacks, and re-enqueues stalled messages.

pub mod app;
mod batches;
pub mod callbacks;
pub mod deliveries;
pub mod forward;
pub mod inbox;
pub mod listen;
pub mod metrics;
pub mod poll;
pub mod purge;
pub mod reconcile;
pub mod redrive;
pub mod retention;
pub mod rollup;
pub mod send;
pub mod webhook_client;

pub use app::run_worker;
