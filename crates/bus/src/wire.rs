//! The wire format every transport shares: the header names, the envelope in headers, and a
//! [`BusError`] as a reply body. HTTP and NATS both use these, and so will any later transport,
//! so a message means the same whichever way it travelled.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{BusError, CorrelationId, Envelope, TraceContext};

/// The names of the headers that carry a message's envelope and outcome. Lower case: HTTP
/// compares header names without case, NATS with it, and both sides use these constants.
pub mod headers {
    /// The envelope's message id (a UUID).
    pub const MESSAGE_ID: &str = "banyan-message-id";
    /// The correlation id, as accepted by `CorrelationId::parse`.
    pub const CORRELATION_ID: &str = "banyan-correlation-id";
    /// The message that caused this one (a UUID), when there is one.
    pub const CAUSATION_ID: &str = "banyan-causation-id";
    /// When the message was made, in milliseconds since the Unix epoch.
    pub const TIMESTAMP: &str = "banyan-timestamp";
    /// The W3C trace context of the sender, when there is one.
    pub const TRACEPARENT: &str = "traceparent";
    /// The message's subject, such as `payments.get_payment.v1`, where the transport's own
    /// address does not say it (NATS subjects carry a prefix).
    pub const SUBJECT: &str = "banyan-subject";
    /// On a request: how long the caller waits, in milliseconds.
    pub const DEADLINE_MS: &str = "banyan-deadline-ms";
    /// On an event: the aggregate whose events are handled in order (a UUID).
    pub const AGGREGATE_ID: &str = "banyan-aggregate-id";
    /// On a reply: `ok`, `rejected` or `error`.
    pub const OUTCOME: &str = "banyan-outcome";
}

/// A transport's header map, as the wire format reads and writes it.
pub(crate) trait Headers {
    /// The value of `name` as text; `Err` with the reason when it is there but not text.
    fn text(&self, name: &str) -> Result<Option<&str>, String>;
    /// Sets `name`; `false` if `value` cannot be a header value (a line break).
    fn put(&mut self, name: &'static str, value: &str) -> bool;
}

impl Headers for axum::http::HeaderMap {
    fn text(&self, name: &str) -> Result<Option<&str>, String> {
        self.get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| format!("header `{name}` is not visible ASCII"))
            })
            .transpose()
    }

    fn put(&mut self, name: &'static str, value: &str) -> bool {
        match axum::http::HeaderValue::from_str(value) {
            Ok(value) => {
                self.insert(name, value);
                true
            }
            Err(_) => false,
        }
    }
}

impl Headers for async_nats::HeaderMap {
    fn text(&self, name: &str) -> Result<Option<&str>, String> {
        Ok(self.get(name).map(async_nats::HeaderValue::as_str))
    }

    fn put(&mut self, name: &'static str, value: &str) -> bool {
        if value.contains(['\r', '\n']) {
            return false;
        }
        self.insert(name, value);
        true
    }
}

/// Writes `envelope` (not its subject, nor a request's deadline or an event's aggregate) into
/// `to`. Fails with [`BusError::Codec`] if a field cannot be a header value (a line break in a
/// trace context is an attempt to inject headers, not a trace).
pub(crate) fn write_envelope(envelope: &Envelope, to: &mut impl Headers) -> Result<(), BusError> {
    let mut put = |name: &'static str, value: &str| {
        if to.put(name, value) {
            Ok(())
        } else {
            Err(BusError::Codec {
                subject: envelope.subject.clone(),
                reason: format!("header `{name}` cannot hold {value:?}"),
            })
        }
    };
    put(headers::MESSAGE_ID, &envelope.message_id.to_string())?;
    put(headers::CORRELATION_ID, envelope.correlation_id.as_str())?;
    if let Some(causation) = envelope.causation_id {
        put(headers::CAUSATION_ID, &causation.to_string())?;
    }
    put(headers::TIMESTAMP, &envelope.timestamp_ms.to_string())?;
    if let Some(traceparent) = &envelope.traceparent {
        put(headers::TRACEPARENT, traceparent)?;
    }
    Ok(())
}

/// Rebuilds the envelope of a message on `subject` from `from`; the error names the header
/// that is missing or malformed. A malformed trace context is ignored (W3C: restart the
/// trace), not refused.
pub(crate) fn read_envelope(from: &impl Headers, subject: &str) -> Result<Envelope, String> {
    let required = |name: &str| {
        from.text(name)?
            .ok_or_else(|| format!("header `{name}` is missing"))
    };
    let uuid = |name: &str, raw: &str| {
        Uuid::parse_str(raw).map_err(|_| format!("header `{name}` is not a UUID: {raw:?}"))
    };
    let message_id = uuid(headers::MESSAGE_ID, required(headers::MESSAGE_ID)?)?;
    let correlation_id =
        CorrelationId::parse(required(headers::CORRELATION_ID)?).ok_or_else(|| {
            format!(
                "header `{}` is not short printable ASCII",
                headers::CORRELATION_ID
            )
        })?;
    let causation_id = from
        .text(headers::CAUSATION_ID)?
        .map(|raw| uuid(headers::CAUSATION_ID, raw))
        .transpose()?;
    let raw = required(headers::TIMESTAMP)?;
    let timestamp_ms = raw.parse::<i64>().map_err(|_| {
        format!(
            "header `{}` is not a number of milliseconds: {raw:?}",
            headers::TIMESTAMP
        )
    })?;
    Ok(Envelope {
        message_id,
        subject: subject.to_owned(),
        correlation_id,
        causation_id,
        timestamp_ms,
        traceparent: trace_context(from),
    })
}

