//! Request→reply: the same trivial request, answered at once, in six placements inside this
//! one OS process over loopback.
//!
//! | case | caller | answerer |
//! |---|---|---|
//! | `in_process` | `Bus::request` | a handler on the same bus |
//! | `bare_http` | reqwest `POST` of the JSON | a bare axum route (the HTTP floor) |
//! | `http` | `Bus::request` on a client bus, as process `main` | a second bus behind `banyan_bus::http::routes`, as process `bench` |
//! | `grpc` | the same over `banyan_bus::grpc` (one HTTP/2 connection) | a second bus behind `banyan_bus::grpc::routes` |
//! | `bare_nats` | `async_nats` request of the JSON | a bare subscriber that replies (the NATS floor) |
//! | `nats` | `Bus::request` on a client bus | a second bus behind `banyan_bus::nats::serve` |
//!
//! The bare cases do the same serde work as the adapters (the request encoded on one side,
//! decoded and answered on the other), so the gap to them is what the adapter adds: envelope
//! headers, the processes' identity tokens (each side an `Identity` of its own, as in a split),
//! deadlines, the bus's bookkeeping.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{Json, Router, http::header, routing::post};
use banyan_bus::{
    Bus, BusConfig, Context, Message, Rejection, Request,
    grpc::GrpcTransport,
    http::{HttpTransport, HttpTransportConfig, StaticInstances, StaticSubscribers},
    nats::{self, NatsConfig, NatsTransport, ServeHandle},
};
use futures::{StreamExt, future::BoxFuture};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use banyan_app::{
    identity::{Identity, IdentityConfig, new_key_pair},
    topology::{Placement, TopologyConfig, TransportKind},
};
use banyan_stats::{Latencies, median, micros, per_second};

use super::{progress, unique_suffix};

/// The module that answers the bench's request: the first segment of its subject.
pub(super) const MODULE: &str = "bench";

/// Bytes of filler in the request and its echo: a small message, as most bus requests are.
pub(super) const PAYLOAD_BYTES: usize = 64;

/// The bench's request: a sequence number and some filler, echoed back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    seq: u64,
    payload: String,
}

impl Ping {
    fn new(seq: u64) -> Self {
        Self {
            seq,
            payload: "x".repeat(PAYLOAD_BYTES),
        }
    }
}

impl Message for Ping {
    const SUBJECT: &'static str = "bench.ping.v1";
}

impl Request for Ping {
    type Response = Pong;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pong {
    seq: u64,
    payload: String,
}

/// The whole of every answerer's work: echo the request.
fn answer(ping: Ping) -> Pong {
    Pong {
        seq: ping.seq,
        payload: ping.payload,
    }
}

fn check(sent: u64, pong: &Pong) -> anyhow::Result<()> {
    anyhow::ensure!(
        pong.seq == sent,
        "the reply to request {sent} answered {}",
        pong.seq
    );
    Ok(())
}

/// How the part runs.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) requests: u64,
    pub(super) rounds: u64,
    pub(super) warmup: u64,
    pub(super) concurrency: u64,
    /// `None`: the NATS cases are left out.
    pub(super) nats_url: Option<String>,
}

/// What one round measured for one case.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct RoundFigures {
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    /// Sequential: one request at a time.
    pub(super) throughput_rps: f64,
    /// With `concurrency` callers at once; absent when concurrency is 1.
    pub(super) concurrent_rps: Option<f64>,
}

/// One case: its figures per round, and their medians.
#[derive(Debug, Clone, Serialize)]
pub(super) struct CaseFigures {
    pub(super) name: &'static str,
    pub(super) rounds: Vec<RoundFigures>,
    pub(super) median: RoundFigures,
}

/// Sets the cases up, measures them round by round, tears everything down.
pub(super) async fn run(settings: Settings) -> anyhow::Result<Vec<CaseFigures>> {
    let mut teardown = Teardown::default();
    let outcome = async {
        let cases = build_cases(&settings, &mut teardown).await?;
        measure("request→reply", &cases, &settings).await
    }
    .await;
    teardown.finish().await;
    outcome
}

// ------------------------------------------------------------------------------ the cases

/// One request→reply round trip of a case; `u64` is the request's sequence number.
pub(super) type Call = Arc<dyn Fn(u64) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) call: Call,
}

