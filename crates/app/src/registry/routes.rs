//! The registry's HTTP routes on the main process: registering and leaving on its internal
//! listener only (with the shared secret); the listing there too, and on the public one for
//! an admin.

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{delete, get, post},
};
use banyan_bus::http::{bearer_token, same_secret};
use banyan_kit::{ApiError, auth::Admin, extract::Json};

use super::{Listing, Registration, SERVICES_PATH, table::Registry};

/// What the registry's routes share.
#[derive(Clone)]
pub(crate) struct RegistryState {
    pub(crate) registry: Arc<Registry>,
    pub(crate) secret: Arc<str>,
}

impl std::fmt::Debug for RegistryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryState")
            .field("registry", &self.registry)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The internal listener's: `POST /api/v1/services/register`,
/// `DELETE /api/v1/services/{instance_id}` and `GET /api/v1/services`, all with the shared
/// secret.
pub(crate) fn internal_routes(state: RegistryState) -> Router {
    Router::new()
        .route(SERVICES_PATH, get(list_for_processes))
        .route(&format!("{SERVICES_PATH}/register"), post(register))
        .route(&format!("{SERVICES_PATH}/{{instance_id}}"), delete(leave))
        .with_state(state)
}

/// The public listener's: `GET /api/v1/services` for an admin.
pub(crate) fn public_routes(state: RegistryState) -> Router {
    Router::new()
        .route(SERVICES_PATH, get(list_for_admins))
        .with_state(state)
}

/// Whether the request carries `authorization: Bearer <secret>` (compared in constant time).
pub(crate) fn carries_secret(headers: &HeaderMap, secret: &str) -> bool {
    bearer_token(headers).is_some_and(|token| same_secret(token, secret))
}

fn require_secret(headers: &HeaderMap, secret: &str) -> Result<(), ApiError> {
    if carries_secret(headers, secret) {
        Ok(())
    } else {
        tracing::warn!("Refused a registry call without the shared secret.");
        Err(ApiError::unauthorized(
            "this needs the processes' shared secret as a bearer token",
        ))
    }
}

async fn register(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Listing>, ApiError> {
    require_secret(&headers, &state.secret)?;
    let registration: Registration = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("not a registration: {e}"),
        )
    })?;
    state.registry.register(registration)?;
    Ok(Json(state.registry.listing()))
}

async fn leave(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    Path(instance_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_secret(&headers, &state.secret)?;
    if state.registry.remove(&instance_id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no instance {instance_id} is registered"
        )))
    }
}

async fn list_for_processes(
    State(state): State<RegistryState>,
    headers: HeaderMap,
) -> Result<Json<Listing>, ApiError> {
    require_secret(&headers, &state.secret)?;
    Ok(Json(state.registry.listing()))
}

async fn list_for_admins(State(state): State<RegistryState>, Admin(_): Admin) -> Json<Listing> {
    Json(state.registry.listing())
}
