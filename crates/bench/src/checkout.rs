//! Checkout: the real shop with payments placed in process, over HTTP, over gRPC and over NATS.
//!
//! For each placement: real processes of this very binary (`std::env::current_exe()`) on a
//! fresh SQLite directory, the main process and, when payments moves out, a `--process
//! payments` process registered with it. The shop is prepared through its public API (an
//! admin from the bootstrap settings, a product with plenty of stock, a customer); then, round
//! by round and placement after placement (all of them running meanwhile), `clients` clients
//! place one-line orders with `POST /api/v1/orders?wait_ms=30000`, which answers once the saga
//! (reserve → charge → confirm) has ended, and each is timed.
//!
//! The processes run the shipped defaults: `BANYAN_*` variables of the caller's environment are
//! not passed on, so a figure never depends on what happened to be exported.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};

use banyan_stats::{Latencies, median, millis, per_second};

use super::{
    cluster::{ADMIN, Cluster, PATIENCE, Placement},
    progress,
};

/// `?wait_ms=` of every order: the answer comes when the saga has ended.
const WAIT_MS: u64 = 30_000;
const CUSTOMER: (&str, &str) = ("bench-customer", "bench-customer-password-1");

/// How the part runs.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) rounds: u64,
    pub(super) orders: u64,
    pub(super) clients: u64,
    /// `None`: the NATS placement is left out.
    pub(super) nats_url: Option<String>,
    /// `BANYAN_*` variables every process gets on top of the shipped defaults (`--set`).
    pub(super) overrides: Vec<(String, String)>,
}

impl Settings {
    /// Orders placed before the timed ones: connections, caches, and a first trip through
    /// every step of the saga (over HTTP, the processes learn each other's subscriptions).
    pub(super) fn warmup(&self) -> u64 {
        self.clients.max(10)
    }
}

/// What one round measured for one placement.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct RoundFigures {
    pub(super) orders: u64,
    pub(super) confirmed: u64,
    /// Latency of every order of the round, from the request to the answer.
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) confirmed_per_s: f64,
    pub(super) elapsed_s: f64,
}

/// What one placement measured: each round, and the medians over rounds.
#[derive(Debug, Clone, Serialize)]
pub(super) struct PlacementFigures {
    pub(super) name: &'static str,
    pub(super) orders_per_round: u64,
    /// Over every round.
    pub(super) orders: u64,
    pub(super) confirmed: u64,
    /// Orders that did not end confirmed, by what they came to instead (every round).
    pub(super) not_confirmed: BTreeMap<String, u64>,
    pub(super) rounds: Vec<RoundFigures>,
    /// Medians over rounds.
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) confirmed_per_s: f64,
}

