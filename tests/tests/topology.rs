//! Split topologies with real processes: the same `banyan` binary runs the main process (gateway
//! and registry) and the processes hosting the modules moved out of it, over HTTP or NATS (see
//! `banyan_e2e::cluster`). The shop's own suites run in the ready-made topologies through
//! `on_every_topology!`; this file checks what only a split shows: each of the seven modules
//! moved in turn, the registry, the gateway, the internal listener, balancing and correlation ids.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use banyan_e2e::{
    Engine, TestApp,
    cluster::{Topology, Transport},
    eventually,
    process::BanyanProcess,
    send,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Starts `topology` on SQLite with the test settings; `None` when NATS is skipped.
async fn split(topology: Topology) -> Option<TestApp> {
    TestApp::spawn_split(Engine::Sqlite, topology, |figment| figment).await
}

/// A product with `stock` on hand at 4.50 EUR, created by the admin; returns once the catalog
/// knows it is in stock (from inventory's events, wherever inventory runs).
async fn stocked_product(app: &TestApp, sku: &str, stock: i64) -> String {
    let admin = app.admin_token().await;
    let product = app.product(&admin, sku, "tea", 450).await;
    let stocked = app.stock(&admin, &product, stock).await;
    assert_eq!(stocked.status, StatusCode::OK, "{}", stocked.text);
    eventually("the catalog sees the stock", || async {
        app.get(&format!("/api/v1/products/{product}"), None)
            .await
            .body["in_stock"]
            == true
    })
    .await;
    product
}

