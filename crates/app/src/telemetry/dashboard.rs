//! `/dashboard`: the shop as it runs, on main's metrics listener (loopback by default, never
//! the public port, like `/metrics`).
//!
//! The page (`dashboard.html`, compiled into the binary: no build step) polls
//! `/dashboard/data`, which main assembles from what already exists: the registry (every
//! module's process, transport, instances and their health, the route breakers) and every
//! process's `/metrics` page (the bus's counters and histograms per edge and placement, the
//! outbox backlogs, dead letters). Rates and percentiles are over the time since the previous
//! poll, from the counters' and histograms' differences, as Prometheus's `rate` and
//! `histogram_quantile` would compute them; the first poll, and an edge quiet since the
//! previous one, show latency since start.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::header,
    response::{Html, IntoResponse},
    routing::get,
};
use serde::Serialize;

use super::meters::{Sample, Scrape, samples};
use crate::modules::all_modules;

const PAGE: &str = include_str!("dashboard.html");

/// What the page shows.
#[derive(Debug, Serialize)]
struct View {
    /// Seconds the rates and percentiles are over; `None` on the first poll.
    window_s: Option<f64>,
    processes: Vec<ProcessView>,
    modules: Vec<ModuleView>,
    edges: Vec<EdgeView>,
}

#[derive(Debug, Serialize)]
struct ProcessView {
    process: String,
    metrics_url: String,
    /// Whether its `/metrics` answered this time.
    up: bool,
}

#[derive(Debug, Serialize)]
struct ModuleView {
    name: &'static str,
    process: String,
    /// `in_process`, `http`, `grpc` or `nats`.
    transport: String,
    instances: Vec<InstanceView>,
    /// Main's route breaker of a moved module: `closed`, `half_open`, `open`.
    breaker: Option<String>,
    outbox_pending: Option<f64>,
    outbox_oldest_s: Option<f64>,
    dead_letters: Option<f64>,
}

#[derive(Debug, Serialize)]
struct InstanceView {
    process: String,
    health: String,
}

#[derive(Debug, Clone, Serialize)]
struct EdgeView {
    from: String,
    to: String,
    /// `request` or `event`.
    kind: &'static str,
    /// `in_process`, or the transport that carried it.
    placement: String,
    /// Calls (requests) or deliveries (events) since each process started.
    total: f64,
    /// Over the window.
    rate_per_s: Option<f64>,
    error_ratio: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Caller-side breaker of the edge, in the caller's process.
    breaker: Option<String>,
}

/// One edge's counters and latency histogram, summed over processes and subjects.
#[derive(Debug, Clone, Default)]
struct Tally {
    total: f64,
    errors: f64,
    /// Cumulative bucket counts by upper bound (`le`), as Prometheus exposes them.
    buckets: BTreeMap<Bound, f64>,
}

/// A bucket's upper bound, ordered (`+Inf` last).
#[derive(Debug, Clone, Copy)]
struct Bound(f64);

impl PartialEq for Bound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

