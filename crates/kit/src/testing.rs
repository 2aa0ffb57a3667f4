//! Test helpers for module crates (behind the `test-util` feature): call a module's router as
//! a client would, with the authenticator installed as the app installs it.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode},
};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use crate::auth::{Authenticator, Role};

/// Calls `router` as a client would; answers the status, the headers and the JSON body
/// (`Null` when there is none). `token` is sent as a bearer token.
pub async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a readable body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

/// The module's routes with an authenticator installed, as the app installs it, and that
/// authenticator, to issue tokens for the users a test chooses.
pub fn with_auth(router: impl Into<Router>) -> (Router, Arc<Authenticator>) {
    let auth = Authenticator::new(
        b"test-secret-test-secret-test-secret",
        Duration::from_secs(60),
    );
    (router.into().layer(axum::Extension(auth.clone())), auth)
}

/// A bearer token for `user` with `role`.
pub fn token(auth: &Authenticator, user: Uuid, role: Role) -> String {
    auth.issue(user, role).expect("a token").access_token
}

/// A module's storage for a test, as the app gives it: a fresh database (see
/// [`banyan_db::testing::TestDatabase`]) with the module's and the bus's migrations, and a bus
/// with the module's outbox relay running. The database is removed when this is dropped.
#[derive(Debug)]
pub struct TestModule {
    pub bus: banyan_bus::Bus,
    pub outbox: banyan_bus::Outbox,
    _storage: banyan_db::testing::TestDatabase,
}

impl TestModule {
    pub async fn open(
        module: &'static str,
        migrations: &'static banyan_db::sqlx::migrate::Migrator,
        bus_config: banyan_bus::BusConfig,
    ) -> Self {
        let storage = banyan_db::testing::TestDatabase::new().await;
        let db = banyan_db::Db::open(
            module,
            storage.config(),
            &[&*banyan_bus::MESSAGING_MIGRATIONS, migrations],
        )
        .await
        .unwrap_or_else(|e| panic!("the {module} database opens: {e}"));
        let bus = banyan_bus::Bus::new(bus_config);
        Self {
            outbox: banyan_bus::Outbox::start(&bus, db),
            bus,
            _storage: storage,
        }
    }
}
