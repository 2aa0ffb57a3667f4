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
//!   it, filtered to every version of the events it subscribes to (`banyan.evt.<event>.*`, so
//!   that a version none of its handlers knows reaches it and is dead-lettered), with explicit
//!   acks; every instance of the module binds to that consumer, so each module gets each event
//!   once, whichever instance. Several filters on one consumer need NATS 2.10 or newer: on an
//!   older server the module does not consume and says why. An instance
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
    fmt,
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
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    Bus, BusError, Envelope,
    backoff::Backoff,
    bus::{codec, unavailable},
    transport::{RemoteReply, Transport},
    wire::{self, WireError},
};

/// The names of the headers that carry a message's envelope and outcome (the wire format's,
/// see [`crate::wire`]), and JetStream's de-duplication key.
pub mod headers {
    pub use crate::wire::headers::*;

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
/// How long creating the events stream waits for its replicas to elect a leader.
const STREAM_LEADER_WAIT: Duration = Duration::from_secs(10);

/// Settings of the NATS adapter (`[nats]` in the configuration).
#[derive(Clone, PartialEq, Eq, Deserialize)]
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
    /// Copies of the events stream a JetStream cluster keeps (1 to 5): 3 on a three-node
    /// cluster survives the loss of any one node. More than 1 needs a cluster.
    pub stream_replicas: usize,
}

impl fmt::Debug for NatsConfig {
    /// The URL without its password: it is a process's NATS credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = if credentials_in(self.url.split(',').next().unwrap_or_default()).is_some() {
            "<with credentials>"
        } else {
            self.url.as_str()
        };
        f.debug_struct("NatsConfig")
            .field("url", &url)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("max_deliver", &self.max_deliver)
            .field("ack_wait_ms", &self.ack_wait_ms)
            .field("max_in_flight", &self.max_in_flight)
            .field("stream_replicas", &self.stream_replicas)
            .finish()
    }
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
            stream_replicas: 1,
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
        if !(1..=5).contains(&self.stream_replicas) {
            return Err(("nats.stream_replicas", "must be 1 to 5".into()));
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

/// Connects to NATS at `url` (one address or several, comma-separated), as the user the
/// first address names (`nats://user:password@host:4222`, percent-encoded; the client does not
/// read credentials from a URL by itself), over TLS with `tls://`.
///
/// The client reconnects by itself, forever. If the server cannot be reached now, this waits
/// a few seconds for it and then returns a client that keeps trying in the background (and
/// logs a warning); only a malformed URL is an error.
pub async fn connect(url: &str) -> Result<Client, NatsError> {
    let addresses: Vec<&str> = url.split(',').map(str::trim).collect();
    let mut options = ConnectOptions::new();
    if let Some((user, password)) = addresses.first().and_then(|a| credentials_in(a)) {
        options = options.user_and_password(user, password);
    }
    let client = options
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

/// The user name and password a server URL carries, decoded.
fn credentials_in(address: &str) -> Option<(String, String)> {
    let url = url::Url::parse(address).ok()?;
    if url.username().is_empty() {
        return None;
    }
    let decode = |raw: &str| {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((
        decode(url.username()),
        decode(url.password().unwrap_or_default()),
    ))
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
        num_replicas: config.stream_replicas,
        ..StreamConfig::default()
    };
    let mut stream = jetstream
        .get_or_create_stream(wanted)
        .await
        .map_err(|e| failed(e.to_string()))?;
    // On a cluster, a stream just created answers only once its replicas elected a leader:
    // until then a publish is refused with "no stream found". Wait for it, a while.
    let started = Instant::now();
    while stream
        .cached_info()
        .cluster
        .as_ref()
        .is_some_and(|cluster| cluster.leader.is_none())
        && started.elapsed() < STREAM_LEADER_WAIT
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.info().await.map_err(|e| failed(e.to_string()))?;
    }
    let current = &stream.cached_info().config;
    let mut updated = current.clone();
    if !updated.subjects.contains(&subjects) {
        updated.subjects.push(subjects);
    }
    if updated.duplicate_window < DUPLICATE_WINDOW {
        updated.duplicate_window = DUPLICATE_WINDOW;
    }
    // Raised when a deployment grows into a cluster; never lowered by a process that says 1.
    if updated.num_replicas < config.stream_replicas {
        updated.num_replicas = config.stream_replicas;
    }
    if &updated == current {
        return Ok(stream);
    }
    tracing::info!(stream = %config.stream, "Updating the events stream's subjects, duplicate window or replicas.");
    jetstream
        .update_stream(&updated)
        .await
        .map_err(|e| failed(e.to_string()))?;
    jetstream
        .get_stream(&config.stream)
        .await
        .map_err(|e| failed(e.to_string()))
}

mod client;
mod events;
mod server;

pub use client::NatsTransport;
pub use server::{ServeHandle, serve};

/// The headers that carry `envelope` and its subject (without the request's deadline or the
/// event's aggregate).
///
/// Fails with [`BusError::Codec`] if a field cannot be a header value (a line break).
pub fn envelope_headers(envelope: &Envelope) -> Result<HeaderMap, BusError> {
    let mut map = HeaderMap::new();
    wire::write_envelope(envelope, &mut map)?;
    map.insert(headers::SUBJECT, envelope.subject.as_str());
    Ok(map)
}

fn header<'a>(map: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    map?.get(name).map(HeaderValue::as_str)
}

