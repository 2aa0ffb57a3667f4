//! `bench.svg`: p50 latency per placement as grouped horizontal bars on one log scale, so a
//! request→reply in microseconds and a checkout in milliseconds sit on the same axis, with the
//! ratios beside the bars. Hand-written SVG: a handful of rectangles and labels.

use std::fmt::Write as _;

use super::report::{Document, figure};

const WIDTH: f64 = 980.0;
/// The plot area, between the row labels and the ratio annotations.
const PLOT_LEFT: f64 = 210.0;
const PLOT_RIGHT: f64 = 730.0;
const ANNOTATION_X: f64 = 745.0;
const ROW: f64 = 24.0;
const BAR: f64 = 15.0;
const GROUP_HEADER: f64 = 24.0;
const GROUP_GAP: f64 = 12.0;
const TOP: f64 = 112.0;

const REPLY_COLOUR: &str = "#3b6ea8";
const FLOOR_COLOUR: &str = "#a9b4c2";
const CHECKOUT_COLOUR: &str = "#e07b24";

/// One bar: a label, a p50 in µs, its colour, and what it is compared with.
struct Bar {
    label: &'static str,
    p50_us: f64,
    colour: &'static str,
    annotation: String,
}

struct Group {
    /// `in_process`, `http` or `nats`, as in bench.json.
    placement: &'static str,
    title: &'static str,
    bars: Vec<Bar>,
}

/// The chart of `document`, as an SVG document.
pub(super) fn chart(document: &Document) -> String {
    let groups = groups(document);
    let values: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.p50_us))
        .filter(|v| *v > 0.0)
        .collect();
    let scale = LogScale::covering(&values);
    let rows: usize = groups.iter().map(|g| g.bars.len()).sum();
    let plot_bottom = TOP + groups.len() as f64 * (GROUP_HEADER + GROUP_GAP) + rows as f64 * ROW;
    let height = plot_bottom + 70.0;

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"Helvetica, Arial, sans-serif\" \
         font-size=\"12\">\n\
         <title>Banyan bench: what moving a module out costs</title>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
    );
    header(&mut svg, document);
    axis(&mut svg, &scale, plot_bottom);
    let mut y = TOP;
    for group in &groups {
        let _ = writeln!(
            svg,
            "<g data-placement=\"{}\">\n<text x=\"16\" y=\"{:.1}\" font-size=\"13\" \
             font-weight=\"bold\" fill=\"#222\">{}: {}</text>",
            group.placement,
            y + 16.0,
            group.placement,
            escape(group.title)
        );
        y += GROUP_HEADER;
        for bar in &group.bars {
            draw_bar(&mut svg, bar, &scale, y);
            y += ROW;
        }
        svg.push_str("</g>\n");
        y += GROUP_GAP;
    }
    let _ = writeln!(
        svg,
        "<text x=\"{PLOT_LEFT}\" y=\"{:.1}\" fill=\"#555\">p50 latency, log scale. \
         Beside the bars: this p50 as a multiple of the floor's or the in-process one. All figures: bench.json.</text>",
        plot_bottom + 48.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// Title, setup and legend.
fn header(svg: &mut String, document: &Document) {
    let setup = &document.setup;
    let _ = writeln!(
        svg,
        "<text x=\"16\" y=\"30\" font-size=\"18\" font-weight=\"bold\" fill=\"#111\">\
         What moving a module out costs: p50 latency by placement</text>"
    );
    let mut line = format!(
        "{} cores, {} build · request→reply: median of {} rounds × {} requests, {}-byte payload",
        setup.cores, setup.build, setup.rounds, setup.requests, setup.payload_bytes
    );
    if document.checkout.is_some() {
        let _ = write!(
            line,
            " · checkout: {} rounds × {} orders, {} clients, real processes",
            setup.rounds, setup.orders, setup.clients
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"16\" y=\"52\" font-size=\"11\" fill=\"#444\">{}</text>",
        escape(&line)
    );
    let mut legend = vec![
        (REPLY_COLOUR, "request→reply through the Banyan bus"),
        (FLOOR_COLOUR, "bare transport round trip (the floor)"),
    ];
    if document.checkout.is_some() {
        legend.push((CHECKOUT_COLOUR, "checkout, order to confirmation"));
    }
    let mut x = 16.0;
    for (colour, label) in legend {
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.1}\" y=\"68\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"78\" fill=\"#333\">{}</text>",
            x + 17.0,
            escape(label)
        );
        x += 30.0 + label.chars().count() as f64 * 6.4;
    }
}

