pub mod health;
pub mod messages;
pub mod webhooks;