async fn build_cases(settings: &Settings, teardown: &mut Teardown) -> anyhow::Result<Vec<Case>> {
    progress("request→reply: setting up the cases");
    let mut cases = vec![
        in_process_case(teardown),
        bare_http_case(teardown).await?,
        http_case(teardown).await?,
        grpc_case(teardown).await?,
    ];
    if let Some(url) = &settings.nats_url {
        // One prefix and stream for the run: nothing meets another run's messages.
        let unique = unique_suffix();
        let config = NatsConfig {
            url: url.clone(),
            stream: format!("BANYAN_BENCH_{unique}"),
            subject_prefix: format!("banyan_bench_{unique}"),
            ..NatsConfig::default()
        };
        cases.push(bare_nats_case(&config, teardown).await?);
        cases.push(nats_case(&config, teardown).await?);
    } else {
        progress("request→reply: NATS cases skipped (--skip-nats)");
    }
    Ok(cases)
}

fn handling_bus() -> Bus {
    let bus = Bus::new(BusConfig::default());
    bus.handle::<Ping, _, _>(
        MODULE,
        |_, ping| async move { Ok::<_, Rejection>(answer(ping)) },
    );
    bus
}

/// `Bus::request` on `bus`, wherever its handler is.
fn bus_call(bus: Bus) -> Call {
    let cx = Context::root();
    Arc::new(move |seq| {
        let (bus, cx) = (bus.clone(), cx.clone());
        Box::pin(async move {
            let pong = bus.request(&cx, Ping::new(seq)).await?;
            check(seq, &pong)
        })
    })
}

fn in_process_case(teardown: &mut Teardown) -> Case {
    let bus = handling_bus();
    teardown.buses.push(bus.clone());
    Case {
        name: "in_process",
        call: bus_call(bus),
    }
}

async fn bare_http_case(teardown: &mut Teardown) -> anyhow::Result<Case> {
    let router = Router::new().route(
        "/bare/ping",
        post(|Json(ping): Json<Ping>| async move { Json(answer(ping)) }),
    );
    let url: Arc<str> = format!("{}/bare/ping", serve(router, teardown).await?).into();
    // Built as the HTTP adapter builds its client, so the two differ only in what they send.
    let client = banyan_bus::http::client_builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .build()?;
    let call: Call = Arc::new(move |seq| {
        let (client, url) = (client.clone(), url.clone());
        Box::pin(async move {
            let body = serde_json::to_vec(&Ping::new(seq))?;
            let response = client
                .post(&*url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await?
                .error_for_status()?;
            let pong: Pong = serde_json::from_slice(&response.bytes().await?)?;
            check(seq, &pong)
        })
    });
    Ok(Case {
        name: "bare_http",
        call,
    })
}

/// The identities of the `http` case's two sides: `main`, whose module `caller` sends the
/// bench's request, and `bench`, which hosts the module that answers it.
pub(super) fn identities() -> anyhow::Result<(Arc<Identity>, Arc<Identity>)> {
    let (main_key, main_public) = new_key_pair();
    let (bench_key, bench_public) = new_key_pair();
    let calls: BTreeMap<&'static str, &'static [&'static str]> =
        [("caller", &[Ping::SUBJECT][..])].into();
    let identity = |process: &str, key: &str| -> anyhow::Result<Arc<Identity>> {
        let mut topology = TopologyConfig::default();
        topology.modules.insert(
            MODULE.to_owned(),
            Placement {
                process: MODULE.to_owned(),
                transport: TransportKind::Http,
                balance: Default::default(),
            },
        );
        topology.process = process.to_owned();
        topology.identity = IdentityConfig {
            key: Some(key.to_owned()),
            public_keys: [
                ("main".to_owned(), main_public.clone()),
                (MODULE.to_owned(), bench_public.clone()),
            ]
            .into(),
        };
        let identity = Identity::load(Arc::new(topology), calls.clone(), Path::new("."), None)
            .map_err(|(key, reason)| anyhow::anyhow!("{key}: {reason}"))?;
        Ok(Arc::new(identity))
    };
    Ok((identity("main", &main_key)?, identity(MODULE, &bench_key)?))
}

async fn http_case(teardown: &mut Teardown) -> anyhow::Result<Case> {
    let (caller, answerer) = identities()?;
    let server = handling_bus();
    let base = serve(banyan_bus::http::routes(server.clone(), answerer), teardown).await?;
    let transport = HttpTransport::new(
        Arc::new(StaticInstances::new([(MODULE, vec![base])])),
        Arc::new(StaticSubscribers::default()),
        caller,
        HttpTransportConfig::default(),
    )?;
    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote(MODULE, Arc::new(transport));
    teardown.buses.extend([client.clone(), server]);
    Ok(Case {
        name: "http",
        call: bus_call(client),
    })
}

async fn grpc_case(teardown: &mut Teardown) -> anyhow::Result<Case> {
    let (caller, answerer) = identities()?;
    let server = handling_bus();
    let base = serve(banyan_bus::grpc::routes(server.clone(), answerer), teardown).await?;
    let transport = GrpcTransport::new(
        Arc::new(StaticInstances::new([(MODULE, vec![base])])),
        Arc::new(StaticSubscribers::default()),
        caller,
        HttpTransportConfig::default(),
    );
    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote(MODULE, Arc::new(transport));
    teardown.buses.extend([client.clone(), server]);
    Ok(Case {
        name: "grpc",
        call: bus_call(client),
    })
}

async fn bare_nats_case(config: &NatsConfig, teardown: &mut Teardown) -> anyhow::Result<Case> {
    // Two connections, as two processes would have: the answerer's and the caller's.
    let (answerer, caller) = (
        nats::connect(&config.url).await?,
        nats::connect(&config.url).await?,
    );
    let subject = format!("{}.bare.ping", config.subject_prefix);
    let mut requests = answerer
        .queue_subscribe(subject.clone(), MODULE.to_owned())
        .await
        .context("subscribing to the bare NATS subject")?;
    answerer.flush().await?;
    teardown.tasks.push(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            let (Some(reply), Ok(ping)) = (
                message.reply,
                serde_json::from_slice::<Ping>(&message.payload),
            ) else {
                continue;
            };
            if let Ok(body) = serde_json::to_vec(&answer(ping)) {
                let _ = answerer.publish(reply, body.into()).await;
            }
        }
    }));
    let subject: Arc<str> = subject.into();
    let call: Call = Arc::new(move |seq| {
        let (caller, subject) = (caller.clone(), subject.clone());
        Box::pin(async move {
            let body = serde_json::to_vec(&Ping::new(seq))?;
            let reply = caller.request(subject.to_string(), body.into()).await?;
            let pong: Pong = serde_json::from_slice(&reply.payload)?;
            check(seq, &pong)
        })
    });
    Ok(Case {
        name: "bare_nats",
        call,
    })
}

