//! Shutdown: work accepted before it is finished, nothing new is taken.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use banyan_bus::{Bus, BusConfig, BusError, Context, Event, Message, Request};
use serde::{Deserialize, Serialize};
use support::wait_until;
use tokio::sync::RwLock;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noted {
    id: Uuid,
}

impl Message for Noted {
    const SUBJECT: &str = "notes.noted.v1";
}

impl Event for Noted {
    fn aggregate_id(&self) -> Uuid {
        self.id
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Double(u64);

impl Message for Double {
    const SUBJECT: &str = "math.double.v1";
}

impl Request for Double {
    type Response = u64;
}

/// Nobody answers it: `NoHandler` while the bus runs, `Unavailable` once it shuts down.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Probe;

impl Message for Probe {
    const SUBJECT: &str = "nobody.probe.v1";
}

impl Request for Probe {
    type Response = ();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_work() {
    const EVENTS: usize = 200;
    const REQUESTS: usize = 10;
    let bus = Bus::new(BusConfig {
        drain_timeout_ms: 30_000,
        ..BusConfig::default()
    });
    // Every handler waits at this gate, so all the work is still in flight when shutdown
    // starts.
    let gate = Arc::new(RwLock::new(()));
    let closed = gate.clone().write_owned().await;

    let handled = Arc::new(AtomicUsize::new(0));
    bus.subscribe::<Noted, _, _>("notes", {
        let (gate, handled) = (gate.clone(), handled.clone());
        move |_| {
            let (gate, handled) = (gate.clone(), handled.clone());
            async move {
                let _open = gate.read().await;
                tokio::task::yield_now().await;
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    });
    let entered = Arc::new(AtomicUsize::new(0));
    bus.handle::<Double, _, _>("math", {
        let (gate, entered) = (gate.clone(), entered.clone());
        move |_, Double(n)| {
            let (gate, entered) = (gate.clone(), entered.clone());
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                let _open = gate.read().await;
                tokio::task::yield_now().await;
                Ok(n * 2)
            }
        }
    });

    let cx = Context::root();
    for _ in 0..EVENTS {
        bus.publish(&cx, Noted { id: Uuid::now_v7() })
            .await
            .expect("publishing");
    }
    let requests: Vec<_> = (0..REQUESTS as u64)
        .map(|n| {
            let bus = bus.clone();
            tokio::spawn(async move {
                bus.request_within(&Context::root(), Double(n), Duration::from_secs(60))
                    .await
            })
        })
        .collect();
    wait_until("every request reached its handler", async || {
        entered.load(Ordering::SeqCst) == REQUESTS
    })
    .await;

    let shutdown = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    wait_until("the bus stopped taking work", async || {
        let probe = bus
            .request_within(&cx, Probe, Duration::from_secs(60))
            .await;
        matches!(probe, Err(BusError::Unavailable { .. }))
    })
    .await;
    assert_eq!(handled.load(Ordering::SeqCst), 0, "the gate was open");
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the work in flight"
    );
    assert!(matches!(
        bus.publish(&cx, Noted { id: Uuid::now_v7() }).await,
        Err(BusError::Unavailable { .. })
    ));

    drop(closed);
    let drained = shutdown.await.expect("shutdown panicked");
    assert!(drained, "shutdown reported work left undone");
    assert_eq!(
        handled.load(Ordering::SeqCst),
        EVENTS,
        "queued events were dropped"
    );
    for (n, request) in requests.into_iter().enumerate() {
        let answer = request.await.expect("a caller panicked");
        assert_eq!(answer, Ok(n as u64 * 2), "request {n} lost its answer");
    }

    let after = bus.request(&cx, Double(21)).await;
    assert!(
        matches!(after, Err(BusError::Unavailable { .. })),
        "a request after shutdown: {after:?}"
    );
}