/// An envelope for a message that could not be decoded, from whatever the headers offer, so
/// that its dead letter can be found by message and correlation id when those were readable.
pub(crate) fn best_effort_envelope(from: &impl Headers, subject: &str) -> Envelope {
    let text = |name| from.text(name).ok().flatten();
    let uuid = |name| text(name).and_then(|raw| Uuid::parse_str(raw).ok());
    Envelope {
        message_id: uuid(headers::MESSAGE_ID).unwrap_or_else(Uuid::now_v7),
        subject: subject.to_owned(),
        correlation_id: text(headers::CORRELATION_ID)
            .and_then(CorrelationId::parse)
            .unwrap_or_default(),
        causation_id: uuid(headers::CAUSATION_ID),
        timestamp_ms: text(headers::TIMESTAMP)
            .and_then(|raw| raw.parse().ok())
            .unwrap_or_else(banyan_db::now_millis),
        traceparent: trace_context(from),
    }
}

fn trace_context(from: &impl Headers) -> Option<String> {
    from.text(headers::TRACEPARENT)
        .ok()
        .flatten()
        .filter(|raw| TraceContext::parse(raw).is_some())
        .map(str::to_owned)
}

/// A [`BusError`] other than a rejection, as a reply body: `{"kind", "reason", "after_ms"?}`,
/// `kind` being [`BusError::kind`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) after_ms: Option<u64>,
}

impl WireError {
    pub(crate) fn from_error(error: &BusError) -> Self {
        let (reason, after_ms) = match error {
            BusError::Timeout { after, .. } => (
                error.to_string(),
                Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
            ),
            BusError::CircuitOpen { retry_after, .. } => (
                error.to_string(),
                Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX)),
            ),
            BusError::Unavailable { reason, .. }
            | BusError::Overloaded { reason, .. }
            | BusError::Codec { reason, .. } => (reason.clone(), None),
            BusError::NoHandler { .. } | BusError::Rejected(_) => (error.to_string(), None),
        };
        Self {
            kind: error.kind().to_owned(),
            reason,
            after_ms,
        }
    }

    /// The error this body names for a call to `subject` that waited `deadline`. A kind this
    /// build does not know reads as a codec error that names it.
    pub(crate) fn into_error(self, subject: &str, deadline: Duration) -> BusError {
        let subject = subject.to_owned();
        match self.kind.as_str() {
            "no_handler" => BusError::NoHandler { subject },
            "timeout" => BusError::Timeout {
                subject,
                after: self.after_ms.map_or(deadline, Duration::from_millis),
            },
            "unavailable" => BusError::Unavailable {
                subject,
                reason: self.reason,
            },
            "codec" => BusError::Codec {
                subject,
                reason: self.reason,
            },
            "circuit_open" => BusError::CircuitOpen {
                subject,
                retry_after: Duration::from_millis(self.after_ms.unwrap_or(1_000)),
            },
            "overloaded" => BusError::Overloaded {
                subject,
                reason: self.reason,
            },
            other => BusError::Codec {
                subject,
                reason: format!("unknown error kind {other:?}: {}", self.reason),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Context;

    fn round_trip(map: &mut impl Headers) -> (Envelope, Envelope) {
        let sent = Context::root()
            .handling(Uuid::now_v7(), "orders")
            .envelope("orders.order_placed.v1");
        write_envelope(&sent, map).unwrap();
        let read = read_envelope(map, "orders.order_placed.v1").unwrap();
        (sent, read)
    }

    #[test]
    fn an_envelope_reads_back_the_same_from_http_and_from_nats_headers() {
        let (sent, read) = round_trip(&mut axum::http::HeaderMap::new());
        assert_eq!(sent, read);
        let (sent, read) = round_trip(&mut async_nats::HeaderMap::new());
        assert_eq!(sent, read);
    }

    #[test]
    fn a_missing_or_malformed_header_is_named() {
        let mut map = async_nats::HeaderMap::new();
        map.insert(headers::MESSAGE_ID, "not-a-uuid");
        let error = read_envelope(&map, "x.y.v1").unwrap_err();
        assert!(error.contains(headers::MESSAGE_ID), "{error}");
        let error = read_envelope(&async_nats::HeaderMap::new(), "x.y.v1").unwrap_err();
        assert!(error.contains("missing"), "{error}");
    }

    #[test]
    fn every_error_kind_survives_the_wire() {
        let errors = [
            BusError::NoHandler {
                subject: "a.b.v1".into(),
            },
            BusError::Timeout {
                subject: "a.b.v1".into(),
                after: Duration::from_millis(250),
            },
            BusError::Unavailable {
                subject: "a.b.v1".into(),
                reason: "down".into(),
            },
            BusError::Codec {
                subject: "a.b.v1".into(),
                reason: "bad".into(),
            },
            BusError::CircuitOpen {
                subject: "a.b.v1".into(),
                retry_after: Duration::from_millis(1_500),
            },
            BusError::Overloaded {
                subject: "a.b.v1".into(),
                reason: "full".into(),
            },
        ];
        for error in errors {
            let json = serde_json::to_vec(&WireError::from_error(&error)).unwrap();
            let back: WireError = serde_json::from_slice(&json).unwrap();
            assert_eq!(back.into_error("a.b.v1", Duration::from_secs(9)), error);
        }
    }
}
