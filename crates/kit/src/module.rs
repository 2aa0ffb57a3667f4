//! The one registration point of a module, and the macro that declares one.

use std::sync::Arc;

use banyan_bus::{ModuleBus, Outbox};
use banyan_db::{Db, sqlx::migrate::Migrator};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Authenticator;

/// A bounded context, as the app sees it. Each module crate declares one with
/// [`module!`](crate::module!), which writes this impl; the app opens the module's database,
/// runs [`migrations`](Module::migrations), then calls [`start`](Module::start) and mounts the
/// router it returns under `/`.
///
/// The router is an [`OpenApiRouter`]: each route is added with `utoipa_axum::routes!` from a
/// handler annotated with `#[utoipa::path(...)]`, so the route's method and path *are* its
/// documented ones. The app tags the module's operations with its name and describes the tag
/// with [`description`](Module::description).
///
/// `start` registers the module's request handlers and event subscriptions on its
/// [`ModuleBus`]. The module never learns where its peers run: it only ever talks to the bus.
pub trait Module: Send + Sync + 'static {
    /// The module's name: its schema, its database file, the first segment of its subjects.
    fn name(&self) -> &'static str;

    /// One line on what the module owns, for the API document and the diagrams.
    fn description(&self) -> &'static str;

    /// The module's own migrations (`migrations/<module>/`).
    fn migrations(&self) -> &'static Migrator;

    /// The subjects of the requests the module sends to other modules. A process of a split
    /// accepts a request from another process only if a module there declares it.
    fn calls(&self) -> &'static [&'static str];

    /// The subjects of the events the module publishes. Its outbox refuses any other
    /// ([`Outbox::declare_publishes`]), so the list is what the code does, and the
    /// architecture diagram (`banyan diagram`) can be drawn from it.
    fn publishes(&self) -> &'static [&'static str];

    /// Registers handlers and subscriptions; returns the module's HTTP routes with their
    /// OpenAPI description.
    fn start(&self, ctx: ModuleContext) -> BoxFuture<'static, anyhow::Result<OpenApiRouter>>;

    /// The document of the module's HTTP routes, without starting it (the same routes
    /// `start` returns, before their state): what main documents for a module it proxies to
    /// another process.
    fn document(&self) -> utoipa::openapi::OpenApi;
}

/// Declares a module crate's [`Module`]: its type, name, description, migrations, the
/// requests it sends (`calls`), the events it publishes (`publishes`), its start function
/// and the document of its routes (`document`), written once. It also defines, for the crate's own use, `NAME` (the name) and
/// `MIGRATIONS`.
///
/// ```ignore
/// banyan_kit::module! {
///     /// The cart module, as the app mounts it.
///     pub struct Cart {
///         name: "cart",
///         description: "Customers' carts.",
///         migrations: sqlx::migrate!("../../../migrations/cart"),
///         calls: [banyan_catalog_contract::GetProducts],
///         publishes: [],
///         start: start,
///         document: http::document,
///     }
/// }
/// ```
#[macro_export]
macro_rules! module {
    (
        $(#[$meta:meta])*
        $vis:vis struct $module:ident {
            name: $name:literal,
            description: $description:literal,
            migrations: $migrations:expr,
            calls: [$($call:ty),* $(,)?],
            publishes: [$($event:ty),* $(,)?],
            start: $start:path,
            document: $document:path $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default)]
        $vis struct $module;

        /// The module's name: its schema, its database file, its subjects' first segment.
        pub(crate) const NAME: &str = $name;

        /// The module's own migrations.
        pub(crate) static MIGRATIONS: $crate::__private::Migrator = $migrations;

        impl $crate::Module for $module {
            fn name(&self) -> &'static str {
                NAME
            }

            fn description(&self) -> &'static str {
                $description
            }

            fn migrations(&self) -> &'static $crate::__private::Migrator {
                &MIGRATIONS
            }

            fn calls(&self) -> &'static [&'static str] {
                &[$(<$call as $crate::__private::Message>::SUBJECT),*]
            }

            fn publishes(&self) -> &'static [&'static str] {
                const PUBLISHES: &[&str] = &[$($crate::__private::event_subject::<$event>()),*];
                PUBLISHES
            }

            fn start(
                &self,
                ctx: $crate::ModuleContext,
            ) -> $crate::__private::BoxFuture<
                'static,
                $crate::__private::anyhow::Result<$crate::__private::OpenApiRouter>,
            > {
                ::std::boxed::Box::pin($start(ctx))
            }

            fn document(&self) -> $crate::__private::OpenApi {
                $document()
            }
        }
    };
}

/// What a module gets when it starts. Everything in it is the module's own or shared
/// infrastructure; nothing in it reaches another module's data.
#[derive(Debug, Clone)]
pub struct ModuleContext {
    /// The module's handle on the bus: ask, answer, listen (its events leave through the
    /// outbox).
    pub bus: ModuleBus,
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
