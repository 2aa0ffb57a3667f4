//! The NATS adapter: requests over core NATS with a queue group per module, events on a
//! JetStream stream with one durable consumer per subscribing module.
//!
//! # Layout on the wire
//!
//! With `subject_prefix = "banyan"` (the default) and a message subject such as
//! `payments.get_payment.v1`:
//!
//! - **Requests** go to `banyan.req.payments.get_payment.v1` (core NATS request/reply). Every
//!   process that handles the subject subscribes with the queue group `payments` (the module),
//!   so the instances of one module share the requests and exactly one answers. A process only
//!   subscribes to the subjects it handles, so during a rolling upgrade a new version of a
//!   request only reaches instances that know it; nobody subscribed means "no responders",
//!   which the caller sees at once as [`BusError::Unavailable`].
//! - **Events** are published with JetStream to `banyan.evt.<subject>`, on the stream
//!   `BANYAN_EVENTS` (subjects `banyan.evt.>`, file storage, a duplicate window of two minutes,
//!   kept seven days). `Nats-Msg-Id` is the message id, so an event the outbox relay sends again
//!   is dropped by the server. Each subscribing module has one durable pull consumer named after
//!   it, filtered to the subjects it subscribes to, with explicit acks; every instance of the
//!   module binds to that consumer, so each module gets each event once, whichever instance.
//!   (A server older than 2.10 ignores `filter_subjects`: a module with several subscriptions
//!   then gets an unfiltered consumer and skips the other modules' events itself.) An instance
//!   handles the events of one aggregate (`Banyan-Aggregate-Id`) one after another, in stream
//!   order, and different aggregates concurrently; JetStream does not keep that order *across*
//!   the instances of a module.
//! - **Headers** carry the [`Envelope`] (see [`headers`]); the body is the message's JSON.
//!   A reply carries `Banyan-Outcome`: `ok` (body: the response), `rejected` (body: the
//!   [`Rejection`]) or `error` (body: `{"kind": "no_handler"|"timeout"|"unavailable"|"codec",
//!   "reason": ...}`).
//!
//! # Wiring
//!
//! ```no_run
//! # async fn wire(bus: banyan_bus::Bus) -> Result<(), banyan_bus::nats::NatsError> {
//! use std::sync::Arc;
//! use banyan_bus::nats::{self, NatsConfig, NatsTransport};
//!
//! let config = NatsConfig::default();
//! let client = nats::connect(&config.url).await?;
//! let transport = Arc::new(NatsTransport::new(client.clone(), config.clone()));
//! bus.wiring().set_remote("payments", transport.clone()); // payments runs in another process
//! bus.wiring().forward_events_to(transport); // events reach subscribers in other processes
//! // After every handler and subscription of this process is registered:
//! let stop = tokio_util::sync::CancellationToken::new();
//! let server = nats::serve(bus.clone(), client, config, stop.clone()).await?;
//! // ... at shutdown:
//! stop.cancel();
//! bus.shutdown().await;
//! server.stopped().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Failures
//!
//! The client reconnects by itself. While it is disconnected, requests and publishes fail at
//! once with `Unavailable` (the outbox keeps the events and its relay sends them again). The
//! consumers open their message stream again after any error, with backoff, logging a warning
//! each time. A message that cannot be understood (headers missing or invalid, a subject or
//! version no local handler knows) is logged, put in the module's dead letters and terminated;
//! an event whose JSON does not decode is dead-lettered by the bus's worker. Nothing panics on
//! input from the wire.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{
    Client, ConnectOptions, HeaderMap, HeaderValue, RequestErrorKind, Subscriber,
    connection::State,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, PullConsumer, pull},
        context::PublishErrorKind,
        message::PublishMessage,
        stream::{Config as StreamConfig, StorageType},
    },
};
use banyan_message::{Rejection, module_of};
use bytes::Bytes;
use futures::{StreamExt, future::BoxFuture};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    Bus, BusError, CorrelationId, Envelope, TraceContext,
    bus::{codec, unavailable},
    transport::{RemoteReply, Transport},
};

/// The names of the headers that carry a message's envelope and outcome.
pub mod headers {
    /// The envelope's message id (a UUID).
    pub const MESSAGE_ID: &str = "Banyan-Message-Id";
    /// The correlation id, as accepted by `CorrelationId::parse`.
    pub const CORRELATION_ID: &str = "Banyan-Correlation-Id";
    /// The message that caused this one (a UUID), when there is one.
    pub const CAUSATION_ID: &str = "Banyan-Causation-Id";
    /// When the message was made, in milliseconds since the Unix epoch.
    pub const TIMESTAMP: &str = "Banyan-Timestamp";
    /// The W3C trace context of the sender, when there is one.
    pub const TRACEPARENT: &str = "traceparent";
    /// The message's subject without the wire prefix, such as `payments.get_payment.v1`.
    pub const SUBJECT: &str = "Banyan-Subject";
    /// On a request: how long the caller waits, in milliseconds.
    pub const DEADLINE_MS: &str = "Banyan-Deadline-Ms";
    /// On an event: the aggregate whose events are handled in order (a UUID).
    pub const AGGREGATE_ID: &str = "Banyan-Aggregate-Id";
    /// On a reply: `ok`, `rejected` or `error`.
    pub const OUTCOME: &str = "Banyan-Outcome";
    /// On an event: JetStream's de-duplication key, the message id.
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
}

/// How long JetStream remembers message ids to drop an event published twice.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long the stream keeps events (so a module that was down for days still gets them).
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long `connect` waits for the first connection before handing back a client that keeps
/// trying in the background.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Idle heartbeat of a consumer's message stream: a connection that died is noticed after two.
const CONSUMER_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a pull request waits for messages before the client asks again.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Backoff between attempts to open a consumer or a subscription again.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Delay before a failed event is delivered again: doubles per delivery, up to the maximum.
const NAK_BASE: Duration = Duration::from_secs(1);
const NAK_MAX: Duration = Duration::from_secs(30);

