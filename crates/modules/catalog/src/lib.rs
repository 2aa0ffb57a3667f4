//! `catalog`: products, categories and prices.
//!
//! Owns the `products` table. Emits `ProductCreated` and `PriceChanged`; answers
//! `GetProducts`, from which orders snapshot a product's name and price. Shows whether a
//! product is in stock from a read model fed by inventory's `StockChanged` events: it never
//! asks inventory on the read path.
//!
//! # Layout (the same in every module crate)
//! - `domain`: validated values (`Sku`, `ProductName`, `Description`, `Category`, `Price`)
//!   and the rules of creating and changing a product.
//! - `store`: every SQL statement of the module.
//! - `http`: the routes under `/api/v1/products`.
//! - `messages`: bus request handlers and event subscriptions.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod domain;
mod http;
mod messages;
mod model;
mod store;

use std::sync::Arc;

use banyan_kit::{ModuleContext, read_model::ReadModelSettings};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_catalog_contract as contract;

banyan_kit::module! {
    /// The catalog module, as the app mounts it.
    pub struct Catalog {
        name: "catalog",
        description: "Products, categories and prices.",
        migrations: sqlx::migrate!("../../../migrations/catalog"),
        calls: [],
        publishes: [contract::ProductCreated, contract::PriceChanged],
        start: start,
        document: http::document,
    }
}

/// `[modules.catalog]` settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// How the product cache's instances hear of each other's changes.
    #[serde(default)]
    read_model: ReadModelSettings,
}

async fn start(ctx: ModuleContext) -> anyhow::Result<OpenApiRouter> {
    let settings: Settings = ctx.settings()?;
    let state = Arc::new(State {
        outbox: ctx.outbox.clone(),
        products: store::ProductCache::shared(&settings.read_model, ctx.db.module())?,
    });
    messages::register(&ctx.bus, &state);
    Ok(http::routes(state))
}

/// What the module's handlers share.
#[derive(Debug)]
struct State {
    outbox: banyan_bus::Outbox,
    /// Products by id, for the reads (see `store::ProductCache` for how stale they may be).
    products: Arc<store::ProductCache>,
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    pub(crate) use banyan_kit::testing::TestModule as TestDb;

    /// Opens a fresh catalog database (see `banyan_kit::testing::TestModule`).
    pub(crate) async fn open() -> TestDb {
        TestDb::of(&crate::Catalog).await
    }

    pub(crate) use banyan_kit::testing::call;

    pub(crate) use banyan_kit::testing::with_admin_and_customer as with_auth;
}
