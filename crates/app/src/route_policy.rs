//! Gateway routes (the seeds' `api_gateway_routes`): per path pattern and method, a rate
//! limit, a timeout, retries of safe methods, the circuit breaker on or off, a body limit.
//!
//! `[[gateway.routes]]` in the configuration, first match wins; a request no route matches
//! gets the defaults (`[server]`'s timeout and body limit, no rate limit). The client is told
//! apart by its bearer token's subject, else by its address: the connection's peer, or the
//! address a proxy listed in `gateway.trusted_proxies` put in `X-Forwarded-For`; an untrusted
//! peer's `X-Forwarded-For` is ignored. Rate limits are GCRA (governor), keyed per route and
//! client: `burst` requests at once, then one every `60 / rate_limit_per_minute` seconds; a
//! request over the limit is a 429 with `Retry-After` and the `RateLimit`/`RateLimit-Policy`
//! headers (draft-ietf-httpapi-ratelimit-headers), before anything else runs.
//!
//! The timeout applies in every process that serves the route: main answers 504 when it
//! passes, and a moved module's process, under the same configuration, stops the work it was
//! doing for it (its handlers' transactions roll back). The limits count at the edge clients
//! reach (the monolith, or main in a split), not again behind it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{Request, State, connect_info::Connected, rejection::ExtensionRejection},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use banyan_bus::{
    Context,
    policy::{Breaker, BreakerConfig, BreakerState, Outcome},
};
use banyan_kit::{ApiError, Waited, auth::Caller, extract::ClientIp};
use governor::{Quota, clock::Clock};
use serde::{Deserialize, Serialize};

/// `[gateway]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Peers whose `X-Forwarded-For` is believed (a load balancer in front of main).
    pub trusted_proxies: Vec<IpAddr>,
    /// The routes, first match wins.
    pub routes: Vec<RouteConfig>,
}

/// One row of the routes table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `/api/v1/products/{id}`: `{name}` or `*` is one segment; a last segment `**` is any rest.
    pub path: String,
    /// `GET`, `POST`, ...; every method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Requests per minute per client; no limit when absent.
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
    /// Requests a client may send at once before the rate applies (default: a second's worth,
    /// at least 1).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Abandoned (504) after this long; `server.request_timeout_ms` when absent.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Attempts on other instances of a moved module when one fails, for safe methods only
    /// (GET, HEAD, OPTIONS).
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// Whether main's breaker for the moved module answers for this route.
    #[serde(default = "yes")]
    pub circuit_breaker_enabled: bool,
    /// Largest body, at most `server.max_body_bytes`; that when absent.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

fn default_retry_attempts() -> u32 {
    3
}

fn yes() -> bool {
    true
}

/// A route as it applies: what `GET /api/v1/admin/routes` lists, and what the gateway reads
/// from a request's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EffectiveRoute {
    /// The pattern, or `*` for the defaults.
    pub path: String,
    pub method: String,
    pub rate_limit_per_minute: Option<u32>,
    pub burst: Option<u32>,
    pub timeout_ms: u64,
    pub retry_attempts: u32,
    pub circuit_breaker_enabled: bool,
    pub max_body_bytes: usize,
}

#[derive(Debug)]
struct Route {
    segments: Vec<String>,
    method: Option<Method>,
    effective: Arc<EffectiveRoute>,
    limiter: Option<Limiter>,
}

/// A keyed GCRA limiter that also tells how much of the burst is left (for `RateLimit`).
type Limiter = governor::RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    governor::clock::DefaultClock,
    governor::middleware::StateInformationMiddleware,
>;

/// The compiled table.
#[derive(Debug)]
pub(crate) struct RoutePolicies {
    routes: Vec<Route>,
    default: Arc<EffectiveRoute>,
    trusted_proxies: Vec<IpAddr>,
    /// Whether rate limits and breakers count here: at the edge clients reach, not behind
    /// the gateway.
    limits_here: bool,
    /// One breaker per module, over the answers of its routes (5xx and slow ones count), with
    /// the bus's breaker settings (`bus.policy.breaker`): the same whether the module runs in
    /// this process or behind the gateway.
    breakers: BTreeMap<&'static str, Arc<Breaker>>,
    slow_call: Duration,
    /// Each module's share of the requests in flight (`server.max_in_flight_per_module`).
    shares: BTreeMap<&'static str, Arc<tokio::sync::Semaphore>>,
}

