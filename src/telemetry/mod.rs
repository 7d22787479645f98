//! Logging and traces.
//!
//! - **Logging**: `tracing` events to stderr, as text for people or JSON for collectors.
//!   The level comes from `RUST_LOG` (default `info`). Audit events use the `audit`
//!   target, so a collector can route them apart (or `audit.file` sends them to a file
//!   of their own). Lines are formatted by the caller and written by a writer thread
//!   per destination, in batches ([`batch`]): no call waits on a `write(2)`. Lossless:
//!   when a destination cannot keep up (a stalled pipe), callers wait for room
//!   (backpressure) rather than drop an audit event. The log carries events only: a
//!   call's context (method, caller, grant id) is in its audit event and its span, and
//!   spans exist only when traces are exported.
//! - **Traces**: the same `tracing` spans, exported over OTLP/gRPC through
//!   `tracing-opentelemetry`, configured only by the standard `OTEL_*` variables
//!   (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//!   `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`,
//!   `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`). Without an endpoint,
//!   or with `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`, nothing is
//!   exported and no exporter runs.
//!
//! [`continue_trace`] makes an RPC's span a child of the caller's span named in a W3C
//! `traceparent` header. What goes into span fields is decided where each span is made
//! (`server::layers`, `grant::audit`, `sts`): never a key, token, signature or URL.

mod batch;

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;

use batch::Batched;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::{Field, Visit};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Output format of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The exporter could not be built from the `OTEL_*` variables.
    #[error("OTLP trace exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// An `OTEL_*` protocol this build does not speak.
    #[error("{var}={value}: only OTLP over gRPC (\"grpc\") is supported")]
    Protocol {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The audit file cannot be opened for appending.
    #[error("audit.file: cannot open {path}: {source}")]
    AuditFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised: {0}")]
    Init(#[source] tracing_subscriber::util::TryInitError),
}

/// The running telemetry; [`Telemetry::shutdown`] flushes the spans not yet exported
/// and the log lines not yet written.
#[must_use = "call shutdown() before exiting, or the last spans and log lines are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// One per writer thread; dropping one writes what it holds and stops it.
    writers: Vec<batch::Flusher>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter. Blocks; call it
    /// outside async code, while the runtime that started telemetry still exists (the
    /// exporter's connection lives on it).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
        drop(self.writers);
    }
}

/// Installs the global subscriber: the log on stderr, the audit events also in
/// `audit_file` when given, and the OTLP exporter when the environment configures
/// one. Call once, early in `main`, inside the Tokio runtime (the gRPC exporter's
/// connection runs on it).
///
/// # Errors
/// [`Error`] for an exporter the `OTEL_*` variables describe badly, an audit file
/// that cannot be opened, or a second call.
pub fn init(format: LogFormat, audit_file: Option<&Path>) -> Result<Telemetry, Error> {
    init_from(format, audit_file, |var| std::env::var(var).ok())
}

/// Installs the log on stderr only, without traces: for the command-line tools, which
/// run next to a caller rather than as the service.
///
/// # Errors
/// [`Error::Init`] on a second call.
pub fn init_log_only(format: LogFormat) -> Result<Telemetry, Error> {
    init_from(format, None, |_| None)
}

/// A writer thread for `destination`, written in batches ([`batch`]).
fn writer_thread(
    name: &str,
    destination: impl Write + Send + 'static,
) -> (Batched, batch::Flusher) {
    batch::start(name, destination, batch::MAX_BUFFERED)
}

fn init_from(
    format: LogFormat,
    audit_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Telemetry, Error> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut writers = Vec::new();
    let (stderr_writer, guard) = writer_thread("log-writer", std::io::stderr());
    writers.push(guard);
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(stderr_writer.clone())
        // Colour only for a terminal: redirected logs stay plain text.
        .with_ansi(std::io::stderr().is_terminal());
    let log = match format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr.json().flatten_event(true).boxed(),
    }
    // Events only: formatting every call's span for the log cost more than the grant
    // itself; without an exporter no layer wants spans, and none is made. Audit events
    // have a layer of their own.
    .with_filter(filter().and(filter_fn(|m| m.is_event() && m.target() != AUDIT)));
    let audit_log = AuditJson(stderr_writer)
        .with_filter(filter().and(Targets::new().with_target(AUDIT, tracing::Level::INFO)));

    let audit_file = audit_file
        .map(|path| {
            let file = File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| Error::AuditFile {
                    path: path.to_owned(),
                    source,
                })?;
            let (file_writer, guard) = writer_thread("audit-writer", file);
            writers.push(guard);
            Ok::<_, Error>(
                AuditJson(file_writer)
                    .with_filter(Targets::new().with_target(AUDIT, tracing::Level::INFO)),
            )
        })
        .transpose()?;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(&env)?;
    // Spans are exported at info and above whatever RUST_LOG says: the log's level
    // is for people reading stderr, the traces' for the tracing backend.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("storage-grants"))
            .with_filter(Targets::new().with_default(tracing::Level::INFO))
    });
    // Only the layers in use: an absent (`None`) layer would declare interest in
    // every span, and each call would then make one that nobody reads.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        vec![log.boxed(), audit_log.boxed()];
    layers.extend(audit_file.map(Layer::boxed));
    layers.extend(otel.map(Layer::boxed));
    Registry::default()
        .with(layers)
        .try_init()
        .map_err(Error::Init)?;
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC (OTEL_* environment)");
    }
    Ok(Telemetry { provider, writers })
}

