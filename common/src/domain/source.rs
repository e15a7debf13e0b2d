use serde::{Deserialize, Serialize};

text_enum! {
    /// Who reported an event of a message's timeline.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
    pub enum EventSource {
        /// The gateway accepted, scheduled or cancelled the message.
        Gateway = "gateway",
        /// A worker's attempt to hand it to Sent.
        Worker = "worker",
        /// A webhook from Sent.
        Sent = "sent",
        /// The worker asked Sent for the status its webhooks had not told.
        Poll = "poll",
        /// An operator's command (`worker redrive`).
        Operator = "operator",
    }
}
