//! What the adapters' tests share: a `calc` module answering requests, a `shipping` module
//! applying events once, and their messages.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use banyan_bus::{
    Bus, BusConfig, BusError, Context, Event, Message, Outbox, Rejection, Request, Transport,
    http::HttpTransportConfig,
};
use banyan_db::Db;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{TestStorage, apply_once};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Add {
    pub(crate) a: i64,
    pub(crate) b: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sum {
    pub(crate) sum: i64,
    /// Which server instance answered.
    pub(crate) instance: String,
    /// The correlation id the handler saw.
    pub(crate) correlation_id: String,
}

impl Message for Add {
    const SUBJECT: &str = "calc.add.v1";
}

impl Request for Add {
    type Response = Sum;
}

/// A request nothing handles, in a module that is remote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Divide {
    pub(crate) a: i64,
    pub(crate) b: i64,
}

impl Message for Divide {
    const SUBJECT: &str = "calc.divide.v1";
}

impl Request for Divide {
    type Response = i64;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OrderPlaced {
    pub(crate) order: Uuid,
}

impl Message for OrderPlaced {
    const SUBJECT: &str = "orders.placed.v1";
}

impl Event for OrderPlaced {
    fn aggregate_id(&self) -> Uuid {
        self.order
    }
}

/// A server bus whose `calc.add.v1` handler answers as `instance`, counting its calls.
/// Negative operands are rejected with details.
pub(crate) fn calc_server(instance: &'static str) -> (Bus, Arc<AtomicUsize>) {
    calc_server_with(instance, BusConfig::default())
}

/// The same on a bus with `config` (say a fault that slows it).
pub(crate) fn calc_server_with(
    instance: &'static str,
    config: BusConfig,
) -> (Bus, Arc<AtomicUsize>) {
    let bus = Bus::new(config);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    bus.handle::<Add, _, _>("calc", move |cx, add| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            if add.a < 0 || add.b < 0 {
                return Err(Rejection::new("negative", "operands must not be negative")
                    .with_details(serde_json::json!({ "a": add.a, "b": add.b })));
            }
            Ok(Sum {
                sum: add.a + add.b,
                instance: instance.to_owned(),
                correlation_id: cx.correlation_id().to_string(),
            })
        }
    });
    (bus, calls)
}

/// A bus hosting module `shipping`, which subscribes to `OrderPlaced` and applies it once
/// (inbox), with its database and outbox (so its dead letters have a store). Not served yet.
pub(crate) async fn shipping_bus(storage: &TestStorage) -> (Bus, Db) {
    let bus = Bus::new(BusConfig::default());
    let db = storage.open("shipping").await;
    let outbox = Outbox::start(&bus, db.clone());
    bus.subscribe::<OrderPlaced, _, _>("shipping", move |delivered| {
        let outbox = outbox.clone();
        async move { apply_once(&outbox, &delivered).await }
    });
    (bus, db)
}

/// A base URL where nothing listens: a port that was free a moment ago.
pub(crate) async fn dead_instance() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let address = listener.local_addr().expect("its address");
    drop(listener);
    format!("http://{address}")
}

/// What every point-to-point adapter does with instances: two live ones share requests in
/// turn, a dead one among them is skipped, and only dead ones (or none) is `Unavailable`.
/// `serve` serves a bus on a fresh port and returns its base URL; `calc_client` makes a bus
/// that reaches module `calc` at the given base URLs over the adapter under test.
pub(crate) async fn requests_are_balanced_and_skip_a_dead_instance(
    serve: impl AsyncFn(&Bus) -> String,
    calc_client: impl Fn(Vec<String>) -> Bus,
) {
    let (one, one_calls) = calc_server("one");
    let (two, two_calls) = calc_server("two");
    let (one_base, two_base) = (serve(&one).await, serve(&two).await);
    let cx = Context::root();

    // Two live instances share the requests evenly, in turn.
    let client = calc_client(vec![one_base.clone(), two_base.clone()]);
    let mut answered_by = Vec::new();
    for i in 0..10 {
        answered_by.push(
            client
                .request(&cx, Add { a: i, b: 1 })
                .await
                .unwrap()
                .instance,
        );
    }
    for pair in answered_by.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "consecutive requests alternate: {answered_by:?}"
        );
    }
    assert_eq!(one_calls.load(Ordering::SeqCst), 5);
    assert_eq!(two_calls.load(Ordering::SeqCst), 5);

    // A dead instance among them: every request is still answered, by the live ones.
    let client = calc_client(vec![one_base, dead_instance().await, two_base]);
    for i in 0..9 {
        let sum = client.request(&cx, Add { a: i, b: 1 }).await.unwrap();
        assert_eq!(sum.sum, i + 1);
    }
    assert!(
        one_calls.load(Ordering::SeqCst) > 5,
        "instance one took part"
    );
    assert!(
        two_calls.load(Ordering::SeqCst) > 5,
        "instance two took part"
    );
    assert_eq!(
        one_calls.load(Ordering::SeqCst) + two_calls.load(Ordering::SeqCst),
        19
    );

    // Only dead instances: unavailable, and nothing ran.
    let client = calc_client(vec![dead_instance().await, dead_instance().await]);
    let error = client.request(&cx, Add { a: 1, b: 1 }).await.unwrap_err();
    assert!(matches!(error, BusError::Unavailable { .. }), "{error:?}");
    // No instance at all: unavailable too.
    let client = calc_client(vec![]);
    let error = client.request(&cx, Add { a: 1, b: 1 }).await.unwrap_err();
    assert!(matches!(error, BusError::Unavailable { .. }), "{error:?}");
}

/// What every pushing adapter does when a subscribing module's only instance is down: a few
/// attempts with backoff, then `Unavailable` naming them. `events_to_shipping` makes the
/// adapter under test, sending `orders.placed.v1` to module `shipping` at the given URLs.
pub(crate) async fn a_publish_to_a_dead_instance_gives_up_after_its_retries<T: Transport>(
    events_to_shipping: impl Fn(Vec<String>, HttpTransportConfig) -> Arc<T>,
) {
    let config = HttpTransportConfig {
        publish_attempts: 3,
        backoff_base_ms: 5,
        backoff_max_ms: 20,
        ..HttpTransportConfig::default()
    };
    let transport = events_to_shipping(vec![dead_instance().await], config);
    let order = Uuid::now_v7();
    let error = transport
        .publish(
            Context::root().envelope(OrderPlaced::SUBJECT),
            serde_json::to_string(&OrderPlaced { order })
                .unwrap()
                .into(),
            order,
        )
        .await
        .unwrap_err();
    match error {
        BusError::Unavailable { subject, reason } => {
            assert_eq!(subject, "orders.placed.v1");
            assert!(reason.contains("3 attempts"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
