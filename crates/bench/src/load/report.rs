//! What a load run tells: the table on stdout, `load.json`, and `load.svg` (plotters, linear
//! axis: p50, p99 and p99.9 per kind and in total).

use std::{collections::BTreeMap, fmt::Write as _};

use banyan_stats::{Latencies, millis, per_second};
use plotters::{coord::ranged1d::SegmentValue, prelude::*};
use serde::Serialize;

use super::{
    Drive,
    mix::Kind,
    run::{Figures, KindFigures, Settings},
};
use crate::report::figure;

/// The setup of a run: a figure means something only next to these.
#[derive(Debug, Serialize)]
pub(crate) struct Setup {
    url: String,
    drive: Drive,
    /// The kinds sent and their weights (requests per second in the seed's estimate).
    mix: BTreeMap<&'static str, u64>,
    warmup_s: u64,
    measured_s: u64,
    cores: usize,
    build: &'static str,
    version: &'static str,
    /// `git rev-parse --short HEAD` where this ran, if it ran in a checkout.
    commit: Option<String>,
    /// The machine's load averages (1, 5, 15 minutes) when the run started.
    load_average: Option<String>,
    started_at_ms: i64,
}

/// One row of the table.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    kind: &'static str,
    requests: u64,
    errors: u64,
    /// Answers by status; `0`: no answer.
    statuses: BTreeMap<u16, u64>,
    per_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Row {
    fn new(kind: &'static str, figures: &KindFigures, elapsed_s: f64) -> Self {
        let l = &figures.latencies;
        Self {
            kind,
            requests: l.count(),
            errors: figures.errors(),
            statuses: figures.statuses.clone(),
            per_s: per_second(l.count(), std::time::Duration::from_secs_f64(elapsed_s)),
            p50_ms: millis(l.percentile(0.50)),
            p90_ms: millis(l.percentile(0.90)),
            p99_ms: millis(l.percentile(0.99)),
            p999_ms: millis(l.percentile(0.999)),
            max_ms: millis(l.max()),
        }
    }
}

/// Everything a run writes.
#[derive(Debug, Serialize)]
pub(crate) struct Document {
    setup: Setup,
    elapsed_s: f64,
    /// Open loop: how far behind its schedule the generator fell at worst. Far above the
    /// latencies, the generator (not the server) was the limit.
    worst_send_lag_ms: f64,
    server_peak_rss_bytes: Option<u64>,
    kinds: Vec<Row>,
    total: Row,
}

