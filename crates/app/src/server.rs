//! One Banyan process: its modules, its bus, its HTTP server.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, header},
    middleware,
    response::IntoResponse,
    routing::get,
};
use banyan_bus::{
    Bus, Outbox, Transport, dead_letter,
    http::{HttpTransport, Instances, Subscribers},
    nats::{self, NatsTransport, ServeHandle},
};
use banyan_db::Db;
use banyan_kit::{
    ApiError, ApiResult, ErrorBody, Module, ModuleContext,
    auth::{self, Authenticator, Caller},
    extract::{Json, Path, Query},
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::{
    IntoParams, ToSchema,
    openapi::{
        ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder,
        tag::{Tag, TagBuilder},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    config::Settings,
    edge,
    gateway::Gateway,
    registry::{
        Awareness, Directory, Heartbeat, HttpEvents, InstanceTransport, RegisteredModule,
        Registration, Registry, RegistryState,
    },
    topology::{TopologyConfig, TransportKind},
};

/// Every module Banyan has, in the order they start.
pub fn all_modules() -> Vec<Box<dyn Module>> {
    vec![
        Box::new(banyan_users::Users),
        Box::new(banyan_catalog::Catalog),
        Box::new(banyan_inventory::Inventory),
        Box::new(banyan_cart::Cart),
        Box::new(banyan_orders::Orders),
        Box::new(banyan_payments::Payments),
        Box::new(banyan_notifications::Notifications),
    ]
}

/// A module running in this process.
#[derive(Debug, Clone)]
struct Hosted {
    db: Db,
    outbox: Outbox,
}

/// A built process, ready to serve.
#[derive(Debug)]
pub struct Server {
    settings: Settings,
    bus: Bus,
    hosted: Arc<BTreeMap<&'static str, Hosted>>,
    router: Router,
    /// What runs beside the modules when the topology places some of them elsewhere.
    split: Option<Split>,
}

/// A process of a split topology: its place in the registry and its transports.
#[derive(Debug)]
struct Split {
    topology: Arc<TopologyConfig>,
    instance_id: String,
    /// The modules hosted here.
    here: BTreeSet<&'static str>,
    /// The main process keeps the registry...
    registry: Option<Arc<Registry>>,
    /// ...the others register with it.
    heartbeat: Option<Arc<Heartbeat>>,
    /// The NATS connection, when a module is reached over NATS...
    nats_client: Option<async_nats::Client>,
    /// ...and the server side on it, once the modules have started.
    nats: Option<(ServeHandle, CancellationToken)>,
}

impl Split {
    /// This process as the registry lists it.
    fn registration(&self, bus: &Bus, base_url: String) -> Registration {
        Registration {
            instance_id: self.instance_id.clone(),
            process: self.topology.process.clone(),
            base_url,
            modules: self
                .here
                .iter()
                .map(|&name| RegisteredModule {
                    name: name.to_owned(),
                    transport: self
                        .topology
                        .transport_of(name)
                        .map_or(InstanceTransport::InProcess, Into::into),
                    subscriptions: bus
                        .subscriptions_of(name)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                })
                .collect(),
        }
    }

    /// Stops taking NATS messages, once the bus has drained.
    async fn stop_nats(&self) {
        if let Some((handle, stop)) = &self.nats {
            stop.cancel();
            if tokio::time::timeout(Duration::from_secs(30), handle.stopped())
                .await
                .is_err()
            {
                tracing::warn!("The NATS server side did not stop in time.");
            }
        }
    }
}

impl Server {
    /// Opens every module's storage, runs its migrations, starts it on the bus and mounts its
    /// routes behind the edge middleware.
    pub async fn build(settings: Settings, figment: figment::Figment) -> anyhow::Result<Self> {
        // Held until every module has subscribed: see `Bus::held`.
        let bus = Bus::held(settings.bus.clone());
        let auth = Authenticator::new(
            settings.auth.jwt_secret.as_bytes(),
            Duration::from_secs(settings.auth.token_ttl_secs),
        );
        let mut hosted = BTreeMap::new();
        let mut routes = OpenApiRouter::with_openapi(document_base());
        let mut started = Vec::new();
        let topology = Arc::new(settings.topology.clone());
        let hosted_here = |name: &str| {
            topology.hosts(name)
                && settings
                    .server
                    .modules
                    .as_ref()
                    .is_none_or(|modules| modules.iter().any(|m| m == name))
        };
        let mut split = if topology.is_active() {
            let here = all_modules()
                .iter()
                .map(|m| m.name())
                .filter(|name| hosted_here(name))
                .collect();
            Some(wire_split(&bus, topology.clone(), here).await?)
        } else {
            None
        };
        for module in all_modules().into_iter().filter(|m| hosted_here(m.name())) {
            let name = module.name();
            let db = Db::open(
                name,
                &settings.database,
                &[&*banyan_bus::MESSAGING_MIGRATIONS, module.migrations()],
            )
            .await?;
            let outbox = Outbox::start(&bus, db.clone());
            let ctx = ModuleContext {
                bus: bus.clone(),
                db: db.clone(),
                outbox: outbox.clone(),
                auth: auth.clone(),
                config: figment.clone(),
            };
            let module_routes = module.start(ctx).await?;
            check_schema_names(routes.get_openapi(), module_routes.get_openapi(), name)?;
            routes = routes.merge(module_routes);
            hosted.insert(name, Hosted { db, outbox });
            started.push(name);
            tracing::info!(module = name, "Module started.");
        }
        let hosted = Arc::new(hosted);
        let operations = operations_routes(hosted.clone());
        check_schema_names(routes.get_openapi(), operations.get_openapi(), "app")?;
        // Every route above came with its operation: the document is what is mounted.
        let (routes, mut openapi) = routes.merge(operations).split_for_parts();
        openapi.tags = Some(document_tags(started));
        let document = Bytes::from(openapi.to_json()?);
        let mut routes = routes.route(OPENAPI_PATH, get(move || serve_document(document.clone())));
        if let Some(split) = &mut split {
            if let Some(client) = split.nats_client.clone() {
                // Every handler and subscription is registered: serve them over NATS.
                let stop = CancellationToken::new();
                let handle =
                    nats::serve(bus.clone(), client, topology.nats.clone(), stop.clone()).await?;
                split.nats = Some((handle, stop));
            }
            routes = match &split.registry {
                // The main process: the registry, and the gateway for the modules elsewhere.
                Some(registry) => {
                    let gateway = Arc::new(Gateway::new(
                        topology.clone(),
                        registry.clone(),
                        settings.server.request_timeout(),
                        Duration::from_millis(topology.http.connect_timeout_ms),
                        settings.server.max_body_bytes,
                    )?);
                    routes
                        .merge(crate::registry::routes(RegistryState {
                            registry: registry.clone(),
                            secret: topology.http.secret().into(),
                        }))
                        .fallback(move |request: axum::extract::Request| {
                            gateway.clone().handle(request)
                        })
                }
                None => routes.fallback(edge::not_found),
            };
        } else {
            routes = routes.fallback(edge::not_found);
        }
        let mut router = routes
            .method_not_allowed_fallback(edge::method_not_allowed)
            // Outermost last: the edge sees every request first and every response last.
            .layer(DefaultBodyLimit::max(settings.server.max_body_bytes))
            .layer(edge::authenticator_layer(auth))
            .layer(middleware::from_fn_with_state(
                edge::Limits {
                    timeout: settings.server.request_timeout(),
                    max_body_bytes: settings.server.max_body_bytes as u64,
                },
                edge::context,
            ))
            .layer(CatchPanicLayer::custom(edge::panic_response));
        // Every module of the process has subscribed, every transport is wired.
        bus.open_events();
        if split.is_some() && topology.uses_http() {
            // The bus's own endpoints: outside the edge (they carry their envelope, their
            // shared secret and their own body limit) and outside the OpenAPI document.
            router = router.merge(banyan_bus::http::routes(
                bus.clone(),
                topology.http.secret().into(),
            ));
        }
        Ok(Self {
            settings,
            bus,
            hosted,
            router,
            split,
        })
    }

    /// The HTTP application, for tests that call it without a socket.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Stops without serving: drains the bus and closes the databases.
    pub async fn stop(self) {
        self.bus.shutdown().await;
        if let Some(split) = &self.split {
            split.stop_nats().await;
        }
        for hosted in self.hosted.values() {
            hosted.db.close().await;
        }
    }

    /// Serves until `shutdown` resolves, then stops taking requests, drains the bus and
    /// closes the databases. Events not yet delivered stay in the outboxes for the next start.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        let modules = self.hosted.keys().collect::<Vec<_>>();
        let Some(split) = &self.split else {
            tracing::info!(addr = %addr, modules = ?modules, "Banyan is serving.");
            axum::serve(listener, self.router)
                .with_graceful_shutdown(shutdown)
                .await?;
            tracing::info!("HTTP server stopped; draining the bus.");
            let drained = self.bus.shutdown().await;
            for hosted in self.hosted.values() {
                hosted.db.close().await;
            }
            tracing::info!(drained, "Banyan stopped.");
            return Ok(());
        };
        let process = split.topology.process.clone();
        tracing::info!(addr = %addr, modules = ?modules, process, "Banyan is serving.");
        let registration = split.registration(&self.bus, split.topology.advertised(addr));
        let stop_beating = CancellationToken::new();
        let mut beating = None;
        if let Some(registry) = &split.registry {
            registry.register_own(registration);
        } else if let Some(heartbeat) = &split.heartbeat {
            beating = Some(tokio::spawn(
                heartbeat.clone().run(registration, stop_beating.clone()),
            ));
        }
        let leaving = split
            .heartbeat
            .clone()
            .map(|h| (h, split.instance_id.clone()));
        let stopping = stop_beating.clone();
        let shutdown = async move {
            shutdown.await;
            // Out of rotation first, so nothing new is routed here while it drains.
            stopping.cancel();
            if let Some((heartbeat, instance_id)) = leaving {
                heartbeat.leave(&instance_id).await;
            }
        };
        axum::serve(listener, self.router.clone())
            .with_graceful_shutdown(shutdown)
            .await?;
        stop_beating.cancel();
        if let Some(beating) = beating {
            let _ = beating.await;
        }
        tracing::info!("HTTP server stopped; draining the bus.");
        let drained = self.bus.shutdown().await;
        split.stop_nats().await;
        for hosted in self.hosted.values() {
            hosted.db.close().await;
        }
        tracing::info!(drained, "Banyan stopped.");
        Ok(())
    }
}

/// Wires a process of a split topology before its modules start: the transports to the
/// modules hosted elsewhere, where events go, and the registry (main) or its directory (the
/// others). The NATS server side and the routes are added once the modules have started.
async fn wire_split(
    bus: &Bus,
    topology: Arc<TopologyConfig>,
    here: BTreeSet<&'static str>,
) -> anyhow::Result<Split> {
    let known: Vec<&'static str> = all_modules().iter().map(|m| m.name()).collect();
    let instance_id = Uuid::now_v7().to_string();
    let secret = topology.http.secret();
    let (registry, directory) = if topology.is_main() {
        let registry = Arc::new(Registry::new(topology.clone(), known.clone()));
        (Some(registry), None)
    } else {
        let directory = Arc::new(Directory::new(
            here.clone(),
            known.clone(),
            instance_id.clone(),
        ));
        (None, Some(directory))
    };
    let (instances, awareness): (Arc<dyn Instances>, Arc<dyn Awareness>) =
        match (&registry, &directory) {
            (Some(registry), _) => (registry.clone(), registry.clone()),
            (None, Some(directory)) => (directory.clone(), directory.clone()),
            (None, None) => unreachable!("a process has a registry or a directory"),
        };
    let http: Option<Arc<HttpEvents>> = if topology.uses_http() {
        let subscribers: Arc<dyn Subscribers> = awareness.clone();
        Some(Arc::new(HttpEvents {
            transport: Arc::new(HttpTransport::new(
                instances,
                subscribers,
                secret,
                topology.http.transport_config(),
            )?),
            awareness,
        }))
    } else {
        None
    };
    let nats_client = if topology.uses_nats() {
        Some(nats::connect(&topology.nats.url).await?)
    } else {
        None
    };
    let nats: Option<Arc<dyn Transport>> = nats_client.clone().map(|client| {
        Arc::new(NatsTransport::new(client, topology.nats.clone())) as Arc<dyn Transport>
    });
    for module in known.iter().filter(|m| !topology.hosts(m)) {
        let kind = topology.route_to(module);
        let transport = match kind {
            TransportKind::Http => http.clone().map(|h| h as Arc<dyn Transport>),
            TransportKind::Nats => nats.clone(),
        }
        .ok_or_else(|| anyhow::anyhow!("no {} transport for module {module}", kind.as_str()))?;
        bus.set_remote(module, transport);
        tracing::info!(
            module,
            transport = kind.as_str(),
            process = topology.process_of(module),
            "Module hosted elsewhere."
        );
    }
    // Events: over NATS as soon as one module is reached over NATS (each subscribing module,
    // here too, reads its JetStream consumer and nothing else); otherwise pushed over HTTP to
    // the modules elsewhere that subscribe, local subscribers getting theirs in process.
    if let Some(nats) = nats {
        bus.forward_events_to(nats);
        for module in &here {
            bus.consume_through_transport(module);
        }
    } else if let Some(http) = http {
        bus.forward_events_to(http);
    }
    let heartbeat = match directory {
        Some(directory) => Some(Arc::new(Heartbeat {
            client: reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_millis(topology.http.connect_timeout_ms))
                .build()?,
            registry_url: topology.registry_url.clone(),
            secret: secret.into(),
            directory,
            period: topology.heartbeat(),
        })),
        None => None,
    };
    Ok(Split {
        topology,
        instance_id,
        here,
        registry,
        heartbeat,
        nats_client,
        nats: None,
    })
}

