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

/// What main's registry says of each module placed in another process, when this process is
/// main of a split: asked at every `/ready`.
pub(crate) type Elsewhere = Arc<dyn Fn() -> BTreeMap<String, Placed> + Send + Sync>;

/// The state of `/ready`.
#[derive(Clone)]
struct ReadyState {
    hosted: Hosts,
    elsewhere: Option<Elsewhere>,
}

/// Liveness, readiness and the operator's dead-letter endpoints (tag `operations`).
pub(crate) fn operations_routes(hosted: Hosts, elsewhere: Option<Elsewhere>) -> OpenApiRouter {
    let readiness = OpenApiRouter::new()
        .routes(routes!(ready))
        .with_state(ReadyState {
            hosted: hosted.clone(),
            elsewhere,
        });
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
        .with_state(hosted)
        .merge(readiness)
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

/// Whether every hosted module can work, and (main of a split) whether every module placed
/// elsewhere has an instance in rotation.
#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ready`; `degraded` when a module placed elsewhere has no healthy instance (this
    /// process still serves, so still 200); `not_ready` (503) when a hosted module's database
    /// does not answer.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// Why `degraded` or `not_ready`, one line per module.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
    /// Each hosted module, by name.
    #[schema(value_type = BTreeMap<String, ModuleReadiness>)]
    modules: BTreeMap<&'static str, ModuleReadiness>,
    /// Main of a split: each module placed in another process, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    elsewhere: BTreeMap<String, Placed>,
}

/// A module placed in another process, as main's registry sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Placed {
    /// The process the topology places it in.
    pub(crate) process: String,
    /// How it is reached: `http`, `grpc` or `nats`.
    pub(crate) transport: String,
    /// Its instances in rotation.
    pub(crate) healthy_instances: usize,
    /// Its instances registered, in rotation or not.
    pub(crate) instances: usize,
    /// `ok`, or `down` when no instance is in rotation.
    #[schema(value_type = String, example = "ok")]
    pub(crate) status: &'static str,
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

/// `GET /ready`: every hosted module's database answers (else 503 `not_ready`, naming it);
/// on main of a split, every module placed elsewhere is listed with its instances in
/// rotation, and one with none makes the answer `degraded` (200: main itself still serves).
#[utoipa::path(
    get,
    path = "/ready",
    tag = OPERATIONS_TAG,
    operation_id = "ready",
    summary = "Readiness",
    description = "Every hosted module's database answers, with each module's outbox backlog. \
        On main of a split, each module placed in another process with its instances in \
        rotation: `degraded` (still 200, main serves the rest) when one has none.",
    responses(
        (status = 200, description = "`ready`, or `degraded` when a module elsewhere has no instance in rotation.", body = Readiness),
        (status = 503, description = "A module's database does not answer (`not_ready`).", body = Readiness),
    )
)]
async fn ready(State(state): State<ReadyState>) -> (StatusCode, Json<Readiness>) {
    let mut modules = BTreeMap::new();
    let mut reasons = Vec::new();
    let mut all_ready = true;
    for (name, module) in state.hosted.iter() {
        let ok = module.db.ping().await;
        all_ready &= ok;
        if !ok {
            reasons.push(format!("{name}: its database does not answer"));
        }
        let pending = module.outbox.pending().await.ok();
        modules.insert(
            *name,
            ModuleReadiness {
                database: if ok { "ok" } else { "unreachable" },
                outbox_pending: pending,
            },
        );
    }
    let elsewhere = state.elsewhere.as_ref().map(|e| e()).unwrap_or_default();
    for (name, placed) in &elsewhere {
        if placed.healthy_instances == 0 {
            reasons.push(format!(
                "{name}: no instance of process `{}` is in rotation ({} registered)",
                placed.process, placed.instances
            ));
        }
    }
    let (code, status) = match (all_ready, reasons.is_empty()) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (true, false) => (StatusCode::OK, "degraded"),
        (true, true) => (StatusCode::OK, "ready"),
    };
    (
        code,
        Json(Readiness {
            status,
            reasons,
            modules,
            elsewhere,
        }),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeadLetterFilter {
    /// Only this module's letters (404 if it is not hosted here).
    module: Option<String>,
    /// Only letters in this status.
    #[param(inline)]
    status: Option<LetterStatus>,
    /// At most this many, 1 to 1000; 100 by default.
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// A dead letter's state.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LetterStatus {
    /// Failed every attempt; waiting for someone.
    Dead,
    /// Asked to be delivered again.
    #[value(name = "replay_requested")]
    ReplayRequested,
    /// Being delivered again.
    Replaying,
    /// Delivered again.
    Replayed,
}

impl LetterStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LetterStatus::Dead => "dead",
            LetterStatus::ReplayRequested => "replay_requested",
            LetterStatus::Replaying => "replaying",
            LetterStatus::Replayed => "replayed",
        }
    }
}

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
        (status = 400, description = "An unknown or unparsable query parameter, or a `status` that is none of the four (`invalid_query`).", body = ErrorBody),
        AdminErrors,
        (status = 404, description = "The module is not hosted here.", body = ErrorBody),
        (status = 422, description = "`limit` out of range.", body = ErrorBody),
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
    let mut letters = Vec::new();
    for (name, module) in hosted.iter() {
        if filter.module.as_deref().is_some_and(|m| m != *name) {
            continue;
        }
        letters.extend(
            dead_letter::list(
                &module.db,
                filter.status.map(LetterStatus::as_str),
                filter.limit,
            )
            .await?,
        );
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

/// The fault routes' state: the bus whose faults they set, and whether they may.
#[derive(Debug, Clone)]
pub(crate) struct FaultControl {
    pub(crate) bus: banyan_bus::Bus,
    /// `bus.fault_api`.
    pub(crate) enabled: bool,
}

/// Setting and clearing injected faults while the process runs, for tests and
/// demonstrations (`bus.fault_api`; otherwise these routes answer 404).
pub(crate) fn fault_routes(control: FaultControl) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_faults))
        .routes(routes!(set_fault, clear_fault))
        .with_state(control)
}