/// The decade grid lines and their labels.
fn axis(svg: &mut String, scale: &LogScale, plot_bottom: f64) {
    for decade in scale.decades() {
        let x = scale.x(decade);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{plot_bottom:.1}\" \
             stroke=\"#e3e3e3\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            TOP - 6.0,
            plot_bottom + 18.0,
            escape(&decade_label(decade))
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{PLOT_LEFT}\" y1=\"{plot_bottom:.1}\" x2=\"{PLOT_RIGHT}\" \
         y2=\"{plot_bottom:.1}\" stroke=\"#999\"/>"
    );
}

fn draw_bar(svg: &mut String, bar: &Bar, scale: &LogScale, y: f64) {
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#333\">{}</text>",
        PLOT_LEFT - 8.0,
        y + BAR - 3.0,
        escape(bar.label)
    );
    let end = scale.x(bar.p50_us).max(PLOT_LEFT + 1.0);
    let _ = writeln!(
        svg,
        "<rect x=\"{PLOT_LEFT}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR}\" fill=\"{}\"/>",
        end - PLOT_LEFT,
        bar.colour
    );
    // The value after the bar's end, or inside it when there is no room outside.
    let value = escape(&duration_label(bar.p50_us));
    if end > PLOT_RIGHT - 60.0 {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#fff\" \
             font-weight=\"bold\">{value}</text>",
            end - 5.0,
            y + BAR - 3.0
        );
    } else {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#222\">{value}</text>",
            end + 5.0,
            y + BAR - 3.0
        );
    }
    if !bar.annotation.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{ANNOTATION_X}\" y=\"{:.1}\" fill=\"#444\">{}</text>",
            y + BAR - 3.0,
            escape(&bar.annotation)
        );
    }
}

