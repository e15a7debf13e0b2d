//! Property-based tests of every request parser, driven through the real
//! router: one gateway per test (in process, own database and Redis prefix),
//! many generated requests per gateway.
//!
//! The properties, for every generated request:
//! - never a 5xx (a panic would be a 500 from the catch-panic layer);
//! - every answer is JSON, and a 4xx has the contract's shape (`error` and
//!   `code`, both non-empty strings);
//! - a 2xx only when the input was valid, and a 2xx whenever it was; validity
//!   is decided by an oracle written here from the contract, independently
//!   of `validation.rs`.
//!
//! `PROPTEST_CASES` sets the number of cases of every property (default a
//! few hundred, so the file runs in seconds inside `cargo nextest run`).

#[path = "../support/mod.rs"]
mod support;

mod bodies;
mod generators;
mod harness;
mod headers;
mod oracle;
mod pure;
mod webhooks;
