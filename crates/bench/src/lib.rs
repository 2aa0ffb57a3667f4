//! `banyan-bench`: what moving a module out of the main process costs, measured.
//!
//! Its own crate and binary, so the production binary carries none of it (nor its
//! dependencies: plotters, tempfile). The checkout's processes are the app itself: this binary
//! links `banyan-app`, and started as `banyan-bench serve ...` it runs the app's own command
//! line, so one `cargo run -p banyan-bench` needs no second build.
//!
//! Two parts, each printed as a table (stdout), written as figures (`bench.json`) and drawn
//! (`bench.svg`, plotters' SVG backend) in `--out`:
//!
//! - **Request→reply** ([`reply`]): one trivial request answered at once, so the figure is the
//!   bus and the transport, not a database. Five cases in this one OS process over loopback:
//!   the bus in process, a bare axum + reqwest round trip (the HTTP floor), the bus through its
//!   HTTP adapter, a bare NATS request (the NATS floor), the bus through its NATS adapter.
//!   Interleaved round by round, so drift of the machine hits every case alike; each figure
//!   is the median over rounds.
//! - **Checkout** ([`checkout`]): the real shop, payments placed in the main process, in a
//!   process of its own reached over HTTP, and over NATS. Real processes of this binary on a
//!   fresh SQLite directory each; orders placed through the public API and timed until the
//!   saga has confirmed them, placements interleaved round by round as well.
//!
//! Progress goes to stderr; the tables to stdout.

mod chart;
mod checkout;
mod cluster;
mod events;
pub mod load;
pub mod readme;
mod reply;
mod report;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use banyan_app::config::{LogConfig, LogFormat};

/// `banyan-bench`: request→reply through the bus in process, over HTTP, gRPC and NATS (with
/// the bare HTTP and NATS floors), events publish→handled in the same placements, and the
/// checkout with payments in process, over HTTP, gRPC and NATS, side by side; tables on
/// stdout, `bench.json` and `bench.svg` in `--out`. `banyan-bench load --help`: the seed's
/// request mix against a running shop.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "banyan-bench", version, about, long_about = None)]
pub struct BenchArgs {
    /// Request→reply: sequential requests per case and round (after a short warm-up).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// Rounds, for both parts: every case (placement) runs once per round, interleaved, and
    /// the median over rounds is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Request→reply: also measure throughput with this many concurrent callers (1: only the
    /// sequential figures).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Checkout: orders placed per placement and round (after a short warm-up).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    orders: u64,
    /// Checkout: concurrent clients placing them.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    clients: u64,
    /// The NATS server (with JetStream) for the NATS cases.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Leave out the NATS cases (otherwise an unreachable NATS is an error).
    #[arg(long)]
    skip_nats: bool,
    /// Leave out the checkout part.
    #[arg(long)]
    skip_checkout: bool,
    /// Events: publish→handled events per case and round (durable: the publisher's outbox
    /// commit, the delivery, the subscriber's inbox commit).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    events: u64,
    /// Leave out the events part.
    #[arg(long)]
    skip_events: bool,
    /// Checkout: a setting every process gets, `KEY=VALUE` with the configuration's dotted key
    /// (`--set bus.event_batch=1`), to compare a change against the shipped defaults.
    /// Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Where `bench.json` and `bench.svg` are written.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// Runs the benchmark: both parts, the tables, the files.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Only problems are logged (an adapter's WARN, say): progress has lines of its own.
    banyan_app::telemetry::init(
        &LogConfig {
            format: LogFormat::Pretty,
            level: None,
        },
        &banyan_app::telemetry::traces::TracesConfig::default(),
        "bench",
        "warn",
    );
    let nats_url = if args.skip_nats {
        None
    } else {
        check_nats(&args.nats_url).await?;
        Some(args.nats_url.clone())
    };
    let setup = report::Setup::new(&args);
    println!("{}", setup.describe());

    // Callers run on a runtime worker, as a server's handlers do, not on the thread that
    // drives `main` (the same reason as in crates/bus/benches/bus.rs).
    let settings = reply::Settings {
        requests: args.requests,
        rounds: args.rounds,
        warmup: setup.warmup,
        concurrency: args.concurrency,
        nats_url: nats_url.clone(),
    };
    let request_reply = tokio::spawn(reply::run(settings))
        .await
        .context("the request→reply part panicked")??;
    println!("{}", report::request_reply_table(&request_reply, &setup));

    let events = if args.skip_events {
        progress("events: skipped (--skip-events)");
        None
    } else {
        let settings = reply::Settings {
            requests: args.events,
            rounds: args.rounds,
            warmup: (args.events / 10).clamp(10, 100),
            concurrency: args.concurrency,
            nats_url: nats_url.clone(),
        };
        let figures = tokio::spawn(events::run(settings))
            .await
            .context("the events part panicked")??;
        println!("{}", report::events_table(&figures, &setup));
        Some(figures)
    };

    let checkout = if args.skip_checkout {
        progress("checkout: skipped (--skip-checkout)");
        None
    } else {
        let settings = checkout::Settings {
            rounds: args.rounds,
            orders: args.orders,
            clients: args.clients,
            nats_url,
            overrides: args.settings.clone(),
        };
        let figures = tokio::spawn(checkout::run(settings))
            .await
            .context("the checkout part panicked")??;
        println!("{}", report::checkout_table(&figures, &setup));
        Some(figures)
    };

    let mut setup = setup;
    setup.load_at_end = Some(report::load_now());
    let document = report::Document::new(setup, request_reply, events, checkout);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let json_path = args.out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&document)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let svg_path = args.out.join("bench.svg");
    std::fs::write(&svg_path, chart::chart(&document)?)
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    println!(
        "Figures: {}\nChart:   {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

/// A progress line on stderr (the run takes a while; stdout keeps the tables).
fn progress(line: impl std::fmt::Display) {
    eprintln!("bench: {line}");
}

/// Fails clearly, naming the fix, when NATS cannot be reached.
async fn check_nats(url: &str) -> anyhow::Result<()> {
    progress(format_args!("checking NATS at {url}"));
    // One server or several, comma-separated (a cluster's nodes).
    let addresses: Vec<&str> = url.split(',').map(str::trim).collect();
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(&addresses[..]);
    let error = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(client)) => {
            drop(client);
            return Ok(());
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => "no connection within 5 s".to_owned(),
    };
    anyhow::bail!(
        "NATS is unreachable at {url} ({error}). Start a NATS server with JetStream \
         (`nats-server -js`), point --nats-url at one, or pass --skip-nats to leave the NATS \
         cases out."
    )
}

/// A name unique to this run, for NATS streams and subject prefixes that must not meet
/// another run's (or a test's) on a shared server.
fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `bus.event_batch=1` → (`BANYAN_BUS__EVENT_BATCH`, `1`): the environment form every process
/// reads.
fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    let valid = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if !valid {
        return Err(format!(
            "`{key}` is not a dotted configuration key such as bus.event_batch"
        ));
    }
    let variable = format!("BANYAN_{}", key.to_ascii_uppercase().replace('.', "__"));
    Ok((variable, value.to_owned()))
}