/// Where the OpenAPI document of the routes this process serves is served.
pub const OPENAPI_PATH: &str = "/api-docs/openapi.json";

/// The tag of the app's own operations.
const OPERATIONS_TAG: &str = "operations";

/// What each tag of the document holds: a module's operations (tagged with its name), or the
/// app's own.
const TAG_DESCRIPTIONS: [(&str, &str); 8] = [
    ("users", "Accounts, credentials and login."),
    ("catalog", "Products, categories and prices."),
    ("inventory", "Stock on hand and reserved."),
    ("cart", "Customers' carts."),
    ("orders", "Orders and the checkout saga."),
    ("payments", "Payments of orders (a simulated provider)."),
    ("notifications", "Notifications sent to users."),
    (
        OPERATIONS_TAG,
        "Liveness, readiness and the dead letters of the bus.",
    ),
];

/// The tags of the document: one per module hosted here, named after it, then the app's own.
fn document_tags<'m>(hosted: impl IntoIterator<Item = &'m str>) -> Vec<Tag> {
    hosted
        .into_iter()
        .chain([OPERATIONS_TAG])
        .map(|name| {
            let description = TAG_DESCRIPTIONS
                .iter()
                .find(|(tag, _)| *tag == name)
                .map(|(_, description)| *description);
            TagBuilder::new()
                .name(name)
                .description(description)
                .build()
        })
        .collect()
}

