//! One Banyan process: its modules, its bus, its HTTP server.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    middleware,
    routing::{get, post},
};
use banyan_bus::{Bus, Outbox, dead_letter};
use banyan_db::Db;
use banyan_kit::{
    ApiError, ApiResult, Module, ModuleContext,
    auth::{Authenticator, Caller},
    extract::{Json, Path, Query},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use uuid::Uuid;

use crate::{config::Settings, edge};

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
}

impl Server {
    /// Opens every module's storage, runs its migrations, starts it on the bus and mounts its
    /// routes behind the edge middleware.
    pub async fn build(settings: Settings, figment: figment::Figment) -> anyhow::Result<Self> {
        let bus = Bus::new(settings.bus.clone());
        let auth = Authenticator::new(
            settings.auth.jwt_secret.as_bytes(),
            Duration::from_secs(settings.auth.token_ttl_secs),
        );
        let mut hosted = BTreeMap::new();
        let mut routes = Router::new();
        let hosted_here = |name: &str| {
            settings
                .server
                .modules
                .as_ref()
                .is_none_or(|modules| modules.iter().any(|m| m == name))
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
            routes = routes.merge(module.start(ctx).await?);
            hosted.insert(name, Hosted { db, outbox });
            tracing::info!(module = name, "Module started.");
        }
        let hosted = Arc::new(hosted);
        let router = routes
            .merge(operations_routes(hosted.clone()))
            .fallback(edge::not_found)
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
        Ok(Self {
            settings,
            bus,
            hosted,
            router,
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
        tracing::info!(addr = %listener.local_addr()?, modules = ?self.hosted.keys().collect::<Vec<_>>(), "Banyan is serving.");
        axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        tracing::info!("HTTP server stopped; draining the bus.");
        let drained = self.bus.shutdown().await;
        for hosted in self.hosted.values() {
            hosted.db.close().await;
        }
        tracing::info!(drained, "Banyan stopped.");
        Ok(())
    }
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

/// Liveness, readiness and the operator's dead-letter endpoints.
fn operations_routes(hosted: Hosts) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/api/v1/admin/dead-letters", get(list_dead_letters))
        .route(
            "/api/v1/admin/dead-letters/{module}/{id}/replay",
            post(replay_dead_letter),
        )
        .with_state(hosted)
}

/// `GET /health`: the process is up.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: every hosted module's database answers. 503 otherwise, naming the module.
async fn ready(State(hosted): State<Hosts>) -> (StatusCode, Json<Value>) {
    let mut checks = serde_json::Map::new();
    let mut all_ready = true;
    for (name, module) in hosted.iter() {
        let ok = module.db.ping().await;
        all_ready &= ok;
        let pending = module.outbox.pending().await.ok();
        checks.insert(
            (*name).to_owned(),
            json!({ "database": if ok { "ok" } else { "unreachable" }, "outbox_pending": pending }),
        );
    }
    let status = if all_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "status": if all_ready { "ready" } else { "not_ready" }, "modules": checks })),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterFilter {
    module: Option<String>,
    status: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

const STATUSES: [&str; 4] = ["dead", "replay_requested", "replaying", "replayed"];

/// `GET /api/v1/admin/dead-letters?module=&status=&limit=`: admins only.
async fn list_dead_letters(
    State(hosted): State<Hosts>,
    caller: Caller,
    Query(filter): Query<DeadLetterFilter>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({ "items": letters })))
}

/// `POST /api/v1/admin/dead-letters/{module}/{id}/replay`: asks for a redelivery; 202.
async fn replay_dead_letter(
    State(hosted): State<Hosts>,
    caller: Caller,
    Path((module, id)): Path<(String, Uuid)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
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
        Json(json!({ "id": id, "module": module, "status": "replay_requested" })),
    ))
}