type EdgeKey = (String, String, &'static str, String);

/// The dashboard's state: the previous poll's tallies, for rates.
pub(crate) struct Dashboard {
    scrape: Arc<Scrape>,
    client: reqwest::Client,
    previous: Mutex<Option<(Instant, BTreeMap<EdgeKey, Tally>)>>,
}

pub(crate) fn routes(scrape: Arc<Scrape>) -> Router {
    let dashboard = Arc::new(Dashboard {
        scrape,
        // Plain HTTP to the processes' metrics listeners; the project's builder installs the
        // TLS provider every reqwest client needs (and follows no redirect).
        client: banyan_bus::http::client_builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client with the process's TLS provider"),
        previous: Mutex::new(None),
    });
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/data", get(data))
        .with_state(dashboard)
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

async fn data(State(dashboard): State<Arc<Dashboard>>) -> Json<View> {
    Json(dashboard.view().await)
}

impl Dashboard {
    async fn view(&self) -> View {
        let urls = self.scrape.metrics_urls();
        let pages = futures::future::join_all(urls.iter().map(|(url, process)| {
            let client = self.client.clone();
            let metrics = format!("{}/metrics", url.trim_end_matches('/'));
            let own = self.scrape.is_own(url);
            async move {
                // Main's own page is rendered here, not fetched from itself.
                let page = if own {
                    Some(self.scrape.page().await)
                } else {
                    match client.get(&metrics).send().await {
                        Ok(reply) if reply.status().is_success() => reply.text().await.ok(),
                        _ => None,
                    }
                };
                (process.clone(), metrics, page)
            }
        }))
        .await;
        let processes = pages
            .iter()
            .map(|(process, url, page)| ProcessView {
                process: process.clone(),
                metrics_url: url.clone(),
                up: page.is_some(),
            })
            .collect();
        let all: Vec<Sample> = pages
            .iter()
            .filter_map(|(_, _, page)| page.as_deref())
            .flat_map(samples)
            .collect();
        let tallies = tally(&all);
        let now = Instant::now();
        let previous = self
            .previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((now, tallies.clone()));
        let window = previous
            .as_ref()
            .map(|(at, _)| now.duration_since(*at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let breakers = edge_breakers(&all);
        let edges = tallies
            .iter()
            .map(|(key, tally)| {
                let before = previous.as_ref().and_then(|(_, p)| p.get(key));
                edge_view(
                    key,
                    tally,
                    before,
                    window,
                    breakers.get(&(key.0.clone(), key.1.clone())),
                )
            })
            .collect();
        View {
            window_s: window,
            processes,
            modules: self.modules(&all),
            edges,
        }
    }

    fn modules(&self, all: &[Sample]) -> Vec<ModuleView> {
        let listing = self.scrape.registry.as_ref().map(|r| r.listing());
        let gauge = |name: &str, module: &str| {
            all.iter()
                .filter(|s| {
                    s.name == name && s.labels.get("module").map(String::as_str) == Some(module)
                })
                .map(|s| s.value)
                // Instances of one module share its database: each reports the same backlog.
                .reduce(f64::max)
        };
        all_modules()
            .iter()
            .map(|module| {
                let name = module.name();
                let listed = listing.as_ref().and_then(|l| l.modules.get(name));
                ModuleView {
                    name,
                    process: listed.map_or_else(|| "main".to_owned(), |l| l.process.clone()),
                    transport: listed
                        .map_or_else(|| "in_process".to_owned(), |l| label(&l.transport)),
                    instances: match listed {
                        Some(listed) => (listed.instances.iter())
                            .map(|i| InstanceView {
                                process: i.process.clone(),
                                health: label(&i.health),
                            })
                            .collect(),
                        None => vec![InstanceView {
                            process: "main".to_owned(),
                            health: "healthy".to_owned(),
                        }],
                    },
                    breaker: listed.and_then(|l| l.breaker).map(|b| label(&b)),
                    outbox_pending: gauge("banyan_outbox_pending_events", name),
                    outbox_oldest_s: gauge("banyan_outbox_oldest_event_age_seconds", name),
                    dead_letters: gauge("banyan_dead_letters", name),
                }
            })
            .collect()
    }
}

/// How a value reads in the API (`snake_case` enums as strings).
fn label<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Every edge's tally: requests by (caller, callee, placement) from the callers' side,
/// events by (publisher, subscriber, placement) from the subscribers' side.
fn tally(all: &[Sample]) -> BTreeMap<EdgeKey, Tally> {
    let mut edges: BTreeMap<EdgeKey, Tally> = BTreeMap::new();
    let label = |s: &Sample, key: &str| s.labels.get(key).cloned().unwrap_or_default();
    for sample in all {
        let key = match sample.name.as_str() {
            "banyan_bus_requests_total" | "banyan_bus_request_duration_seconds_bucket" => (
                label(sample, "caller"),
                label(sample, "callee"),
                "request",
                label(sample, "placement"),
            ),
            "banyan_bus_events_handled_total" => (
                label(sample, "publisher"),
                label(sample, "module"),
                "event",
                label(sample, "placement"),
            ),
            "banyan_bus_event_handling_duration_seconds_bucket" => {
                let subject = label(sample, "subject");
                (
                    banyan_bus::module_of(&subject).to_owned(),
                    label(sample, "module"),
                    "event",
                    label(sample, "placement"),
                )
            }
            _ => continue,
        };
        let tally = edges.entry(key).or_default();
        if sample.name.ends_with("_bucket") {
            let le = match sample.labels.get("le").map(String::as_str) {
                Some("+Inf") => f64::INFINITY,
                Some(bound) => match bound.parse() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                },
                None => continue,
            };
            *tally.buckets.entry(Bound(le)).or_default() += sample.value;
        } else {
            // A retried event's first attempts are not failures of the edge; the letters are.
            let outcome = sample.labels.get("outcome").map(String::as_str);
            tally.total += sample.value;
            if !matches!(outcome, Some("ok" | "retried")) {
                tally.errors += sample.value;
            }
        }
    }
    edges
}

/// The caller-side breaker of each `caller->callee` edge (by name), the state that is on.
fn edge_breakers(all: &[Sample]) -> BTreeMap<(String, String), String> {
    all.iter()
        .filter(|s| s.name == "banyan_bus_breaker_state" && s.value >= 1.0)
        .filter_map(|s| {
            let edge = s.labels.get("edge")?;
            let (caller, callee) = edge.split_once("->")?;
            Some((
                (caller.to_owned(), banyan_bus::module_of(callee).to_owned()),
                s.labels.get("state")?.clone(),
            ))
        })
        .collect()
}

fn edge_view(
    (from, to, kind, placement): &EdgeKey,
    now: &Tally,
    before: Option<&Tally>,
    window: Option<f64>,
    breaker: Option<&String>,
) -> EdgeView {
    // Over the window when there is one; the totals since start otherwise.
    let delta = |now: f64, before: Option<f64>| (now - before.unwrap_or(0.0)).max(0.0);
    let calls = delta(now.total, before.map(|b| b.total));
    let errors = delta(now.errors, before.map(|b| b.errors));
    // An edge quiet in the window keeps showing its latency since start.
    let since = before.filter(|_| calls > 0.0);
    let buckets: Vec<(f64, f64)> = now
        .buckets
        .iter()
        .map(|(bound, count)| {
            let was = since.and_then(|b| b.buckets.get(bound).copied());
            (bound.0, delta(*count, was))
        })
        .collect();
    EdgeView {
        from: from.clone(),
        to: to.clone(),
        kind,
        placement: placement.clone(),
        total: now.total,
        rate_per_s: window.map(|w| calls / w),
        error_ratio: (calls > 0.0).then(|| errors / calls),
        p50_ms: quantile(&buckets, 0.5).map(|s| s * 1000.0),
        p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
        breaker: breaker.cloned(),
    }
}

/// The `q` quantile of cumulative buckets `(upper bound, count)`, interpolated linearly
/// within its bucket as Prometheus's `histogram_quantile` does; `None` without observations.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let share = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_interpolated_within_their_bucket() {
        let buckets = [
            (0.001, 50.0),
            (0.01, 90.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(&buckets, 0.5), Some(0.001));
        let p75 = quantile(&buckets, 0.75).unwrap();
        assert!((p75 - (0.001 + 0.009 * 25.0 / 40.0)).abs() < 1e-12, "{p75}");
        assert!(quantile(&buckets, 0.99).unwrap() <= 0.1);
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
    }

    #[test]
    fn edges_are_tallied_by_caller_callee_and_placement() {
        let page = "\
banyan_bus_requests_total{caller=\"orders\",callee=\"cart\",subject=\"cart.get_cart.v1\",placement=\"http\",outcome=\"ok\"} 9
banyan_bus_requests_total{caller=\"orders\",callee=\"cart\",subject=\"cart.get_cart.v1\",placement=\"http\",outcome=\"timeout\"} 1
banyan_bus_request_duration_seconds_bucket{caller=\"orders\",callee=\"cart\",subject=\"cart.get_cart.v1\",placement=\"http\",le=\"0.001\"} 4
banyan_bus_request_duration_seconds_bucket{caller=\"orders\",callee=\"cart\",subject=\"cart.get_cart.v1\",placement=\"http\",le=\"+Inf\"} 10
banyan_bus_events_handled_total{publisher=\"orders\",module=\"payments\",subject=\"orders.order_placed.v1\",placement=\"nats\",outcome=\"ok\"} 3
";
        let edges = tally(&samples(page));
        let request = &edges[&("orders".into(), "cart".into(), "request", "http".into())];
        assert_eq!((request.total, request.errors), (10.0, 1.0));
        let view = edge_view(
            &("orders".into(), "cart".into(), "request", "http".into()),
            request,
            None,
            None,
            None,
        );
        assert_eq!(view.error_ratio, Some(0.1));
        assert_eq!(view.rate_per_s, None);
        let event = &edges[&("orders".into(), "payments".into(), "event", "nats".into())];
        assert_eq!(event.total, 3.0);
    }
}
