//! `banyan seed`: fills a fresh shop with a catalog, stock, an admin and a customer.
//!
//! It runs the modules in this process and drives their HTTP routes directly (no socket), so
//! every write goes through the same validation, transactions and events as a real request;
//! the bus drains before it exits, so the catalog's stock read model is filled too. Running it
//! twice changes nothing: what exists is left alone.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{config::Settings, server::Server};

/// The admin seed creates unless one is configured; its password is random, made once and
/// kept in the state directory (like the development secrets), so a second seed still logs in.
const ADMIN: (&str, &str) = ("admin", "admin@example.com");
const ADMIN_PASSWORD_FILE: &str = "seed_admin_password";
/// The demo customer. Its password is published on purpose: it can only shop.
pub(crate) const CUSTOMER: (&str, &str, &str) = ("alice", "alice@example.com", "alice-password");

const PRODUCTS: &[(&str, &str, &str, i64, i64)] = &[
    ("TEA-SENCHA", "Sencha green tea, 100 g", "tea", 650, 40),
    ("TEA-ASSAM", "Assam black tea, 250 g", "tea", 890, 25),
    ("TEA-ROOIBOS", "Rooibos, 200 g", "tea", 520, 0),
    (
        "COF-ETHIOPIA",
        "Ethiopia Yirgacheffe beans, 250 g",
        "coffee",
        1290,
        30,
    ),
    (
        "COF-BRAZIL",
        "Brazil Santos beans, 1 kg",
        "coffee",
        2450,
        12,
    ),
    ("MUG-STONE", "Stoneware mug", "mugs", 1500, 8),
    ("MUG-GLASS", "Double-walled glass mug", "mugs", 1800, 3),
    ("POT-CAST", "Cast-iron teapot", "teapots", 4900, 2),
];

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("x-request-id", "banyan-seed");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.to_string()))?)
        .await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

pub(crate) async fn run(settings: Settings, figment: figment::Figment) -> anyhow::Result<()> {
    let configured = figment.find_value("modules.users.bootstrap_admin").is_ok();
    let figment = if configured {
        figment
    } else {
        let dir = &settings.server.state_dir;
        let password = crate::secrets::generated(dir, ADMIN_PASSWORD_FILE).map_err(|e| {
            anyhow::anyhow!("cannot keep the admin's password in {}: {e}", dir.display())
        })?;
        crate::config::with(
            figment,
            "modules.users.bootstrap_admin",
            json!({ "username": ADMIN.0, "email": ADMIN.1, "password": password }),
        )
    };
    let admin: Value = figment
        .extract_inner("modules.users.bootstrap_admin")
        .map_err(|e| anyhow::anyhow!("modules.users.bootstrap_admin: {e}"))?;
    let settings_dir = settings.server.state_dir.clone();
    // Seeding serves nothing: no metrics listener (a running server may hold its port).
    let mut settings = settings;
    settings.metrics.enabled = false;
    let server = Server::build(settings, figment).await?;
    let router = server.router();

    let (status, login) = call(
        &router,
        Method::POST,
        "/api/v1/users/login",
        None,
        json!({ "username": admin["username"], "password": admin["password"] }),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::OK, "the admin cannot log in: {login}");
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let mut created = 0;
    for (sku, name, category, price, stock) in PRODUCTS {
        let (status, product) = call(
            &router,
            Method::POST,
            "/api/v1/products",
            Some(&token),
            json!({ "sku": sku, "name": name, "category": category,
                    "price": { "amount_minor": price, "currency": "EUR" } }),
        )
        .await?;
        match status {
            StatusCode::CREATED => {
                let id = product["id"].as_str().unwrap_or_default();
                let (status, answer) = call(
                    &router,
                    Method::PUT,
                    &format!("/api/v1/inventory/{id}"),
                    Some(&token),
                    json!({ "on_hand": stock }),
                )
                .await?;
                anyhow::ensure!(status == StatusCode::OK, "stocking {sku} failed: {answer}");
                created += 1;
            }
            StatusCode::CONFLICT => {}
            _ => anyhow::bail!("creating {sku} failed: {product}"),
        }
    }
    let (status, answer) = call(
        &router,
        Method::POST,
        "/api/v1/users",
        None,
        json!({ "username": CUSTOMER.0, "email": CUSTOMER.1, "password": CUSTOMER.2 }),
    )
    .await?;
    anyhow::ensure!(
        matches!(status, StatusCode::CREATED | StatusCode::CONFLICT),
        "registering {} failed: {answer}",
        CUSTOMER.0
    );
    server.stop().await;
    let admin_password = if configured {
        "(the configured bootstrap password)".to_owned()
    } else {
        format!(
            "{} (kept in {})",
            admin["password"].as_str().unwrap_or_default(),
            settings_dir.join(ADMIN_PASSWORD_FILE).display()
        )
    };
    println!(
        "Seeded {created} new products ({} in the catalog).\n\
         Admin:    {} / {admin_password}\nCustomer: {} / {}",
        PRODUCTS.len(),
        admin["username"].as_str().unwrap_or_default(),
        CUSTOMER.0,
        CUSTOMER.2
    );
    Ok(())
}
