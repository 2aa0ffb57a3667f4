//! What other modules may know of `cart`: a customer's cart, read when an order is made from
//! it. A customer has one cart, named by their user id.

use serde::{Deserialize, Serialize};

pub use banyan_catalog_contract::ProductId;
pub use banyan_users_contract::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub product_id: ProductId,
    pub quantity: i64,
}

/// A customer's cart: its lines, oldest first; empty if they never added anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetCart {
    pub user_id: UserId,
}

banyan_message::request!(GetCart, "cart.get_cart.v1", CartContents, idempotent);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartContents {
    pub user_id: UserId,
    pub lines: Vec<CartLine>,
}
