//! Domain types that cannot hold invalid values: constructing one validates it.

/// An enum spelled as text (in JSON, in Postgres, in logs): each variant's
/// text is written once, and `as_str`, `FromStr`, `Display`, `ALL` and its
/// serde name all come from it.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        // utoipa reads no per-variant rename that a macro wrote, so the
        // schema takes this one; every text is its variant in lowercase
        // (`gateway/src/openapi.rs` tests that the two agree).
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!("Must be one of: {}.", [$($text),+].join(", "))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

mod channel;
mod ids;
mod phone;
mod provider;
mod role;
mod source;
mod sql;
mod status;
mod template;

pub use channel::Channel;
pub use ids::MessageId;
pub use phone::PhoneNumber;
pub use provider::Provider;
pub use role::Role;
pub use source::EventSource;
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