/// What the document says before any route is added: title, version and the `bearer`
/// security scheme that protected operations name.
fn document_base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Banyan")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "An e-commerce backend: a modular monolith whose modules each serve their \
                     part of this API. Errors are always JSON (`ErrorBody`) with a stable \
                     `error.code`. Any request may also be answered 504 (`timeout`) when it \
                     outlasts the server's request timeout, 413 when its body is too large, and \
                     an unknown route or method 404 / 405. Every response carries \
                     `x-request-id`.",
                ))
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(auth::BEARER_SCHEME, auth::bearer_security_scheme())
                .build(),
        ))
        .build()
}

/// Merging keeps the first schema of a name and drops the other: two different schemas of one
/// name (two modules' `LineView`s, say) would leave one module's document wrong. Refused.
fn check_schema_names(so_far: &OpenApi, added: &OpenApi, by: &str) -> anyhow::Result<()> {
    let (Some(so_far), Some(added)) = (&so_far.components, &added.components) else {
        return Ok(());
    };
    for (name, schema) in &added.schemas {
        if so_far
            .schemas
            .get(name)
            .is_some_and(|existing| existing != schema)
        {
            anyhow::bail!(
                "the OpenAPI schema {name} of {by} differs from another of the same name; \
                 rename one of them"
            );
        }
    }
    Ok(())
}

