//! The HTTP adapter: the bus between processes as plain JSON over HTTP/1.1.
//!
//! # Client: [`HttpTransport`]
//! A [`Transport`] that finds a module's instances through an [`Instances`] resolver (a static
//! map today, the registry later) and balances them round robin, one cursor per module.
//!
//! - **Requests** go to one instance: `POST {base}/bus/v1/requests/{subject}`, the deadline in
//!   `banyan-deadline-ms` and as the client timeout. An instance that refuses the connection is
//!   skipped (nothing was sent, so trying the next is safe); anything that may have reached the
//!   handler (a timeout, a connection lost after sending) is not retried.
//! - **Events** go to every subscribing module hosted elsewhere ([`Subscribers`]), to one
//!   instance of each: `POST {base}/bus/v1/events/{subject}?module={m}`. `publish` is `Ok` only
//!   when every such module answered 2xx (handled or dead-lettered there); it retries with
//!   exponential backoff and jitter for a few attempts, then gives up with
//!   [`BusError::Unavailable`]: the outbox relay resends later, and receivers dedupe with
//!   their inbox.
//!
//! # Server: [`routes`]
//! The receiving side, a state-less `axum::Router` the application merges into its own. Both
//! endpoints demand `authorization: Bearer <shared secret>` (401 otherwise), cap bodies at
//! [`MAX_BODY_BYTES`] (413), and rebuild the [`Envelope`] from the headers (400 `codec` when one
//! is missing or malformed).
//!
//! # Wire layout
//! Envelope headers on both endpoints: [`MESSAGE_ID`], [`CORRELATION_ID`], [`CAUSATION_ID`]
//! (optional), [`TIMESTAMP`], [`TRACEPARENT`] (optional); requests add [`DEADLINE_MS`], events
//! add [`AGGREGATE_ID`]. Bodies are the message's JSON. Answers:
//!
//! | status | body | meaning |
//! |---|---|---|
//! | 200 | the response's JSON | request handled |
//! | 200 | `{"status":"delivered"}` | event handled (or dead-lettered by its handler) |
//! | 200 | `{"status":"dead_lettered"}` | poison event (bad JSON, unknown subject or version), kept in dead letters |
//! | 422 | `{"rejection":{"code","message","details"}}` | the handler's domain rejection |
//! | 400 | `{"error":{"kind":"codec","reason"}}` | bad envelope headers or undecodable request |
//! | 401 | `{"error":{"kind":"unauthorized","reason"}}` | missing or wrong shared secret |
//! | 404 | `{"error":{"kind":"no_handler","reason"}}` | no handler (request) or module not hosted here (event) |
//! | 413 | `{"error":{"kind":"codec","reason"}}` | body over [`MAX_BODY_BYTES`] |
//! | 503 | `{"error":{"kind":"unavailable","reason"}}` | shutting down |
//! | 504 | `{"error":{"kind":"timeout","reason"}}` | the deadline passed |

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, FromRequest, Path, Query, Request, State, rejection::PathRejection,
    },
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use banyan_message::{Rejection, module_of};
use futures::future::{BoxFuture, join_all};
use serde::Deserialize;
use uuid::Uuid;

use crate::{Bus, BusError, CorrelationId, Envelope, RemoteReply, TraceContext, Transport};

// ------------------------------------------------------------------------------ wire layout

/// The envelope's message id (a UUID).
pub const MESSAGE_ID: &str = "banyan-message-id";
/// The correlation id (short printable ASCII, see [`CorrelationId::parse`]).
pub const CORRELATION_ID: &str = "banyan-correlation-id";
/// The causing message's id (a UUID); absent for a first hop.
pub const CAUSATION_ID: &str = "banyan-causation-id";
/// When the message was made, in milliseconds since the Unix epoch.
pub const TIMESTAMP: &str = "banyan-timestamp";
/// W3C trace context of the sending span; absent or malformed means "start a new trace".
pub const TRACEPARENT: &str = "traceparent";
/// Requests only: how long the caller still waits, in milliseconds.
pub const DEADLINE_MS: &str = "banyan-deadline-ms";
/// Events only: the aggregate id (a UUID), which the receiver partitions by to keep order.
pub const AGGREGATE_ID: &str = "banyan-aggregate-id";

