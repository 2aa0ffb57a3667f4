//! The README's table of one saved run: made from its `bench.json`, never typed, so the
//! figures the README shows are the ones the run recorded (`banyan-bench readme-table FILE`
//! prints it; a test holds the README to the run kept in `docs/bench/`).

use anyhow::Context as _;
use serde_json::Value;

/// The placements, in the table's column order, as `bench.json` names them.
const PLACEMENTS: [&str; 4] = ["in_process", "http", "grpc", "nats"];

/// The markdown table of the run in `run` (a parsed `bench.json`).
pub fn readme_table(run: &Value) -> anyhow::Result<String> {
    let setup = &run["setup"];
    let find = |part: &str, list: &str, name: &str| -> anyhow::Result<&Value> {
        run[part][list]
            .as_array()
            .and_then(|cases| cases.iter().find(|c| c["name"] == name))
            .with_context(|| format!("bench.json has no {part} case {name}"))
    };
    let number = |value: &Value, what: &str| -> anyhow::Result<f64> {
        value
            .as_f64()
            .with_context(|| format!("bench.json has no {what}"))
    };
    let latency = |case: &Value, p50: &str, p99: &str, unit: &str| -> anyhow::Result<String> {
        Ok(format!(
            "{} {unit} ({})",
            figure(number(&case[p50], p50)?),
            figure(number(&case[p99], p99)?)
        ))
    };
    // One cell per placement: `cell` of the named case of `part.list`.
    let per_placement =
        |part: &str, list: &str, cell: &dyn Fn(&Value) -> anyhow::Result<String>| {
            PLACEMENTS
                .iter()
                .map(|p| cell(find(part, list, p)?))
                .collect::<anyhow::Result<Vec<String>>>()
        };
    let micros = |case: &Value| latency(&case["median"], "p50_us", "p99_us", "µs");
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (
            "request→reply, Banyan bus".into(),
            per_placement("request_reply", "cases", &micros)?,
        ),
        (
            "request→reply, bare transport (floor)".into(),
            vec![
                String::new(),
                micros(find("request_reply", "cases", "bare_http")?)?,
                "(HTTP's)".into(),
                micros(find("request_reply", "cases", "bare_nats")?)?,
            ],
        ),
        (
            format!("request→reply, {} callers", setup["concurrency"]),
            per_placement("request_reply", "cases", &|case| {
                let rps = number(&case["median"]["concurrent_rps"], "concurrent_rps")?;
                Ok(format!("{}/s", thousands(rps)))
            })?,
        ),
    ];
    if run["events"]["cases"].is_array() {
        rows.push((
            "event publish→handled, durable at both ends".into(),
            per_placement("events", "cases", &micros)?,
        ));
    }
    if run["checkout"]["placements"].is_array() {
        rows.push((
            format!(
                "checkout, {} clients, order to confirmation",
                setup["clients"]
            ),
            per_placement("checkout", "placements", &|case| {
                latency(case, "p50_ms", "p99_ms", "ms")
            })?,
        ));
        rows.push((
            "checkout, confirmed orders/s".into(),
            per_placement("checkout", "placements", &|case| {
                Ok(thousands(number(
                    &case["confirmed_per_s"],
                    "confirmed_per_s",
                )?))
            })?,
        ));
    }
    let mut table = String::from(
        "| p50 (p99) | in process | over HTTP | over gRPC | over NATS |\n|---|---|---|---|---|\n",
    );
    for (label, cells) in rows {
        table.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    Ok(table)
}

/// As the bench's own tables write a figure (`report::figure`), thousands separated: 0.89,
/// 85.8, 1,017.
fn figure(value: f64) -> String {
    if value >= 1_000.0 {
        thousands(value)
    } else {
        super::report::figure(value)
    }
}

/// A whole number with its thousands separated by commas: 927,418.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.round());
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_the_readme_writes_them() {
        assert_eq!(figure(0.885), "0.89");
        assert_eq!(figure(2.2510000000000003), "2.25");
        assert_eq!(figure(85.81), "85.8");
        assert_eq!(figure(101.4), "101");
        assert_eq!(figure(1_017.2), "1,017");
        assert_eq!(thousands(927_418.04), "927,418");
        assert_eq!(thousands(444.0), "444");
    }
}
