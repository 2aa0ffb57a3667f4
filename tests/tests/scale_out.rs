//! Outgrowing one machine: what must hold once a module runs as many processes, started
//! together by a scheduler, on storage none of them has seen before; and a module's data moved
//! to a database server of its own (`banyan data move`) while the rest of the shop serves.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_e2e::{
    Engine, PgDatabase, Storage, TEST_JWT_SECRET, TestApp,
    cluster::{Cluster, Topology, Transport},
    postgres::SecondPostgres,
    process::binary,
    test_figment,
};
use reqwest::StatusCode;

/// Five payments processes started at the same moment on fresh storage, three times over:
/// each provisions (the schema and role on PostgreSQL, the file on SQLite) and migrates, or
/// finds it done, and every one of them serves. None dies of another's `CREATE`.
async fn five_processes_of_one_module_start_at_once_on_fresh_storage(engine: Engine) {
    for _ in 0..3 {
        let Some(storage) = Storage::fresh(engine).await else {
            return;
        };
        let mut topology = Topology::one("payments", Transport::Http);
        // Main only: the five come together below.
        topology.processes.clear();
        let mut cluster = Cluster::start(test_figment(&storage.url()), topology)
            .await
            .unwrap();
        cluster.start_processes_at_once("payments", 5).await;
        cluster.healthy("payments", 5).await;
        cluster.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_payments_processes_start_at_once_on_a_fresh_postgresql_database() {
    five_processes_of_one_module_start_at_once_on_fresh_storage(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_payments_processes_start_at_once_on_a_fresh_sqlite_directory() {
    five_processes_of_one_module_start_at_once_on_fresh_storage(Engine::Sqlite).await;
}

/// A shop with `module` in a process of its own and three confirmed checkouts; the module's
/// process stopped; its data moved to `to` with `banyan data move` while main still serves;
/// the process started again on `to`. Every earlier order and payment reads as before, the
/// report says every table matched, and a new checkout confirms.
async fn a_moved_module_keeps_its_data(app: &mut TestApp, module: &str, to: &str) {
    let admin = app.admin_token().await;
    let product = app.product(&admin, "MOVE-1", "tea", 450).await;
    let stocked = app.stock(&admin, &product, 100).await;
    assert_eq!(stocked.status, StatusCode::OK, "{}", stocked.text);
    let (_, token) = app.customer("mover").await;
    let mut before = Vec::new();
    for _ in 0..3 {
        let order = app.checkout(&token, &product, 1, "tok_visa").await;
        assert_eq!(order["status"], "confirmed", "{order}");
        before.push(order["id"].as_str().unwrap().to_owned());
    }

    let process = app.cluster_mut().take_process(module);
    let status = process.terminate().await;
    assert!(status.success(), "{module} stopped with {status}");
    // The rest of the shop keeps serving meanwhile.
    let products = app.get("/api/v1/products", None).await;
    assert_eq!(products.status, StatusCode::OK, "{}", products.text);

    let config = app.cluster().config_path().to_owned();
    let moved = tokio::process::Command::new(binary())
        .args(["data", "move", module, "--to", to, "--config"])
        .arg(&config)
        .env("BANYAN_AUTH__JWT_SECRET", TEST_JWT_SECRET)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(report.contains("Verified."), "{report}");
    assert!(!report.contains("DIFFERS"), "{report}");
    for table in ["outbox", "inbox", "dead_letters"] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(table) && l.ends_with("ok")),
            "{table}: {report}"
        );
    }
    let setting = format!("BANYAN_DATABASE__MODULES__{}__URL", module.to_uppercase());
    assert!(report.contains(&setting), "{report}");

    app.cluster_mut()
        .start_process_with(module, &[(setting.as_str(), to)])
        .await;
    app.cluster().healthy(module, 1).await;
    for id in &before {
        let order = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
        assert_eq!(order.status, StatusCode::OK, "{}", order.text);
        assert_eq!(order.body["status"], "confirmed", "{}", order.text);
        let payment = app
            .get(&format!("/api/v1/payments/{id}"), Some(&token))
            .await;
        assert_eq!(payment.status, StatusCode::OK, "{}", payment.text);
        assert_eq!(payment.body["status"], "completed", "{}", payment.text);
    }
    let after = app.checkout(&token, &product, 1, "tok_visa").await;
    assert_eq!(after["status"], "confirmed", "{after}");
}

/// Orders, in a process of its own on the shop's PostgreSQL database, moved to a second
/// PostgreSQL server the test starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_moved_to_a_second_postgresql_server_keep_every_order() {
    let Some(second) = SecondPostgres::start() else {
        return;
    };
    let topology = Topology::one("orders", Transport::Http);
    let Some(mut app) =
        TestApp::spawn_split(Engine::Postgres, topology, std::convert::identity).await
    else {
        return;
    };
    a_moved_module_keeps_its_data(&mut app, "orders", &second.url("postgres")).await;
    app.stop().await;
}

/// Payments, in a process of its own on SQLite files, moved to PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_moved_from_sqlite_to_postgresql_keep_every_payment() {
    let Some(target) = PgDatabase::create().await else {
        return;
    };
    let topology = Topology::one("payments", Transport::Http);
    let mut app = TestApp::spawn_split(Engine::Sqlite, topology, std::convert::identity)
        .await
        .unwrap();
    a_moved_module_keeps_its_data(&mut app, "payments", &target.url).await;
    app.stop().await;
}
