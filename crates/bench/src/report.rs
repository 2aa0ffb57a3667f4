//! The figures as tables (stdout) and as the `bench.json` document, with the ratios that are
//! the point of the exercise.

use std::fmt::Write as _;

use serde::Serialize;

use banyan_stats::ratio;

use super::{
    BenchArgs,
    checkout::PlacementFigures,
    reply::{CaseFigures, PAYLOAD_BYTES},
};

/// The machine and the settings of a run: every figure is only meaningful next to these.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Setup {
    pub(super) cores: usize,
    pub(super) os: &'static str,
    pub(super) arch: &'static str,
    /// The processor, as the kernel names it (`model name` of /proc/cpuinfo).
    pub(super) cpu: String,
    /// The machine's memory (MemTotal of /proc/meminfo).
    pub(super) memory_bytes: u64,
    /// The commit of the working tree the bench ran in (`git describe --always --dirty`).
    pub(super) commit: String,
    /// The 1, 5 and 15 minute load averages when the run started, and when it ended: a
    /// figure taken on a busy machine says so.
    pub(super) load_at_start: [f64; 3],
    pub(super) load_at_end: Option<[f64; 3]>,
    /// `release` or `debug`: what this binary was built as.
    pub(super) build: &'static str,
    pub(super) version: &'static str,
    /// Worker threads of this process's tokio runtime (callers and answerers share them).
    pub(super) runtime_workers: usize,
    pub(super) requests: u64,
    pub(super) rounds: u64,
    pub(super) warmup: u64,
    pub(super) concurrency: u64,
    pub(super) payload_bytes: usize,
    pub(super) orders: u64,
    pub(super) clients: u64,
    pub(super) checkout_warmup: u64,
    pub(super) nats: bool,
    pub(super) checkout: bool,
    /// Events per case and round in the events part; 0 when it was skipped.
    pub(super) events: u64,
    /// Settings the checkout's processes got on top of the shipped defaults (`--set`).
    pub(super) settings: Vec<String>,
    pub(super) started_at_ms: i64,
}

impl Setup {
    pub(super) fn new(args: &BenchArgs) -> Self {
        let checkout = super::checkout::Settings {
            rounds: args.rounds,
            orders: args.orders,
            clients: args.clients,
            nats_url: None,
            overrides: Vec::new(),
        };
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpu: machine::cpu(),
            memory_bytes: machine::memory_bytes(),
            commit: machine::commit(),
            load_at_start: machine::load(),
            load_at_end: None,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            version: env!("CARGO_PKG_VERSION"),
            runtime_workers: tokio::runtime::Handle::current().metrics().num_workers(),
            requests: args.requests,
            rounds: args.rounds,
            // Enough to open connections and warm caches, small next to the timed calls.
            warmup: (args.requests / 10).clamp(20, 500),
            concurrency: args.concurrency,
            payload_bytes: PAYLOAD_BYTES,
            orders: args.orders,
            clients: args.clients,
            checkout_warmup: checkout.warmup(),
            nats: !args.skip_nats,
            checkout: !args.skip_checkout,
            events: if args.skip_events { 0 } else { args.events },
            settings: args
                .settings
                .iter()
                .map(|(variable, value)| format!("{variable}={value}"))
                .collect(),
            started_at_ms: banyan_db::now_millis(),
        }
    }

    /// The setup, as the first lines of the output.
    pub(super) fn describe(&self) -> String {
        let mut text = format!(
            "Banyan bench {} at {}: {} cores ({}), {:.1} GiB, {}/{}, {} build, tokio runtime \
             with {} workers; load average {:.2} {:.2} {:.2}\n",
            self.version,
            self.commit,
            self.cores,
            self.cpu,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.os,
            self.arch,
            self.build,
            self.runtime_workers,
            self.load_at_start[0],
            self.load_at_start[1],
            self.load_at_start[2],
        );
        if self.build == "debug" {
            let _ = writeln!(
                text,
                "WARNING: a debug build: its figures say little of the release binary's \
                 (cargo run --release -p banyan-bench)"
            );
        }
        let _ = writeln!(
            text,
            "request→reply: {} rounds × {} sequential requests per case (after {} warm-up), \
             {}-byte payload echoed, cases interleaved, medians over rounds{}",
            self.rounds,
            self.requests,
            self.warmup,
            self.payload_bytes,
            if self.concurrency > 1 {
                format!(
                    "; throughput also with {} concurrent callers",
                    self.concurrency
                )
            } else {
                String::new()
            }
        );
        if self.checkout {
            let _ = writeln!(
                text,
                "checkout: {} rounds × {} one-line orders from {} concurrent clients per placement \
                 (after {} warm-up), placements interleaved, medians over rounds; real processes \
                 of this binary, fresh SQLite data, {}",
                self.rounds,
                self.orders,
                self.clients,
                self.checkout_warmup,
                if self.settings.is_empty() {
                    "shipped defaults".to_owned()
                } else {
                    format!("shipped defaults but {}", self.settings.join(", "))
                }
            );
        }
        if !self.nats {
            text.push_str("NATS cases skipped (--skip-nats)\n");
        }
        text
    }
}

