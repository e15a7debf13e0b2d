//! Domain types that cannot hold invalid values: constructing one validates it.

mod channel;
mod ids;
mod phone;
mod status;
mod template;

pub use channel::Channel;
pub use ids::MessageId;
pub use phone::PhoneNumber;
pub use status::MessageStatus;
pub use template::{TEMPLATE_FIELD_MAX, TemplateRef};
