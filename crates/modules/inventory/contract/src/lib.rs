//! What other modules may know of `inventory`: its requests and its events. Nothing else.
//!
//! A reservation is named by a plain [`Uuid`] chosen by the caller (orders use the order id),
//! so reserving and releasing are idempotent: asking twice has the effect of asking once.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use banyan_catalog_contract::ProductId;

/// A quantity of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub product_id: ProductId,
    pub quantity: i64,
}

/// A product that had too little stock for a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    pub product_id: ProductId,
    pub requested: i64,
    /// What was available when the reservation was tried.
    pub available: i64,
}

/// A product's stock changed. `version` grows by one with every change of the product's
/// stock, so a read model applies an event only if its version is newer than the last applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChanged {
    pub product_id: ProductId,
    pub on_hand: i64,
    pub reserved: i64,
    /// `on_hand - reserved`: what can still be reserved.
    pub available: i64,
    pub version: i64,
}

banyan_message::event!(StockChanged, "inventory.stock_changed.v1", |e| e
    .product_id
    .0);

/// Every line of a reservation is held (one line per product, sorted by product id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReserved {
    pub reservation_id: Uuid,
    pub lines: Vec<StockLine>,
}

banyan_message::event!(InventoryReserved, "inventory.inventory_reserved.v1", |e| e
    .reservation_id);

/// A reservation could not be made; nothing of it is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReservationFailed {
    pub reservation_id: Uuid,
    pub shortages: Vec<Shortage>,
}

banyan_message::event!(
    InventoryReservationFailed,
    "inventory.inventory_reservation_failed.v1",
    |e| e.reservation_id
);

/// A reservation's stock was given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReleased {
    pub reservation_id: Uuid,
}

banyan_message::event!(InventoryReleased, "inventory.inventory_released.v1", |e| e
    .reservation_id);

/// Holds every line or none. Lines of one product are merged; each quantity must be 1 to
/// 10 000 (merged too), and a reservation has 1 to 100 lines.
///
/// Asking again with a `reservation_id` already held answers the existing reservation without
/// touching stock. Rejected with `insufficient_stock`, details `{"shortages": [Shortage...]}`;
/// `validation_failed` for bad lines; `reservation_released` for an id already released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStock {
    pub reservation_id: Uuid,
    pub lines: Vec<StockLine>,
}

banyan_message::request!(
    ReserveStock,
    "inventory.reserve_stock.v1",
    Reservation,
    idempotent
);

/// A held reservation: its lines, merged and sorted by product id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: Uuid,
    pub lines: Vec<StockLine>,
}

/// Gives a reservation's stock back. Idempotent: `released` is `false` when there was nothing
/// held under that id (unknown, or released before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStock {
    pub reservation_id: Uuid,
}

banyan_message::request!(
    ReleaseStock,
    "inventory.release_stock.v1",
    Released,
    idempotent
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub reservation_id: Uuid,
    pub released: bool,
}

/// The stock of products, answered in the order asked; a product inventory has never stocked
/// has all zeros. Rejected with `validation_failed` for more than [`GetStock::MAX_IDS`] ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStock {
    pub product_ids: Vec<ProductId>,
}

impl GetStock {
    /// The most ids one request may ask for.
    pub const MAX_IDS: usize = 1_000;
}

banyan_message::request!(
    GetStock,
    "inventory.get_stock.v1",
    Vec<StockLevel>,
    idempotent
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub product_id: ProductId,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}
