//! Events: publish→handled, durable end to end, in four placements inside this one OS process.
//!
//! | case | publisher | subscriber |
//! |---|---|---|
//! | `in_process` | a unit of work on module `bench_pub`'s outbox, committed | a handler of module `bench` on the same bus |
//! | `http` | the same, its bus pushing events over `banyan_bus::http`, as process `main` | a second bus behind `banyan_bus::http::routes`, as process `bench` |
//! | `grpc` | the same, pushing over `banyan_bus::grpc` | a second bus behind `banyan_bus::grpc::routes` |
//! | `nats` | the same, its bus publishing to JetStream (acknowledged) | a second bus reading its durable consumer (`banyan_bus::nats::serve`) |
//!
//! One call is one event: the publisher commits its outbox row (SQLite, `synchronous = full`,
//! an fsync), the event travels, the subscriber records it in its inbox and commits (a second
//! fsync), and the call ends when the subscriber's `on_commit` has run. What that durability
//! costs is the gap to the request→reply cases, which touch no database; a fire-and-forget
//! event (Moleculer's over NATS) would be cheaper and lose what a crash catches in flight.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use banyan_bus::{
    Bus, BusConfig, Context, Event, HandlerError, MESSAGING_MIGRATIONS, Message, Outbox, Transport,
    grpc::GrpcTransport,
    http::{HttpTransport, HttpTransportConfig, StaticInstances, StaticSubscribers},
    nats::{self, NatsConfig, NatsTransport},
};
use banyan_db::{DatabaseConfig, Db};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    progress,
    reply::{self, Call, Case, CaseFigures, MODULE, Teardown},
    unique_suffix,
};

/// The publishing module: the first segment of the event's subject.
const PUBLISHER: &str = "bench_pub";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ticked {
    id: Uuid,
}

impl Message for Ticked {
    const SUBJECT: &str = "bench_pub.ticked.v1";
}

impl Event for Ticked {
    fn aggregate_id(&self) -> Uuid {
        self.id
    }
}

/// Who waits for which event to be handled.
type Waiting = Arc<Mutex<HashMap<Uuid, oneshot::Sender<()>>>>;

/// Sets the cases up, measures them round by round like the request→reply cases, tears
/// everything down.
pub(super) async fn run(settings: reply::Settings) -> anyhow::Result<Vec<CaseFigures>> {
    let mut teardown = Teardown::default();
    let dir = tempfile::Builder::new()
        .prefix("banyan-bench-events-")
        .tempdir()?;
    let outcome = async {
        let cases = build_cases(&settings, dir.path(), &mut teardown).await?;
        reply::measure("events", &cases, &settings).await
    }
    .await;
    teardown.finish().await;
    outcome
}

async fn build_cases(
    settings: &reply::Settings,
    dir: &std::path::Path,
    teardown: &mut Teardown,
) -> anyhow::Result<Vec<Case>> {
    progress("events: setting up the cases");
    let mut cases = vec![
        in_process_case(dir, teardown).await?,
        pushed_case(dir, Pusher::Http, teardown).await?,
        pushed_case(dir, Pusher::Grpc, teardown).await?,
    ];
    if let Some(url) = &settings.nats_url {
        let unique = unique_suffix();
        let config = NatsConfig {
            url: url.clone(),
            stream: format!("BANYAN_BENCH_EVENTS_{unique}"),
            subject_prefix: format!("banyan_bench_events_{unique}"),
            ..NatsConfig::default()
        };
        cases.push(nats_case(dir, &config, teardown).await?);
    }
    Ok(cases)
}

/// A module's database of its own, on SQLite with the shipped defaults (`synchronous = full`).
async fn open(dir: &std::path::Path, case: &str, module: &'static str) -> anyhow::Result<Db> {
    let config = DatabaseConfig {
        url: format!("sqlite://{}", dir.join(case).display()),
        ..DatabaseConfig::default()
    };
    Db::open(module, &config, &[&*MESSAGING_MIGRATIONS])
        .await
        .with_context(|| format!("opening the {case} case's {module} database"))
}

/// Subscribes module `bench` of `bus` to `Ticked`: inbox, commit, then the waiter is told.
async fn subscribe(bus: &Bus, dir: &std::path::Path, case: &str) -> anyhow::Result<Waiting> {
    let outbox = Outbox::start(bus, open(dir, case, MODULE).await?);
    let waiting: Waiting = Arc::default();
    bus.subscribe::<Ticked, _, _>(MODULE, {
        let waiting = waiting.clone();
        move |delivered| {
            let (outbox, waiting) = (outbox.clone(), waiting.clone());
            async move {
                let Some(mut uow) = outbox.begin_handling(&delivered).await? else {
                    return Ok::<_, HandlerError>(());
                };
                let id = delivered.id;
                uow.on_commit(move || {
                    let waiter = waiting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(());
                    }
                });
                uow.commit().await?;
                Ok(())
            }
        }
    });
    Ok(waiting)
}

