//! The saga under pressure: a race for the last items, and every event delivered twice.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::collections::HashMap;

use banyan_e2e::{Engine, TestApp, eventually, on_every_topology};
use reqwest::StatusCode;
use serde_json::json;

on_every_topology!(a_hundred_checkouts_of_ten_items_confirm_exactly_ten);

mod twice {
    //! The same scenario with every event delivered twice, in every topology.
    use banyan_e2e::on_every_topology;

    use super::every_saga_event_delivered_twice_takes_effect_once;

    fn chaos(figment: figment::Figment) -> figment::Figment {
        banyan_e2e::banyan_app::config::with(figment, "bus.chaos_duplicate_deliveries", true)
    }

    on_every_topology!(settings = chaos; every_saga_event_delivered_twice_takes_effect_once);
}

async fn a_hundred_checkouts_of_ten_items_confirm_exactly_ten(app: &TestApp) {
    let admin = app.admin_token().await;
    let product = app.product(&admin, "RACE-1", "tea", 100).await;
    app.stock(&admin, &product, 10).await;
    let mut customers = Vec::new();
    for i in 0..10 {
        customers.push(app.customer(&format!("racer{i}")).await.1);
    }
    let checkouts = (0..100).map(|i| {
        let (token, product) = (&customers[i % 10], &product);
        async move {
            let reply = app
                .order(
                    token,
                    json!({ "lines": [{ "product_id": product, "quantity": 1 }] }),
                    Some(30_000),
                )
                .await;
            assert!(reply.status.is_success(), "{}", reply.text);
            let id = reply.body["id"].as_str().unwrap().to_owned();
            app.terminal_order(token, &id).await["status"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    });
    let outcomes = futures_join_all(checkouts).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for outcome in outcomes {
        *counts.entry(outcome).or_default() += 1;
    }
    assert_eq!(counts.get("confirmed"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("cancelled"), Some(&90), "{counts:?}");
    eventually("every reservation is committed or released", || async {
        app.stock_of(&product).await == (0, 0, 0)
    })
    .await;
}

/// Runs futures concurrently on this task (no spawn: the futures borrow the app).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}

async fn every_saga_event_delivered_twice_takes_effect_once(app: &TestApp) {
    let admin = app.admin_token().await;
    let product = app.product(&admin, "TWICE-1", "tea", 250).await;
    app.stock(&admin, &product, 10).await;
    let (user, token) = app.customer("twin").await;
    app.post(
        &format!("/api/v1/carts/{user}/items"),
        Some(&token),
        json!({ "product_id": product, "quantity": 3 }),
    )
    .await;

    let confirmed = app
        .order(&token, json!({ "from_cart": true }), Some(30_000))
        .await;
    assert_eq!(confirmed.body["status"], "confirmed", "{}", confirmed.text);
    let declined = app.checkout(&token, &product, 2, "tok_declined").await;
    assert_eq!(declined["status"], "cancelled");
    let short = app.checkout(&token, &product, 50, "tok_visa").await;
    assert_eq!(short["cancel_reason"], "out_of_stock");

    // One stock decrement per reservation: 3 sold, the declined 2 given back once.
    eventually("stock settles", || async {
        app.stock_of(&product).await == (7, 0, 7)
    })
    .await;
    // One charge per order.
    let id = confirmed.body["id"].as_str().unwrap();
    let payment = app
        .get(&format!("/api/v1/payments/{id}"), Some(&token))
        .await;
    assert_eq!(payment.body["status"], "completed");
    assert_eq!(payment.body["amount"]["amount_minor"], 750);
    let orders = app
        .get(&format!("/api/v1/orders/user/{user}"), Some(&token))
        .await;
    assert_eq!(orders.body["total"], 3);
    // One cart clearing (not two: the cart was 3, minus 3, and nothing went negative).
    let cart = app
        .get(&format!("/api/v1/carts/{user}"), Some(&token))
        .await;
    assert_eq!(cart.body["lines"], json!([]));
    // One notification per event.
    eventually("notifications arrive", || async {
        app.notification_kinds(&token, &user).await.len() >= 4
    })
    .await;
    assert_eq!(
        app.notification_kinds(&token, &user).await,
        [
            "welcome",
            "order_confirmed",
            "order_cancelled",
            "order_cancelled"
        ]
    );
    // The duplicates were dropped by inboxes, not dead-lettered.
    let letters = app.get("/api/v1/admin/dead-letters", Some(&admin)).await;
    assert_eq!(letters.body["items"], json!([]), "{}", letters.text);
    assert_eq!(confirmed.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_answers_without_orders_when_orders_is_not_there() {
    let app = TestApp::spawn_with(Engine::Sqlite, |figment| {
        banyan_e2e::banyan_app::config::with(
            figment,
            "server.modules",
            [
                "users",
                "catalog",
                "inventory",
                "cart",
                "payments",
                "notifications",
            ],
        )
    })
    .await
    .unwrap();
    let (user, token) = app.customer("solo").await;
    let overview = app
        .get(&format!("/api/v1/users/{user}/overview"), Some(&token))
        .await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text);
    assert_eq!(overview.body["user"]["username"], "solo");
    assert_eq!(overview.body["orders_unavailable"], true);
    assert_eq!(overview.body["orders"], json!([]));
    app.stop().await;
}
