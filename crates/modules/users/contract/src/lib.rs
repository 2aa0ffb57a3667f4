//! What other modules may know of `users`: its requests and its events. Nothing else.

use serde::{Deserialize, Serialize};

banyan_message::define_id!(
    /// Identifies a user account.
    UserId
);

/// A new account exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user_id: UserId,
    pub username: String,
    pub email: String,
}

banyan_message::event!(UserRegistered, "users.user_registered.v1", |e| e.user_id.0);

/// Every token of the account issued before `not_before_ms` stops working, in every process:
/// the account was deleted or its password changed. Each process keeps the latest instant per
/// account (see `banyan_kit::auth::Authenticator::revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokensRevoked {
    pub user_id: UserId,
    /// Milliseconds since the epoch; tokens issued earlier are refused.
    pub not_before_ms: i64,
    /// Why: `deleted` or `password_changed`.
    pub reason: String,
}

banyan_message::event!(TokensRevoked, "users.tokens_revoked.v1", |e| e.user_id.0);

/// Looks up an account's public profile. Rejected with `not_found` for an unknown id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetUser {
    pub user_id: UserId,
}

banyan_message::request!(GetUser, "users.get_user.v1", UserProfile, idempotent);

/// An account as other modules see it: no credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: UserId,
    pub username: String,
    pub email: String,
    pub role: String,
}
