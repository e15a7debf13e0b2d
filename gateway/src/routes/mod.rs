pub mod dashboard;
pub mod events;
pub mod health;
pub mod messages;
pub mod webhooks;