/// The largest body either endpoint accepts; more is refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest deadline a caller may ask the server to wait.
const MAX_DEADLINE: Duration = Duration::from_secs(600);

/// The path of request `subject`.
pub fn request_path(subject: &str) -> String {
    format!("/bus/v1/requests/{subject}")
}

/// The path of event `subject` (the subscribing module goes in the `module` query parameter).
pub fn event_path(subject: &str) -> String {
    format!("/bus/v1/events/{subject}")
}

/// The envelope as HTTP headers: message, correlation and causation ids, timestamp, trace.
pub fn envelope_headers(envelope: &Envelope) -> Result<HeaderMap, BusError> {
    let mut headers = HeaderMap::with_capacity(6);
    let value = |text: &str, what: &str| {
        HeaderValue::from_str(text).map_err(|_| BusError::Codec {
            subject: envelope.subject.clone(),
            reason: format!("the {what} is not a valid header value"),
        })
    };
    headers.insert(
        MESSAGE_ID,
        value(&envelope.message_id.to_string(), "message id")?,
    );
    headers.insert(
        CORRELATION_ID,
        value(envelope.correlation_id.as_str(), "correlation id")?,
    );
    if let Some(causation) = envelope.causation_id {
        headers.insert(CAUSATION_ID, value(&causation.to_string(), "causation id")?);
    }
    headers.insert(
        TIMESTAMP,
        value(&envelope.timestamp_ms.to_string(), "timestamp")?,
    );
    // A trace context that cannot travel is dropped: the receiver starts a new trace.
    if let Some(traceparent) = envelope.traceparent.as_deref()
        && let Ok(traceparent) = HeaderValue::from_str(traceparent)
    {
        headers.insert(TRACEPARENT, traceparent);
    }
    Ok(headers)
}

/// Rebuilds the envelope of a message on `subject` from its headers; the error names what is
/// missing or malformed.
pub fn envelope_from_headers(headers: &HeaderMap, subject: &str) -> Result<Envelope, String> {
    let message_id =
        uuid_header(headers, MESSAGE_ID)?.ok_or_else(|| format!("`{MESSAGE_ID}` is missing"))?;
    let correlation = text_header(headers, CORRELATION_ID)?
        .ok_or_else(|| format!("`{CORRELATION_ID}` is missing"))?;
    let correlation_id = CorrelationId::parse(correlation)
        .ok_or_else(|| format!("`{CORRELATION_ID}` is not short printable ASCII"))?;
    let causation_id = uuid_header(headers, CAUSATION_ID)?;
    let timestamp_ms = text_header(headers, TIMESTAMP)?
        .ok_or_else(|| format!("`{TIMESTAMP}` is missing"))?
        .parse::<i64>()
        .map_err(|_| format!("`{TIMESTAMP}` is not a number of milliseconds"))?;
    // A malformed trace context is ignored (W3C: restart the trace), not refused.
    let traceparent = text_header(headers, TRACEPARENT)
        .ok()
        .flatten()
        .filter(|t| TraceContext::parse(t).is_some())
        .map(str::to_owned);
    Ok(Envelope {
        message_id,
        subject: subject.to_owned(),
        correlation_id,
        causation_id,
        timestamp_ms,
        traceparent,
    })
}

fn text_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| format!("`{name}` is not visible ASCII"))
        })
        .transpose()
}

fn uuid_header(headers: &HeaderMap, name: &str) -> Result<Option<Uuid>, String> {
    text_header(headers, name)?
        .map(|v| Uuid::parse_str(v).map_err(|_| format!("`{name}` is not a UUID")))
        .transpose()
}

// ------------------------------------------------------------------------------ resolvers

/// Where the instances of a module are: base URLs such as `http://10.0.0.7:8080` (a path
/// prefix is kept). Asked on every call, so a registry may change its answer at any time.
pub trait Instances: Send + Sync + 'static {
    fn instances(&self, module: &str) -> Vec<String>;
}

/// Which modules hosted elsewhere subscribe to an event subject; each gets every event once.
pub trait Subscribers: Send + Sync + 'static {
    fn modules_for(&self, subject: &str) -> Vec<String>;
}

