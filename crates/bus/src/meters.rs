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

use std::{sync::OnceLock, time::Duration};

use banyan_message::module_of;
use metrics::{Counter, Histogram};

use crate::BusError;

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

impl EdgeMeters {
    fn new(caller: &'static str, subject: &'static str, placement: &'static str) -> Self {
        let labels = [
            ("caller", caller),
            ("callee", module_of(subject)),
            ("subject", subject),
            ("placement", placement),
        ];
        Self {
            ok: metrics::counter!(REQUESTS, labels_with(&labels, "ok")),
            seconds: metrics::histogram!(REQUEST_SECONDS, labels_of(&labels)),
            labels,
        }
    }

    fn placement(&self) -> &'static str {
        self.labels[3].1
    }

    fn record<T>(&self, result: &Result<T, BusError>, elapsed: Duration) {
        self.seconds.record(elapsed.as_secs_f64());
        match result {
            Ok(_) => self.ok.increment(1),
            // Errors are the rare path: their counters are looked up by key.
            Err(error) => {
                let [caller, callee, subject, placement] = self.labels;
                metrics::counter!(REQUESTS, caller.0 => caller.1, callee.0 => callee.1,
                    subject.0 => subject.1, placement.0 => placement.1, "outcome" => error.kind())
                .increment(1);
            }
        }
    }
}

/// The request meters of one caller's requests on one subject: kept beside the edge the
/// call goes through (`policy::Route`), so a call finds both with one lookup.
pub(crate) struct RouteMeters {
    caller: &'static str,
    subject: &'static str,
    in_process: OnceLock<EdgeMeters>,
    /// The transport the subject is wired to (one per process at a time).
    remote: OnceLock<EdgeMeters>,
}

impl std::fmt::Debug for RouteMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMeters")
            .field("caller", &self.caller)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl RouteMeters {
    pub(crate) fn new(caller: &'static str, subject: &'static str) -> Self {
        Self {
            caller,
            subject,
            in_process: OnceLock::new(),
            remote: OnceLock::new(),
        }
    }

    /// Counts and times one request at `placement`.
    pub(crate) fn record<T>(
        &self,
        placement: &'static str,
        result: &Result<T, BusError>,
        elapsed: Duration,
    ) {
        let cell = if placement == IN_PROCESS {
            &self.in_process
        } else {
            &self.remote
        };
        let meters = cell.get_or_init(|| EdgeMeters::new(self.caller, self.subject, placement));
        if meters.placement() == placement {
            meters.record(result, elapsed);
        } else {
            // The subject was wired to another transport since: registered anew, by key.
            EdgeMeters::new(self.caller, self.subject, placement).record(result, elapsed);
        }
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

/// The meters of one subscription at one placement (how its events arrive).
struct SubscriptionMeters {
    ok: Counter,
    seconds: Histogram,
    labels: [(&'static str, &'static str); 4],
}

impl SubscriptionMeters {
    fn new(module: &'static str, subject: &'static str, via: &'static str) -> Self {
        let labels = [
            ("publisher", module_of(subject)),
            ("module", module),
            ("subject", subject),
            ("placement", via),
        ];
        Self {
            ok: metrics::counter!(EVENTS_HANDLED, labels_with(&labels, "ok")),
            seconds: metrics::histogram!(EVENT_SECONDS, labels_of(&labels[1..])),
            labels,
        }
    }

    fn record(&self, outcome: &'static str, elapsed: Duration) {
        self.seconds.record(elapsed.as_secs_f64());
        if outcome == "ok" {
            self.ok.increment(1);
        } else {
            // Retries and dead letters are the rare path: looked up by key.
            metrics::counter!(EVENTS_HANDLED, labels_with(&self.labels, outcome)).increment(1);
        }
    }
}

/// The meters of one module's subscription to one subject, registered the first time an
/// event arrives in process and the first time one arrives through a transport.
pub(crate) struct EventMeters {
    module: &'static str,
    subject: &'static str,
    in_process: OnceLock<SubscriptionMeters>,
    remote: OnceLock<SubscriptionMeters>,
}

impl EventMeters {
    pub(crate) fn new(module: &'static str, subject: &'static str) -> Self {
        Self {
            module,
            subject,
            in_process: OnceLock::new(),
            remote: OnceLock::new(),
        }
    }

    /// Counts one attempt of the handler (`ok`, `retried` or `dead_lettered`), and times it.
    pub(crate) fn record(&self, via: &'static str, outcome: &'static str, elapsed: Duration) {
        let cell = if via == IN_PROCESS {
            &self.in_process
        } else {
            &self.remote
        };
        let meters = cell.get_or_init(|| SubscriptionMeters::new(self.module, self.subject, via));
        if meters.labels[3].1 == via {
            meters.record(outcome, elapsed);
        } else {
            // Events of one subscription arriving by two transports: the second by key.
            SubscriptionMeters::new(self.module, self.subject, via).record(outcome, elapsed);
        }
    }
}

/// Counts an event handed to a transport (or refused by it).
pub(crate) fn event_forwarded(subject: &str, placement: &'static str, ok: bool) {
    metrics::counter!(EVENTS_FORWARDED, "subject" => subject.to_owned(),
        "placement" => placement, "outcome" => if ok { "ok" } else { "failed" })
    .increment(1);
}
