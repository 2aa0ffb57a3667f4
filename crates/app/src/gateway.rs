//! The gateway: the main process keeps answering every `/api/v1/...` route; those of a module
//! hosted in another process are proxied to a healthy instance of it, the one the module's
//! balance rule picks (round robin unless configured).
//!
//! Before anything is forwarded the gateway refuses a path that could resolve elsewhere than
//! it reads (400); a bearer token main does not accept was answered 401 by its edge already
//! (`edge::refuse_bad_tokens`), so a forged, expired or revoked token never reaches a moved
//! module. The request then goes as it came (method, path, query, body, the
//! end-to-end headers including `authorization`), without hop-by-hop headers (and those the
//! `connection` header names) or the bus's own `banyan-*` headers, with `x-request-id` set to
//! the request's correlation id and `traceparent` to the gateway's span, so the correlation
//! crosses the hop. The answer comes back as the instance gave it, minus hop-by-hop headers.
//! An instance that refuses the connection is skipped (nothing was sent); no healthy instance,
//! or none reachable, is a 503 with `Retry-After`.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use banyan_bus::Context;
use banyan_kit::{ApiError, Waited};

use crate::{edge, registry::Registry, topology::TopologyConfig};

/// Proxies the routes of the modules hosted elsewhere.
#[derive(Debug)]
pub(crate) struct Gateway {
    topology: Arc<TopologyConfig>,
    registry: Arc<Registry>,
    client: reqwest::Client,
    max_body_bytes: usize,
    /// Which healthy instance a request goes to first (the module's balance rule).
    balancer: banyan_bus::balance::Balancer,
}

const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), and `host`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header of the client's request may travel on: not hop-by-hop, not named by
/// its `connection` header, and not one of the bus's `banyan-*` headers (only processes set
/// those).
fn forwardable(name: &HeaderName, connection: &[String]) -> bool {
    let name = name.as_str();
    !HOP_BY_HOP.contains(&name)
        && !connection.iter().any(|c| c == name)
        && !name.starts_with("banyan-")
        && name != header::HOST
        && name != header::CONTENT_LENGTH
}

/// The header names listed in `connection` (lower-cased), hop-by-hop too (RFC 9110 §7.6.1).
fn named_by_connection(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

impl Gateway {
    pub(crate) fn new(
        topology: Arc<TopologyConfig>,
        registry: Arc<Registry>,
        timeout: Duration,
        connect_timeout: Duration,
        max_body_bytes: usize,
    ) -> anyhow::Result<Self> {
        let client = crate::tls::client_builder(topology.tls.as_ref())
            .map_err(|e| anyhow::anyhow!("topology.tls: {e}"))?
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .build()?;
        Ok(Self {
            balancer: topology.balancer(registry.weights()),
            topology,
            registry,
            client,
            max_body_bytes,
        })
    }

    /// The fallback of the main process's router: proxies a moved module's route, or answers
    /// 404 as the monolith does.
    pub(crate) async fn handle(self: Arc<Self>, request: Request) -> Response {
        if let Err(refused) = unambiguous(request.uri().path()) {
            return refused.into_response();
        }
        let module = edge::module_of_path(request.uri().path());
        if module == "app" || self.topology.hosts(module) {
            return edge::not_found().await.into_response();
        }
        let known = self.registry.known_module(module);
        let mut response = self
            .proxy(module, request)
            .await
            .unwrap_or_else(IntoResponse::into_response);
        // Counted under the module it went to: only a module Banyan has, so that the metric's
        // labels stay bounded whatever paths clients send.
        if let Some(module) = known {
            (response.extensions_mut()).insert(crate::telemetry::meters::Proxied(module));
        }
        response
    }

    async fn proxy(&self, module: &str, request: Request) -> Result<Response, ApiError> {
        let mut instances = self.registry.healthy(module);
        if instances.is_empty() {
            return Err(ApiError::unavailable(format!(
                "no healthy instance of module {module} is registered"
            )));
        }
        let cx = request.extensions().get::<Context>().cloned();
        let request_route = request
            .extensions()
            .get::<Arc<crate::route_policy::EffectiveRoute>>()
            .cloned();
        let client = request
            .extensions()
            .get::<banyan_kit::extract::ClientIp>()
            .and_then(|ip| ip.0);
        // Consistent hashing keys on the caller: its account, else its address.
        let caller_key = request
            .extensions()
            .get::<banyan_kit::auth::Caller>()
            .map(|caller| caller.user_id.to_string())
            .or_else(|| client.map(|ip| ip.to_string()));
        self.balancer
            .order(module, &mut instances, caller_key.as_deref());
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {} bytes", self.max_body_bytes),
                )
            })?;
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
        let connection = named_by_connection(&parts.headers);
        for (name, value) in &parts.headers {
            if forwardable(name, &connection) {
                headers.append(name.clone(), value.clone());
            }
        }
        // The client's address as main established it (never the client's own claim, which
        // `RoutePolicies::client_ip` already weighed): the moved module trusts main for it.
        headers.remove(FORWARDED_FOR);
        if let Some(ip) = client.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok()) {
            headers.insert(FORWARDED_FOR, ip);
        }
        if let Some(cx) = &cx {
            if let Ok(id) = HeaderValue::from_str(cx.correlation_id().as_str()) {
                headers.insert(edge::REQUEST_ID, id);
            }
            if let Ok(trace) = HeaderValue::from_str(&cx.trace().to_string()) {
                headers.insert(HeaderName::from_static("traceparent"), trace);
            }
        }
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        // A safe request (GET, HEAD, OPTIONS) that an instance failed or did not answer in
        // time is tried on the next one, up to its route's `retry_attempts`; anything else
        // goes once, because it may have taken effect.
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut retries_left = match request_route {
            Some(route) if safe => route.retry_attempts,
            _ => 0,
        };
        let mut refused = 0;
        let mut last_failure = None;
        for (i, base) in instances.iter().enumerate() {
            let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
            let _in_flight = self.balancer.begin(base);
            let sent = self
                .client
                .request(parts.method.clone(), url)
                .headers(headers.clone())
                .body(body.clone())
                .send()
                .await;
            let another = i + 1 < instances.len();
            // Main's outlier ejection counts what each instance does with proxied requests.
            let failed = match &sent {
                Ok(answer) => answer.status().is_server_error(),
                Err(_) => true,
            };
            self.registry.proxied(base, !failed);
            let failure = match sent {
                Ok(answer)
                    if matches!(answer.status().as_u16(), 502..=504)
                        && another
                        && retries_left > 0 =>
                {
                    tracing::warn!(module, instance = %base, status = %answer.status(), "Instance failed a safe request; trying the next.");
                    pass_back(answer).await
                }
                Ok(answer) => return Ok(pass_back(answer).await),
                // Not connected: nothing was sent, so the next instance is safe to try.
                Err(error) if error.is_connect() => {
                    tracing::warn!(module, instance = %base, %error, "Instance unreachable; trying the next.");
                    refused += 1;
                    continue;
                }
                Err(error) if error.is_timeout() => {
                    tracing::warn!(module, instance = %base, %error, "Instance did not answer in time.");
                    ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        format!("module {module} did not answer in time"),
                    )
                    .into_response()
                }
                Err(error) => {
                    tracing::warn!(module, instance = %base, %error, "Proxied request failed.");
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        format!("module {module} failed to answer"),
                    )
                    .into_response()
                }
            };
            if !(another && retries_left > 0) {
                return Ok(failure);
            }
            retries_left -= 1;
            last_failure = Some(failure);
        }
        match last_failure {
            Some(failure) => Ok(failure),
            None => Err(ApiError::unavailable(format!(
                "no instance of module {module} could be reached ({refused} tried)"
            ))),
        }
    }
}

