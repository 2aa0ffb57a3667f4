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
mod store;

use std::sync::Arc;

use banyan_db::sqlx::migrate::Migrator;
use banyan_kit::{Module, ModuleContext};
use futures::future::BoxFuture;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_notifications_contract as contract;

/// The notifications module, as the app mounts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifications;

static MIGRATIONS: Migrator = sqlx::migrate!("../../../migrations/notifications");

impl Module for Notifications {
    fn name(&self) -> &'static str {
        "notifications"
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
    /// To ask users for the address of a user not (yet) among the recipients.
    bus: banyan_bus::Bus,
}

#[cfg(test)]
mod test_support {
    //! A real module database (SQLite, in a temporary directory) for the tests that run SQL.

    use banyan_bus::{Bus, BusConfig, MESSAGING_MIGRATIONS, Outbox};
    use banyan_db::Db;

    /// A bus and the outbox of a fresh notifications database; the directory lives as long as the
    /// value.
    pub(crate) struct TestDb {
        pub(crate) bus: Bus,
        pub(crate) outbox: Outbox,
        _storage: banyan_db::testing::TestDatabase,
    }

    /// Opens a fresh notifications database: SQLite in a temporary directory, or, when
    /// `BANYAN_TEST_POSTGRES_URL` names a PostgreSQL server, a new database on it (named
    /// `banyan_test_<uuid>`, dropped with the value); its bus is configured as given.
    pub(crate) async fn open_with(bus_config: BusConfig) -> TestDb {
        let storage = banyan_db::testing::TestDatabase::new().await;
        let config = storage.config().clone();
        let db = Db::open(
            "notifications",
            &config,
            &[&*MESSAGING_MIGRATIONS, &super::MIGRATIONS],
        )
        .await
        .expect("the notifications database opens");
        let bus = Bus::new(bus_config);
        TestDb {
            outbox: Outbox::start(&bus, db),
            bus,
            _storage: storage,
        }
    }

    /// Calls `router` as a client would; answers the status, the headers and the JSON body
    /// (`Null` when there is none). `token` is sent as a bearer token.
    pub(crate) async fn call(
        router: &axum::Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (
        axum::http::StatusCode,
        axum::http::HeaderMap,
        serde_json::Value,
    ) {
        use tower::ServiceExt;

        let mut request = axum::http::Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string())),
            None => request.body(axum::body::Body::empty()),
        }
        .expect("a valid request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a readable body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }

    /// The module's routes with an authenticator installed, as the app installs it, and that
    /// authenticator, to issue tokens for chosen users.
    pub(crate) fn with_auth(
        router: impl Into<axum::Router>,
    ) -> (
        axum::Router,
        std::sync::Arc<banyan_kit::auth::Authenticator>,
    ) {
        let auth = banyan_kit::auth::Authenticator::new(
            b"test-secret-test-secret-test-secret",
            std::time::Duration::from_secs(60),
        );
        (router.into().layer(axum::Extension(auth.clone())), auth)
    }

    /// A bearer token for `user` with `role`.
    pub(crate) fn token(
        auth: &banyan_kit::auth::Authenticator,
        user: uuid::Uuid,
        role: banyan_kit::auth::Role,
    ) -> String {
        auth.issue(user, role).expect("a token").access_token
    }
}
