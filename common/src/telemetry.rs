//! Logs and traces, set up once per process. Logs are JSON or pretty
//! (`LOG_FORMAT`); spans are exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Trace context crosses the queue
//! inside each job (W3C `traceparent`), so one trace covers the request, the
//! queue wait, the worker's attempts and the call to Sent.

use std::collections::BTreeMap;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// `LOG_LEVEL` is either a plain level, applied to this project's crates
/// (dependencies stay at `warn`), or a full filter directive.
pub fn filter(level: &str) -> EnvFilter {
    let directive = if level.contains('=') || level.contains(',') {
        level.to_owned()
    } else {
        let level = level.to_ascii_lowercase();
        format!("warn,gateway={level},worker={level},common={level},sent_sim={level}")
    };
    EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Keeps the tracer provider alive; dropping it flushes pending spans.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging and, when an OTLP endpoint is configured, trace export
/// under the service name `sent-<binary>` (`sent-gateway`, `sent-worker`).
pub fn init(config: &LogConfig) -> Telemetry {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "gateway".into());
    let service: &'static str = Box::leak(format!("sent-{binary}").into_boxed_str());
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![Box::new(
        TraceContextPropagator::new(),
    )]));
    let provider =
        config
            .otlp_endpoint
            .as_ref()
            .and_then(|endpoint| match otlp_provider(endpoint, service) {
                Ok(provider) => Some(provider),
                Err(error) => {
                    eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT: tracing export disabled: {error}");
                    None
                }
            });
    install(config, provider.clone(), service);
    Telemetry { provider }
}

fn otlp_provider(endpoint: &str, service: &'static str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_headers(Default::default())
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The level of this project's spans (requests, sends, calls to Sent,
/// webhook events): exported, and their fields on every log line.
const SPAN_LEVEL: &str = "info";

/// Installs the subscriber: logs, plus spans to `provider` when given.
/// Also used by tests with an in-memory exporter.
pub fn install(config: &LogConfig, provider: Option<SdkTracerProvider>, service: &'static str) {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![Box::new(
        TraceContextPropagator::new(),
    )]));
    // Spans are exported at `info` whatever `LOG_LEVEL` says: production
    // logs only warnings, and a global `warn` filter would disable every span.
    let otel = provider.map(|p| {
        global::set_tracer_provider(p.clone());
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(filter(SPAN_LEVEL))
    });
    let registry = tracing_subscriber::registry().with(otel);
    // Log lines at `LOG_LEVEL`, with the fields of the spans they are in (a
    // warning in a request carries its `request_id`) even when the spans'
    // own level is below `LOG_LEVEL`.
    let logs = filter(&config.level).or(filter(SPAN_LEVEL).and(filter_fn(|meta| meta.is_span())));
    // A second initialisation (tests) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(logs),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_filter(logs))
            .try_init(),
    };
}

/// A W3C trace context as its headers (`traceparent`, `tracestate`): how a
/// message's trace travels in its jobs and its database row. Empty when no
/// trace is being exported.
pub type TraceContext = BTreeMap<String, String>;

/// The current span's trace context, to carry inside a job or a row.
pub fn current_context() -> TraceContext {
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut carrier));
    carrier.into_iter().collect()
}

/// Makes `span` a child of the context carried in a job (or a webhook).
pub fn set_parent(span: &tracing::Span, carrier: &TraceContext) {
    if carrier.is_empty() {
        return;
    }
    let carrier: std::collections::HashMap<String, String> = carrier.clone().into_iter().collect();
    let parent: Context =
        global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    let _ = span.set_parent(parent);
}
