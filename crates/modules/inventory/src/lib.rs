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
mod store;

use std::sync::Arc;

use banyan_db::sqlx::migrate::Migrator;
use banyan_kit::{Module, ModuleContext};
use futures::future::BoxFuture;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_inventory_contract as contract;

/// The inventory module, as the app mounts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inventory;

static MIGRATIONS: Migrator = sqlx::migrate!("../../../migrations/inventory");

impl Module for Inventory {
    fn name(&self) -> &'static str {
        "inventory"
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    fn start(&self, ctx: ModuleContext) -> BoxFuture<'static, anyhow::Result<OpenApiRouter>> {
        Box::pin(async move {
            let state = Arc::new(State {
                outbox: ctx.outbox.clone(),
            });
            messages::register(&ctx.bus, &state);
            Ok(http::routes(state))
        })
    }
}

/// What the module's handlers share.
#[derive(Debug)]
struct State {
    outbox: banyan_bus::Outbox,
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    use banyan_bus::{Bus, BusConfig, MESSAGING_MIGRATIONS, Outbox};
    use banyan_db::Db;

    /// A bus and the outbox of a fresh inventory database; the directory lives as long as the
    /// value.
    pub(crate) struct TestDb {
        pub(crate) bus: Bus,
        pub(crate) outbox: Outbox,
        _storage: banyan_db::testing::TestDatabase,
    }

    /// Opens a fresh inventory database: SQLite in a temporary directory, or, when
    /// `BANYAN_TEST_POSTGRES_URL` names a PostgreSQL server, a new database on it (named
    /// `banyan_test_<uuid>`, dropped with the value).
    pub(crate) async fn open() -> TestDb {
        let storage = banyan_db::testing::TestDatabase::new().await;
        let config = storage.config().clone();
        let db = Db::open(
            "inventory",
            &config,
            &[&*MESSAGING_MIGRATIONS, &super::MIGRATIONS],
        )
        .await
        .expect("the inventory database opens");
        let bus = Bus::new(BusConfig::default());
        TestDb {
            outbox: Outbox::start(&bus, db),
            bus,
            _storage: storage,
        }
    }

    pub(crate) use banyan_kit::testing::call;

    /// The module's routes with an authenticator installed, as the app installs it, and a
    /// token for an admin and one for a customer.
    pub(crate) fn with_auth(router: impl Into<axum::Router>) -> (axum::Router, String, String) {
        use banyan_kit::{auth::Role, testing::token};

        let (router, auth) = banyan_kit::testing::with_auth(router);
        let admin = token(&auth, uuid::Uuid::now_v7(), Role::Admin);
        let customer = token(&auth, uuid::Uuid::now_v7(), Role::Customer);
        (router, admin, customer)
    }
}
