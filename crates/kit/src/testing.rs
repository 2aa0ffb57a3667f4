//! Test helpers for module crates (behind the `test-util` feature): call a module's router as
//! a client would, with the authenticator installed as the app installs it; a module's storage
//! and bus; stand-ins for its peers ([`FakeCatalog`]); and [`Scenario`] / [`EventRecorder`]
//! to wait for what it emits.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode},
};
use banyan_bus::{Bus, Delivered, Event, Rejection};
use banyan_catalog_contract::{GetProducts, ProductId, ProductSnapshot};
use banyan_message::{Currency, Money};
use banyan_users_contract::{GetUser, UserProfile};
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

/// The module's routes with an authenticator installed, as the app installs it, and a token
/// for an admin and one for a customer.
pub fn with_admin_and_customer(router: impl Into<Router>) -> (Router, String, String) {
    let (router, auth) = with_auth(router);
    let admin = token(&auth, Uuid::now_v7(), Role::Admin);
    let customer = token(&auth, Uuid::now_v7(), Role::Customer);
    (router, admin, customer)
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
    /// A fresh database for `module` (its name, its migrations) with a default bus.
    pub async fn of(module: &dyn crate::Module) -> Self {
        let test = Self::open(
            module.name(),
            module.migrations(),
            banyan_bus::BusConfig::default(),
        )
        .await;
        test.outbox.declare_publishes(module.publishes());
        test
    }

    /// The module's own handle on the test's bus, as the app gives it to the module.
    pub fn module_bus(&self) -> banyan_bus::ModuleBus {
        banyan_bus::ModuleBus::new(&self.bus, self.outbox.db().module())
    }

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

/// The property names `T`'s schema documents and those `value` serializes to, each sorted:
/// equal when the API document tells the truth about the type.
pub fn documented_and_serialized<T>(value: &T) -> (Vec<String>, Vec<String>)
where
    T: utoipa::PartialSchema + serde::Serialize,
{
    let keys = |object: &Value| {
        let mut keys: Vec<String> = object
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let schema = serde_json::to_value(T::schema()).expect("a schema is JSON");
    let json = serde_json::to_value(value).expect("the value is JSON");
    (keys(&schema["properties"]), keys(&json))
}

/// A stand-in catalog for a module's tests: answers `GetProducts` on the bus from the products
/// the test adds, and `unknown_product` (with the unknown ids) for any other.
#[derive(Debug, Clone, Default)]
pub struct FakeCatalog {
    products: Arc<Mutex<HashMap<ProductId, ProductSnapshot>>>,
}

impl FakeCatalog {
    /// A catalog with no product, answering on `bus`.
    pub fn serve(bus: &Bus) -> Self {
        let catalog = Self::default();
        let products = catalog.products.clone();
        bus.handle::<GetProducts, _, _>("catalog", move |_cx, request| {
            let answer = answer_products(&products.lock().expect("not poisoned"), &request);
            async move { answer }
        });
        catalog
    }

    /// A new product named `name`, priced `amount_minor` of `currency`.
    pub fn add(&self, name: &str, amount_minor: i64, currency: Currency) -> ProductId {
        let id = ProductId::new();
        let snapshot = ProductSnapshot {
            product_id: id,
            sku: name.to_uppercase(),
            name: name.into(),
            category: "kitchen".into(),
            price: Money::new(amount_minor, currency),
        };
        self.products
            .lock()
            .expect("not poisoned")
            .insert(id, snapshot);
        id
    }

    /// Puts `id` in the catalog, as a teapot at 19.99 EUR.
    pub fn insert(&self, id: ProductId) {
        let snapshot = ProductSnapshot {
            product_id: id,
            sku: "SKU".into(),
            name: "Teapot".into(),
            category: "kitchen".into(),
            price: Money::new(1999, Currency::EUR),
        };
        self.products
            .lock()
            .expect("not poisoned")
            .insert(id, snapshot);
    }
}

/// A stand-in users module for a module's tests: answers `GetUser` for every id except those
/// the test says have no account (`not_found`, as users answers).
#[derive(Debug, Clone, Default)]
pub struct FakeUsers {
    missing: Arc<Mutex<std::collections::HashSet<Uuid>>>,
}

impl FakeUsers {
    /// Users that know every id, answering on `bus`.
    pub fn serve(bus: &Bus) -> Self {
        let users = Self::default();
        let missing = users.missing.clone();
        bus.handle::<GetUser, _, _>("users", move |_cx, request| {
            let answer = if missing
                .lock()
                .expect("not poisoned")
                .contains(&request.user_id.0)
            {
                Err(Rejection::new(
                    "not_found",
                    format!("user {} does not exist", request.user_id.0),
                ))
            } else {
                Ok(UserProfile {
                    user_id: request.user_id,
                    username: "someone".into(),
                    email: "someone@example.com".into(),
                    role: "customer".into(),
                })
            };
            async move { answer }
        });
        users
    }

    /// From now on `id` has no account.
    pub fn forget(&self, id: Uuid) {
        self.missing.lock().expect("not poisoned").insert(id);
    }
}

fn answer_products(
    products: &HashMap<ProductId, ProductSnapshot>,
    request: &GetProducts,
) -> Result<Vec<ProductSnapshot>, Rejection> {
    let unknown: Vec<ProductId> = request
        .product_ids
        .iter()
        .filter(|id| !products.contains_key(id))
        .copied()
        .collect();
    if !unknown.is_empty() {
        return Err(Rejection::new("unknown_product", "unknown product ids")
            .with_details(serde_json::json!({ "product_ids": unknown })));
    }
    Ok(request
        .product_ids
        .iter()
        .filter_map(|id| products.get(id).cloned())
        .collect())
}

/// A module's test told as a story, in the spirit of Spring Modulith's `Scenario`: stimulate
/// the module (a request, a delivered event), then wait for an event of a type to arrive.
///
/// ```ignore
/// let (answer, placed) = Scenario::new(&db.bus)
///     .stimulate(call(&router, "POST", "/api/v1/orders", token, body))
///     .and_wait_for_event::<OrderPlaced>()
///     .await;
/// ```
#[derive(Debug)]
pub struct Scenario {
    bus: Bus,
    within: Duration,
}

impl Scenario {
    /// A scenario on `bus`; an awaited event must arrive within 10 s.
    pub fn new(bus: &Bus) -> Self {
        Self {
            bus: bus.clone(),
            within: Duration::from_secs(10),
        }
    }

    /// What to do to the module.
    pub fn stimulate<F: Future>(self, stimulus: F) -> Stimulus<F> {
        Stimulus {
            scenario: self,
            stimulus,
        }
    }
}

/// A stimulus of a [`Scenario`], not yet run.
#[derive(Debug)]
pub struct Stimulus<F> {
    scenario: Scenario,
    stimulus: F,
}

impl<F: Future> Stimulus<F> {
    /// Runs the stimulus, listening for `E` from before it starts, and answers its output and
    /// the first `E` that arrives.
    ///
    /// # Panics
    /// If no `E` arrives within the scenario's time.
    pub async fn and_wait_for_event<E: Event + Clone>(self) -> (F::Output, E) {
        let mut recorder = EventRecorder::<E>::on(&self.scenario.bus);
        let output = self.stimulus.await;
        let event = recorder.next_within(self.scenario.within).await;
        (output, event)
    }
}

/// Every event `E` that reaches the bus, in the order they arrive.
#[derive(Debug)]
pub struct EventRecorder<E> {
    received: tokio::sync::mpsc::UnboundedReceiver<E>,
    seen: Arc<Mutex<Vec<E>>>,
}

impl<E: Event + Clone> EventRecorder<E> {
    /// Starts recording on `bus`.
    pub fn on(bus: &Bus) -> Self {
        // Each recorder is a subscribing group of its own: a test may record one event type
        // several times. Group names are `'static`; a test process leaks a few bytes each.
        static RECORDERS: AtomicUsize = AtomicUsize::new(0);
        let n = RECORDERS.fetch_add(1, Ordering::Relaxed);
        let group: &'static str = Box::leak(format!("recorder-{n}").into_boxed_str());
        let (sender, received) = tokio::sync::mpsc::unbounded_channel();
        let seen: Arc<Mutex<Vec<E>>> = Arc::default();
        let sink = seen.clone();
        bus.subscribe::<E, _, _>(group, move |delivered: Delivered<E>| {
            let event = (*delivered.event).clone();
            sink.lock().expect("not poisoned").push(event.clone());
            let _ = sender.send(event);
            async { Ok(()) }
        });
        Self { received, seen }
    }

    /// Every event recorded so far.
    pub fn all(&self) -> Vec<E> {
        self.seen.lock().expect("not poisoned").clone()
    }

    /// The next event not yet taken with `next_within`.
    ///
    /// # Panics
    /// If none arrives within `within`.
    pub async fn next_within(&mut self, within: Duration) -> E {
        match tokio::time::timeout(within, self.received.recv()).await {
            Ok(Some(event)) => event,
            _ => panic!("no {} arrived within {within:?}", E::SUBJECT),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use banyan_bus::{BusConfig, BusError, Context};
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rang {
        bell: Uuid,
    }

    banyan_message::event!(Rang, "tests.rang.v1", |e| e.bell);

    #[tokio::test]
    async fn a_scenario_waits_for_the_event_its_stimulus_caused() {
        let bus = Bus::new(BusConfig::default());
        let bell = Uuid::now_v7();
        let publisher = bus.clone();
        let (answer, rang) = Scenario::new(&bus)
            .stimulate(async move {
                publisher
                    .publish(&Context::root(), Rang { bell })
                    .await
                    .map(|()| "published")
            })
            .and_wait_for_event::<Rang>()
            .await;
        assert_eq!(answer.unwrap(), "published");
        assert_eq!(rang, Rang { bell });
        let mut recorder = EventRecorder::<Rang>::on(&bus);
        bus.publish(&Context::root(), Rang { bell }).await.unwrap();
        recorder.next_within(Duration::from_secs(5)).await;
        assert_eq!(recorder.all(), vec![Rang { bell }]);
        bus.shutdown().await;
    }

    #[tokio::test]
    async fn the_fake_catalog_knows_what_it_was_given_and_names_what_it_does_not() {
        let bus = Bus::new(BusConfig::default());
        let catalog = FakeCatalog::serve(&bus);
        let teapot = catalog.add("Teapot", 1999, Currency::EUR);
        let (known, ghost) = (ProductId::new(), ProductId::new());
        catalog.insert(known);
        let cx = Context::root();
        let found = bus
            .request(
                &cx,
                GetProducts {
                    product_ids: vec![known, teapot],
                },
            )
            .await
            .unwrap();
        assert_eq!(found[0].product_id, known);
        assert_eq!(found[1].name, "Teapot");
        assert_eq!(found[1].price, Money::new(1999, Currency::EUR));
        let asked = GetProducts {
            product_ids: vec![teapot, ghost],
        };
        let Err(BusError::Rejected(rejection)) = bus.request(&cx, asked).await else {
            panic!("an unknown product is rejected");
        };
        assert_eq!(rejection.code, "unknown_product");
        assert_eq!(rejection.details["product_ids"][0], ghost.to_string());
        bus.shutdown().await;
    }
}
