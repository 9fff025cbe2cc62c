//! Logs and traces: `tracing` to stderr (text or JSON), OpenTelemetry spans exported over
//! OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace context carried in gRPC
//! metadata and in event metadata.
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes exported spans when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process-wide subscriber. Log level from `RUST_LOG`, else `default_level`.
/// Call from inside the Tokio runtime.
pub fn init(service_name: &str, format: LogFormat, default_level: &str) -> TelemetryGuard {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_string()).build());
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty());
    let mut export_error = None;
    if let Some(endpoint) = &endpoint {
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => export_error = Some(format!("OTLP exporter for {endpoint}: {e}")),
        }
    }
    // Without an exporter spans still get ids, so trace context flows through the log.
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("autodebit"));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match format {
        LogFormat::Json => {
            registry.with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
    if result.is_ok() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    if let Some(e) = export_error {
        tracing::warn!("{e}");
    } else if let Some(endpoint) = endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP");
    }
    TelemetryGuard { provider }
}

thread_local! {
    /// A trace context that stands in for the current span's while [`with_traceparent`] runs.
    static STAND_IN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `traceparent` as the trace context events encoded in it carry (see
/// [`current_traceparent`]), instead of the current span's: for work done in one span on
/// behalf of many traces (a follower's batch, a worker's batch of outcomes), each event then
/// continues its own trace. An empty `traceparent` changes nothing.
pub fn with_traceparent<R>(traceparent: &str, f: impl FnOnce() -> R) -> R {
    if traceparent.is_empty() {
        return f();
    }
    let before = STAND_IN.with(|s| s.replace(Some(traceparent.to_string())));
    let result = f();
    STAND_IN.with(|s| *s.borrow_mut() = before);
    result
}

/// The W3C `traceparent` of the current span (or the one [`with_traceparent`] stands in), if
/// it has a trace.
pub fn current_traceparent() -> Option<String> {
    if let Some(tp) = STAND_IN.with(|s| s.borrow().clone()) {
        return Some(tp);
    }
    let cx = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace named by a `traceparent` value.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.to_string());
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trace_context_flows_from_a_caller_into_event_metadata() {
        let _guard = init("test", LogFormat::Text, "info");
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = tracing::info_span!("grpc");
        set_parent_from_traceparent(&span, incoming);
        let _entered = span.enter();
        let event =
            crate::codec::encode(autodebit_proto::events::v1::Event { kind: None }, &crate::codec::Cause::default(), 0);
        let meta =
            <autodebit_proto::events::v1::Metadata as prost::Message>::decode(event.metadata.as_slice()).unwrap();
        let parts: Vec<&str> = meta.traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{:?}", meta.traceparent);
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace as the caller");
        assert_ne!(parts[2], "00f067aa0ba902b7", "a span of our own within it");

        // Work done for another trace carries that trace's context instead, only meanwhile.
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(with_traceparent(other, current_traceparent).as_deref(), Some(other));
        assert_eq!(current_traceparent().unwrap().split('-').nth(1), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(with_traceparent("", current_traceparent), current_traceparent());
    }
}
