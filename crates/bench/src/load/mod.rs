//! `banyan-bench load`: the seed's request mix against any running shop.
//!
//! The seed's capacity estimate splits its 12,000-odd external requests a second over the
//! services: users 1,000, catalog 5,000, cart 2,000, orders 500, payments 400, inventory
//! 1,500 and notifications 3,000. [`mix`] turns those weights into requests of the public API
//! (see its table); `--kinds` keeps some of them (the reads alone, say).
//!
//! Two ways to drive it:
//! - **Open loop** (`--rate`): requests are sent on a fixed schedule whatever the answers do,
//!   as independent users would. Each latency is measured from the moment the request was
//!   *due*, not from when it was sent, so a stalled server cannot hide its stall by slowing
//!   the generator down (coordinated omission). A request that cannot even be started because
//!   `--max-in-flight` are outstanding waits, and that wait counts too.
//! - **Closed loop** (`--connections`): that many clients, each sending its next request when
//!   its last was answered: the throughput the server sustains at that concurrency.
//!
//! Every figure goes into an HDR histogram per request kind (`banyan-stats`); the table,
//! `load.json` and `load.svg` (linear axis, p50/p99/p99.9 per kind) are written at the end.
//! A progress bar (indicatif, on stderr) shows the rate and the errors while it runs.
//!
//! Why not goose: goose drives closed-loop "users" with their own scheduler and report;
//! open-loop sending at a fixed rate with latencies from the due time, the seed's weights,
//! this project's histograms (the same p99 as every other bench here), `bench.json`'s kind of
//! output and the server's RSS are what this needs, and they come to a few hundred lines on
//! crates the workspace already has (reqwest, hdrhistogram, plotters) plus indicatif.

mod mix;
mod report;
mod run;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

pub use mix::Kind;

/// `banyan-bench load`: sends the seed's request mix to a running shop, open loop at a rate
/// or closed loop at a concurrency, and reports p50/p90/p99/p99.9 and errors per kind.
///
/// The shop must have an admin account (`banyan seed` makes one and keeps its password in
/// data/seed_admin_password, this command's default): the load sets up its own products,
/// stock and customers first, under names of its own.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "banyan-bench load",
    bin_name = "banyan-bench load",
    version,
    after_help = "Examples:\n  \
        banyan-bench load --rate 12000 --seconds 30          # the seed's mix, open loop\n  \
        banyan-bench load --connections 16 --kinds product   # one kind, closed loop\n\n\
        Request kinds (weight per second in the seed's mix): users 1000, product 4000, \
        category 1000, cart_add 1000, cart_get 1000, order 500, payment 400, stock 1500, \
        notifications 3000."
)]
pub struct LoadArgs {
    /// The shop's public base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Open loop: requests per second, sent on schedule whatever the answers do.
    #[arg(long, conflicts_with = "connections", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rate: Option<u64>,
    /// Closed loop: concurrent clients, each waiting for its answer (the default: 16).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connections: Option<u64>,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// The same load, unmeasured, before (connections, caches), in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    warmup_seconds: u64,
    /// Only these request kinds, comma-separated (their weights kept): e.g. `product,category`.
    #[arg(long, value_delimiter = ',', value_parser = mix::parse_kind)]
    kinds: Vec<Kind>,
    /// Open loop: at most this many requests outstanding; a due request waits for a slot
    /// (and the wait counts in its latency).
    #[arg(long, default_value_t = 4_096, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_in_flight: u64,
    /// Customers the load registers and spreads its requests over.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    customers: u64,
    /// Products it creates (in four categories).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(4..=10_000))]
    products: u64,
    /// The admin account that sets up products and stock.
    #[arg(long, default_value = "admin")]
    admin_user: String,
    /// Its password; `BANYAN_LOAD_ADMIN_PASSWORD`, else read from `--admin-password-file`.
    #[arg(long, env = "BANYAN_LOAD_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Where `banyan seed` left the admin's password.
    #[arg(long, default_value = "data/seed_admin_password")]
    admin_password_file: PathBuf,
    /// The server's process id: its peak resident memory during the run is reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Where `load.json` and `load.svg` are written.
    #[arg(long, default_value = "target/load")]
    out: PathBuf,
}

/// How the load is driven.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Drive {
    OpenLoop { rate: u64, max_in_flight: u64 },
    ClosedLoop { connections: u64 },
}

impl LoadArgs {
    fn drive(&self) -> Drive {
        match (self.rate, self.connections) {
            (Some(rate), _) => Drive::OpenLoop {
                rate,
                max_in_flight: self.max_in_flight,
            },
            (None, connections) => Drive::ClosedLoop {
                connections: connections.unwrap_or(16),
            },
        }
    }

    fn admin_password(&self) -> anyhow::Result<String> {
        if let Some(password) = &self.admin_password {
            return Ok(password.clone());
        }
        let text = std::fs::read_to_string(&self.admin_password_file).with_context(|| {
            format!(
                "no --admin-password, and {} cannot be read (run `banyan seed` first, or pass \
                 the admin's password)",
                self.admin_password_file.display()
            )
        })?;
        Ok(text.trim().to_owned())
    }
}

/// Runs the load: setup, warm-up, the measured run, then the table and the files.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let drive = args.drive();
    let kinds = mix::chosen(&args.kinds);
    let client = banyan_bus::http::client_builder()
        .pool_max_idle_per_host(usize::MAX)
        .timeout(Duration::from_secs(30))
        .build()?;
    eprintln!(
        "load: setting up {} products and {} customers at {}",
        args.products, args.customers, args.url
    );
    let shop = mix::Shop::set_up(
        &client,
        &args.url,
        (&args.admin_user, &args.admin_password()?),
        args.products,
        args.customers,
    )
    .await
    .map(std::sync::Arc::new)
    .context("setting up the load's products and customers")?;
    let settings = run::Settings {
        drive,
        kinds: kinds.clone(),
        warmup: Duration::from_secs(args.warmup_seconds),
        measured: Duration::from_secs(args.seconds),
        server_pid: args.server_pid,
    };
    let figures = run::run(&client, &shop, &settings).await;
    let document = report::Document::new(&args.url, drive, &kinds, &settings, figures);
    println!("{}", document.table());
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = args.out.join("load.json");
    std::fs::write(&json, serde_json::to_string_pretty(&document)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = args.out.join("load.svg");
    std::fs::write(&svg, document.chart()?)
        .with_context(|| format!("writing {}", svg.display()))?;
    println!("Figures: {}\nChart:   {}", json.display(), svg.display());
    Ok(())
}