/// Settings of the NATS adapter (`[nats]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// The NATS server(s), such as `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream that carries the events.
    pub stream: String,
    /// The first token of every subject on the wire: `<prefix>.req.<subject>` for requests,
    /// `<prefix>.evt.<subject>` for events. Two deployments (or two tests) sharing one NATS
    /// server use different prefixes and streams.
    pub subject_prefix: String,
    /// Deliveries of an event to a module before it is dead-lettered there.
    pub max_deliver: i64,
    /// How long a delivered event may stay unacknowledged before JetStream delivers it again.
    /// While a module works on an event, its instance tells the server so every half of it.
    pub ack_wait_ms: u64,
    /// Requests of one subject, and events of one module, an instance handles at once.
    pub max_in_flight: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "BANYAN_EVENTS".to_owned(),
            subject_prefix: "banyan".to_owned(),
            max_deliver: 10,
            ack_wait_ms: 30_000,
            max_in_flight: 256,
        }
    }
}

impl NatsConfig {
    /// Checks the values, naming the first bad key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.url.trim().is_empty() {
            return Err(("nats.url", "must not be empty".into()));
        }
        if !is_valid_token(&self.stream) {
            return Err((
                "nats.stream",
                "must be a non-empty name without `.`, `*`, `>` or spaces".into(),
            ));
        }
        if !is_valid_token(&self.subject_prefix) {
            return Err((
                "nats.subject_prefix",
                "must be a single subject token: non-empty, without `.`, `*`, `>` or spaces".into(),
            ));
        }
        if self.max_deliver < 1 {
            return Err(("nats.max_deliver", "must be at least 1".into()));
        }
        if self.ack_wait_ms == 0 {
            return Err(("nats.ack_wait_ms", "must be greater than 0".into()));
        }
        if self.max_in_flight == 0 {
            return Err(("nats.max_in_flight", "must be greater than 0".into()));
        }
        Ok(())
    }

    /// The wire subject of request `subject`: `<prefix>.req.<subject>`.
    pub fn request_subject(&self, subject: &str) -> String {
        format!("{}.req.{subject}", self.subject_prefix)
    }

    /// The wire subject of event `subject`: `<prefix>.evt.<subject>`.
    pub fn event_subject(&self, subject: &str) -> String {
        format!("{}.evt.{subject}", self.subject_prefix)
    }

    fn event_prefix(&self) -> String {
        format!("{}.evt.", self.subject_prefix)
    }

    fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }
}

fn is_valid_token(raw: &str) -> bool {
    !raw.is_empty()
        && raw
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
}

/// What can go wrong while setting the adapter up. (Once running, failures are retried and
/// logged, and messages that fail reach the bus as [`BusError`]s.)
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error("invalid configuration `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("JetStream stream `{stream}`: {reason}")]
    Stream { stream: String, reason: String },
    #[error("cannot subscribe to `{subject}`: {reason}")]
    Subscribe { subject: String, reason: String },
}

/// Connects to NATS at `url` (one address or several, comma-separated).
///
/// The client reconnects by itself, forever. If the server cannot be reached now, this waits
/// a few seconds for it and then returns a client that keeps trying in the background (and
/// logs a warning); only a malformed URL is an error.
pub async fn connect(url: &str) -> Result<Client, NatsError> {
    let addresses: Vec<&str> = url.split(',').map(str::trim).collect();
    let client = ConnectOptions::new()
        .name(format!("banyan (pid {})", std::process::id()))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .connect(&addresses[..])
        .await?;
    let started = Instant::now();
    while client.connection_state() != State::Connected && started.elapsed() < FIRST_CONNECT_WAIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if client.connection_state() != State::Connected {
        // The URL is not logged: it may carry credentials.
        tracing::warn!("NATS is not reachable yet; connecting in the background.");
    }
    Ok(client)
}

/// Creates the events stream if it is missing, or updates it so that it carries the prefix's
/// event subjects with the duplicate window de-duplication needs.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<jetstream::stream::Stream, NatsError> {
    let failed = |reason: String| NatsError::Stream {
        stream: config.stream.clone(),
        reason,
    };
    let subjects = format!("{}.evt.>", config.subject_prefix);
    let wanted = StreamConfig {
        name: config.stream.clone(),
        description: Some("Banyan events".to_owned()),
        subjects: vec![subjects.clone()],
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: MAX_AGE,
        ..StreamConfig::default()
    };
    let stream = jetstream
        .get_or_create_stream(wanted)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let current = &stream.cached_info().config;
    let mut updated = current.clone();
    if !updated.subjects.contains(&subjects) {
        updated.subjects.push(subjects);
    }
    if updated.duplicate_window < DUPLICATE_WINDOW {
        updated.duplicate_window = DUPLICATE_WINDOW;
    }
    if &updated == current {
        return Ok(stream);
    }
    tracing::info!(stream = %config.stream, "Updating the events stream's subjects or duplicate window.");
    jetstream
        .update_stream(&updated)
        .await
        .map_err(|e| failed(e.to_string()))?;
    jetstream
        .get_stream(&config.stream)
        .await
        .map_err(|e| failed(e.to_string()))
}

// ------------------------------------------------------------------------ envelope <-> headers

