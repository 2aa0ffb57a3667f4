//! What the bus costs over the bare tokio primitives it is built on.
//!
//! Cases, measured in one process on a 2-worker multi-thread runtime, interleaved round by
//! round (so drift of the machine hits every case alike), reported as medians across rounds:
//!
//! - `bare`: a spawned task receiving from a `tokio::sync::mpsc` channel and replying through a
//!   `oneshot`: the floor for any in-process request/reply.
//! - `bus request→reply`: `Bus::request` to a handler registered with `Bus::handle`, with no
//!   metrics recorder (every meter a no-op).
//! - `bus request→reply, metered`: the same with its meters in a Prometheus recorder, as in a
//!   server: what `/metrics` costs a call.
//! - `bus publish→handled`: `Bus::publish` until the subscriber has run.
//!
//! Then the bulkhead: a callee whose handler hangs holds all `SLOTS` of its edge, and
//! `CONCURRENCY` more callers ask it at once, with the bulkhead (`max_concurrent = SLOTS`,
//! `max_wait_ms = 0`) and without one (a cap no caller reaches): how long they wait for an
//! answer (all 64 at once on 2 workers, so a wait includes queueing behind the others) and
//! what the answer is; then, the slots still held, a request to another module against the
//! same request with nothing hanging.
//!
//! Latency is sequential (one call at a time, each timed with `Instant`); throughput runs
//! `CONCURRENCY` callers at once (for publish: one publisher, until every event is handled).
//!
//! `cargo bench -p banyan-bus` runs the full measurement; without `--bench` (as under
//! `cargo test`) it makes a tiny run that only checks the cases work.

use banyan_stats::{Latencies, median, micros};
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use banyan_bus::{Bus, BusConfig, BusError, Context, Event, Message, Request};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

const CONCURRENCY: usize = 64;
const WORKERS: usize = 2;
/// The hanging callee's slots in the bulkhead case.
const SLOTS: u32 = 8;
/// The deadline of a call in the bulkhead cases: what a caller without a bulkhead waits.
const HANG_DEADLINE_MS: u64 = 200;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping(u64);

impl Message for Ping {
    const SUBJECT: &str = "bench.ping.v1";
}

impl Request for Ping {
    type Response = u64;
}

/// Answered by a handler that hangs until the case ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stuck;

impl Message for Stuck {
    const SUBJECT: &str = "stuck.hang.v1";
}

impl Request for Stuck {
    type Response = ();
}

/// Handled one at a time: the subscriber signals each back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Echoed {
    aggregate: Uuid,
}

impl Message for Echoed {
    const SUBJECT: &str = "bench.echoed.v1";
}

impl Event for Echoed {
    fn aggregate_id(&self) -> Uuid {
        self.aggregate
    }
}

/// Handled in bulk: the subscriber counts them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Counted {
    aggregate: Uuid,
}

impl Message for Counted {
    const SUBJECT: &str = "bench.counted.v1";
}

impl Event for Counted {
    fn aggregate_id(&self) -> Uuid {
        self.aggregate
    }
}

type BoxedFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One operation of a case, callable from many tasks (both cases pay the same boxing).
type Op = Arc<dyn Fn(u64) -> BoxedFuture + Send + Sync>;

/// What one round measured for one case.
#[derive(Clone, Copy)]
struct Sample {
    p50_us: f64,
    p99_us: f64,
    ops_per_s: f64,
}

struct Settings {
    rounds: usize,
    iterations: usize,
    full: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let settings = if full {
        Settings {
            rounds: 11,
            iterations: 30_000,
            full,
        }
    } else {
        Settings {
            rounds: 1,
            iterations: 256,
            full,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("building the runtime");
    // Callers run on a runtime worker, as request handlers of a server do (`block_on` would
    // drive them from the main thread, outside the runtime's workers).
    runtime
        .block_on(async { tokio::spawn(run(settings)).await })
        .expect("the benchmark panicked");
}

async fn run(settings: Settings) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "setup: {cores} cores, tokio multi-thread runtime with {WORKERS} workers, {} rounds x {} \
         iterations per case, throughput with {CONCURRENCY} concurrent callers, medians across \
         rounds{}",
        settings.rounds,
        settings.iterations,
        if settings.full {
            ""
        } else {
            " (quick run: pass --bench for a real measurement)"
        }
    );