/// A fixed map of module → base URLs, from configuration.
#[derive(Debug, Clone, Default)]
pub struct StaticInstances {
    by_module: HashMap<String, Vec<String>>,
}

impl StaticInstances {
    pub fn new<M, U>(map: impl IntoIterator<Item = (M, Vec<U>)>) -> Self
    where
        M: Into<String>,
        U: Into<String>,
    {
        Self {
            by_module: map
                .into_iter()
                .map(|(m, urls)| (m.into(), urls.into_iter().map(Into::into).collect()))
                .collect(),
        }
    }
}

impl Instances for StaticInstances {
    fn instances(&self, module: &str) -> Vec<String> {
        self.by_module.get(module).cloned().unwrap_or_default()
    }
}

/// A fixed map of event subject → subscribing modules hosted elsewhere.
#[derive(Debug, Clone, Default)]
pub struct StaticSubscribers {
    by_subject: HashMap<String, Vec<String>>,
}

impl StaticSubscribers {
    pub fn new<S, M>(map: impl IntoIterator<Item = (S, Vec<M>)>) -> Self
    where
        S: Into<String>,
        M: Into<String>,
    {
        Self {
            by_subject: map
                .into_iter()
                .map(|(s, ms)| (s.into(), ms.into_iter().map(Into::into).collect()))
                .collect(),
        }
    }
}

impl Subscribers for StaticSubscribers {
    fn modules_for(&self, subject: &str) -> Vec<String> {
        self.by_subject.get(subject).cloned().unwrap_or_default()
    }
}

// ------------------------------------------------------------------------------ client

/// Tunables of the HTTP client side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTransportConfig {
    /// How long to wait for a TCP connection before trying the next instance.
    pub connect_timeout_ms: u64,
    /// How long one push of an event may take (the receiver answers once it has handled it).
    pub event_timeout_ms: u64,
    /// Attempts per subscribing module inside one `publish`, the first included.
    pub publish_attempts: u32,
    /// First pause between attempts; each doubles it, with jitter, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for HttpTransportConfig {
    fn default() -> Self {
        // At most 0.2 + 0.4 + 0.8 + 1.6 s of pauses: a few seconds, then the relay's turn.
        Self {
            connect_timeout_ms: 1_000,
            event_timeout_ms: 30_000,
            publish_attempts: 5,
            backoff_base_ms: 200,
            backoff_max_ms: 2_000,
        }
    }
}

impl HttpTransportConfig {
    /// The pause before retry number `attempt` (1-based): exponential, capped, jittered.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
        let cap = exp
            .min(self.backoff_max_ms.max(self.backoff_base_ms))
            .max(1);
        Duration::from_millis(cap / 2 + rand::random_range(0..=cap / 2))
    }
}

/// Why an [`HttpTransport`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("the bus's shared secret must be non-empty visible ASCII")]
    BadSecret,
    #[error("could not build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The client side of the HTTP adapter. See the [module docs](self).
