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
//! endpoints demand a caller's credential that the process's [`Peers`] accepts (401
//! otherwise) and that may hand in that subject (403 otherwise), cap bodies at
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
//! | 401 | `{"error":{"kind":"unauthorized","reason"}}` | no credential, or one not accepted |
//! | 403 | `{"error":{"kind":"forbidden","reason"}}` | the calling process may not hand in that subject |
//! | 404 | `{"error":{"kind":"no_handler","reason"}}` | no handler (request) or module not hosted here (event) |
//! | 413 | `{"error":{"kind":"codec","reason"}}` | body over [`MAX_BODY_BYTES`] |
//! | 503 | `{"error":{"kind":"unavailable","reason"}}` | shutting down |
//! | 504 | `{"error":{"kind":"timeout","reason"}}` | the deadline passed |

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
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
use banyan_message::Rejection;
use futures::future::BoxFuture;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    Bus, BusError, Envelope, RemoteReply, Transport,
    backoff::Backoff,
    wire::{self, WireError},
};

mod client;
mod peers;
pub(crate) mod server;

pub use client::{HttpSetupError, HttpTransport, HttpTransportConfig, client_builder};
pub use peers::{MessageKind, Peers, SharedSecret};
pub use server::{bearer_token, routes, same_secret};

pub use crate::wire::headers::{
    AGGREGATE_ID, CAUSATION_ID, CORRELATION_ID, DEADLINE_MS, MESSAGE_ID, TIMESTAMP, TRACEPARENT,
};

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
    wire::write_envelope(envelope, &mut headers)?;
    Ok(headers)
}

/// Rebuilds the envelope of a message on `subject` from its headers; the error names what is
/// missing or malformed.
pub fn envelope_from_headers(headers: &HeaderMap, subject: &str) -> Result<Envelope, String> {
    wire::read_envelope(headers, subject)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;

    #[test]
    fn an_envelope_round_trips_through_headers() {
        let first = Context::root().envelope("a.b.v1");
        let envelope = Context::caused_by(&first, "c").envelope("c.d.v1");
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
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cret", "s3cre7"));
        assert!(!same_secret("s3cret", "s3cret!"));
        assert!(!same_secret("", ""), "an empty secret opens nothing");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  s3cret "),
        );
        assert_eq!(bearer_token(&headers), Some("s3cret"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        let config = HttpTransportConfig::default();
        for attempt in 1..30 {
            assert!(
                config.retries().backoff.delay(attempt)
                    <= Duration::from_millis(config.backoff_max_ms)
            );
        }
    }

    #[test]
    fn a_secret_that_cannot_be_a_header_is_refused() {
        for bad in ["", "has space", "new\nline"] {
            assert!(matches!(
                SharedSecret::new(bad),
                Err(HttpSetupError::BadSecret)
            ));
        }
        let shared = SharedSecret::new("s3cret").unwrap();
        assert!(shared.authenticate("s3cret").is_ok());
        assert!(shared.authenticate("s3cre7").is_err());
    }
}
