//! Extractors whose every rejection is a JSON [`ApiError`], never axum's plain-text default.

use axum::{
    extract::{
        FromRequest, FromRequestParts,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use banyan_bus::Context;

use crate::ApiError;

/// A JSON body. Malformed JSON is a 400, a body of the wrong shape (unknown, missing or
/// mistyped fields) a 422, a missing content type a 415, an oversized body a 413.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "validation_failed",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "bad_request",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

/// Path parameters; one that does not parse (an id that is no UUID) is a 400.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

/// Query parameters; unknown or unparsable ones are a 400.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

/// The causal context of this HTTP request: its correlation id (from `x-request-id`) and
/// trace context (from `traceparent`), put in the request by the app's middleware.
#[derive(Debug, Clone)]
pub struct Cx(pub Context);

impl<S: Send + Sync> FromRequestParts<S> for Cx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Cx(parts
            .extensions
            .get::<Context>()
            .cloned()
            .unwrap_or_else(Context::root)))
    }
}

impl std::ops::Deref for Cx {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.0
    }
}

/// The client's address as the edge established it: the connection's peer, or the address a
/// trusted proxy put in `X-Forwarded-For` (`[gateway] trusted_proxies`), never a header an
/// untrusted peer wrote. The edge puts it in the request's extensions; `None` where no edge
/// ran (a module's router under test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Self>()
            .copied()
            .unwrap_or(Self(None)))
    }
}
