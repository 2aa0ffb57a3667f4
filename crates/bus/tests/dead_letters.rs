//! Dead letters, on SQLite and on PostgreSQL: an event that fails every attempt is kept in the
//! subscriber's database (and leaves the publisher's outbox), and a replay asked for later is
//! carried out by the subscriber's relay.

mod support;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use banyan_bus::{Bus, BusConfig, Context, Event, Message, Outbox, dead_letter};
use banyan_db::Db;
use serde::{Deserialize, Serialize};
use support::{TestStorage, applied, apply_once, rows, wait_until};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Charged {
    order_id: Uuid,
    cents: i64,
}

impl Message for Charged {
    const SUBJECT: &str = "shop.charged.v1";
}

impl Event for Charged {
    fn aggregate_id(&self) -> Uuid {
        self.order_id
    }
}

async fn letters(db: &Db, status: &str) -> Vec<dead_letter::DeadLetter> {
    dead_letter::list(db, Some(status), 10)
        .await
        .expect("listing dead letters")
}

async fn a_failing_event_is_dead_lettered_and_replayed_on_request(storage: &TestStorage) {
    const ATTEMPTS: u32 = 3;
    let bus = Bus::new(BusConfig {
        max_attempts: ATTEMPTS,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        relay_interval_ms: 20,
        ..BusConfig::default()
    });
    let shop = Outbox::start(&bus, storage.open("shop").await);
    let ledger = Outbox::start(&bus, storage.open("ledger").await);
    let (shop_db, ledger_db) = (shop.db(), ledger.db());

    // The ledger fails until it is declared healthy.
    let healthy = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let message_ids = Arc::new(Mutex::new(Vec::new()));
    bus.subscribe::<Charged, _, _>("ledger", {
        let (outbox, healthy, calls, ids) = (
            ledger.clone(),
            healthy.clone(),
            calls.clone(),
            message_ids.clone(),
        );
        move |delivered| {
            let (outbox, healthy, calls, ids) =
                (outbox.clone(), healthy.clone(), calls.clone(), ids.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                ids.lock().expect("lock").push(delivered.message_id());
                if !healthy.load(Ordering::SeqCst) {
                    return Err("the ledger is down".into());
                }
                apply_once(&outbox, &delivered).await
            }
        }
    });

    let charge = Charged {
        order_id: Uuid::now_v7(),
        cents: 1_999,
    };
    let mut uow = shop.begin().await.expect("beginning");
    sqlx::query("INSERT INTO items (id, note) VALUES ($1, 'charged')")
        .bind(charge.order_id.to_string())
        .execute(&mut *uow)
        .await
        .expect("inserting");
    uow.emit(&Context::root(), charge.clone())
        .await
        .expect("emitting");
    uow.commit().await.expect("committing");

    wait_until("the event is dead-lettered", async || {
        !letters(ledger_db, "dead").await.is_empty()
    })
    .await;
    let dead = letters(ledger_db, "dead").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.attempts, i64::from(ATTEMPTS));
    assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS as usize);
    let first_id = message_ids.lock().expect("lock")[0];
    assert_eq!(letter.message_id, first_id);
    assert_eq!(letter.subject, Charged::SUBJECT);
    assert_eq!(letter.module, "ledger");
    assert_eq!(letter.status, "dead");
    assert!(
        letter.error.contains("the ledger is down"),
        "{}",
        letter.error
    );
    assert_eq!(letter.payload["cents"], serde_json::json!(1_999));
    assert_eq!(letter.replayed_at_ms, None);
    // Dead-lettered counts as delivered: the publisher's outbox lets the event go.
    wait_until("the publisher's outbox is empty", async || {
        rows(shop_db, "outbox").await == 0
    })
    .await;
    assert_eq!(applied(ledger_db).await, 0);

    healthy.store(true, Ordering::SeqCst);
    assert!(
        dead_letter::request_replay(ledger_db, letter.id)
            .await
            .expect("asking for a replay")
    );
    assert!(
        !dead_letter::request_replay(ledger_db, letter.id)
            .await
            .expect("asking again"),
        "a replay was accepted twice"
    );
    assert!(
        !dead_letter::request_replay(ledger_db, Uuid::now_v7())
            .await
            .expect("asking for an unknown letter"),
    );

    wait_until("the replayed event is applied", async || {
        applied(ledger_db).await == 1
    })
    .await;
    wait_until("the letter is marked replayed", async || {
        letters(ledger_db, "replayed")
            .await
            .iter()
            .any(|l| l.id == letter.id)
    })
    .await;
    assert!(bus.shutdown().await, "the bus did not drain");

    let replayed = letters(ledger_db, "replayed").await;
    assert_eq!(replayed.len(), 1);
    assert!(replayed[0].replayed_at_ms.is_some());
    assert!(letters(ledger_db, "dead").await.is_empty());
    let all = dead_letter::list(ledger_db, None, 10)
        .await
        .expect("listing");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS as usize + 1);
    assert!(
        message_ids
            .lock()
            .expect("lock")
            .iter()
            .all(|id| *id == first_id),
        "the replay is the same message"
    );
    assert_eq!(applied(ledger_db).await, 1);
    assert_eq!(rows(ledger_db, "inbox").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_dead_lettered_and_replayed_on_request_on_sqlite() {
    a_failing_event_is_dead_lettered_and_replayed_on_request(&TestStorage::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_dead_lettered_and_replayed_on_request_on_postgres() {
    let Some(storage) = TestStorage::postgres().await else {
        return;
    };
    a_failing_event_is_dead_lettered_and_replayed_on_request(&storage).await;
}