pub struct HttpTransport {
    client: reqwest::Client,
    instances: Arc<dyn Instances>,
    subscribers: Arc<dyn Subscribers>,
    /// `Bearer <secret>`, marked sensitive.
    authorization: HeaderValue,
    config: HttpTransportConfig,
    /// Round-robin cursor per module.
    cursors: RwLock<HashMap<String, Arc<AtomicUsize>>>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one push of an event to one instance came to.
enum Push {
    Done,
    /// Worth another attempt (nothing answered, or the receiver is busy or restarting).
    Retry(String),
    /// Another attempt would meet the same answer, or might pile up behind the first.
    Fail(BusError),
}

impl HttpTransport {
    /// A transport that finds modules through `instances`, sends events to the modules
    /// `subscribers` names, and authenticates with `secret`.
    pub fn new(
        instances: Arc<dyn Instances>,
        subscribers: Arc<dyn Subscribers>,
        secret: &str,
        config: HttpTransportConfig,
    ) -> Result<Self, HttpSetupError> {
        if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HttpSetupError::BadSecret);
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {secret}"))
            .map_err(|_| HttpSetupError::BadSecret)?;
        authorization.set_sensitive(true);
        let client = reqwest::Client::builder()
            // The bus talks to its own instances: never through an environment's proxy.
            .no_proxy()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            instances,
            subscribers,
            authorization,
            config,
            cursors: RwLock::default(),
        })
    }

    /// The position of the next instance of `module` to try, among `count`.
    fn next_index(&self, module: &str, count: usize) -> usize {
        let cursor = self
            .cursors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(module)
            .cloned();
        let cursor = match cursor {
            Some(cursor) => cursor,
            None => self
                .cursors
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(module.to_owned())
                .or_default()
                .clone(),
        };
        cursor.fetch_add(1, Ordering::Relaxed) % count
    }

    async fn send_request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> Result<RemoteReply, BusError> {
        let started = Instant::now();
        let subject = envelope.subject.clone();
        let module = module_of(&subject);
        let instances = self.instances.instances(module);
        if instances.is_empty() {
            return Err(unavailable(
                &subject,
                format!("no instance of module `{module}` is known"),
            ));
        }
        let headers = envelope_headers(&envelope)?;
        let body = Bytes::from_owner(body);
        let first = self.next_index(module, instances.len());
        let mut refused = Vec::new();
        for step in 0..instances.len() {
            let base = &instances[(first + step) % instances.len()];
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(timeout(&subject, deadline));
            }
            let url = format!("{}{}", base.trim_end_matches('/'), request_path(&subject));
            let sent = self
                .client
                .post(url)
                .headers(headers.clone())
                .header(header::AUTHORIZATION, self.authorization.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .header(DEADLINE_MS, remaining.as_millis().max(1).to_string())
                .timeout(remaining)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) => return read_reply(response, &subject, deadline).await,
                // Not connected (or not even a URL): nothing was sent, the next one is safe.
                Err(error) if error.is_connect() || error.is_builder() => {
                    tracing::debug!(%subject, instance = %base, error = %error_chain(&error), "Bus instance unreachable; trying the next.");
                    refused.push(format!("{base}: {}", error_chain(&error)));
                }
                Err(error) if error.is_timeout() => return Err(timeout(&subject, deadline)),
                // It may have reached the handler: not retried.
                Err(error) => {
                    return Err(unavailable(
                        &subject,
                        format!("{base}: {}", error_chain(&error)),
                    ));
                }
            }
        }
        Err(unavailable(
            &subject,
            format!(
                "no instance of module `{module}` could be reached ({})",
                refused.join("; ")
            ),
        ))
    }

    async fn send_event(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> Result<(), BusError> {
        let modules = self.subscribers.modules_for(&envelope.subject);
        if modules.is_empty() {
            return Ok(());
        }
        let mut headers = envelope_headers(&envelope)?;
        headers.insert(
            HeaderName::from_static(AGGREGATE_ID),
            HeaderValue::from_str(&aggregate.to_string()).map_err(|_| BusError::Codec {
                subject: envelope.subject.clone(),
                reason: "the aggregate id is not a valid header value".into(),
            })?,
        );
        headers.insert(header::AUTHORIZATION, self.authorization.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = Bytes::from_owner(json.as_bytes().to_vec());
        let pushes = modules
            .iter()
            .map(|module| self.push_to_module(module, &envelope.subject, &headers, &body));
        let failures: Vec<BusError> = join_all(pushes)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.into_iter().next().expect("one failure")),
            _ => Err(unavailable(
                &envelope.subject,
                failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    /// Pushes an event to one instance of `module`, retrying with backoff.
    async fn push_to_module(
        &self,
        module: &str,
        subject: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), BusError> {
        let attempts = self.config.publish_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(self.config.backoff(attempt - 1)).await;
            }
            let instances = self.instances.instances(module);
            let outcome = if instances.is_empty() {
                Push::Retry(format!("no instance of module `{module}` is known"))
            } else {
                let base = &instances[self.next_index(module, instances.len())];
                self.push_once(base, module, subject, headers, body).await
            };
            match outcome {
                Push::Done => return Ok(()),
                Push::Fail(error) => return Err(error),
                Push::Retry(reason) => {
                    tracing::debug!(%subject, module, attempt, %reason, "Pushing an event failed; retrying.");
                    last = reason;
                }
            }
        }
        Err(unavailable(
            subject,
            format!("module `{module}` did not take the event after {attempts} attempts: {last}"),
        ))
    }

    async fn push_once(
        &self,
        base: &str,
        module: &str,
        subject: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Push {
        let url = format!("{}{}", base.trim_end_matches('/'), event_path(subject));
        let mut url = match reqwest::Url::parse(&url) {
            Ok(url) => url,
            Err(error) => return Push::Retry(format!("{base}: not a URL ({error})")),
        };
        url.query_pairs_mut().append_pair("module", module);
        let timeout_after = Duration::from_millis(self.config.event_timeout_ms.max(1));
        let sent = self
            .client
            .post(url)
            .headers(headers.clone())
            .timeout(timeout_after)
            .body(body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            // The receiver may still be handling it; the relay resends after its lease.
            Err(error) if error.is_timeout() && !error.is_connect() => {
                return Push::Fail(timeout(subject, timeout_after));
            }
            Err(error) => return Push::Retry(format!("{base}: {}", error_chain(&error))),
        };
        let status = response.status();
        if status.is_success() {
            return Push::Done;
        }
        let reason = match response.bytes().await {
            Ok(body) => error_reason(&body).unwrap_or_else(|| status.to_string()),
            Err(_) => status.to_string(),
        };
        let reason = format!("{base} answered {}: {reason}", status.as_u16());
        match status {
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Push::Retry(reason),
            s if s.is_server_error() => Push::Retry(reason),
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                Push::Fail(BusError::Codec {
                    subject: subject.into(),
                    reason,
                })
            }
            StatusCode::NOT_FOUND => Push::Fail(BusError::NoHandler {
                subject: subject.into(),
            }),
            _ => Push::Fail(unavailable(subject, reason)),
        }
    }
}

impl Transport for HttpTransport {
    fn request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<RemoteReply, BusError>> {
        Box::pin(self.send_request(envelope, body, deadline))
    }

    fn publish(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(self.send_event(envelope, json, aggregate))
    }
}

/// Turns the answer to a request into the reply or the error its status and body name.
async fn read_reply(
    response: reqwest::Response,
    subject: &str,
    deadline: Duration,
) -> Result<RemoteReply, BusError> {
    let status = response.status();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) if error.is_timeout() => return Err(timeout(subject, deadline)),
        Err(error) => {
            return Err(unavailable(
                subject,
                format!("reading the reply failed: {}", error_chain(&error)),
            ));
        }
    };
    if status.is_success() {
        return Ok(RemoteReply::Ok(Arc::from(&body[..])));
    }
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        #[derive(Deserialize)]
        struct Rejected {
            rejection: Rejection,
        }
        return match serde_json::from_slice::<Rejected>(&body) {
            Ok(Rejected { rejection }) => Ok(RemoteReply::Rejected(rejection)),
            Err(error) => Err(BusError::Codec {
                subject: subject.into(),
                reason: format!("a 422 without a rejection: {error}"),
            }),
        };
    }
    let (kind, reason) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(ErrorBody { error }) => (Some(error.kind), error.reason),
        Err(_) => (None, format!("answered {status}")),
    };
    let kind = kind.unwrap_or_else(|| {
        match status {
            StatusCode::NOT_FOUND => "no_handler",
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "codec",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            _ => "unavailable",
        }
        .to_owned()
    });
    Err(match kind.as_str() {
        "no_handler" => BusError::NoHandler {
            subject: subject.into(),
        },
        "timeout" => timeout(subject, deadline),
        "codec" => BusError::Codec {
            subject: subject.into(),
            reason,
        },
        "unauthorized" => unavailable(
            subject,
            "the remote refused this process's credentials (check the shared secret)".into(),
        ),
        _ => unavailable(subject, reason),
    })
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    kind: String,
    #[serde(default)]
    reason: String,
}

