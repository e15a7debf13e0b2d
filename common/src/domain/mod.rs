//! Domain types that cannot hold invalid values: constructing one validates it.

mod channel;
mod ids;
mod phone;
mod sql;
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

/// [`api_time`] for `#[serde(serialize_with = ...)]`.
pub fn serialize_api_time<S: serde::Serializer>(
    at: &chrono::DateTime<chrono::Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&api_time(*at))
}

/// [`api_time`] of an optional time, `null` when absent.
pub fn serialize_api_time_opt<S: serde::Serializer>(
    at: &Option<chrono::DateTime<chrono::Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize_api_time(at, serializer),
        None => serializer.serialize_none(),
    }
}
