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

/// A time as the API writes it (responses, callbacks): RFC 3339 in UTC with
/// milliseconds, `2026-11-25T15:00:03.120Z`.
pub fn api_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
