//! The operator's routes of every process: liveness, readiness and the dead letters of the
//! bus (tag `operations`).

//! One Banyan process: its modules, its bus, its HTTP server.

use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::State, http::StatusCode};
use banyan_bus::{Outbox, dead_letter};
use banyan_db::Db;
use banyan_kit::{
    AdminErrors, ApiError, ApiResult, ErrorBody, ServerErrors,
    auth::Caller,
    extract::{Json, Path, Query},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::openapi::OPERATIONS_TAG;

/// A module running in this process.
#[derive(Debug, Clone)]
pub(crate) struct Hosted {
    pub(crate) db: Db,
    pub(crate) outbox: Outbox,
}

pub(crate) type Hosts = Arc<BTreeMap<&'static str, Hosted>>;

/// Liveness, readiness and the operator's dead-letter endpoints (tag `operations`).
pub(crate) fn operations_routes(hosted: Hosts) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
        .with_state(hosted)
}

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// `GET /health`: the process is up.
#[utoipa::path(
    get,
    path = "/health",
    tag = OPERATIONS_TAG,
    operation_id = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process is up.", body = Health))
)]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Whether every hosted module can work.
#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// Each hosted module, by name.
    #[schema(value_type = BTreeMap<String, ModuleReadiness>)]
    modules: BTreeMap<&'static str, ModuleReadiness>,
}

/// One hosted module's readiness.
#[derive(Debug, Serialize, ToSchema)]
struct ModuleReadiness {
    /// `ok` or `unreachable`.
    #[schema(value_type = String, example = "ok")]
    database: &'static str,
    /// Events committed and not yet delivered to every subscriber; `null` if it could not be
    /// counted.
    outbox_pending: Option<i64>,
}

/// `GET /ready`: every hosted module's database answers. 503 otherwise, naming the module.
#[utoipa::path(
    get,
    path = "/ready",
    tag = OPERATIONS_TAG,
    operation_id = "ready",
    summary = "Readiness",
    description = "Every hosted module's database answers, with each module's outbox backlog.",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "A module's database does not answer (`not_ready`).", body = Readiness),
    )
)]
async fn ready(State(hosted): State<Hosts>) -> (StatusCode, Json<Readiness>) {
    let mut modules = BTreeMap::new();
    let mut all_ready = true;
    for (name, module) in hosted.iter() {
        let ok = module.db.ping().await;
        all_ready &= ok;
        let pending = module.outbox.pending().await.ok();
        modules.insert(
            *name,
            ModuleReadiness {
                database: if ok { "ok" } else { "unreachable" },
                outbox_pending: pending,
            },
        );
    }
    let status = if all_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if all_ready { "ready" } else { "not_ready" },
            modules,
        }),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeadLetterFilter {
    /// Only this module's letters (404 if it is not hosted here).
    module: Option<String>,
    /// Only letters in this status: `dead`, `replay_requested`, `replaying` or `replayed`.
    status: Option<String>,
    /// At most this many, 1 to 1000; 100 by default.
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

const STATUSES: [&str; 4] = ["dead", "replay_requested", "replaying", "replayed"];

/// Dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct DeadLetters {
    items: Vec<dead_letter::DeadLetter>,
}

