//! `/metrics`: every process's numbers in Prometheus's text format, on a listener of its own
//! (`[metrics]`), never on the public one.
//!
//! Counters and histograms are recorded as things happen, through the `metrics` facade: HTTP
//! requests per route template (here), bus requests per edge and placement and event
//! deliveries ([`banyan_bus::meters`]), rate-limit refusals and shed requests. What is a state
//! rather than an event (outbox backlogs, queue depths, pools, instances, breakers, the
//! process's memory and CPU) is read when Prometheus scrapes, so it is never stale.
//!
//! The recorder is the process's one global (the facade's design): a test process that runs
//! several shops sees their sum.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use banyan_bus::{Bus, policy::BreakerState};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{
    operations::Hosts,
    registry::{Health, Registry},
    route_policy::RoutePolicies,
};

/// HTTP requests, by method, route template and status class.
pub const HTTP_REQUESTS: &str = "http_server_requests_total";
/// HTTP request latency, by method and route template.
pub const HTTP_SECONDS: &str = "http_server_request_duration_seconds";
/// Requests refused 429 by a route's rate limit, by route pattern.
pub const RATE_LIMITED: &str = "banyan_gateway_rate_limited_total";
/// Requests answered 503 at once because the listener was at `server.max_in_flight`.
pub const SHED: &str = "banyan_http_shed_total";

/// Latency buckets, from the in-process bus's microsecond up to a route's timeout.
const BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .unwrap_or_else(|error| {
                // Another recorder is installed (an embedding program's): ours renders nothing.
                tracing::warn!(%error, "Metrics recorder not installed; /metrics will be empty.");
                PrometheusBuilder::new().build_recorder().handle()
            });
        describe();
        // Histograms are kept as raw samples until drained; drain them between scrapes too.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .ok();
        handle
    })
}

fn describe() {
    banyan_bus::meters::describe();
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status class."
    );
    metrics::describe_histogram!(
        HTTP_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency, by method and route template."
    );
    metrics::describe_counter!(
        RATE_LIMITED,
        "Requests refused 429 by a route's rate limit."
    );
    metrics::describe_counter!(
        SHED,
        "Requests answered 503 at once: the listener was at server.max_in_flight."
    );
    for (name, help) in GAUGES {
        metrics::describe_gauge!(*name, *help);
    }
    metrics_process::Collector::default().describe();
}

const OUTBOX_PENDING: &str = "banyan_outbox_pending_events";
const OUTBOX_AGE: &str = "banyan_outbox_oldest_event_age_seconds";
const INBOX_ROWS: &str = "banyan_inbox_messages";
const DEAD_LETTERS: &str = "banyan_dead_letters";
const QUEUE_DEPTH: &str = "banyan_bus_event_queue_depth";
const POOL_OPEN: &str = "banyan_db_pool_connections";
const POOL_IDLE: &str = "banyan_db_pool_idle_connections";
const INSTANCES: &str = "banyan_registry_instances";
const ROUTE_BREAKER: &str = "banyan_gateway_breaker_state";
const EDGE_BREAKER: &str = "banyan_bus_breaker_state";
const EDGE_IN_FLIGHT: &str = "banyan_bus_edge_in_flight_requests";
const NATS_PENDING: &str = "banyan_nats_consumer_pending_events";
const NATS_ACK_PENDING: &str = "banyan_nats_consumer_ack_pending_events";
const NATS_REDELIVERED: &str = "banyan_nats_consumer_redelivered_events";

const GAUGES: &[(&str, &str)] = &[
    (
        OUTBOX_PENDING,
        "Outbox events not yet delivered to every subscriber, by module.",
    ),
    (
        OUTBOX_AGE,
        "How long the oldest undelivered outbox event has waited, by module.",
    ),
    (
        INBOX_ROWS,
        "Message ids in the module's inbox (what makes redelivery harmless).",
    ),
    (
        DEAD_LETTERS,
        "Deliveries that failed every attempt and wait for an operator, by module.",
    ),
    (
        QUEUE_DEPTH,
        "Events waiting in a subscribing module's worker queue, by partition.",
    ),
    (
        POOL_OPEN,
        "Open database connections of the module's pools, by role.",
    ),
    (
        POOL_IDLE,
        "Idle database connections of the module's pools, by role.",
    ),
    (
        INSTANCES,
        "Registered instances of each module, by state (main only).",
    ),
    (
        ROUTE_BREAKER,
        "Main's route breaker of each module: 1 for the state it is in, 0 for the others.",
    ),
    (
        EDGE_BREAKER,
        "Each bus edge's breaker: 1 for the state it is in, 0 for the others.",
    ),
    (
        EDGE_IN_FLIGHT,
        "Requests in flight on each bus edge (its bulkhead's occupied slots).",
    ),
    (
        NATS_PENDING,
        "Events in the JetStream stream that a module's durable consumer has not been handed yet.",
    ),
    (
        NATS_ACK_PENDING,
        "Events handed to a module's durable consumer and not acknowledged yet.",
    ),
    (
        NATS_REDELIVERED,
        "Events handed to a module's durable consumer more than once and not acknowledged yet.",
    ),
];

