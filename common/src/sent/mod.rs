pub mod classify;
pub mod client;
pub mod webhook;
pub mod wire;
