//! What travels around every message: ids, causality and trace context.

use std::{
    fmt,
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Metadata carried with every message, on every transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message (UUIDv7, so ids sort by creation time). Inboxes key on it.
    pub message_id: Uuid,
    pub subject: String,
    /// The id of the outside request that started the chain: every hop and log line keeps it.
    pub correlation_id: CorrelationId,
    /// The message that caused this one; `None` for the first hop.
    pub causation_id: Option<Uuid>,
    /// Milliseconds since the Unix epoch, when the message was made.
    pub timestamp_ms: i64,
    /// W3C `traceparent` of the span that sent the message.
    pub traceparent: Option<String>,
}

/// The id that ties together everything one outside request caused.
///
/// It arrives as `x-request-id` (or is made at the edge), so it is whatever text the client
/// sent, within limits checked by [`CorrelationId::parse`]. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationId(Arc<str>);

impl CorrelationId {
    /// A fresh id for work that no outside request started.
    pub fn new() -> Self {
        Self(Uuid::now_v7().to_string().into())
    }

    /// Accepts a client-supplied id if it is short printable ASCII, so it is safe in logs and
    /// headers; anything else is refused rather than trusted.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A W3C trace context (`traceparent`): which trace a message belongs to and which span sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceContext {
    /// The start of a new trace.
    pub fn new_root() -> Self {
        Self {
            trace_id: rand::random::<u128>().max(1),
            span_id: rand::random::<u64>().max(1),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: rand::random::<u64>().max(1),
            ..*self
        }
    }

    /// The span in which `module` handles message `message_id` of this trace. Derived, not
    /// random, so that everything naming that handling (the handler's context, its log span,
    /// the exported span) agrees without being handed the id, and every attempt at one
    /// delivery is one span.
    pub fn handled_by(&self, message_id: Uuid, module: &str) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        (message_id, module).hash(&mut hasher);
        Self {
            span_id: hasher.finish().max(1),
            ..*self
        }
    }

    /// The trace id as W3C writes it: 32 lowercase hex digits.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as W3C writes it: 16 lowercase hex digits.
    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// Parses a `traceparent` header value (version 00); `None` for anything malformed.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// The causal context a piece of work runs in: handed to every handler and passed to every
/// `publish` and `request` it makes, so that correlation, causation and trace flow through
/// each hop without any global state.
#[derive(Debug, Clone)]
pub struct Context {
    correlation_id: CorrelationId,
    causation_id: Option<Uuid>,
    /// This work's span: its trace, and its own span id.
    trace: TraceContext,
    /// The span that started this work (the caller's, the publisher's, the client's), when
    /// there is one.
    parent_span: Option<u64>,
    /// When the work this context belongs to must be done: set at the edge (the route's
    /// timeout) and by the bus for a handler (what its caller's deadline left). A request sent
    /// from this context waits at most until then, so a budget shrinks along a chain of calls
    /// instead of restarting at every hop.
    deadline: Option<Instant>,
}

impl Context {
    /// A context for work started at the edge (an HTTP request, a CLI command).
    pub fn new(correlation_id: CorrelationId, trace: Option<TraceContext>) -> Self {
        Self {
            correlation_id,
            causation_id: None,
            trace: trace.map_or_else(TraceContext::new_root, |t| t.child()),
            parent_span: trace.map(|t| t.span_id),
            deadline: None,
        }
    }

    /// The same context, whose work must be done within `budget` from now (or earlier, if it
    /// already had a tighter deadline).
    pub fn within(mut self, budget: Duration) -> Self {
        let deadline = Instant::now() + budget;
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// The same context, whose work must be done by `deadline` (or earlier, if it already had
    /// a tighter one).
    pub(crate) fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        self
    }

    /// What is left of this context's time, if it has a deadline (zero once it passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// A context with a fresh correlation id, for background work.
    pub fn root() -> Self {
        Self::new(CorrelationId::new(), None)
    }

    /// The context in which `module` handles a received message: a span of the message's
    /// trace ([`TraceContext::handled_by`]) whose parent is the span that sent it.
    pub fn caused_by(envelope: &Envelope, module: &str) -> Self {
        let parent = envelope
            .traceparent
            .as_deref()
            .and_then(TraceContext::parse);
        let trace = parent
            .unwrap_or_else(TraceContext::new_root)
            .handled_by(envelope.message_id, module);
        Self {
            correlation_id: envelope.correlation_id.clone(),
            causation_id: Some(envelope.message_id),
            trace,
            parent_span: parent.map(|p| p.span_id),
            deadline: None,
        }
    }

