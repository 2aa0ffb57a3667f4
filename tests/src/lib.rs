//! The end-to-end harness: a real Banyan server on a free port, a fresh database per test
//! (a SQLite directory or a PostgreSQL database of its own), and typed helpers to call it.
//!
//! The suites in `tests/tests/` talk to the server only over HTTP, so they run unchanged in
//! every topology: [`on_every_topology!`] runs each scenario with the whole shop in the test's
//! process (on SQLite and on PostgreSQL) and again as a cluster of real `banyan` processes
//! (see [`cluster`]). A few suites also call the bus the in-process server exposes.
//!
//! - `TEST_LOG=1` shows the server's logs.
//! - PostgreSQL comes from `BANYAN_TEST_POSTGRES_URL` (default: the local server). If it
//!   cannot be reached the test fails, unless `BANYAN_SKIP_POSTGRES=1` is set outside CI.
//! - Redis likewise, from `BANYAN_TEST_REDIS_URL`, skipped with `BANYAN_SKIP_REDIS=1`.

pub mod browser;
pub mod cluster;
pub mod postgres;
pub mod process;

use std::{net::SocketAddr, time::Duration};

use cluster::{Cluster, Topology};

use banyan_app::{Server, config};
use banyan_db::sqlx::{self, Executor};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

pub use banyan_app;

pub const ADMIN_USERNAME: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
/// The JWT key of every test server (the shipped configuration has none).
pub const TEST_JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Where a test's data lives; removed when the test ends.
#[derive(Debug)]
pub enum Storage {
    Sqlite(tempfile::TempDir),
    Postgres(PgDatabase),
}

impl Storage {
    /// A fresh, empty place for one test's data; `None` when PostgreSQL is skipped.
    pub async fn fresh(engine: Engine) -> Option<Self> {
        match engine {
            Engine::Sqlite => Some(Storage::Sqlite(
                tempfile::tempdir().expect("a temporary directory"),
            )),
            Engine::Postgres => PgDatabase::create().await.map(Storage::Postgres),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Storage::Sqlite(dir) => format!("sqlite://{}", dir.path().display()),
            Storage::Postgres(db) => db.url.clone(),
        }
    }
}

/// A PostgreSQL database made for one test and dropped after it.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