async fn nats_case(config: &NatsConfig, teardown: &mut Teardown) -> anyhow::Result<Case> {
    let server = handling_bus();
    let stop = CancellationToken::new();
    let answerer = nats::connect(&config.url).await?;
    let handle = nats::serve(server.clone(), answerer, config.clone(), stop.clone()).await?;
    let caller = nats::connect(&config.url).await?;
    let transport = NatsTransport::new(caller.clone(), config.clone());
    // The adapter makes the run's events stream before its first publish; made now, so the
    // end of the run has it to delete whatever happened in between.
    transport.ensure_stream().await?;
    teardown.streams.push((caller, config.stream.clone()));
    let client = Bus::new(BusConfig::default());
    client.wiring().set_remote(MODULE, Arc::new(transport));
    teardown.buses.extend([client.clone(), server]);
    teardown.nats.push((handle, stop));
    Ok(Case {
        name: "nats",
        call: bus_call(client),
    })
}

/// Serves `router` on a free loopback port until the teardown; returns its base URL.
pub(super) async fn serve(router: Router, teardown: &mut Teardown) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        // As the app's listeners do: without it, HTTP/2's several writes per answer meet
        // Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serving = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped.cancelled().await });
        if let Err(error) = serving.await {
            progress(format_args!("a bench HTTP server failed: {error}"));
        }
    });
    teardown.servers.push((stop, server));
    Ok(base)
}

/// What the cases leave running, stopped at the end of the part whatever happened.
#[derive(Default)]
pub(super) struct Teardown {
    pub(super) buses: Vec<Bus>,
    servers: Vec<(CancellationToken, JoinHandle<()>)>,
    pub(super) nats: Vec<(ServeHandle, CancellationToken)>,
    tasks: Vec<JoinHandle<()>>,
    /// NATS streams made for this run, with a connection to delete them over.
    pub(super) streams: Vec<(async_nats::Client, String)>,
}