/// `GET /api-docs/openapi.json`: the document, serialized once at start.
async fn serve_document(document: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("Shutdown signal received.");
}

type Hosts = Arc<BTreeMap<&'static str, Hosted>>;

/// Liveness, readiness and the operator's dead-letter endpoints (tag `operations`).
fn operations_routes(hosted: Hosts) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
        .with_state(hosted)
}

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// `GET /health`: the process is up.
#[utoipa::path(
    get,
    path = "/health",
    tag = OPERATIONS_TAG,
    operation_id = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process is up.", body = Health))
)]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Whether every hosted module can work.
#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// Each hosted module, by name.
    #[schema(value_type = BTreeMap<String, ModuleReadiness>)]
    modules: BTreeMap<&'static str, ModuleReadiness>,
}

/// One hosted module's readiness.
#[derive(Debug, Serialize, ToSchema)]
struct ModuleReadiness {
    /// `ok` or `unreachable`.
    #[schema(value_type = String, example = "ok")]
    database: &'static str,
    /// Events committed and not yet delivered to every subscriber; `null` if it could not be
    /// counted.
    outbox_pending: Option<i64>,
}

/// `GET /ready`: every hosted module's database answers. 503 otherwise, naming the module.
#[utoipa::path(
    get,
    path = "/ready",
    tag = OPERATIONS_TAG,
    operation_id = "ready",
    summary = "Readiness",
    description = "Every hosted module's database answers, with each module's outbox backlog.",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "A module's database does not answer (`not_ready`).", body = Readiness),
    )
)]
async fn ready(State(hosted): State<Hosts>) -> (StatusCode, Json<Readiness>) {
    let mut modules = BTreeMap::new();
    let mut all_ready = true;
    for (name, module) in hosted.iter() {
        let ok = module.db.ping().await;
        all_ready &= ok;
        let pending = module.outbox.pending().await.ok();
        modules.insert(
            *name,
            ModuleReadiness {
                database: if ok { "ok" } else { "unreachable" },
                outbox_pending: pending,
            },
        );
    }
    let status = if all_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if all_ready { "ready" } else { "not_ready" },
            modules,
        }),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeadLetterFilter {
    /// Only this module's letters (404 if it is not hosted here).
    module: Option<String>,
    /// Only letters in this status: `dead`, `replay_requested`, `replaying` or `replayed`.
    status: Option<String>,
    /// At most this many, 1 to 1000; 100 by default.
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

const STATUSES: [&str; 4] = ["dead", "replay_requested", "replaying", "replayed"];

/// Dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct DeadLetters {
    #[schema(value_type = Vec<DeadLetterDoc>)]
    items: Vec<dead_letter::DeadLetter>,
}

