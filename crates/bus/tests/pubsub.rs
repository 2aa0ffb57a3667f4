//! Publish/subscribe in process: delivery once per subscribing module, order per aggregate,
//! and backpressure from a slow subscriber.

mod support;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use banyan_bus::{Bus, BusConfig, Context, Event, Message};
use serde::{Deserialize, Serialize};
use support::wait_until;
use tokio::sync::Semaphore;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ticked {
    aggregate: Uuid,
    seq: u32,
}

impl Message for Ticked {
    const SUBJECT: &str = "clock.ticked.v1";
}

impl Event for Ticked {
    fn aggregate_id(&self) -> Uuid {
        self.aggregate
    }
}

/// What one subscribing module saw: (message id, aggregate, sequence number), in handling order.
type Log = Arc<Mutex<Vec<(Uuid, Uuid, u32)>>>;

fn len(log: &Log) -> usize {
    log.lock().expect("log lock").len()
}

/// Subscribes `group` to `Ticked`, logging every delivery after a few yields, so that the
/// group's workers really interleave.
fn subscribe_logging(bus: &Bus, group: &'static str) -> Log {
    let log: Log = Arc::default();
    let sink = log.clone();
    bus.subscribe::<Ticked, _, _>(group, move |delivered| {
        let sink = sink.clone();
        async move {
            for _ in 0..(delivered.seq % 3) {
                tokio::task::yield_now().await;
            }
            sink.lock().expect("log lock").push((
                delivered.message_id(),
                delivered.aggregate,
                delivered.seq,
            ));
            Ok(())
        }
    });
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscribing_module_gets_an_event_once_even_with_several_workers() {
    const EVENTS: usize = 1_000;
    const PUBLISHERS: usize = 4;
    let bus = Bus::new(BusConfig {
        event_partitions: 4,
        ..BusConfig::default()
    });
    let groups = [
        ("a", subscribe_logging(&bus, "a")),
        ("b", subscribe_logging(&bus, "b")),
    ];

    // Four publishers at once; every event is about an aggregate of its own.
    let aggregates: Vec<Uuid> = (0..EVENTS).map(|_| Uuid::now_v7()).collect();
    let mut publishers = Vec::new();
    for chunk in aggregates.chunks(EVENTS / PUBLISHERS) {
        let (bus, chunk) = (bus.clone(), chunk.to_vec());
        publishers.push(tokio::spawn(async move {
            let cx = Context::root();
            for aggregate in chunk {
                bus.publish(&cx, Ticked { aggregate, seq: 0 })
                    .await
                    .expect("publishing");
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("a publisher panicked");
    }
    for (group, log) in &groups {
        wait_until(
            &format!("module `{group}` handled {EVENTS} events"),
            async || len(log) >= EVENTS,
        )
        .await;
    }
    // Shutdown drains every queue: nothing handled later could hide a duplicate.
    assert!(bus.shutdown().await, "the bus did not drain");

    let published: HashSet<Uuid> = aggregates.iter().copied().collect();
    for (group, log) in &groups {
        let log = log.lock().expect("log lock");
        assert_eq!(
            log.len(),
            EVENTS,
            "module `{group}` handled some event twice"
        );
        let message_ids: HashSet<Uuid> = log.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(
            message_ids.len(),
            EVENTS,
            "module `{group}` saw a message id twice"
        );
        let seen: HashSet<Uuid> = log.iter().map(|(_, aggregate, _)| *aggregate).collect();
        assert_eq!(seen, published, "module `{group}` missed events");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_one_aggregate_are_handled_in_the_order_they_were_published() {
    const STEPS: u32 = 50;
    let bus = Bus::new(BusConfig {
        event_partitions: 4,
        ..BusConfig::default()
    });
    let groups = [
        ("a", subscribe_logging(&bus, "a")),
        ("b", subscribe_logging(&bus, "b")),
    ];

    // The tracked aggregate's steps, interleaved with events of other aggregates that go to
    // the other workers.
    let tracked = Uuid::now_v7();
    let cx = Context::root();
    for seq in 0..STEPS {
        bus.publish(
            &cx,
            Ticked {
                aggregate: tracked,
                seq,
            },
        )
        .await
        .expect("publishing");
        for _ in 0..3 {
            let other = Ticked {
                aggregate: Uuid::now_v7(),
                seq,
            };
            bus.publish(&cx, other).await.expect("publishing");
        }
    }
    let total = STEPS as usize * 4;
    for (group, log) in &groups {
        wait_until(
            &format!("module `{group}` handled {total} events"),
            async || len(log) >= total,
        )
        .await;
    }
    assert!(bus.shutdown().await, "the bus did not drain");

    for (group, log) in &groups {
        let steps: Vec<u32> = log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|(_, aggregate, _)| *aggregate == tracked)
            .map(|(_, _, seq)| *seq)
            .collect();
        assert_eq!(
            steps,
            (0..STEPS).collect::<Vec<_>>(),
            "module `{group}` handled one aggregate's events out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_holds_its_publisher_back_instead_of_growing_a_queue() {
    const EVENTS: usize = 1_000;
    const QUEUE: usize = 16;
    let bus = Bus::new(BusConfig {
        event_partitions: 1,
        event_queue: QUEUE,
        ..BusConfig::default()
    });
    // The handler cannot finish until the test hands out permits.
    let permits = Arc::new(Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    bus.subscribe::<Ticked, _, _>("slow", {
        let (permits, entered, handled) = (permits.clone(), entered.clone(), handled.clone());
        move |_| {
            let (permits, entered, handled) = (permits.clone(), entered.clone(), handled.clone());
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                permits.acquire().await?.forget();
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    });
    assert_eq!(bus.wiring().queue_capacity("slow"), QUEUE);

    let published = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn({
        let (bus, published) = (bus.clone(), published.clone());
        async move {
            let cx = Context::root();
            for seq in 0..EVENTS as u32 {
                let event = Ticked {
                    aggregate: Uuid::now_v7(),
                    seq,
                };
                bus.publish(&cx, event).await.expect("publishing");
                published.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    // One event in the handler, a full queue behind it, and the publisher waiting.
    let limit = QUEUE + 1;
    wait_until("the queue is full and the publisher blocked", async || {
        let published = published.load(Ordering::SeqCst);
        assert!(
            published <= limit,
            "{published} events were accepted with room for {limit}"
        );
        published == limit
            && bus.wiring().queue_depth("slow") == QUEUE
            && entered.load(Ordering::SeqCst) == 1
    })
    .await;
    // However long it is given, the publisher gets no further while the subscriber is stuck.
    for round in 0..200 {
        if round % 20 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            published.load(Ordering::SeqCst),
            limit,
            "the publisher got past a full queue"
        );
        assert_eq!(bus.wiring().queue_depth("slow"), QUEUE);
        assert_eq!(handled.load(Ordering::SeqCst), 0);
        assert!(
            !publisher.is_finished(),
            "the publisher finished against a stuck subscriber"
        );
    }

    permits.add_permits(EVENTS);
    wait_until("the slow subscriber handled every event", async || {
        handled.load(Ordering::SeqCst) == EVENTS
    })
    .await;
    publisher.await.expect("the publisher panicked");
    assert_eq!(published.load(Ordering::SeqCst), EVENTS);
    assert_eq!(bus.wiring().queue_depth("slow"), 0);
    assert!(bus.shutdown().await, "the bus did not drain");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        EVENTS,
        "an event was handled twice"
    );
}