impl Teardown {
    pub(super) async fn finish(self) {
        for (handle, stop) in &self.nats {
            stop.cancel();
            handle.stop();
        }
        for bus in &self.buses {
            bus.shutdown().await;
        }
        for (handle, _) in &self.nats {
            handle.stopped().await;
        }
        for (stop, server) in self.servers {
            stop.cancel();
            let _ = server.await;
        }
        for task in self.tasks {
            task.abort();
        }
        for (client, stream) in self.streams {
            if let Err(error) = async_nats::jetstream::new(client)
                .delete_stream(&stream)
                .await
            {
                progress(format_args!(
                    "could not delete the NATS stream {stream}: {error}"
                ));
            }
        }
    }
}

// ------------------------------------------------------------------------------ measuring

/// Measures `cases` round by round, interleaved; `part` names them in the progress lines.
pub(super) async fn measure(
    part: &str,
    cases: &[Case],
    settings: &Settings,
) -> anyhow::Result<Vec<CaseFigures>> {
    let mut rounds: Vec<Vec<RoundFigures>> = vec![Vec::new(); cases.len()];
    for round in 0..settings.rounds as usize {
        // Each round starts with the next case: none always runs first, or right after the
        // heaviest one.
        for offset in 0..cases.len() {
            let at = (round + offset) % cases.len();
            let case = &cases[at];
            let figures = measure_round(case, settings)
                .await
                .with_context(|| format!("{part} case {} failed", case.name))?;
            progress(format_args!(
                "{part} round {}/{}: {:<10} p50 {:>8.1} µs  p99 {:>8.1} µs  {:>8.0} req/s{}",
                round + 1,
                settings.rounds,
                case.name,
                figures.p50_us,
                figures.p99_us,
                figures.throughput_rps,
                figures.concurrent_rps.map_or(String::new(), |rps| format!(
                    "  ({} callers: {rps:.0} req/s)",
                    settings.concurrency
                )),
            ));
            rounds[at].push(figures);
        }
    }
    Ok(cases
        .iter()
        .zip(rounds)
        .map(|(case, rounds)| CaseFigures {
            name: case.name,
            median: median_figures(&rounds),
            rounds,
        })
        .collect())
}

/// A warm-up (connections, caches, first allocations), then the timed calls.
async fn measure_round(case: &Case, settings: &Settings) -> anyhow::Result<RoundFigures> {
    sequential(&case.call, settings.warmup).await?;
    let (latencies, elapsed) = sequential(&case.call, settings.requests).await?;
    let concurrent_rps = if settings.concurrency > 1 {
        // The pool may need a connection per caller: opened during this warm-up.
        let warmup = settings.warmup.max(settings.concurrency);
        concurrent(&case.call, warmup, settings.concurrency).await?;
        let elapsed = concurrent(&case.call, settings.requests, settings.concurrency).await?;
        Some(per_second(settings.requests, elapsed))
    } else {
        None
    };
    Ok(RoundFigures {
        p50_us: micros(latencies.percentile(0.50)),
        p99_us: micros(latencies.percentile(0.99)),
        throughput_rps: per_second(settings.requests, elapsed),
        concurrent_rps,
    })
}

/// `count` calls one after another, each timed; and the time of the lot.
async fn sequential(call: &Call, count: u64) -> anyhow::Result<(Latencies, Duration)> {
    let mut latencies = Latencies::new();
    let started = Instant::now();
    for seq in 0..count {
        let sent = Instant::now();
        call(seq).await?;
        latencies.record(sent.elapsed());
    }
    Ok((latencies, started.elapsed()))
}

/// `callers` tasks sharing `count` calls; the wall time until the last one is answered.
async fn concurrent(call: &Call, count: u64, callers: u64) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<JoinHandle<anyhow::Result<()>>> = (0..callers)
        .map(|_| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= count {
                        return Ok(());
                    }
                    call(seq).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a caller panicked")??;
    }
    Ok(started.elapsed())
}

fn median_figures(rounds: &[RoundFigures]) -> RoundFigures {
    let concurrent: Vec<f64> = rounds.iter().filter_map(|r| r.concurrent_rps).collect();
    RoundFigures {
        p50_us: median(rounds.iter().map(|r| r.p50_us)),
        p99_us: median(rounds.iter().map(|r| r.p99_us)),
        throughput_rps: median(rounds.iter().map(|r| r.throughput_rps)),
        concurrent_rps: (!concurrent.is_empty()).then(|| median(concurrent)),
    }
}
