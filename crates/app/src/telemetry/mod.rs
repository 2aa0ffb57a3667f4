//! What a process tells about itself: logs, one JSON object per line (or pretty text), each
//! inside the spans that carry the correlation id, the module and the trace and span ids; its
//! metrics ([`meters`]); and, when `[traces]` is on, those spans exported ([`traces`]).

pub(crate) mod dashboard;
pub mod meters;
pub mod traces;

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber: the logs, and the span export of `traces` for `process`;
/// `default_level` filters the logs when neither `RUST_LOG` nor `log.level` says. Safe to call
/// more than once (tests): later calls do nothing.
pub fn init(config: &LogConfig, traces: &traces::TracesConfig, process: &str, default_level: &str) {
    // Checked with the settings; a bad filter never gets here, but logs must not stop a shop.
    let filter = config
        .filter(default_level)
        .unwrap_or_else(|_| EnvFilter::new(default_level));
    let exporting = traces::layer(traces, process).unwrap_or_else(|error| {
        eprintln!("banyan: traces are not exported: {error}");
        None
    });
    let terminal = std::io::stderr().is_terminal();
    // The log filter applies to the log lines only: the export sees every span Banyan names.
    let registry = tracing_subscriber::registry().with(exporting);
    let _ = match (config.format, terminal) {
        (LogFormat::Json, _) | (LogFormat::Auto, false) => registry
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
        (LogFormat::Pretty, _) | (LogFormat::Auto, true) => registry
            .with(
                fmt::layer()
                    // Colour codes belong on a terminal, never in a file or a pipe.
                    .with_ansi(terminal)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
}