/// Orders two of `product` with `method`, waiting for the saga's end; the request carries
/// `request_id` as its `x-request-id`, which becomes the checkout's correlation id.
async fn checkout(
    app: &TestApp,
    token: &str,
    product: &str,
    method: &str,
    request_id: &str,
) -> Value {
    let reply = send(
        app.client
            .post(app.url("/api/v1/orders?wait_ms=30000"))
            .bearer_auth(token)
            .header("x-request-id", request_id)
            .json(
                &json!({ "lines": [{ "product_id": product, "quantity": 2 }],
                           "payment_method": method }),
            ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body
}

/// Whether a process logged `message` (any message when `None`) in work carrying
/// `correlation_id`.
fn logged_with(process: &BanyanProcess, message: Option<&str>, correlation_id: &str) -> bool {
    process.json_lines().iter().any(|l| {
        message.is_none_or(|m| l["message"] == m) && l["span"]["correlation_id"] == correlation_id
    })
}

// ------------------------------------------------------------------ each module moved in turn

/// A checkout through the gateway that needs every module, whichever one has moved: register
/// and log in (users), a product (catalog) with stock (inventory), a cart (cart), an order from
/// it (orders) that is paid (payments) and confirmed by email (notifications); then a declined
/// one. The moved module's process logs its part of the checkout under the request's id.
async fn smoke_checkout(app: &TestApp, moved: &str) {
    let product = stocked_product(app, "SMOKE-1", 10).await;
    let (user, token) = app.customer("smoke").await;
    let added = app
        .post(
            &format!("/api/v1/carts/{user}/items"),
            Some(&token),
            json!({ "product_id": product, "quantity": 3 }),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    let reply = send(
        app.client
            .post(app.url("/api/v1/orders?wait_ms=30000"))
            .bearer_auth(&token)
            .header("x-request-id", "smoke-cart")
            .json(&json!({ "from_cart": true })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["status"], "confirmed", "{}", reply.text);
    let confirmed = reply.body["id"].as_str().unwrap().to_owned();

    let declined = checkout(app, &token, &product, "tok_declined", "smoke-declined").await;
    assert_eq!(declined["status"], "cancelled", "{declined}");
    assert_eq!(declined["cancel_reason"], "payment_declined");

    let payment = app
        .get(&format!("/api/v1/payments/{confirmed}"), Some(&token))
        .await;
    assert_eq!(payment.status, StatusCode::OK, "{}", payment.text);
    assert_eq!(payment.body["status"], "completed");
    assert_eq!(payment.body["amount"]["amount_minor"], 3 * 450);
    eventually("the stock accounting closes", || async {
        app.stock_of(&product).await == (7, 0, 7)
    })
    .await;
    eventually("the cart is cleared", || async {
        let cart = app
            .get(&format!("/api/v1/carts/{user}"), Some(&token))
            .await;
        cart.body["lines"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    eventually("the customer is told of both orders", || async {
        app.notification_kinds(&token, &user).await
            == ["welcome", "order_confirmed", "order_cancelled"]
    })
    .await;
    let overview = app
        .get(&format!("/api/v1/users/{user}/overview"), Some(&token))
        .await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text);
    assert_eq!(
        overview.body["orders"].as_array().unwrap().len(),
        2,
        "{}",
        overview.text
    );

    // Both the main process and the moved module's process worked on the checkout under its
    // correlation id (catalog, cart and users log nothing of their own during a checkout).
    let cluster = app.cluster();
    let process = cluster.process(moved);
    for (name, process) in [("main", &cluster.main), (moved, process)] {
        if matches!(name, "catalog" | "cart" | "users") {
            continue;
        }
        eventually(
            &format!("{name} logs work of the declined checkout"),
            || async { logged_with(process, None, "smoke-declined") },
        )
        .await;
    }
}

/// One test per module and transport: `over_http::payments`, `over_grpc::cart`, `over_nats::users`, ...
macro_rules! each_module_moved {
    ($($module:ident),*) => {
        mod over_http {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $module() {
                    super::moved_alone(stringify!($module), super::Transport::Http).await;
                }
            )*
        }
        mod over_grpc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $module() {
                    super::moved_alone(stringify!($module), super::Transport::Grpc).await;
                }
            )*
        }
        mod over_nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $module() {
                    super::moved_alone(stringify!($module), super::Transport::Nats).await;
                }
            )*
        }
    };
}

each_module_moved!(
    users,
    catalog,
    inventory,
    cart,
    orders,
    payments,
    notifications
);

async fn moved_alone(module: &str, transport: Transport) {
    let Some(app) = split(Topology::one(module, transport)).await else {
        return;
    };
    let instances = app.cluster().healthy(module, 1).await;
    assert_eq!(instances[0]["transport"], transport.name());
    smoke_checkout(&app, module).await;
    app.stop().await;
}

// ------------------------------------------------------------------------------ scenarios

/// With payments in a process of its own: a paid checkout through the gateway is confirmed, a
/// declined one cancelled, the payment is read through the gateway, and the correlation id of
/// the request reaches the payments process's work.
async fn checkout_across_processes(app: &TestApp, tag: &str) {
    let payments = app.cluster().process("payments");
    let product = stocked_product(app, &format!("SPLIT-{tag}"), 10).await;
    let (_, token) = app.customer(&format!("split-{}", tag.to_lowercase())).await;

    let paid = checkout(app, &token, &product, "tok_visa", &format!("{tag}-paid")).await;
    assert_eq!(paid["status"], "confirmed", "{paid}");
    let paid_id = paid["id"].as_str().unwrap();
    let payment = send(
        app.client
            .get(app.url(&format!("/api/v1/payments/{paid_id}")))
            .bearer_auth(&token)
            .header("x-request-id", format!("{tag}-read")),
    )
    .await;
    assert_eq!(payment.status, StatusCode::OK, "{}", payment.text);
    assert_eq!(payment.body["status"], "completed", "{}", payment.text);
    assert_eq!(payment.body["amount"]["amount_minor"], 900);
    assert_eq!(
        payment.headers["x-request-id"].to_str().unwrap(),
        format!("{tag}-read")
    );
    eventually(
        "the proxied read is logged by payments with its id",
        || async { logged_with(payments, Some("Request handled."), &format!("{tag}-read")) },
    )
    .await;

    let declined = checkout(
        app,
        &token,
        &product,
        "tok_declined",
        &format!("{tag}-declined"),
    )
    .await;
    assert_eq!(declined["status"], "cancelled", "{declined}");
    assert_eq!(declined["cancel_reason"], "payment_declined");
    let declined_id = declined["id"].as_str().unwrap();
    let payment = app
        .get(&format!("/api/v1/payments/{declined_id}"), Some(&token))
        .await;
    assert_eq!(payment.status, StatusCode::OK, "{}", payment.text);
    assert_eq!(payment.body["status"], "failed");
    assert_eq!(payment.body["failure_reason"], "payment_declined");
    // The event that carried the checkout to payments kept the request's correlation id.
    eventually(
        "payments logs the failure under the checkout's id",
        || async {
            logged_with(
                payments,
                Some("Payment failed."),
                &format!("{tag}-declined"),
            )
        },
    )
    .await;

    eventually("the stock accounting closes", || async {
        app.stock_of(&product).await == (8, 0, 8)
    })
    .await;
    // Someone else's payment is not found, through the gateway as in the monolith.
    let (_, other) = app.customer(&format!("other-{}", tag.to_lowercase())).await;
    let foreign = app
        .get(&format!("/api/v1/payments/{paid_id}"), Some(&other))
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_in_its_own_process_over_http_confirms_and_cancels_checkouts_through_the_gateway()
{
    let mut app = split(Topology::one("payments", Transport::Http))
        .await
        .unwrap();
    checkout_across_processes(&app, "HTTP").await;
    // A graceful stop takes the instance out of the registry at once.
    let payments = app.cluster_mut().take_process("payments");
    assert!(payments.terminate().await.success());
    app.cluster().healthy("payments", 0).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_in_its_own_process_over_nats_confirms_and_cancels_checkouts_through_the_gateway()
{
    let Some(app) = split(Topology::one("payments", Transport::Nats)).await else {
        return;
    };
    checkout_across_processes(&app, "NATS").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_instances_and_a_killed_one_leaves_rotation() {
    let mut app = split(Topology::one("payments", Transport::Http))
        .await
        .unwrap();
    let cluster = app.cluster();
    let payments_addr = cluster.process("payments").addr;
    let instances = cluster.healthy("payments", 1).await;
    let instance = &instances[0];
    assert_eq!(instance["process"], "payments");
    assert_eq!(instance["base_url"], format!("http://{payments_addr}"));
    assert_eq!(
        instance["bus_url"],
        cluster.process("payments").internal_url(""),
        "the bus calls the internal listener"
    );
    assert!(instance["last_heartbeat_ms"].as_i64().unwrap() > 0);
    let services = cluster.services().await;
    let listed = &services["modules"]["payments"];
    assert_eq!(listed["process"], "payments");
    assert_eq!(listed["transport"], "http");
    let subscriptions = listed["subscriptions"].as_array().unwrap();
    assert!(
        subscriptions.contains(&json!("orders.order_placed.v1")),
        "{listed}"
    );
    // Main's own modules are listed too, in process.
    assert_eq!(services["modules"]["orders"]["transport"], "in_process");
    assert_eq!(
        services["modules"]["orders"]["instances"][0]["base_url"],
        format!("http://{}", app.addr)
    );

    // A customer's payment read works through the gateway while payments runs...
    let (_, token) = app.customer("registry-reader").await;
    let unknown = uuid::Uuid::now_v7();
    let reply = app
        .get(&format!("/api/v1/payments/{unknown}"), Some(&token))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);

    // ...and after a crash the instance goes stale (or is forgotten) and leaves rotation.
    app.cluster_mut().take_process("payments").kill().await;
    eventually("the killed instance is no longer healthy", || async {
        let services = app.cluster().services().await;
        services["modules"]["payments"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["health"] == "stale")
    })
    .await;
    let reply = app
        .get(&format!("/api/v1/payments/{unknown}"), Some(&token))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error_code(), "unavailable");
    assert!(reply.headers.contains_key("retry-after"));
    // The monolith's own answers are untouched: an unknown route is still a JSON 404.
    let reply = app.get("/api/v1/nowhere", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "not_found");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_and_the_registry_answer_on_the_internal_listener_only_and_to_processes_only() {
    let app = split(Topology::one("payments", Transport::Http))
        .await
        .unwrap();
    let payments = app.cluster().process("payments");
    let main = &app.cluster().main;
    let admin = app.admin_token().await;
    let as_main = app.cluster().credential("main");
    let client = &app.client;
    let post = |url: String, token: Option<&str>, body: &str| {
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request)
    };
    let registration = json!({
        "instance_id": "intruder", "process": "payments", "base_url": "http://127.0.0.1:9",
        "bus_url": "http://127.0.0.1:9",
        "modules": [{ "name": "payments", "transport": "http", "subscriptions": [] }],
    })
    .to_string();
    let internal_paths = [
        ("/bus/v1/requests/payments.get_payment.v1", "{}"),
        (
            "/bus/v1/events/orders.order_placed.v1?module=payments",
            "{}",
        ),
        ("/api/v1/services/register", registration.as_str()),
    ];
    // The public port of every process: not there at all, whatever the caller carries (a
    // process's token is no user's token: the edge refuses it with 401 before routing).
    for process in [main, payments] {
        for (path, body) in internal_paths {
            for (token, status) in [
                (None, StatusCode::NOT_FOUND),
                (Some(admin.as_str()), StatusCode::NOT_FOUND),
                (Some(as_main.as_str()), StatusCode::UNAUTHORIZED),
            ] {
                let reply = post(process.url(path), token, body).await;
                assert_eq!(
                    reply.status, status,
                    "{} public {path} {token:?}: {}",
                    process.name, reply.text
                );
            }
        }
    }
    // The internal listeners: no token, a made-up one, a user's token are refused.
    for process in [main, payments] {
        for (path, body) in internal_paths {
            if path.contains("services") && process.name != "main" {
                continue;
            }
            for token in [
                None,
                Some("not-the-secret-at-all-0123456789abcdef"),
                Some(admin.as_str()),
            ] {
                let reply = post(process.internal_url(path), token, body).await;
                assert_eq!(
                    reply.status,
                    StatusCode::UNAUTHORIZED,
                    "{} internal {path} {token:?}: {}",
                    process.name,
                    reply.text
                );
            }
        }
    }
    // With a process's token they are served (an empty envelope is refused as malformed).
    let reply = post(
        payments.internal_url("/bus/v1/requests/payments.get_payment.v1"),
        Some(&as_main),
        "{}",
    )
    .await;
    assert!(
        !matches!(
            reply.status,
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED
        ),
        "{}: {}",
        reply.status,
        reply.text
    );
    // The listing: on the public port for admins only (a process's token is no user's).
    let reply = app.get("/api/v1/services", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let (_, customer) = app.customer("not-an-admin").await;
    let reply = app.get("/api/v1/services", Some(&customer)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    let reply = app.get("/api/v1/services", Some(&as_main)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let reply = app.get("/api/v1/services", Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let healthy = app.cluster().healthy("payments", 1).await;
    assert_eq!(
        healthy[0]["base_url"],
        payments.url(""),
        "nothing was registered by an unknown caller"
    );
    assert_eq!(healthy[0]["bus_url"], payments.internal_url(""));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_two_payments_processes_over_nats_share_the_work() {
    let Some(app) = split(Topology::inventory_and_two_payments_over_nats()).await else {
        return;
    };
    let cluster = app.cluster();
    let payments: Vec<&BanyanProcess> = cluster
        .others
        .iter()
        .filter(|(name, _)| name == "payments")
        .map(|(_, p)| p)
        .collect();
    let mut urls: Vec<String> = cluster
        .healthy("payments", 2)
        .await
        .iter()
        .map(|i| i["base_url"].as_str().unwrap().to_owned())
        .collect();
    urls.sort_unstable();
    let mut expected: Vec<String> = payments
        .iter()
        .map(|p| format!("http://{}", p.addr))
        .collect();
    expected.sort_unstable();
    assert_eq!(urls, expected);

    // Products and stock go through the gateway to the inventory process; the catalog in main
    // learns the stock from inventory's events over NATS (`stocked_product` waits for it).
    let product = stocked_product(&app, "SPLIT-TWO", 20).await;
    let (_, token) = app.customer("split-two").await;
    let mut orders = Vec::new();
    for n in 0..4 {
        let order = checkout(&app, &token, &product, "tok_visa", &format!("two-{n}")).await;
        assert_eq!(order["status"], "confirmed", "{order}");
        orders.push(order["id"].as_str().unwrap().to_owned());
    }
    let declined = checkout(&app, &token, &product, "tok_declined", "two-declined").await;
    assert_eq!(declined["status"], "cancelled", "{declined}");
    eventually("the stock accounting closes", || async {
        app.stock_of(&product).await == (12, 0, 12)
    })
    .await;
    // Reads are balanced over both payments instances, round robin.
    for (n, order) in orders.iter().enumerate() {
        let reply = send(
            app.client
                .get(app.url(&format!("/api/v1/payments/{order}")))
                .bearer_auth(&token)
                .header("x-request-id", format!("two-read-{n}")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.body["status"], "completed");
    }
    eventually("each payments instance answered reads", || async {
        payments.iter().all(|p| {
            (0..orders.len())
                .any(|n| logged_with(p, Some("Request handled."), &format!("two-read-{n}")))
        })
    })
    .await;
    app.stop().await;
}

// ------------------------------------------------------------------------------ bursts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_payments_instances_on_postgres_charge_every_order_of_a_burst_once() {
    let Some(app) = TestApp::spawn_split(
        Engine::Postgres,
        Topology::inventory_and_two_payments_over_nats(),
        |figment| figment,
    )
    .await
    else {
        return;
    };
    let product = stocked_product(&app, "BURST-1", 1_000).await;
    let (_, token) = app.customer("burst").await;
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let orders = app
        .burst(&token, &product, (120, 16, 30_000), &progress)
        .await;
    assert_eq!(orders.refused, 0);
    for order in &orders.accepted {
        let order = app.terminal_order(&token, order).await;
        assert_eq!(order["status"], "confirmed", "{order}");
    }
    eventually("the stock accounting closes", || async {
        app.stock_of(&product).await == (880, 0, 880)
    })
    .await;
    app.stop().await;
}

// ------------------------------------------------------------------------------ bad wire

/// Bad messages on both wires: pushed to notifications' HTTP event endpoint (as main, which hosts users)
/// and published on payments' JetStream subjects. Each is refused with a WARN line and kept in
/// the receiving module's dead letters; both processes carry on and a checkout still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_on_the_wire_are_dead_lettered_and_the_processes_carry_on() {
    let topology = Topology {
        placements: vec![
            ("payments".into(), "payments".into(), Transport::Nats),
            (
                "notifications".into(),
                "notifications".into(),
                Transport::Http,
            ),
        ],
        processes: vec!["payments".into(), "notifications".into()],
        nats_url: None,
        tls: false,
        process_env: Vec::new(),
    };
    let Some(app) = split(topology).await else {
        return;
    };
    let admin = app.admin_token().await;
    let cluster = app.cluster();

    // HTTP: invalid JSON, an unknown subject and an unknown version, each with a good envelope.
    let notifications = cluster.process("notifications");
    for (subject, body) in [
        ("users.user_registered.v1", "{not json"),
        ("users.user_teleported.v1", "{}"),
        ("users.user_registered.v9", "{}"),
    ] {
        let envelope = banyan_bus::Context::root().envelope(subject);
        let mut headers = banyan_bus::http::envelope_headers(&envelope).unwrap();
        headers.insert(
            banyan_bus::http::AGGREGATE_ID,
            uuid::Uuid::now_v7().to_string().parse().unwrap(),
        );
        let reply = send(
            app.client
                .post(
                    notifications
                        .internal_url(&format!("/bus/v1/events/{subject}?module=notifications")),
                )
                .bearer_auth(cluster.credential("main"))
                .headers(headers)
                .body(body),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{subject}: {}", reply.text);
        assert_eq!(reply.body["status"], "dead_lettered", "{subject}");
    }

    // NATS: invalid JSON, an unknown version, and a message without any envelope headers.
    let nats = &cluster.nats.as_ref().unwrap().config;
    let client = banyan_bus::nats::connect(&nats.url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    for (subject, body, with_headers) in [
        ("orders.order_placed.v1", "{not json", true),
        ("orders.order_placed.v9", "{}", true),
        ("orders.order_placed.v1", "{}", false),
    ] {
        let wire_subject = nats.event_subject(subject);
        let published = if with_headers {
            let envelope = banyan_bus::Context::root().envelope(subject);
            let headers = banyan_bus::nats::envelope_headers(&envelope).unwrap();
            jetstream
                .publish_with_headers(wire_subject, headers, body.into())
                .await
        } else {
            jetstream.publish(wire_subject, body.into()).await
        };
        published.unwrap().await.expect("JetStream stored it");
    }

    for (process, module) in [
        (notifications, "notifications"),
        (cluster.process("payments"), "payments"),
    ] {
        let count = 3;
        eventually(
            &format!("{module} dead-letters every bad message"),
            || async {
                let letters = send(
                    app.client
                        .get(process.url(&format!("/api/v1/admin/dead-letters?module={module}")))
                        .bearer_auth(&admin),
                )
                .await;
                letters.body["items"].as_array().map_or(0, Vec::len) == count
            },
        )
        .await;
        // One WARN (a bad envelope or subject) or ERROR (a body that does not decode) each.
        let logged = process
            .json_lines()
            .into_iter()
            .filter(|l| {
                matches!(l["level"].as_str(), Some("WARN" | "ERROR"))
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.ends_with("dead-lettering it."))
            })
            .count();
        assert_eq!(logged, count, "{module} logs each bad message once");
    }
    // Both processes carry on: a checkout through them still completes.
    let product = stocked_product(&app, "AFTER-BAD", 5).await;
    let (user, token) = app.customer("after-bad").await;
    let order = checkout(&app, &token, &product, "tok_visa", "after-bad").await;
    assert_eq!(order["status"], "confirmed", "{order}");
    eventually("the confirmation is sent", || async {
        app.notification_kinds(&token, &user).await == ["welcome", "order_confirmed"]
    })
    .await;
    app.stop().await;
}

/// One `GET` of `target` exactly as written (an HTTP client would resolve its dot segments
/// first): the status and the body.
async fn raw_get(addr: std::net::SocketAddr, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_never_forwards_a_path_that_resolves_outside_the_module() {
    let app = split(Topology::one("payments", Transport::Http))
        .await
        .unwrap();
    for target in [
        "/api/v1/payments/../../../ready",
        "/api/v1/payments/%2e%2e/%2e%2e/%2e%2e/ready",
        "/api/v1/payments/..%2f..%2f..%2fready",
        "/api/v1/payments/%2E%2E/%2E%2E/%2E%2E/bus/v1/requests/payments.get_payment.v1",
        "/api/v1/payments/x/%2f..%2fhealth",
    ] {
        let (status, answer) = raw_get(app.addr, target).await;
        assert_eq!(status, 400, "{target}: {answer}");
        assert!(answer.contains("\"bad_request\""), "{target}: {answer}");
    }
    // The module's own routes still go through.
    let (status, answer) = raw_get(app.addr, "/api/v1/payments/not-a-uuid").await;
    assert!(status == 400 || status == 401, "{answer}");
    assert!(!answer.contains("dot segments"), "{answer}");
    app.stop().await;
}
