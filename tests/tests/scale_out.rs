//! Outgrowing one machine: two mains side by side, one of them killed mid-burst; many
//! processes of a module started together by a scheduler, on storage none of them has seen
//! before; a module's data moved to a database server of its own (`banyan data move`)
//! while the rest of the shop serves; and a read model two instances of a module share.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_e2e::{
    Engine, PgDatabase, Storage, TEST_JWT_SECRET, TestApp,
    cluster::{Cluster, Topology, Transport},
    eventually,
    postgres::SecondPostgres,
    process::binary,
    redis_url, test_figment,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicUsize, Ordering},
};

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

/// The instance ids a main lists for `module`.
fn instance_ids(services: &Value, module: &str) -> BTreeSet<String> {
    services["modules"][module]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["instance_id"].as_str().map(str::to_owned))
        .collect()
}

/// Orders placed through `main` until `count` are sent, `parallel` at a time; a request the
/// main dies under is not an accepted order (its client never heard so). Returns the ids
/// answered 201 or 202.
async fn orders_through(
    app: &TestApp,
    main: usize,
    (token, product): (&str, &str),
    (count, parallel): (usize, usize),
    progress: &AtomicUsize,
) -> Vec<String> {
    use futures::StreamExt;
    let url = app.url_via(main, "/api/v1/orders?wait_ms=2000");
    let body = json!({ "lines": [{ "product_id": product, "quantity": 1 }] });
    futures::stream::iter(0..count)
        .map(|_| async {
            let sent = app
                .client
                .post(&url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await;
            progress.fetch_add(1, Ordering::SeqCst);
            let response = sent.ok().filter(|r| r.status().is_success())?;
            let order: Value = response.json().await.ok()?;
            order["id"].as_str().map(str::to_owned)
        })
        .buffer_unordered(parallel)
        .filter_map(|id| async { id })
        .collect()
        .await
}

/// The statuses of every order of `user`, through its list (100 a page).
async fn orders_of(app: &TestApp, user: &str, token: &str) -> Vec<String> {
    let mut statuses = Vec::new();
    for page in 1.. {
        let path = format!("/api/v1/orders/user/{user}?page={page}&per_page=100");
        let reply = app.get(&path, Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let items = reply.body["items"].as_array().cloned().unwrap_or_default();
        statuses.extend(
            items
                .iter()
                .filter_map(|o| o["status"].as_str().map(str::to_owned)),
        );
        if items.len() < 100 {
            break;
        }
    }
    statuses
}

/// Two mains behind no balancer at all (clients pick one), inventory and two payments
/// processes over NATS registered with both, on PostgreSQL. Both mains list the same
/// instances; a token revoked through one is refused by the other; checkouts go through both;
/// the first main is SIGKILLed in the middle. Every
/// order either main accepted ends confirmed and paid once, the stock accounts for exactly
/// those, and the surviving main serves on (its relays take over what the dead one had
/// leased).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mains_serve_one_split_and_losing_one_loses_no_order() {
    let mut topology = Topology::inventory_and_two_payments_over_nats();
    let processes = std::mem::take(&mut topology.processes);
    let Some(mut app) =
        TestApp::spawn_split(Engine::Postgres, topology, std::convert::identity).await
    else {
        return;
    };
    let second = app.cluster_mut().start_another_main().await;
    for name in &processes {
        app.cluster_mut().start_process(name).await;
    }
    for main in [0, second] {
        app.cluster().healthy_at(main, "payments", 2).await;
        app.cluster().healthy_at(main, "inventory", 1).await;
    }
    let (first_view, second_view) = (
        app.cluster().services_at(0).await,
        app.cluster().services_at(second).await,
    );
    for module in ["payments", "inventory"] {
        assert_eq!(
            instance_ids(&first_view, module),
            instance_ids(&second_view, module),
            "both mains list the same {module} instances"
        );
    }

    // A password changed through one main refuses the old token at the other too: the
    // revocation is handled by one main's module, and the other reads it from the shared
    // table.
    let (revoked, old_token) = app.customer("revoked").await;
    let changed = app
        .call_via(
            0,
            reqwest::Method::PUT,
            &format!("/api/v1/users/{revoked}"),
            Some(&old_token),
            Some(json!({ "password": "revoked-new-password", "current_password": "revoked-secret-pw" })),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    eventually("the second main refuses the old token", || async {
        let me = app
            .call_via(
                second,
                reqwest::Method::GET,
                &format!("/api/v1/users/{revoked}"),
                Some(&old_token),
                None,
            )
            .await;
        me.status == StatusCode::UNAUTHORIZED
    })
    .await;

    let admin = app.admin_token().await;
    let product = app.product(&admin, "TWO-MAINS", "tea", 450).await;
    let stocked = app.stock(&admin, &product, 1_000).await;
    assert_eq!(stocked.status, StatusCode::OK, "{}", stocked.text);
    let (user, token) = app.customer("twice").await;
    let victim = app.cluster().main.pid();
    let (through_first, through_second) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (first, survivor, ()) = tokio::join!(
        orders_through(&app, 0, (&token, &product), (120, 4), &through_first),
        app.burst_via(second, &token, &product, (120, 4, 2000), &through_second),
        async {
            eventually("the burst is under way", || async {
                through_first.load(Ordering::SeqCst) >= 30
            })
            .await;
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &victim.to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }
    );
    assert_eq!(survivor.refused, 0, "the surviving main took every order");
    drop(app.cluster_mut().promote_other_main());
    let accepted: Vec<String> = first.into_iter().chain(survivor.accepted).collect();
    assert!(accepted.len() >= 150, "{} accepted", accepted.len());
    for id in &accepted {
        let order = app.terminal_order(&token, id).await;
        assert_eq!(order["status"], "confirmed", "{order}");
        let payment = app
            .get(&format!("/api/v1/payments/{id}"), Some(&token))
            .await;
        assert_eq!(payment.status, StatusCode::OK, "{}", payment.text);
        assert_eq!(payment.body["amount"]["amount_minor"], 450);
    }
    // Orders the dead main took without answering end too, confirmed like the others: the
    // stock holds exactly what all the confirmed orders took, whoever placed them.
    eventually("no order of the customer is left pending", || async {
        let statuses = orders_of(&app, &user, &token).await;
        !statuses.iter().any(|s| s == "pending")
    })
    .await;
    let statuses = orders_of(&app, &user, &token).await;
    let confirmed = statuses.iter().filter(|s| *s == "confirmed").count();
    assert!(
        confirmed >= accepted.len(),
        "{confirmed} < {}",
        accepted.len()
    );
    let left = 1_000 - i64::try_from(confirmed).unwrap();
    eventually("the stock accounts for every confirmed order", || async {
        app.stock_of(&product).await == (left, 0, left)
    })
    .await;
    app.stop().await;
}

/// Two whole shops in one, side by side on one PostgreSQL database (two mains with no module
/// elsewhere): a password changed through one refuses the old token at the other, which never
/// saw the event (events stay in the process that published them) and reads the revocation
/// from the shared table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_through_one_monolith_is_refused_by_its_twin() {
    let topology = Topology {
        placements: Vec::new(),
        processes: Vec::new(),
        nats_url: None,
        tls: false,
        process_env: Vec::new(),
    };
    let Some(mut app) =
        TestApp::spawn_split(Engine::Postgres, topology, std::convert::identity).await
    else {
        return;
    };
    let twin = app.cluster_mut().start_another_main().await;
    let (user, old_token) = app.customer("twin").await;
    // The cart: a module other than users, which checks tokens only against what the
    // process was told of revocations.
    let me = |main: usize, token: String| {
        let app = &app;
        let path = format!("/api/v1/carts/{user}");
        async move {
            app.call_via(main, reqwest::Method::GET, &path, Some(&token), None)
                .await
                .status
        }
    };
    assert_eq!(me(twin, old_token.clone()).await, StatusCode::OK);
    let changed = app
        .put(
            &format!("/api/v1/users/{user}"),
            Some(&old_token),
            json!({ "password": "twin-new-password", "current_password": "twin-secret-pw" }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    eventually("the twin refuses the old token", || async {
        me(twin, old_token.clone()).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let new_token = app.login("twin", "twin-new-password").await;
    assert_eq!(me(twin, new_token).await, StatusCode::OK);
    app.stop().await;
}

/// The catalog in two processes whose product caches hear each other over Redis, entries
/// living ten minutes: a price changed through one instance is read from both at once, by id
/// and in the listing (main's gateway takes turns between them), where without the
/// announcements the other would serve the old price until its entry expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_catalog_instances_sharing_a_read_model_both_show_a_new_price_at_once() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let channel = format!("banyan.test.{}.catalog", uuid::Uuid::new_v4().simple());
    let mut topology = Topology::one("catalog", Transport::Http);
    topology.processes.push("catalog".into());
    let Some(app) = TestApp::spawn_split(Engine::Sqlite, topology, |figment| {
        banyan_e2e::banyan_app::config::with(
            figment,
            "modules.catalog.read_model",
            json!({ "redis_url": redis, "channel": channel, "ttl_secs": 600 }),
        )
    })
    .await
    else {
        return;
    };
    app.cluster().healthy("catalog", 2).await;
    let admin = app.admin_token().await;
    let product = app.product(&admin, "SHARED-1", "shared", 450).await;
    let path = format!("/api/v1/products/{product}");
    // Read by id and in the listing, each instance in turn.
    let prices = async || {
        let mut seen = BTreeSet::new();
        for _ in 0..8 {
            let read = app.get(&path, None).await;
            assert_eq!(read.status, StatusCode::OK, "{}", read.text);
            seen.insert(read.body["price"]["amount_minor"].as_i64().unwrap());
            let listed = app.get("/api/v1/products?category=shared", None).await;
            assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
            seen.insert(
                listed.body["items"][0]["price"]["amount_minor"]
                    .as_i64()
                    .unwrap(),
            );
        }
        seen
    };
    // Both instances have the product cached.
    assert_eq!(prices().await, BTreeSet::from([450]));

    let changed = app
        .put(
            &path,
            Some(&admin),
            json!({ "price": { "amount_minor": 500, "currency": "EUR" } }),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    // Announced, not expired: every read after the change's delivery shows the new price.
    eventually("both instances show the new price", || async {
        prices().await == BTreeSet::from([500])
    })
    .await;
    app.stop().await;
}
