pub mod dashboard;
pub mod health;
pub mod messages;
pub mod webhooks;