fn error_reason(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| format!("{}: {}", b.error.kind, b.error.reason))
}

/// An error with its causes, which is where reqwest says what actually happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn unavailable(subject: &str, reason: String) -> BusError {
    BusError::Unavailable {
        subject: subject.into(),
        reason,
    }
}

fn timeout(subject: &str, after: Duration) -> BusError {
    BusError::Timeout {
        subject: subject.into(),
        after,
    }
}

// ------------------------------------------------------------------------------ server

struct Server {
    bus: Bus,
    secret: Arc<str>,
}

/// The bus's HTTP endpoints, to merge into the application's router:
/// `POST /bus/v1/requests/{subject}` and `POST /bus/v1/events/{subject}?module={m}`.
/// Every call must carry `authorization: Bearer <secret>`; an empty secret refuses them all.
pub fn routes(bus: Bus, secret: Arc<str>) -> Router {
    if secret.is_empty() {
        tracing::error!("The bus's HTTP endpoints have no shared secret; every call is refused.");
    }
    let server = Arc::new(Server { bus, secret });
    Router::new()
        .route("/bus/v1/requests/{subject}", post(serve_request))
        .route("/bus/v1/events/{subject}", post(serve_event))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(server)
}

/// An answer with an error body: `{"error": {"kind", "reason"}}`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    kind: &'static str,
    reason: String,
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

    fn from_bus(error: &BusError) -> Self {
        let (status, kind) = match error {
            BusError::NoHandler { .. } => (StatusCode::NOT_FOUND, "no_handler"),
            BusError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            BusError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            BusError::Codec { .. } => (StatusCode::BAD_REQUEST, "codec"),
            // Rejections are answers, not refusals; a stray one is still told apart.
            BusError::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "rejected"),
        };
        Self::new(status, kind, error.to_string())
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

