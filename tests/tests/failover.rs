//! Failures of a split shop, with real processes: a payments process killed with SIGKILL in
//! the middle of a burst of checkouts (with another instance alive, and with none), and the
//! NATS server stopped for ten seconds in the middle of one, and every process of a split
//! killed at once with sagas under way. Whatever happens, every accepted
//! order ends, each is charged once, and the stock accounts for exactly the confirmed ones.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use banyan_bus::testing::{PrivateNats, PrivateNatsCluster};
use banyan_e2e::{
    Burst, Engine, TestApp,
    cluster::{Topology, Transport},
    eventually, eventually_within,
};
use reqwest::StatusCode;

/// Payments in two processes (or one), reached over `transport`; everything else in main.
fn payments_in(processes: usize, transport: Transport) -> Topology {
    Topology {
        placements: vec![("payments".into(), "payments".into(), transport)],
        processes: vec!["payments".into(); processes],
        nats_url: None,
        tls: false,
        process_env: Vec::new(),
    }
}

/// NATS on PostgreSQL, HTTP and gRPC on SQLite: both engines see a failover.
fn engine_for(transport: Transport) -> Engine {
    match transport {
        Transport::Nats => Engine::Postgres,
        Transport::Http | Transport::Grpc => Engine::Sqlite,
    }
}

/// An admin-made product with plenty of stock, and a customer's token.
async fn shop(app: &TestApp) -> (String, String) {
    let admin = app.admin_token().await;
    let product = app.product(&admin, "FAIL-1", "tea", 450).await;
    let stocked = app.stock(&admin, &product, 1_000).await;
    assert_eq!(stocked.status, StatusCode::OK, "{}", stocked.text);
    let (_, token) = app.customer("steady").await;
    (product, token)
}

/// Every order confirmed and paid exactly its total (payments keeps one payment per order:
/// `UNIQUE(order_id)`), and the stock holds exactly what the confirmed orders took.
async fn every_order_confirmed_and_paid_once(
    app: &TestApp,
    token: &str,
    product: &str,
    orders: &[String],
) {
    for id in orders {
        let order = app.terminal_order(token, id).await;
        assert_eq!(order["status"], "confirmed", "{order}");
        let payment = app
            .get(&format!("/api/v1/payments/{id}"), Some(token))
            .await;
        assert_eq!(payment.status, StatusCode::OK, "{}", payment.text);
        assert_eq!(payment.body["status"], "completed", "{}", payment.text);
        assert_eq!(payment.body["amount"]["amount_minor"], 450);
    }
    let left = 1_000 - i64::try_from(orders.len()).unwrap();
    eventually("the stock accounts for the confirmed orders", || async {
        app.stock_of(product).await == (left, 0, left)
    })
    .await;
}

/// Inventory and two payments processes over the NATS at `url`; a burst of 150 checkouts (4
/// at a time, each waiting 500 ms, so that orders keep flowing while NATS is in trouble:
/// they are answered 202) with `trouble` started once 20 were answered.
async fn burst_over_nats_in_trouble(
    url: String,
    trouble: impl std::future::Future<Output = ()>,
) -> (TestApp, String, String, Burst) {
    let mut topology = Topology::inventory_and_two_payments_over_nats();
    topology.nats_url = Some(url);
    let app = TestApp::spawn_split(Engine::Sqlite, topology, std::convert::identity)
        .await
        .unwrap();
    let (product, token) = shop(&app).await;
    let progress = AtomicUsize::new(0);
    let (burst, ()) = tokio::join!(
        app.burst(&token, &product, (150, 4, 500), &progress),
        async {
            answered(&progress, 20).await;
            trouble.await;
        }
    );
    (app, product, token, burst)
}

/// Waits until none of `orders` is pending. NATS clients reconnect with backoff: the wait is
/// long enough for the recovery.
async fn every_order_ends_after_nats_recovers(app: &TestApp, token: &str, orders: &[String]) {
    eventually_within(
        Duration::from_secs(180),
        "every accepted order ends",
        || async {
            let mut ended = true;
            for id in orders {
                let order = app.get(&format!("/api/v1/orders/{id}"), Some(token)).await;
                ended &= order.body["status"] != "pending";
            }
            ended
        },
    )
    .await;
}

/// Waits until `progress` reaches `count`: the burst is under way.
async fn answered(progress: &AtomicUsize, count: usize) {
    eventually(&format!("{count} orders answered"), || async {
        progress.load(Ordering::SeqCst) >= count
    })
    .await;
}

