//! The gRPC adapter's messages, as prost structs. The same schema as a `.proto` file:
//!
//! ```proto
//! syntax = "proto3";
//! package banyan.bus.v1;
//!
//! service Bus {
//!   rpc Request(CallRequest) returns (CallReply);
//!   rpc PushEvent(EventPush) returns (EventAck);
//! }
//! message CallRequest { string subject = 1; bytes body = 2; }
//! message CallReply { oneof outcome { bytes ok = 1; bytes rejected = 2; } }
//! message EventPush { string subject = 1; string module = 2; string aggregate_id = 3; bytes body = 4; }
//! message EventAck { string status = 1; }
//! ```
//!
//! Bodies stay the message's JSON, as on every other transport: the envelope is the same
//! everywhere, and a module's contract types are serde types, not protobuf ones. The envelope
//! travels in the call's metadata under the header names of [`crate::wire::headers`].

use bytes::Bytes;

/// A request for the handler of `subject`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CallRequest {
    #[prost(string, tag = "1")]
    pub subject: String,
    /// The request's JSON.
    #[prost(bytes = "bytes", tag = "2")]
    pub body: Bytes,
}

/// How the handler answered. Failures to answer at all are the call's gRPC status.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CallReply {
    #[prost(oneof = "Outcome", tags = "1, 2")]
    pub outcome: Option<Outcome>,
}

/// The answer of a handler: its response or its domain rejection, each as JSON.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Outcome {
    #[prost(bytes = "bytes", tag = "1")]
    Ok(Bytes),
    /// `{"code", "message", "details"}`.
    #[prost(bytes = "bytes", tag = "2")]
    Rejected(Bytes),
}

/// An event on `subject` for subscribing module `module` in the receiving process.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EventPush {
    #[prost(string, tag = "1")]
    pub subject: String,
    #[prost(string, tag = "2")]
    pub module: String,
    /// The aggregate whose events are handled in order (a UUID).
    #[prost(string, tag = "3")]
    pub aggregate_id: String,
    /// The event's JSON.
    #[prost(bytes = "bytes", tag = "4")]
    pub body: Bytes,
}

/// The receiver has the event: `delivered`, `dead_lettered` or `dropped` (see
/// [`crate::Accepted`]).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EventAck {
    #[prost(string, tag = "1")]
    pub status: String,
}