impl Server {
    /// Checks the bearer token in constant time; logs why a call is refused, never the token.
    fn authorize(&self, headers: &HeaderMap, route: &str) -> Result<(), Refusal> {
        let refused = match headers.get(header::AUTHORIZATION) {
            None => Some("no authorization header"),
            Some(value) => match value.as_bytes().split_at_checked(7) {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                    (self.secret.is_empty() || !same_bytes(token, self.secret.as_bytes()))
                        .then_some("wrong shared secret")
                }
                _ => Some("not a bearer token"),
            },
        };
        match refused {
            None => Ok(()),
            Some(reason) => {
                tracing::warn!(route, reason, "Refused an unauthenticated bus call.");
                Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid bearer token is required",
                ))
            }
        }
    }
}

/// Compares two byte strings in time that depends on their length only.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
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
    server.authorize(request.headers(), ROUTE)?;
    let subject = subject_from(path, ROUTE)?;
    let headers = request.headers();
    let envelope = envelope_from_headers(headers, &subject)
        .map_err(|reason| refuse("request", &subject, reason))?;
    let deadline = match text_header(headers, DEADLINE_MS) {
        Ok(None) => server.bus.config().request_timeout(),
        Ok(Some(ms)) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms).min(MAX_DEADLINE),
            _ => {
                let reason = format!("`{DEADLINE_MS}` is not a positive number of milliseconds");
                return Err(refuse("request", &subject, reason));
            }
        },
        Err(reason) => return Err(refuse("request", &subject, reason)),
    };
    let body = read_body(request, &subject).await?;
    let correlation_id = envelope.correlation_id.clone();
    match server
        .bus
        .inbound()
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

async fn answer_event(
    server: &Server,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Refusal> {
    const ROUTE: &str = "/bus/v1/events";
    server.authorize(request.headers(), ROUTE)?;
    let subject = subject_from(path, ROUTE)?;
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
    let aggregate = uuid_header(headers, AGGREGATE_ID)
        .and_then(|a| a.ok_or_else(|| format!("`{AGGREGATE_ID}` is missing")))
        .map_err(|reason| refuse("event", &subject, reason))?;
    let body = read_body(request, &subject).await?;
    let bus = &server.bus;
    if !bus.wiring().groups().contains(&module.as_str()) {
        tracing::warn!(%subject, module, "Refused a bus event: that module subscribes to nothing in this process.");
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "no_handler",
            format!("module `{module}` has no subscriptions in this process"),
        ));
    }
    if bus.is_closing() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the bus is shutting down",
        ));
    }
    // Poison: retrying it would fail the same way forever, so it goes to dead letters now.
    let poison = if !bus
        .wiring()
        .subscriptions_of(&module)
        .contains(&subject.as_str())
    {
        Some(format!(
            "module `{module}` has no subscriber for `{subject}` (unknown subject or version)"
        ))
    } else {
        match std::str::from_utf8(&body) {
            Err(_) => Some("undecodable: the body is not UTF-8".to_owned()),
            Ok(text) => serde_json::from_str::<serde::de::IgnoredAny>(text)
                .err()
                .map(|error| format!("undecodable: {error}")),
        }
    };
    if let Some(reason) = poison {
        return dead_letter(bus, &module, &envelope, &body, &reason).await;
    }
    let json: Arc<str> = String::from_utf8_lossy(&body).into();
    let message_id = envelope.message_id;
    let correlation_id = envelope.correlation_id.clone();
    match bus
        .inbound()
        .deliver_remote_event_to(&module, envelope, json, aggregate)
        .await
    {
        Ok(()) => Ok(status_response("delivered")),
        Err(error) => {
            tracing::warn!(%subject, module, %message_id, %correlation_id, %error, "Could not deliver a bus event from another process.");
            Err(Refusal::from_bus(&error))
        }
    }
}

