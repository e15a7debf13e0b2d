//! The domain types as Postgres `text` (and `text[]`), so records carry them
//! from the database to the route and binds take them as they are.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use super::{Channel, EventSource, MessageId, MessageStatus, PhoneNumber, Provider, Role};

macro_rules! text {
    ($($ty:ty => $parse:expr),+ $(,)?) => {$(
        impl Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $ty {
            fn array_type_info() -> PgTypeInfo {
                <&str as PgHasArrayType>::array_type_info()
            }
        }

        impl<'r> Decode<'r, Postgres> for $ty {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                let parse: fn(&str) -> Result<$ty, String> = $parse;
                Ok(parse(text)?)
            }
        }

        impl Encode<'_, Postgres> for $ty {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                let text = self.to_string();
                <&str as Encode<Postgres>>::encode_by_ref(&text.as_str(), buf)
            }
        }
    )+};
}

text! {
    MessageId => |s| s.parse().map_err(|e| format!("message id {s:?}: {e}")),
    MessageStatus => |s| s.parse(),
    Channel => |s| s.parse(),
    Provider => |s| s.parse(),
    EventSource => |s| s.parse(),
    Role => |s| s.parse(),
    PhoneNumber => |s| PhoneNumber::parse(s).map_err(|e| e.to_owned()),
}
