//! The receiving side: the two endpoints, their refusals, and what each hands the bus.

use super::*;

struct Server {
    bus: Bus,
    peers: Arc<dyn Peers>,
}

/// The bus's HTTP endpoints, to merge into the application's router:
/// `POST /bus/v1/requests/{subject}` and `POST /bus/v1/events/{subject}?module={m}`.
/// Every call must carry a credential `peers` accepts, from a process it permits the subject.
pub fn routes(bus: Bus, peers: Arc<dyn Peers>) -> Router {
    let server = Arc::new(Server { bus, peers });
    Router::new()
        .route("/bus/v1/requests/{subject}", post(serve_request))
        .route("/bus/v1/events/{subject}", post(serve_event))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(server)
}

/// An answer with an error body: `{"error": {"kind", "reason"}}`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
}

impl Refusal {
    fn new(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            reason: reason.into(),
        }
    }

    fn codec(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "codec", reason)
    }

    pub(crate) fn from_bus(error: &BusError) -> Self {
        let status = match error {
            BusError::NoHandler { .. } => StatusCode::NOT_FOUND,
            BusError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            BusError::Unavailable { .. }
            | BusError::CircuitOpen { .. }
            | BusError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            BusError::Codec { .. } => StatusCode::BAD_REQUEST,
            // Rejections are answers, not refusals; a stray one is still told apart.
            BusError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, error.kind(), error.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "kind": self.kind, "reason": self.reason } });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The calling process, if its credential is accepted; logs why a call is refused, never the
/// token. Every transport that carries headers checks its callers this way.
pub(crate) fn authenticate(
    peers: &dyn Peers,
    headers: &HeaderMap,
    route: &str,
) -> Result<String, Refusal> {
    let checked = match bearer_token(headers) {
        _ if !headers.contains_key(header::AUTHORIZATION) => {
            Err("no authorization header".to_owned())
        }
        None => Err("not a bearer token".to_owned()),
        Some(token) => peers.authenticate(token),
    };
    checked.map_err(|reason| {
        tracing::warn!(route, reason, "Refused an unauthenticated bus call.");
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    })
}

/// Whether `peer` may hand in `kind` on `subject`; a refusal is logged as a warning.
pub(crate) fn permit(
    peers: &dyn Peers,
    peer: &str,
    kind: MessageKind,
    subject: &str,
) -> Result<(), Refusal> {
    if peers.permits(peer, kind, subject) {
        return Ok(());
    }
    tracing::warn!(
        peer,
        subject,
        ?kind,
        "Refused a bus call the calling process may not make."
    );
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("process `{peer}` may not hand in {subject}"),
    ))
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), trimmed;
/// `None` without one. Every bearer check of Banyan reads the header this way.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case("bearer ").then(|| token.trim())
}

/// Whether `token` is the shared `secret` (never, if the secret is empty), compared in time
/// that does not depend on where they differ.
pub fn same_secret(token: &str, secret: &str) -> bool {
    use subtle::ConstantTimeEq;

    !secret.is_empty() && bool::from(token.as_bytes().ct_eq(secret.as_bytes()))
}

fn rejected_response(rejection: &Rejection) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(serde_json::json!({ "rejection": rejection })),
    )
        .into_response()
}

fn status_response(status: &str) -> Response {
    (
        StatusCode::OK,
        Json(serde_json::json!({ "status": status })),
    )
        .into_response()
}

/// Reads the body, or says why not (413 over the limit).
async fn read_body(request: Request, subject: &str) -> Result<Bytes, Refusal> {
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            let reason = rejection.body_text();
            tracing::warn!(subject, %status, %reason, "Could not read the body of a bus call.");
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "codec"
            } else {
                "unavailable"
            };
            Refusal::new(status, kind, reason)
        })
}

fn subject_from(path: Result<Path<String>, PathRejection>, route: &str) -> Result<String, Refusal> {
    match path {
        Ok(Path(subject)) if !subject.is_empty() => Ok(subject),
        _ => {
            tracing::warn!(
                route,
                "Refused a bus call: the subject in its path is unreadable."
            );
            Err(Refusal::codec("the subject in the path is unreadable"))
        }
    }
}

/// Logs a refused message, naming the reason, and passes the refusal on.
fn refuse(what: &str, subject: &str, reason: String) -> Refusal {
    tracing::warn!(subject, %reason, "Refused a bus {what}: its envelope is incomplete or malformed.");
    Refusal::codec(reason)
}

