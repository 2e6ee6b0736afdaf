//! Logs, and OpenTelemetry traces when `[telemetry] otlp_endpoint` is set.
//!
//! The OpenTelemetry layer must be in the subscriber from the start (a
//! reloadable slot hides it from `set_parent`, which a request's
//! `traceparent` needs), so `serve`'s configuration is read for its
//! `[telemetry]` before the subscriber is made. Spans go out over
//! OTLP/HTTP (JSON) from the SDK's batch exporter thread; the gateway's
//! `/metrics` stays Prometheus.

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where traces go: an OTLP/HTTP collector's base URL, and the service
/// name.
pub struct Export {
    pub endpoint: String,
    pub service_name: String,
}

/// The tracer provider, while traces are exported.
pub struct Telemetry(Option<SdkTracerProvider>);

/// Installs the global subscriber: logs to `writer` at `default_level`
/// (or `RUST_LOG`), and the OpenTelemetry layer when `export` says where.
pub fn init(
    default_level: &str,
    writer: crate::redact::Secrets,
    export: Option<Export>,
) -> Result<Telemetry> {
    let provider = export.as_ref().map(provider).transpose()?;
    // Each layer filters for itself: the log at `default_level`, traces
    // with shardgate's debug spans too (one per fragment written or read),
    // which cost nothing when no layer wants them. The spans of background
    // tasks (target `shardgate::task`: repair, scrub, the journal...) live
    // as long as the process: they name the task in the log, but a trace
    // rooted in one would never end, so traces leave them out and what a
    // task does is traced in traces of its own.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("shardgate"))
            .with_filter(
                Targets::new()
                    .with_default(Level::INFO)
                    .with_target("shardgate", Level::DEBUG)
                    .with_target("shardgate::task", LevelFilter::OFF),
            )
    });
    tracing_subscriber::registry()
        .with(otel)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(
                    EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| EnvFilter::new(default_level)),
                ),
        )
        .init();
    if let Some(e) = &export {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing::info!(endpoint = %e.endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry(provider))
}

fn provider(export: &Export) -> Result<SdkTracerProvider> {
    let url = format!("{}/v1/traces", export.endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(&url)
        .build()
        .with_context(|| format!("telemetry.otlp_endpoint {}", export.endpoint))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(export.service_name.clone())
                .build(),
        )
        .build())
}

impl Telemetry {
    /// Sends the spans still waiting (at a stop).
    pub fn flush(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "the last spans were not exported");
        }
    }
}