/// Rebuilds the envelope of a message that arrived on `subject` (the wire subject without its
/// prefix), which its subject header must name too. Every failure names the header at fault.
fn decode_envelope(map: Option<&HeaderMap>, subject: &str) -> Result<Envelope, String> {
    let map = map.ok_or_else(|| format!("header `{}` is missing: no headers", headers::SUBJECT))?;
    let declared = header(Some(map), headers::SUBJECT)
        .ok_or_else(|| format!("header `{}` is missing", headers::SUBJECT))?;
    if declared != subject {
        return Err(format!(
            "header `{}` says {declared:?} but the message arrived on {subject:?}",
            headers::SUBJECT
        ));
    }
    wire::read_envelope(map, subject)
}

/// An envelope for a message that could not be decoded (see [`wire::best_effort_envelope`]).
fn best_effort_envelope(map: Option<&HeaderMap>, subject: &str) -> Envelope {
    wire::best_effort_envelope(map.unwrap_or(&HeaderMap::new()), subject)
}

const OUTCOME_OK: &str = "ok";
const OUTCOME_REJECTED: &str = "rejected";
const OUTCOME_ERROR: &str = "error";

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
    // A struct of strings always serializes.
    Bytes::from(serde_json::to_vec(&WireError::from_error(error)).unwrap_or_default())
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
            Err(wire.into_error(subject, deadline))
        }
        Some(other) => Err(codec(subject, &format!("unknown reply outcome {other:?}"))),
        None => Err(codec(
            subject,
            &format!("the reply has no {} header", headers::OUTCOME),
        )),
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

/// `base` doubled per failure after the first, up to `max`, with jitter (see [`Backoff`]).
fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    Backoff::new(base, max).delay(failures)
}

#[cfg(test)]
mod tests {
    use super::events::{self, Route, route};
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
    fn a_consumer_takes_every_version_of_each_event_it_follows() {
        let config = NatsConfig::default();
        let filters = events::consumer_filters(
            &config,
            &["test.thing.v1", "test.thing.v2", "test.other.v1"],
        );
        assert_eq!(
            filters,
            [
                config.event_subject("test.other.*"),
                config.event_subject("test.thing.*")
            ]
        );
    }

    #[test]
    fn several_consumer_filters_need_nats_2_10() {
        for old in ["2.9.10", "2.2.0", "1.4.1", "", "garbage"] {
            assert!(!events::supports_several_filters(old), "{old}");
        }
        for new in ["2.10.0", "2.15.1", "2.15.1-beta.2", "3.0.0"] {
            assert!(events::supports_several_filters(new), "{new}");
        }
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
    fn credentials_are_read_from_the_first_address() {
        assert_eq!(
            credentials_in("nats://payments:p%40ss@127.0.0.1:4222"),
            Some(("payments".to_owned(), "p@ss".to_owned()))
        );
        assert_eq!(credentials_in("nats://127.0.0.1:4222"), None);
        let config = NatsConfig {
            url: "nats://payments:s3cret@127.0.0.1:4222".into(),
            ..NatsConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
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
