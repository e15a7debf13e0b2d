use serde::{Deserialize, Serialize};

text_enum! {
    /// A channel Sent can deliver on. `sent` asks Sent to choose.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum Channel {
        Sms = "sms",
        Whatsapp = "whatsapp",
        Rcs = "rcs",
        Mms = "mms",
        Sent = "sent",
    }
}