impl GatewayConfig {
    /// Checks every route, naming the first bad key.
    pub(crate) fn validate(&self, max_body_bytes: usize) -> Result<(), (String, String)> {
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("gateway.routes[{i}].{field}");
            if !route.path.starts_with('/') {
                return Err((key("path"), "must start with /".into()));
            }
            if let Some((position, _)) = route.path.split('/').enumerate().find(|(_, s)| *s == "**")
                && position + 1 != route.path.split('/').count()
            {
                return Err((key("path"), "** may only be the last segment".into()));
            }
            if let Some(method) = &route.method
                && Method::from_bytes(method.to_ascii_uppercase().as_bytes()).is_err()
            {
                return Err((key("method"), format!("`{method}` is not an HTTP method")));
            }
            if route.rate_limit_per_minute == Some(0) || route.burst == Some(0) {
                return Err((
                    key("rate_limit_per_minute"),
                    "a rate limit and its burst must be greater than 0".into(),
                ));
            }
            if route.burst.is_some() && route.rate_limit_per_minute.is_none() {
                return Err((key("burst"), "needs rate_limit_per_minute".into()));
            }
            if route.timeout_ms == Some(0) {
                return Err((key("timeout_ms"), "must be greater than 0".into()));
            }
            if route.retry_attempts > 10 {
                return Err((key("retry_attempts"), "must be at most 10".into()));
            }
            if route
                .max_body_bytes
                .is_some_and(|max| max == 0 || max > max_body_bytes)
            {
                return Err((
                    key("max_body_bytes"),
                    "must be between 1 and server.max_body_bytes".into(),
                ));
            }
        }
        Ok(())
    }
}

impl RoutePolicies {
    /// The table of `config`; `timeout` and `max_body_bytes` are the defaults (`[server]`'s),
    /// `per_module` each module's share of requests in flight.
    pub(crate) fn new(
        config: &GatewayConfig,
        breaker: &BreakerConfig,
        (timeout, max_body_bytes, per_module): (Duration, usize, usize),
        limits_here: bool,
    ) -> Self {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let method = route
                    .method
                    .as_deref()
                    .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok());
                let burst = route
                    .rate_limit_per_minute
                    .map(|per_minute| route.burst.unwrap_or((per_minute / 60).max(1)));
                let limiter = route
                    .rate_limit_per_minute
                    .zip(burst)
                    .and_then(|(per_minute, burst)| {
                        Some(
                            Quota::per_minute(NonZeroU32::new(per_minute)?)
                                .allow_burst(NonZeroU32::new(burst)?),
                        )
                    })
                    .map(|quota| {
                        governor::RateLimiter::keyed(quota)
                            .with_middleware::<governor::middleware::StateInformationMiddleware>()
                    });
                Route {
                    segments: route.path.split('/').map(str::to_owned).collect(),
                    effective: Arc::new(EffectiveRoute {
                        path: route.path.clone(),
                        method: method.as_ref().map_or("*".into(), ToString::to_string),
                        rate_limit_per_minute: route.rate_limit_per_minute,
                        burst,
                        timeout_ms: route.timeout_ms.unwrap_or(timeout_ms),
                        retry_attempts: route.retry_attempts,
                        circuit_breaker_enabled: route.circuit_breaker_enabled,
                        max_body_bytes: route.max_body_bytes.unwrap_or(max_body_bytes),
                    }),
                    method,
                    limiter,
                }
            })
            .collect();
        Self {
            routes,
            default: Arc::new(EffectiveRoute {
                path: "*".into(),
                method: "*".into(),
                rate_limit_per_minute: None,
                burst: None,
                timeout_ms,
                retry_attempts: default_retry_attempts(),
                circuit_breaker_enabled: true,
                max_body_bytes,
            }),
            trusted_proxies: config.trusted_proxies.clone(),
            limits_here,
            breakers: crate::modules::all_modules()
                .iter()
                .map(|m| (m.name(), Breaker::new(breaker.clone())))
                .collect(),
            slow_call: Duration::from_millis(breaker.slow_call_ms),
            shares: crate::modules::all_modules()
                .iter()
                .map(|m| {
                    let share = tokio::sync::Semaphore::new(per_module);
                    (m.name(), Arc::new(share))
                })
                .collect(),
        }
    }

    /// Each module's route breaker.
    pub(crate) fn breaker_states(&self) -> BTreeMap<&'static str, BreakerState> {
        self.breakers
            .iter()
            .map(|(module, breaker)| (*module, breaker.state()))
            .collect()
    }

    /// Every route as it applies, then the defaults.
    pub(crate) fn effective(&self) -> Vec<EffectiveRoute> {
        self.routes
            .iter()
            .map(|r| (*r.effective).clone())
            .chain([(*self.default).clone()])
            .collect()
    }

    fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| {
            route.method.as_ref().is_none_or(|m| m == method) && matches(&route.segments, path)
        })
    }

    /// The client's address: the peer's, or, from a trusted proxy, the last address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    fn client_ip(&self, peer: Option<IpAddr>, request: &Request) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = request
            .headers()
            .get_all(HeaderName::from_static("x-forwarded-for"))
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.trusted_proxies.contains(ip))
            .or(Some(peer))
    }
}

