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

/// Looks up an account's public profile. Rejected with `not_found` for an unknown id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetUser {
    pub user_id: UserId,
}

banyan_message::request!(GetUser, "users.get_user.v1", UserProfile);

/// An account as other modules see it: no credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: UserId,
    pub username: String,
    pub email: String,
    pub role: String,
}
