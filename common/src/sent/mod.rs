pub mod classify;
pub mod client;
pub mod wire;
