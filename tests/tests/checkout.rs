//! The order saga end to end, every branch, in every topology (see `on_every_topology!`).

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_e2e::{TestApp, eventually, on_every_topology};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_every_topology!(
    a_paid_order_is_confirmed_and_its_stock_is_taken,
    an_order_with_too_little_stock_is_cancelled_and_nothing_stays_reserved,
    a_declined_payment_cancels_the_order_and_puts_the_stock_back,
    an_order_over_the_payment_limit_is_cancelled_and_its_stock_released,
    only_an_order_made_from_the_cart_clears_it,
    notifications_follow_registration_confirmation_and_cancellation,
    orders_keep_the_name_and_price_they_were_placed_with,
    a_saga_that_outlasts_the_wait_answers_202_with_a_location,
    another_customers_order_cart_account_and_notifications_are_not_found,
    bad_order_input_gets_a_4xx_and_places_nothing,
    the_overview_shows_the_users_orders,
);

/// An admin token and one product with `stock` on hand at 4.50 EUR.
async fn shop(app: &TestApp, sku: &str, stock: i64) -> (String, String) {
    let admin = app.admin_token().await;
    let product = app.product(&admin, sku, "tea", 450).await;
    assert_eq!(
        app.stock(&admin, &product, stock).await.status,
        StatusCode::OK
    );
    (admin, product)
}

async fn a_paid_order_is_confirmed_and_its_stock_is_taken(app: &TestApp) {
    let (_, product) = shop(app, "PAID-1", 5).await;
    let (user, token) = app.customer("ann").await;
    let order = app.checkout(&token, &product, 2, "tok_visa").await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(
        order["total"],
        json!({ "amount_minor": 900, "currency": "EUR" })
    );
    assert_eq!(order["user_id"], user.as_str());
    let id = order["id"].as_str().unwrap();

    eventually("the reservation is committed", || async {
        app.stock_of(&product).await == (3, 0, 3)
    })
    .await;
    let payment = app
        .get(&format!("/api/v1/payments/{id}"), Some(&token))
        .await;
    assert_eq!(payment.status, StatusCode::OK, "{}", payment.text);
    assert_eq!(payment.body["status"], "completed");
    assert_eq!(payment.body["amount"]["amount_minor"], 900);
}

async fn an_order_with_too_little_stock_is_cancelled_and_nothing_stays_reserved(app: &TestApp) {
    let (admin, plenty) = shop(app, "SHORT-1", 5).await;
    let scarce = app.product(&admin, "SHORT-2", "tea", 100).await;
    app.stock(&admin, &scarce, 1).await;
    let (_, token) = app.customer("ben").await;
    let reply = app
        .order(
            &token,
            json!({ "lines": [
                { "product_id": plenty, "quantity": 2 },
                { "product_id": scarce, "quantity": 2 },
            ] }),
            Some(30_000),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["status"], "cancelled");
    assert_eq!(reply.body["cancel_reason"], "out_of_stock");
    assert_eq!(app.stock_of(&plenty).await, (5, 0, 5));
    assert_eq!(app.stock_of(&scarce).await, (1, 0, 1));
    let id = reply.body["id"].as_str().unwrap();
    let payment = app
        .get(&format!("/api/v1/payments/{id}"), Some(&token))
        .await;
    assert_eq!(payment.status, StatusCode::NOT_FOUND, "nothing was charged");
}

async fn a_declined_payment_cancels_the_order_and_puts_the_stock_back(app: &TestApp) {
    let (_, product) = shop(app, "DECL-1", 5).await;
    let (_, token) = app.customer("cleo").await;
    let order = app.checkout(&token, &product, 3, "tok_declined").await;
    assert_eq!(order["status"], "cancelled", "{order}");
    assert_eq!(order["cancel_reason"], "payment_declined");
    eventually("the reservation is released", || async {
        app.stock_of(&product).await == (5, 0, 5)
    })
    .await;
    let id = order["id"].as_str().unwrap();
    let payment = app
        .get(&format!("/api/v1/payments/{id}"), Some(&token))
        .await;
    assert_eq!(payment.body["status"], "failed");
    assert_eq!(payment.body["failure_reason"], "payment_declined");
}

