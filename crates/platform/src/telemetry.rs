//! Logs (JSON lines in the shape `level, service, event, order_id, trace_id, timestamp`) and traces
//! (OpenTelemetry, exported over OTLP/gRPC when an endpoint is configured).
//!
//! Every span gets an OpenTelemetry trace id even when nothing is exported, so that log lines of
//! one request can be correlated across services by `trace_id`.

use std::{cell::Cell, collections::HashMap, io::Write, time::Duration};

use opentelemetry::{
    Context,
    propagation::{Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field, span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::MakeWriter,
    layer::{Context as LayerContext, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::settings::{LogFormat, TelemetrySettings};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid configuration: telemetry.log_level: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("invalid configuration: telemetry.otlp_endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("logging is already initialised")]
    AlreadyInitialised,
}

thread_local! {
    /// The service the current thread works for, in a process that runs several.
    static THREAD_SERVICE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Attributes the log lines written on the current thread to `service` instead of the process's
/// default: for a process that runs several services, each on runtime threads of its own.
pub fn set_thread_service(service: &'static str) {
    THREAD_SERVICE.with(|current| current.set(Some(service)));
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] flushes what is buffered.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the global subscriber: logs to stdout, spans to OpenTelemetry.
    /// Must be called inside the Tokio runtime (the OTLP exporter spawns onto it).
    pub fn init(default_service: &str, settings: &TelemetrySettings) -> Result<Telemetry, TelemetryError> {
        Self::init_with_writer(default_service, settings, std::io::stdout)
    }

    pub fn init_with_writer<W>(
        default_service: &str,
        settings: &TelemetrySettings,
        writer: W,
    ) -> Result<Telemetry, TelemetryError>
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let service = settings.service_name.clone().unwrap_or_else(|| default_service.to_owned());
        let filter = EnvFilter::builder().parse(&settings.log_level)?;
        let provider = tracer_provider(&service, settings)?;
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("orderflow"));
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

        let registry = tracing_subscriber::registry().with(filter).with(otel);
        let installed = match settings.log_format {
            LogFormat::Json => registry.with(JsonLogLayer::new(service, writer)).try_init(),
            LogFormat::Text => registry
                .with(tracing_subscriber::fmt::layer().with_writer(writer).with_target(false))
                .try_init(),
        };
        installed.map_err(|_| TelemetryError::AlreadyInitialised)?;
        Ok(Telemetry { provider })
    }

    /// Exports the spans still buffered, waiting at most `timeout`.
    pub fn shutdown(self, timeout: Duration) {
        if let Err(error) = self.provider.shutdown_with_timeout(timeout) {
            eprintln!("trace export did not finish: {error}");
        }
    }
}

fn tracer_provider(service: &str, settings: &TelemetrySettings) -> Result<SdkTracerProvider, TelemetryError> {
    let mut resource = Resource::builder().with_service_name(service.to_owned());
    if let Some(environment) = settings.environment.as_deref().filter(|e| !e.is_empty()) {
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            "deployment.environment.name",
            environment.to_owned(),
        ));
    }
    let builder = SdkTracerProvider::builder().with_resource(resource.build());
    let builder = match settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let exporter =
                opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
            builder.with_batch_exporter(exporter)
        }
        None => builder,
    };
    Ok(builder.build())
}

/// The W3C trace context of the current span, as headers (`traceparent`, `tracestate`).
pub fn current_trace_headers() -> HashMap<String, String> {
    let mut headers = HashMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
    headers
}

/// Makes `span` a child of the trace described by `headers` (W3C `traceparent`), if any.
pub fn set_parent_from_headers(span: &tracing::Span, header: impl Fn(&str) -> Option<String>) {
    let carrier: HashMap<String, String> =
        ["traceparent", "tracestate"].into_iter().filter_map(|k| Some((k.to_owned(), header(k)?))).collect();
    if carrier.is_empty() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The trace id of the current span, as 32 hex digits, when there is one.
pub fn current_trace_id() -> Option<String> {
    trace_id_of(&tracing::Span::current().context())
}

fn trace_id_of(context: &Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

struct HeaderInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Writes each event as one JSON object per line: `timestamp`, `level`, `service`, `event`,
/// `trace_id`, then the fields of the enclosing spans and of the event itself.
struct JsonLogLayer<W> {
    service: String,
    writer: W,
}

/// Fields recorded on a span, kept in its extensions for the events inside it.
struct SpanFields(Map<String, Value>);

impl<W> JsonLogLayer<W> {
    fn new(service: String, writer: W) -> Self {
        JsonLogLayer { service, writer }
    }
}

impl<S, W> Layer<S> for JsonLogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into(),
        );
        line.insert("level".into(), event.metadata().level().as_str().to_ascii_lowercase().into());
        let service = THREAD_SERVICE.with(Cell::get).map_or_else(|| self.service.clone(), str::to_owned);
        line.insert("service".into(), service.into());
        if let Some(scope) = ctx.event_scope(event) {
            let mut trace_id = None;
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                trace_id = Some(span.id());
            }
            // The innermost span's OpenTelemetry context carries the trace id.
            if let Some(id) = trace_id {
                let trace = tracing::dispatcher::get_default(|dispatch| {
                    tracing_opentelemetry::get_otel_context(&id, dispatch).and_then(|cx| trace_id_of(&cx))
                });
                if let Some(trace) = trace {
                    line.insert("trace_id".into(), trace.into());
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        if !line.contains_key("event")
            && let Some(message) = line.get("message").cloned()
        {
            line.insert("event".into(), message);
        }
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let _ = self.writer.make_writer().write_all(&bytes);
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        // `otel.*` fields steer the OpenTelemetry layer (span kind, status); they are not log data.
        if !field.name().starts_with("otel.") {
            self.0.insert(field.name().into(), value);
        }
    }
}

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain, so that "connection refused" is not lost behind "pool timed out".
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.put(field, text.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}
