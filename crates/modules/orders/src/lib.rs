//! `orders`: orders with price snapshots, the hub of the checkout saga.
//!
//! Owns the `orders` and `order_lines` tables. An order is placed `pending` with the name and
//! unit price of each product as the catalog gives them at that moment (read over the bus
//! before the write transaction opens, as is the cart for an order made from it), and
//! announced with `OrderPlaced`. The saga (choreography) ends it: `PaymentCompleted` confirms
//! it (`OrderConfirmed`); `PaymentFailed` or `InventoryReservationFailed` cancels it with a
//! reason (`OrderCancelled`). A client may wait for that outcome on `POST /api/v1/orders`.
//! Answers `GetOrder` and `ListOrders`.
//!
//! # Layout (the same in every module crate)
//! - `model`: validated values (`Quantity`, `RequestedLines`, `PaymentMethod`, `Status`),
//!   pricing, and the module's `Error`.
//! - `domain`: the operations `prepare`, `place`, `end_saga` and `change_status`.
//! - `store`: every SQL statement of the module.
//! - `http`: the routes under `/api/v1/orders`; a client waits for its order's outcome on
//!   `banyan_kit::Waiters`, which `messages` wakes.
//! - `messages`: bus request handlers and the saga's event subscriptions.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod domain;
mod http;
mod messages;
mod model;
mod store;

use std::{sync::Arc, time::Duration};

use banyan_kit::ModuleContext;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_orders_contract as contract;

banyan_kit::module! {
    /// The orders module, as the app mounts it.
    pub struct Orders {
        name: "orders",
        description: "Orders and the checkout saga.",
        migrations: sqlx::migrate!("../../../migrations/orders"),
        calls: [banyan_cart_contract::GetCart, banyan_catalog_contract::GetProducts],
        publishes: [contract::OrderPlaced, contract::OrderConfirmed, contract::OrderCancelled],
        start: start,
        document: http::document,
    }
}

/// `[modules.orders]` settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// How often a client waiting for a saga's outcome re-reads its order, in milliseconds:
    /// how soon it learns of an outcome reached in another process.
    wait_poll_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { wait_poll_ms: 100 }
    }
}

/// How long before the edge's request timeout a waiting `POST` gives up, so that it answers
/// 202 with the pending order rather than being cut off with a 504.
const WAIT_MARGIN: Duration = Duration::from_millis(500);

async fn start(ctx: ModuleContext) -> anyhow::Result<OpenApiRouter> {
    let settings: Settings = ctx.settings()?;
    if !(1..=10_000).contains(&settings.wait_poll_ms) {
        anyhow::bail!("modules.orders.wait_poll_ms must be 1 to 10000");
    }
    let request_timeout = ctx
        .config
        .extract_inner::<u64>("server.request_timeout_ms")
        .ok()
        .map(Duration::from_millis);
    let state = Arc::new(State {
        outbox: ctx.outbox.clone(),
        bus: ctx.bus.clone(),
        waiters: Arc::default(),
        poll: Duration::from_millis(settings.wait_poll_ms),
        max_wait: max_wait(request_timeout),
    });
    messages::register(&ctx.bus, &state);
    Ok(http::routes(state))
}

/// The longest a `POST` may wait for an outcome, given the edge's request timeout.
fn max_wait(request_timeout: Option<Duration>) -> Duration {
    let most = Duration::from_secs(30);
    request_timeout.map_or(most, |timeout| {
        most.min(timeout.saturating_sub(WAIT_MARGIN))
    })
}

/// What the module's handlers share.
#[derive(Debug)]
struct State {
    outbox: banyan_bus::Outbox,
    /// For the cart and catalog requests of placing an order.
    bus: banyan_bus::ModuleBus,
    /// Clients waiting for their order's saga to end, woken by the saga's handlers.
    waiters: Arc<banyan_kit::Waiters<uuid::Uuid, store::OrderRow>>,
    /// How often a waiting client re-reads its order.
    poll: Duration,
    /// The longest a client may wait for an outcome.
    max_wait: Duration,
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    pub(crate) use banyan_kit::testing::TestModule as TestDb;

    /// Opens a fresh orders database (see `banyan_kit::testing::TestModule`).
    pub(crate) async fn open() -> TestDb {
        TestDb::of(&crate::Orders).await
    }

    pub(crate) use banyan_kit::testing::call;

    /// The users a test acts as: an admin and two customers, with their tokens.
    #[derive(Debug, Clone)]
    pub(crate) struct Users {
        pub(crate) admin: String,
        pub(crate) alice: (uuid::Uuid, String),
        pub(crate) bob: (uuid::Uuid, String),
    }