/// `POST /bus/v1/requests/{subject}`: one request, answered by this process's handler.
async fn serve_request(
    State(server): State<Arc<Server>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    answer_request(&server, path, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer_request(
    server: &Server,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Refusal> {
    const ROUTE: &str = "/bus/v1/requests";
    let peer = authenticate(&*server.peers, request.headers(), ROUTE)?;
    let subject = subject_from(path, ROUTE)?;
    permit(&*server.peers, &peer, MessageKind::Request, &subject)?;
    let headers = request.headers();
    let envelope = envelope_from_headers(headers, &subject)
        .map_err(|reason| refuse("request", &subject, reason))?;
    let deadline = deadline_from(headers, &server.bus)
        .map_err(|reason| refuse("request", &subject, reason))?;
    let body = read_body(request, &subject).await?;
    let correlation_id = envelope.correlation_id.clone();
    match server
        .bus
        .inbound("http")
        .serve_remote_request(envelope, &body, deadline)
        .await
    {
        Ok(RemoteReply::Ok(json)) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from_owner(json),
        )
            .into_response()),
        Ok(RemoteReply::Rejected(rejection)) => Ok(rejected_response(&rejection)),
        Err(error) => {
            tracing::warn!(%subject, %correlation_id, %error, "A bus request from another process failed.");
            Err(Refusal::from_bus(&error))
        }
    }
}

#[derive(Deserialize)]
struct EventTarget {
    module: String,
}

/// `POST /bus/v1/events/{subject}?module={m}`: one event for one subscribing module here.
async fn serve_event(
    State(server): State<Arc<Server>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    answer_event(&server, path, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Answers one pushed event. The answer is the pusher's acknowledgement, so it must mean what
/// it says:
/// - **2xx only when the event is safe here**: handled by the module's worker (in order with
///   the aggregate's other events, through the module's inbox) or kept in its dead letters.
///   The pusher then counts this module as done and, once every module is, its outbox row goes.
/// - **4xx for what can never succeed as sent** (no secret, a malformed envelope, a module not
///   hosted here): the pusher gives up on this instance rather than retrying forever.
/// - **5xx for what may succeed later** (shutting down, the worker failed every attempt and
///   could not even record a dead letter): the pusher retries, then its relay resends.
///
/// Poison (a subject or version this module does not subscribe to, a body that is not JSON)
/// is answered 200 `dead_lettered`: retrying would fail identically, so it is recorded for an
/// operator instead, and the rest of the stream flows on.
async fn answer_event(
    server: &Server,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Refusal> {
    const ROUTE: &str = "/bus/v1/events";
    let peer = authenticate(&*server.peers, request.headers(), ROUTE)?;
    let subject = subject_from(path, ROUTE)?;
    permit(&*server.peers, &peer, MessageKind::Event, &subject)?;
    let module = match Query::<EventTarget>::try_from_uri(request.uri()) {
        Ok(Query(target)) if !target.module.is_empty() => target.module,
        _ => {
            let reason = "the `module` query parameter is missing".to_owned();
            return Err(refuse("event", &subject, reason));
        }
    };
    let headers = request.headers();
    let envelope = envelope_from_headers(headers, &subject)
        .map_err(|reason| refuse("event", &subject, reason))?;
    let aggregate = aggregate_from(headers).map_err(|reason| refuse("event", &subject, reason))?;
    // Everything the headers say is checked before the body is read: a refusal costs nothing.
    let body = read_body(request, &subject).await?;
    match server
        .bus
        .inbound("http")
        .accept_pushed_event(&module, envelope, &body, aggregate)
        .await
    {
        Ok(accepted) => Ok(status_response(accepted.as_str())),
        Err(error) => Err(Refusal::from_bus(&error)),
    }
}

/// How long a request may take: its [`DEADLINE_MS`] header (at most [`MAX_DEADLINE`]), or
/// the bus's request timeout without one.
pub(crate) fn deadline_from(headers: &HeaderMap, bus: &Bus) -> Result<Duration, String> {
    match wire::Headers::text(headers, DEADLINE_MS)? {
        None => Ok(bus.config().request_timeout()),
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms).min(MAX_DEADLINE)),
            _ => Err(format!(
                "`{DEADLINE_MS}` is not a positive number of milliseconds"
            )),
        },
    }
}

/// The aggregate of a pushed event, from its [`AGGREGATE_ID`] header.
pub(crate) fn aggregate_from(headers: &HeaderMap) -> Result<Uuid, String> {
    wire::Headers::text(headers, AGGREGATE_ID)
        .and_then(|a| a.ok_or_else(|| format!("header `{AGGREGATE_ID}` is missing")))
        .and_then(|a| {
            Uuid::parse_str(a).map_err(|_| format!("header `{AGGREGATE_ID}` is not a UUID"))
        })
}
