//! `bench.svg`, drawn with plotters' SVG backend: two panels on linear scales, request→reply in
//! microseconds and the checkout in milliseconds, each case with its p50 and its p99 (medians
//! over rounds, a whisker from the lowest round to the highest), and beside each bar its value
//! and the multiple that is the point of the run.
//!
//! Linear, not logarithmic: on a log axis a hundredfold gap looks like a small step. A case too
//! fast to show as a bar (the bus in process next to a network) still reads from its label.

use plotters::{
    coord::{Shift, ranged1d::SegmentValue},
    prelude::*,
};

use super::{
    checkout,
    reply::RoundFigures,
    report::{Document, figure},
};

const WIDTH: u32 = 1000;
const ROW_HEIGHT: u32 = 26;
/// Title, setup line and legend above the panels.
const HEADER_HEIGHT: u32 = 92;
/// A panel's caption and axis beside its rows.
const PANEL_CHROME: u32 = 84;

const P50_COLOUR: RGBColor = RGBColor(59, 110, 168);
const P99_COLOUR: RGBColor = RGBColor(224, 123, 36);
const FLOOR_COLOUR: RGBColor = RGBColor(150, 160, 175);

/// One case of a panel: its name, p50 and p99 in the panel's unit, and what it is compared with.
struct Case {
    label: String,
    p50: f64,
    p99: f64,
    /// The lowest and the highest round's p50, and p99: how far one run's figure may wander.
    p50_spread: Spread,
    p99_spread: Spread,
    /// A bare transport: drawn in grey, the floor the adapter is measured against.
    floor: bool,
    note: String,
}

/// The lowest and the highest of a figure over rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    low: f64,
    high: f64,
}

impl Spread {
    /// Over `rounds`; `None` when there are none.
    fn of(rounds: impl IntoIterator<Item = f64>) -> Option<Self> {
        rounds.into_iter().fold(None, |spread, value| {
            Some(match spread {
                None => Spread {
                    low: value,
                    high: value,
                },
                Some(Spread { low, high }) => Spread {
                    low: low.min(value),
                    high: high.max(value),
                },
            })
        })
    }
}

struct Panel {
    caption: String,
    unit: &'static str,
    cases: Vec<Case>,
}

/// The chart of `document`, as an SVG document.
pub(super) fn chart(document: &Document) -> anyhow::Result<String> {
    let panels: Vec<Panel> = [reply_panel(document), checkout_panel(document)]
        .into_iter()
        .flatten()
        .filter(|p| !p.cases.is_empty())
        .collect();
    let rows: u32 = panels.iter().map(|p| 2 * p.cases.len() as u32).sum();
    let height = HEADER_HEIGHT + panels.len() as u32 * PANEL_CHROME + rows * ROW_HEIGHT;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (header, mut rest) = root.split_vertically(HEADER_HEIGHT);
        draw_header(&header, document)?;
        for panel in &panels {
            let height = PANEL_CHROME + 2 * panel.cases.len() as u32 * ROW_HEIGHT;
            let (area, below) = rest.split_vertically(height);
            draw_panel(&area, panel)?;
            rest = below;
        }
        root.present()?;
    }
    Ok(svg)
}

fn draw_header(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    document: &Document,
) -> anyhow::Result<()> {
    let setup = &document.setup;
    area.draw(&Text::new(
        "What moving a module out costs: latency by placement",
        (16, 12),
        ("sans-serif", 20).into_font().style(FontStyle::Bold),
    ))?;
    // The title's own line: what ran, where, and how busy the machine was.
    let [load, ..] = setup.load_at_start;
    area.draw(&Text::new(
        format!(
            "at {} · {} ({} cores) · load average {load:.2} at the start",
            setup.commit, setup.cpu, setup.cores
        ),
        (560, 17),
        ("sans-serif", 12).into_font().color(&BLACK.mix(0.75)),
    ))?;
    let mut line = format!(
        "{} cores, {} build · request→reply: median of {} rounds × {} requests, {}-byte payload",
        setup.cores, setup.build, setup.rounds, setup.requests, setup.payload_bytes
    );
    if document.checkout.is_some() {
        line.push_str(&format!(
            " · checkout: {} rounds × {} orders, {} clients, real processes",
            setup.rounds, setup.orders, setup.clients
        ));
    }
    area.draw(&Text::new(
        line,
        (16, 42),
        ("sans-serif", 12).into_font().color(&BLACK.mix(0.75)),
    ))?;
    let legend = [
        (P50_COLOUR, "p50"),
        (P99_COLOUR, "p99"),
        (FLOOR_COLOUR, "bare transport (the floor), p50 and p99"),
    ];
    let mut x = 16;
    for (colour, label) in legend {
        area.draw(&Rectangle::new([(x, 66), (x + 12, 78)], colour.filled()))?;
        area.draw(&Text::new(label, (x + 18, 65), ("sans-serif", 12)))?;
        x += 40 + 7 * label.chars().count() as i32;
    }
    area.draw(&PathElement::new(vec![(x, 72), (x + 16, 72)], BLACK))?;
    area.draw(&PathElement::new(vec![(x, 67), (x, 77)], BLACK))?;
    area.draw(&PathElement::new(vec![(x + 16, 67), (x + 16, 77)], BLACK))?;
    area.draw(&Text::new(
        "the lowest to the highest round",
        (x + 22, 65),
        ("sans-serif", 12),
    ))?;
    Ok(())
}