/// The tracer provider the `OTEL_*` variables in `env` ask for; `None` when they ask
/// for no export.
fn tracer_provider(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SdkTracerProvider>, Error> {
    let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    if set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    for var in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        if let Some(value) = set(var).filter(|v| v != "grpc") {
            return Err(Error::Protocol { var, value });
        }
    }
    // The exporter reads the endpoint, headers and timeout from the environment
    // itself; the SDK reads the sampler and the resource attributes.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(Error::Exporter)?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = set("OTEL_SERVICE_NAME").is_some()
        || set("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("storage-grants");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// The tracing target of audit events (`grant::audit`).
const AUDIT: &str = "audit";

/// Audit events as one JSON object per line, whatever the log's format: the fields of
/// the event, with `timestamp`, `level` and `target` as the log's JSON has them. A
/// record for machines, formatted by a fixed, cheap path (the general formatter cost
/// more than signing the grant), then handed to a writer thread.
struct AuditJson(Batched);

impl<S: tracing::Subscriber> Layer<S> for AuditJson {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Vec::with_capacity(512);
        line.extend_from_slice(b"{\"timestamp\":\"");
        line.extend_from_slice(&crate::core::utc::rfc3339_micros(
            std::time::SystemTime::now(),
        ));
        line.extend_from_slice(b"\",\"level\":");
        json_string(&mut line, event.metadata().level().as_str());
        event.record(&mut JsonFields(&mut line));
        line.extend_from_slice(b",\"target\":");
        json_string(&mut line, event.metadata().target());
        line.extend_from_slice(b"}\n");
        // One write per line: the writer thread never sees half an event.
        self.0.append(&line);
    }
}

/// An event's fields as JSON members, each after a comma.
struct JsonFields<'a>(&'a mut Vec<u8>);

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(b',');
        json_string(self.0, field.name());
        self.0.push(b':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        json_string(self.0, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        json_string(self.0, &format!("{value:?}"));
    }
}

/// `text` as a JSON string, as serde_json writes it. Audit values rarely hold a byte
/// JSON escapes (`"`, a backslash, control characters), so such a value is copied whole;
/// serde_json's escaping, a formatter call per run of bytes, cost more per audit line
/// than the rest of the line together.
fn json_string(out: &mut Vec<u8>, text: &str) {
    // The scan has no early exit, so the compiler does it many bytes at a time; it
    // was the largest cost of the audit line byte by byte.
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Makes `span` a child of the remote span a W3C `traceparent` (and `tracestate`) in
/// `headers` names, so the caller's trace continues here. Without one, or with a
/// malformed one, `span` stays a root.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only when the span is disabled, e.g. traces are not exported.
    let _ = span.set_parent(parent);
}

/// gRPC metadata as the propagator reads it.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn json_strings_are_written_as_serde_json_writes_them(text in any::<String>()) {
            let mut ours = Vec::new();
            json_string(&mut ours, &text);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn json_strings_with_escapes_too(text in "[a-z\"\\\\\\x00-\\x1f\\x7f\\u{2028}é]{0,40}") {
            let mut ours = Vec::new();
            json_string(&mut ours, &text);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&text).unwrap());
        }
    }

    fn provider(vars: &[(&str, &str)]) -> Result<Option<SdkTracerProvider>, Error> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tracer_provider(&|var: &str| vars.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()))
    }

    #[test]
    fn audit_events_are_one_json_object_per_line_whatever_their_values() {
        let captured = batch::Captured::default();
        let (writer, guard) = writer_thread("test-audit", captured.clone());
        let subscriber = Registry::default().with(
            AuditJson(writer).with_filter(Targets::new().with_target(AUDIT, tracing::Level::INFO)),
        );
        let hostile = "tenant-a/\u{202e}gnp.exe \"quoted\"\n{\"forged\":1}\\ \u{1}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "audit",
                outcome = "granted",
                caller = hostile,
                identity_source = ?crate::core::Action::Read,
                action = %crate::core::Action::AssumeRead,
                ttl_secs = 300u64,
                rule_line = 2usize,
                absent = Option::<&str>::None,
                "grant issued"
            );
            tracing::info!(target: "storage_grants::other", "not an audit event");
        });
        drop(guard);
        let text = captured.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
        assert_eq!(event["message"], "grant issued");
        assert_eq!(event["outcome"], "granted");
        assert_eq!(event["caller"], hostile);
        assert_eq!(event["identity_source"], "Read");
        assert_eq!(event["action"], "assume-read");
        assert_eq!(event["ttl_secs"], 300);
        assert_eq!(event["rule_line"], 2);
        assert!(event.get("absent").is_none());
        assert!(event.get("forged").is_none());
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["target"], "audit");
        let timestamp = event["timestamp"].as_str().unwrap();
        assert!(
            timestamp.len() >= 20 && timestamp.ends_with('Z'),
            "{timestamp}"
        );
    }

    #[test]
    fn no_endpoint_exports_nothing() {
        assert!(provider(&[]).unwrap().is_none());
        assert!(provider(&[("OTEL_SERVICE_NAME", "x")]).unwrap().is_none());
    }

    #[test]
    fn disabled_sdk_or_none_exporter_exports_nothing() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert!(
            provider(&[endpoint, ("OTEL_SDK_DISABLED", "true")])
                .unwrap()
                .is_none()
        );
        assert!(
            provider(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn http_protocol_is_refused_with_its_variable() {
        let err = provider(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .expect_err("http/protobuf is not spoken");
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
    }
}
