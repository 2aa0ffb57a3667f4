//! What other modules may know of `users`: its requests and its events. Nothing else.

use banyan_message::{Event, Message, Request};
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

impl Message for UserRegistered {
    const SUBJECT: &'static str = "users.user_registered.v1";
}

impl Event for UserRegistered {
    fn aggregate_id(&self) -> uuid::Uuid {
        self.user_id.0
    }
}

/// Looks up an account's public profile. Rejected with `not_found` for an unknown id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetUser {
    pub user_id: UserId,
}

impl Message for GetUser {
    const SUBJECT: &'static str = "users.get_user.v1";
}

impl Request for GetUser {
    type Response = UserProfile;
}

/// An account as other modules see it: no credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: UserId,
    pub username: String,
    pub email: String,
    pub role: String,
}
