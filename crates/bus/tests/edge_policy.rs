//! Edge policies, the same whatever the placement: each scenario runs with the callee in the
//! caller's process, and in another bus reached over HTTP, over gRPC (real sockets) and over
//! NATS (the real server), with one configuration. Retries (idempotent requests only, within their budget), the circuit
//! breaker (open, fast errors, no calls while open, probes, closed again), the bulkhead, and
//! the deadline the callee inherits (its transaction rolled back when it passes).

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use banyan_bus::{
    Bus, BusConfig, BusError, Context, Message, ModuleBus, Rejection, Request,
    grpc::{self, GrpcTransport},
    http::{
        self, HttpTransport, HttpTransportConfig, SharedSecret, StaticInstances, StaticSubscribers,
    },
    nats::{self, NatsTransport},
    policy::BreakerState,
    testing::TestStream,
};
use serde::{Deserialize, Serialize};

const SECRET: &str = "test-shared-secret-0123456789";

/// A query: safe to ask twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lookup;

impl Message for Lookup {
    const SUBJECT: &str = "stock.lookup.v1";
}

impl Request for Lookup {
    type Response = u32;
    const IDEMPOTENT: bool = true;
}

/// A command without an idempotency key: never sent twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Take;

impl Message for Take {
    const SUBJECT: &str = "stock.take.v1";
}

impl Request for Take {
    type Response = u32;
}

/// A request whose handler waits until told, on module `slow`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hang;

impl Message for Hang {
    const SUBJECT: &str = "slow.hang.v1";
}

impl Request for Hang {
    type Response = ();
    const IDEMPOTENT: bool = true;
}

/// Where the callee runs.
#[derive(Debug, Clone, Copy)]
enum Place {
    InProcess,
    Http,
    Grpc,
    Nats,
}

const EVERY_PLACE: [Place; 4] = [Place::InProcess, Place::Http, Place::Grpc, Place::Nats];

