//! `/metrics` in every topology: after a checkout, every process's page passes Prometheus's
//! own linter (`promtool check metrics`), and its bus series say where each request and event
//! ran — `in_process` within a process, the transport across processes — so the cost of a
//! split is visible per edge.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    process::Stdio,
};

use banyan_app::telemetry::meters::samples;
use banyan_e2e::{TestApp, on_every_topology};
use reqwest::StatusCode;

on_every_topology!(
    every_process_serves_metrics_promtool_accepts_labelled_by_placement,
    the_metrics_listener_is_not_the_public_one,
    main_lists_every_process_for_prometheus,
);

/// Runs `promtool check metrics` on `page`; `None` when promtool is not installed outside CI
/// (in CI, `.ci/run` installs it and its absence fails the test).
fn promtool(page: &str) -> Option<(bool, String)> {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is needed in CI: {error}"
            );
            eprintln!("promtool not found ({error}); skipping its check");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), said))
}

async fn every_process_serves_metrics_promtool_accepts_labelled_by_placement(app: &TestApp) {
    let admin = app.admin_token().await;
    let product = app.product(&admin, "METRICS-1", "tea", 450).await;
    assert_eq!(app.stock(&admin, &product, 5).await.status, StatusCode::OK);
    let (_, token) = app.customer("mia").await;
    let order = app.checkout(&token, &product, 1, "tok_visa").await;
    assert_eq!(order["status"], "confirmed", "{order}");
    let mut crossed = 0;
    let mut crossed_to = BTreeSet::new();
    let mut handled_by_others = BTreeSet::new();
    for (process, url) in app.metrics_urls() {
        let reply = app.client.get(&url).send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::OK, "{process}: {url}");
        let content_type = reply.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        let page = reply.text().await.unwrap();
        if let Some((passed, said)) = promtool(&page) {
            assert!(passed, "promtool on {process}'s /metrics: {said}\n{page}");
        }
        let samples = samples(&page);
        let has = |name: &str| samples.iter().any(|s| s.name == name);
        for name in [
            "process_resident_memory_bytes",
            "banyan_outbox_pending_events",
            "banyan_db_pool_connections",
            "banyan_bus_event_queue_depth",
        ] {
            assert!(has(name), "{process} has no {name}");
        }
        // A module that took events from JetStream shows its durable consumer's backlog.
        for sample in samples.iter().filter(|s| {
            s.name == "banyan_bus_events_handled_total" && s.labels["placement"] == "nats"
        }) {
            let module = &sample.labels["module"];
            for gauge in [
                "banyan_nats_consumer_pending_events",
                "banyan_nats_consumer_ack_pending_events",
                "banyan_nats_consumer_redelivered_events",
            ] {
                assert!(
                    samples
                        .iter()
                        .any(|s| s.name == gauge && &s.labels["module"] == module),
                    "{process} has no {gauge} for {module}"
                );
            }
        }
        // Every bus request is labelled with where its callee ran, as the topology says.
        for sample in samples
            .iter()
            .filter(|s| s.name == "banyan_bus_requests_total")
        {
            let callee = &sample.labels["callee"];
            let placement = &sample.labels["placement"];
            let expected = app.placement(&process, callee);
            match expected {
                Some(expected) => assert_eq!(placement, expected, "{process}: {sample:?}"),
                // Elsewhere, by whichever transport reaches it.
                None => assert_ne!(placement, "in_process", "{process}: {sample:?}"),
            }
            if placement != "in_process" && sample.value > 0.0 {
                crossed += 1;
            }
        }
        // Every event handled says how it came: from a module in the same process in process
        // (or through the broker, which carries every event when NATS does), from one
        // elsewhere by a transport.
        for sample in samples
            .iter()
            .filter(|s| s.name == "banyan_bus_events_handled_total")
        {
            let placement = sample.labels["placement"].as_str();
            let same = app.placement(&process, &sample.labels["publisher"]) == Some("in_process");
            if same {
                assert!(
                    ["in_process", "nats"].contains(&placement),
                    "{process}: {sample:?}"
                );
            } else {
                assert_ne!(placement, "in_process", "{process}: {sample:?}");
            }
            if placement != "in_process" && sample.value > 0.0 {
                crossed += 1;
            }
        }
        if process == "main" {
            // Main answered the shop's routes, by their templates, never by raw paths.
            let routes: Vec<&str> = samples
                .iter()
                .filter(|s| s.name == "http_server_requests_total")
                .map(|s| s.labels["route"].as_str())
                .collect();
            assert!(routes.contains(&"/api/v1/users/login"), "{routes:?}");
            assert!(
                routes.iter().all(|r| !r.contains(&product)),
                "a raw path became a label: {routes:?}"
            );
            assert!(
                has("banyan_bus_requests_total"),
                "{process}: no bus requests"
            );
        }
        if process == "main" {
            crossed_to.extend(
                samples
                    .iter()
                    .filter(|s| s.name == "banyan_bus_requests_total")
                    .filter(|s| s.labels["placement"] != "in_process")
                    .map(|s| s.labels["callee"].clone()),
            );
        } else {
            handled_by_others.extend(
                samples
                    .iter()
                    .filter(|s| s.name == "banyan_bus_requests_handled_total")
                    .map(|s| s.labels["module"].clone()),
            );
        }
    }
    // What main sent elsewhere, a process hosting the callee counted as answered.
    assert!(
        crossed_to.is_subset(&handled_by_others),
        "sent to {crossed_to:?}, answered by {handled_by_others:?}"
    );
    // A split shows calls that crossed a process boundary; one process shows none.
    assert_eq!(crossed > 0, app.is_split(), "crossing series: {crossed}");
}

async fn the_metrics_listener_is_not_the_public_one(app: &TestApp) {
    let reply = app.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    let (_, url) = &app.metrics_urls()[0];
    let other = url.replace("/metrics", "/api/v1/products");
    let reply = app.client.get(&other).send().await.unwrap();
    assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}

/// Prometheus finds every process through main: `/targets` (its HTTP service discovery)
/// names each process's metrics address, and the shipped scrape configuration points at it
/// and passes `promtool check config`.
async fn main_lists_every_process_for_prometheus(app: &TestApp) {
    let urls = app.metrics_urls();
    let (_, main) = &urls[0];
    let listed: serde_json::Value = app
        .client
        .get(main.replace("/metrics", "/targets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut found = BTreeMap::new();
    for group in listed.as_array().unwrap() {
        let target = group["targets"][0].as_str().unwrap().to_owned();
        assert_eq!(group["labels"]["__scheme__"], "http", "{listed}");
        found.insert(
            target,
            group["labels"]["process"].as_str().unwrap().to_owned(),
        );
    }
    // A split's TestApp is ready only once main lists every moved module's instances as
    // healthy, so each process has registered its metrics address by now.
    let expected: BTreeMap<String, String> = urls
        .iter()
        .map(|(process, url)| {
            let address = url
                .trim_start_matches("http://")
                .trim_end_matches("/metrics");
            (address.to_owned(), process.clone())
        })
        .collect();
    assert_eq!(found, expected, "{listed}");

    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/prometheus.yml"
    );
    assert!(
        std::fs::read_to_string(config)
            .unwrap()
            .contains("http://127.0.0.1:9464/targets"),
        "the shipped scrape configuration does not use main's /targets"
    );
    match std::process::Command::new("promtool")
        .args(["check", "config", config])
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => assert!(
            std::env::var_os("CI").is_none(),
            "promtool is needed in CI: {error}"
        ),
    }
}