/// An event that failed every delivery attempt to one subscribing module.
// The schema of the bus's `DeadLetter`, which carries no schema of its own. Never built; a test
// checks it against the real type's JSON.
#[derive(ToSchema)]
#[schema(as = DeadLetter)]
#[allow(dead_code)]
struct DeadLetterDoc {
    id: Uuid,
    /// The subscribing module that failed to handle it.
    module: String,
    message_id: Uuid,
    /// The event's subject, such as `orders.order_placed.v1`.
    subject: String,
    correlation_id: String,
    /// The last error.
    error: String,
    attempts: i64,
    /// `dead`, `replay_requested`, `replaying` or `replayed`.
    status: String,
    /// Milliseconds since the epoch.
    failed_at_ms: i64,
    /// Milliseconds since the epoch; `null` until replayed.
    replayed_at_ms: Option<i64>,
    /// The event, as JSON.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
}

/// `GET /api/v1/admin/dead-letters?module=&status=&limit=`: admins only.
#[utoipa::path(
    get,
    path = "/api/v1/admin/dead-letters",
    tag = OPERATIONS_TAG,
    operation_id = "list_dead_letters",
    summary = "List dead letters",
    description = "Admins only. Events that failed every delivery attempt, newest first, from \
        every module hosted by this process.",
    params(DeadLetterFilter),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The dead letters.", body = DeadLetters),
        (status = 400, description = "An unknown or unparsable query parameter (`invalid_query`).", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "The caller is not an admin.", body = ErrorBody),
        (status = 404, description = "The module is not hosted here.", body = ErrorBody),
        (status = 422, description = "`limit` out of range or an unknown `status`.", body = ErrorBody),
        (status = 500, description = "An unexpected failure.", body = ErrorBody),
        (status = 503, description = "A database is busy; try again.", body = ErrorBody),
    )
)]
async fn list_dead_letters(
    State(hosted): State<Hosts>,
    caller: Caller,
    Query(filter): Query<DeadLetterFilter>,
) -> ApiResult<Json<DeadLetters>> {
    caller.require_admin()?;
    if !(1..=1_000).contains(&filter.limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    if let Some(status) = &filter.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "must be dead, replay_requested, replaying or replayed",
        ));
    }
    let mut letters = Vec::new();
    for (name, module) in hosted.iter() {
        if filter.module.as_deref().is_some_and(|m| m != *name) {
            continue;
        }
        letters
            .extend(dead_letter::list(&module.db, filter.status.as_deref(), filter.limit).await?);
    }
    if let Some(module) = &filter.module
        && !hosted.contains_key(module.as_str())
    {
        return Err(ApiError::not_found(format!(
            "module {module} is not hosted here"
        )));
    }
    letters.sort_by_key(|letter| std::cmp::Reverse(letter.failed_at_ms));
    letters.truncate(filter.limit as usize);
    Ok(Json(DeadLetters { items: letters }))
}