/// Whether `path` matches a pattern's segments.
fn matches(pattern: &[String], path: &str) -> bool {
    let mut path = path.split('/');
    for segment in pattern {
        if segment == "**" {
            return true;
        }
        match path.next() {
            Some(part) if segment == "*" || segment.starts_with('{') || segment == part => {}
            _ => return false,
        }
    }
    path.next().is_none()
}

/// The peer's address of a TLS connection, as `ConnectInfo` (plaintext connections have
/// axum's own `ConnectInfo<SocketAddr>`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The middleware: the client's address for the handlers, then the route's rate limit, body
/// limit and timeout (the deadline of the request's context shrinks to it).
pub(crate) async fn apply(
    State(policies): State<Arc<RoutePolicies>>,
    plain: Result<axum::extract::ConnectInfo<SocketAddr>, ExtensionRejection>,
    tls: Result<axum::extract::ConnectInfo<Peer>, ExtensionRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = match (plain, tls) {
        (Ok(info), _) => Some(info.0.ip()),
        (_, Ok(info)) => Some(info.0.0.ip()),
        _ => None,
    };
    let client = policies.client_ip(peer, &request);
    request.extensions_mut().insert(ClientIp(client));
    let found = policies.find(request.method(), request.uri().path());
    let route = found.map_or_else(|| policies.default.clone(), |r| r.effective.clone());
    let mut limit_headers = None;
    if policies.limits_here
        && let Some((route_found, limiter)) = found.and_then(|r| Some((r, r.limiter.as_ref()?)))
    {
        let key = match request.extensions().get::<Caller>() {
            Some(caller) => format!("user:{}", caller.user_id),
            None => format!(
                "ip:{}",
                client.map_or("unknown".into(), |ip| ip.to_string())
            ),
        };
        let burst = route_found.effective.burst.unwrap_or(1);
        let window = 60 * u64::from(burst)
            / u64::from(route_found.effective.rate_limit_per_minute.unwrap_or(1)).max(1);
        let policy = format!("\"route\";q={burst};w={}", window.max(1));
        match limiter.check_key(&key) {
            Ok(snapshot) => {
                limit_headers = Some((
                    policy,
                    format!("\"route\";r={}", snapshot.remaining_burst_capacity()),
                ));
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                metrics::counter!(crate::telemetry::meters::RATE_LIMITED,
                    "route" => route.path.clone())
                .increment(1);
                let mut refused = ApiError::too_many_requests(
                    seconds,
                    format!("too many requests to {} for this client", route.path),
                )
                .into_response();
                set(&mut refused, "ratelimit-policy", &policy);
                set(
                    &mut refused,
                    "ratelimit",
                    &format!("\"route\";r=0;t={}", seconds.max(1)),
                );
                return refused;
            }
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > route.max_body_bytes) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {} bytes", route.max_body_bytes),
        )
        .into_response();
    }
    let timeout = Duration::from_millis(route.timeout_ms);
    if let Some(cx) = request.extensions_mut().get_mut::<Context>() {
        *cx = cx.clone().within(timeout);
    }
    let module = crate::edge::module_of_path(request.uri().path());
    // Load shedding per module: a module whose requests pile up (slow, or stalled behind the
    // gateway) is answered 503 at once beyond its share, and the others keep theirs.
    let _share = match policies
        .shares
        .get(module)
        .map(|s| s.clone().try_acquire_owned())
    {
        Some(Err(_)) => {
            return ApiError::from(banyan_bus::BusError::Overloaded {
                subject: format!("module {module}"),
                reason: "too many requests in flight".into(),
            })
            .into_response();
        }
        Some(Ok(permit)) => Some(permit),
        None => None,
    };
    let breaker = policies
        .breakers
        .get(module)
        .filter(|_| policies.limits_here && route.circuit_breaker_enabled);
    let pass = match breaker.map(Breaker::admit) {
        Some(Err(retry_after)) => {
            return ApiError::from(banyan_bus::BusError::CircuitOpen {
                subject: format!("module {module}"),
                retry_after,
            })
            .into_response();
        }
        Some(Ok(pass)) => Some(pass),
        None => None,
    };
    request.extensions_mut().insert(route);
    let started = std::time::Instant::now();
    let mut response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took longer than its route allows and was abandoned",
        )
        .into_response(),
    };
    // Time the client asked the answer to wait for an outcome is not the module's slowness.
    let waited = response.extensions().get::<Waited>().map(|w| w.0);
    if let Some(pass) = pass {
        let busy = started.elapsed().saturating_sub(waited.unwrap_or_default());
        pass.report(Outcome {
            failed: response.status().is_server_error(),
            slow: busy >= policies.slow_call,
        });
    }
    // Behind the gateway, the wait travels back to main's breaker as a header.
    if !policies.limits_here
        && let Some(waited) = waited
    {
        set(
            &mut response,
            Waited::HEADER,
            &waited.as_millis().to_string(),
        );
    }
    if let Some((policy, limit)) = limit_headers {
        set(&mut response, "ratelimit-policy", &policy);
        set(&mut response, "ratelimit", &limit);
    }
    response
}

