//! Shared building blocks of the gateway, the worker and the simulator:
//! configuration, domain types, storage, the queue, the Sent client and
//! webhook signatures.

pub mod backoff;
pub mod config;
pub mod domain;
pub mod group_commit;
#[cfg(feature = "http-server")]
pub mod http_server;
pub mod metrics;
pub mod outbound;
pub mod queue;
pub mod rate;
pub mod redis_conn;
pub mod sent;
pub mod shutdown;
pub mod signature;
pub mod startup;
pub mod store;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;