/// `GET /api/v1/admin/dead-letters?module=&status=&limit=`: admins only.
#[utoipa::path(
    get,
    path = "/api/v1/admin/dead-letters",
    tag = OPERATIONS_TAG,
    operation_id = "list_dead_letters",
    summary = "List dead letters",
    description = "Admins only. Events that failed every delivery attempt, newest first, from \
        every module hosted by this process.",
    params(DeadLetterFilter),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The dead letters.", body = DeadLetters),
        (status = 400, description = "An unknown or unparsable query parameter (`invalid_query`).", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "The module is not hosted here.", body = ErrorBody),
        (status = 422, description = "`limit` out of range or an unknown `status`.", body = ErrorBody),
        (status = 500, description = "An unexpected failure.", body = ErrorBody),
        (status = 503, description = "A database is busy; try again.", body = ErrorBody),
    )
)]
async fn list_dead_letters(
    State(hosted): State<Hosts>,
    caller: Caller,
    Query(filter): Query<DeadLetterFilter>,
) -> ApiResult<Json<DeadLetters>> {
    caller.require_admin()?;
    if !(1..=1_000).contains(&filter.limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    if let Some(status) = &filter.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "must be dead, replay_requested, replaying or replayed",
        ));
    }
    let mut letters = Vec::new();
    for (name, module) in hosted.iter() {
        if filter.module.as_deref().is_some_and(|m| m != *name) {
            continue;
        }
        letters
            .extend(dead_letter::list(&module.db, filter.status.as_deref(), filter.limit).await?);
    }
    if let Some(module) = &filter.module
        && !hosted.contains_key(module.as_str())
    {
        return Err(ApiError::not_found(format!(
            "module {module} is not hosted here"
        )));
    }
    letters.sort_by_key(|letter| std::cmp::Reverse(letter.failed_at_ms));
    letters.truncate(filter.limit as usize);
    Ok(Json(DeadLetters { items: letters }))
}

/// A replay, asked for.
#[derive(Debug, Serialize, ToSchema)]
struct ReplayRequested {
    /// The dead letter's id.
    id: Uuid,
    module: String,
    /// Always `replay_requested`: the relay of the process hosting the module redelivers it.
    #[schema(value_type = String, example = "replay_requested")]
    status: &'static str,
}

/// `POST /api/v1/admin/dead-letters/{module}/{id}/replay`: asks for a redelivery; 202.
#[utoipa::path(
    post,
    path = "/api/v1/admin/dead-letters/{module}/{id}/replay",
    tag = OPERATIONS_TAG,
    operation_id = "replay_dead_letter",
    summary = "Replay a dead letter",
    description = "Admins only. Asks for the letter to be delivered again to its module; the \
        relay of the process hosting the module carries it out. Takes no body.",
    params(
        ("module" = String, Path, description = "The module the letter belongs to, such as `orders`."),
        ("id" = Uuid, Path, description = "The dead letter's id."),
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The replay is asked for.", body = ReplayRequested),
        (status = 400, description = "The id is not a UUID (`invalid_path`).", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "The module is not hosted here, or it has no such letter \
            awaiting replay.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn replay_dead_letter(
    State(hosted): State<Hosts>,
    caller: Caller,
    Path((module, id)): Path<(String, Uuid)>,
) -> ApiResult<(StatusCode, Json<ReplayRequested>)> {
    caller.require_admin()?;
    let hosted_module = hosted
        .get(module.as_str())
        .ok_or_else(|| ApiError::not_found(format!("module {module} is not hosted here")))?;
    if !dead_letter::request_replay(&hosted_module.db, id).await? {
        return Err(ApiError::not_found(format!(
            "no dead letter {id} awaiting replay in {module}"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayRequested {
            id,
            module,
            status: "replay_requested",
        }),
    ))
}

#[cfg(test)]
mod tests {
    use banyan_kit::testing::documented_and_serialized;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_documented_dead_letter_is_the_bus_types_json() {
        let letter = dead_letter::DeadLetter {
            id: Uuid::now_v7(),
            module: "orders".into(),
            message_id: Uuid::now_v7(),
            subject: "payments.payment_completed.v1".into(),
            correlation_id: "c".into(),
            error: "boom".into(),
            attempts: 5,
            status: "dead".into(),
            failed_at_ms: 1,
            replayed_at_ms: None,
            payload: json!({}),
        };
        let (documented, serialized) = documented_and_serialized(&letter);
        assert_eq!(documented, serialized);
        assert_eq!(<dead_letter::DeadLetter as ToSchema>::name(), "DeadLetter");
    }
}
