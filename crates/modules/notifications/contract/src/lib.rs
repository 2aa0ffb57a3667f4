//! What other modules may know of `notifications`: how many notifications a user was sent.
//! The module mostly listens (to `UserRegistered`, `OrderConfirmed`, `OrderCancelled`).

use serde::{Deserialize, Serialize};

pub use banyan_users_contract::UserId;

/// The notifications sent to a user, newest first, at most `limit` (1 to 100).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListNotifications {
    pub user_id: UserId,
    pub limit: u32,
}

banyan_message::request!(
    ListNotifications,
    "notifications.list_notifications.v1",
    Vec<NotificationView>,
    idempotent
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    pub notification_id: uuid::Uuid,
    pub user_id: UserId,
    /// `welcome`, `order_confirmed`, `order_cancelled`.
    pub kind: String,
    pub subject: String,
    pub body: String,
    /// The message that caused it: one notification per event, however often it arrives.
    pub source_message_id: uuid::Uuid,
    pub sent_at_ms: i64,
}
