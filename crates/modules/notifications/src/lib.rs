//! `notifications`: the email sink.
//!
//! Owns the `recipients` table (a read model of accounts, fed by `UserRegistered`) and the
//! `notifications` table (what was sent). Listens to `UserRegistered` (a welcome),
//! `OrderConfirmed` and `OrderCancelled`, and sends one notification per event however often
//! it arrives. "Sending" is a log line and a row. Asks users (`GetUser`) for the address of a
//! user whose registration it has not seen yet. Answers `ListNotifications`; emits nothing.
//!
//! # Layout (the same in every module crate)
//! - `domain`: validated values (`Limit`), what each notification says (`Notice`), and the
//!   operation `send`.
//! - `store`: every SQL statement of the module.
//! - `http`: the routes under `/api/v1/notifications`.
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

pub use banyan_notifications_contract as contract;

banyan_kit::module! {
    /// The notifications module, as the app mounts it.
    pub struct Notifications {
        name: "notifications",
        description: "Notifications sent to users.",
        migrations: sqlx::migrate!("../../../migrations/notifications"),
        calls: [banyan_users_contract::GetUser],
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
    /// To ask users for the address of a user not (yet) among the recipients.
    bus: banyan_bus::ModuleBus,
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    use banyan_bus::BusConfig;

    pub(crate) use banyan_kit::testing::TestModule as TestDb;

    /// Opens a fresh notifications database with the bus configured as given.
    pub(crate) async fn open_with(bus_config: BusConfig) -> TestDb {
        TestDb::open(crate::NAME, &crate::MIGRATIONS, bus_config).await
    }

    pub(crate) use banyan_kit::testing::call;

    pub(crate) use banyan_kit::testing::{token, with_auth};
}
