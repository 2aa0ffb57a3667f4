//! What a process tells about itself: logs, one JSON object per line (or pretty text), each
//! inside the spans that carry the correlation id, the module and the trace and span ids; its
//! metrics ([`meters`]); and, when `[traces]` is on, those spans exported ([`traces`]).

pub(crate) mod dashboard;
pub mod meters;
pub mod traces;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber: the logs, and the span export of `traces` for `process`.
/// Safe to call more than once (tests): later calls do nothing.
pub fn init(config: &LogConfig, traces: &traces::TracesConfig, process: &str) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let exporting = traces::layer(traces, process).unwrap_or_else(|error| {
        eprintln!("banyan: traces are not exported: {error}");
        None
    });
    // The log filter applies to the log lines only: the export sees every span Banyan names.
    let registry = tracing_subscriber::registry().with(exporting);
    let _ = match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
}