/// A shop with payments in `instances` processes over `transport`: a burst of `orders`
/// (`parallel` at a time, each waiting `wait_ms`) during which the first payments process is
/// killed with SIGKILL once `kill_after` orders were answered.
async fn burst_killing_payments(
    transport: Transport,
    instances: usize,
    (orders, parallel, wait_ms): (usize, usize, u64),
    kill_after: usize,
) -> Option<(TestApp, String, String, Burst)> {
    let mut app = TestApp::spawn_split(
        engine_for(transport),
        payments_in(instances, transport),
        std::convert::identity,
    )
    .await?;
    let (product, token) = shop(&app).await;
    let victim = app.cluster_mut().take_process("payments");
    let progress = AtomicUsize::new(0);
    let (burst, ()) = tokio::join!(
        app.burst(&token, &product, (orders, parallel, wait_ms), &progress),
        async {
            answered(&progress, kill_after).await;
            victim.kill().await;
        }
    );
    Some((app, product, token, burst))
}

async fn one_of_two_payments_instances_killed_mid_burst(transport: Transport) {
    let Some((app, product, token, burst)) =
        burst_killing_payments(transport, 2, (120, 8, 30_000), 30).await
    else {
        return;
    };
    // The survivor took over: nothing was refused, nothing waits for a restart.
    assert_eq!(burst.refused, 0);
    assert_eq!(burst.accepted.len(), 120);
    every_order_confirmed_and_paid_once(&app, &token, &product, &burst.accepted).await;
    app.cluster().healthy("payments", 1).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_killed_payments_instance_leaves_the_burst_to_the_other() {
    one_of_two_payments_instances_killed_mid_burst(Transport::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_killed_payments_instance_leaves_the_burst_to_the_other() {
    one_of_two_payments_instances_killed_mid_burst(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_a_killed_payments_instance_leaves_the_burst_to_the_other() {
    one_of_two_payments_instances_killed_mid_burst(Transport::Grpc).await;
}

async fn the_only_payments_instance_killed_mid_burst(transport: Transport) {
    let Some((mut app, product, token, before)) =
        burst_killing_payments(transport, 1, (40, 8, 1_000), 10).await
    else {
        return;
    };
    // With no payments instance, orders are still taken: they wait.
    let during = app
        .burst(&token, &product, (20, 8, 100), &AtomicUsize::new(0))
        .await;
    assert_eq!(before.refused + during.refused, 0);
    for id in &during.accepted {
        let order = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
        assert_eq!(order.body["status"], "pending", "{}", order.text);
    }
    // A payments process starts again; every order that waited completes.
    app.cluster_mut().start_process("payments").await;
    app.cluster().healthy("payments", 1).await;
    let orders = [before.accepted, during.accepted].concat();
    assert_eq!(orders.len(), 60);
    every_order_confirmed_and_paid_once(&app, &token, &product, &orders).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_orders_wait_for_a_payments_instance_and_complete_when_one_starts() {
    the_only_payments_instance_killed_mid_burst(Transport::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_orders_wait_for_a_payments_instance_and_complete_when_one_starts() {
    the_only_payments_instance_killed_mid_burst(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_orders_wait_for_a_payments_instance_and_complete_when_one_starts() {
    the_only_payments_instance_killed_mid_burst(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_for_ten_seconds_mid_burst_loses_no_accepted_order() {
    let Some(mut nats) = PrivateNats::start().await else {
        return;
    };
    let url = nats.url();
    let (app, product, token, burst) = burst_over_nats_in_trouble(url, async {
        nats.kill().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        nats.run().await.expect("nats-server starts again");
    })
    .await;
    // Orders need only main's modules to be taken; none was refused, none is lost.
    assert_eq!(burst.refused, 0);
    assert_eq!(burst.accepted.len(), 150);
    assert!(
        burst.waited > 0,
        "some orders were taken while NATS was away"
    );
    every_order_ends_after_nats_recovers(&app, &token, &burst.accepted).await;
    every_order_confirmed_and_paid_once(&app, &token, &product, &burst.accepted).await;
    // The same processes carried on: each still stops cleanly.
    app.stop().await;
}

/// Inventory and two payments processes over a three-node NATS cluster that keeps the events
/// stream three times: one node SIGKILLed in the middle of a burst of checkouts and started
/// again a few seconds later. No accepted order is lost or charged twice, and the same
/// processes carry on (each client knows every node and moves to another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_node_killed_mid_burst_loses_no_accepted_order() {
    let Some(mut nats) = PrivateNatsCluster::start(3).await else {
        return;
    };
    // The stream is kept on all three nodes: the harness sees a cluster.
    let (app, product, token, burst) = burst_over_nats_in_trouble(nats.url(), async {
        nats.kill(0).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        nats.run(0).await.expect("the node starts again");
    })
    .await;
    assert_eq!(burst.refused, 0);
    assert_eq!(burst.accepted.len(), 150);
    every_order_ends_after_nats_recovers(&app, &token, &burst.accepted).await;
    every_order_confirmed_and_paid_once(&app, &token, &product, &burst.accepted).await;
    // The stream the processes made is kept on all three nodes.
    let stream = &app.cluster().nats.as_ref().unwrap().config.stream;
    let client = banyan_bus::nats::connect(&nats.url()).await.unwrap();
    let info = async_nats::jetstream::new(client)
        .get_stream(stream)
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.num_replicas, 3, "{info:?}");
    app.stop().await;
}

/// Orders acknowledged to their clients (202) while both payments processes are frozen
/// (SIGSTOP), so that every one of their sagas is under way; then every process of the split
/// SIGKILLed at once, main too. After a restart of every process on the same data, each
/// acknowledged order is confirmed and paid once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_of_a_split_killed_at_once_loses_no_acknowledged_order() {
    let Some(mut app) = TestApp::spawn_split(
        Engine::Sqlite,
        Topology::inventory_cart_and_two_payments_over_grpc(),
        std::convert::identity,
    )
    .await
    else {
        return;
    };
    let (product, token) = shop(&app).await;
    let frozen: Vec<u32> = app
        .cluster()
        .others
        .iter()
        .filter(|(name, _)| name == "payments")
        .map(|(_, process)| process.pid())
        .collect();
    assert_eq!(frozen.len(), 2);
    for pid in &frozen {
        let status = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "SIGSTOP to {pid}");
    }
    let burst = app
        .burst(&token, &product, (60, 12, 0), &AtomicUsize::new(0))
        .await;
    assert_eq!(burst.refused, 0);
    assert_eq!(burst.accepted.len(), 60);
    for id in &burst.accepted {
        let order = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
        assert_eq!(order.body["status"], "pending", "{}", order.text);
    }
    app.cluster_mut().kill_every_process_and_restart().await;
    every_order_confirmed_and_paid_once(&app, &token, &product, &burst.accepted).await;
    app.stop().await;
}

/// Payments placed in a process of its own that is not running: main's `/ready` says so
/// (`degraded`, still 200); orders are taken and wait; once a payments process registers,
/// they confirm within seconds, although the outbox's lease here is the shipped 30 s (the
/// registry's arrival sends what waited at once).
async fn a_module_that_is_down_is_reported_and_its_orders_go_once_it_registers(
    transport: Transport,
) {
    let Some(mut app) =
        TestApp::spawn_split(engine_for(transport), payments_in(0, transport), |f| {
            banyan_app::config::with(f, "bus.relay_lease_ms", 30_000)
        })
        .await
    else {
        return;
    };
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.body["status"], "degraded", "{}", ready.text);
    assert_eq!(ready.body["elsewhere"]["payments"]["status"], "down");
    assert_eq!(ready.body["elsewhere"]["payments"]["healthy_instances"], 0);
    assert!(
        ready.body["reasons"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("payments:")),
        "{}",
        ready.text
    );

    let (product, token) = shop(&app).await;
    let placed = app
        .order(
            &token,
            serde_json::json!({ "lines": [{ "product_id": product, "quantity": 1 }] }),
            None,
        )
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{}", placed.text);
    let id = placed.body["id"].as_str().unwrap().to_owned();
    // Long enough for its events to have been tried and left waiting in the outbox.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let order = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
    assert_eq!(order.body["status"], "pending", "{}", order.text);

    app.cluster_mut().start_process("payments").await;
    app.cluster().healthy("payments", 1).await;
    eventually_within(
        Duration::from_secs(10),
        "the waiting order confirms soon after payments registers",
        || async {
            let order = app.get(&format!("/api/v1/orders/{id}"), Some(&token)).await;
            order.body["status"] == "confirmed"
        },
    )
    .await;
    let ready = app.get("/ready", None).await;
    assert_eq!(ready.body["status"], "ready", "{}", ready.text);
    assert_eq!(ready.body["elsewhere"]["payments"]["status"], "ok");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_module_that_is_down_is_reported_and_its_orders_go_once_it_registers() {
    a_module_that_is_down_is_reported_and_its_orders_go_once_it_registers(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_module_that_is_down_is_reported_and_its_orders_go_once_it_registers() {
    a_module_that_is_down_is_reported_and_its_orders_go_once_it_registers(Transport::Nats).await;
}
