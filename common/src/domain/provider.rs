use serde::{Deserialize, Serialize};

text_enum! {
    /// Who sent a webhook: each has its own signature scheme and route.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum Provider {
        Sent = "sent",
        Stripe = "stripe",
        Telegram = "telegram",
    }
}
