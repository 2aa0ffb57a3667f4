//! Revoked tokens in every process, without a call per request.
//!
//! `users` announces `users.tokens_revoked.v1` when an account is deleted or its password
//! changes. Every module a process hosts subscribes to it (so the event reaches every process,
//! over whatever transport the topology uses, with the bus's delivery guarantees), keeps the
//! latest instant per account in its own `revoked_tokens` table, and tells the process's
//! [`Authenticator`], which refuses older tokens from then on. At start each module reads its
//! table back, so a restart forgets nothing a still-valid token could need.

use std::sync::{Arc, LazyLock};

use banyan_bus::{Delivered, HandlerError, ModuleBus, Outbox};
use banyan_kit::auth::Authenticator;
use banyan_users_contract::TokensRevoked;
use sqlx::{Row, migrate::Migrator};

/// The `revoked_tokens` table, in every module's database; its history in
/// `_revocation_migrations`.
pub(crate) static REVOCATION_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| {
    static BASE: Migrator = sqlx::migrate!("../../migrations/revocations");
    banyan_db::migrator_with_table(&BASE, "_revocation_migrations")
});

struct Follower {
    outbox: Outbox,
    auth: Arc<Authenticator>,
}

/// Loads `module`'s kept revocations into `auth` and subscribes the module to new ones.
pub(crate) async fn follow(
    bus: &ModuleBus,
    outbox: &Outbox,
    auth: &Arc<Authenticator>,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query("SELECT user_id, not_before_ms FROM revoked_tokens")
        .fetch_all(outbox.db().reader())
        .await?;
    for row in rows {
        let user: String = row.try_get(0)?;
        let not_before_ms: i64 = row.try_get(1)?;
        if let Ok(user) = user.parse() {
            auth.revoke(user, u64::try_from(not_before_ms).unwrap_or_default());
        }
    }
    let follower = Arc::new(Follower {
        outbox: outbox.clone(),
        auth: auth.clone(),
    });
    bus.subscribe(&follower, on_tokens_revoked);
    Ok(())
}

async fn on_tokens_revoked(
    state: Arc<Follower>,
    delivered: Delivered<TokensRevoked>,
) -> Result<(), HandlerError> {
    let user = delivered.user_id.0;
    if let Some(mut uow) = state.outbox.begin_handling(&delivered).await? {
        sqlx::query(
            "INSERT INTO revoked_tokens (user_id, not_before_ms) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET not_before_ms = CASE \
               WHEN excluded.not_before_ms > revoked_tokens.not_before_ms \
               THEN excluded.not_before_ms ELSE revoked_tokens.not_before_ms END",
        )
        .bind(user.to_string())
        .bind(delivered.not_before_ms)
        .execute(&mut *uow)
        .await?;
        uow.commit().await?;
    }
    // Also on a redelivery: the process may have stopped between the commit and this.
    let not_before_ms = u64::try_from(delivered.not_before_ms).unwrap_or_default();
    state.auth.revoke(user, not_before_ms);
    tracing::info!(user_id = %user, reason = %delivered.reason, module = state.outbox.db().module(), "Tokens revoked.");
    Ok(())
}