fn draw_panel(area: &DrawingArea<SVGBackend<'_>, Shift>, panel: &Panel) -> anyhow::Result<()> {
    let rows = 2 * panel.cases.len() as u32;
    let highest = panel
        .cases
        .iter()
        .map(|c| {
            c.p50
                .max(c.p99)
                .max(c.p50_spread.high)
                .max(c.p99_spread.high)
        })
        .fold(0.0_f64, f64::max);
    // Room right of the longest bar for its label.
    let x_max = if highest > 0.0 { highest * 1.45 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(
            &panel.caption,
            ("sans-serif", 15).into_font().style(FontStyle::Bold),
        )
        .margin_left(16)
        .margin_right(24)
        .x_label_area_size(30)
        .y_label_area_size(170)
        .build_cartesian_2d(0.0..x_max, (0..rows).into_segmented())?;
    // Rows count from the bottom: the first case goes on top.
    let labels: Vec<String> = panel
        .cases
        .iter()
        .flat_map(|c| [format!("{} p50", c.label), format!("{} p99", c.label)])
        .rev()
        .collect();
    let unit = panel.unit;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .x_label_formatter(&|v| figure(*v))
        .y_labels(rows as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(row) | SegmentValue::Exact(row) => {
                labels.get(*row as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    for (i, case) in panel.cases.iter().enumerate() {
        let figures = [(case.p50, case.p50_spread), (case.p99, case.p99_spread)];
        for (j, (value, spread)) in figures.into_iter().enumerate() {
            let row = rows - 1 - (2 * i + j) as u32;
            let colour = match (case.floor, j) {
                (true, _) => FLOOR_COLOUR,
                (false, 0) => P50_COLOUR,
                (false, _) => P99_COLOUR,
            };
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (value, SegmentValue::Exact(row + 1)),
                ],
                colour.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            chart.draw_series(std::iter::once(bar))?;
            let middle = SegmentValue::CenterOf(row);
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(spread.low, middle.clone()), (spread.high, middle.clone())],
                BLACK,
            )))?;
            let cap = |x: f64| {
                EmptyElement::at((x, middle.clone()))
                    + PathElement::new(vec![(0, -6), (0, 6)], BLACK)
            };
            chart.draw_series([cap(spread.low), cap(spread.high)])?;
            let mut label = format!("{} {unit}", figure(value));
            if j == 0 && !case.note.is_empty() {
                label.push_str(&format!("  ({})", case.note));
            }
            chart.draw_series(std::iter::once(Text::new(
                label,
                (
                    value.max(spread.high) + x_max * 0.01,
                    SegmentValue::Exact(row + 1),
                ),
                ("sans-serif", 12),
            )))?;
        }
    }
    Ok(())
}

/// `a` as a multiple of `b`, said as `what`; empty when either is missing.
fn times(a: Option<f64>, b: Option<f64>, what: &str) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => format!("×{} {what}", figure(a / b)),
        _ => String::new(),
    }
}

