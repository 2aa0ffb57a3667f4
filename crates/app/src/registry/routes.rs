//! The registry's HTTP routes on the main process: registering and leaving on its internal
//! listener only (a process, proving which one it is); the listing there too, and on the public one for
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
use banyan_bus::http::{Peers, bearer_token};
use banyan_kit::{ApiError, auth::Admin, extract::Json};

use super::{Listing, Registration, SERVICES_PATH, table::Registry};

/// What the registry's routes share.
#[derive(Debug, Clone)]
pub(crate) struct RegistryState {
    pub(crate) registry: Arc<Registry>,
    /// Which process a caller is (see `crate::identity`).
    pub(crate) peers: Arc<dyn Peers>,
    /// Main's route breakers, shown with each module.
    pub(crate) routes: Arc<crate::route_policy::RoutePolicies>,
}

impl RegistryState {
    /// The registry's listing with each module's route breaker.
    fn listing(&self) -> Listing {
        let mut listing = self.registry.listing();
        let breakers = self.routes.breaker_states();
        for (module, entry) in &mut listing.modules {
            entry.breaker = breakers.get(module.as_str()).copied();
        }
        listing
    }
}

/// The internal listener's: `POST /api/v1/services/register`,
/// `DELETE /api/v1/services/{instance_id}` and `GET /api/v1/services`, each for a process of
/// the topology proving which one it is.
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

/// The process the caller proves it is; 401 otherwise (logged, never the token).
fn calling_process(headers: &HeaderMap, peers: &dyn Peers) -> Result<String, ApiError> {
    let checked = match bearer_token(headers) {
        Some(token) => peers.authenticate(token),
        None => Err("no bearer token".to_owned()),
    };
    checked.map_err(|reason| {
        tracing::warn!(reason, "Refused a registry call from an unknown process.");
        ApiError::unauthorized("this needs the token of a process of the topology")
    })
}

async fn register(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Listing>, ApiError> {
    let process = calling_process(&headers, &*state.peers)?;
    let registration: Registration = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("not a registration: {e}"),
        )
    })?;
    if registration.process != process {
        tracing::warn!(process, claimed = %registration.process, "Refused a registration for another process.");
        return Err(ApiError::forbidden(format!(
            "process `{process}` may register only itself, not `{}`",
            registration.process
        )));
    }
    state.registry.register(registration)?;
    Ok(Json(state.listing()))
}

async fn leave(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    Path(instance_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let process = calling_process(&headers, &*state.peers)?;
    if state.registry.remove(&process, &instance_id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "process `{process}` has no instance {instance_id} registered"
        )))
    }
}

async fn list_for_processes(
    State(state): State<RegistryState>,
    headers: HeaderMap,
) -> Result<Json<Listing>, ApiError> {
    calling_process(&headers, &*state.peers)?;
    Ok(Json(state.listing()))
}

async fn list_for_admins(State(state): State<RegistryState>, Admin(_): Admin) -> Json<Listing> {
    Json(state.listing())
}