impl Document {
    pub(crate) fn new(
        url: &str,
        drive: Drive,
        kinds: &[Kind],
        settings: &Settings,
        figures: Figures,
    ) -> Self {
        let elapsed_s = figures.elapsed.as_secs_f64();
        let mut total = KindFigures {
            latencies: Latencies::new(),
            statuses: BTreeMap::new(),
        };
        for figures in figures.per_kind.values() {
            total.latencies.add(&figures.latencies);
            for (status, n) in &figures.statuses {
                *total.statuses.entry(*status).or_default() += n;
            }
        }
        let rows = kinds
            .iter()
            .map(|kind| {
                let kind_figures = figures.per_kind.get(kind).cloned().unwrap_or_default();
                Row::new(kind.name(), &kind_figures, elapsed_s)
            })
            .collect();
        Self {
            setup: Setup {
                url: url.to_owned(),
                drive,
                mix: kinds.iter().map(|k| (k.name(), k.weight())).collect(),
                warmup_s: settings.warmup.as_secs(),
                measured_s: settings.measured.as_secs(),
                cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
                build: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
                version: env!("CARGO_PKG_VERSION"),
                commit: commit(),
                load_average: std::fs::read_to_string("/proc/loadavg").ok().map(|text| {
                    text.split_whitespace()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
                started_at_ms: banyan_db::now_millis(),
            },
            elapsed_s,
            worst_send_lag_ms: millis(figures.worst_send_lag),
            server_peak_rss_bytes: figures.server_peak_rss,
            kinds: rows,
            total: Row::new("total", &total, elapsed_s),
        }
    }

    fn drive_text(&self) -> String {
        match self.setup.drive {
            Drive::OpenLoop {
                rate,
                max_in_flight,
            } => format!(
                "open loop at {rate} requests/s (latency from each request's due time; at most \
                 {max_in_flight} in flight)"
            ),
            Drive::ClosedLoop { connections } => {
                format!("closed loop, {connections} concurrent clients")
            }
        }
    }

    pub(crate) fn table(&self) -> String {
        let setup = &self.setup;
        let mut text = format!(
            "\nLoad: {} against {}; {} s measured after {} s of warm-up; {} cores, {} build{}\n\n",
            self.drive_text(),
            setup.url,
            setup.measured_s,
            setup.warmup_s,
            setup.cores,
            setup.build,
            setup
                .load_average
                .as_ref()
                .map(|l| format!(", load average {l} at the start"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            text,
            "{:<14} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "kind",
            "requests",
            "errors",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        let _ = writeln!(text, "{}", "─".repeat(95));
        for row in self.kinds.iter().chain(std::iter::once(&self.total)) {
            if row.kind == "total" {
                let _ = writeln!(text, "{}", "─".repeat(95));
            }
            let _ = writeln!(
                text,
                "{:<14} {:>9} {:>7} {:>9.0} {:>9} {:>9} {:>9} {:>9} {:>9}",
                row.kind,
                row.requests,
                row.errors,
                row.per_s,
                figure(row.p50_ms),
                figure(row.p90_ms),
                figure(row.p99_ms),
                figure(row.p999_ms),
                figure(row.max_ms)
            );
        }
        let failures: Vec<String> = self
            .total
            .statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(status, n)| match status {
                0 => format!("{n} without an answer"),
                status => format!("{n} × {status}"),
            })
            .collect();
        if !failures.is_empty() {
            let _ = writeln!(text, "\nErrors: {}", failures.join(", "));
        }
        if let Drive::OpenLoop { .. } = self.setup.drive {
            let _ = writeln!(
                text,
                "\nThe generator fell at most {} ms behind its schedule.",
                figure(self.worst_send_lag_ms)
            );
        }
        if let Some(rss) = self.server_peak_rss_bytes {
            let _ = writeln!(
                text,
                "The server's peak resident memory: {:.0} MB.",
                rss as f64 / 1e6
            );
        }
        text
    }

    /// `load.svg`: per kind and in total, the p50, p99 and p99.9 bars on one linear axis.
    pub(crate) fn chart(&self) -> anyhow::Result<String> {
        const WIDTH: u32 = 1000;
        const ROW: u32 = 22;
        let rows: Vec<(String, f64, RGBColor)> = self
            .kinds
            .iter()
            .chain(std::iter::once(&self.total))
            .flat_map(|row| {
                [
                    (
                        format!("{} p50", row.kind),
                        row.p50_ms,
                        RGBColor(59, 110, 168),
                    ),
                    (
                        format!("{} p99", row.kind),
                        row.p99_ms,
                        RGBColor(224, 123, 36),
                    ),
                    (
                        format!("{} p99.9", row.kind),
                        row.p999_ms,
                        RGBColor(180, 60, 60),
                    ),
                ]
            })
            .collect();
        let height = 110 + rows.len() as u32 * ROW;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
            root.fill(&WHITE)?;
            let (header, area) = root.split_vertically(60);
            header.draw(&Text::new(
                "The seed's request mix: latency per kind",
                (16, 10),
                ("sans-serif", 20).into_font().style(FontStyle::Bold),
            ))?;
            header.draw(&Text::new(
                format!(
                    "{}, {} s; {:.0} answers/s, {} errors; {} cores, {} build",
                    self.drive_text(),
                    self.setup.measured_s,
                    self.total.per_s,
                    self.total.errors,
                    self.setup.cores,
                    self.setup.build
                ),
                (16, 38),
                ("sans-serif", 12).into_font().color(&BLACK.mix(0.75)),
            ))?;
            let highest = rows.iter().map(|r| r.1).fold(0.0_f64, f64::max);
            let x_max = if highest > 0.0 { highest * 1.2 } else { 1.0 };
            let count = rows.len() as u32;
            let mut chart = ChartBuilder::on(&area)
                .margin_left(16)
                .margin_right(24)
                .x_label_area_size(30)
                .y_label_area_size(150)
                .build_cartesian_2d(0.0..x_max, (0..count).into_segmented())?;
            let labels: Vec<String> = rows.iter().rev().map(|r| r.0.clone()).collect();
            chart
                .configure_mesh()
                .disable_y_mesh()
                .x_desc("ms")
                .x_label_formatter(&|v| figure(*v))
                .y_labels(count as usize)
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(row) | SegmentValue::Exact(row) => {
                        labels.get(*row as usize).cloned().unwrap_or_default()
                    }
                    SegmentValue::Last => String::new(),
                })
                .draw()?;
            for (i, (_, value, colour)) in rows.iter().enumerate() {
                let row = count - 1 - i as u32;
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(row)),
                        (*value, SegmentValue::Exact(row + 1)),
                    ],
                    colour.filled(),
                );
                bar.set_margin(3, 3, 0, 0);
                chart.draw_series(std::iter::once(bar))?;
                chart.draw_series(std::iter::once(Text::new(
                    format!("{} ms", figure(*value)),
                    (*value + x_max * 0.01, SegmentValue::Exact(row + 1)),
                    ("sans-serif", 11),
                )))?;
            }
            root.present()?;
        }
        Ok(svg)
    }
}

fn commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