/// Publishes one event through the publisher's outbox and waits until it was handled.
fn publish_call(outbox: Outbox, waiting: Waiting) -> Call {
    Arc::new(move |_| {
        let (outbox, waiting) = (outbox.clone(), waiting.clone());
        Box::pin(async move {
            let id = Uuid::now_v7();
            let (handled, wait) = oneshot::channel();
            waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, handled);
            let mut uow = outbox.begin().await?;
            uow.emit(&Context::root(), Ticked { id }).await?;
            uow.commit().await?;
            tokio::time::timeout(Duration::from_secs(30), wait)
                .await
                .context("the event was not handled within 30 s")?
                .context("the subscriber went away")?;
            Ok(())
        })
    })
}

async fn in_process_case(dir: &std::path::Path, teardown: &mut Teardown) -> anyhow::Result<Case> {
    let bus = Bus::new(BusConfig::default());
    let waiting = subscribe(&bus, dir, "in_process").await?;
    let outbox = Outbox::start(&bus, open(dir, "in_process", PUBLISHER).await?);
    teardown.buses.push(bus);
    Ok(Case {
        name: "in_process",
        call: publish_call(outbox, waiting),
    })
}

/// The adapters that push an event to the subscribing process.
#[derive(Clone, Copy)]
enum Pusher {
    Http,
    Grpc,
}

async fn pushed_case(
    dir: &std::path::Path,
    pusher: Pusher,
    teardown: &mut Teardown,
) -> anyhow::Result<Case> {
    let name = match pusher {
        Pusher::Http => "http",
        Pusher::Grpc => "grpc",
    };
    let (publisher_identity, subscriber_identity) = reply::identities()?;
    let subscriber = Bus::new(BusConfig::default());
    let waiting = subscribe(&subscriber, dir, name).await?;
    let routes = match pusher {
        Pusher::Http => banyan_bus::http::routes(subscriber.clone(), subscriber_identity),
        Pusher::Grpc => banyan_bus::grpc::routes(subscriber.clone(), subscriber_identity),
    };
    let base = reply::serve(routes, teardown).await?;
    let instances = Arc::new(StaticInstances::new([(MODULE, vec![base])]));
    let subscribers = Arc::new(StaticSubscribers::new([(Ticked::SUBJECT, vec![MODULE])]));
    let config = HttpTransportConfig::default();
    let transport: Arc<dyn Transport> = match pusher {
        Pusher::Http => Arc::new(HttpTransport::new(
            instances,
            subscribers,
            publisher_identity,
            config,
        )?),
        Pusher::Grpc => Arc::new(GrpcTransport::new(
            instances,
            subscribers,
            publisher_identity,
            config,
        )),
    };
    let publisher = Bus::new(BusConfig::default());
    publisher.wiring().forward_events_to(transport);
    let outbox = Outbox::start(&publisher, open(dir, name, PUBLISHER).await?);
    teardown.buses.extend([publisher, subscriber]);
    Ok(Case {
        name,
        call: publish_call(outbox, waiting),
    })
}

async fn nats_case(
    dir: &std::path::Path,
    config: &NatsConfig,
    teardown: &mut Teardown,
) -> anyhow::Result<Case> {
    let subscriber = Bus::new(BusConfig::default());
    let waiting = subscribe(&subscriber, dir, "nats").await?;
    subscriber.wiring().consume_through_transport(MODULE);
    let publisher_client = nats::connect(&config.url).await?;
    let transport = NatsTransport::new(publisher_client.clone(), config.clone());
    transport.ensure_stream().await?;
    teardown
        .streams
        .push((publisher_client, config.stream.clone()));
    let stop = CancellationToken::new();
    let handle = nats::serve(
        subscriber.clone(),
        nats::connect(&config.url).await?,
        config.clone(),
        stop.clone(),
    )
    .await?;
    teardown.nats.push((handle, stop));
    let publisher = Bus::new(BusConfig::default());
    publisher.wiring().forward_events_to(Arc::new(transport));
    let outbox = Outbox::start(&publisher, open(dir, "nats", PUBLISHER).await?);
    teardown.buses.extend([publisher, subscriber]);
    Ok(Case {
        name: "nats",
        call: publish_call(outbox, waiting),
    })
}