    let names = [
        "bare mpsc+oneshot round trip",
        "bus request→reply (in process)",
        "bus request→reply, metered",
        "bus publish→handled",
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); names.len()];
    for _ in 0..settings.rounds {
        // Fresh cases every round: where the runtime places their tasks differs from one setup
        // to the next, and the rounds should sample that too.
        for (at, build) in [
            bare_case,
            bus_request_case,
            bus_metered_request_case,
            bus_publish_case,
        ]
        .iter()
        .enumerate()
        {
            let case = build();
            case.measure(settings.iterations.min(2_000)).await; // warm-up
            samples[at].push(case.measure(settings.iterations).await);
            case.stop().await;
        }
    }
    let medians: Vec<Sample> = samples.iter().map(|s| median_sample(s)).collect();

    println!();
    println!(
        "{:<32} {:>8} {:>8} {:>17} {:>17}",
        "case", "p50 µs", "p99 µs", "throughput ops/s", "p50 min–max µs"
    );
    for ((name, m), rounds) in names.iter().zip(&medians).zip(&samples) {
        let (low, high) = rounds.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), s| {
            (lo.min(s.p50_us), hi.max(s.p50_us))
        });
        println!(
            "{name:<32} {:>8.2} {:>8.2} {:>17.0} {:>17}",
            m.p50_us,
            m.p99_us,
            m.ops_per_s,
            format!("{low:.2}–{high:.2}")
        );
    }
    let (bare, bus, metered) = (medians[0], medians[1], medians[2]);
    println!();
    println!(
        "bus/bare request→reply: p50 x{:.2}, throughput x{:.2}",
        bus.p50_us / bare.p50_us,
        bus.ops_per_s / bare.ops_per_s
    );
    println!(
        "metered/unmetered request→reply: p50 x{:.2}, throughput x{:.2}",
        metered.p50_us / bus.p50_us,
        metered.ops_per_s / bus.ops_per_s
    );

    bulkheads(&settings).await;
}

/// What one round of a bulkhead case measured.
#[derive(Clone, Copy)]
struct Crowded {
    /// The excess callers' wait for an answer.
    excess_p50_us: f64,
    excess_p99_us: f64,
    /// How many of them were turned away (`overloaded`) and how many timed out.
    overloaded: usize,
    timed_out: usize,
    /// A request to another module, with nothing hanging and while the callee's slots are held.
    other_idle_p50_us: f64,
    other_crowded_p50_us: f64,
}

async fn bulkheads(settings: &Settings) {
    let iterations = settings.iterations.min(5_000);
    let cases = [
        ("bulkhead (8 slots, no wait)", SLOTS, 0),
        ("no bulkhead (cap never reached)", 1_000_000, 0),
    ];
    let mut rounds: Vec<Vec<Crowded>> = vec![Vec::new(); cases.len()];
    for _ in 0..settings.rounds {
        for (at, (_, cap, wait)) in cases.iter().enumerate() {
            rounds[at].push(crowd(*cap, *wait, iterations).await);
        }
    }
    println!();
    println!(
        "a callee hanging with {SLOTS} calls in flight, then {CONCURRENCY} more callers at once \
         (deadline {HANG_DEADLINE_MS} ms); then another module asked {iterations} times, the slots \
         still held"
    );
    println!(
        "{:<32} {:>14} {:>14} {:>11} {:>10} {:>16} {:>18}",
        "case",
        "excess p50 µs",
        "excess p99 µs",
        "overloaded",
        "timed out",
        "other idle p50",
        "other crowded p50"
    );
    for ((name, _, _), rounds) in cases.iter().zip(&rounds) {
        let pick = |f: fn(&Crowded) -> f64| median(rounds.iter().map(f));
        println!(
            "{name:<32} {:>14.1} {:>14.1} {:>11.0} {:>10.0} {:>16.2} {:>18.2}",
            pick(|c| c.excess_p50_us),
            pick(|c| c.excess_p99_us),
            pick(|c| c.overloaded as f64),
            pick(|c| c.timed_out as f64),
            pick(|c| c.other_idle_p50_us),
            pick(|c| c.other_crowded_p50_us),
        );
    }
}

