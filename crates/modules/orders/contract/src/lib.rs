//! What other modules may know of `orders`: the order events of the checkout saga and the
//! queries that read orders. Nothing else.

use banyan_message::Money;
use serde::{Deserialize, Serialize};

pub use banyan_catalog_contract::ProductId;
pub use banyan_users_contract::UserId;

banyan_message::define_id!(
    /// Identifies an order. Inventory uses it as the reservation id, payments as the charge's
    /// idempotency key.
    OrderId
);

/// One line of an order, with the product's name and unit price as they were when it was
/// ordered (a snapshot: later price changes do not touch it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderLine {
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub product_id: ProductId,
    pub name: String,
    pub unit_price: Money,
    pub quantity: i64,
}

/// A customer placed an order; it is `pending` until the saga ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    /// What pays: a token of the simulated provider (see payments).
    pub payment_method: String,
    /// Whether the order was made from the customer's cart: only then is the cart cleared
    /// (of the ordered quantities).
    pub from_cart: bool,
}

banyan_message::event!(OrderPlaced, "orders.order_placed.v1", |e| e.order_id.0);

/// The order is paid and its stock is held: it is `confirmed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub total: Money,
}

banyan_message::event!(OrderConfirmed, "orders.order_confirmed.v1", |e| e
    .order_id
    .0);

/// The order is `cancelled`; `reason` says why (`out_of_stock`, `payment_declined`,
/// `payment_over_limit`, `payment_failed`, `cancelled_by_admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub reason: String,
}

banyan_message::event!(OrderCancelled, "orders.order_cancelled.v1", |e| e
    .order_id
    .0);

/// An order: as other modules get it on the bus, and as the HTTP API shows it wherever an
/// order appears (`GET /api/v1/orders/{id}`, the lists, a user's overview): one shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderSummary {
    #[serde(rename = "id")]
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub order_id: OrderId,
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub user_id: UserId,
    /// `pending`, `confirmed`, `cancelled`, `shipped` or `delivered`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^(pending|confirmed|cancelled|shipped|delivered)$")
    )]
    pub status: String,
    /// Why it was cancelled (`out_of_stock`, `payment_declined`, `payment_over_limit`,
    /// `payment_failed`, `cancelled_by_admin`); `null` unless it was.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(out_of_stock|payment_declined|payment_over_limit|payment_failed|cancelled_by_admin)$"
        )
    )]
    pub cancel_reason: Option<String>,
    pub lines: Vec<OrderSummaryLine>,
    pub total: Money,
    /// The simulated provider's token it is paid with.
    pub payment_method: String,
    /// Whether it was ordered from the cart.
    pub from_cart: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// One line of an [`OrderSummary`]: the line as ordered, and what it came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderSummaryLine {
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub product_id: ProductId,
    pub name: String,
    pub unit_price: Money,
    pub quantity: i64,
    /// `unit_price` × `quantity`.
    pub line_total: Money,
}

/// One order. Rejected with `not_found` for an unknown id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetOrder {
    pub order_id: OrderId,
}

banyan_message::request!(GetOrder, "orders.get_order.v1", OrderSummary, idempotent);

/// A user's orders, newest first, at most `limit` (1 to 100).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOrders {
    pub user_id: UserId,
    pub limit: u32,
}

banyan_message::request!(
    ListOrders,
    "orders.list_orders.v1",
    Vec<OrderSummary>,
    idempotent
);