/// How much costlier `a` is than `b`: latencies `a / b`, throughputs `b / a`. Above 1, `a`
/// costs more; "in process is N× faster than http" is `http` against `in_process`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Cost {
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) throughput: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) concurrent_throughput: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct ReplyRatios {
    pub(super) http_vs_bare_http: Option<Cost>,
    /// gRPC against the bare HTTP/1.1 floor: there is no bare tonic case.
    pub(super) grpc_vs_bare_http: Option<Cost>,
    pub(super) nats_vs_bare_nats: Option<Cost>,
    pub(super) in_process_faster_than_http: Option<Cost>,
    pub(super) in_process_faster_than_grpc: Option<Cost>,
    pub(super) in_process_faster_than_nats: Option<Cost>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct CheckoutRatios {
    pub(super) in_process_faster_than_http: Option<Cost>,
    pub(super) in_process_faster_than_grpc: Option<Cost>,
    pub(super) in_process_faster_than_nats: Option<Cost>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct ReplyPart {
    pub(super) cases: Vec<CaseFigures>,
    pub(super) ratios: ReplyRatios,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct EventsPart {
    pub(super) cases: Vec<CaseFigures>,
    pub(super) ratios: EventsRatios,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct EventsRatios {
    pub(super) in_process_faster_than_http: Option<Cost>,
    pub(super) in_process_faster_than_grpc: Option<Cost>,
    pub(super) in_process_faster_than_nats: Option<Cost>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct CheckoutPart {
    pub(super) placements: Vec<PlacementFigures>,
    pub(super) ratios: CheckoutRatios,
}

/// `bench.json`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Document {
    pub(super) setup: Setup,
    pub(super) request_reply: ReplyPart,
    /// Publish→handled, durable: latencies in µs like request→reply.
    pub(super) events: Option<EventsPart>,
    pub(super) checkout: Option<CheckoutPart>,
    /// How to read the ratios.
    pub(super) note: &'static str,
}

impl Document {
    pub(super) fn new(
        setup: Setup,
        cases: Vec<CaseFigures>,
        events: Option<Vec<CaseFigures>>,
        placements: Option<Vec<PlacementFigures>>,
    ) -> Self {
        Self {
            setup,
            request_reply: ReplyPart {
                ratios: reply_ratios(&cases),
                cases,
            },
            events: events.map(|cases| EventsPart {
                ratios: events_ratios(&cases),
                cases,
            }),
            checkout: placements.map(|placements| CheckoutPart {
                ratios: checkout_ratios(&placements),
                placements,
            }),
            note: "Latencies in µs (request→reply) and ms (checkout); throughputs per second. \
                   A ratio `a_vs_b` (or `b_faster_than_a`) is how much costlier a is than b: \
                   a/b for latencies, b/a for throughputs.",
        }
    }
}

fn case<'a>(cases: &'a [CaseFigures], name: &str) -> Option<&'a CaseFigures> {
    cases.iter().find(|c| c.name == name)
}

/// How much costlier case `a` is than case `b`, from their medians.
fn reply_cost(cases: &[CaseFigures], a: &str, b: &str) -> Option<Cost> {
    let (a, b) = (&case(cases, a)?.median, &case(cases, b)?.median);
    Some(Cost {
        p50: ratio(a.p50_us, b.p50_us)?,
        p99: ratio(a.p99_us, b.p99_us)?,
        throughput: ratio(b.throughput_rps, a.throughput_rps)?,
        concurrent_throughput: ratio(b.concurrent_rps?, a.concurrent_rps?),
    })
}

fn reply_ratios(cases: &[CaseFigures]) -> ReplyRatios {
    ReplyRatios {
        http_vs_bare_http: reply_cost(cases, "http", "bare_http"),
        grpc_vs_bare_http: reply_cost(cases, "grpc", "bare_http"),
        nats_vs_bare_nats: reply_cost(cases, "nats", "bare_nats"),
        in_process_faster_than_http: reply_cost(cases, "http", "in_process"),
        in_process_faster_than_grpc: reply_cost(cases, "grpc", "in_process"),
        in_process_faster_than_nats: reply_cost(cases, "nats", "in_process"),
    }
}

fn events_ratios(cases: &[CaseFigures]) -> EventsRatios {
    EventsRatios {
        in_process_faster_than_http: reply_cost(cases, "http", "in_process"),
        in_process_faster_than_grpc: reply_cost(cases, "grpc", "in_process"),
        in_process_faster_than_nats: reply_cost(cases, "nats", "in_process"),
    }
}

fn checkout_cost(placements: &[PlacementFigures], a: &str, b: &str) -> Option<Cost> {
    let find = |name: &str| placements.iter().find(|p| p.name == name);
    let (a, b) = (find(a)?, find(b)?);
    Some(Cost {
        p50: ratio(a.p50_ms, b.p50_ms)?,
        p99: ratio(a.p99_ms, b.p99_ms)?,
        throughput: ratio(b.confirmed_per_s, a.confirmed_per_s)?,
        concurrent_throughput: None,
    })
}

fn checkout_ratios(placements: &[PlacementFigures]) -> CheckoutRatios {
    CheckoutRatios {
        in_process_faster_than_http: checkout_cost(placements, "http", "in_process"),
        in_process_faster_than_grpc: checkout_cost(placements, "grpc", "in_process"),
        in_process_faster_than_nats: checkout_cost(placements, "nats", "in_process"),
    }
}

// ------------------------------------------------------------------------------ tables

/// The request→reply table and its ratios.
pub(super) fn request_reply_table(cases: &[CaseFigures], setup: &Setup) -> String {
    let title = format!(
        "\nRequest→reply: one OS process, loopback; median of {} rounds × {} sequential requests\n\n",
        setup.rounds, setup.requests
    );
    let mut text = cases_table(title, cases, setup);
    let ratios = reply_ratios(cases);
    text.push_str(RATIOS_HEADER);
    for (label, cost) in [
        ("http / bare_http", ratios.http_vs_bare_http),
        ("grpc / bare_http", ratios.grpc_vs_bare_http),
        ("nats / bare_nats", ratios.nats_vs_bare_nats),
        ("http / in_process", ratios.in_process_faster_than_http),
        ("grpc / in_process", ratios.in_process_faster_than_grpc),
        ("nats / in_process", ratios.in_process_faster_than_nats),
    ] {
        if let Some(cost) = cost {
            let _ = writeln!(text, "  {label:<20} {}", describe_cost(&cost, setup));
        }
    }
    text
}

/// The events table and its ratios.
pub(super) fn events_table(cases: &[CaseFigures], setup: &Setup) -> String {
    let title = format!(
        "\nEvents: publish→handled, durable (outbox commit, delivery, inbox commit; SQLite, \
         synchronous = full); one OS process; median of {} rounds × {} sequential events\n\n",
        setup.rounds, setup.events
    );
    let mut text = cases_table(title, cases, setup);
    let ratios = events_ratios(cases);
    text.push_str(RATIOS_HEADER);
    for (label, cost) in [
        ("http / in_process", ratios.in_process_faster_than_http),
        ("grpc / in_process", ratios.in_process_faster_than_grpc),
        ("nats / in_process", ratios.in_process_faster_than_nats),
    ] {
        if let Some(cost) = cost {
            let _ = writeln!(text, "  {label:<20} {}", describe_cost(&cost, setup));
        }
    }
    text
}

/// One row per case: p50, p99, throughput alone and with callers, the spread of p50.
fn cases_table(title: String, cases: &[CaseFigures], setup: &Setup) -> String {
    let concurrent = setup.concurrency > 1;
    let mut text = title;
    let mut header = format!(
        "{:<12} {:>9} {:>9} {:>13}",
        "case", "p50 µs", "p99 µs", "req/s 1×"
    );
    if concurrent {
        let _ = write!(header, " {:>13}", format!("req/s {}×", setup.concurrency));
    }
    let _ = write!(header, "  {:>17}", "p50 range µs");
    let _ = writeln!(text, "{header}");
    let _ = writeln!(text, "{}", "─".repeat(header.chars().count()));
    for case in cases {
        let m = &case.median;
        let _ = write!(
            text,
            "{:<12} {:>9} {:>9} {:>13.0}",
            case.name,
            figure(m.p50_us),
            figure(m.p99_us),
            m.throughput_rps
        );
        if concurrent {
            let _ = write!(text, " {:>13.0}", m.concurrent_rps.unwrap_or(0.0));
        }
        let (low, high) = case.rounds.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), r| {
            (lo.min(r.p50_us), hi.max(r.p50_us))
        });
        let _ = writeln!(
            text,
            "  {:>17}",
            format!("{}–{}", figure(low), figure(high))
        );
    }
    text
}

