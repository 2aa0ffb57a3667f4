//! The HTTP edge: what every request passes through before it reaches a module's route.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use banyan_bus::{Context, CorrelationId, TraceContext};
use banyan_kit::ApiError;
use tracing::Instrument;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Gives the request its causal [`Context`]: the correlation id from `x-request-id` (or a new
/// one), the trace from `traceparent`. Every log line inside carries them; the response echoes
/// `x-request-id`. Also bounds the request's time and logs its outcome once.
/// The edge's limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) timeout: std::time::Duration,
    pub(crate) max_body_bytes: u64,
}

pub(crate) async fn context(
    axum::extract::State(limits): axum::extract::State<Limits>,
    mut request: Request,
    next: Next,
) -> Response {
    let correlation_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(CorrelationId::parse)
        .unwrap_or_default();
    let trace = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    // The request's own deadline: every bus request it makes waits at most what is left.
    let cx = Context::new(correlation_id.clone(), trace).within(limits.timeout);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        "http",
        correlation_id = %correlation_id,
        module = module_of_path(&path),
        %method,
        path = %path,
        trace_id = %cx.trace().trace_hex(),
        span_id = %cx.trace().span_hex(),
        parent_span_id = %cx.parent_span_hex(),
    );
    request.extensions_mut().insert(cx);
    let started = Instant::now();
    // A declared length over the limit is refused before a byte of the body is read. Bodies
    // without a declared length are cut off at the same limit as they are read.
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut response = if declared.is_some_and(|length| length > limits.max_body_bytes) {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {} bytes", limits.max_body_bytes),
        )
        .into_response()
    } else {
        match tokio::time::timeout(limits.timeout, next.run(request).instrument(span.clone())).await
        {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the request took too long and was abandoned",
            )
            .into_response(),
        }
    };
    let status = response.status();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1_000.0;
    span.in_scope(|| {
        if status.is_server_error() {
            // The one place a failed request is logged, with the cause its answer hides.
            let cause = response
                .extensions()
                .get::<banyan_kit::ErrorCause>()
                .map(|c| c.0.as_str());
            tracing::error!(
                status = status.as_u16(),
                elapsed_ms,
                cause,
                "Request failed."
            );
        } else if matches!(path.as_str(), "/health" | "/ready") {
            // An orchestrator's probes come every few seconds: not news.
            tracing::debug!(status = status.as_u16(), elapsed_ms, "Request handled.");
        } else {
            tracing::info!(status = status.as_u16(), elapsed_ms, "Request handled.");
        }
    });
    if let Ok(value) = HeaderValue::from_str(correlation_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Which module a path belongs to, for the log lines of the edge.
pub(crate) fn module_of_path(path: &str) -> &'static str {
    let resource = path
        .strip_prefix("/api/v1/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    match resource {
        "users" => "users",
        "products" => "catalog",
        "inventory" => "inventory",
        "carts" => "cart",
        "orders" => "orders",
        "payments" => "payments",
        "notifications" => "notifications",
        _ => "app",
    }
}

/// The answer to a request shed at the edge (`server.max_in_flight` reached): 503 at once,
/// with `Retry-After`.
pub(crate) async fn shed(_: tower::BoxError) -> ApiError {
    metrics::counter!(crate::telemetry::meters::SHED).increment(1);
    ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is at its limit of requests in flight; try again shortly",
        )
    }
}

/// A panic in a handler becomes a JSON 500; the process lives on.
pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("A request handler panicked.");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an unexpected error occurred",
    )
    .into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Lets a module's extractors find the authenticator.
/// A request that carries `authorization` is answered 401 unless its bearer token is one this
/// shop issued and still accepts (not forged, expired or revoked), on every route, public ones
/// too: so a route answers the same whichever process serves it, and a bad token never
/// reaches the gateway. The accepted caller is kept for the [`Caller`] extractor.
///
/// [`Caller`]: banyan_kit::auth::Caller
pub(crate) async fn refuse_bad_tokens(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !request
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        return next.run(request).await;
    }
    let verified = match request
        .extensions()
        .get::<Arc<banyan_kit::auth::Authenticator>>()
    {
        Some(auth) => match banyan_kit::auth::bearer_token(request.headers()) {
            Some(token) => auth.verify(token),
            None => Err(ApiError::unauthorized(
                "the Authorization header must be `Bearer <token>`",
            )),
        },
        None => Err(ApiError::internal("no authenticator installed")),
    };
    match verified {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refused) => refused.into_response(),
    }
}

pub(crate) fn authenticator_layer(
    auth: Arc<banyan_kit::auth::Authenticator>,
) -> axum::Extension<Arc<banyan_kit::auth::Authenticator>> {
    axum::Extension(auth)
}