    pub fn correlation_id(&self) -> &CorrelationId {
        &self.correlation_id
    }

    /// The id of the message being handled, if this context was made by one.
    pub fn causation_id(&self) -> Option<Uuid> {
        self.causation_id
    }

    pub fn trace(&self) -> TraceContext {
        self.trace
    }

    /// The parent of this work's span, as 16 hex digits; empty at the root of a trace.
    pub fn parent_span_hex(&self) -> String {
        self.parent_span
            .map(|span| format!("{span:016x}"))
            .unwrap_or_default()
    }

    /// The context `module` runs in when it handles message `message_id` sent from this
    /// context in process: the envelope's causality without building the envelope.
    pub(crate) fn handling(&self, message_id: Uuid, module: &str) -> Self {
        Self {
            correlation_id: self.correlation_id.clone(),
            causation_id: Some(message_id),
            trace: self.trace.handled_by(message_id, module),
            parent_span: Some(self.trace.span_id),
            deadline: self.deadline,
        }
    }

    /// The envelope of a new message sent from this context.
    pub fn envelope(&self, subject: &str) -> Envelope {
        Envelope {
            message_id: Uuid::now_v7(),
            subject: subject.to_owned(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id,
            timestamp_ms: banyan_db::now_millis(),
            traceparent: Some(self.trace.to_string()),
        }
    }
}

/// Spreads aggregates over partitions: the events of one aggregate always share a key, so
/// they go to one worker of each subscribing module, in order. UUIDv7's low bits are random.
pub(crate) fn partition_key(aggregate: Uuid) -> u64 {
    let bits = aggregate.as_u128();
    (bits as u64) ^ ((bits >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handling_is_one_span_of_the_senders_trace_whatever_asks() {
        let sender = Context::root();
        let envelope = sender.envelope("orders.order_placed.v1");
        let payments = Context::caused_by(&envelope, "payments");
        // The same delivery asked again (a retry, the log span) is the same span.
        assert_eq!(
            payments.trace(),
            Context::caused_by(&envelope, "payments").trace()
        );
        assert_eq!(payments.trace().trace_id, sender.trace().trace_id);
        assert_eq!(payments.parent_span_hex(), sender.trace().span_hex());
        // Another subscriber of the same message is another span.
        assert_ne!(
            payments.trace().span_id,
            Context::caused_by(&envelope, "inventory").trace().span_id
        );
        // In process, the same handling gets the same span as over a transport.
        assert_eq!(
            sender.handling(envelope.message_id, "payments").trace(),
            payments.trace()
        );
        assert_eq!(Context::root().parent_span_hex(), "");
    }

    #[test]
    fn a_traceparent_round_trips() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(header).unwrap();
        assert_eq!(parsed.to_string(), header);
        assert!(TraceContext::parse("00-zz-00f067aa0ba902b7-01").is_none());
        assert!(
            TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
    }

    #[test]
    fn a_caused_message_keeps_the_correlation_and_trace_and_names_its_cause() {
        let edge = Context::new(CorrelationId::parse("req-1").unwrap(), None);
        let first = edge.envelope("a.b.v1");
        let next = Context::caused_by(&first, "c").envelope("c.d.v1");
        assert_eq!(next.correlation_id.as_str(), "req-1");
        assert_eq!(next.causation_id, Some(first.message_id));
        let (t1, t2) = (
            TraceContext::parse(first.traceparent.as_deref().unwrap()).unwrap(),
            TraceContext::parse(next.traceparent.as_deref().unwrap()).unwrap(),
        );
        assert_eq!(t1.trace_id, t2.trace_id);
        assert_ne!(t1.span_id, t2.span_id);
    }

    #[test]
    fn a_correlation_id_with_control_characters_is_refused() {
        assert!(CorrelationId::parse("ok-123").is_some());
        assert!(CorrelationId::parse("bad\nid").is_none());
        assert!(CorrelationId::parse("").is_none());
        assert!(CorrelationId::parse(&"x".repeat(129)).is_none());
    }
}