/// The Redis the read-model tests announce on (`BANYAN_TEST_REDIS_URL`, else the local
/// server), once it answers. If it does not, the test fails, unless `BANYAN_SKIP_REDIS=1` is
/// set outside CI (then `None`: skip).
pub async fn redis_url() -> Option<String> {
    let url =
        std::env::var("BANYAN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let parsed = reqwest::Url::parse(&url).expect("a valid Redis URL");
    let addr = format!(
        "{}:{}",
        parsed.host_str().unwrap_or("127.0.0.1"),
        parsed.port().unwrap_or(6379)
    );
    match tokio::net::TcpStream::connect(&addr).await {
        Ok(_) => Some(url),
        Err(error) => unreachable("Redis", &url, &error, "BANYAN_SKIP_REDIS"),
    }
}

/// The skip policy of a service the tests need at `url`: `None` (skip) when `skip_var` is `1`
/// outside CI; otherwise a panic that says what is missing.
fn unreachable<T>(
    service: &str,
    url: &str,
    error: &dyn std::fmt::Display,
    skip_var: &str,
) -> Option<T> {
    let skip = std::env::var(skip_var).is_ok_and(|v| v == "1");
    if std::env::var_os("CI").is_none() && skip {
        eprintln!("SKIPPED: {service} unreachable at {url}: {error}");
        return None;
    }
    panic!(
        "{service} is unreachable at {url}: {error}. Start it, or set {skip_var}=1 to skip its \
         tests (never in CI)."
    );
}

pub fn postgres_admin_url() -> String {
    std::env::var("BANYAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl PgDatabase {
    pub async fn create() -> Option<Self> {
        sqlx::any::install_default_drivers();
        let admin_url = postgres_admin_url();
        let admin = match sqlx::AnyPool::connect(&admin_url).await {
            Ok(pool) => pool,
            Err(error) => {
                return unreachable("PostgreSQL", &admin_url, &error, "BANYAN_SKIP_POSTGRES");
            }
        };
        let name = format!("banyan_test_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create a test database");
        admin.close().await;
        let mut url = reqwest::Url::parse(&admin_url).expect("a valid PostgreSQL URL");
        url.set_path(&name);
        Some(Self {
            name,
            url: url.to_string(),
            admin_url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        banyan_db::testing::drop_database(&self.admin_url, &self.name);
    }
}

/// The settings every test server starts from: the shipped defaults, a bootstrap admin, and a
/// relay quick enough that recovery paths finish in a test's time.
pub fn test_figment(database_url: &str) -> figment::Figment {
    let mut figment = config::layers(&[]).expect("the default layers");
    figment = config::with(figment, "database.url", database_url);
    figment = config::with(figment, "auth.jwt_secret", TEST_JWT_SECRET);
    figment = config::with(figment, "database.max_connections", 4);
    figment = config::with(figment, "bus.relay_interval_ms", 50);
    figment = config::with(figment, "bus.relay_lease_ms", 2_000);
    figment = config::with(figment, "bus.backoff_base_ms", 5);
    figment = config::with(figment, "bus.backoff_max_ms", 50);
    // Tests run side by side: each process's metrics on a free port, found in its log.
    figment = config::with(figment, "metrics.addr", "127.0.0.1:0");
    config::with(
        figment,
        "modules.users.bootstrap_admin",
        json!({ "username": ADMIN_USERNAME, "email": "admin@example.test", "password": ADMIN_PASSWORD }),
    )
}

/// A running Banyan (a server in this process, or a cluster of processes) and a client for
/// it. `addr` is where clients reach it: the server, or the cluster's main process.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub engine: Engine,
    pub client: reqwest::Client,
    backend: Backend,
    pub storage: Storage,
}

#[derive(Debug)]
enum Backend {
    InProcess {
        bus: banyan_bus::Bus,
        metrics_url: String,
        shutdown: oneshot::Sender<()>,
        server: JoinHandle<anyhow::Result<()>>,
    },
    Cluster(Box<Cluster>),
}

/// An HTTP answer: status, headers and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    /// Starts a server on a fresh database; `None` when PostgreSQL is skipped.
    pub async fn spawn(engine: Engine) -> Option<Self> {
        Self::spawn_with(engine, |f| f).await
    }

    /// Starts a server with settings adjusted by `adjust`.
    pub async fn spawn_with(
        engine: Engine,
        adjust: impl FnOnce(figment::Figment) -> figment::Figment,
    ) -> Option<Self> {
        let storage = Storage::fresh(engine).await?;
        let figment = adjust(test_figment(&storage.url()));
        let settings = config::load(&figment).expect("test settings load");
        if std::env::var_os("TEST_LOG").is_some() {
            banyan_app::telemetry::init(&settings.log, &settings.traces, "main", "info");
        }
        let server = Server::build(settings, figment)
            .await
            .expect("the server builds");
        let bus = server.bus().clone();
        let metrics = server
            .metrics_addr()
            .expect("the test settings serve metrics");
        let metrics_url = format!("http://{metrics}/metrics");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(server.run(listener, async {
            let _ = stop.await;
        }));
        Some(Self {
            addr,
            engine,
            client: client(),
            backend: Backend::InProcess {
                bus,
                metrics_url,
                shutdown,
                server,
            },
            storage,
        })
    }

    /// Starts `topology` as real `banyan` processes on a fresh database, with the test
    /// settings adjusted by `adjust`; `None` when PostgreSQL or NATS is skipped.
    pub async fn spawn_split(
        engine: Engine,
        topology: Topology,
        adjust: impl FnOnce(figment::Figment) -> figment::Figment,
    ) -> Option<Self> {
        let storage = Storage::fresh(engine).await?;
        let figment = adjust(test_figment(&storage.url()));
        let cluster = Cluster::start(figment, topology).await?;
        Some(Self {
            addr: cluster.main.addr,
            engine,
            client: match &cluster.certificates {
                Some(certificates) => certificates.client(),
                None => client(),
            },
            backend: Backend::Cluster(Box::new(cluster)),
            storage,
        })
    }

    /// The bus of the in-process server, for suites that call modules directly.
    pub fn bus(&self) -> &banyan_bus::Bus {
        match &self.backend {
            Backend::InProcess { bus, .. } => bus,
            Backend::Cluster(_) => panic!("a split cluster has no bus in the test's process"),
        }
    }

    /// The processes of a split topology.
    pub fn cluster(&self) -> &Cluster {
        match &self.backend {
            Backend::Cluster(cluster) => cluster,
            Backend::InProcess { .. } => panic!("the shop runs in the test's process"),
        }
    }

    /// The public URL of `path` on every process hosting `module` (the test's own server
    /// when the shop runs in one process).
    pub fn urls_of(&self, module: &str, path: &str) -> Vec<String> {
        match &self.backend {
            Backend::InProcess { .. } => vec![self.url(path)],
            Backend::Cluster(cluster) => {
                let elsewhere: Vec<String> = cluster
                    .others
                    .iter()
                    .filter(|(process, _)| cluster.topology.hosts(process, module))
                    .map(|(_, process)| process.url(path))
                    .collect();
                if elsewhere.is_empty() {
                    vec![self.url(path)]
                } else {
                    elsewhere
                }
            }
        }
    }

    /// Whether the shop runs as several processes.
    pub fn is_split(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// How a call from `process` reaches `module`, as the bus's metrics label it: `in_process`
    /// when `process` hosts it, the module's transport when it is moved elsewhere; `None` when
    /// a moved process calls a module of main's (by whichever transport it has).
    pub fn placement(&self, process: &str, module: &str) -> Option<&'static str> {
        let Backend::Cluster(cluster) = &self.backend else {
            return Some("in_process");
        };
        let topology = &cluster.topology;
        let placed = topology.placements.iter().find(|(m, _, _)| m == module);
        match placed {
            Some(_) if topology.hosts(process, module) => Some("in_process"),
            Some((_, _, transport)) => Some(transport.name()),
            None if process == "main" => Some("in_process"),
            None => None,
        }
    }

    /// Every process's `/metrics` URL, as `(process name, URL)`: main's first.
    pub fn metrics_urls(&self) -> Vec<(String, String)> {
        match &self.backend {
            Backend::InProcess { metrics_url, .. } => vec![("main".into(), metrics_url.clone())],
            Backend::Cluster(cluster) => {
                std::iter::once(("main".into(), cluster.main.metrics_url()))
                    .chain(
                        (cluster.others.iter())
                            .map(|(name, process)| (name.clone(), process.metrics_url())),
                    )
                    .collect()
            }
        }
    }

    pub fn cluster_mut(&mut self) -> &mut Cluster {
        match &mut self.backend {
            Backend::Cluster(cluster) => cluster,
            Backend::InProcess { .. } => panic!("the shop runs in the test's process"),
        }
    }

    /// Stops the server, or every process of the cluster, gracefully and waits for it.
    pub async fn stop(self) {
        match self.backend {
            Backend::InProcess {
                shutdown, server, ..
            } => {
                let _ = shutdown.send(());
                server
                    .await
                    .expect("the server task ends")
                    .expect("the server stops cleanly");
            }
            Backend::Cluster(cluster) => cluster.stop().await,
        }
    }

    /// Sends raw bytes to the app (over TLS if it has TLS) and reads the whole answer (the
    /// request must say `connection: close`).
    pub async fn raw(&self, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("a connection");
        let mut answer = Vec::new();
        let certificates = match &self.backend {
            Backend::Cluster(cluster) => cluster.certificates.as_ref(),
            Backend::InProcess { .. } => None,
        };
        match certificates {
            Some(certificates) => {
                let config = banyan_app::tls::client_config(&certificates.ca).expect("a client");
                let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
                let mut stream = connector
                    .connect(name, stream)
                    .await
                    .expect("a TLS handshake");
                stream.write_all(request).await.expect("the request sent");
                // A server may close without close_notify once it answered.
                let _ = stream.read_to_end(&mut answer).await;
            }
            None => {
                let mut stream = stream;
                stream.write_all(request).await.expect("the request sent");
                stream
                    .read_to_end(&mut answer)
                    .await
                    .expect("the answer read");
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        self.url_via(0, path)
    }

    /// The URL of `path` on main number `main` of a cluster with several (0 is the first, and
    /// the server in process).
    pub fn url_via(&self, main: usize, path: &str) -> String {
        match &self.backend {
            Backend::Cluster(cluster) => cluster.main_at(main).url(path),
            Backend::InProcess { .. } => format!("http://{}{}", self.addr, path),
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.call_via(0, method, path, token, body).await
    }

    /// [`TestApp::call`] through main number `main`.
    pub async fn call_via(
        &self,
        main: usize,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url_via(main, path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Logs in; panics on failure.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let reply = self
            .post(
                "/api/v1/users/login",
                None,
                json!({ "username": username, "password": password }),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "login of {username}: {}",
            reply.text
        );
        reply.body["access_token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_USERNAME, ADMIN_PASSWORD).await
    }

    /// Registers a customer and logs them in: `(user id, token)`.
    pub async fn customer(&self, username: &str) -> (String, String) {
        let password = format!("{username}-secret-pw");
        let reply = self
            .post(
                "/api/v1/users",
                None,
                json!({ "username": username, "email": format!("{username}@example.test"), "password": password }),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "register {username}: {}",
            reply.text
        );
        let id = reply.body["id"].as_str().expect("an id").to_owned();
        (id, self.login(username, &password).await)
    }

    /// Creates a product as admin; returns its id.
    pub async fn product(
        &self,
        admin: &str,
        sku: &str,
        category: &str,
        price_minor: i64,
    ) -> String {
        let reply = self
            .post(
                "/api/v1/products",
                Some(admin),
                json!({
                    "sku": sku,
                    "name": format!("Product {sku}"),
                    "category": category,
                    "price": { "amount_minor": price_minor, "currency": "EUR" },
                }),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create {sku}: {}",
            reply.text
        );
        reply.body["id"].as_str().expect("an id").to_owned()
    }

    /// Sets a product's stock as admin.
    pub async fn stock(&self, admin: &str, product: &str, on_hand: i64) -> Reply {
        self.put(
            &format!("/api/v1/inventory/{product}"),
            Some(admin),
            json!({ "on_hand": on_hand }),
        )
        .await
    }
}

impl TestApp {
    /// Places an order; with `wait_ms` the answer comes when the saga ends (or at the deadline).
    pub async fn order(&self, token: &str, body: Value, wait_ms: Option<u64>) -> Reply {
        self.order_via(0, token, body, wait_ms).await
    }

    /// [`TestApp::order`] through main number `main`.
    pub async fn order_via(
        &self,
        main: usize,
        token: &str,
        body: Value,
        wait_ms: Option<u64>,
    ) -> Reply {
        let path = match wait_ms {
            Some(ms) => format!("/api/v1/orders?wait_ms={ms}"),
            None => "/api/v1/orders".to_owned(),
        };
        self.call_via(main, Method::POST, &path, Some(token), Some(body))
            .await
    }

    /// Orders `quantity` of one product and waits for the saga's outcome.
    pub async fn checkout(&self, token: &str, product: &str, quantity: i64, method: &str) -> Value {
        let reply = self
            .order(
                token,
                json!({ "lines": [{ "product_id": product, "quantity": quantity }], "payment_method": method }),
                Some(30_000),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "checkout: {}",
            reply.text
        );
        reply.body
    }

    /// Places `count` one-item orders of `product`, `parallel` at a time, each waiting up to
    /// `wait_ms` for its saga; counts each answer in `progress` as it comes. Accepted orders
    /// (201 or 202) are returned; a refusal must be a 5xx with a JSON error body (a
    /// dependency is down), never a 4xx.
    pub async fn burst(
        &self,
        token: &str,
        product: &str,
        shape: (usize, usize, u64),
        progress: &std::sync::atomic::AtomicUsize,
    ) -> Burst {
        self.burst_via(0, token, product, shape, progress).await
    }

    /// [`TestApp::burst`] through main number `main`.
    pub async fn burst_via(
        &self,
        main: usize,
        token: &str,
        product: &str,
        (count, parallel, wait_ms): (usize, usize, u64),
        progress: &std::sync::atomic::AtomicUsize,
    ) -> Burst {
        use futures::StreamExt;
        let answers: Vec<Reply> = futures::stream::iter(0..count)
            .map(|_| async move {
                let reply = self
                    .order_via(
                        main,
                        token,
                        json!({ "lines": [{ "product_id": product, "quantity": 1 }] }),
                        Some(wait_ms),
                    )
                    .await;
                progress.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                reply
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut burst = Burst::default();
        for reply in answers {
            if reply.status.is_success() {
                if reply.status == StatusCode::ACCEPTED {
                    burst.waited += 1;
                }
                burst
                    .accepted
                    .push(reply.body["id"].as_str().expect("an order id").to_owned());
            } else {
                assert!(
                    reply.status.is_server_error() && !reply.error_code().is_empty(),
                    "an order refused with {}: {}",
                    reply.status,
                    reply.text
                );
                burst.refused += 1;
            }
        }
        burst
    }

    /// Polls an order until it is confirmed or cancelled, and returns it.
    pub async fn terminal_order(&self, token: &str, order: &str) -> Value {
        let path = format!("/api/v1/orders/{order}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self.get(&path, Some(token)).await;
            if matches!(
                reply.body["status"].as_str(),
                Some("confirmed" | "cancelled")
            ) {
                return reply.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {order} never reached a terminal state: {}",
                reply.text
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `(on_hand, reserved, available)` of a product.
    pub async fn stock_of(&self, product: &str) -> (i64, i64, i64) {
        let reply = self
            .get(&format!("/api/v1/inventory/{product}"), None)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "stock of {product}: {}",
            reply.text
        );
        let n = |k: &str| reply.body[k].as_i64().expect("a count");
        (n("on_hand"), n("reserved"), n("available"))
    }

    /// The kinds of a user's notifications, oldest first.
    pub async fn notification_kinds(&self, token: &str, user: &str) -> Vec<String> {
        let reply = self
            .get(
                &format!("/api/v1/notifications?user_id={user}&per_page=100"),
                Some(token),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "notifications: {}",
            reply.text
        );
        let mut kinds: Vec<String> = reply.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|n| n["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        kinds.reverse();
        kinds
    }
}

/// What a burst of orders got: the ids of the accepted ones, how many of those were answered
/// before their saga ended (202), and how many were refused.
#[derive(Debug, Default)]
pub struct Burst {
    pub accepted: Vec<String>,
    pub waited: usize,
    pub refused: usize,
}

fn client() -> reqwest::Client {
    banyan_bus::http::client_builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    Reply {
        status,
        headers,
        body,
        text,
    }
}

/// Waits until `check` holds, polling; panics with `what` after 30 s. Tests wait for
/// outcomes this way and never assert on how long something took.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(Duration::from_secs(30), what, check).await;
}

/// [`eventually`] with a patience of its own, for recoveries that take long on a loaded
/// machine (NATS clients reconnect with backoff).
pub async fn eventually_within<F, Fut>(patience: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Declares each named scenario `async fn name(app: &TestApp)` as two tests, one per engine:
/// `sqlite::name` and `postgres::name`. With `settings = f;` first, every app starts with
/// the test settings adjusted by `f: fn(Figment) -> Figment`.
#[macro_export]
macro_rules! on_both_engines {
    (settings = $adjust:path; $($name:ident),* $(,)?) => {
        $crate::scenarios_in!(
            sqlite,
            $crate::TestApp::spawn_with($crate::Engine::Sqlite, $adjust),
            $($name),*
        );
        $crate::scenarios_in!(
            postgres,
            $crate::TestApp::spawn_with($crate::Engine::Postgres, $adjust),
            $($name),*
        );
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_both_engines!(settings = std::convert::identity; $($name),*);
    };
}

/// Declares each named scenario `async fn name(app: &TestApp)` as five tests, one per place
/// the shop can run: `sqlite::name` and `postgres::name` (all in the test's process),
/// `split_https::name` (payments and notifications in processes of their own, over HTTP with
/// TLS on every listener, on SQLite), `split_nats::name` (inventory and two payments
/// processes over NATS, on PostgreSQL) and `split_grpc::name` (inventory, cart and two
/// payments processes over gRPC with TLS, on SQLite). `settings = f;` first adjusts every app's settings, as for
/// [`on_both_engines!`].
#[macro_export]
macro_rules! on_every_topology {
    (settings = $adjust:path; $($name:ident),* $(,)?) => {
        $crate::on_both_engines!(settings = $adjust; $($name),*);
        $crate::scenarios_in!(
            split_https,
            $crate::TestApp::spawn_split(
                $crate::Engine::Sqlite,
                $crate::cluster::Topology::payments_and_notifications_over_https(),
                $adjust,
            ),
            $($name),*
        );
        $crate::scenarios_in!(
            split_nats,
            $crate::TestApp::spawn_split(
                $crate::Engine::Postgres,
                $crate::cluster::Topology::inventory_and_two_payments_over_nats(),
                $adjust,
            ),
            $($name),*
        );
        $crate::scenarios_in!(
            split_grpc,
            $crate::TestApp::spawn_split(
                $crate::Engine::Sqlite,
                $crate::cluster::Topology::inventory_cart_and_two_payments_over_grpc(),
                $adjust,
            ),
            $($name),*
        );
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_every_topology!(settings = std::convert::identity; $($name),*);
    };
}

/// A module `$module` with one test per scenario, each on an app from `$spawn` (skipped when
/// that gives `None`: PostgreSQL or NATS skipped outside CI).
#[doc(hidden)]
#[macro_export]
macro_rules! scenarios_in {
    ($module:ident, $spawn:expr, $($name:ident),*) => {
        mod $module {
            // The settings function named by the caller, if any, lives beside the scenarios.
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(app) = $spawn.await else {
                        return;
                    };
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
    };
}