async fn an_order_over_the_payment_limit_is_cancelled_and_its_stock_released(app: &TestApp) {
    let admin = app.admin_token().await;
    let pricey = app.product(&admin, "LIMIT-1", "gold", 90_000_000).await;
    app.stock(&admin, &pricey, 3).await;
    let (_, token) = app.customer("dora").await;
    let order = app.checkout(&token, &pricey, 2, "tok_visa").await;
    assert_eq!(order["status"], "cancelled", "{order}");
    assert_eq!(order["cancel_reason"], "payment_over_limit");
    eventually("the reservation is released", || async {
        app.stock_of(&pricey).await == (3, 0, 3)
    })
    .await;
}

async fn cart_lines(app: &TestApp, token: &str, user: &str) -> Vec<(String, i64)> {
    let cart = app.get(&format!("/api/v1/carts/{user}"), Some(token)).await;
    assert_eq!(cart.status, StatusCode::OK, "{}", cart.text);
    cart.body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["product_id"].as_str().unwrap().to_owned(),
                l["quantity"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn only_an_order_made_from_the_cart_clears_it(app: &TestApp) {
    let (admin, tea) = shop(app, "CART-1", 10).await;
    let mug = app.product(&admin, "CART-2", "mugs", 1200).await;
    app.stock(&admin, &mug, 10).await;
    let (user, token) = app.customer("eve").await;
    let items = format!("/api/v1/carts/{user}/items");
    for (product, quantity) in [(&tea, 2), (&mug, 1)] {
        let added = app
            .post(
                &items,
                Some(&token),
                json!({ "product_id": product, "quantity": quantity }),
            )
            .await;
        assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    }

    let direct = app.checkout(&token, &tea, 1, "tok_visa").await;
    assert_eq!(direct["status"], "confirmed");
    assert_eq!(direct["from_cart"], false);
    let mut lines = cart_lines(app, &token, &user).await;
    lines.sort();
    let mut expected = vec![(tea.clone(), 2), (mug.clone(), 1)];
    expected.sort();
    assert_eq!(
        lines, expected,
        "an order not made from the cart leaves it alone"
    );

    let from_cart = app
        .order(&token, json!({ "from_cart": true }), Some(30_000))
        .await;
    assert_eq!(from_cart.status, StatusCode::CREATED, "{}", from_cart.text);
    assert_eq!(from_cart.body["status"], "confirmed");
    assert_eq!(from_cart.body["total"]["amount_minor"], 2 * 450 + 1200);
    eventually("the cart is cleared", || async {
        cart_lines(app, &token, &user).await.is_empty()
    })
    .await;
}

async fn notifications_follow_registration_confirmation_and_cancellation(app: &TestApp) {
    let (_, product) = shop(app, "NOTE-1", 5).await;
    let (user, token) = app.customer("fay").await;
    app.checkout(&token, &product, 1, "tok_visa").await;
    app.checkout(&token, &product, 1, "tok_declined").await;
    eventually("three notifications were sent", || async {
        app.notification_kinds(&token, &user).await.len() == 3
    })
    .await;
    assert_eq!(
        app.notification_kinds(&token, &user).await,
        ["welcome", "order_confirmed", "order_cancelled"]
    );
}

async fn orders_keep_the_name_and_price_they_were_placed_with(app: &TestApp) {
    let (admin, product) = shop(app, "SNAP-1", 5).await;
    let (_, token) = app.customer("gus").await;
    let order = app.checkout(&token, &product, 1, "tok_visa").await;
    let changed = app
        .put(
            &format!("/api/v1/products/{product}"),
            Some(&admin),
            json!({ "name": "Renamed", "price": { "amount_minor": 999, "currency": "EUR" } }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    let id = order["id"].as_str().unwrap();
    let read = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
    assert_eq!(read.body["lines"][0]["name"], "Product SNAP-1");
    assert_eq!(read.body["lines"][0]["unit_price"]["amount_minor"], 450);
    assert_eq!(read.body["total"]["amount_minor"], 450);
}

async fn a_saga_that_outlasts_the_wait_answers_202_with_a_location(app: &TestApp) {
    let (_, product) = shop(app, "WAIT-1", 5).await;
    let (_, token) = app.customer("hal").await;
    for wait in [None, Some(0)] {
        let reply = app
            .order(
                &token,
                json!({ "lines": [{ "product_id": product, "quantity": 1 }] }),
                wait,
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        let id = reply.body["id"].as_str().unwrap();
        let location = reply.headers["location"].to_str().unwrap();
        assert_eq!(location, format!("/api/v1/orders/{id}"));
        let order = app.terminal_order(&token, id).await;
        assert_eq!(order["status"], "confirmed");
    }
}

async fn another_customers_order_cart_account_and_notifications_are_not_found(app: &TestApp) {
    let (_, product) = shop(app, "PRIV-1", 5).await;
    let (ivy, ivy_token) = app.customer("ivy").await;
    let (_, jon_token) = app.customer("jon").await;
    let order = app.checkout(&ivy_token, &product, 1, "tok_visa").await;
    let id = order["id"].as_str().unwrap();
    for path in [
        format!("/api/v1/orders/{id}"),
        format!("/api/v1/orders/user/{ivy}"),
        format!("/api/v1/carts/{ivy}"),
        format!("/api/v1/users/{ivy}"),
        format!("/api/v1/users/{ivy}/overview"),
        format!("/api/v1/payments/{id}"),
        format!("/api/v1/notifications?user_id={ivy}"),
    ] {
        let reply = app.get(&path, Some(&jon_token)).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.text
        );
    }
    let add = app
        .post(
            &format!("/api/v1/carts/{ivy}/items"),
            Some(&jon_token),
            json!({ "product_id": product, "quantity": 1 }),
        )
        .await;
    assert_eq!(add.status, StatusCode::NOT_FOUND);
    let status = app
        .put(
            &format!("/api/v1/orders/{id}/status"),
            Some(&jon_token),
            json!({ "status": "shipped" }),
        )
        .await;
    assert!(
        matches!(status.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{}",
        status.text
    );
    // Not even an admin fills a cart nobody owns: users is asked, wherever it runs.
    let admin = app.admin_token().await;
    let nobody = uuid::Uuid::now_v7();
    let add = app
        .post(
            &format!("/api/v1/carts/{nobody}/items"),
            Some(&admin),
            json!({ "product_id": product, "quantity": 1 }),
        )
        .await;
    assert_eq!(add.status, StatusCode::NOT_FOUND, "{}", add.text);
    assert!(add.text.contains("does not exist"), "{}", add.text);
    let cart = app
        .get(&format!("/api/v1/carts/{nobody}"), Some(&admin))
        .await;
    assert_eq!(
        cart.body["lines"].as_array().map(Vec::len),
        Some(0),
        "{}",
        cart.text
    );
}

async fn bad_order_input_gets_a_4xx_and_places_nothing(app: &TestApp) {
    let (_, product) = shop(app, "BAD-1", 5).await;
    let (user, token) = app.customer("kim").await;
    let line =
        |quantity: Value| json!({ "lines": [{ "product_id": product, "quantity": quantity }] });
    let unknown = uuid::Uuid::now_v7().to_string();
    let cases = [
        line(json!(0)),
        line(json!(-1)),
        line(json!(1_000_000)),
        line(json!(1.5)),
        line(json!("2")),
        json!({ "lines": [] }),
        json!({ "lines": [{ "product_id": product, "quantity": 1, "unit_price": 1 }] }),
        json!({ "lines": [{ "product_id": product, "quantity": 1 }], "total": { "amount_minor": 1, "currency": "EUR" } }),
        json!({ "lines": [{ "product_id": product, "quantity": 1 }], "status": "confirmed" }),
        json!({ "lines": [{ "product_id": product, "quantity": 1 }], "user_id": uuid::Uuid::now_v7() }),
        json!({ "lines": [{ "product_id": product, "quantity": 1 }], "from_cart": true }),
        json!({}),
    ];
    for body in cases {
        let reply = app.order(&token, body.clone(), None).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text
        );
        assert!(reply.body["error"]["code"].is_string());
    }
    let ghost = app
        .order(
            &token,
            json!({ "lines": [{ "product_id": unknown, "quantity": 1 }] }),
            None,
        )
        .await;
    // A product the catalog does not know is not found; its id is named.
    assert_eq!(ghost.status, StatusCode::NOT_FOUND, "{}", ghost.text);
    assert_eq!(ghost.body["error"]["code"], "unknown_product");
    assert!(
        ghost.text.contains(&unknown),
        "the unknown product is named: {}",
        ghost.text
    );
    let anonymous = app
        .post(
            "/api/v1/orders",
            None,
            json!({ "lines": [{ "product_id": product, "quantity": 1 }] }),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let cart_zero = app
        .post(
            &format!("/api/v1/carts/{user}/items"),
            Some(&token),
            json!({ "product_id": product, "quantity": 0 }),
        )
        .await;
    assert_eq!(cart_zero.status, StatusCode::UNPROCESSABLE_ENTITY);
    let cart_ghost = app
        .post(
            &format!("/api/v1/carts/{user}/items"),
            Some(&token),
            json!({ "product_id": unknown, "quantity": 1 }),
        )
        .await;
    assert_eq!(cart_ghost.status, StatusCode::NOT_FOUND);
    assert_eq!(cart_ghost.body["error"]["code"], "unknown_product");
    assert!(cart_ghost.text.contains(&unknown));
    // Nothing in the cart yet: ordering it conflicts with the cart as it is.
    let empty = app.order(&token, json!({ "from_cart": true }), None).await;
    assert_eq!(empty.status, StatusCode::CONFLICT, "{}", empty.text);
    assert_eq!(empty.body["error"]["code"], "empty_cart");
    // A line may not pass 1000: a conflict with the line as it is, and nothing changes.
    for (quantity, status) in [(1000, StatusCode::OK), (1, StatusCode::CONFLICT)] {
        let add = app
            .post(
                &format!("/api/v1/carts/{user}/items"),
                Some(&token),
                json!({ "product_id": product, "quantity": quantity }),
            )
            .await;
        assert_eq!(add.status, status, "{}", add.text);
    }
    let cart = app
        .get(&format!("/api/v1/carts/{user}"), Some(&token))
        .await;
    assert_eq!(cart.body["lines"][0]["quantity"], 1000, "{}", cart.text);

    let orders = app
        .get(&format!("/api/v1/orders/user/{user}"), Some(&token))
        .await;
    assert_eq!(
        orders.body["total"], 0,
        "nothing was placed: {}",
        orders.text
    );
    assert_eq!(app.stock_of(&product).await, (5, 0, 5));
}

async fn the_overview_shows_the_users_orders(app: &TestApp) {
    let (_, product) = shop(app, "OVER-1", 5).await;
    let (user, token) = app.customer("lou").await;
    app.checkout(&token, &product, 1, "tok_visa").await;
    app.checkout(&token, &product, 1, "tok_declined").await;
    let overview = app
        .get(&format!("/api/v1/users/{user}/overview"), Some(&token))
        .await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text);
    assert_eq!(overview.body["user"]["username"], "lou");
    assert_eq!(overview.body["orders_unavailable"], false);
    assert_eq!(overview.body["orders"].as_array().unwrap().len(), 2);
    // One shape for an order wherever it appears: the overview's is the order's own.
    for order in overview.body["orders"].as_array().unwrap() {
        let id = order["id"].as_str().unwrap();
        let own = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
        assert_eq!(&own.body, order, "{}", own.text);
        assert!(order["lines"][0]["line_total"].is_object(), "{order}");
    }
}
