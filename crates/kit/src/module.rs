//! The one registration point of a module.

use std::sync::Arc;

use banyan_bus::{Bus, Outbox};
use banyan_db::{Db, sqlx::migrate::Migrator};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Authenticator;

/// A bounded context, as the app sees it. Each module crate exports one value implementing
/// this; the app opens the module's database, runs [`migrations`](Module::migrations), then
/// calls [`start`](Module::start) and mounts the router it returns under `/`.
///
/// The router is an [`OpenApiRouter`]: each route is added with `utoipa_axum::routes!` from a
/// handler annotated with `#[utoipa::path(...)]`, so the route's method and path *are* its
/// documented ones, and the app serves the document of what it mounted
/// (`GET /api-docs/openapi.json`).
///
/// `start` registers the module's request handlers and event subscriptions on the bus. The
/// module never learns where its peers run: it only ever talks to the bus.
pub trait Module: Send + Sync + 'static {
    /// The module's name: its schema, its database file, the first segment of its subjects.
    fn name(&self) -> &'static str;

    /// The module's own migrations (`migrations/<module>/`).
    fn migrations(&self) -> &'static Migrator;

    /// Registers handlers and subscriptions; returns the module's HTTP routes with their
    /// OpenAPI description (tagged with the module's name).
    fn start(&self, ctx: ModuleContext) -> BoxFuture<'static, anyhow::Result<OpenApiRouter>>;
}

/// What a module gets when it starts. Everything in it is the module's own or shared
/// infrastructure; nothing in it reaches another module's data.
#[derive(Debug, Clone)]
pub struct ModuleContext {
    pub bus: Bus,
    pub db: Db,
    pub outbox: Outbox,
    pub auth: Arc<Authenticator>,
    /// The whole configuration; a module reads its own section with [`ModuleContext::settings`].
    pub config: figment::Figment,
}

impl ModuleContext {
    /// The module's settings, from `[modules.<name>]`, with defaults for what is missing.
    pub fn settings<T: DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        let key = format!("modules.{}", self.db.module());
        if self.config.find_value(&key).is_err() {
            return Ok(T::default());
        }
        self.config
            .extract_inner(&key)
            .map_err(|e| anyhow::anyhow!("invalid settings for module {}: {e}", self.db.module()))
    }
}
