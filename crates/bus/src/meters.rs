//! What the bus counts and times, through the `metrics` facade. The app installs the
//! process's recorder (Prometheus's exporter); without one, every meter is a no-op.
//!
//! Every request is measured on the caller's side, labelled with its edge — `caller`, `callee`
//! (the module), `subject` — and its **placement**: `in_process`, or the transport that carried
//! it (`http`, `grpc`, `nats`). So one scrape shows what each edge costs where it runs now, and
//! what a split changed. A process that answers requests from other processes also counts them
//! on its side (`banyan_bus_requests_handled_total`), so a callee shows the deadlines it ran
//! out of. Events are counted where they are handled, and where they are forwarded.
//!
//! Label values all come from the code (module names, subjects, kinds), never from messages,
//! so every label set is bounded.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use banyan_message::module_of;
use metrics::{Counter, Histogram};

use crate::{
    BusError,
    lock::{read, write},
};

/// The placement of a call answered in this process.
pub const IN_PROCESS: &str = "in_process";

/// Requests, by caller, callee, subject and placement.
pub const REQUESTS: &str = "banyan_bus_requests_total";
/// How long requests took, caller's side, retries included.
pub const REQUEST_SECONDS: &str = "banyan_bus_request_duration_seconds";
/// Requests from other processes answered here, by module, subject and outcome.
pub const HANDLED: &str = "banyan_bus_requests_handled_total";
/// Event deliveries handled here, by subscribing module, subject and outcome.
pub const EVENTS_HANDLED: &str = "banyan_bus_events_handled_total";
/// How long event handlers took.
pub const EVENT_SECONDS: &str = "banyan_bus_event_handling_duration_seconds";
/// Events handed to a transport for the subscribers in other processes.
pub const EVENTS_FORWARDED: &str = "banyan_bus_events_forwarded_total";

/// Says what every meter of the bus measures, for the exporter's `# HELP` lines.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "Bus requests sent, by caller module, callee module, subject, placement and outcome."
    );
    metrics::describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Bus request latency on the caller's side, retries included."
    );
    metrics::describe_counter!(
        HANDLED,
        "Bus requests from other processes answered here, by module, subject, transport and outcome."
    );
    metrics::describe_counter!(
        EVENTS_HANDLED,
        "Event deliveries handled, by publishing and subscribing module, subject, placement (how the event arrived) and outcome (ok, retried, dead_lettered)."
    );
    metrics::describe_histogram!(
        EVENT_SECONDS,
        metrics::Unit::Seconds,
        "Event handler latency, by subscribing module and subject."
    );
    metrics::describe_counter!(
        EVENTS_FORWARDED,
        "Events handed to a transport for subscribers in other processes, by subject, placement and outcome."
    );
}

/// The outcome label of a call: `ok`, or the error's kind.
pub(crate) fn outcome<T>(result: &Result<T, BusError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error.kind(),
    }
}

/// The meters of one edge at one placement, registered once: a call only increments and
/// records, it never builds a key.
struct EdgeMeters {
    ok: Counter,
    seconds: Histogram,
    labels: [(&'static str, &'static str); 4],
}

/// Caller, subject and placement.
type EdgeKey = (&'static str, &'static str, &'static str);

/// The request meters of a bus, by caller, subject and placement.
#[derive(Default)]
pub(crate) struct RequestMeters {
    edges: RwLock<HashMap<EdgeKey, Arc<EdgeMeters>>>,
}

impl std::fmt::Debug for RequestMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMeters").finish_non_exhaustive()
    }
}

impl RequestMeters {
    /// Counts and times one request of `caller` to `subject` at `placement`.
    pub(crate) fn record<T>(
        &self,
        caller: &'static str,
        subject: &'static str,
        placement: &'static str,
        result: &Result<T, BusError>,
        elapsed: Duration,
    ) {
        let meters = self.of(caller, subject, placement);
        meters.seconds.record(elapsed.as_secs_f64());
        match result {
            Ok(_) => meters.ok.increment(1),
            // Errors are the rare path: their counters are looked up by key.
            Err(error) => {
                let [caller, callee, subject, placement] = meters.labels;
                metrics::counter!(REQUESTS, caller.0 => caller.1, callee.0 => callee.1,
                    subject.0 => subject.1, placement.0 => placement.1, "outcome" => error.kind())
                .increment(1);
            }
        }
    }

    fn of(
        &self,
        caller: &'static str,
        subject: &'static str,
        placement: &'static str,
    ) -> Arc<EdgeMeters> {
        let key = (caller, subject, placement);
        if let Some(meters) = read(&self.edges).get(&key) {
            return meters.clone();
        }
        write(&self.edges)
            .entry(key)
            .or_insert_with(|| {
                let labels = [
                    ("caller", caller),
                    ("callee", module_of(subject)),
                    ("subject", subject),
                    ("placement", placement),
                ];
                Arc::new(EdgeMeters {
                    ok: metrics::counter!(REQUESTS, labels_with(&labels, "ok")),
                    seconds: metrics::histogram!(REQUEST_SECONDS, labels_of(&labels)),
                    labels,
                })
            })
            .clone()
    }
}

fn labels_of(labels: &[(&'static str, &'static str)]) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|(k, v)| metrics::Label::from_static_parts(k, v))
        .collect()
}

fn labels_with(
    labels: &[(&'static str, &'static str)],
    outcome: &'static str,
) -> Vec<metrics::Label> {
    let mut all = labels_of(labels);
    all.push(metrics::Label::from_static_parts("outcome", outcome));
    all
}

/// Counts a request from another process, arrived `via` a transport, answered here.
pub(crate) fn handled<T>(subject: &'static str, via: &'static str, result: &Result<T, BusError>) {
    metrics::counter!(HANDLED, "module" => module_of(subject), "subject" => subject,
        "placement" => via, "outcome" => outcome(result))
    .increment(1);
}

/// Counts one attempt of an event handler of `module`, and times it.
pub(crate) fn event_handled(
    module: &'static str,
    subject: &str,
    via: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    let publisher = module_of(subject).to_owned();
    let subject = subject.to_owned();
    metrics::histogram!(EVENT_SECONDS, "module" => module, "subject" => subject.clone(),
        "placement" => via)
    .record(elapsed.as_secs_f64());
    metrics::counter!(EVENTS_HANDLED, "publisher" => publisher, "module" => module,
        "subject" => subject, "placement" => via, "outcome" => outcome)
    .increment(1);
}

/// Counts an event handed to a transport (or refused by it).
pub(crate) fn event_forwarded(subject: &str, placement: &'static str, ok: bool) {
    metrics::counter!(EVENTS_FORWARDED, "subject" => subject.to_owned(),
        "placement" => placement, "outcome" => if ok { "ok" } else { "failed" })
    .increment(1);
}
