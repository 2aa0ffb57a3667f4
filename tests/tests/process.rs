//! Real `banyan` processes: crashes, restarts and what they write to their logs.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_db::sqlx::{self, AnyPool};
use banyan_e2e::{ADMIN_PASSWORD, ADMIN_USERNAME, eventually, process::BanyanProcess, send};
use serde_json::{Value, json};

fn environment(data: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "BANYAN_DATABASE__URL",
            format!("sqlite://{}", data.display()),
        ),
        ("BANYAN_BUS__RELAY_LEASE_MS", "500".into()),
        ("BANYAN_BUS__RELAY_INTERVAL_MS", "50".into()),
        (
            "BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__USERNAME",
            ADMIN_USERNAME.into(),
        ),
        (
            "BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__EMAIL",
            "admin@example.test".into(),
        ),
        (
            "BANYAN_MODULES__USERS__BOOTSTRAP_ADMIN__PASSWORD",
            ADMIN_PASSWORD.into(),
        ),
    ]
}

async fn login(
    client: &reqwest::Client,
    process: &BanyanProcess,
    user: &str,
    password: &str,
) -> String {
    let reply = send(
        client
            .post(process.url("/api/v1/users/login"))
            .json(&json!({ "username": user, "password": password })),
    )
    .await;
    reply.body["access_token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

async fn module_db(data: &std::path::Path, module: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(&format!("sqlite://{}/{module}.db", data.display()))
        .await
        .expect("the module's database file")
}

async fn count(pool: &AnyPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_before_a_sigkill_is_delivered_after_restart_and_applied_once() {
    let data = tempfile::tempdir().expect("a data directory");
    let env = environment(data.path());
    let client = reqwest::Client::new();

    // 1. A product exists; a clean stop.
    let first = BanyanProcess::start(&env).await;
    let admin = login(&client, &first, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let product = send(
        client
            .post(first.url("/api/v1/products"))
            .bearer_auth(&admin)
            .json(
                &json!({ "sku": "CRASH-1", "name": "Crash test", "category": "misc",
                           "price": { "amount_minor": 100, "currency": "EUR" } }),
            ),
    )
    .await;
    let product = product.body["id"]
        .as_str()
        .expect("a product id")
        .to_owned();
    assert!(first.terminate().await.success(), "a clean stop");

    // 2. The stock change commits, then the process is killed before publishing it.
    let mut crash_env = env.clone();
    crash_env.push(("BANYAN_FAILPOINTS", "outbox.after_commit".into()));
    let mut doomed = BanyanProcess::start(&crash_env).await;
    let admin = login(&client, &doomed, ADMIN_USERNAME, ADMIN_PASSWORD).await;
    let hanging = tokio::spawn(
        client
            .put(doomed.url(&format!("/api/v1/inventory/{product}")))
            .bearer_auth(&admin)
            .json(&json!({ "on_hand": 5 }))
            .send(),
    );
    doomed
        .wait_for_line("FAILPOINT outbox.after_commit reached")
        .await;
    doomed.kill().await;
    assert!(
        hanging.await.expect("the request task").is_err(),
        "the request died with the process"
    );

    let inventory = module_db(data.path(), "inventory").await;
    let catalog = module_db(data.path(), "catalog").await;
    assert_eq!(
        count(&inventory, "SELECT on_hand FROM stock").await,
        5,
        "the state change committed"
    );
    assert_eq!(
        count(&inventory, "SELECT COUNT(*) FROM outbox").await,
        1,
        "its event waits in the outbox"
    );
    assert_eq!(
        count(
            &catalog,
            "SELECT COUNT(*) FROM inbox WHERE subject = 'inventory.stock_changed.v1'"
        )
        .await,
        0,
        "nobody received it"
    );

    // 3. After a restart the relay delivers it, and the catalog applies it once.
    let restarted = BanyanProcess::start(&env).await;
    let url = restarted.url(&format!("/api/v1/products/{product}"));
    eventually("the catalog learns the stock", || async {
        let reply = send(client.get(&url)).await;
        reply.body["available"] == 5 && reply.body["in_stock"] == true
    })
    .await;
    eventually("the outbox is empty", || async {
        count(&inventory, "SELECT COUNT(*) FROM outbox").await == 0
    })
    .await;
    assert!(restarted.terminate().await.success());
    assert_eq!(
        count(
            &catalog,
            "SELECT COUNT(*) FROM inbox WHERE subject = 'inventory.stock_changed.v1'"
        )
        .await,
        1,
        "applied exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_the_correlation_id_and_never_a_password_or_hash() {
    let data = tempfile::tempdir().expect("a data directory");
    let process = BanyanProcess::start(&environment(data.path())).await;
    let client = reqwest::Client::new();
    let password = "log-check-password-9183";
    let registered = send(
        client
            .post(process.url("/api/v1/users"))
            .header("x-request-id", "req-register-1")
            .json(&json!({ "username": "logan", "email": "logan@example.test", "password": password })),
    )
    .await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    assert_eq!(registered.headers["x-request-id"], "req-register-1");
    let failed = send(
        client
            .post(process.url("/api/v1/users/login"))
            .json(&json!({ "username": "logan", "password": "wrong-password-771" })),
    )
    .await;
    assert_eq!(failed.status, 401);
    let generated = failed.headers["x-request-id"]
        .to_str()
        .expect("an id")
        .to_owned();
    assert!(!generated.is_empty(), "an id is made when none is sent");
    login(&client, &process, "logan", password).await;
    let output = process.output();
    assert!(process.terminate().await.success());

    assert!(!output.contains(password), "a password was logged");
    assert!(
        !output.contains("wrong-password-771"),
        "a password was logged"
    );
    assert!(!output.contains("$argon2"), "a hash was logged");
    let lines: Vec<Value> = output
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of_request: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["correlation_id"] == "req-register-1")
        .collect();
    assert!(
        of_request
            .iter()
            .any(|l| l["message"] == "Account registered."),
        "the domain's log line carries the request's correlation id:\n{output}"
    );
    assert!(
        of_request
            .iter()
            .any(|l| l["message"] == "Request handled."),
        "the edge's log line carries it too"
    );
}
