//! The registry's HTTP routes on the main process.

use std::sync::Arc;

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::{delete, get, post},
};
use banyan_bus::http::{bearer_token, same_secret};
use banyan_kit::{ApiError, auth::Authenticator, extract::Json};

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

/// `POST /api/v1/services/register`, `DELETE /api/v1/services/{instance_id}` (the shared
/// secret) and `GET /api/v1/services` (an admin's token or the shared secret).
pub(crate) fn routes(state: RegistryState) -> Router {
    Router::new()
        .route(SERVICES_PATH, get(list))
        .route(&format!("{SERVICES_PATH}/register"), post(register))
        .route(&format!("{SERVICES_PATH}/{{instance_id}}"), delete(leave))
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

async fn list(
    State(state): State<RegistryState>,
    Extension(auth): Extension<Arc<Authenticator>>,
    headers: HeaderMap,
) -> Result<Json<Listing>, ApiError> {
    if !carries_secret(&headers, &state.secret) {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("this needs an admin's token or the shared secret")
            })?;
        auth.verify(token.trim())?.require_admin()?;
    }
    Ok(Json(state.registry.listing()))
}
