//! `users`: accounts, credentials and login.
//!
//! Owns the `users` table and the password hashes (argon2id), which never leave this crate:
//! not in a response, a log line, an event or a bus reply. Emits `UserRegistered`; answers
//! `GetUser`. Issues the JWTs every other module checks. Composes the user overview from its
//! own data and the orders module's answer (`ListOrders`), degrading when orders is away.
//!
//! # Layout (the same in every module crate)
//! - `model`: validated values (`Username`, `Email`, `Password`) and the module's `Error`.
//! - `domain`: registering, changing and deleting accounts.
//! - `store`: every SQL statement of the module.
//! - `http`: the routes under `/api/v1/users`.
//! - `messages`: bus request handlers and event subscriptions.

mod domain;
mod http;
mod messages;
mod model;
mod store;

use std::sync::Arc;

use banyan_bus::Context;
use banyan_kit::ModuleContext;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;

pub use banyan_users_contract as contract;

banyan_kit::module! {
    /// The users module, as the app mounts it.
    pub struct Users {
        name: "users",
        description: "Accounts, credentials and login.",
        migrations: sqlx::migrate!("../../../migrations/users"),
        calls: [banyan_orders_contract::ListOrders],
        publishes: [contract::UserRegistered, contract::TokensRevoked],
        start: start,
        document: http::document,
    }
}

/// `[modules.users]` settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// An admin account created at start if no account has its username: how the first admin
    /// comes to exist (see README).
    bootstrap_admin: Option<model::NewAccount>,
    /// How long the overview waits for orders before answering without them.
    overview_orders_timeout_ms: Option<u64>,
    /// Failed logins allowed per account and per client address (see `domain::FailedLogins`).
    #[serde(default)]
    login_limit: domain::LoginLimits,
}

async fn start(ctx: ModuleContext) -> anyhow::Result<OpenApiRouter> {
    let settings: Settings = ctx.settings()?;
    let overview_timeout = settings.overview_orders_timeout_ms.unwrap_or(500);
    let limits = settings.login_limit;
    if limits.per_account == 0
        || limits.per_address == 0
        || !(1..=86_400).contains(&limits.window_secs)
    {
        anyhow::bail!(
            "modules.users.login_limit: per_account and per_address must be greater than 0, \
             window_secs 1 to 86400"
        );
    }
    if !(1..=60_000).contains(&overview_timeout) {
        anyhow::bail!("modules.users.overview_orders_timeout_ms must be 1 to 60000");
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let state = Arc::new(State {
        outbox: ctx.outbox.clone(),
        hasher: domain::Hasher::new(threads, HASH_WAIT)?,
        auth: ctx.auth.clone(),
        bus: ctx.bus.clone(),
        overview_timeout: std::time::Duration::from_millis(overview_timeout),
        failed_logins: domain::FailedLogins::new(settings.login_limit),
    });
    if let Some(admin) = settings.bootstrap_admin {
        domain::ensure_admin(&state.outbox, &state.hasher, &Context::root(), admin).await?;
    }
    messages::register(&ctx.bus, &state);
    Ok(http::routes(state))
}

/// The longest a login (or a registration) waits for a hashing thread before it is answered
/// 503: a little over the time the threads take to work off a short burst.
const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the module's handlers share.
#[derive(Debug)]
struct State {
    outbox: banyan_bus::Outbox,
    /// Password hashing, a hash per core at a time (see `domain::Hasher`).
    hasher: domain::Hasher,
    auth: Arc<banyan_kit::auth::Authenticator>,
    bus: banyan_bus::ModuleBus,
    overview_timeout: std::time::Duration,
    failed_logins: domain::FailedLogins,
}
