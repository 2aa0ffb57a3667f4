//! What other modules may know of `catalog`: its requests and its events. Nothing else.

use banyan_message::Money;
use serde::{Deserialize, Serialize};

banyan_message::define_id!(
    /// Identifies a product.
    ProductId
);

/// A new product is in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCreated {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub category: String,
    pub price: Money,
}

banyan_message::event!(ProductCreated, "catalog.product_created.v1", |e| e
    .product_id
    .0);

/// A product's price changed (its amount, its currency or both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceChanged {
    pub product_id: ProductId,
    pub old_price: Money,
    pub new_price: Money,
}

banyan_message::event!(PriceChanged, "catalog.price_changed.v1", |e| e.product_id.0);

/// Looks up products as they are now, answered in the order asked (a repeated id is answered
/// repeatedly). Rejected with `unknown_product`, details `{"product_ids": [...]}` naming every
/// unknown id, if any id is unknown; with `validation_failed` for more than
/// [`GetProducts::MAX_IDS`] ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetProducts {
    pub product_ids: Vec<ProductId>,
}

impl GetProducts {
    /// The most ids one request may ask for.
    pub const MAX_IDS: usize = 1_000;
}

banyan_message::request!(
    GetProducts,
    "catalog.get_products.v1",
    Vec<ProductSnapshot>,
    idempotent
);

/// A product as other modules see it: what an order keeps as of ordering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSnapshot {
    pub product_id: ProductId,
    pub sku: String,
    pub name: String,
    pub category: String,
    pub price: Money,
}
