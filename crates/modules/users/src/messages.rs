//! What `users` answers on the bus.

use std::sync::Arc;

use banyan_bus::{Context, ModuleBus, Rejection};
use banyan_users_contract::{GetUser, UserId, UserProfile};

use crate::{State, domain, model::Error};

pub(crate) fn register(bus: &ModuleBus, state: &Arc<State>) {
    bus.handle(state, get_user);
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => invalid.into(),
            Error::Taken(field) => {
                Rejection::conflict("already_exists", format!("that {field} is already taken"))
            }
            Error::NotFound(id) => Rejection::not_found("user", id),
            Error::WrongPassword => Rejection::new("wrong_password", error.to_string()),
            Error::CurrentPasswordNeeded => {
                Rejection::new("current_password_required", error.to_string())
            }
            Error::LastAdmin => Rejection::conflict("last_admin", error.to_string()),
            Error::Storage(error) => Rejection::internal(error),
            Error::Busy => Rejection::internal(error),
            Error::Unexpected(cause) => Rejection::internal(cause),
        }
    }
}

async fn get_user(
    state: Arc<State>,
    _cx: Context,
    request: GetUser,
) -> Result<UserProfile, Rejection> {
    let user = domain::find(&state.outbox, request.user_id.0).await?;
    Ok(UserProfile {
        user_id: UserId(user.id()),
        username: user.username,
        email: user.email,
        role: user.role,
    })
}
