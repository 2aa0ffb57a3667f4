#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

//! `banyan-bench` as someone runs it: a real process of the binary, a small size, and checks
//! that every comparison ran and that its figures are sane. Never an absolute time: the figures
//! come from the benchmark, not from this test.
//!
//! NATS: `BANYAN_TEST_NATS_URL` (default: the local cluster, see `banyan_bus::testing`). If it cannot be reached the
//! test fails, unless `BANYAN_SKIP_NATS=1` is set (never honoured when `CI` is): then the bench
//! runs with `--skip-nats` and only the other cases are checked.

use std::time::Duration;

use serde_json::Value;

const REQUEST_REPLY_CASES: [&str; 6] = [
    "in_process",
    "bare_http",
    "http",
    "grpc",
    "bare_nats",
    "nats",
];
const CHECKOUT_PLACEMENTS: [&str; 4] = ["in_process", "http", "grpc", "nats"];
const EVENT_CASES: [&str; 4] = ["in_process", "http", "grpc", "nats"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_measures_every_placement_and_writes_its_figures_and_chart() {
    let nats = banyan_bus::testing::reachable_nats_url().await;
    let out = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--requests",
        "200",
        "--rounds",
        "3",
        "--orders",
        "20",
        "--clients",
        "2",
        "--events",
        "50",
        "--out",
    ]
    .map(str::to_owned)
    .into();
    args.push(out.path().display().to_string());
    match &nats {
        Some(url) => args.extend(["--nats-url".to_owned(), url.clone()]),
        None => args.push("--skip-nats".to_owned()),
    }
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_banyan-bench"))
        .args(&args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the bench ends within ten minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "banyan-bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let with_nats = |names: &[&'static str]| -> Vec<&'static str> {
        names
            .iter()
            .copied()
            .filter(|n| nats.is_some() || !n.contains("nats"))
            .collect()
    };

    let document: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("bench.json")).unwrap()).unwrap();
    let cases = document["request_reply"]["cases"].as_array().unwrap();
    let case = |name: &str| {
        cases
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no request→reply case {name} in {document}"))
    };
    for name in with_nats(&REQUEST_REPLY_CASES) {
        let figures = case(name);
        assert_eq!(figures["rounds"].as_array().unwrap().len(), 3, "{figures}");
        let median = &figures["median"];
        assert!(median["p50_us"].as_f64().unwrap() > 0.0, "{figures}");
        assert!(
            median["p99_us"].as_f64().unwrap() >= median["p50_us"].as_f64().unwrap(),
            "{figures}"
        );
        assert!(
            median["throughput_rps"].as_f64().unwrap() > 0.0,
            "{figures}"
        );
    }
    let p50 = |name: &str| case(name)["median"]["p50_us"].as_f64().unwrap();
    assert!(p50("in_process") < p50("http"), "{document}");
    if nats.is_some() {
        assert!(p50("in_process") < p50("nats"), "{document}");
    }
    let ratios = &document["request_reply"]["ratios"];
    assert!(ratios["http_vs_bare_http"]["p50"].as_f64().unwrap() > 0.0);
    assert!(
        ratios["in_process_faster_than_http"]["p50"]
            .as_f64()
            .unwrap()
            > 1.0
    );

    // Events, durable end to end: every placement delivered every event, and one that
    // crosses a transport costs more than one in process.
    let events = document["events"]["cases"].as_array().unwrap();
    let event = |name: &str| {
        events
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no events case {name} in {document}"))
    };
    for name in with_nats(&EVENT_CASES) {
        let median = &event(name)["median"];
        assert!(median["p50_us"].as_f64().unwrap() > 0.0, "{median}");
        assert!(median["throughput_rps"].as_f64().unwrap() > 0.0, "{median}");
    }
    assert_eq!(document["setup"]["events"], 50);

    let placements = document["checkout"]["placements"].as_array().unwrap();
    for name in with_nats(&CHECKOUT_PLACEMENTS) {
        let figures = placements
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no checkout placement {name} in {document}"));
        assert_eq!(figures["orders_per_round"], 20, "{figures}");
        assert_eq!(figures["rounds"].as_array().unwrap().len(), 3, "{figures}");
        assert!(figures["p50_ms"].as_f64().unwrap() > 0.0, "{figures}");
        assert!(
            figures["confirmed_per_s"].as_f64().unwrap() > 0.0,
            "{figures}"
        );
    }
    assert_eq!(document["setup"]["requests"], 200);
    assert_eq!(document["setup"]["rounds"], 3);

    // The tables, with their ratios, went to stdout.
    for line in [
        "Request→reply",
        "http / bare_http",
        "grpc / bare_http",
        "Events: publish→handled",
        "Checkout",
        "http / in_process",
        "grpc / in_process",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    if nats.is_some() {
        assert!(stdout.contains("nats / bare_nats"), "{stdout}");
    }

    let svg = std::fs::read_to_string(out.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg "), "{svg}");
    assert!(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    // Every case and placement, each with its p50 and its p99.
    let label = |name: &str| match name {
        "in_process" => "payments in process",
        "http" => "payments over HTTP",
        "grpc" => "payments over gRPC",
        _ => "payments over NATS",
    };
    for name in with_nats(&CHECKOUT_PLACEMENTS) {
        for quantile in ["p50", "p99"] {
            let row = format!("{} {quantile}", label(name));
            assert!(svg.contains(&row), "the chart has no {row:?} row");
        }
    }
    for row in [
        "in process p50",
        "bus over HTTP p99",
        "bus over gRPC p50",
        "bare HTTP p50",
    ] {
        assert!(svg.contains(row), "the chart has no {row:?} row");
    }
}
