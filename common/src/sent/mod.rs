//! Sent's v3 API: wire types, the client and how its answers are classified.

pub mod wire;
