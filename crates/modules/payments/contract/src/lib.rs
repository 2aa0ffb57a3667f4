//! What other modules may know of `payments`: the outcome of charging an order.
//!
//! Order ids are plain UUIDs here (orders' contract depends on this one, so this one cannot
//! depend on orders').

use banyan_message::Money;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

banyan_message::define_id!(
    /// Identifies a payment (one per order at most).
    PaymentId
);

/// The order's amount was charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCompleted {
    pub payment_id: PaymentId,
    pub order_id: Uuid,
    pub amount: Money,
}

banyan_message::event!(PaymentCompleted, "payments.payment_completed.v1", |e| e
    .order_id);

/// The charge was refused; nothing was taken. `reason`: `payment_declined` (the declining test
/// method), `payment_over_limit` (above the provider's amount limit), `payment_failed` (the
/// provider failed: the chaos failure rate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment_id: PaymentId,
    pub order_id: Uuid,
    pub amount: Money,
    pub reason: String,
}

banyan_message::event!(PaymentFailed, "payments.payment_failed.v1", |e| e.order_id);

/// The payment of an order. Rejected with `not_found` when the order has none (yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPayment {
    pub order_id: Uuid,
}

banyan_message::request!(
    GetPayment,
    "payments.get_payment.v1",
    PaymentView,
    idempotent
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentView {
    pub payment_id: PaymentId,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: Money,
    /// `completed` or `failed`.
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at_ms: i64,
}