/// One round: a bus whose `stuck` handler hangs, with a bulkhead of `cap` slots.
async fn crowd(cap: u32, max_wait_ms: u64, iterations: usize) -> Crowded {
    // The holders' calls hang for the whole round; the excess callers' own deadline is short.
    let mut config = BusConfig {
        request_timeout_ms: 60_000,
        ..BusConfig::default()
    };
    config.policy.retry.attempts = 0;
    config.policy.bulkhead.max_concurrent = cap;
    config.policy.bulkhead.max_wait_ms = max_wait_ms;
    // The breaker would soon answer for the hanging callee; the bulkhead is measured here.
    config.policy.breaker.enabled = false;
    let bus = Bus::new(config);
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    bus.handle::<Stuck, _, _>("stuck", {
        let (release, entered) = (release.clone(), entered.clone());
        move |_, Stuck| {
            let (release, entered) = (release.clone(), entered.clone());
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                let _go = release.acquire().await;
                Ok(())
            }
        }
    });
    bus.handle::<Ping, _, _>("bench", |_, Ping(n)| async move { Ok(n + 1) });
    let other: Op = Arc::new({
        let bus = bus.clone();
        move |n| {
            let bus = bus.clone();
            Box::pin(async move {
                let answer = bus.request(&Context::root(), Ping(n)).await;
                assert_eq!(answer.expect("the other module failed"), n + 1);
            })
        }
    });
    let other_idle = latency(&other, iterations).await.0;

    // The slots are taken by calls that hang.
    let holders: Vec<_> = (0..SLOTS)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.request(&Context::root(), Stuck).await })
        })
        .collect();
    while entered.load(Ordering::SeqCst) < SLOTS as usize {
        tokio::task::yield_now().await;
    }
    let excess: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let cx = Context::root().within(Duration::from_millis(HANG_DEADLINE_MS));
                let started = Instant::now();
                let outcome = bus.request(&cx, Stuck).await;
                (started.elapsed(), outcome)
            })
        })
        .collect();
    let mut waits = Latencies::new();
    let (mut overloaded, mut timed_out) = (0, 0);
    for call in excess {
        let (waited, outcome) = call.await.expect("a caller panicked");
        waits.record(waited);
        match outcome {
            Err(BusError::Overloaded { .. }) => overloaded += 1,
            Err(BusError::Timeout { .. }) => timed_out += 1,
            other => panic!("an excess call came to {other:?}"),
        }
    }
    // The hanging callee's slots are still held.
    let other_crowded = latency(&other, iterations).await.0;
    release.add_permits(1_000_000);
    for holder in holders {
        holder
            .await
            .expect("a holder panicked")
            .expect("a holder failed");
    }
    assert!(bus.shutdown().await, "the bus did not drain");
    Crowded {
        excess_p50_us: micros(waits.percentile(0.50)),
        excess_p99_us: micros(waits.percentile(0.99)),
        overloaded,
        timed_out,
        other_idle_p50_us: micros(other_idle),
        other_crowded_p50_us: micros(other_crowded),
    }
}

/// A case: its sequential operation and how to run its throughput part.
struct Case {
    op: Op,
    throughput: Throughput,
    /// The bus under test, shut down after its round.
    bus: Option<Bus>,
}

enum Throughput {
    /// `CONCURRENCY` tasks calling `op` until `iterations` calls are done.
    Concurrent,
    /// Publish `iterations` events and wait until all are handled.
    Published { bus: Bus, counted: Arc<Counter> },
}

struct Counter {
    handled: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
}

impl Case {
    async fn stop(self) {
        if let Some(bus) = self.bus {
            assert!(bus.shutdown().await, "the bus did not drain");
        }
    }

    async fn measure(&self, iterations: usize) -> Sample {
        let (p50, p99) = latency(&self.op, iterations).await;
        let elapsed = match &self.throughput {
            Throughput::Concurrent => concurrent(&self.op, iterations).await,
            Throughput::Published { bus, counted } => published(bus, counted, iterations).await,
        };
        Sample {
            p50_us: micros(p50),
            p99_us: micros(p99),
            ops_per_s: iterations as f64 / elapsed.as_secs_f64(),
        }
    }
}

fn bare_case() -> Case {
    let (sender, mut receiver) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1_024);
    tokio::spawn(async move {
        while let Some((n, reply)) = receiver.recv().await {
            let _ = reply.send(n + 1);
        }
    });
    let op: Op = Arc::new(move |n| {
        let sender = sender.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            sender.send((n, reply)).await.expect("the server stopped");
            assert_eq!(answer.await.expect("no reply"), n + 1);
        })
    });
    Case {
        op,
        throughput: Throughput::Concurrent,
        bus: None,
    }
}