/// The headers that carry `envelope` (without the request's deadline or the event's aggregate).
///
/// Fails with [`BusError::Codec`] if a field cannot be a header value (a line break).
pub fn envelope_headers(envelope: &Envelope) -> Result<HeaderMap, BusError> {
    let mut map = HeaderMap::new();
    let mut put = |name: &'static str, value: String| -> Result<(), BusError> {
        let value: HeaderValue = value.parse().map_err(|_| {
            codec(
                &envelope.subject,
                &format!("header {name} cannot hold a line break"),
            )
        })?;
        map.insert(name, value);
        Ok(())
    };
    put(headers::MESSAGE_ID, envelope.message_id.to_string())?;
    put(
        headers::CORRELATION_ID,
        envelope.correlation_id.as_str().to_owned(),
    )?;
    if let Some(causation) = envelope.causation_id {
        put(headers::CAUSATION_ID, causation.to_string())?;
    }
    put(headers::TIMESTAMP, envelope.timestamp_ms.to_string())?;
    if let Some(traceparent) = &envelope.traceparent {
        put(headers::TRACEPARENT, traceparent.clone())?;
    }
    put(headers::SUBJECT, envelope.subject.clone())?;
    Ok(map)
}

fn header<'a>(map: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    map?.get(name).map(HeaderValue::as_str)
}

fn required<'a>(map: Option<&'a HeaderMap>, name: &str) -> Result<&'a str, String> {
    header(map, name).ok_or_else(|| format!("header {name} is missing"))
}

/// Rebuilds the envelope of a message that arrived on `subject` (the wire subject without its
/// prefix). Every failure names the header at fault.
fn decode_envelope(map: Option<&HeaderMap>, subject: &str) -> Result<Envelope, String> {
    let uuid = |name: &str, raw: &str| {
        Uuid::parse_str(raw).map_err(|_| format!("header {name} is not a UUID: {raw:?}"))
    };
    let declared = required(map, headers::SUBJECT)?;
    if declared != subject {
        return Err(format!(
            "header {} says {declared:?} but the message arrived on {subject:?}",
            headers::SUBJECT
        ));
    }
    let message_id = uuid(headers::MESSAGE_ID, required(map, headers::MESSAGE_ID)?)?;
    let raw = required(map, headers::CORRELATION_ID)?;
    let correlation_id = CorrelationId::parse(raw).ok_or_else(|| {
        format!(
            "header {} is not a valid correlation id",
            headers::CORRELATION_ID
        )
    })?;
    let causation_id = header(map, headers::CAUSATION_ID)
        .map(|raw| uuid(headers::CAUSATION_ID, raw))
        .transpose()?;
    let raw = required(map, headers::TIMESTAMP)?;
    let timestamp_ms = raw.parse::<i64>().map_err(|_| {
        format!(
            "header {} is not a number of milliseconds: {raw:?}",
            headers::TIMESTAMP
        )
    })?;
    // A malformed trace context is not worth refusing a message for: the handler starts a
    // new trace (`Context::caused_by`).
    let traceparent = header(map, headers::TRACEPARENT)
        .filter(|raw| TraceContext::parse(raw).is_some())
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

/// An envelope for a message that could not be decoded, from whatever the headers offer, so
/// that its dead letter can be found by message and correlation id when those were readable.
fn best_effort_envelope(map: Option<&HeaderMap>, subject: &str) -> Envelope {
    let uuid = |name| header(map, name).and_then(|raw| Uuid::parse_str(raw).ok());
    Envelope {
        message_id: uuid(headers::MESSAGE_ID).unwrap_or_else(Uuid::now_v7),
        subject: subject.to_owned(),
        correlation_id: header(map, headers::CORRELATION_ID)
            .and_then(CorrelationId::parse)
            .unwrap_or_default(),
        causation_id: uuid(headers::CAUSATION_ID),
        timestamp_ms: header(map, headers::TIMESTAMP)
            .and_then(|raw| raw.parse().ok())
            .unwrap_or_else(banyan_db::now_millis),
        traceparent: header(map, headers::TRACEPARENT)
            .filter(|raw| TraceContext::parse(raw).is_some())
            .map(str::to_owned),
    }
}

// ------------------------------------------------------------------------ outcomes on the wire

const OUTCOME_OK: &str = "ok";
const OUTCOME_REJECTED: &str = "rejected";
const OUTCOME_ERROR: &str = "error";

/// A [`BusError`] other than a rejection, as a reply body.
#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    kind: String,
    #[serde(default)]
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_ms: Option<u64>,
}

fn encode_outcome(subject: &str, outcome: &Result<RemoteReply, BusError>) -> (HeaderMap, Bytes) {
    let (kind, body) = match outcome {
        Ok(RemoteReply::Ok(body)) => (OUTCOME_OK, Bytes::copy_from_slice(body)),
        Ok(RemoteReply::Rejected(rejection)) | Err(BusError::Rejected(rejection)) => {
            match serde_json::to_vec(rejection) {
                Ok(body) => (OUTCOME_REJECTED, Bytes::from(body)),
                Err(error) => (
                    OUTCOME_ERROR,
                    wire_error_body(&codec(subject, &error.to_string())),
                ),
            }
        }
        Err(error) => (OUTCOME_ERROR, wire_error_body(error)),
    };
    let mut map = HeaderMap::new();
    map.insert(headers::OUTCOME, kind);
    (map, body)
}

fn wire_error_body(error: &BusError) -> Bytes {
    let (kind, reason, after_ms) = match error {
        BusError::NoHandler { .. } => ("no_handler", error.to_string(), None),
        BusError::Timeout { after, .. } => (
            "timeout",
            error.to_string(),
            Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
        ),
        BusError::Unavailable { reason, .. } => ("unavailable", reason.clone(), None),
        BusError::Codec { reason, .. } => ("codec", reason.clone(), None),
        // Rejections have an outcome of their own; this is only for completeness.
        BusError::Rejected(rejection) => {
            ("codec", format!("rejected as an error: {rejection}"), None)
        }
    };
    let wire = WireError {
        kind: kind.to_owned(),
        reason,
        after_ms,
    };
    // A struct of strings always serializes.
    Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
}

