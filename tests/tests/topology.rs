//! Split topologies with real processes: the same `banyan` binary runs the main process (gateway
//! and registry) and the processes that host the modules moved out of it, over HTTP or NATS.
//!
//! Every process of a test runs on 127.0.0.1 with port 0 and shares one SQLite directory (each
//! module has its own file in it). The main process starts first; the others learn where it is
//! from `BANYAN_TOPOLOGY__REGISTRY_URL`.
//!
//! NATS: `BANYAN_TEST_NATS_URL` (default `nats://127.0.0.1:4222`), with JetStream. If it cannot
//! be reached the NATS tests fail, unless `BANYAN_SKIP_NATS=1` is set (never honoured when `CI`
//! is). Each NATS test uses a stream and a subject prefix of its own, deleted at the end.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::{path::PathBuf, time::Duration};

use banyan_e2e::{ADMIN_PASSWORD, ADMIN_USERNAME, Reply, process::BanyanProcess, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: &str = "topology-test-secret-0123456789abcdef";

/// How long a test waits for a condition before it gives up (a hang guard, never a timing).
const PATIENCE: Duration = Duration::from_secs(60);

/// The processes of one test, their shared data directory and configuration file.
struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    main: BanyanProcess,
    client: reqwest::Client,
    admin: String,
}

impl Cluster {
    /// Writes `topology` (TOML) as the configuration of every process, and starts main.
    async fn start(topology: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(dir.path().join("data")).expect("a data directory");
        let config = dir.path().join("topology.toml");
        let text = format!(
            "{topology}\n\n[topology]\nheartbeat_ms = 200\ninstance_ttl_ms = 1000\n\n\
             [topology.http]\nsecret = \"{SECRET}\"\n"
        );
        std::fs::write(&config, text).expect("the configuration file");
        let mut cluster = Self {
            main: BanyanProcess::start_with_args(
                &["--config", config.to_str().unwrap()],
                &environment(dir.path()),
            )
            .await,
            dir,
            config,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            admin: String::new(),
        };
        let login = cluster
            .call(
                Method::POST,
                "/api/v1/users/login",
                None,
                Some(json!({ "username": ADMIN_USERNAME, "password": ADMIN_PASSWORD })),
            )
            .await;
        assert_eq!(login.status, StatusCode::OK, "{}", login.text);
        cluster.admin = login.body["access_token"].as_str().unwrap().to_owned();
        cluster
    }

    /// Starts `banyan serve --process <name>` pointed at the main process.
    async fn process(&self, name: &str) -> BanyanProcess {
        let mut env = environment(self.dir.path());
        env.push((
            "BANYAN_TOPOLOGY__REGISTRY_URL",
            format!("http://{}", self.main.addr),
        ));
        BanyanProcess::start_with_args(
            &["--config", self.config.to_str().unwrap(), "--process", name],
            &env,
        )
        .await
    }

    /// A call to the main process (the gateway).
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.main.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// `GET /api/v1/services` as the admin.
    async fn services(&self) -> Value {
        let reply = self.get("/api/v1/services", &self.admin).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body
    }