/// The checkout table and its ratios.
pub(super) fn checkout_table(placements: &[PlacementFigures], setup: &Setup) -> String {
    let mut text = format!(
        "\nCheckout: POST /api/v1/orders?wait_ms=30000 until the saga confirms, payments in \
         process, over HTTP, over gRPC, over NATS; median of {} rounds × {} orders from {} clients\n\n",
        setup.rounds, setup.orders, setup.clients
    );
    let header = format!(
        "{:<12} {:>11} {:>9} {:>9} {:>12}  {:>17}",
        "placement", "confirmed", "p50 ms", "p99 ms", "confirmed/s", "p50 range ms"
    );
    let _ = writeln!(text, "{header}");
    let _ = writeln!(text, "{}", "─".repeat(header.chars().count()));
    for p in placements {
        let (low, high) = p.rounds.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), r| {
            (lo.min(r.p50_ms), hi.max(r.p50_ms))
        });
        let _ = writeln!(
            text,
            "{:<12} {:>11} {:>9} {:>9} {:>12.1}  {:>17}",
            p.name,
            format!("{}/{}", p.confirmed, p.orders),
            figure(p.p50_ms),
            figure(p.p99_ms),
            p.confirmed_per_s,
            format!("{}–{}", figure(low), figure(high))
        );
        for (what, count) in &p.not_confirmed {
            let _ = writeln!(text, "{:<12}   not confirmed: {count} × {what}", "");
        }
    }
    let ratios = checkout_ratios(placements);
    text.push_str(RATIOS_HEADER);
    for (label, cost) in [
        ("http / in_process", ratios.in_process_faster_than_http),
        ("grpc / in_process", ratios.in_process_faster_than_grpc),
        ("nats / in_process", ratios.in_process_faster_than_nats),
    ] {
        if let Some(cost) = cost {
            let _ = writeln!(
                text,
                "  {label:<20} p50 ×{}  p99 ×{}  throughput ×{}",
                figure(cost.p50),
                figure(cost.p99),
                figure(cost.throughput)
            );
        }
    }
    text
}

