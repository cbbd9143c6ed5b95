//! Logs through `tracing`: human-readable or JSON lines on stderr, the level from `RUST_LOG` when set,
//! else from the configuration. Requests are logged one line each at debug; session IDs appear only
//! shortened ([`crate::engine::short_id`]).
//!
//! With the `otlp` cargo feature and `[log] otlp_endpoint`, the same spans (the `request` span of
//! each request with its fields, and below it, at `debug`, the store and adapter calls) are also
//! exported to an OpenTelemetry collector over OTLP/HTTP, in batches from a thread of their own so
//! that no request waits for the collector; a collector that is down loses spans, never requests.

use crate::config::{LogFormat, LogSettings};
use std::io::IsTerminal;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// What must live as long as the process: the exporter, flushed when dropped at exit.
#[derive(Default)]
pub struct LogGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            // The spans still buffered go out now (bounded by the exporter's timeout).
            let _ = provider.shutdown();
        }
    }
}

/// Install the global subscriber. Calling it twice is harmless (the second call does nothing).
/// `broker_id` names this broker in exported spans (`service.instance.id`).
pub fn init(settings: &LogSettings, broker_id: &str) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let ansi = std::io::stderr().is_terminal();
    // Colour codes only for a person at a terminal, never into a log file or a pipe.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match settings.format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otlp")]
    {
        let mut guard = LogGuard::default();
        let otel = settings.otlp_endpoint.as_deref().and_then(|endpoint| {
            match otlp::layer(endpoint, &settings.otlp_service_name, broker_id) {
                Ok((layer, provider)) => {
                    guard.provider = Some(provider);
                    Some(layer)
                }
                Err(e) => {
                    eprintln!(
                        "broker: the OTLP exporter could not start ({e}); spans are not exported"
                    );
                    None
                }
            }
        });
        let _ = registry.with(otel).try_init();
        guard
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = broker_id;
        let _ = registry.try_init();
        LogGuard::default()
    }
}

use tracing_subscriber::Layer as _;

/// Make `span` (a request's) a child of the client's span in `trace`, for the exported trace.
#[cfg(feature = "otlp")]
pub fn continue_trace(span: &tracing::Span, trace: &crate::tracecontext::TraceParent) {
    otlp::continue_trace(span, trace)
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry::KeyValue;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use std::time::Duration;

    pub fn continue_trace(span: &tracing::Span, trace: &crate::tracecontext::TraceParent) {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let (Ok(trace_id), Ok(span_id), Ok(flags)) = (
            TraceId::from_hex(&trace.trace_id),
            SpanId::from_hex(&trace.parent_id),
            u8::from_str_radix(&trace.flags, 16),
        ) else {
            return;
        };
        let remote = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    /// The OTLP/HTTP exporter to `endpoint` (`…/v1/traces`) and the layer feeding it.
    pub fn layer<S>(
        endpoint: &str,
        service: &str,
        broker_id: &str,
    ) -> Result<
        (
            Box<dyn tracing_subscriber::Layer<S> + Send + Sync>,
            SdkTracerProvider,
        ),
        String,
    >
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let resource = Resource::builder()
            .with_service_name(service.to_string())
            .with_attribute(KeyValue::new("service.instance.id", broker_id.to_string()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("soap-broker");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer);
        Ok((Box::new(layer), provider))
    }
}