/// Reads a reply: the outcome header decides what the body is.
fn decode_reply(
    subject: &str,
    deadline: Duration,
    reply: &async_nats::Message,
) -> Result<RemoteReply, BusError> {
    match header(reply.headers.as_ref(), headers::OUTCOME) {
        Some(OUTCOME_OK) => Ok(RemoteReply::Ok(Arc::from(&reply.payload[..]))),
        Some(OUTCOME_REJECTED) => serde_json::from_slice::<Rejection>(&reply.payload)
            .map(RemoteReply::Rejected)
            .map_err(|e| codec(subject, &format!("undecodable rejection: {e}"))),
        Some(OUTCOME_ERROR) => {
            let wire: WireError = serde_json::from_slice(&reply.payload)
                .map_err(|e| codec(subject, &format!("undecodable error reply: {e}")))?;
            Err(match wire.kind.as_str() {
                "no_handler" => BusError::NoHandler {
                    subject: subject.to_owned(),
                },
                "timeout" => BusError::Timeout {
                    subject: subject.to_owned(),
                    after: wire.after_ms.map_or(deadline, Duration::from_millis),
                },
                "unavailable" => unavailable(subject, &wire.reason),
                "codec" => codec(subject, &wire.reason),
                other => codec(
                    subject,
                    &format!("unknown error kind {other:?}: {}", wire.reason),
                ),
            })
        }
        Some(other) => Err(codec(subject, &format!("unknown reply outcome {other:?}"))),
        None => Err(codec(
            subject,
            &format!("the reply has no {} header", headers::OUTCOME),
        )),
    }
}

// ------------------------------------------------------------------------ the client side

/// The client side: sends requests to modules in other processes and publishes events to the
/// JetStream stream. Hand it to [`Bus::set_remote`] and [`Bus::forward_events_to`].
pub struct NatsTransport {
    client: Client,
    jetstream: jetstream::Context,
    config: NatsConfig,
    /// Whether the events stream is known to exist (checked before the first publish, and
    /// again after a publish found no stream).
    stream_ready: AtomicBool,
    /// One stream check at a time.
    stream_check: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("stream", &self.config.stream)
            .field("subject_prefix", &self.config.subject_prefix)
            .finish_non_exhaustive()
    }
}

impl NatsTransport {
    pub fn new(client: Client, config: NatsConfig) -> Self {
        Self {
            jetstream: jetstream::new(client.clone()),
            client,
            config,
            stream_ready: AtomicBool::new(false),
            stream_check: tokio::sync::Mutex::new(()),
        }
    }

    /// Creates or updates the events stream now, rather than before the first publish.
    pub async fn ensure_stream(&self) -> Result<(), NatsError> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one_at_a_time = self.stream_check.lock().await;
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        ensure_stream(&self.jetstream, &self.config).await?;
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    fn connected(&self, subject: &str) -> Result<(), BusError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            _ => Err(unavailable(subject, "not connected to NATS")),
        }
    }

    async fn send_request(
        &self,
        envelope: Envelope,
        body: Arc<[u8]>,
        deadline: Duration,
    ) -> Result<RemoteReply, BusError> {
        let subject = envelope.subject.clone();
        self.connected(&subject)?;
        let mut map = envelope_headers(&envelope)?;
        map.insert(
            headers::DEADLINE_MS,
            u64::try_from(deadline.as_millis())
                .unwrap_or(u64::MAX)
                .to_string(),
        );
        let request = async_nats::Request::new()
            .payload(Bytes::from_owner(body))
            .headers(map)
            .timeout(Some(deadline));
        let reply = self
            .client
            .send_request(self.config.request_subject(&subject), request)
            .await
            .map_err(|error| match error.kind() {
                RequestErrorKind::NoResponders => unavailable(
                    &subject,
                    &format!(
                        "no process serves module `{}` (no responders)",
                        module_of(&subject)
                    ),
                ),
                RequestErrorKind::TimedOut if self.connected(&subject).is_ok() => {
                    BusError::Timeout {
                        subject: subject.clone(),
                        after: deadline,
                    }
                }
                RequestErrorKind::TimedOut => {
                    unavailable(&subject, "the connection to NATS was lost")
                }
                RequestErrorKind::InvalidSubject | RequestErrorKind::MaxPayloadExceeded => {
                    codec(&subject, &error.to_string())
                }
                RequestErrorKind::Other => unavailable(&subject, &error.to_string()),
            })?;
        decode_reply(&subject, deadline, &reply)
    }

    async fn publish_event(
        &self,
        envelope: Envelope,
        json: Arc<str>,
        aggregate: Uuid,
    ) -> Result<(), BusError> {
        let subject = envelope.subject.clone();
        self.connected(&subject)?;
        self.ensure_stream()
            .await
            .map_err(|error| unavailable(&subject, &error.to_string()))?;
        let mut map = envelope_headers(&envelope)?;
        map.insert(headers::AGGREGATE_ID, aggregate.to_string());
        let publish = PublishMessage::build()
            .payload(Bytes::copy_from_slice(json.as_bytes()))
            .headers(map)
            .message_id(envelope.message_id.to_string());
        let failed = |error: &dyn std::fmt::Display| {
            unavailable(
                &subject,
                &format!("JetStream did not store the event: {error}"),
            )
        };
        let stored = async {
            self.jetstream
                .send_publish(self.config.event_subject(&subject), publish)
                .await?
                .await
        }
        .await;
        match stored {
            Ok(_ack) => Ok(()),
            Err(error) => {
                if error.kind() == PublishErrorKind::StreamNotFound {
                    // Someone deleted the stream: make it again before the next publish.
                    self.stream_ready.store(false, Ordering::Release);
                }
                Err(failed(&error))
            }
        }
    }
}

impl Transport for NatsTransport {
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
        Box::pin(self.publish_event(envelope, json, aggregate))
    }
}

