//! Revoked tokens in every process, without a call per request.
//!
//! `users` announces `users.tokens_revoked.v1` when an account is deleted or its password
//! changes. Every module a process hosts subscribes to it (so the event reaches every process,
//! over whatever transport the topology uses, with the bus's delivery guarantees), keeps the
//! latest instant per account in its own `revoked_tokens` table, and tells the process's
//! [`Authenticator`], which refuses older tokens from then on. At start each module reads its
//! table back, so a restart forgets nothing a still-valid token could need.
//!
//! Several processes may host one module (several mains, ADR 0010): each event is handled by
//! one of them only, so every process also reads its modules' tables again every
//! [`REREAD`], for what another process handled.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

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

/// How often a process reads its modules' revocations again (see the module's doc).
const REREAD: Duration = Duration::from_secs(2);

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
    load(outbox.db(), auth).await?;
    let (db, rereading) = (outbox.db().clone(), auth.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REREAD).await;
            match load(&db, &rereading).await {
                Ok(()) => {}
                // The process is stopping: its storage is closed.
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::debug!(%error, module = db.module(), "Cannot read revocations again; next time.");
                }
            }
        }
    });
    let follower = Arc::new(Follower {
        outbox: outbox.clone(),
        auth: auth.clone(),
    });
    bus.subscribe(&follower, on_tokens_revoked);
    Ok(())
}

/// Tells `auth` every revocation in `db` that a still-valid token could need.
async fn load(db: &banyan_db::Db, auth: &Authenticator) -> Result<(), sqlx::Error> {
    let lifetime = u64::try_from(auth.token_lifetime().as_millis()).unwrap_or(u64::MAX);
    let horizon = banyan_db::now_millis()
        .saturating_sub(i64::try_from(lifetime.saturating_add(60_000)).unwrap_or(i64::MAX));
    let rows =
        sqlx::query("SELECT user_id, not_before_ms FROM revoked_tokens WHERE not_before_ms >= $1")
            .bind(horizon)
            .fetch_all(db.reader())
            .await?;
    for row in rows {
        let user: String = row.try_get(0)?;
        let not_before_ms: i64 = row.try_get(1)?;
        if let Ok(user) = user.parse() {
            auth.revoke(user, u64::try_from(not_before_ms).unwrap_or_default());
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use banyan_db::{DatabaseConfig, Db};
    use banyan_kit::auth::Role;
    use uuid::Uuid;

    use super::*;

    /// What the reread is for: a revocation another process handled (its row is in the shared
    /// table, this process's authenticator was never told) refuses the token here once read.
    #[tokio::test]
    async fn a_revocation_another_process_handled_is_read_back_from_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig {
            url: format!("sqlite://{}", dir.path().display()),
            ..DatabaseConfig::default()
        };
        let db = Db::open("users", &config, &[&*REVOCATION_MIGRATIONS])
            .await
            .unwrap();
        let auth = Authenticator::new(
            b"a-test-secret-of-32-bytes-or-more!",
            Duration::from_secs(3600),
        );
        let user = Uuid::now_v7();
        let token = auth.issue(user, Role::Customer).unwrap().access_token;
        assert!(auth.verify(&token).is_ok());
        sqlx::query("INSERT INTO revoked_tokens (user_id, not_before_ms) VALUES ($1, $2)")
            .bind(user.to_string())
            .bind(banyan_db::now_millis() + 1_000)
            .execute(db.reader())
            .await
            .unwrap();
        assert!(auth.verify(&token).is_ok(), "not told yet");
        load(&db, &auth).await.unwrap();
        assert!(auth.verify(&token).is_err(), "refused once read back");
        // A revocation older than any living token is not loaded: it could refuse nothing.
        let old = Uuid::now_v7();
        sqlx::query("INSERT INTO revoked_tokens (user_id, not_before_ms) VALUES ($1, 1)")
            .bind(old.to_string())
            .execute(db.reader())
            .await
            .unwrap();
        load(&db, &auth).await.unwrap();
        assert_eq!(auth.revocations(), 1);
    }
}