/// Records a poison event in `module`'s dead letters and answers 200 so the sender stops.
async fn dead_letter(
    bus: &Bus,
    module: &str,
    envelope: &Envelope,
    body: &[u8],
    reason: &str,
) -> Result<Response, Refusal> {
    let subject = &envelope.subject;
    let message_id = envelope.message_id;
    let correlation_id = &envelope.correlation_id;
    tracing::warn!(%subject, module, %message_id, %correlation_id, reason, "A bus event from another process cannot be delivered; dead-lettering it.");
    let payload = String::from_utf8_lossy(body);
    match bus
        .inbound()
        .dead_letter_received(module, envelope, &payload, reason)
        .await
    {
        Ok(true) => Ok(status_response("dead_lettered")),
        Ok(false) => {
            tracing::error!(%subject, module, %message_id, "No dead-letter store for this module; the event is dropped.");
            Ok(status_response("dropped"))
        }
        // Not stored: the sender keeps the event and tries again later.
        Err(error) => {
            tracing::error!(%subject, module, %message_id, %error, "Could not store a dead letter.");
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "could not store the dead letter",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;

    #[test]
    fn an_envelope_round_trips_through_headers() {
        let first = Context::root().envelope("a.b.v1");
        let envelope = Context::caused_by(&first).envelope("c.d.v1");
        let headers = envelope_headers(&envelope).unwrap();
        assert_eq!(envelope_from_headers(&headers, "c.d.v1").unwrap(), envelope);
    }

    #[test]
    fn a_missing_or_malformed_envelope_header_is_named() {
        let envelope = Context::root().envelope("a.b.v1");
        let mut headers = envelope_headers(&envelope).unwrap();
        headers.remove(MESSAGE_ID);
        let reason = envelope_from_headers(&headers, "a.b.v1").unwrap_err();
        assert!(reason.contains(MESSAGE_ID), "{reason}");
        let mut headers = envelope_headers(&envelope).unwrap();
        headers.insert(TIMESTAMP, HeaderValue::from_static("yesterday"));
        let reason = envelope_from_headers(&headers, "a.b.v1").unwrap_err();
        assert!(reason.contains(TIMESTAMP), "{reason}");
        let mut headers = envelope_headers(&envelope).unwrap();
        headers.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        assert_eq!(
            envelope_from_headers(&headers, "a.b.v1")
                .unwrap()
                .traceparent,
            None
        );
    }

    #[test]
    fn secrets_compare_by_every_byte() {
        assert!(same_bytes(b"s3cret", b"s3cret"));
        assert!(!same_bytes(b"s3cret", b"s3cre7"));
        assert!(!same_bytes(b"s3cret", b"s3cret!"));
        assert!(!same_bytes(b"", b"x"));
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        let config = HttpTransportConfig::default();
        for attempt in 1..30 {
            assert!(config.backoff(attempt) <= Duration::from_millis(config.backoff_max_ms));
        }
    }

    #[test]
    fn a_secret_that_cannot_be_a_header_is_refused() {
        let instances = Arc::new(StaticInstances::default());
        let subscribers = Arc::new(StaticSubscribers::default());
        for bad in ["", "has space", "new\nline"] {
            assert!(matches!(
                HttpTransport::new(
                    instances.clone(),
                    subscribers.clone(),
                    bad,
                    HttpTransportConfig::default()
                ),
                Err(HttpSetupError::BadSecret)
            ));
        }
    }
}
