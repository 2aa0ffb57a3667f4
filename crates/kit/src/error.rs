//! The errors a client sees.

use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use banyan_bus::{BusError, Rejection, RejectionKind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

pub type ApiResult<T> = Result<T, ApiError>;

/// An error answered to an HTTP client: a status and a JSON body with a stable `code`.
///
/// Converting never logs: the edge logs each failed response once, with the [`ErrorCause`]
/// that `internal` keeps from the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds a client should wait before trying again (429, 503).
    pub retry_after: Option<u64>,
    /// What really went wrong, for the log only (never in the body).
    pub cause: Option<String>,
}

/// The hidden cause of a failed response, in the response's extensions: the edge logs it
/// once with the request's other fields.
#[derive(Debug, Clone)]
pub struct ErrorCause(pub String);

/// A value that failed validation: which field, and why. It reads as a 422
/// `validation_failed` over HTTP and as a `validation_failed` rejection on the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::invalid(&invalid.field, invalid.reason)
    }
}

impl From<Invalid> for Rejection {
    fn from(invalid: Invalid) -> Self {
        Rejection::new("validation_failed", invalid.to_string())
            .with_details(json!({ "field": invalid.field, "reason": invalid.reason }))
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A field failed validation: 422, naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{field}: {message}"),
        )
        .with_details(json!({ "field": field, "reason": message }))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 429: the caller sent more than its limit allows; it may try again in `retry_after`
    /// seconds (at least 1).
    pub fn too_many_requests(retry_after: u64, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// An unexpected failure, answered as a bare 500; its cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an unexpected error occurred",
            )
        }
    }
}

/// What any route that reads the database may answer that is not its own doing, for its
/// `#[utoipa::path(responses(...))]`.
#[derive(Debug, utoipa::IntoResponses)]
pub enum ServerErrors {
    /// An unexpected failure.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The database is busy; try again.
    #[response(status = 503)]
    Busy(ErrorBody),
}

/// What a route that needs a token answers without a valid one.
#[derive(Debug, utoipa::IntoResponses)]
pub enum AuthErrors {
    /// No valid token.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
}

/// What an admins-only route answers to anyone else.
#[derive(Debug, utoipa::IntoResponses)]
pub enum AdminErrors {
    /// No valid token.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The caller is not an admin.
    #[response(status = 403)]
    NotAdmin(ErrorBody),
}

/// What a route that takes a JSON body may answer for the body alone (beyond its own 400 and
/// 422), for its `#[utoipa::path(responses(...))]`.
#[derive(Debug, utoipa::IntoResponses)]
pub enum BodyErrors {
    /// The body is too large.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not `application/json`.
    #[response(status = 415)]
    NotJson(ErrorBody),
}

/// The body of every error answer: `{"error": {"code", "message", "details"?}}`.
// What `ApiError` serializes to, and the schema every error response of the API document names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "error": { "code": "not_found", "message": "order 0196f1c2-5b1e-7c4a-9d2e-3f4a5b6c7d8e does not exist" } }))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable, for branching on: `bad_request`, `malformed_json`, `invalid_path`,
    /// `invalid_query`, `validation_failed`, `unauthorized`, `forbidden`, `not_found`,
    /// `already_exists`, `invalid_transition`, `rejected`, `method_not_allowed`,
    /// `payload_too_large`, `unsupported_media_type`, `timeout`, `unavailable`, `internal`...
    pub code: String,
    /// For people.
    pub message: String,
    /// Structured data about the error, when there is any (which field, which product).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub details: Option<Value>,
}

impl From<&ApiError> for ErrorBody {
    fn from(error: &ApiError) -> Self {
        Self {
            error: ErrorDetail {
                code: error.code.to_owned(),
                message: error.message.clone(),
                details: error.details.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::from(&self);
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(ErrorCause(cause));
        }
        response
    }
}

impl From<banyan_db::sqlx::Error> for ApiError {
    fn from(error: banyan_db::sqlx::Error) -> Self {
        match &error {
            banyan_db::sqlx::Error::PoolTimedOut => {
                Self::unavailable("the database is busy; try again")
            }
            _ => Self::internal(error),
        }
    }
}

/// How a domain rejection from another module reads over HTTP. The rejection's code is kept;
/// the status follows its meaning.
impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        if rejection.kind == RejectionKind::Internal {
            return Self::internal(rejection);
        }
        let status = match rejection.kind {
            RejectionKind::NotFound => StatusCode::NOT_FOUND,
            RejectionKind::Conflict => StatusCode::CONFLICT,
            RejectionKind::Invalid | RejectionKind::Internal => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let details = (!rejection.details.is_null()).then_some(rejection.details);
        Self {
            details,
            ..Self::new(
                status,
                "rejected",
                format!("{}: {}", rejection.code, rejection.message),
            )
        }
    }
}

impl From<BusError> for ApiError {
    fn from(error: BusError) -> Self {
        match error {
            BusError::Rejected(rejection) => rejection.into(),
            BusError::Timeout { subject, .. } => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!("{subject} did not answer in time"),
                )
            },
            BusError::Unavailable { subject, .. } => {
                Self::unavailable(format!("{subject} is unavailable"))
            }
            BusError::CircuitOpen {
                subject,
                retry_after,
            } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "circuit_open",
                    format!("{subject} failed too often lately and is not called for now"),
                )
            },
            BusError::Overloaded { subject, .. } => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!("{subject} has too many calls in flight"),
                )
            },
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stock_rejection_becomes_a_conflict_with_its_details() {
        let rejection = Rejection::conflict("insufficient_stock", "only 2 left")
            .with_details(json!({ "product_id": "p" }));
        let error = ApiError::from(BusError::Rejected(rejection));
        assert_eq!(error.status, StatusCode::CONFLICT);
        assert_eq!(error.details, Some(json!({ "product_id": "p" })));
    }

    #[test]
    fn an_invalid_value_reads_as_a_validation_rejection_with_its_field() {
        let rejection = Rejection::from(Invalid::new("on_hand", "must be 0 to 1000000000"));
        assert_eq!(rejection.code, "validation_failed");
        assert_eq!(rejection.kind, RejectionKind::Invalid);
        assert_eq!(rejection.details["field"], "on_hand");
        let error = ApiError::from(Invalid::new("on_hand", "must be 0 to 1000000000"));
        assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.details.unwrap()["field"], "on_hand");
    }

    #[test]
    fn an_internal_failure_keeps_its_cause_out_of_the_body_and_converting_logs_nothing() {
        let error = ApiError::from(BusError::Rejected(Rejection::internal("disk on fire")));
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.message.contains("disk"), "{}", error.message);
        assert_eq!(error.cause.as_deref(), Some("internal: disk on fire"));
        let response = error.into_response();
        let cause = response.extensions().get::<ErrorCause>().unwrap();
        assert!(cause.0.contains("disk on fire"));
    }

    async fn body_of(error: ApiError) -> Value {
        let response = error.into_response();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[tokio::test]
    async fn an_error_answers_the_documented_body_and_details_only_when_there_are_some() {
        let bare = body_of(ApiError::not_found("no such thing")).await;
        assert_eq!(
            bare,
            json!({ "error": { "code": "not_found", "message": "no such thing" } })
        );
        let detailed = body_of(ApiError::invalid("quantity", "must be 1 to 1000")).await;
        assert_eq!(detailed["error"]["details"]["field"], "quantity");
        for body in [bare, detailed] {
            let parsed: ErrorBody = serde_json::from_value(body.clone()).expect("an ErrorBody");
            assert_eq!(serde_json::to_value(parsed).expect("JSON"), body);
        }
    }
}
