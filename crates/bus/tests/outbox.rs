//! The outbox and the inbox, on SQLite and on PostgreSQL: an event recorded with a state change
//! is delivered after the commit, applied once however often it arrives, and its outbox row is
//! removed once delivered.

mod support;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use banyan_bus::{Bus, BusConfig, Context, Envelope, Event, Message, Outbox};
use serde::{Deserialize, Serialize};
use support::{TestStorage, applied, apply_once, rows, wait_until};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ItemAdded {
    item_id: Uuid,
    note: String,
}

impl Message for ItemAdded {
    const SUBJECT: &str = "publisher.item_added.v1";
}

impl Event for ItemAdded {
    fn aggregate_id(&self) -> Uuid {
        self.item_id
    }
}

/// Deliveries the subscriber received: envelope and event as JSON, in order.
type Received = Arc<Mutex<Vec<(Envelope, ItemAdded)>>>;

/// A publisher module with an outbox and a subscriber module applying `ItemAdded` once.
struct Modules {
    bus: Bus,
    publisher: Outbox,
    subscriber: Outbox,
    received: Received,
    calls: Arc<AtomicUsize>,
}

async fn start(storage: &TestStorage) -> Modules {
    let bus = Bus::new(BusConfig {
        relay_interval_ms: 20,
        ..BusConfig::default()
    });
    let publisher = Outbox::start(&bus, storage.open("publisher").await);
    let subscriber = Outbox::start(&bus, storage.open("subscriber").await);
    let received: Received = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    bus.subscribe::<ItemAdded, _, _>("subscriber", {
        let (outbox, received, calls) = (subscriber.clone(), received.clone(), calls.clone());
        move |delivered| {
            let (outbox, received, calls) = (outbox.clone(), received.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                received
                    .lock()
                    .expect("lock")
                    .push(((*delivered.envelope).clone(), (*delivered.event).clone()));
                apply_once(&outbox, &delivered).await
            }
        }
    });
    Modules {
        bus,
        publisher,
        subscriber,
        received,
        calls,
    }
}

/// Adds an item and records its event in one transaction; commits only if `commit`.
async fn add_item(publisher: &Outbox, item_id: Uuid, note: &str, commit: bool) -> ItemAdded {
    let item = ItemAdded {
        item_id,
        note: note.to_owned(),
    };
    let mut uow = publisher.begin().await.expect("beginning a unit of work");
    sqlx::query("INSERT INTO items (id, note) VALUES ($1, $2)")
        .bind(item.item_id.to_string())
        .bind(&item.note)
        .execute(&mut *uow)
        .await
        .expect("inserting the item");
    uow.emit(&Context::root(), item.clone())
        .await
        .expect("recording the event");
    if commit {
        uow.commit().await.expect("committing");
    } else {
        drop(uow);
    }
    item
}

async fn an_event_is_applied_once_however_often_it_is_delivered(storage: &TestStorage) {
    let modules = start(storage).await;
    let (publisher_db, subscriber_db) = (modules.publisher.db(), modules.subscriber.db());

    let item = add_item(&modules.publisher, Uuid::now_v7(), "first", true).await;
    assert_eq!(rows(publisher_db, "items").await, 1);
    wait_until("the subscriber applied the event", async || {
        applied(subscriber_db).await == 1
    })
    .await;
    wait_until("the delivered event left the outbox", async || {
        rows(publisher_db, "outbox").await == 0
    })
    .await;
    assert_eq!(modules.publisher.pending().await.expect("pending"), 0);

    // The same envelope again, twice in a row and twice at once: as a transport or the relay
    // would redeliver it.
    let (envelope, event) = modules.received.lock().expect("lock")[0].clone();
    assert_eq!(envelope.subject, ItemAdded::SUBJECT);
    assert_eq!(event.item_id, item.item_id);
    let json: Arc<str> = serde_json::to_string(&event).expect("encoding").into();
    let redeliver = || {
        modules.bus.inbound("nats").deliver_remote_event(
            envelope.clone(),
            json.clone(),
            item.item_id,
        )
    };
    redeliver().await.expect("redelivering");
    redeliver().await.expect("redelivering");
    let (one, two) = tokio::join!(redeliver(), redeliver());
    one.and(two).expect("redelivering");

    assert_eq!(
        modules.calls.load(Ordering::SeqCst),
        5,
        "every delivery reached the handler"
    );
    assert_eq!(
        applied(subscriber_db).await,
        1,
        "a redelivery was applied again"
    );
    assert_eq!(rows(subscriber_db, "inbox").await, 1);
    assert!(modules.bus.shutdown().await, "the bus did not drain");
    assert_eq!(applied(subscriber_db).await, 1);
    assert_eq!(rows(publisher_db, "outbox").await, 0);
}