/// The bars, grouped by placement; a placement with no figure at all is left out.
fn groups(document: &Document) -> Vec<Group> {
    let reply = |name: &str| {
        document
            .request_reply
            .cases
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.median.p50_us)
    };
    let checkout = |name: &str| {
        document
            .checkout
            .as_ref()?
            .placements
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.p50_ms * 1_000.0)
    };
    let times = |a: Option<f64>, b: Option<f64>, what: &str| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => format!("{}× {what}", figure(a / b)),
        _ => String::new(),
    };
    let joined = |parts: [String; 2]| {
        parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let mut groups = Vec::new();
    let in_process = (reply("in_process"), checkout("in_process"));
    groups.push(Group {
        placement: "in_process",
        title: "the handler (or payments) in the same process",
        bars: [
            in_process.0.map(|v| Bar {
                label: "request→reply",
                p50_us: v,
                colour: REPLY_COLOUR,
                annotation: "the baseline".to_owned(),
            }),
            in_process.1.map(|v| Bar {
                label: "checkout",
                p50_us: v,
                colour: CHECKOUT_COLOUR,
                annotation: "the baseline".to_owned(),
            }),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });
    for (transport, title, floor, floor_name) in [
        ("http", "reached over HTTP", "bare_http", "bare HTTP floor"),
        ("nats", "reached over NATS", "bare_nats", "bare NATS floor"),
    ] {
        let (floor_p50, reply_p50, checkout_p50) =
            (reply(floor), reply(transport), checkout(transport));
        let bars: Vec<Bar> = [
            floor_p50.map(|v| Bar {
                label: floor_name,
                p50_us: v,
                colour: FLOOR_COLOUR,
                annotation: String::new(),
            }),
            reply_p50.map(|v| Bar {
                label: "request→reply",
                p50_us: v,
                colour: REPLY_COLOUR,
                annotation: joined([
                    times(reply_p50, floor_p50, "the floor"),
                    times(reply_p50, in_process.0, "in process"),
                ]),
            }),
            checkout_p50.map(|v| Bar {
                label: "checkout",
                p50_us: v,
                colour: CHECKOUT_COLOUR,
                annotation: times(checkout_p50, in_process.1, "in process"),
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !bars.is_empty() {
            groups.push(Group {
                placement: transport,
                title,
                bars,
            });
        }
    }
    groups.retain(|g| !g.bars.is_empty());
    groups
}

/// Maps microseconds onto the plot's width, whole decades from below the smallest value to
/// above the largest.
struct LogScale {
    low: f64,
    high: f64,
}

impl LogScale {
    fn covering(values: &[f64]) -> Self {
        let smallest = values.iter().copied().fold(f64::MAX, f64::min);
        let largest = values.iter().copied().fold(0.0, f64::max);
        if values.is_empty() {
            return Self {
                low: 1.0,
                high: 1_000.0,
            };
        }
        let low = 10f64.powf(smallest.log10().floor());
        let mut high = 10f64.powf(largest.log10().ceil());
        if high <= low {
            high = low * 10.0;
        }
        Self { low, high }
    }

    fn x(&self, micros: f64) -> f64 {
        let span = self.high.log10() - self.low.log10();
        let at = (micros.max(self.low).log10() - self.low.log10()) / span;
        PLOT_LEFT + at.clamp(0.0, 1.0) * (PLOT_RIGHT - PLOT_LEFT)
    }

    fn decades(&self) -> Vec<f64> {
        let mut decades = Vec::new();
        let mut decade = self.low;
        while decade <= self.high * 1.000_001 {
            decades.push(decade);
            decade *= 10.0;
        }
        decades
    }
}

/// `850 ns`, `12.3 µs`, `4.56 ms`, `1.20 s`.
fn duration_label(micros: f64) -> String {
    if micros < 1.0 {
        format!("{} ns", figure(micros * 1_000.0))
    } else if micros < 1_000.0 {
        format!("{} µs", figure(micros))
    } else if micros < 1_000_000.0 {
        format!("{} ms", figure(micros / 1_000.0))
    } else {
        format!("{} s", figure(micros / 1_000_000.0))
    }
}

/// `100 ns`, `1 µs`, `10 ms`, `1 s`: a decade of the axis, without decimals.
fn decade_label(micros: f64) -> String {
    let (value, unit) = if micros < 1.0 {
        (micros * 1_000.0, "ns")
    } else if micros < 1_000.0 {
        (micros, "µs")
    } else if micros < 1_000_000.0 {
        (micros / 1_000.0, "ms")
    } else {
        (micros / 1_000_000.0, "s")
    };
    format!("{value:.0} {unit}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_spans_whole_decades_around_the_values() {
        let scale = LogScale::covering(&[3.0, 4_500.0]);
        assert_eq!(scale.decades(), [1.0, 10.0, 100.0, 1_000.0, 10_000.0]);
        assert_eq!(scale.x(1.0), PLOT_LEFT);
        assert_eq!(scale.x(10_000.0), PLOT_RIGHT);
        assert!(scale.x(100.0) > scale.x(10.0));
    }

    #[test]
    fn durations_are_labelled_in_their_unit() {
        assert_eq!(duration_label(0.5), "500 ns");
        assert_eq!(duration_label(12.34), "12.3 µs");
        assert_eq!(duration_label(4_560.0), "4.56 ms");
        assert_eq!(duration_label(1_200_000.0), "1.20 s");
        assert_eq!(decade_label(0.1), "100 ns");
        assert_eq!(decade_label(10_000.0), "10 ms");
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