fn bus_request_case() -> Case {
    let bus = Bus::new(BusConfig::default());
    bus.handle::<Ping, _, _>("bench", |_, Ping(n)| async move { Ok(n + 1) });
    let cx = Context::root();
    let op: Op = Arc::new({
        let bus = bus.clone();
        move |n| {
            let (bus, cx) = (bus.clone(), cx.clone());
            Box::pin(async move {
                let answer = bus.request(&cx, Ping(n)).await.expect("request failed");
                assert_eq!(answer, n + 1);
            })
        }
    });
    Case {
        op,
        throughput: Throughput::Concurrent,
        bus: Some(bus),
    }
}

/// The request case with its meters in a Prometheus recorder of its own. A call's meters are
/// registered by its first call, made here inside the recorder's scope; the recorder is
/// local to this case, so the unmetered case in the same run stays unmetered.
fn bus_metered_request_case() -> Case {
    let case = bus_request_case();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let page = recorder.handle();
    metrics::with_local_recorder(&recorder, || futures::executor::block_on((case.op)(0)));
    assert!(
        page.render().contains(banyan_bus::meters::REQUESTS),
        "the metered case's meters are not in its recorder"
    );
    case
}

fn bus_publish_case() -> Case {
    let bus = Bus::new(BusConfig::default());
    let echoed = Arc::new(Notify::new());
    bus.subscribe::<Echoed, _, _>("bench", {
        let echoed = echoed.clone();
        move |_| {
            echoed.notify_one();
            async { Ok(()) }
        }
    });
    let counted = Arc::new(Counter {
        handled: AtomicUsize::new(0),
        target: AtomicUsize::new(usize::MAX),
        done: Notify::new(),
    });
    bus.subscribe::<Counted, _, _>("bench", {
        let counted = counted.clone();
        move |_| {
            if counted.handled.fetch_add(1, Ordering::AcqRel) + 1
                == counted.target.load(Ordering::Acquire)
            {
                counted.done.notify_one();
            }
            async { Ok(()) }
        }
    });
    let cx = Context::root();
    let op: Op = Arc::new({
        let bus = bus.clone();
        move |_| {
            let (bus, cx, echoed) = (bus.clone(), cx.clone(), echoed.clone());
            Box::pin(async move {
                let event = Echoed {
                    aggregate: Uuid::now_v7(),
                };
                bus.publish(&cx, event).await.expect("publish failed");
                echoed.notified().await;
            })
        }
    });
    Case {
        op,
        throughput: Throughput::Published {
            bus: bus.clone(),
            counted,
        },
        bus: Some(bus),
    }
}

/// Sequential calls, each timed: (p50, p99).
async fn latency(op: &Op, iterations: usize) -> (Duration, Duration) {
    let mut samples = Latencies::new();
    for n in 0..iterations as u64 {
        let started = Instant::now();
        op(n).await;
        samples.record(started.elapsed());
    }
    (samples.percentile(0.50), samples.percentile(0.99))
}

/// `CONCURRENCY` callers sharing `iterations` calls; the wall time of the lot.
async fn concurrent(op: &Op, iterations: usize) -> Duration {
    let per_task = iterations.div_ceil(CONCURRENCY);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    op((task * per_task + i) as u64).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a caller panicked");
    }
    let elapsed = started.elapsed();
    // Scale to exactly `iterations` calls.
    elapsed.mul_f64(iterations as f64 / (per_task * CONCURRENCY) as f64)
}

/// One publisher sends `iterations` events; the time until the subscriber handled them all.
async fn published(bus: &Bus, counted: &Counter, iterations: usize) -> Duration {
    counted.handled.store(0, Ordering::Release);
    counted.target.store(iterations, Ordering::Release);
    let cx = Context::root();
    let done = counted.done.notified();
    tokio::pin!(done);
    done.as_mut().enable();
    let started = Instant::now();
    for _ in 0..iterations {
        let event = Counted {
            aggregate: Uuid::now_v7(),
        };
        bus.publish(&cx, event).await.expect("publish failed");
    }
    done.await;
    let elapsed = started.elapsed();
    counted.target.store(usize::MAX, Ordering::Release);
    elapsed
}

fn median_sample(samples: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| median(samples.iter().map(f));
    Sample {
        p50_us: pick(|s| s.p50_us),
        p99_us: pick(|s| s.p99_us),
        ops_per_s: pick(|s| s.ops_per_s),
    }
}