/// The `stock` module's handlers: each call counted; failing (an internal rejection, as a
/// handler whose database is down answers) while `failing` is set.
struct Stock {
    calls: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

fn stock(bus: &Bus) -> Stock {
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    for subject in [Lookup::SUBJECT, Take::SUBJECT] {
        let (calls, failing) = (calls.clone(), failing.clone());
        let answer = move || {
            calls.fetch_add(1, Ordering::SeqCst);
            if failing.load(Ordering::SeqCst) {
                Err(Rejection::internal("the database is down"))
            } else {
                Ok(7)
            }
        };
        if subject == Lookup::SUBJECT {
            bus.handle::<Lookup, _, _>("stock", move |_, _| std::future::ready(answer()));
        } else {
            bus.handle::<Take, _, _>("stock", move |_, _| std::future::ready(answer()));
        }
    }
    Stock { calls, failing }
}

/// Serves `bus` over the adapter of `place` on a fresh port; its base URL.
async fn serve(bus: &Bus) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let peers = SharedSecret::new(SECRET).unwrap();
    let app = grpc::routes(bus.clone(), peers.clone()).merge(http::routes(bus.clone(), peers));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// What a placement keeps running for as long as the test uses it (the NATS server side,
/// the test's stream).
type Kept = Option<(
    TestStream,
    tokio_util::sync::CancellationToken,
    nats::ServeHandle,
)>;

/// The callee's bus, with its handlers registered by `register`, and the bus the caller
/// (module `shop`) asks on: the same one in process, another one reaching it over the
/// adapter otherwise. Both take `config`. `None` when NATS is skipped.
async fn placed<T>(
    place: Place,
    config: BusConfig,
    register: impl Fn(&Bus) -> T,
) -> Option<(ModuleBus, T, Kept)> {
    let callee = Bus::new(config.clone());
    let handles = register(&callee);
    let mut kept = None;
    let caller = match place {
        Place::InProcess => callee,
        Place::Nats => {
            let stream = TestStream::start().await?;
            let stop = tokio_util::sync::CancellationToken::new();
            let server = nats::connect(&stream.config.url).await.unwrap();
            let handle = nats::serve(callee, server, stream.config.clone(), stop.clone())
                .await
                .unwrap();
            let caller = Bus::new(config);
            let client = nats::connect(&stream.config.url).await.unwrap();
            let transport = Arc::new(NatsTransport::new(client, stream.config.clone()));
            caller.wiring().set_remote("stock", transport.clone());
            caller.wiring().set_remote("slow", transport);
            kept = Some((stream, stop, handle));
            caller
        }
        Place::Http | Place::Grpc => {
            let base = serve(&callee).await;
            let caller = Bus::new(config);
            let instances = || {
                Arc::new(StaticInstances::new(vec![
                    ("stock", vec![base.clone()]),
                    ("slow", vec![base.clone()]),
                ]))
            };
            let subscribers = Arc::new(StaticSubscribers::new(Vec::<(&str, Vec<&str>)>::new()));
            let secret = SharedSecret::new(SECRET).unwrap();
            let transport: Arc<dyn banyan_bus::Transport> = match place {
                Place::Http => Arc::new(
                    HttpTransport::new(
                        instances(),
                        subscribers,
                        secret,
                        HttpTransportConfig::default(),
                    )
                    .unwrap(),
                ),
                _ => Arc::new(GrpcTransport::new(
                    instances(),
                    subscribers,
                    secret,
                    HttpTransportConfig::default(),
                )),
            };
            caller.wiring().set_remote("stock", transport.clone());
            caller.wiring().set_remote("slow", transport);
            caller
        }
    };
    Some((ModuleBus::new(&caller, "shop"), handles, kept))
}

fn config(policy: serde_json::Value) -> BusConfig {
    BusConfig {
        policy: serde_json::from_value(policy).unwrap(),
        ..BusConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_query_is_retried_at_most_its_attempts_and_a_command_never() {
    for place in EVERY_PLACE {
        let config = config(serde_json::json!({
            "retry": { "attempts": 3, "backoff_base_ms": 10, "backoff_max_ms": 40,
                       "budget_percent": 100, "budget_min_per_sec": 100 },
            "breaker": { "enabled": false },
        }));
        let Some((bus, stock, _kept)) = placed(place, config, stock).await else {
            continue;
        };
        stock.failing.store(true, Ordering::SeqCst);
        let cx = Context::root();

        let error = bus.request(&cx, Lookup).await.unwrap_err();
        assert!(error.rejection().is_some(), "{place:?}: {error}");
        assert_eq!(
            stock.calls.load(Ordering::SeqCst),
            4,
            "{place:?}: 1 + 3 retries"
        );

        stock.calls.store(0, Ordering::SeqCst);
        bus.request(&cx, Take).await.unwrap_err();
        assert_eq!(
            stock.calls.load(Ordering::SeqCst),
            1,
            "{place:?}: a command runs once"
        );

        // A domain answer is an answer: not retried.
        stock.failing.store(false, Ordering::SeqCst);
        stock.calls.store(0, Ordering::SeqCst);
        assert_eq!(bus.request(&cx, Lookup).await.unwrap(), 7);
        assert_eq!(stock.calls.load(Ordering::SeqCst), 1, "{place:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_callee_that_always_fails_add_at_most_the_budget() {
    for place in EVERY_PLACE {
        let config = config(serde_json::json!({
            "retry": { "attempts": 3, "backoff_base_ms": 1, "backoff_max_ms": 1,
                       "budget_percent": 20, "budget_min_per_sec": 0 },
            "breaker": { "enabled": false },
        }));
        let Some((bus, stock, _kept)) = placed(place, config, stock).await else {
            continue;
        };
        stock.failing.store(true, Ordering::SeqCst);
        let cx = Context::root();
        let asked = 200;
        for _ in 0..asked {
            bus.request(&cx, Lookup).await.unwrap_err();
        }
        let calls = stock.calls.load(Ordering::SeqCst);
        // Without a budget: 800 calls. With 20 %: at most 240 (and some retries did happen).
        println!("{place:?}: {asked} requests at 100 % failure made {calls} calls");
        assert!(calls > asked, "{place:?}: {calls}");
        assert!(calls <= asked * 12 / 10 + 1, "{place:?}: {calls}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_failures_answers_at_once_probes_and_closes_after_recovery() {
    for place in EVERY_PLACE {
        let config = config(serde_json::json!({
            "retry": { "attempts": 0 },
            "breaker": { "window": 10, "min_calls": 5, "failure_rate_percent": 50,
                         "open_ms": 300, "half_open_probes": 2 },
        }));
        let Some((bus, stock, _kept)) = placed(place, config, stock).await else {
            continue;
        };
        let edge = |bus: &ModuleBus| bus.bus_edges();
        let cx = Context::root();
        stock.failing.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            let error = bus.request(&cx, Lookup).await.unwrap_err();
            assert!(error.rejection().is_some(), "{place:?}: {error}");
        }
        assert_eq!(
            edge(&bus),
            vec![("shop->stock".to_owned(), BreakerState::Open)]
        );

        // Open: answered at once, the callee sees nothing.
        let calls = stock.calls.load(Ordering::SeqCst);
        for _ in 0..20 {
            let error = bus.request(&cx, Lookup).await.unwrap_err();
            let BusError::CircuitOpen { retry_after, .. } = error else {
                panic!("{place:?}: {error}");
            };
            assert!(retry_after <= Duration::from_millis(300));
        }
        assert_eq!(stock.calls.load(Ordering::SeqCst), calls, "{place:?}");

        // It recovers; after open_ms two probes go through and close the breaker.
        stock.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(bus.request(&cx, Lookup).await.unwrap(), 7);
        assert_eq!(
            edge(&bus),
            vec![("shop->stock".to_owned(), BreakerState::HalfOpen)]
        );
        assert_eq!(bus.request(&cx, Lookup).await.unwrap(), 7);
        assert_eq!(
            edge(&bus),
            vec![("shop->stock".to_owned(), BreakerState::Closed)]
        );
        assert_eq!(stock.calls.load(Ordering::SeqCst), calls + 2, "{place:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_callee_fills_only_its_own_bulkhead() {
    for place in EVERY_PLACE {
        let config = config(serde_json::json!({
            "timeout_ms": 5_000,
            "bulkhead": { "max_concurrent": 2, "max_wait_ms": 20 },
        }));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let Some((bus, stock, _kept)) = placed(place, config, |bus| {
            let (release, entered) = (release.clone(), entered.clone());
            bus.handle::<Hang, _, _>("slow", move |_, _| {
                let (release, entered) = (release.clone(), entered.clone());
                async move {
                    entered.fetch_add(1, Ordering::SeqCst);
                    let _go = release.acquire().await;
                    Ok(())
                }
            });
            stock(bus)
        })
        .await
        else {
            continue;
        };
        let cx = Context::root();
        let hanging: Vec<_> = (0..10)
            .map(|_| {
                let (bus, cx) = (bus.clone(), cx.clone());
                tokio::spawn(async move { bus.request(&cx, Hang).await })
            })
            .collect();
        support::wait_until("two calls reach the hanging handler", async || {
            entered.load(Ordering::SeqCst) == 2
        })
        .await;
        // Another callee is not held up by the hanging one.
        assert_eq!(bus.request(&cx, Lookup).await.unwrap(), 7, "{place:?}");
        // The excess callers are turned away once their bounded wait ends, while the two
        // still hang.
        support::wait_until("eight callers are turned away", async || {
            hanging.iter().filter(|call| call.is_finished()).count() == 8
        })
        .await;
        release.add_permits(10);
        let mut outcomes = (0, 0);
        for call in hanging {
            match call.await.unwrap() {
                Ok(()) => outcomes.0 += 1,
                Err(BusError::Overloaded { .. }) => outcomes.1 += 1,
                Err(other) => panic!("{place:?}: {other}"),
            }
        }
        assert_eq!(outcomes, (2, 8), "{place:?}");
        assert_eq!(entered.load(Ordering::SeqCst), 2, "{place:?}");
        assert_eq!(stock.calls.load(Ordering::SeqCst), 1);
    }
}

/// `slow.hang.v1` on a database: inserts a row in a transaction, asks `stock` as it goes
/// (with what is left of its own deadline), then waits past its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callee_inherits_the_deadline_and_its_transaction_rolls_back_when_it_passes() {
    for place in EVERY_PLACE {
        let storage = support::TestStorage::sqlite();
        let db = storage.open("slow").await;
        let seen = Arc::new(std::sync::Mutex::new(None));
        let Some((bus, _stock, _kept)) = placed(place, BusConfig::default(), |bus| {
            let (db, seen, inner) = (db.clone(), seen.clone(), ModuleBus::new(bus, "slow"));
            bus.handle::<Hang, _, _>("slow", move |cx, _| {
                let (db, seen, inner) = (db.clone(), seen.clone(), inner.clone());
                async move {
                    *seen.lock().unwrap() = cx.remaining();
                    let mut tx = db.begin().await.unwrap();
                    sqlx::query("INSERT INTO items (id, note) VALUES ('1', 'charged')")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    inner.request(&cx, Lookup).await.unwrap();
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    tx.commit().await.unwrap();
                    Ok(())
                }
            });
            stock(bus)
        })
        .await
        else {
            continue;
        };
        let deadline = Duration::from_millis(300);
        let error = bus
            .request_within(&Context::root(), Hang, deadline)
            .await
            .unwrap_err();
        assert!(
            matches!(error, BusError::Timeout { .. }),
            "{place:?}: {error}"
        );
        let remaining = seen.lock().unwrap().expect("the handler saw a deadline");
        assert!(
            remaining <= deadline && !remaining.is_zero(),
            "{place:?}: {remaining:?}"
        );
        // The write lock is free again: the transaction was rolled back, not left hanging
        // until the handler's 30 s sleep ends.
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO items (id, note) VALUES ('2', 'after')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            support::rows(&db, "items").await,
            1,
            "{place:?}: only the later row"
        );
    }
}

/// The caller's edges and their breakers.
trait EdgesOf {
    fn bus_edges(&self) -> Vec<(String, BreakerState)>;
}

impl EdgesOf for ModuleBus {
    fn bus_edges(&self) -> Vec<(String, BreakerState)> {
        self.edges()
            .into_iter()
            .map(|e| (e.edge, e.breaker))
            .collect()
    }
}
