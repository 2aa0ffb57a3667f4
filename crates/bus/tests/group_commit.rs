//! Group commit (ADR 0007), on SQLite and on PostgreSQL: events that wait in a worker's queue
//! are handled in one transaction; each is applied once; a failing one costs its batch-mates
//! nothing but a second run; and what a handler asks to happen after its commit happens once,
//! after the batch's commit, never for a run that was rolled back.

mod support;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use banyan_bus::{Bus, BusConfig, Context, Event, HandlerError, Message, Outbox};
use banyan_db::Engine;
use serde::{Deserialize, Serialize};
use support::{TestStorage, applied, rows, wait_until};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noted {
    id: Uuid,
    flaky: bool,
}

impl Message for Noted {
    const SUBJECT: &str = "publisher.noted.v1";
}

impl Event for Noted {
    fn aggregate_id(&self) -> Uuid {
        // One aggregate: every event goes to the same worker, so they queue together.
        Uuid::nil()
    }
}

#[derive(Default)]
struct Seen {
    /// Handler runs per event.
    runs: Mutex<HashMap<Uuid, usize>>,
    /// Runs that shared a batch.
    batched: AtomicUsize,
    /// `on_commit` callbacks that ran, per event.
    committed: Mutex<HashMap<Uuid, usize>>,
}

async fn handle(
    outbox: &Outbox,
    seen: &Arc<Seen>,
    delivered: banyan_bus::Delivered<Noted>,
) -> Result<(), HandlerError> {
    let id = delivered.id;
    let run = {
        let mut runs = seen.runs.lock().expect("lock");
        let run = runs.entry(id).or_default();
        *run += 1;
        *run
    };
    let Some(mut uow) = outbox.begin_handling(&delivered).await? else {
        return Ok(());
    };
    if uow.is_batched() {
        seen.batched.fetch_add(1, Ordering::SeqCst);
    }
    sqlx::query("UPDATE counters SET n = n + 1 WHERE name = 'applied'")
        .execute(&mut *uow)
        .await?;
    // The flaky event fails its first run, after writing: that write must not survive.
    if delivered.flaky && run == 1 {
        return Err("flaky, the first time".into());
    }
    let seen = seen.clone();
    uow.on_commit(move || {
        *seen.committed.lock().expect("lock").entry(id).or_default() += 1;
    });
    uow.commit().await?;
    Ok(())
}

async fn waiting_events_commit_together_and_each_is_applied_once(storage: &TestStorage) {
    const EVENTS: usize = 40;
    let bus = Bus::new(BusConfig {
        relay_interval_ms: 20,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        ..BusConfig::default()
    });
    let publisher = Outbox::start(&bus, storage.open("publisher").await);
    let subscriber = Outbox::start(&bus, storage.open("subscriber").await);
    let seen = Arc::new(Seen::default());
    bus.subscribe::<Noted, _, _>("subscriber", {
        let (outbox, seen) = (subscriber.clone(), seen.clone());
        move |delivered| {
            let (outbox, seen) = (outbox.clone(), seen.clone());
            async move { handle(&outbox, &seen, delivered).await }
        }
    });

    // Hold the subscriber's writer (on SQLite its only one) while the events arrive: its
    // worker waits for it with the first, and the others queue behind.
    let hold = subscriber.begin().await.expect("holding the writer");
    let ids: Vec<Uuid> = (0..EVENTS).map(|_| Uuid::now_v7()).collect();
    let mut uow = publisher.begin().await.expect("beginning");
    for (i, id) in ids.iter().enumerate() {
        let event = Noted {
            id: *id,
            flaky: i == EVENTS / 2,
        };
        uow.emit(&Context::root(), event).await.expect("emitting");
    }
    uow.commit().await.expect("committing");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(hold);

    wait_until("every event was handled", async || {
        seen.committed.lock().expect("lock").len() == EVENTS
    })
    .await;
    wait_until("the delivered events left the outbox", async || {
        rows(publisher.db(), "outbox").await == 0
    })
    .await;
    assert_eq!(
        applied(subscriber.db()).await,
        EVENTS as i64,
        "an event was applied twice or not at all (the flaky one's first write survived?)"
    );
    assert_eq!(rows(subscriber.db(), "inbox").await, EVENTS as i64);
    let committed = seen.committed.lock().expect("lock").clone();
    for id in &ids {
        assert_eq!(
            committed.get(id),
            Some(&1),
            "on_commit of {id} ran {:?} times",
            committed.get(id)
        );
    }
    let runs = seen.runs.lock().expect("lock").clone();
    assert_eq!(
        runs[&ids[EVENTS / 2]],
        2,
        "the flaky event: one failure, one success"
    );
    if subscriber.db().engine() == Engine::Sqlite {
        // The waiting events shared transactions (here the batch holding the flaky event
        // rolled back and its events ran again one by one, so count the runs that batched).
        assert!(
            seen.batched.load(Ordering::SeqCst) > EVENTS / 2,
            "hardly any event shared a batch: {}",
            seen.batched.load(Ordering::SeqCst)
        );
    }
    assert!(bus.shutdown().await, "the bus did not drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_events_commit_together_and_each_is_applied_once_on_sqlite() {
    waiting_events_commit_together_and_each_is_applied_once(&TestStorage::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_events_commit_together_and_each_is_applied_once_on_postgres() {
    let Some(storage) = TestStorage::postgres().await else {
        return;
    };
    waiting_events_commit_together_and_each_is_applied_once(&storage).await;
}