const HEALTH_STATES: [(Health, &str); 6] = [
    (Health::Starting, "starting"),
    (Health::Healthy, "healthy"),
    (Health::Unhealthy, "unhealthy"),
    (Health::Ejected, "ejected"),
    (Health::Stopping, "stopping"),
    (Health::Stale, "stale"),
];

const BREAKER_STATES: [(BreakerState, &str); 3] = [
    (BreakerState::Closed, "closed"),
    (BreakerState::Open, "open"),
    (BreakerState::HalfOpen, "half_open"),
];

/// Counts and times every request by its route template (`MatchedPath`; a request main
/// proxied counts under its module, one it matched nowhere under `unmatched`), so the label set
/// stays bounded whatever paths clients send.
pub(crate) async fn http_requests(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = matched.unwrap_or_else(|| {
        response
            .extensions()
            .get::<Proxied>()
            .map_or_else(|| "unmatched".to_owned(), |p| format!("proxied:{}", p.0))
    });
    let status = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!(HTTP_SECONDS, "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// On a response main's gateway proxied: the module it went to (its route template is the
/// moved process's to count).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proxied(pub(crate) &'static str);

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// What a scrape reads besides the recorded meters.
pub(crate) struct Scrape {
    pub(crate) bus: Bus,
    pub(crate) hosted: Hosts,
    /// Main's registry (instances and route breakers), in a split.
    pub(crate) registry: Option<Arc<Registry>>,
    pub(crate) routes: Arc<RoutePolicies>,
    /// This process's metrics URL (as the others and Prometheus reach it), and its name.
    own: (String, String),
    /// The NATS server side, whose modules' durable consumers are read at each scrape.
    pub(crate) nats: Option<banyan_bus::nats::ServeHandle>,
    process: metrics_process::Collector,
}

impl Scrape {
    pub(crate) fn new(
        bus: Bus,
        hosted: Hosts,
        registry: Option<Arc<Registry>>,
        routes: Arc<RoutePolicies>,
        own: (String, String),
    ) -> Self {
        Self {
            bus,
            hosted,
            registry,
            routes,
            own,
            nats: None,
            process: metrics_process::Collector::default(),
        }
    }

    /// Every process's metrics URL and its name: this one's, and each registered instance's.
    pub(crate) fn metrics_urls(&self) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        found.insert(self.own.0.clone(), self.own.1.clone());
        if let Some(registry) = &self.registry {
            for listing in registry.listing().modules.into_values() {
                for instance in listing.instances {
                    if let Some(url) = instance.metrics_url {
                        found.entry(url).or_insert(instance.process);
                    }
                }
            }
        }
        found
    }

    /// This process's page, as `/metrics` serves it.
    pub(crate) async fn page(&self) -> String {
        self.read_states().await;
        handle().render()
    }

    /// Whether `url` is this process's own metrics URL.
    pub(crate) fn is_own(&self, url: &str) -> bool {
        self.own.0 == url
    }

    /// Sets every gauge to what is true now.
    async fn read_states(&self) {
        self.process.collect();
        for (&module, hosted) in self.hosted.iter() {
            match hosted.outbox.backlog().await {
                Ok(backlog) => {
                    metrics::gauge!(OUTBOX_PENDING, "module" => module).set(backlog.pending as f64);
                    metrics::gauge!(OUTBOX_AGE, "module" => module)
                        .set(backlog.oldest_age_ms as f64 / 1000.0);
                    metrics::gauge!(INBOX_ROWS, "module" => module).set(backlog.inbox as f64);
                    metrics::gauge!(DEAD_LETTERS, "module" => module)
                        .set(backlog.dead_letters as f64);
                }
                Err(error) => {
                    tracing::warn!(module, %error, "Could not read the outbox for metrics.");
                }
            }
            for (role, open, idle) in hosted.db.pool_usage() {
                metrics::gauge!(POOL_OPEN, "module" => module, "role" => role).set(open);
                metrics::gauge!(POOL_IDLE, "module" => module, "role" => role).set(idle as f64);
            }
        }
        for group in self.bus.wiring().groups() {
            for (partition, depth) in self.bus.wiring().queue_depths(group).iter().enumerate() {
                metrics::gauge!(QUEUE_DEPTH, "module" => group, "partition" => partition.to_string())
                    .set(*depth as f64);
            }
        }
        for edge in self.bus.edges() {
            for (state, name) in BREAKER_STATES {
                let on = f64::from(u8::from(edge.breaker == state));
                metrics::gauge!(EDGE_BREAKER, "edge" => edge.edge.clone(), "state" => name).set(on);
            }
            metrics::gauge!(EDGE_IN_FLIGHT, "edge" => edge.edge.clone()).set(edge.in_flight);
        }
        if let Some(nats) = &self.nats {
            let states = tokio::time::timeout(Duration::from_secs(1), nats.consumer_states());
            for state in states.await.unwrap_or_default() {
                let module = state.module;
                metrics::gauge!(NATS_PENDING, "module" => module).set(state.pending as f64);
                metrics::gauge!(NATS_ACK_PENDING, "module" => module).set(state.ack_pending as f64);
                metrics::gauge!(NATS_REDELIVERED, "module" => module).set(state.redelivered as f64);
            }
        }
        if let Some(registry) = &self.registry {
            for (module, listing) in registry.listing().modules {
                for (health, name) in HEALTH_STATES {
                    let count = listing
                        .instances
                        .iter()
                        .filter(|i| i.health == health)
                        .count();
                    metrics::gauge!(INSTANCES, "module" => module.clone(), "state" => name)
                        .set(count as f64);
                }
            }
            for (module, breaker) in self.routes.breaker_states() {
                for (state, name) in BREAKER_STATES {
                    let on = f64::from(u8::from(breaker == state));
                    metrics::gauge!(ROUTE_BREAKER, "module" => module, "state" => name).set(on);
                }
            }
        }
    }
}

async fn render(State(scrape): State<Arc<Scrape>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.page().await,
    )
        .into_response()
}