    /// Waits until `module` has `count` healthy instances; returns them.
    async fn healthy(&self, module: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let services = self.services().await;
            let instances: Vec<Value> = services["modules"][module]["instances"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|i| i["health"] == "healthy")
                .collect();
            if instances.len() == count {
                return instances;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {count} healthy {module} instance(s): {services}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A product with `stock` on hand, as the admin.
    async fn product(&self, sku: &str, stock: i64) -> String {
        let created = self
            .call(
                Method::POST,
                "/api/v1/products",
                Some(&self.admin),
                Some(
                    json!({ "sku": sku, "name": format!("Product {sku}"), "category": "tea",
                             "price": { "amount_minor": 450, "currency": "EUR" } }),
                ),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let id = created.body["id"].as_str().unwrap().to_owned();
        let stocked = self
            .call(
                Method::PUT,
                &format!("/api/v1/inventory/{id}"),
                Some(&self.admin),
                Some(json!({ "on_hand": stock })),
            )
            .await;
        assert_eq!(stocked.status, StatusCode::OK, "{}", stocked.text);
        id
    }

    /// Registers a customer and logs them in: `(user id, token)`.
    async fn customer(&self, username: &str) -> (String, String) {
        let password = format!("{username}-secret-pw");
        let registered = self
            .call(
                Method::POST,
                "/api/v1/users",
                None,
                Some(
                    json!({ "username": username, "email": format!("{username}@example.test"),
                             "password": password }),
                ),
            )
            .await;
        assert_eq!(
            registered.status,
            StatusCode::CREATED,
            "{}",
            registered.text
        );
        let login = self
            .call(
                Method::POST,
                "/api/v1/users/login",
                None,
                Some(json!({ "username": username, "password": password })),
            )
            .await;
        (
            registered.body["id"].as_str().unwrap().to_owned(),
            login.body["access_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Orders `quantity` of `product` with `method` and waits for the saga's end; the request
    /// carries `request_id` as its `x-request-id`.
    async fn checkout(&self, token: &str, product: &str, method: &str, request_id: &str) -> Value {
        let reply = send(
            self.client
                .post(self.main.url("/api/v1/orders?wait_ms=30000"))
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

    async fn stock_of(&self, product: &str) -> (i64, i64, i64) {
        let reply = self
            .call(
                Method::GET,
                &format!("/api/v1/inventory/{product}"),
                None,
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let n = |k: &str| reply.body[k].as_i64().unwrap();
        (n("on_hand"), n("reserved"), n("available"))
    }
}

fn environment(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "BANYAN_DATABASE__URL",
            format!("sqlite://{}", dir.join("data").display()),
        ),
        ("BANYAN_BUS__RELAY_LEASE_MS", "1000".into()),
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

/// Waits until `check` holds, polling; panics with `what` after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process logged `message` in work carrying `correlation_id`.
fn logged_with(process: &BanyanProcess, message: &str, correlation_id: &str) -> bool {
    process
        .json_lines()
        .iter()
        .any(|l| l["message"] == message && l["span"]["correlation_id"] == correlation_id)
}

// ------------------------------------------------------------------------------ NATS

/// A test's corner of the NATS server: a stream and subject prefix of its own, deleted on drop.
struct TestNats {
    url: String,
    stream: String,
    prefix: String,
}

impl TestNats {
    /// `None` when NATS cannot be reached and the caller allowed skipping.
    async fn start() -> Option<Self> {
        let url = std::env::var("BANYAN_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let probe = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(url.as_str());
        let error = match tokio::time::timeout(Duration::from_secs(10), probe).await {
            Ok(Ok(client)) => {
                drop(client);
                None
            }
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("no connection within 10 s".to_owned()),
        };
        if let Some(error) = error {
            assert!(
                std::env::var_os("CI").is_none(),
                "NATS (BANYAN_TEST_NATS_URL or its default) is unreachable: {error}. CI must run the NATS tests."
            );
            assert!(
                std::env::var("BANYAN_SKIP_NATS").as_deref() == Ok("1"),
                "NATS is unreachable at {url}: {error}. Start it, or set BANYAN_SKIP_NATS=1 to skip its tests (never in CI)."
            );
            println!("SKIPPED: NATS unreachable ({error})");
            return None;
        }
        let unique = uuid::Uuid::new_v4().simple();
        Some(Self {
            url,
            stream: format!("BANYAN_TOPOLOGY_TEST_{unique}"),
            prefix: format!("banyan_topology_test_{unique}"),
        })
    }

    /// The `[topology.nats]` section for it.
    fn section(&self) -> String {
        format!(
            "[topology.nats]\nurl = \"{}\"\nstream = \"{}\"\nsubject_prefix = \"{}\"\n",
            self.url, self.stream, self.prefix
        )
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let (url, stream) = (self.url.clone(), self.stream.clone());
        // Drop cannot await, and runs inside the test's runtime: use a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let connect = async_nats::connect(url.as_str());
                if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(10), connect).await
                {
                    let _ = async_nats::jetstream::new(client)
                        .delete_stream(&stream)
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

// ------------------------------------------------------------------------------ scenarios

/// With payments in a process of its own: a paid checkout through the gateway is confirmed, a
/// declined one cancelled, the payment is read through the gateway, and the correlation id of
/// the request reaches the payments process's work.
async fn checkout_across_processes(cluster: &Cluster, payments: &BanyanProcess, tag: &str) {
    let product = cluster.product(&format!("SPLIT-{tag}"), 10).await;
    let (_, token) = cluster
        .customer(&format!("split-{}", tag.to_lowercase()))
        .await;

    let paid = cluster
        .checkout(&token, &product, "tok_visa", &format!("{tag}-paid"))
        .await;
    assert_eq!(paid["status"], "confirmed", "{paid}");
    let paid_id = paid["id"].as_str().unwrap();
    let payment = send(
        cluster
            .client
            .get(cluster.main.url(&format!("/api/v1/payments/{paid_id}")))
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
        || async { logged_with(payments, "Request handled.", &format!("{tag}-read")) },
    )
    .await;

    let declined = cluster
        .checkout(&token, &product, "tok_declined", &format!("{tag}-declined"))
        .await;
    assert_eq!(declined["status"], "cancelled", "{declined}");
    assert_eq!(declined["cancel_reason"], "payment_declined");
    let declined_id = declined["id"].as_str().unwrap();
    let payment = cluster
        .get(&format!("/api/v1/payments/{declined_id}"), &token)
        .await;
    assert_eq!(payment.status, StatusCode::OK, "{}", payment.text);
    assert_eq!(payment.body["status"], "failed");
    assert_eq!(payment.body["failure_reason"], "payment_declined");
    // The event that carried the checkout to payments kept the request's correlation id.
    eventually(
        "payments logs the failure under the checkout's id",
        || async { logged_with(payments, "Payment failed.", &format!("{tag}-declined")) },
    )
    .await;

    eventually("the stock accounting closes", || async {
        cluster.stock_of(&product).await == (8, 0, 8)
    })
    .await;
    // Someone else's payment is not found, through the gateway as in the monolith.
    let (_, other) = cluster
        .customer(&format!("other-{}", tag.to_lowercase()))
        .await;
    let foreign = cluster
        .get(&format!("/api/v1/payments/{paid_id}"), &other)
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_in_its_own_process_over_http_confirms_and_cancels_checkouts_through_the_gateway()
{
    let cluster = Cluster::start(
        "[topology.modules]\npayments = { process = \"payments\", transport = \"http\" }",
    )
    .await;
    let payments = cluster.process("payments").await;
    let instances = cluster.healthy("payments", 1).await;
    assert_eq!(instances[0]["transport"], "http");
    checkout_across_processes(&cluster, &payments, "HTTP").await;
    // A graceful stop takes the instance out of the registry at once.
    assert!(payments.terminate().await.success());
    cluster.healthy("payments", 0).await;
    assert!(cluster.main.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_in_its_own_process_over_nats_confirms_and_cancels_checkouts_through_the_gateway()
{
    let Some(nats) = TestNats::start().await else {
        return;
    };
    let cluster = Cluster::start(&format!(
        "[topology.modules]\npayments = {{ process = \"payments\", transport = \"nats\" }}\n\n{}",
        nats.section()
    ))
    .await;
    let payments = cluster.process("payments").await;
    let instances = cluster.healthy("payments", 1).await;
    assert_eq!(instances[0]["transport"], "nats");
    checkout_across_processes(&cluster, &payments, "NATS").await;
    assert!(payments.terminate().await.success());
    assert!(cluster.main.terminate().await.success());
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_lists_instances_and_a_killed_one_leaves_rotation() {
    let cluster = Cluster::start(
        "[topology.modules]\npayments = { process = \"payments\", transport = \"http\" }",
    )
    .await;
    let payments = cluster.process("payments").await;
    let instances = cluster.healthy("payments", 1).await;
    let instance = &instances[0];
    assert_eq!(instance["process"], "payments");
    assert_eq!(instance["base_url"], format!("http://{}", payments.addr));
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
        format!("http://{}", cluster.main.addr)
    );

    // A customer's payment read works through the gateway while payments runs...
    let (_, token) = cluster.customer("registry-reader").await;
    let unknown = uuid::Uuid::now_v7();
    let reply = cluster
        .get(&format!("/api/v1/payments/{unknown}"), &token)
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);

    // ...and after a crash the instance goes stale (or is forgotten) and leaves rotation.
    payments.kill().await;
    eventually("the killed instance is no longer healthy", || async {
        let services = cluster.services().await;
        services["modules"]["payments"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["health"] == "stale")
    })
    .await;
    let reply = cluster
        .get(&format!("/api/v1/payments/{unknown}"), &token)
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
    let reply = cluster.get("/api/v1/nowhere", &token).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "not_found");
    assert!(cluster.main.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_between_processes_without_the_shared_secret_are_refused() {
    let cluster = Cluster::start(
        "[topology.modules]\npayments = { process = \"payments\", transport = \"http\" }",
    )
    .await;
    let payments = cluster.process("payments").await;
    cluster.healthy("payments", 1).await;
    let client = &cluster.client;
    let bus_request = |base: String, token: Option<&str>| {
        let mut request = client
            .post(format!("{base}/bus/v1/requests/payments.get_payment.v1"))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request)
    };
    for base in [
        format!("http://{}", payments.addr),
        format!("http://{}", cluster.main.addr),
    ] {
        let reply = bus_request(base.clone(), None).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{base}: {}",
            reply.text
        );
        let reply = bus_request(base.clone(), Some("not-the-secret-at-all-0123456789abcdef")).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{base}: {}",
            reply.text
        );
        // A user's token is not the processes' secret either.
        let reply = bus_request(base.clone(), Some(&cluster.admin)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{base}: {}",
            reply.text
        );
    }
    let events = send(
        client
            .post(format!(
                "http://{}/bus/v1/events/orders.order_placed.v1?module=payments",
                payments.addr
            ))
            .header("content-type", "application/json")
            .body("{}"),
    )
    .await;
    assert_eq!(events.status, StatusCode::UNAUTHORIZED, "{}", events.text);

    // The registry takes registrations with the secret only, and lists for admins (or the
    // secret) only.
    let registration = json!({
        "instance_id": "intruder", "process": "payments", "base_url": "http://127.0.0.1:9",
        "modules": [{ "name": "payments", "transport": "http", "subscriptions": [] }],
    });
    let reply = cluster
        .call(
            Method::POST,
            "/api/v1/services/register",
            None,
            Some(registration.clone()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let reply = cluster
        .call(
            Method::POST,
            "/api/v1/services/register",
            Some(&cluster.admin),
            Some(registration),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let reply = cluster
        .call(Method::GET, "/api/v1/services", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let (_, customer) = cluster.customer("not-an-admin").await;
    let reply = cluster.get("/api/v1/services", &customer).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    let reply = cluster.get("/api/v1/services", SECRET).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        cluster.healthy("payments", 1).await[0]["base_url"],
        format!("http://{}", payments.addr),
        "nothing was registered without the secret"
    );
    assert!(payments.terminate().await.success());
    assert!(cluster.main.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_and_two_payments_processes_over_nats_share_the_work() {
    let Some(nats) = TestNats::start().await else {
        return;
    };
    let cluster = Cluster::start(&format!(
        "[topology.modules]\ninventory = {{ process = \"inventory\", transport = \"nats\" }}\n\
         payments = {{ process = \"payments\", transport = \"nats\" }}\n\n{}",
        nats.section()
    ))
    .await;
    let inventory = cluster.process("inventory").await;
    let first = cluster.process("payments").await;
    let second = cluster.process("payments").await;
    cluster.healthy("inventory", 1).await;
    let instances = cluster.healthy("payments", 2).await;
    let mut urls: Vec<&str> = instances
        .iter()
        .map(|i| i["base_url"].as_str().unwrap())
        .collect();
    urls.sort_unstable();
    let mut expected = vec![
        format!("http://{}", first.addr),
        format!("http://{}", second.addr),
    ];
    expected.sort_unstable();
    assert_eq!(urls, expected);

    // Products and stock go through the gateway to the inventory process; the catalog in main
    // learns the stock from inventory's events over NATS.
    let product = cluster.product("SPLIT-TWO", 20).await;
    eventually("the catalog sees the stock", || async {
        let reply = cluster
            .call(
                Method::GET,
                &format!("/api/v1/products/{product}"),
                None,
                None,
            )
            .await;
        reply.body["in_stock"] == true
    })
    .await;
    let (_, token) = cluster.customer("split-two").await;
    let mut orders = Vec::new();
    for n in 0..4 {
        let order = cluster
            .checkout(&token, &product, "tok_visa", &format!("two-{n}"))
            .await;
        assert_eq!(order["status"], "confirmed", "{order}");
        orders.push(order["id"].as_str().unwrap().to_owned());
    }
    let declined = cluster
        .checkout(&token, &product, "tok_declined", "two-declined")
        .await;
    assert_eq!(declined["status"], "cancelled", "{declined}");
    eventually("the stock accounting closes", || async {
        cluster.stock_of(&product).await == (12, 0, 12)
    })
    .await;
    // Reads are balanced over both payments instances, round robin.
    for (n, order) in orders.iter().enumerate() {
        let reply = send(
            cluster
                .client
                .get(cluster.main.url(&format!("/api/v1/payments/{order}")))
                .bearer_auth(&token)
                .header("x-request-id", format!("two-read-{n}")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.body["status"], "completed");
    }
    eventually("each payments instance answered reads", || async {
        [&first, &second].iter().all(|p| {
            (0..orders.len()).any(|n| logged_with(p, "Request handled.", &format!("two-read-{n}")))
        })
    })
    .await;
    for process in [first, second, inventory] {
        assert!(process.terminate().await.success());
    }
    assert!(cluster.main.terminate().await.success());
    drop(nats);
}
