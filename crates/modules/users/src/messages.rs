//! What `users` answers on the bus.

use std::sync::Arc;

use banyan_bus::{Bus, Rejection};
use banyan_users_contract::{GetUser, UserId, UserProfile};

use crate::{State, store};

pub(crate) fn register(bus: &Bus, state: &Arc<State>) {
    let state = state.clone();
    bus.handle::<GetUser, _, _>("users", move |_cx, request| {
        let state = state.clone();
        async move { get_user(&state, request).await }
    });
}

async fn get_user(state: &State, request: GetUser) -> Result<UserProfile, Rejection> {
    let user = store::find(state.outbox.db(), request.user_id.0)
        .await
        .map_err(|e| Rejection::new("internal", e.to_string()))?
        .ok_or_else(|| Rejection::not_found("user", request.user_id))?;
    Ok(UserProfile {
        user_id: UserId(user.id()),
        username: user.username,
        email: user.email,
        role: user.role,
    })
}
