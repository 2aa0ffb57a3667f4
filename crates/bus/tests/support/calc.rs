//! What the adapters' tests share: a `calc` module answering requests, a `shipping` module
//! applying events once, and their messages.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use banyan_bus::{Bus, BusConfig, Event, Message, Outbox, Rejection, Request};
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
    let bus = Bus::new(BusConfig::default());
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
