use serde::{Deserialize, Serialize};

text_enum! {
    /// What an API key may see beyond its own messages.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum Role {
        /// A client: its own messages only (the default).
        #[default]
        Tenant = "tenant",
        /// An operator: every client's messages on the status page.
        Admin = "admin",
    }
}
