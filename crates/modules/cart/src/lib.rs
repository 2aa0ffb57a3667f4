//! `cart`: customers' carts.
//!
//! Owns the `cart_lines` table. A customer has one cart, named by their user id: its lines of
//! products (1 to 1000 of each, at most 100 lines), oldest first. A product must be in the
//! catalog to be added (asked over the bus, `GetProducts`). Answers `GetCart`, which orders
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
mod store;

use std::sync::Arc;

use banyan_db::sqlx::migrate::Migrator;
use banyan_kit::{Module, ModuleContext};
use futures::future::BoxFuture;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_cart_contract as contract;

/// The cart module, as the app mounts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cart;

static MIGRATIONS: Migrator = sqlx::migrate!("../../../migrations/cart");

impl Module for Cart {
    fn name(&self) -> &'static str {
        "cart"
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    fn start(&self, ctx: ModuleContext) -> BoxFuture<'static, anyhow::Result<OpenApiRouter>> {
        Box::pin(async move {
            let state = Arc::new(State {
                outbox: ctx.outbox.clone(),
                bus: ctx.bus.clone(),
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
    /// To ask catalog whether a product exists before it goes into a cart.
    bus: banyan_bus::Bus,
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    use std::{collections::HashSet, sync::Arc};

    use banyan_bus::{BusConfig, Rejection};
    use banyan_catalog_contract::{GetProducts, ProductId, ProductSnapshot};
    use banyan_message::{Currency, Money};

    use crate::State;

    pub(crate) use banyan_kit::testing::TestModule as TestDb;

    /// Opens a fresh cart database (see `banyan_kit::testing::TestModule`).
    pub(crate) async fn open() -> TestDb {
        TestDb::open("cart", &super::MIGRATIONS, BusConfig::default()).await
    }

    /// A cart database with the module's handlers on its bus, and a stand-in catalog that
    /// knows `products` (and answers `unknown_product` for any other).
    pub(crate) async fn started(products: &[ProductId]) -> (TestDb, Arc<State>) {
        let db = open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            bus: db.bus.clone(),
        });
        crate::messages::register(&db.bus, &state);
        let known: Arc<HashSet<ProductId>> = Arc::new(products.iter().copied().collect());
        db.bus
            .handle::<GetProducts, _, _>("catalog", move |_cx, request| {
                let known = known.clone();
                async move {
                    let unknown: Vec<ProductId> = request
                        .product_ids
                        .iter()
                        .filter(|id| !known.contains(id))
                        .copied()
                        .collect();
                    if !unknown.is_empty() {
                        return Err(Rejection::new("unknown_product", "unknown product ids")
                            .with_details(serde_json::json!({ "product_ids": unknown })));
                    }
                    Ok(request
                        .product_ids
                        .iter()
                        .map(|&product_id| ProductSnapshot {
                            product_id,
                            sku: "SKU".into(),
                            name: "Teapot".into(),
                            category: "kitchen".into(),
                            price: Money::new(1999, Currency::EUR),
                        })
                        .collect())
                }
            });
        (db, state)
    }

    pub(crate) use banyan_kit::testing::call;

    pub(crate) use banyan_kit::testing::{token, with_auth};
}
