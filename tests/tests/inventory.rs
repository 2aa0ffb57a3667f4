//! The inventory module over HTTP and over the bus, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_bus::{BusError, Context};
use banyan_catalog_contract::ProductId;
use banyan_e2e::{TestApp, on_both_engines};
use banyan_inventory_contract::{GetStock, ReleaseStock, ReserveStock, StockLine};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

on_both_engines!(
    an_admin_sets_stock_and_anyone_reads_it,
    bad_stock_input_gets_a_4xx,
    a_reservation_takes_all_lines_or_none,
    reserving_and_releasing_twice_changes_stock_once,
    stock_cannot_be_set_below_what_is_reserved,
);

async fn an_admin_sets_stock_and_anyone_reads_it(app: &TestApp) {
    let admin = app.admin_token().await;
    let product = Uuid::now_v7().to_string();
    let path = format!("/api/v1/inventory/{product}");
    assert_eq!(app.get(&path, None).await.status, StatusCode::NOT_FOUND);
    let set = app.stock(&admin, &product, 12).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let read = app.get(&path, None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["on_hand"], 12);
    assert_eq!(read.body["reserved"], 0);
    assert_eq!(read.body["available"], 12);
}

async fn bad_stock_input_gets_a_4xx(app: &TestApp) {
    let admin = app.admin_token().await;
    let (_, customer) = app.customer("quinn").await;
    let product = Uuid::now_v7().to_string();
    let path = format!("/api/v1/inventory/{product}");
    let cases = [
        (json!({ "on_hand": -1 }), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({ "on_hand": 10_000_000_000_i64 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "on_hand": "ten" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({ "on_hand": 1, "reserved": 5 }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, status) in cases {
        let reply = app.put(&path, Some(&admin), body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert!(reply.body["error"]["code"].is_string());
    }
    assert_eq!(
        app.put(&path, Some(&customer), json!({ "on_hand": 5 }))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.put(&path, None, json!({ "on_hand": 5 })).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get(&path, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/v1/inventory/not-a-product", None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

fn line(product: Uuid, quantity: i64) -> StockLine {
    StockLine {
        product_id: ProductId(product),
        quantity,
    }
}

async fn available(app: &TestApp, product: Uuid) -> i64 {
    let levels = app
        .bus()
        .request(
            &Context::root(),
            GetStock {
                product_ids: vec![ProductId(product)],
            },
        )
        .await
        .expect("stock levels");
    levels.first().map_or(0, |l| l.available)
}

async fn a_reservation_takes_all_lines_or_none(app: &TestApp) {
    let admin = app.admin_token().await;
    let (plenty, scarce) = (Uuid::now_v7(), Uuid::now_v7());
    app.stock(&admin, &plenty.to_string(), 10).await;
    app.stock(&admin, &scarce.to_string(), 1).await;
    let cx = Context::root();
    let refused = app
        .bus()
        .request(
            &cx,
            ReserveStock {
                reservation_id: Uuid::now_v7(),
                lines: vec![line(plenty, 3), line(scarce, 2)],
            },
        )
        .await;
    let Err(BusError::Rejected(rejection)) = refused else {
        panic!("expected a rejection, got {refused:?}");
    };
    assert_eq!(rejection.code, "insufficient_stock");
    assert!(rejection.details.to_string().contains(&scarce.to_string()));
    assert_eq!(available(app, plenty).await, 10, "nothing was reserved");
    assert_eq!(available(app, scarce).await, 1);

    app.bus()
        .request(
            &cx,
            ReserveStock {
                reservation_id: Uuid::now_v7(),
                lines: vec![line(plenty, 3), line(scarce, 1)],
            },
        )
        .await
        .expect("both lines fit");
    assert_eq!(available(app, plenty).await, 7);
    assert_eq!(available(app, scarce).await, 0);
}

async fn reserving_and_releasing_twice_changes_stock_once(app: &TestApp) {
    let admin = app.admin_token().await;
    let product = Uuid::now_v7();
    app.stock(&admin, &product.to_string(), 5).await;
    let cx = Context::root();
    let reservation = Uuid::now_v7();
    for _ in 0..2 {
        app.bus()
            .request(
                &cx,
                ReserveStock {
                    reservation_id: reservation,
                    lines: vec![line(product, 2)],
                },
            )
            .await
            .expect("reserved");
        assert_eq!(available(app, product).await, 3);
    }
    let read = app.get(&format!("/api/v1/inventory/{product}"), None).await;
    assert_eq!(read.body["reserved"], 2);
    let first = app
        .bus()
        .request(
            &cx,
            ReleaseStock {
                reservation_id: reservation,
            },
        )
        .await
        .expect("released");
    let second = app
        .bus()
        .request(
            &cx,
            ReleaseStock {
                reservation_id: reservation,
            },
        )
        .await
        .expect("released again");
    assert!(first.released);
    assert!(!second.released);
    assert_eq!(available(app, product).await, 5);
}

async fn stock_cannot_be_set_below_what_is_reserved(app: &TestApp) {
    let admin = app.admin_token().await;
    let product = Uuid::now_v7();
    app.stock(&admin, &product.to_string(), 5).await;
    app.bus()
        .request(
            &Context::root(),
            ReserveStock {
                reservation_id: Uuid::now_v7(),
                lines: vec![line(product, 4)],
            },
        )
        .await
        .expect("reserved");
    let below = app.stock(&admin, &product.to_string(), 3).await;
    assert_eq!(below.status, StatusCode::CONFLICT, "{}", below.text);
    assert_eq!(
        app.stock(&admin, &product.to_string(), 4).await.status,
        StatusCode::OK
    );
}