// ------------------------------------------------------------------------ the server side

/// The running server side of one process; see [`serve`].
#[derive(Debug)]
pub struct ServeHandle {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl ServeHandle {
    /// Stops taking messages from NATS (as cancelling the token given to [`serve`] does).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the server has stopped (its token was cancelled, or the bus began to shut
    /// down) and every message it took has been answered or acknowledged.
    pub async fn stopped(&self) {
        self.tasks.wait().await;
    }
}

/// What the server's tasks share.
struct Server {
    bus: Bus,
    client: Client,
    jetstream: jetstream::Context,
    config: NatsConfig,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Resolves when the server must stop taking messages.
    async fn stopping(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = self.bus.closing().cancelled() => {}
        }
    }

    fn is_stopping(&self) -> bool {
        self.stop.is_cancelled() || self.bus.is_closing()
    }

    /// Sleeps `pause`; `false` if the server must stop instead.
    async fn pause(&self, pause: Duration) -> bool {
        tokio::select! {
            () = self.stopping() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}

/// Starts the server side for `bus`: answers the requests of every subject it handles and
/// consumes the events of every module that subscribes in it. Register every handler and
/// subscription before calling this.
///
/// Runs until `stop` is cancelled or the bus begins to shut down; see
/// [`ServeHandle::stopped`]. Only a bad configuration or a subscription the client refuses is
/// an error here: a stream or consumer that cannot be made yet (NATS is down) is retried in the
/// background.
pub async fn serve(
    bus: Bus,
    client: Client,
    config: NatsConfig,
    stop: CancellationToken,
) -> Result<ServeHandle, NatsError> {
    config
        .validate()
        .map_err(|(key, reason)| NatsError::Config { key, reason })?;
    let stop = stop.child_token();
    let tasks = TaskTracker::new();
    let server = Arc::new(Server {
        jetstream: jetstream::new(client.clone()),
        client: client.clone(),
        bus: bus.clone(),
        config,
        stop: stop.clone(),
        tasks: tasks.clone(),
    });
    let handled = bus.wiring().handled_subjects();
    for &subject in &handled {
        let subscriber = subscribe(&server, subject).await?;
        tasks.spawn(serve_requests(server.clone(), subject, subscriber));
    }
    if !handled.is_empty()
        && let Err(error) = client.flush().await
    {
        tracing::warn!(%error, "Could not flush the request subscriptions; NATS sends them on reconnect.");
    }
    for group in bus.wiring().groups() {
        let subjects = bus.wiring().subscriptions_of(group);
        if subjects.is_empty() {
            continue;
        }
        tasks.spawn(consume_events(server.clone(), group, subjects));
    }
    tasks.close();
    tracing::info!(
        requests = handled.len(),
        stream = %server.config.stream,
        "NATS server side started."
    );
    Ok(ServeHandle { tasks, stop })
}

// ------------------------------------------------------------------------ requests

async fn subscribe(server: &Server, subject: &'static str) -> Result<Subscriber, NatsError> {
    let wire = server.config.request_subject(subject);
    server
        .client
        .queue_subscribe(wire.clone(), module_of(subject).to_owned())
        .await
        .map_err(|error| NatsError::Subscribe {
            subject: wire,
            reason: error.to_string(),
        })
}

/// Takes the requests of one subject, each answered in a task of its own.
async fn serve_requests(server: Arc<Server>, subject: &'static str, mut subscriber: Subscriber) {
    let permits = Arc::new(Semaphore::new(server.config.max_in_flight));
    let mut failures = 0;
    loop {
        let next = tokio::select! {
            biased;
            () = server.stopping() => break,
            next = subscriber.next() => next,
        };
        let Some(message) = next else {
            // The subscription ended (the client was closed): subscribe again, with backoff.
            failures += 1;
            tracing::warn!(subject, "Request subscription ended; subscribing again.");
            if !server.pause(backoff(failures, RETRY_BASE, RETRY_MAX)).await {
                return;
            }
            match subscribe(&server, subject).await {
                Ok(again) => subscriber = again,
                Err(error) => tracing::warn!(%error, "Could not subscribe again; retrying."),
            }
            continue;
        };
        failures = 0;
        let received = Instant::now();
        let permit = tokio::select! {
            biased;
            () = server.stopping() => {
                server.tasks.spawn(answer(server.clone(), subject, message, received, None));
                break;
            }
            permit = permits.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else {
            break;
        };
        server.tasks.spawn(answer(
            server.clone(),
            subject,
            message,
            received,
            Some(permit),
        ));
    }
    // Stop taking requests (another instance gets them), then answer what was already here
    // rather than letting those callers wait for their deadline.
    if let Err(error) = subscriber.unsubscribe().await {
        tracing::debug!(%error, subject, "Could not unsubscribe.");
    }
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(100), subscriber.next()).await
    {
        server.tasks.spawn(answer(
            server.clone(),
            subject,
            message,
            Instant::now(),
            None,
        ));
    }
}

/// Answers one request.
async fn answer(
    server: Arc<Server>,
    subject: &'static str,
    message: async_nats::Message,
    received: Instant,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let Some(reply) = message.reply.clone() else {
        tracing::warn!(
            subject,
            "Bad request on the wire: no reply subject; ignoring it."
        );
        return;
    };
    let map = message.headers.as_ref();
    let outcome = match decode_envelope(map, subject) {
        Ok(envelope) => {
            let deadline = header(map, headers::DEADLINE_MS)
                .and_then(|raw| raw.parse::<u64>().ok())
                .map_or_else(
                    || server.bus.config().request_timeout(),
                    Duration::from_millis,
                )
                .saturating_sub(received.elapsed());
            let correlation_id = envelope.correlation_id.clone();
            let outcome = if deadline.is_zero() {
                Err(BusError::Timeout {
                    subject: subject.to_owned(),
                    after: received.elapsed(),
                })
            } else {
                server
                    .bus
                    .inbound()
                    .serve_remote_request(envelope, &message.payload, deadline)
                    .await
            };
            if let Err(BusError::Codec { reason, .. }) = &outcome {
                tracing::warn!(subject, %correlation_id, %reason, "Bad request on the wire: its body does not decode.");
            }
            outcome
        }
        Err(reason) => {
            tracing::warn!(subject, %reason, "Bad request on the wire; answering with a codec error.");
            Err(codec(subject, &reason))
        }
    };
    let (map, body) = encode_outcome(subject, &outcome);
    if let Err(error) = server.client.publish_with_headers(reply, map, body).await {
        tracing::warn!(subject, %error, "Could not send a reply.");
    }
}

// ------------------------------------------------------------------------ events

/// Consumes module `group`'s events, opening the consumer's message stream again after any
/// error, until the server stops.
async fn consume_events(server: Arc<Server>, group: &'static str, subjects: Vec<&'static str>) {
    let permits = Arc::new(Semaphore::new(server.config.max_in_flight));
    let mut chains = Chains::default();
    let mut failures = 0;
    'open: while !server.is_stopping() {
        let opened = tokio::select! {
            () = server.stopping() => break,
            opened = open_consumer(&server, group, &subjects) => opened,
        };
        let (mut messages, filtered) = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                failures += 1;
                tracing::warn!(module = group, %reason, "Cannot consume events yet; retrying.");
                if !server.pause(backoff(failures, RETRY_BASE, RETRY_MAX)).await {
                    break;
                }
                continue;
            }
        };
        let events = Arc::new(Events {
            server: server.clone(),
            group,
            subjects: subjects.clone(),
            filtered,
        });
        loop {
            // Take a message only when there is room to handle it.
            let permit = tokio::select! {
                biased;
                () = server.stopping() => break 'open,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break 'open };
            let next = tokio::select! {
                biased;
                () = server.stopping() => break 'open,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    failures = 0;
                    let key = event_key(&message);
                    let (after, done) = chains.next(key, server.config.max_in_flight);
                    server
                        .tasks
                        .spawn(events.clone().handle(message, after, done, permit));
                }
                Some(Err(error)) => {
                    failures += 1;
                    tracing::warn!(module = group, %error, "Event stream failed; opening it again.");
                    break;
                }
                None => {
                    failures += 1;
                    tracing::warn!(module = group, "Event stream ended; opening it again.");
                    break;
                }
            }
        }
        if !server.pause(backoff(failures, RETRY_BASE, RETRY_MAX)).await {
            break;
        }
    }
}

