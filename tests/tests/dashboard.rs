//! Main's live dashboard, read by a real browser: headless Chromium loads `/dashboard` from
//! main's metrics listener, and the page it renders shows all seven modules, each moved one in
//! its own process, and numbers that grow with traffic.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_e2e::{
    Engine, TestApp,
    browser::{chromium, rendered, screenshot},
    cluster::Topology,
};
use reqwest::StatusCode;

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

    // A picture of it (`BANYAN_TEST_SCREENSHOTS=docs` keeps it as docs/dashboard.png).
    screenshot(&chromium, &url, (1400, 900), "dashboard.png");
    app.stop().await;
}
