//! `users`: accounts, credentials and login.
//!
//! Owns the `users` table and the password hashes (argon2id), which never leave this crate:
//! not in a response, a log line, an event or a bus reply. Emits `UserRegistered`; answers
//! `GetUser`. Issues the JWTs every other module checks. Composes the user overview from its
//! own data and the orders module's answer (`ListOrders`), degrading when orders is away.
//!
//! # Layout (the same in every module crate)
//! - `domain`: validated values (`Username`, `Email`, `Password`) and the rules.
//! - `store`: every SQL statement of the module.
//! - `http`: the routes under `/api/v1/users`.
//! - `messages`: bus request handlers and event subscriptions.

mod domain;
mod http;
mod messages;
mod store;

use std::sync::Arc;

use banyan_bus::Context;
use banyan_db::sqlx::migrate::Migrator;
use banyan_kit::{Module, ModuleContext};
use futures::future::BoxFuture;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_users_contract as contract;

/// The users module, as the app mounts it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Users;

static MIGRATIONS: Migrator = sqlx::migrate!("../../../migrations/users");

/// `[modules.users]` settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// An admin account created at start if no account has its username: how the first admin
    /// comes to exist (see README).
    bootstrap_admin: Option<domain::NewAccount>,
    /// How long the overview waits for orders before answering without them.
    overview_orders_timeout_ms: Option<u64>,
}

impl Module for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn migrations(&self) -> &'static Migrator {
        &MIGRATIONS
    }

    fn start(&self, ctx: ModuleContext) -> BoxFuture<'static, anyhow::Result<OpenApiRouter>> {
        Box::pin(async move {
            let settings: Settings = ctx.settings()?;
            let overview_timeout = settings.overview_orders_timeout_ms.unwrap_or(500);
            if !(1..=60_000).contains(&overview_timeout) {
                anyhow::bail!("modules.users.overview_orders_timeout_ms must be 1 to 60000");
            }
            let state = Arc::new(State {
                outbox: ctx.outbox.clone(),
                auth: ctx.auth.clone(),
                bus: ctx.bus.clone(),
                overview_timeout: std::time::Duration::from_millis(overview_timeout),
            });
            if let Some(admin) = settings.bootstrap_admin {
                domain::ensure_admin(&state.outbox, &Context::root(), admin).await?;
            }
            messages::register(&ctx.bus, &state);
            Ok(http::routes(state))
        })
    }
}

/// What the module's handlers share.
#[derive(Debug)]
struct State {
    outbox: banyan_bus::Outbox,
    auth: Arc<banyan_kit::auth::Authenticator>,
    bus: banyan_bus::Bus,
    overview_timeout: std::time::Duration,
}