fn reply_panel(document: &Document) -> Option<Panel> {
    let cases = &document.request_reply.cases;
    let find = |name: &str| cases.iter().find(|c| c.name == name);
    let p50 = |name: &str| find(name).map(|c| c.median.p50_us);
    let mut out = Vec::new();
    for (name, label, floor, note) in [
        ("in_process", "in process", false, String::new()),
        ("bare_http", "bare HTTP", true, String::new()),
        (
            "http",
            "bus over HTTP",
            false,
            [
                times(p50("http"), p50("bare_http"), "the floor"),
                times(p50("http"), p50("in_process"), "in process"),
            ]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        ),
        (
            "grpc",
            "bus over gRPC",
            false,
            [
                times(p50("grpc"), p50("bare_http"), "the HTTP floor"),
                times(p50("grpc"), p50("in_process"), "in process"),
            ]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        ),
        ("bare_nats", "bare NATS", true, String::new()),
        (
            "nats",
            "bus over NATS",
            false,
            [
                times(p50("nats"), p50("bare_nats"), "the floor"),
                times(p50("nats"), p50("in_process"), "in process"),
            ]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        ),
    ] {
        if let Some(case) = find(name) {
            let spread = |figure: fn(&RoundFigures) -> f64, median: f64| {
                Spread::of(case.rounds.iter().map(figure)).unwrap_or(Spread {
                    low: median,
                    high: median,
                })
            };
            out.push(Case {
                label: label.to_owned(),
                p50: case.median.p50_us,
                p99: case.median.p99_us,
                p50_spread: spread(|r| r.p50_us, case.median.p50_us),
                p99_spread: spread(|r| r.p99_us, case.median.p99_us),
                floor,
                note,
            });
        }
    }
    Some(Panel {
        caption: "Request→reply: one 64-byte echo, no database".to_owned(),
        unit: "µs",
        cases: out,
    })
}

fn checkout_panel(document: &Document) -> Option<Panel> {
    let placements = &document.checkout.as_ref()?.placements;
    let find = |name: &str| placements.iter().find(|p| p.name == name);
    let p50 = |name: &str| find(name).map(|p| p.p50_ms);
    let cases = [
        ("in_process", "payments in process"),
        ("http", "payments over HTTP"),
        ("grpc", "payments over gRPC"),
        ("nats", "payments over NATS"),
    ]
    .into_iter()
    .filter_map(|(name, label)| {
        let placement = find(name)?;
        let spread = |figure: fn(&checkout::RoundFigures) -> f64, median: f64| {
            Spread::of(placement.rounds.iter().map(figure)).unwrap_or(Spread {
                low: median,
                high: median,
            })
        };
        Some(Case {
            label: label.to_owned(),
            p50: placement.p50_ms,
            p99: placement.p99_ms,
            p50_spread: spread(|r| r.p50_ms, placement.p50_ms),
            p99_spread: spread(|r| r.p99_ms, placement.p99_ms),
            floor: false,
            note: if name == "in_process" {
                String::new()
            } else {
                times(p50(name), p50("in_process"), "in process")
            },
        })
    })
    .collect();
    Some(Panel {
        caption: "Checkout: order placed to order confirmed, through the public API".to_owned(),
        unit: "ms",
        cases,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use clap::Parser as _;

    use crate::{
        BenchArgs,
        reply::{CaseFigures, RoundFigures},
        report::Setup,
    };

    fn case(name: &'static str, p50_us: f64) -> CaseFigures {
        let figures = RoundFigures {
            p50_us,
            p99_us: p50_us * 2.0,
            throughput_rps: 1e6 / p50_us,
            concurrent_rps: None,
        };
        CaseFigures {
            name,
            rounds: vec![figures],
            median: figures,
        }
    }

    #[tokio::test]
    async fn the_chart_shows_every_case_with_its_p50_its_p99_and_its_multiples() {
        let args = BenchArgs::parse_from(["banyan-bench", "--skip-checkout", "--skip-nats"]);
        let cases = vec![
            case("in_process", 1.5),
            case("bare_http", 100.0),
            case("http", 140.0),
        ];
        let document = Document::new(Setup::new(&args), cases, None, None);
        let svg = chart(&document).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "in process p50",
            "bus over HTTP p99",
            "bare HTTP p50",
            "140 µs",
            "280 µs",
            "×1.40 the floor",
            "×93.3 in process",
            "the lowest to the highest round",
        ] {
            assert!(svg.contains(text), "the chart lacks {text:?}");
        }
        assert!(!svg.contains("Checkout"), "no checkout ran");
    }

    #[test]
    fn a_spread_runs_from_the_lowest_round_to_the_highest() {
        assert_eq!(
            Spread::of([3.0, 1.0, 2.0]),
            Some(Spread {
                low: 1.0,
                high: 3.0
            })
        );
        assert_eq!(Spread::of([]), None);
    }

    #[test]
    fn a_multiple_names_what_it_compares_and_needs_both_figures() {
        assert_eq!(
            times(Some(150.0), Some(100.0), "the floor"),
            "×1.50 the floor"
        );
        assert_eq!(times(Some(150.0), None, "the floor"), "");
        assert_eq!(times(Some(150.0), Some(0.0), "the floor"), "");
    }
}
