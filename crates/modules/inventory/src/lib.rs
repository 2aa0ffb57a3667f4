//! `inventory`: stock and reservations.
//!
//! Owns the `stock` and `reservations` tables. A reservation holds every line or none, is
//! named by its caller's id (orders use the order id) so that asking twice changes nothing,
//! and never takes more than is on hand: `0 <= reserved <= on_hand` for every product.
//! Emits `StockChanged` on every change of a product's stock, `InventoryReserved`,
//! `InventoryReservationFailed` and `InventoryReleased`; answers `ReserveStock`,
//! `ReleaseStock` and `GetStock`.
//!
//! Its part of the order saga: `OrderPlaced` reserves the order's lines (all or none) under
//! the order id; `PaymentFailed` and `OrderCancelled` release them; `OrderConfirmed` commits
//! them (the stock leaves `on_hand` and `reserved` alike, the reservation is `committed`).
//!
//! # Layout (the same in every module crate)
//! - `domain`: validated values (`OnHand`, `Quantity`, `ReservationLines`) and the
//!   operations `reserve`, `release` and `set_on_hand`.
//! - `store`: every SQL statement of the module.
//! - `http`: the routes under `/api/v1/inventory`.
//! - `messages`: bus request handlers and event subscriptions.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod domain;
mod http;
mod messages;
mod model;
mod store;

use std::sync::Arc;

use banyan_kit::ModuleContext;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_inventory_contract as contract;

banyan_kit::module! {
    /// The inventory module, as the app mounts it.
    pub struct Inventory {
        name: "inventory",
        description: "Stock on hand and reserved.",
        migrations: sqlx::migrate!("../../../migrations/inventory"),
        calls: [],
        publishes: [contract::StockChanged, contract::InventoryReserved, contract::InventoryReservationFailed, contract::InventoryReleased],
        start: start,
        document: http::document,
    }
}

async fn start(ctx: ModuleContext) -> anyhow::Result<OpenApiRouter> {
    let state = Arc::new(State {
        outbox: ctx.outbox.clone(),
    });
    messages::register(&ctx.bus, &state);
    Ok(http::routes(state))
}

/// What the module's handlers share.
#[derive(Debug)]
struct State {
    outbox: banyan_bus::Outbox,
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    pub(crate) use banyan_kit::testing::TestModule as TestDb;

    /// Opens a fresh inventory database (see `banyan_kit::testing::TestModule`).
    pub(crate) async fn open() -> TestDb {
        TestDb::of(&crate::Inventory).await
    }

    pub(crate) use banyan_kit::testing::call;

    pub(crate) use banyan_kit::testing::with_admin_and_customer as with_auth;
}