/// Starts every placement's processes (each on data of its own), measures them round by
/// round, interleaved like the request→reply cases, and stops them all whatever happened.
pub(super) async fn run(settings: Settings) -> anyhow::Result<Vec<PlacementFigures>> {
    let exe = std::env::current_exe().context("cannot find this binary to start its processes")?;
    let mut clusters: Vec<(&'static str, Cluster)> = Vec::new();
    let outcome = async {
        for (name, placement) in placements(&settings) {
            progress(format_args!("checkout {name}: starting the processes"));
            let cluster = Cluster::start(&exe, &placement, &settings.overrides)
                .await
                .with_context(|| format!("checkout {name}: the processes did not start"))?;
            clusters.push((name, cluster));
        }
        measure(&clusters, &settings).await
    }
    .await;
    let logs = match &outcome {
        Err(_) => clusters
            .iter()
            .map(|(name, cluster)| format!("=== {name}\n{}", cluster.log_tails()))
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(_) => String::new(),
    };
    for (_, cluster) in clusters {
        cluster.stop().await;
    }
    outcome.with_context(|| format!("the processes' logs end with:\n{logs}"))
}

/// The placements to measure: payments in process, over HTTP, over gRPC, and over NATS
/// unless skipped.
fn placements(settings: &Settings) -> Vec<(&'static str, Placement)> {
    let mut placements = vec![
        ("in_process", Placement::InProcess),
        ("http", Placement::Http),
        ("grpc", Placement::Grpc),
    ];
    match &settings.nats_url {
        Some(url) => placements.push(("nats", Placement::Nats { url: url.clone() })),
        None => progress("checkout nats: skipped (--skip-nats)"),
    }
    placements
}

/// Prepares and warms up every shop, then places and times the orders, round by round.
async fn measure(
    clusters: &[(&'static str, Cluster)],
    settings: &Settings,
) -> anyhow::Result<Vec<PlacementFigures>> {
    let mut shops = Vec::new();
    for (name, cluster) in clusters {
        let shop = Shop::prepare(cluster)
            .await
            .with_context(|| format!("checkout {name}: preparing the shop failed"))?;
        progress(format_args!(
            "checkout {name}: warming up with {} orders",
            settings.warmup()
        ));
        shop.place(settings.warmup(), settings.clients).await;
        shops.push((*name, shop));
    }
    let mut rounds: Vec<Vec<(RoundFigures, Vec<Outcome>)>> = vec![Vec::new(); shops.len()];
    for round in 0..settings.rounds as usize {
        // As for request→reply: each round starts with the next placement.
        for offset in 0..shops.len() {
            let at = (round + offset) % shops.len();
            let (name, shop) = &shops[at];
            let started = Instant::now();
            let outcomes = shop.place(settings.orders, settings.clients).await;
            let figures = round_figures(&outcomes, started.elapsed());
            progress(format_args!(
                "checkout round {}/{}: {name:<10} {}/{} confirmed  p50 {:>7.1} ms  p99 {:>7.1} ms  {:>6.1} orders/s",
                round + 1,
                settings.rounds,
                figures.confirmed,
                figures.orders,
                figures.p50_ms,
                figures.p99_ms,
                figures.confirmed_per_s
            ));
            rounds[at].push((figures, outcomes));
        }
    }
    Ok(shops
        .iter()
        .zip(rounds)
        .map(|((name, _), rounds)| placement_figures(name, settings.orders, rounds))
        .collect())
}

fn round_figures(outcomes: &[Outcome], elapsed: Duration) -> RoundFigures {
    let latencies: Latencies = outcomes.iter().map(|o| o.latency).collect();
    let confirmed = outcomes.iter().filter(|o| o.is_confirmed()).count() as u64;
    RoundFigures {
        orders: outcomes.len() as u64,
        confirmed,
        p50_ms: millis(latencies.percentile(0.50)),
        p99_ms: millis(latencies.percentile(0.99)),
        confirmed_per_s: per_second(confirmed, elapsed),
        elapsed_s: elapsed.as_secs_f64(),
    }
}

fn placement_figures(
    name: &'static str,
    orders_per_round: u64,
    rounds: Vec<(RoundFigures, Vec<Outcome>)>,
) -> PlacementFigures {
    let mut not_confirmed = BTreeMap::new();
    for outcome in rounds.iter().flat_map(|(_, outcomes)| outcomes) {
        if !outcome.is_confirmed() {
            *not_confirmed.entry(outcome.result.clone()).or_insert(0) += 1;
        }
    }
    let rounds: Vec<RoundFigures> = rounds.into_iter().map(|(figures, _)| figures).collect();
    PlacementFigures {
        name,
        orders_per_round,
        orders: rounds.iter().map(|r| r.orders).sum(),
        confirmed: rounds.iter().map(|r| r.confirmed).sum(),
        not_confirmed,
        p50_ms: median(rounds.iter().map(|r| r.p50_ms)),
        p99_ms: median(rounds.iter().map(|r| r.p99_ms)),
        confirmed_per_s: median(rounds.iter().map(|r| r.confirmed_per_s)),
        rounds,
    }
}

// ------------------------------------------------------------------------------ the shop

/// One order's round trip: how long, and what it came to (`confirmed`, `cancelled: <reason>`,
/// `202 pending`, an error...).
#[derive(Clone)]
struct Outcome {
    latency: Duration,
    result: String,
}

impl Outcome {
    fn is_confirmed(&self) -> bool {
        self.result == "confirmed"
    }
}

/// The prepared shop: a client, the customer's token, the product to order.
struct Shop {
    client: reqwest::Client,
    base: String,
    token: String,
    product: String,
}

impl Shop {
    async fn prepare(cluster: &Cluster) -> anyhow::Result<Self> {
        let client = banyan_bus::http::client_builder()
            .no_proxy()
            .timeout(Duration::from_millis(WAIT_MS) + PATIENCE)
            .build()?;
        let base = cluster.main.url("");
        let shop = Self {
            client,
            base,
            token: String::new(),
            product: String::new(),
        };
        let admin = shop.login(ADMIN.0, ADMIN.1).await?;
        let created = shop
            .call(
                Method::POST,
                "/api/v1/products",
                Some(&admin),
                json!({ "sku": "BENCH-1", "name": "Bench tea", "category": "bench",
                         "price": { "amount_minor": 450, "currency": "EUR" } }),
                201,
            )
            .await?;
        let product = text(&created, "id")?;
        // Plenty: no order of the run may be refused for want of stock.
        shop.call(
            Method::PUT,
            &format!("/api/v1/inventory/{product}"),
            Some(&admin),
            json!({ "on_hand": 1_000_000_000_i64 }),
            200,
        )
        .await?;
        shop.call(
            Method::POST,
            "/api/v1/users",
            None,
            json!({ "username": CUSTOMER.0, "email": "bench-customer@example.test",
                     "password": CUSTOMER.1 }),
            201,
        )
        .await?;
        let token = shop.login(CUSTOMER.0, CUSTOMER.1).await?;
        Ok(Self {
            token,
            product,
            ..shop
        })
    }

    async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let body = json!({ "username": username, "password": password });
        let reply = self
            .call(Method::POST, "/api/v1/users/login", None, body, 200)
            .await?;
        text(&reply, "access_token")
    }

    /// A call that must answer `expected`; its JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
        expected: u16,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(
            status.as_u16() == expected,
            "{method} {path} answered {status}: {text}"
        );
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `count` orders shared by `clients` concurrent clients, each client one order at a time.
    async fn place(&self, count: u64, clients: u64) -> Vec<Outcome> {
        let next = AtomicU64::new(0);
        let runs = (0..clients).map(|_| async {
            let mut outcomes = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                outcomes.push(self.order().await);
            }
            outcomes
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn order(&self) -> Outcome {
        let sent = Instant::now();
        let reply = self
            .client
            .post(format!("{}/api/v1/orders?wait_ms={WAIT_MS}", self.base))
            .bearer_auth(&self.token)
            .json(
                &json!({ "lines": [{ "product_id": self.product, "quantity": 1 }],
                           "payment_method": "tok_visa" }),
            )
            .send()
            .await;
        let result = match reply {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                order_result(status, &body)
            }
            Err(error) => format!("error: {error}"),
        };
        Outcome {
            latency: sent.elapsed(),
            result,
        }
    }
}

/// What an order's answer says it came to.
fn order_result(status: u16, body: &Value) -> String {
    match (status, body["status"].as_str()) {
        (201, Some("confirmed")) => "confirmed".to_owned(),
        (201, Some("cancelled")) => format!(
            "cancelled: {}",
            body["cancel_reason"].as_str().unwrap_or("?")
        ),
        (202, _) => "still pending at the deadline".to_owned(),
        (_, Some(other)) => format!("{status} {other}"),
        _ => format!(
            "{status} {}",
            body["error"]["code"]
                .as_str()
                .unwrap_or("unexpected answer")
        ),
    }
}

fn text(body: &Value, key: &str) -> anyhow::Result<String> {
    body[key]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `{key}` in {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_answer_names_what_it_came_to() {
        let confirmed = json!({ "status": "confirmed" });
        assert_eq!(order_result(201, &confirmed), "confirmed");
        let cancelled = json!({ "status": "cancelled", "cancel_reason": "payment_declined" });
        assert_eq!(order_result(201, &cancelled), "cancelled: payment_declined");
        let pending = json!({ "status": "pending" });
        assert_eq!(order_result(202, &pending), "still pending at the deadline");
        let error = json!({ "error": { "code": "unavailable" } });
        assert_eq!(order_result(503, &error), "503 unavailable");
    }
}