    /// The module's routes with an authenticator installed, as the app installs it.
    pub(crate) fn with_auth(router: impl Into<axum::Router>) -> (axum::Router, Users) {
        use banyan_kit::{auth::Role, testing::token};

        let (router, auth) = banyan_kit::testing::with_auth(router);
        let (alice, bob) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let users = Users {
            admin: token(&auth, uuid::Uuid::now_v7(), Role::Admin),
            alice: (alice, token(&auth, alice, Role::Customer)),
            bob: (bob, token(&auth, bob, Role::Customer)),
        };
        (router, users)
    }
}

#[cfg(test)]
mod harness {
    //! The module started on a real bus and database, with stand-ins for the catalog and the
    //! cart that answer from what the test puts in them.

    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use axum::http::{StatusCode, header};
    use banyan_bus::{Context, Envelope, Event, Message};
    use banyan_cart_contract::{CartContents, CartLine, GetCart};
    use banyan_catalog_contract::ProductId;
    use banyan_kit::testing::FakeCatalog;
    use banyan_message::Currency;
    use banyan_payments_contract::{PaymentCompleted, PaymentId};
    use serde_json::Value;
    use uuid::Uuid;

    use crate::{
        State, store,
        test_support::{self, TestDb, Users, call},
    };

    pub(crate) type Shared<T> = Arc<Mutex<T>>;

    pub(crate) struct Harness {
        pub(crate) db: TestDb,
        pub(crate) state: Arc<State>,
        pub(crate) router: axum::Router,
        pub(crate) users: Users,
        pub(crate) catalog: FakeCatalog,
        pub(crate) carts: Shared<HashMap<Uuid, Vec<CartLine>>>,
    }

    pub(crate) async fn start() -> Harness {
        let db = test_support::open().await;
        let state = Arc::new(State {
            outbox: db.outbox.clone(),
            bus: db.module_bus(),
            waiters: Arc::default(),
            poll: Duration::from_millis(100),
            max_wait: Duration::from_secs(30),
        });
        crate::messages::register(&db.module_bus(), &state);
        let catalog = FakeCatalog::serve(&db.bus);
        let carts: Shared<HashMap<Uuid, Vec<CartLine>>> = Arc::default();
        let cart = carts.clone();
        db.bus.handle::<GetCart, _, _>("cart", move |_cx, request| {
            let lines = cart
                .lock()
                .unwrap()
                .get(&request.user_id.0)
                .cloned()
                .unwrap_or_default();
            async move {
                Ok(CartContents {
                    user_id: request.user_id,
                    lines,
                })
            }
        });
        let (router, users) = test_support::with_auth(crate::http::routes(state.clone()));
        Harness {
            db,
            state,
            router,
            users,
            catalog,
            carts,
        }
    }

    /// Posts `body` to `uri` as `token`: the status, the `Location` and the body.
    pub(crate) async fn post(
        h: &Harness,
        uri: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, String, Value) {
        let (status, headers, body) = call(&h.router, "POST", uri, Some(token), Some(body)).await;
        let location = headers
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, location, body)
    }

    pub(crate) fn order_id(view: &Value) -> Uuid {
        view["id"].as_str().unwrap().parse().unwrap()
    }

    /// Pays order `id` its total, as payments would.
    pub(crate) async fn confirm(h: &Harness, id: Uuid) {
        let total = store::find(h.state.outbox.db(), id)
            .await
            .unwrap()
            .unwrap()
            .row
            .total();
        let paid = PaymentCompleted {
            payment_id: PaymentId::new(),
            order_id: id,
            amount: total,
        };
        h.deliver(&paid, &Context::root().envelope(PaymentCompleted::SUBJECT))
            .await;
    }

    impl Harness {
        /// A product in the catalog at `amount_minor` of `currency`.
        pub(crate) fn product(&self, name: &str, amount_minor: i64, currency: &str) -> ProductId {
            let currency = Currency::parse(currency).unwrap();
            self.catalog.add(name, amount_minor, currency)
        }

        /// Delivers `event` to the module as the bus would (from JSON), and waits until it
        /// was handled. The same `envelope` again is a redelivery.
        pub(crate) async fn deliver<E: Event>(&self, event: &E, envelope: &Envelope) {
            let json = serde_json::to_string(event).unwrap();
            self.db
                .bus
                .inbound("nats")
                .deliver_remote_event(envelope.clone(), json.into(), event.aggregate_id())
                .await
                .unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_before_the_edge_would_cut_the_request_off() {
        assert_eq!(max_wait(None), Duration::from_secs(30));
        assert_eq!(
            max_wait(Some(Duration::from_secs(30))),
            Duration::from_millis(29_500)
        );
        assert_eq!(
            max_wait(Some(Duration::from_secs(5))),
            Duration::from_millis(4_500)
        );
        assert_eq!(max_wait(Some(Duration::from_millis(100))), Duration::ZERO);
    }
}