fn set(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

/// Forgets clients not seen for a while, so the limiters' tables stay bounded.
pub(crate) fn spawn_cleanup(policies: &Arc<RoutePolicies>) {
    let policies = Arc::downgrade(policies);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            let Some(policies) = policies.upgrade() else {
                return;
            };
            for limiter in policies.routes.iter().filter_map(|r| r.limiter.as_ref()) {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    });
}

/// The routes table as it applies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Routes {
    /// First match wins; the last row (`*`) is the defaults.
    routes: Vec<EffectiveRoute>,
    /// Peers whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<String>,
    /// Each module's route breaker in this process (`closed`, `open`, `half_open`).
    #[schema(value_type = BTreeMap<String, String>)]
    breakers: BTreeMap<&'static str, BreakerState>,
}

/// `GET /api/v1/admin/routes`: the effective gateway routes, admins only.
#[utoipa::path(
    get,
    path = "/api/v1/admin/routes",
    tag = crate::openapi::OPERATIONS_TAG,
    operation_id = "list_routes",
    summary = "The gateway routes as they apply",
    description = "Admins only. Each route's rate limit, timeout, retries, breaker and body \
        limit, first match wins, then the defaults.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The routes.", body = Routes),
        banyan_kit::AdminErrors,
        banyan_kit::ServerErrors,
    )
)]
async fn list_routes(
    State(policies): State<Arc<RoutePolicies>>,
    caller: Caller,
) -> banyan_kit::ApiResult<banyan_kit::extract::Json<Routes>> {
    caller.require_admin()?;
    Ok(banyan_kit::extract::Json(Routes {
        routes: policies.effective(),
        trusted_proxies: policies
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect(),
        breakers: policies.breaker_states(),
    }))
}

/// The admin route that lists the table.
pub(crate) fn admin_routes(policies: Arc<RoutePolicies>) -> utoipa_axum::router::OpenApiRouter {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list_routes))
        .with_state(policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        let p = |s: &str| s.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert!(matches(&p("/api/v1/products/{id}"), "/api/v1/products/42"));
        assert!(!matches(
            &p("/api/v1/products/{id}"),
            "/api/v1/products/42/x"
        ));
        assert!(!matches(&p("/api/v1/products/{id}"), "/api/v1/products"));
        assert!(matches(&p("/api/v1/payments/**"), "/api/v1/payments/a/b"));
        assert!(matches(&p("/api/v1/users/login"), "/api/v1/users/login"));
        assert!(!matches(&p("/api/v1/users/login"), "/api/v1/users/loginx"));
    }

    #[test]
    fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let policies = RoutePolicies::new(
            &GatewayConfig {
                trusted_proxies: vec![proxy],
                routes: vec![],
            },
            &BreakerConfig::default(),
            (Duration::from_secs(1), 1024, 16),
            true,
        );
        let request = || {
            axum::http::Request::builder()
                .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
                .body(axum::body::Body::empty())
                .unwrap_or_default()
        };
        let stranger = IpAddr::from([198, 51, 100, 7]);
        assert_eq!(
            policies.client_ip(Some(stranger), &request()),
            Some(stranger)
        );
        assert_eq!(
            policies.client_ip(Some(proxy), &request()),
            Some(IpAddr::from([203, 0, 113, 9]))
        );
    }
}