async fn the_event_of_a_rolled_back_unit_of_work_is_never_published(storage: &TestStorage) {
    let modules = start(storage).await;
    let publisher_db = modules.publisher.db();

    // The same item (the same aggregate, so the same worker, in order) twice: first added and
    // rolled back, then added for good. The second insert succeeds only if the first is gone.
    let item_id = Uuid::now_v7();
    add_item(&modules.publisher, item_id, "discarded", false).await;
    add_item(&modules.publisher, item_id, "kept", true).await;
    wait_until("the committed event was applied", async || {
        applied(modules.subscriber.db()).await == 1
    })
    .await;
    assert!(modules.bus.shutdown().await, "the bus did not drain");

    // Had the discarded event gone out, it would have been queued (and handled) before the
    // kept one, which the subscriber has handled: it got only the kept one.
    let received: Vec<(Uuid, String)> = modules
        .received
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, event)| (event.item_id, event.note.clone()))
        .collect();
    assert_eq!(received, vec![(item_id, "kept".to_owned())]);
    assert_eq!(
        rows(publisher_db, "items").await,
        1,
        "the rolled-back item was kept"
    );
    assert_eq!(rows(publisher_db, "outbox").await, 0);
}

/// A process starts its modules one after another, and the first may have events to send
/// (its outbox after a crash, its own start-up) before the later ones subscribe. A held bus
/// sends nothing until it opens, so the module that subscribed last still gets them: an event
/// sent at once would have been acknowledged by the subscribers of the moment and its row
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_before_every_module_subscribed_reach_the_late_subscriber() {
    let storage = TestStorage::sqlite();
    let bus = Bus::held(BusConfig {
        relay_interval_ms: 20,
        ..BusConfig::default()
    });
    let publisher = Outbox::start(&bus, storage.open("publisher").await);
    add_item(&publisher, Uuid::now_v7(), "early", true).await;

    let subscriber = Outbox::start(&bus, storage.open("subscriber").await);
    bus.subscribe::<ItemAdded, _, _>("subscriber", {
        let outbox = subscriber.clone();
        move |delivered| {
            let outbox = outbox.clone();
            async move { apply_once(&outbox, &delivered).await }
        }
    });
    assert_eq!(
        rows(publisher.db(), "outbox").await,
        1,
        "nothing was sent yet"
    );
    bus.wiring().open_events();
    wait_until("the late subscriber applied the early event", async || {
        applied(subscriber.db()).await == 1
    })
    .await;
    wait_until("the delivered event left the outbox", async || {
        rows(publisher.db(), "outbox").await == 0
    })
    .await;
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_applied_once_however_often_it_is_delivered_on_sqlite() {
    an_event_is_applied_once_however_often_it_is_delivered(&TestStorage::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_applied_once_however_often_it_is_delivered_on_postgres() {
    let Some(storage) = TestStorage::postgres().await else {
        return;
    };
    an_event_is_applied_once_however_often_it_is_delivered(&storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_of_a_rolled_back_unit_of_work_is_never_published_on_sqlite() {
    the_event_of_a_rolled_back_unit_of_work_is_never_published(&TestStorage::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_of_a_rolled_back_unit_of_work_is_never_published_on_postgres() {
    let Some(storage) = TestStorage::postgres().await else {
        return;
    };
    the_event_of_a_rolled_back_unit_of_work_is_never_published(&storage).await;
}
