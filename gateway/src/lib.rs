//! The HTTP gateway: validates, stores and enqueues messages, answers 202.

pub mod accept;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client_ip;
pub mod error;
pub mod inbox_writer;
pub mod json;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod server;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod validation;

/// Connects to the dependencies, waiting a while for them at start-up (as in
/// a compose stack where they start together), and migrates the database.
/// Shared with the worker.
pub use common::startup::connect;

pub use server::{longest_shutdown, serve};