/// Refuses a path that could resolve elsewhere than it reads: a dot segment (`.`, `..`), an
/// encoded dot, slash or backslash (`%2e`, `%2f`, `%5c`), a backslash or an empty segment.
/// The URL the gateway builds (or a proxy in between, or the instance) would resolve it, and
/// `/api/v1/payments/../../../bus/v1/...` would reach a moved module's internal routes through
/// main's public port. So it is refused with 400 before anything is forwarded, never "fixed".
fn unambiguous(path: &str) -> Result<(), ApiError> {
    let lower = path.to_ascii_lowercase();
    let encoded = ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e));
    let segments = path.strip_prefix('/').unwrap_or(path).split('/');
    let dotted = segments
        .clone()
        .any(|segment| segment == "." || segment == "..");
    let empty = segments.clone().rev().skip(1).any(str::is_empty);
    if encoded || dotted || empty || path.contains('\\') {
        tracing::warn!(
            path,
            "Refused a path with dot segments or encoded separators."
        );
        return Err(ApiError::bad_request(
            "the path has dot segments, empty segments or encoded separators",
        ));
    }
    Ok(())
}

/// The instance's answer as it is (without per-connection headers).
async fn pass_back(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let mut headers = HeaderMap::with_capacity(answer.headers().len());
    let connection = named_by_connection(answer.headers());
    for (name, value) in answer.headers() {
        if forwardable(name, &connection) {
            headers.append(name.clone(), value.clone());
        }
    }
    let waited = answer
        .headers()
        .get(Waited::HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map(|ms| Waited(Duration::from_millis(ms)));
    match answer.bytes().await {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            if let Some(waited) = waited {
                response.extensions_mut().insert(waited);
            }
            response
        }
        Err(error) => {
            tracing::warn!(%error, "The proxied answer broke off.");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the module's answer broke off",
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_could_resolve_elsewhere_is_refused_and_a_plain_one_passes() {
        for bad in [
            "/api/v1/payments/../../../ready",
            "/api/v1/payments/./x",
            "/api/v1/payments/%2e%2e/%2E%2E/bus/v1/requests/x",
            "/api/v1/payments/..%2f..%2fready",
            "/api/v1/payments/%5c..",
            "/api/v1/payments\\..\\ready",
            "/api/v1//payments",
            "/api/v1/payments/..",
        ] {
            assert!(unambiguous(bad).is_err(), "{bad}");
        }
        for good in [
            "/api/v1/payments/0196f1c2-5b1e-7c4a-9d2e-3f4a5b6c7d8e",
            "/api/v1/payments/",
            "/api/v1/products/a.b..c",
            "/api/v1/products/...",
        ] {
            assert!(unambiguous(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn only_end_to_end_headers_travel() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer x"),
            ("content-type", "application/json"),
            ("connection", "keep-alive, X-Client-Hop"),
            ("x-client-hop", "1"),
            ("te", "trailers"),
            ("banyan-subject", "payments.refund.v1"),
            ("banyan-deadline-ms", "1"),
            ("host", "main"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let connection = named_by_connection(&headers);
        let kept: Vec<&str> = headers
            .keys()
            .filter(|name| forwardable(name, &connection))
            .map(HeaderName::as_str)
            .collect();
        assert_eq!(kept, ["authorization", "content-type"]);
    }
}
