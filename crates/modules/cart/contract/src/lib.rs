//! What other modules may know of `cart`: a customer's cart, read when an order is made from
//! it. A customer has one cart, named by their user id.

use banyan_message::{Message, Request};
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

impl Message for GetCart {
    const SUBJECT: &'static str = "cart.get_cart.v1";
}

impl Request for GetCart {
    type Response = CartContents;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartContents {
    pub user_id: UserId,
    pub lines: Vec<CartLine>,
}