/// Makes sure the stream and the module's durable consumer exist, and opens its message
/// stream. Also says whether the server filters the consumer to the module's subjects.
async fn open_consumer(
    server: &Server,
    group: &'static str,
    subjects: &[&'static str],
) -> Result<(pull::Stream, bool), String> {
    let stream = ensure_stream(&server.jetstream, &server.config)
        .await
        .map_err(|e| e.to_string())?;
    let mut filters: Vec<String> = subjects
        .iter()
        .map(|subject| server.config.event_subject(subject))
        .collect();
    let (filter_subject, filter_subjects) = if filters.len() == 1 {
        (filters.remove(0), Vec::new())
    } else {
        (String::new(), filters)
    };
    let wanted = pull::Config {
        durable_name: Some(group.to_owned()),
        description: Some(format!("Banyan module {group}")),
        ack_policy: AckPolicy::Explicit,
        ack_wait: server.config.ack_wait(),
        max_deliver: server.config.max_deliver,
        filter_subject,
        filter_subjects,
        ..pull::Config::default()
    };
    let consumer: PullConsumer = match stream.create_consumer(wanted).await {
        Ok(consumer) => consumer,
        Err(error) => match stream.get_consumer::<pull::Config>(group).await {
            // A server that cannot update the consumer in place: use it as it is.
            Ok(consumer) => {
                tracing::warn!(module = group, %error, "Could not update the module's consumer; using it as it is.");
                consumer
            }
            Err(_) => return Err(format!("cannot create the consumer `{group}`: {error}")),
        },
    };
    let config = &consumer.cached_info().config;
    // A server older than 2.10 ignores `filter_subjects`: the consumer then sees every event
    // and this instance skips those of other modules.
    let filtered = !config.filter_subject.is_empty() || !config.filter_subjects.is_empty();
    let messages = consumer
        .stream()
        .max_messages_per_batch(server.config.max_in_flight.min(256))
        .heartbeat(CONSUMER_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .map_err(|e| format!("cannot pull from the consumer `{group}`: {e}"))?;
    tracing::info!(module = group, filtered, "Consuming events.");
    Ok((messages, filtered))
}

/// The aggregate an event is about (its header), else the message id: events of one key are
/// handled one after the other, in stream order.
fn event_key(message: &jetstream::Message) -> Uuid {
    let map = message.headers.as_ref();
    header(map, headers::AGGREGATE_ID)
        .or_else(|| header(map, headers::MESSAGE_ID))
        .and_then(|raw| Uuid::parse_str(raw).ok())
        .unwrap_or_else(Uuid::nil)
}

/// Keeps the events of one aggregate in order while events of different aggregates are
/// handled concurrently: each event waits until the previous one of its aggregate is done.
#[derive(Default)]
struct Chains {
    /// The last event taken for each aggregate: it is done when its sender is dropped.
    tails: HashMap<Uuid, oneshot::Receiver<()>>,
}

impl Chains {
    fn next(
        &mut self,
        key: Uuid,
        bound: usize,
    ) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        if self.tails.len() > bound.saturating_mul(2) {
            // Forget the aggregates whose last event is done.
            self.tails.retain(|_, tail| {
                matches!(tail.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
        }
        let (done, tail) = oneshot::channel();
        (self.tails.insert(key, tail), done)
    }
}

/// Where an event that arrived goes in this instance.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// A subject the module subscribes to.
    Deliver,
    /// A version of a subscribed message that no local handler knows, such as `.v9`.
    UnknownVersion,
    /// Something else entirely.
    Unknown,
}

fn route(subscribed: &[&str], subject: &str) -> Route {
    fn stem(subject: &str) -> &str {
        subject.rsplit_once('.').map_or(subject, |(stem, _)| stem)
    }
    if subscribed.contains(&subject) {
        Route::Deliver
    } else if subscribed.iter().any(|known| stem(known) == stem(subject)) {
        Route::UnknownVersion
    } else {
        Route::Unknown
    }
}

/// One module's consumer, as its event tasks see it.
struct Events {
    server: Arc<Server>,
    group: &'static str,
    subjects: Vec<&'static str>,
    /// Whether the server filters the consumer to `subjects` (else it sees every event).
    filtered: bool,
}

/// What to tell JetStream about an event.
enum Verdict {
    Ack,
    Nak(Duration),
    Term,
}

impl Events {
    async fn handle(
        self: Arc<Self>,
        message: jetstream::Message,
        after: Option<oneshot::Receiver<()>>,
        done: oneshot::Sender<()>,
        _permit: OwnedSemaphorePermit,
    ) {
        let work = async {
            if let Some(previous) = after {
                // Err only means the previous event's task ended: either way it is done.
                let _ = previous.await;
            }
            self.decide(&message).await
        };
        let verdict = keep_alive(work, &message, self.server.config.ack_wait() / 2).await;
        drop(done);
        let kind = match verdict {
            Verdict::Ack => AckKind::Ack,
            Verdict::Nak(delay) => AckKind::Nak(Some(delay)),
            Verdict::Term => AckKind::Term,
        };
        if let Err(error) = message.ack_with(kind).await {
            // JetStream delivers it again after the ack wait; the inbox absorbs the repeat.
            tracing::warn!(module = self.group, subject = %message.subject, %error, "Could not acknowledge an event.");
        }
    }

    async fn decide(&self, message: &jetstream::Message) -> Verdict {
        let server = &self.server;
        let wire_subject = message.subject.as_str();
        let delivered = message.info().map_or(1, |info| info.delivered);
        let last = delivered >= server.config.max_deliver;
        let Some(subject) = wire_subject.strip_prefix(&server.config.event_prefix()) else {
            return self
                .reject(
                    message,
                    wire_subject,
                    "the subject is outside the events prefix".into(),
                    last,
                )
                .await;
        };
        match route(&self.subjects, subject) {
            Route::Deliver => {}
            Route::UnknownVersion => {
                let reason = format!("no handler of module `{}` knows this version", self.group);
                return self.reject(message, subject, reason, last).await;
            }
            Route::Unknown if self.filtered => {
                let reason = format!("module `{}` does not subscribe to this subject", self.group);
                return self.reject(message, subject, reason, last).await;
            }
            Route::Unknown => {
                // An unfiltered consumer (old server) sees the other modules' events too.
                tracing::trace!(
                    module = self.group,
                    subject,
                    "Skipping an event of another module."
                );
                return Verdict::Ack;
            }
        }
        let map = message.headers.as_ref();
        let parsed = decode_envelope(map, subject).and_then(|envelope| {
            let aggregate = match header(map, headers::AGGREGATE_ID) {
                Some(raw) => Uuid::parse_str(raw).map_err(|_| {
                    format!("header {} is not a UUID: {raw:?}", headers::AGGREGATE_ID)
                })?,
                None => envelope.message_id,
            };
            let json: Arc<str> = std::str::from_utf8(&message.payload)
                .map_err(|_| "the body is not UTF-8".to_owned())?
                .into();
            Ok((envelope, json, aggregate))
        });
        let (envelope, json, aggregate) = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => return self.reject(message, subject, reason, last).await,
        };
        let dead_letter_envelope = last.then(|| envelope.clone());
        // Returns once the module's handler succeeded or the bus dead-lettered the event
        // (including a body that does not decode): both mean the event is done with.
        match server
            .bus
            .inbound()
            .deliver_remote_event_to(self.group, envelope, json.clone(), aggregate)
            .await
        {
            Ok(()) => Verdict::Ack,
            Err(error) => match dead_letter_envelope {
                Some(envelope) => {
                    tracing::error!(module = self.group, subject, delivered, %error, "Event failed its last delivery; dead-lettering it.");
                    let reason = format!(
                        "delivery {delivered} of {} failed: {error}",
                        server.config.max_deliver
                    );
                    self.dead_letter(&envelope, &json, &reason, true).await
                }
                None => {
                    tracing::warn!(module = self.group, subject, delivered, %error, "Event delivery failed; JetStream delivers it again.");
                    Verdict::Nak(backoff(
                        u32::try_from(delivered).unwrap_or(u32::MAX),
                        NAK_BASE,
                        NAK_MAX,
                    ))
                }
            },
        }
    }

    /// A message that cannot be delivered at all: logged, dead-lettered, terminated.
    async fn reject(
        &self,
        message: &jetstream::Message,
        subject: &str,
        reason: String,
        last: bool,
    ) -> Verdict {
        tracing::warn!(
            module = self.group,
            subject = %message.subject,
            %reason,
            "Bad message on the wire; dead-lettering it."
        );
        let envelope = best_effort_envelope(message.headers.as_ref(), subject);
        let payload = String::from_utf8_lossy(&message.payload);
        self.dead_letter(&envelope, &payload, &format!("bad message: {reason}"), last)
            .await
    }

    async fn dead_letter(
        &self,
        envelope: &Envelope,
        payload: &str,
        reason: &str,
        last: bool,
    ) -> Verdict {
        match self
            .server
            .bus
            .inbound()
            .dead_letter_received(self.group, envelope, payload, reason)
            .await
        {
            Ok(true) => Verdict::Term,
            Ok(false) => {
                tracing::error!(module = self.group, subject = %envelope.subject, "No dead-letter store for this module; the message is dropped.");
                Verdict::Term
            }
            Err(error) if last => {
                tracing::error!(module = self.group, subject = %envelope.subject, %error, "Could not store a dead letter after the last delivery; the message is dropped.");
                Verdict::Term
            }
            Err(error) => {
                tracing::warn!(module = self.group, subject = %envelope.subject, %error, "Could not store a dead letter; JetStream delivers the message again.");
                Verdict::Nak(NAK_BASE)
            }
        }
    }
}

/// Runs `work`, telling JetStream every `every` that the message is still being worked on, so
/// that a slow handler (retrying with backoff) is not raced by a redelivery.
async fn keep_alive<T>(
    work: impl Future<Output = T>,
    message: &jetstream::Message,
    every: Duration,
) -> T {
    let every = every.max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = tick.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(%error, "Could not extend an event's ack wait.");
                }
            }
        }
    }
}

