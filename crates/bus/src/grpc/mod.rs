//! The gRPC adapter: the bus between processes as unary gRPC calls over HTTP/2 (tonic).
//!
//! It behaves as the [HTTP adapter](crate::http) does, over another wire: the same
//! [`Instances`] and [`Subscribers`] say where modules are and who subscribes, the same
//! [`Peers`] credential goes with every call, the same round robin picks an instance, and the
//! receiving side hands the bus the same things. What changes is the connection: one HTTP/2
//! connection per instance carries every concurrent call, so callers do not queue for a pooled
//! HTTP/1.1 connection and no call pays for a new one.
//!
//! # Service `banyan.bus.v1.Bus` (see [`messages`] for its schema)
//! - `Request(CallRequest) → CallReply`: one request, answered by the hosting process's
//!   handler: the response's JSON, or its rejection's.
//! - `PushEvent(EventPush) → EventAck`: one event for one subscribing module there, answered
//!   once it is safe (handled, or kept in dead letters: [`crate::Accepted`]).
//!
//! The envelope travels in the metadata, under the header names every transport uses
//! ([`crate::wire::headers`]), with `authorization: Bearer …` and, on requests,
//! `banyan-deadline-ms`. The server is an `axum::Router` ([`routes`]) that the application
//! mounts on its internal listener beside the HTTP adapter's routes: one port serves both, as
//! HTTP/1.1 or HTTP/2 (with TLS, ALPN offers `h2`).
//!
//! # Errors as gRPC status codes
//!
//! | code | `BusError` / refusal | a pushed event |
//! |---|---|---|
//! | `NOT_FOUND` | `NoHandler` (or the module is not hosted there) | not retried |
//! | `DEADLINE_EXCEEDED` | `Timeout` | not retried (the relay resends after its lease) |
//! | `UNAVAILABLE` | `Unavailable` (shutting down, not reachable) | retried with backoff |
//! | `INVALID_ARGUMENT` | `Codec` (bad envelope, body, subject) | not retried |
//! | `UNAUTHENTICATED` | no credential or one not accepted | not retried |
//! | `PERMISSION_DENIED` | the calling process may not hand in that subject | not retried |
//!
//! A domain rejection is an answer (`CallReply.rejected`), never a status.

use std::time::Duration;

use crate::{BusError, wire::WireError};

mod client;
pub mod messages;
mod server;

pub use client::GrpcTransport;
/// The generated client of `banyan.bus.v1.Bus`, for callers that build their own calls.
pub use generated::bus_client::BusClient;
pub use server::routes;
/// The client's TLS settings (the authority to trust), as tonic takes them.
pub use tonic::transport::{Certificate, ClientTlsConfig};

/// The code tonic-build generated from the service's description (`build.rs`).
#[allow(
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/banyan.bus.v1.Bus.rs"));
}

/// The status a refusal or bus error of kind `kind` is sent as.
fn status_of(kind: &str, reason: String) -> tonic::Status {
    use tonic::Code;
    let code = match kind {
        "no_handler" => Code::NotFound,
        "timeout" => Code::DeadlineExceeded,
        "codec" => Code::InvalidArgument,
        "unauthorized" => Code::Unauthenticated,
        "forbidden" => Code::PermissionDenied,
        "rejected" => Code::FailedPrecondition,
        _ => Code::Unavailable,
    };
    tonic::Status::new(code, reason)
}

/// The bus error a status from the other side stands for.
fn error_of(status: &tonic::Status, subject: &str, deadline: Duration) -> BusError {
    use tonic::Code;
    let kind = match status.code() {
        Code::NotFound => "no_handler",
        Code::DeadlineExceeded => "timeout",
        Code::InvalidArgument | Code::OutOfRange => "codec",
        Code::Unauthenticated => {
            return BusError::Unavailable {
                subject: subject.into(),
                reason: "the remote refused this process's credentials (check its identity)".into(),
            };
        }
        Code::PermissionDenied => "forbidden",
        _ => "unavailable",
    };
    WireError {
        kind: kind.to_owned(),
        reason: format!("{:?}: {}", status.code(), status.message()),
        after_ms: None,
    }
    .into_error(subject, deadline)
}
