//! `cart`: customers' carts.
//!
//! Owns the `cart_lines` table. A customer has one cart, named by their user id: its lines of
//! products (1 to 1000 of each, at most 100 lines), oldest first. A product must be in the
//! catalog to be added (asked over the bus, `GetProducts`), and the cart's user an account
//! (`GetUser`: an admin cannot fill a cart nobody owns). Answers `GetCart`, which orders
//! read to make an order from the cart; listens to `OrderPlaced` and, for an order made from
//! the cart, takes the ordered quantities out of it. Emits nothing.
//!
//! # Layout (the same in every module crate)
//! - `domain`: validated values (`Quantity`, `OrderedQuantities`) and the operations
//!   `add_item` and `take_ordered`.
//! - `store`: every SQL statement of the module.
//! - `http`: the routes under `/api/v1/carts`.
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

pub use banyan_cart_contract as contract;

banyan_kit::module! {
    /// The cart module, as the app mounts it.
    pub struct Cart {
        name: "cart",
        description: "Customers' carts.",
        migrations: sqlx::migrate!("../../../migrations/cart"),
        calls: [banyan_catalog_contract::GetProducts, banyan_users_contract::GetUser],
        publishes: [],
        start: start,
        document: http::document,
    }
}

async fn start(ctx: ModuleContext) -> anyhow::Result<OpenApiRouter> {
    let state = Arc::new(State {
        outbox: ctx.outbox.clone(),
        bus: ctx.bus.clone(),
    });
    messages::register(&ctx.bus, &state);
    Ok(http::routes(state))
}

/// What the module's handlers share.
#[derive(Debug)]
struct State {
    outbox: banyan_bus::Outbox,
    /// To ask catalog whether a product exists before it goes into a cart.
    bus: banyan_bus::ModuleBus,
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    use std::sync::Arc;

    use banyan_catalog_contract::ProductId;
    use banyan_kit::testing::{FakeCatalog, FakeUsers};

    use crate::State;

    pub(crate) use banyan_kit::testing::TestModule as TestDb;

    /// Opens a fresh cart database (see `banyan_kit::testing::TestModule`).
    pub(crate) async fn open() -> TestDb {
        TestDb::of(&crate::Cart).await
    }

    /// A cart database with the module's handlers on its bus, and a stand-in catalog that
    /// knows `products` (and answers `unknown_product` for any other).
    pub(crate) async fn started(products: &[ProductId]) -> (TestDb, Arc<State>) {
        let db = open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            bus: db.module_bus(),
        });
        crate::messages::register(&db.module_bus(), &state);
        let catalog = FakeCatalog::serve(&db.bus);
        for &id in products {
            catalog.insert(id);
        }
        FakeUsers::serve(&db.bus);
        (db, state)
    }

    pub(crate) use banyan_kit::testing::call;

    pub(crate) use banyan_kit::testing::{token, with_auth};
}