fn fault_api(control: &FaultControl, caller: &Caller) -> ApiResult<()> {
    caller.require_admin()?;
    if !control.enabled {
        return Err(ApiError::not_found(
            "fault injection at run time is off (bus.fault_api)",
        ));
    }
    Ok(())
}

/// A module's name or one of its subjects (`payments`, `payments.get_payment.v1`).
fn fault_target(target: &str) -> ApiResult<()> {
    let module = target.split('.').next().unwrap_or(target);
    let known = crate::modules::all_modules()
        .iter()
        .any(|m| m.name() == module);
    let shaped = target.len() <= 128
        && target
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if !known || !shaped {
        return Err(ApiError::invalid(
            "target",
            "must be a module's name or one of its subjects",
        ));
    }
    Ok(())
}

/// `GET /api/v1/admin/faults`: the faults injected in this process now.
#[utoipa::path(
    get,
    path = "/api/v1/admin/faults",
    tag = OPERATIONS_TAG,
    operation_id = "list_faults",
    summary = "Injected faults",
    description = "Admins only, and only with `bus.fault_api` (else 404): the faults injected \
        into this process's handlers and routes, by module or subject.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The faults.", body = BTreeMap<String, banyan_bus::policy::Fault>),
        AdminErrors,
        (status = 404, description = "Fault injection at run time is off.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn list_faults(
    State(control): State<FaultControl>,
    caller: Caller,
) -> ApiResult<Json<BTreeMap<String, banyan_bus::policy::Fault>>> {
    fault_api(&control, &caller)?;
    Ok(Json(control.bus.faults()))
}

/// `PUT /api/v1/admin/faults/{target}`: sets the fault of a module or subject.
#[utoipa::path(
    put,
    path = "/api/v1/admin/faults/{target}",
    tag = OPERATIONS_TAG,
    operation_id = "set_fault",
    summary = "Inject a fault",
    description = "Admins only, and only with `bus.fault_api` (else 404): from now on the \
        handlers (and, for a module, the routes) of `target` in this process wait `delay_ms` \
        and then fail `error_rate` of their calls as unavailable.",
    params(("target" = String, Path, description = "A module's name or one of its subjects.", pattern = "^(users|catalog|inventory|cart|orders|payments|notifications)(\\.[a-z0-9_.]{0,100})?$")),
    request_body = banyan_bus::policy::Fault,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Set."),
        (status = 400, description = "Not JSON.", body = ErrorBody),
        AdminErrors,
        banyan_kit::BodyErrors,
        (status = 404, description = "Fault injection at run time is off.", body = ErrorBody),
        (status = 422, description = "An unknown target, or `error_rate` outside 0 to 1.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn set_fault(
    State(control): State<FaultControl>,
    caller: Caller,
    Path(target): Path<String>,
    Json(fault): Json<banyan_bus::policy::Fault>,
) -> ApiResult<StatusCode> {
    fault_api(&control, &caller)?;
    fault_target(&target)?;
    if !(0.0..=1.0).contains(&fault.error_rate) || fault.delay_ms > 600_000 {
        return Err(ApiError::invalid(
            "error_rate",
            "error_rate must be 0 to 1 and delay_ms at most 600000",
        ));
    }
    tracing::warn!(%target, ?fault, "Fault injected at run time.");
    control.bus.set_fault(&target, Some(fault));
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/admin/faults/{target}`: clears the fault of a module or subject.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/faults/{target}",
    tag = OPERATIONS_TAG,
    operation_id = "clear_fault",
    summary = "Clear a fault",
    description = "Admins only, and only with `bus.fault_api` (else 404).",
    params(("target" = String, Path, description = "A module's name or one of its subjects.", pattern = "^(users|catalog|inventory|cart|orders|payments|notifications)(\\.[a-z0-9_.]{0,100})?$")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Cleared (or there was none)."),
        AdminErrors,
        (status = 404, description = "Fault injection at run time is off.", body = ErrorBody),
        (status = 422, description = "An unknown target.", body = ErrorBody),
        ServerErrors,
    )
)]
async fn clear_fault(
    State(control): State<FaultControl>,
    caller: Caller,
    Path(target): Path<String>,
) -> ApiResult<StatusCode> {
    fault_api(&control, &caller)?;
    fault_target(&target)?;
    tracing::warn!(%target, "Fault cleared at run time.");
    control.bus.set_fault(&target, None);
    Ok(StatusCode::NO_CONTENT)
}
