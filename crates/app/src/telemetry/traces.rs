//! Traces: every hop Banyan already names, exported over OTLP/HTTP when `[traces]` is on.
//!
//! Banyan carries its own W3C trace context on every message (`banyan_bus::Context`): the
//! edge starts a span for each HTTP request (the child of the client's `traceparent`), and
//! each handling of a request or an event is a span whose parent is the span that sent the
//! message, in this process or another, over HTTP, gRPC or NATS. Those spans are `tracing`
//! spans carrying `trace_id`, `span_id` and `parent_span_id` fields, which is also how each JSON
//! log line names the span it was written in.
//!
//! This layer turns each such span, when it closes, into an OpenTelemetry span with exactly
//! those ids and hands it to the SDK's batch processor and OTLP exporter. `tracing-opentelemetry`
//! would make spans of its own with ids the SDK picks, so the ids on the wire (the envelopes'
//! `traceparent`) and the exported ones would differ; here they are the same by construction.
//!
//! Sampling is decided from the trace id alone (`sample_ratio` of the id space), so every
//! process keeps or drops the same traces without telling each other.

use std::{
    borrow::Cow,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
    },
};
use serde::Deserialize;
use tracing::{Subscriber, field::Field, span};
use tracing_subscriber::{Layer, layer::Context as LayerContext, registry::LookupSpan};

/// `[traces]`: OTLP/HTTP export of every hop's span.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces endpoint.
    pub endpoint: String,
    /// The share of traces kept, 0 to 1.
    pub sample_ratio: f64,
    /// How long finished spans wait to be sent in one batch, in milliseconds.
    pub export_interval_ms: u64,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4318/v1/traces".to_owned(),
            sample_ratio: 1.0,
            export_interval_ms: 2_000,
        }
    }
}

impl TracesConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(("traces.sample_ratio", "must be between 0 and 1".to_owned()));
        }
        if self.export_interval_ms == 0 {
            return Err((
                "traces.export_interval_ms",
                "must be greater than 0".to_owned(),
            ));
        }
        match reqwest::Url::parse(&self.endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
            _ => Err((
                "traces.endpoint",
                format!("`{}` is not an http(s) URL", self.endpoint),
            )),
        }
    }
}

/// The process's processor, kept to flush it when the process stops.
static PROCESSOR: OnceLock<Arc<BatchSpanProcessor>> = OnceLock::new();

/// The layer exporting Banyan's spans, or `None` when traces are off (or a layer was made
/// already: the subscriber is the process's one global).
pub(crate) fn layer(config: &TracesConfig, process: &str) -> anyhow::Result<Option<Exporting>> {
    if !config.enabled || PROCESSOR.get().is_some() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&config.endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()?;
    let mut processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
                .build(),
        )
        .build();
    processor.set_resource(
        &Resource::builder_empty()
            .with_service_name(format!("banyan-{process}"))
            .with_attribute(KeyValue::new("banyan.process", process.to_owned()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let processor = Arc::new(processor);
    let _ = PROCESSOR.set(processor.clone());
    Ok(Some(Exporting {
        processor,
        keep_below: (config.sample_ratio * u64::MAX as f64) as u64,
        all: config.sample_ratio >= 1.0,
    }))
}

/// Sends what is still waiting; called when the process stops.
pub fn flush() {
    if let Some(processor) = PROCESSOR.get()
        && let Err(error) = processor.force_flush()
    {
        tracing::warn!(%error, "Could not send the last spans.");
    }
}

pub(crate) struct Exporting {
    processor: Arc<BatchSpanProcessor>,
    /// A trace is kept when the low 64 bits of its id are below this.
    keep_below: u64,
    all: bool,
}

/// A span of Banyan's being recorded, until it closes.
struct Open {
    name: &'static str,
    trace_id: TraceId,
    span_id: SpanId,
    parent: SpanId,
    start: SystemTime,
    attributes: Vec<KeyValue>,
}

/// The fields of a span: its ids, and the rest as attributes.
#[derive(Default)]
struct Fields {
    trace_id: Option<String>,
    span_id: Option<String>,
    parent_span_id: Option<String>,
    attributes: Vec<KeyValue>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.keep(field, format!("{value:?}"));
    }
}

impl Fields {
    fn keep(&mut self, field: &Field, value: String) {
        match field.name() {
            "trace_id" => self.trace_id = Some(value),
            "span_id" => self.span_id = Some(value),
            "parent_span_id" => self.parent_span_id = Some(value),
            name => self
                .attributes
                .push(KeyValue::new(format!("banyan.{name}"), value)),
        }
    }
}

impl Exporting {
    fn sampled(&self, trace_id: TraceId) -> bool {
        let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().unwrap_or_default());
        self.all || low < self.keep_below
    }
}

impl<S> Layer<S> for Exporting
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let (Some(trace), Some(span_id)) = (&fields.trace_id, &fields.span_id) else {
            return;
        };
        let (Ok(trace_id), Ok(span_id)) = (TraceId::from_hex(trace), SpanId::from_hex(span_id))
        else {
            return;
        };
        if !self.sampled(trace_id) {
            return;
        }
        let parent = (fields.parent_span_id.as_deref())
            .and_then(|hex| SpanId::from_hex(hex).ok())
            .unwrap_or(SpanId::INVALID);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Open {
                name: attrs.metadata().name(),
                trace_id,
                span_id,
                parent,
                start: SystemTime::now(),
                attributes: fields.attributes,
            });
        }
    }

    fn on_close(&self, id: span::Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        self.processor.on_end(finished(open));
    }
}

/// The OpenTelemetry span of a closed one: named by what it did (the subject, or the HTTP
/// method), a server span for a request, a consumer span for an event.
fn finished(open: Open) -> SpanData {
    let attribute = |key: &str| {
        (open.attributes.iter())
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    let (name, kind): (Cow<'static, str>, SpanKind) = match open.name {
        "http" => (
            format!(
                "HTTP {}",
                attribute("banyan.method").unwrap_or_else(|| "request".to_owned())
            )
            .into(),
            SpanKind::Server,
        ),
        "request" => (
            format!(
                "request {}",
                attribute("banyan.subject").unwrap_or_default()
            )
            .into(),
            SpanKind::Server,
        ),
        "event" => (
            format!("event {}", attribute("banyan.subject").unwrap_or_default()).into(),
            SpanKind::Consumer,
        ),
        other => (other.into(), SpanKind::Internal),
    };
    SpanData {
        span_context: SpanContext::new(
            open.trace_id,
            open.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: open.parent,
        parent_span_is_remote: false,
        span_kind: kind,
        name,
        start_time: open.start,
        end_time: SystemTime::now(),
        attributes: open.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("banyan").build(),
    }
}