/// What the ratio lines mean.
const RATIOS_HEADER: &str = "\nRatios a / b: p50 and p99 as a multiple of b's, throughput as how many \
     times fewer per second; above 1, a costs more (`x / in_process` is how many times faster in \
     process is)\n";

fn describe_cost(cost: &Cost, setup: &Setup) -> String {
    let mut text = format!(
        "p50 ×{}  p99 ×{}  throughput ×{}",
        figure(cost.p50),
        figure(cost.p99),
        figure(cost.throughput)
    );
    if let Some(concurrent) = cost.concurrent_throughput {
        let _ = write!(
            text,
            "  ({} callers ×{})",
            setup.concurrency,
            figure(concurrent)
        );
    }
    text
}

/// A latency or a ratio with the digits that matter: 1.23, 12.3, 123.
pub(super) fn figure(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::reply::RoundFigures;
    use super::*;

    fn case(name: &'static str, p50_us: f64, throughput_rps: f64) -> CaseFigures {
        let figures = RoundFigures {
            p50_us,
            p99_us: p50_us * 2.0,
            throughput_rps,
            concurrent_rps: Some(throughput_rps * 2.0),
        };
        CaseFigures {
            name,
            rounds: vec![figures],
            median: figures,
        }
    }

    #[test]
    fn ratios_say_how_much_costlier_the_first_case_is() {
        let cases = vec![
            case("in_process", 2.0, 400_000.0),
            case("bare_http", 50.0, 20_000.0),
            case("http", 60.0, 16_000.0),
        ];
        let ratios = reply_ratios(&cases);
        let http = ratios.http_vs_bare_http.expect("both cases ran");
        assert!((http.p50 - 1.2).abs() < 1e-9);
        assert!((http.throughput - 1.25).abs() < 1e-9);
        let faster = ratios.in_process_faster_than_http.expect("both cases ran");
        assert!((faster.p50 - 30.0).abs() < 1e-9);
        assert!((faster.throughput - 25.0).abs() < 1e-9);
        assert!(ratios.nats_vs_bare_nats.is_none(), "NATS did not run");
    }

    #[test]
    fn figures_keep_three_significant_digits() {
        assert_eq!(figure(1.2345), "1.23");
        assert_eq!(figure(12.345), "12.3");
        assert_eq!(figure(123.45), "123");
    }
}

/// The load averages now, for the end of a run.
pub(super) fn load_now() -> [f64; 3] {
    machine::load()
}

/// What the bench records of the machine it ran on.
mod machine {
    /// The first `model name` of /proc/cpuinfo, or `unknown`.
    pub(super) fn cpu() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, name)| name.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// MemTotal of /proc/meminfo in bytes, or 0.
    pub(super) fn memory_bytes() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(0)
    }

    /// `git describe --always --dirty` of the working directory, or `unknown`.
    pub(super) fn commit() -> String {
        std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .map(|commit| commit.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    }

    /// The 1, 5 and 15 minute load averages (/proc/loadavg), or zeros.
    pub(super) fn load() -> [f64; 3] {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
        [(); 3].map(|()| fields.next().unwrap_or(0.0))
    }
}