/// `base` doubled per failure after the first, up to `max`, with jitter (half to all of it).
fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let cap = exp.min(max);
    let half = cap / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;

    #[test]
    fn an_envelope_survives_the_headers() {
        let envelope = Context::root().envelope("payments.get_payment.v1");
        let map = envelope_headers(&envelope).expect("encoding");
        let decoded = decode_envelope(Some(&map), "payments.get_payment.v1").expect("decoding");
        assert_eq!(decoded, envelope);
    }

    #[test]
    fn missing_or_invalid_headers_are_named() {
        let envelope = Context::root().envelope("a.b.v1");
        let reason = decode_envelope(None, "a.b.v1").expect_err("no headers");
        assert!(reason.contains(headers::SUBJECT), "{reason}");
        let mut map = envelope_headers(&envelope).expect("encoding");
        map.insert(headers::MESSAGE_ID, "not-a-uuid");
        let reason = decode_envelope(Some(&map), "a.b.v1").expect_err("bad id");
        assert!(reason.contains(headers::MESSAGE_ID), "{reason}");
        let map = envelope_headers(&envelope).expect("encoding");
        let reason = decode_envelope(Some(&map), "a.c.v1").expect_err("wrong subject");
        assert!(reason.contains("a.c.v1"), "{reason}");
        let best = best_effort_envelope(Some(&map), "a.c.v1");
        assert_eq!(best.message_id, envelope.message_id);
        assert_eq!(best.subject, "a.c.v1");
    }

    #[test]
    fn a_line_break_in_an_envelope_is_a_codec_error_not_a_panic() {
        let mut envelope = Context::root().envelope("a.b.v1");
        envelope.traceparent = Some("00-x\r\nInjected: yes".into());
        assert!(matches!(
            envelope_headers(&envelope),
            Err(BusError::Codec { .. })
        ));
    }

    #[test]
    fn every_outcome_reads_back_as_it_was() {
        let subject = "s.x.v1";
        let deadline = Duration::from_secs(1);
        let read = |outcome: Result<RemoteReply, BusError>| {
            let (map, body) = encode_outcome(subject, &outcome);
            let message = async_nats::Message {
                subject: "reply".into(),
                reply: None,
                payload: body,
                headers: Some(map),
                status: None,
                description: None,
                length: 0,
            };
            decode_reply(subject, deadline, &message)
        };
        let ok = RemoteReply::Ok(Arc::from(&b"{\"a\":1}"[..]));
        assert_eq!(read(Ok(ok.clone())), Ok(ok));
        let rejected = RemoteReply::Rejected(
            Rejection::new("nope", "no").with_details(serde_json::json!({"n": 1})),
        );
        assert_eq!(read(Ok(rejected.clone())), Ok(rejected));
        for error in [
            BusError::NoHandler {
                subject: subject.into(),
            },
            BusError::Timeout {
                subject: subject.into(),
                after: Duration::from_millis(250),
            },
            unavailable(subject, "shutting down"),
            codec(subject, "bad json"),
        ] {
            assert_eq!(read(Err(error.clone())), Err(error));
        }
    }

    #[test]
    fn events_are_routed_by_subject_and_version() {
        let subscribed = ["test.thing.v1", "test.other.v2"];
        assert_eq!(route(&subscribed, "test.thing.v1"), Route::Deliver);
        assert_eq!(route(&subscribed, "test.thing.v9"), Route::UnknownVersion);
        assert_eq!(route(&subscribed, "test.other.v1"), Route::UnknownVersion);
        assert_eq!(route(&subscribed, "shop.charged.v1"), Route::Unknown);
    }

    #[test]
    fn the_configuration_refuses_bad_names() {
        assert!(NatsConfig::default().validate().is_ok());
        let bad = NatsConfig {
            subject_prefix: "a.b".into(),
            ..NatsConfig::default()
        };
        assert_eq!(
            bad.validate().map_err(|(key, _)| key),
            Err("nats.subject_prefix")
        );
        let parsed: Result<NatsConfig, _> = serde_json::from_str(r#"{"max_delivr": 3}"#);
        assert!(parsed.is_err());
        let parsed: NatsConfig = serde_json::from_str(r#"{"max_deliver": 3}"#).expect("parses");
        assert_eq!(parsed.max_deliver, 3);
        assert_eq!(parsed.stream, "BANYAN_EVENTS");
    }

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for failures in 0..40 {
            assert!(backoff(failures, base, max) <= max);
        }
        assert!(backoff(1, base, max) <= base);
        assert!(backoff(20, base, max) >= max / 2);
    }
}
