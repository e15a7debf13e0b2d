pub mod dashboard;
pub mod events;
pub mod health;
pub mod lookup;
pub mod messages;
pub mod webhooks;