/// One group of Prometheus's HTTP service discovery: a process's metrics address.
#[derive(Debug, serde::Serialize)]
struct Targets {
    targets: [String; 1],
    labels: BTreeMap<&'static str, String>,
}

/// `GET /targets`: every process's metrics address in the format of Prometheus's
/// `http_sd_configs`, so one scrape job on main finds every moved module's processes (and
/// each of their instances) as they register and leave. A process without main's registry
/// lists itself.
async fn targets(State(scrape): State<Arc<Scrape>>) -> axum::Json<Vec<Targets>> {
    let found = scrape.metrics_urls();
    let groups = found
        .into_iter()
        .filter_map(|(url, process)| {
            let address = reqwest::Url::parse(&url).ok()?;
            let host = address.host_str()?;
            let port = address.port_or_known_default()?;
            let mut labels = BTreeMap::from([("process", process)]);
            labels.insert("__scheme__", address.scheme().to_owned());
            Some(Targets {
                targets: [format!("{host}:{port}")],
                labels,
            })
        })
        .collect();
    axum::Json(groups)
}

/// The metrics listener's own routes: `GET /metrics` and `GET /targets`.
pub(crate) fn routes(scrape: Arc<Scrape>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/targets", get(targets))
        .with_state(scrape)
}

/// One sample of a Prometheus text page: its name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a text-format page as Banyan writes it (its label values hold no quotes or
/// `",`): what the dashboard reads of every process, and what the tests check. Comment lines
/// and lines that do not parse are skipped.
pub fn samples(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_owned(), value.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// Where the metrics listener binds: `metrics.addr`, or main's default, or a free port.
pub(crate) fn bind_addr(config: &crate::config::MetricsConfig, is_main: bool) -> SocketAddr {
    config.addr.unwrap_or_else(|| {
        if is_main {
            crate::config::MAIN_METRICS_ADDR
                .parse()
                .expect("a socket address")
        } else {
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    })
}
