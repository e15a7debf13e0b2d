//! Sending queued messages to Sent: one attempt (`attempt`), and the apalis
//! worker that makes an attempt per [`SendJob`](common::queue::SendJob)
//! (`runner`).

mod attempt;
mod runner;

pub use attempt::{BUDGET_KEY, JobError, Processed, Sender};
pub use runner::{run, storage_config};