/// A replay, asked for.
#[derive(Debug, Serialize, ToSchema)]
struct ReplayRequested {
    /// The dead letter's id.
    id: Uuid,
    module: String,
    /// Always `replay_requested`: the relay of the process hosting the module redelivers it.
    #[schema(value_type = String, example = "replay_requested")]
    status: &'static str,
}

/// `POST /api/v1/admin/dead-letters/{module}/{id}/replay`: asks for a redelivery; 202.
#[utoipa::path(
    post,
    path = "/api/v1/admin/dead-letters/{module}/{id}/replay",
    tag = OPERATIONS_TAG,
    operation_id = "replay_dead_letter",
    summary = "Replay a dead letter",
    description = "Admins only. Asks for the letter to be delivered again to its module; the \
        relay of the process hosting the module carries it out. Takes no body.",
    params(
        ("module" = String, Path, description = "The module the letter belongs to, such as `orders`."),
        ("id" = Uuid, Path, description = "The dead letter's id."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The replay is asked for.", body = ReplayRequested),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "The caller is not an admin.", body = ErrorBody),
        (status = 404, description = "The module is not hosted here, or it has no such letter \
            awaiting replay.", body = ErrorBody),
        (status = 500, description = "An unexpected failure.", body = ErrorBody),
        (status = 503, description = "The database is busy; try again.", body = ErrorBody),
    )
)]
async fn replay_dead_letter(
    State(hosted): State<Hosts>,
    caller: Caller,
    Path((module, id)): Path<(String, Uuid)>,
) -> ApiResult<(StatusCode, Json<ReplayRequested>)> {
    caller.require_admin()?;
    let hosted_module = hosted
        .get(module.as_str())
        .ok_or_else(|| ApiError::not_found(format!("module {module} is not hosted here")))?;
    if !dead_letter::request_replay(&hosted_module.db, id).await? {
        return Err(ApiError::not_found(format!(
            "no dead letter {id} awaiting replay in {module}"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayRequested {
            id,
            module,
            status: "replay_requested",
        }),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use utoipa::PartialSchema;

    use super::*;

    fn keys(value: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn the_documented_dead_letter_is_the_bus_types_json() {
        let letter = dead_letter::DeadLetter {
            id: Uuid::now_v7(),
            module: "orders".into(),
            message_id: Uuid::now_v7(),
            subject: "payments.payment_completed.v1".into(),
            correlation_id: "c".into(),
            error: "boom".into(),
            attempts: 5,
            status: "dead".into(),
            failed_at_ms: 1,
            replayed_at_ms: None,
            payload: json!({}),
        };
        let schema = serde_json::to_value(DeadLetterDoc::schema()).expect("JSON");
        assert_eq!(
            keys(&schema["properties"]),
            keys(&serde_json::to_value(&letter).expect("JSON"))
        );
        assert_eq!(<DeadLetterDoc as ToSchema>::name(), "DeadLetter");
    }

    #[test]
    fn the_document_names_every_module_and_the_bearer_scheme() {
        let modules: Vec<&str> = all_modules().iter().map(|m| m.name()).collect();
        let tags = document_tags(modules.iter().copied());
        assert_eq!(tags.len(), modules.len() + 1);
        for (tag, name) in tags.iter().zip(modules.iter().chain([&OPERATIONS_TAG])) {
            assert_eq!(tag.name, *name);
            assert!(tag.description.is_some(), "{name} has no description");
        }
        let components = document_base().components.expect("components");
        assert!(
            components
                .security_schemes
                .contains_key(auth::BEARER_SCHEME)
        );
    }
}
