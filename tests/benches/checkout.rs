//! Checkout, end to end: confirmed orders per second and latency from request to confirmation,
//! at 1, 16 and 64 concurrent clients, on SQLite (both synchronous modes) and PostgreSQL.
//!
//! Each client places one-line orders with `?wait_ms=` so the answer comes when the saga has
//! ended (reserve → charge → confirm), and measures that round trip. The server runs in this
//! process (its own tokio runtime threads), reached over loopback HTTP.
//!
//! `cargo bench -p banyan-e2e --bench checkout` (`-- --quick` for a short run).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use banyan_stats::{Latencies, millis};
use std::time::{Duration, Instant};

use banyan_e2e::{Engine, TestApp, banyan_app::config};
use serde_json::json;

struct Row {
    setup: String,
    clients: usize,
    orders: usize,
    confirmed: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run(
    app: &TestApp,
    tokens: &[String],
    product: &str,
    clients: usize,
    per_client: usize,
) -> (usize, usize, Duration, Latencies) {
    let started = Instant::now();
    let runs = (0..clients).map(|c| {
        let token = &tokens[c % tokens.len()];
        async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut confirmed = 0;
            for _ in 0..per_client {
                let began = Instant::now();
                let reply = app
                    .order(
                        token,
                        json!({ "lines": [{ "product_id": product, "quantity": 1 }] }),
                        Some(10_000),
                    )
                    .await;
                latencies.push(began.elapsed());
                if reply.body["status"] == "confirmed" {
                    confirmed += 1;
                }
            }
            (confirmed, latencies)
        }
    });
    let results = futures::future::join_all(runs).await;
    let elapsed = started.elapsed();
    let confirmed = results.iter().map(|(c, _)| c).sum();
    let latencies: Latencies = results.into_iter().flat_map(|(_, l)| l).collect();
    (clients * per_client, confirmed, elapsed, latencies)
}

async fn bench(setup: &str, engine: Engine, synchronous: &str, quick: bool, rows: &mut Vec<Row>) {
    let synchronous = synchronous.to_owned();
    let Some(app) = TestApp::spawn_with(engine, move |figment| {
        let figment = config::with(figment, "database.sqlite_synchronous", synchronous);
        let figment = config::with(figment, "database.max_connections", connections());
        config::with(figment, "log.level", "warn")
    })
    .await
    else {
        println!("{setup}: skipped (PostgreSQL unreachable)");
        return;
    };
    let admin = app.admin_token().await;
    let product = app.product(&admin, "BENCH-1", "bench", 199).await;
    app.stock(&admin, &product, 1_000_000_000).await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(app.customer(&format!("bench{i}")).await.1);
    }
    // Warm up: connections, caches, the first allocations.
    run(&app, &tokens, &product, 8, if quick { 2 } else { 20 }).await;
    for clients in [1, 16, 64] {
        let total = if quick {
            64
        } else {
            [400, 3_200, 6_400][[1, 16, 64].iter().position(|c| *c == clients).unwrap()]
        };
        let per_client = (total / clients).max(1);
        let (orders, confirmed, elapsed, latencies) =
            run(&app, &tokens, &product, clients, per_client).await;
        rows.push(Row {
            setup: setup.to_owned(),
            clients,
            orders,
            confirmed,
            per_second: confirmed as f64 / elapsed.as_secs_f64(),
            p50_ms: millis(latencies.percentile(0.50)),
            p99_ms: millis(latencies.percentile(0.99)),
        });
        eprintln!("{setup}: {clients} clients done");
    }
    app.stop().await;
}

/// Connections per module pool: on SQLite each is a thread of the driver's, so fewer can be
/// faster on two cores (`BANYAN_BENCH_CONNECTIONS`, default 4).
fn connections() -> u32 {
    std::env::var("BANYAN_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// Which setups to run (`BANYAN_BENCH_SETUPS=sqlite-full,sqlite-normal,postgres`, default all).
fn wanted(setup: &str) -> bool {
    std::env::var("BANYAN_BENCH_SETUPS").map_or(true, |v| v.split(',').any(|s| s == setup))
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--quick") || !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    runtime.block_on(async {
        let setups = [
            (
                "sqlite-full",
                "sqlite, synchronous=full (shipped)",
                Engine::Sqlite,
                "full",
            ),
            (
                "sqlite-normal",
                "sqlite, synchronous=normal",
                Engine::Sqlite,
                "normal",
            ),
            ("postgres", "postgresql", Engine::Postgres, "full"),
        ];
        for (key, setup, engine, synchronous) in setups {
            if wanted(key) {
                bench(setup, engine, synchronous, quick, &mut rows).await;
            }
        }
    });
    println!(
        "\nsetup: {} cores, server and clients in one process (tokio, 2 workers), loopback HTTP, \
         one-line orders answered when the saga ends, {} connections per module pool{}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        connections(),
        if quick { " (quick run)" } else { "" }
    );
    println!(
        "{:<36} {:>7} {:>7} {:>10} {:>13} {:>9} {:>9}",
        "setup", "clients", "orders", "confirmed", "confirmed/s", "p50 ms", "p99 ms"
    );
    for row in rows {
        println!(
            "{:<36} {:>7} {:>7} {:>10} {:>13.0} {:>9.2} {:>9.2}",
            row.setup,
            row.clients,
            row.orders,
            row.confirmed,
            row.per_second,
            row.p50_ms,
            row.p99_ms
        );
    }
}
