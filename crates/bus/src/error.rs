//! What can go wrong on the bus, in kinds a caller can branch on.

use std::time::Duration;

use banyan_message::Rejection;

/// Why a `request` (or a `publish`) did not succeed.
///
/// The kinds are distinct because callers act differently on each: `NoHandler` is a wiring
/// mistake; `Timeout`, `Unavailable`, `CircuitOpen` and `Overloaded` are worth a retry later or
/// a degraded answer (the last two were answered by the caller's own edge policy, at once), and `Rejected`
/// is the handler's domain answer, to be shown to the user as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Nothing in this process or in the topology answers this subject. Fails at once.
    #[error("no handler is registered for `{subject}`")]
    NoHandler { subject: String },
    /// The deadline passed before an answer came.
    #[error("`{subject}` got no answer within {after:?}")]
    Timeout { subject: String, after: Duration },
    /// The handler (or the transport to it) cannot take messages now: shutting down, a
    /// remote process that cannot be reached, a broker that is down.
    #[error("`{subject}` is unavailable: {reason}")]
    Unavailable { subject: String, reason: String },
    /// The edge's circuit breaker is open: the callee failed too often lately, so the call was
    /// not made. Answered at once; `retry_after` says when the breaker lets a probe through.
    #[error("`{subject}` is not called for now (circuit open); retry in {retry_after:?}")]
    CircuitOpen {
        subject: String,
        retry_after: Duration,
    },
    /// The edge's bulkhead is full: too many calls of this caller to this callee are in
    /// flight already, so this one was turned away rather than queued.
    #[error("`{subject}` is overloaded: {reason}")]
    Overloaded { subject: String, reason: String },
    /// The handler answered with a domain error; it arrives intact over any transport.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// A message could not be encoded or decoded (a bad message on the wire).
    #[error("`{subject}` could not be encoded or decoded: {reason}")]
    Codec { subject: String, reason: String },
}

impl BusError {
    /// The rejection, if the handler answered with one.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            BusError::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// The kind, as a stable name: how the error travels on every wire and how callers and
    /// logs name it (`no_handler`, `timeout`, `unavailable`, `circuit_open`, `overloaded`,
    /// `rejected`, `codec`).
    pub fn kind(&self) -> &'static str {
        match self {
            BusError::NoHandler { .. } => "no_handler",
            BusError::Timeout { .. } => "timeout",
            BusError::Unavailable { .. } => "unavailable",
            BusError::CircuitOpen { .. } => "circuit_open",
            BusError::Overloaded { .. } => "overloaded",
            BusError::Rejected(_) => "rejected",
            BusError::Codec { .. } => "codec",
        }
    }

    /// Whether trying again later might succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BusError::Timeout { .. }
                | BusError::Unavailable { .. }
                | BusError::CircuitOpen { .. }
                | BusError::Overloaded { .. }
        )
    }
}

/// What an event handler returns when it could not apply an event. The bus retries it with
/// backoff and dead-letters the event after the last attempt.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
