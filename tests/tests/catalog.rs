//! The catalog module over HTTP, in every topology.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_e2e::{TestApp, eventually, on_every_topology};
use reqwest::StatusCode;
use serde_json::json;

on_every_topology!(
    an_admin_creates_and_changes_a_product_and_anyone_reads_it,
    products_are_filtered_by_category_and_paged,
    a_listing_shows_a_change_at_once,
    only_an_admin_writes_products,
    a_duplicate_sku_gets_409,
    bad_product_input_gets_a_4xx_and_changes_nothing,
    the_catalog_learns_stock_from_inventory_events,
);

async fn an_admin_creates_and_changes_a_product_and_anyone_reads_it(app: &TestApp) {
    let admin = app.admin_token().await;
    let created = app
        .post(
            "/api/v1/products",
            Some(&admin),
            json!({
                "sku": "TEA-1", "name": "Green tea", "description": "Sencha, 100 g",
                "category": "tea", "price": { "amount_minor": 450, "currency": "EUR" },
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/api/v1/products/{id}")
    );
    assert_eq!(
        created.body["price"],
        json!({ "amount_minor": 450, "currency": "EUR" })
    );
    assert_eq!(created.body["in_stock"], false);

    let changed = app
        .put(
            &format!("/api/v1/products/{id}"),
            Some(&admin),
            json!({ "price": { "amount_minor": 500, "currency": "EUR" }, "name": "Green tea (new)" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);

    let read = app.get(&format!("/api/v1/products/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["price"]["amount_minor"], 500);
    assert_eq!(read.body["name"], "Green tea (new)");
    assert_eq!(read.body["description"], "Sencha, 100 g");
}

async fn products_are_filtered_by_category_and_paged(app: &TestApp) {
    let admin = app.admin_token().await;
    for i in 0..5 {
        app.product(&admin, &format!("TEA-{i}"), "tea", 100 + i)
            .await;
    }
    for i in 0..3 {
        app.product(&admin, &format!("COF-{i}"), "coffee", 200 + i)
            .await;
    }
    let page = app
        .get("/api/v1/products?category=tea&page=2&per_page=2", None)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.body["total"], 5);
    assert_eq!(page.body["page"], 2);
    let items = page.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|p| p["category"] == "tea"));

    let last = app
        .get("/api/v1/products?category=tea&page=3&per_page=2", None)
        .await;
    assert_eq!(last.body["items"].as_array().unwrap().len(), 1);
    let all = app.get("/api/v1/products?per_page=100", None).await;
    assert_eq!(all.body["total"], 8);
    let none = app.get("/api/v1/products?category=juice", None).await;
    assert_eq!(none.body["total"], 0);
}

/// Pages of the listing are kept in memory between changes: a new product and a new price
/// show in the very next listing.
async fn a_listing_shows_a_change_at_once(app: &TestApp) {
    let admin = app.admin_token().await;
    let first = app.product(&admin, "PAGE-1", "pages", 450).await;
    let listing = || async {
        let reply = app.get("/api/v1/products?category=pages", None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body
    };
    let page = listing().await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["price"]["amount_minor"], 450);
    // Read again: served from memory now.
    assert_eq!(listing().await, page);

    app.product(&admin, "PAGE-2", "pages", 300).await;
    let page = listing().await;
    assert_eq!(page["total"], 2, "{page}");

    let changed = app
        .put(
            &format!("/api/v1/products/{first}"),
            Some(&admin),
            json!({ "price": { "amount_minor": 500, "currency": "EUR" } }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let page = listing().await;
    assert_eq!(page["items"][0]["price"]["amount_minor"], 500, "{page}");
}

async fn only_an_admin_writes_products(app: &TestApp) {
    let (_, customer) = app.customer("paula").await;
    let body = json!({ "sku": "X-1", "name": "X", "category": "x", "price": { "amount_minor": 1, "currency": "EUR" } });
    let denied = app
        .post("/api/v1/products", Some(&customer), body.clone())
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let anonymous = app.post("/api/v1/products", None, body).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let admin = app.admin_token().await;
    let id = app.product(&admin, "X-2", "x", 1).await;
    let change = app
        .put(
            &format!("/api/v1/products/{id}"),
            Some(&customer),
            json!({ "name": "Mine" }),
        )
        .await;
    assert_eq!(change.status, StatusCode::FORBIDDEN);
}

async fn a_duplicate_sku_gets_409(app: &TestApp) {
    let admin = app.admin_token().await;
    app.product(&admin, "DUP-1", "misc", 100).await;
    let again = app
        .post(
            "/api/v1/products",
            Some(&admin),
            json!({ "sku": "DUP-1", "name": "Other", "category": "misc", "price": { "amount_minor": 1, "currency": "EUR" } }),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
}

async fn bad_product_input_gets_a_4xx_and_changes_nothing(app: &TestApp) {
    let admin = app.admin_token().await;
    let valid = json!({ "sku": "OK-1", "name": "Fine", "category": "misc", "price": { "amount_minor": 100, "currency": "EUR" } });
    let with = |key: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let cases = [
        with("price", json!({ "amount_minor": -1, "currency": "EUR" })),
        with(
            "price",
            json!({ "amount_minor": 9_000_000_000_000_000_i64, "currency": "EUR" }),
        ),
        with("price", json!({ "amount_minor": 1.5, "currency": "EUR" })),
        with("price", json!({ "amount_minor": 100, "currency": "euro" })),
        with("name", json!("")),
        with("name", json!("x".repeat(1000))),
        with("category", json!("Not A Slug!")),
        with("sku", json!("bad sku with spaces")),
        with("in_stock", json!(true)),
        with("id", json!("0190f0f0-0000-7000-8000-000000000000")),
    ];
    for body in cases {
        let reply = app
            .post("/api/v1/products", Some(&admin), body.clone())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            reply.text
        );
        assert!(reply.body["error"]["code"].is_string());
    }
    let listed = app.get("/api/v1/products", None).await;
    assert_eq!(
        listed.body["total"], 0,
        "nothing was created: {}",
        listed.text
    );

    let unknown = app
        .get(&format!("/api/v1/products/{}", uuid::Uuid::now_v7()), None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "not_found");
    let not_an_id = app.get("/api/v1/products/42", None).await;
    assert_eq!(not_an_id.status, StatusCode::BAD_REQUEST);
    let bad_page = app.get("/api/v1/products?page=-1", None).await;
    assert!(bad_page.status.is_client_error(), "{}", bad_page.text);
    let bad_category = app
        .get("/api/v1/products?category=%20DROP%20TABLE", None)
        .await;
    assert!(
        bad_category.status.is_client_error(),
        "{}",
        bad_category.text
    );
    let unknown_product_change = app
        .put(
            &format!("/api/v1/products/{}", uuid::Uuid::now_v7()),
            Some(&admin),
            json!({ "name": "Ghost" }),
        )
        .await;
    assert_eq!(unknown_product_change.status, StatusCode::NOT_FOUND);
}

async fn the_catalog_learns_stock_from_inventory_events(app: &TestApp) {
    let admin = app.admin_token().await;
    let id = app.product(&admin, "STOCK-1", "misc", 100).await;
    assert_eq!(app.stock(&admin, &id, 7).await.status, StatusCode::OK);
    let path = format!("/api/v1/products/{id}");
    eventually("the catalog shows the product in stock", || async {
        let product = app.get(&path, None).await;
        product.body["in_stock"] == true && product.body["available"] == 7
    })
    .await;
    assert_eq!(app.stock(&admin, &id, 0).await.status, StatusCode::OK);
    eventually("the catalog shows the product out of stock", || async {
        app.get(&path, None).await.body["in_stock"] == false
    })
    .await;
}
