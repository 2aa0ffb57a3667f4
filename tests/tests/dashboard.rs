//! Main's live dashboard, read by a real browser: headless Chromium loads `/dashboard` from
//! main's metrics listener, and the page it renders shows all seven modules, each moved one in
//! its own process, and numbers that grow with traffic.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::{path::Path, process::Command};

use banyan_e2e::{Engine, TestApp, cluster::Topology};
use reqwest::StatusCode;

/// Debian's Chromium, or `None` outside CI when it is not installed (`.ci/run` installs it).
fn chromium() -> Option<String> {
    let path = std::env::var("BANYAN_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Chromium is needed in CI at {path}"
    );
    eprintln!("Chromium not found at {path}; skipping the browser test");
    None
}

/// Chromium, headless, with the flags this machine needs (no background networking: its
/// closed network refuses it), on a fresh profile.
fn browser(chromium: &str, profile: &Path) -> Command {
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        // Long enough for the page's first poll and one more (every 2 s).
        "--virtual-time-budget=5000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Runs the browser on a fresh profile with `args`; its standard output.
fn run(chromium: &str, args: &[String]) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let output = browser(chromium, profile.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The page as the browser rendered it, after its scripts ran.
fn rendered(chromium: &str, url: &str) -> String {
    String::from_utf8(run(chromium, &["--dump-dom".to_owned(), url.to_owned()])).unwrap()
}

/// The text of the element with `id` in `dom`.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}: {dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    &rest[open..open + close]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_module_where_it_runs_and_counts_the_traffic() {
    let Some(chromium) = chromium() else {
        return;
    };
    let Some(app) = TestApp::spawn_split(
        Engine::Sqlite,
        Topology::payments_and_notifications_over_https(),
        std::convert::identity,
    )
    .await
    else {
        return;
    };
    let url = app.metrics_urls()[0].1.replace("/metrics", "/dashboard");

    // What the page is drawn from.
    let data: serde_json::Value = app
        .client
        .get(format!("{url}/data"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let modules = data["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 7, "{data}");
    for moved in ["payments", "notifications"] {
        let module = modules.iter().find(|m| m["name"] == moved).unwrap();
        assert_eq!(module["process"], moved, "{data}");
        assert_eq!(module["transport"], "http", "{data}");
        assert_eq!(module["instances"][0]["health"], "healthy", "{data}");
    }

    let before = rendered(&chromium, &url);
    let names: Vec<&str> = banyan_app::modules::all_modules()
        .iter()
        .map(|m| m.name())
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    for name in names {
        assert!(
            before.contains(&format!("data-module=\"{name}\"")),
            "the page does not show {name}: {before}"
        );
    }
    assert!(
        before
            .contains("data-module=\"payments\" data-process=\"payments\" data-transport=\"http\""),
        "payments is not shown in its own process: {before}"
    );
    assert!(
        before.contains("data-module=\"orders\" data-process=\"main\""),
        "{before}"
    );
    let total_before: f64 = text_of(&before, "total").parse().unwrap();

    let admin = app.admin_token().await;
    let product = app.product(&admin, "DASH-1", "tea", 450).await;
    assert_eq!(app.stock(&admin, &product, 10).await.status, StatusCode::OK);
    let (_, token) = app.customer("dana").await;
    for _ in 0..3 {
        let order = app.checkout(&token, &product, 1, "tok_visa").await;
        assert_eq!(order["status"], "confirmed", "{order}");
    }

    let after = rendered(&chromium, &url);
    let total_after: f64 = text_of(&after, "total").parse().unwrap();
    assert!(
        total_after > total_before,
        "the page's total did not grow with traffic: {total_before} then {total_after}"
    );
    // The checkout crossed to payments over HTTP, and the page draws that edge as remote.
    assert!(
        after.contains("data-to=\"payments\" data-kind=\"event\" data-placement=\"http\""),
        "no remote edge to payments on the page: {after}"
    );

    // A picture of it (`BANYAN_DASHBOARD_SCREENSHOT=docs/dashboard.png` keeps it).
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("dashboard.png");
    run(
        &chromium,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,900".to_owned(),
            url.clone(),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("BANYAN_DASHBOARD_SCREENSHOT") {
        std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(keep),
            png,
        )
        .unwrap();
    }
    app.stop().await;
}
