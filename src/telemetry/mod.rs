//! Logging and traces.
//!
//! - **Logging**: `tracing` events to stderr, as text for people or JSON for collectors.
//!   The level comes from `RUST_LOG` (default `info`). Audit events (`grant::audit`
//!   writes them as JSON lines, target `audit`) go among them unless `RUST_LOG` turns
//!   that target off, and to `audit.file` when one is set. Lines are formatted by the
//!   caller and written by a writer thread per destination, in batches ([`batch`]): no
//!   call waits on a `write(2)`. Lossless: when a destination cannot keep up (a stalled
//!   pipe), callers wait for room (backpressure) rather than drop an audit event. The
//!   log carries events only: a call's context (method, caller, grant id) is in its
//!   audit event and its span, and spans exist only when traces are exported.
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

/// Audit destinations for a process that embeds the service without [`init`] (the
/// integration tests): what a destination is, and installing some (once per process).
pub use crate::grant::audit::{Destination as AuditDestination, install as install_audit};

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use batch::Batched;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::core::throttle::{ONCE_A_MINUTE, Throttle};
use crate::grant::audit::TARGET as AUDIT;

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
    #[error("{var}={}: only OTLP over gRPC (\"grpc\") is supported", crate::core::text::echo(.value))]
    Protocol {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// An `OTEL_*` value the SDK would ignore without a word (a misspelt sampler would
    /// export every trace).
    #[error(
        "{var}={}: not a value this service reads; use {expected}",
        crate::core::text::echo(.value)
    )]
    Unsupported {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
    /// An `OTEL_*` value the SDK would drop without a word, described without the
    /// value (exporter headers carry API keys).
    #[error("{var}: {problem}")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// What is wrong, and how to write it.
        problem: String,
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
    /// The log's writer thread (stderr); dropping it writes what it holds and stops it.
    log: batch::Flusher,
    /// The other destinations' (the audit file's), with the path each writes to.
    files: Vec<(batch::Flusher, std::path::PathBuf)>,
}

/// The log's own time at exit, after the other destinations' [`batch::FINAL_FLUSH`].
const LOG_LAST_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// How long the last spans may take to reach the collector at exit: the chart's
/// termination grace period leaves 5 seconds after the drain, and the log's writers
/// still have to flush within them.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter. Blocks; call it
    /// outside async code, while the runtime that started telemetry still exists (the
    /// exporter's connection lives on it).
    ///
    /// Answers whether every log and audit line was written: a destination that takes
    /// nothing (a stalled log pipe, a full disk) is given [`batch::FINAL_FLUSH`], and
    /// what it holds then is lost with the process.
    pub fn shutdown(self) -> bool {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            // Through the log, which is still installed: JSON when the log is.
            tracing::warn!(error = %e, "flushing traces failed; the last spans are lost");
        }
        let deadline = std::time::Instant::now() + batch::FINAL_FLUSH;
        for (file, _) in &self.files {
            file.close();
        }
        let mut written = true;
        for (file, path) in self.files {
            let label = file.label();
            let lost = file.finish(deadline);
            if lost > 0 {
                written = false;
                // Told on the log, which is still open: the operator's one trace of it.
                tracing::error!(
                    destination = label,
                    file = %path.display(),
                    bytes_lost = lost,
                    "a log destination took nothing in the last seconds: what it held is lost"
                );
            }
        }
        // The log last, so that it carries what the others lost, with a moment of its own.
        written &= self
            .log
            .finish(deadline.max(std::time::Instant::now() + LOG_LAST_FLUSH))
            == 0;
        written
    }
}

/// Set by [`reopen_audit_file`]; the audit file's writer reopens its path before its
/// next write.
static REOPEN_AUDIT_FILE: AtomicBool = AtomicBool::new(false);

/// Has the audit file (`[audit] file`) opened again at its path before the next event
/// is written, for log rotation: after a rename, the events go to a new file at the
/// path, not to the renamed one (the server calls this on SIGHUP).
pub fn reopen_audit_file() {
    REOPEN_AUDIT_FILE.store(true, Ordering::Relaxed);
}

/// `path` opened (and created) for appending. A FIFO is opened only when a process
/// reads it: opening one that nobody reads waits for a reader, for ever, and the
/// start-up with it.
fn open_for_appending(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
        // Without waiting: no reader is ENXIO.
        File::options()
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENXIO) => std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "it is a FIFO that no process reads: start its reader first",
                ),
                _ => e,
            })?;
    }
    File::options().create(true).append(true).open(path)
}

/// `[audit] file`, appended to, opened again at its path when asked.
struct AuditFile {
    path: std::path::PathBuf,
    file: File,
}

impl AuditFile {
    /// Opens `path` for appending. A file whose last line was cut (a disk that filled,
    /// a process killed mid-write) gets its line ended first, so that the next event
    /// is a line of its own, and only the cut one is unreadable.
    fn open(path: &Path) -> std::io::Result<AuditFile> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = open_for_appending(path)?;
        let meta = file.metadata()?;
        if meta.is_file() && meta.len() > 0 {
            let mut last = [0u8];
            let mut reader = File::open(path)?;
            reader.seek(SeekFrom::End(-1))?;
            reader.read_exact(&mut last)?;
            if last != *b"\n" {
                file.write_all(b"\n")?;
            }
        }
        Ok(AuditFile {
            path: path.to_owned(),
            file,
        })
    }
}

impl Write for AuditFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if REOPEN_AUDIT_FILE.swap(false, Ordering::Relaxed) {
            match AuditFile::open(&self.path) {
                Ok(reopened) => *self = reopened,
                // The renamed file still takes the events; said, and tried at the next
                // SIGHUP.
                Err(e) => tracing::error!(
                    file = %self.path.display(),
                    error = %e,
                    "cannot open the audit file again; events go on to the file opened before"
                ),
            }
        }
        self.file.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
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

/// What `--check-config` can tell of `audit.file` without creating it: the path is not a
/// directory, an existing file opens for appending, and a new one's directory exists.
///
/// # Errors
/// [`Error::AuditFile`], as serving would meet it.
pub fn check_audit_file(path: &Path) -> Result<(), Error> {
    let refused = |source| Error::AuditFile {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(refused(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory; name a file in it",
        ))),
        // A FIFO is not opened: closing it would end its reader's input, and the
        // service then finds none. `serve` checks for a reader.
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()) => Ok(()),
        Ok(_) => open_for_appending(path).map(drop).map_err(refused),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(refused(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                ))),
                Err(e) => Err(refused(std::io::Error::new(
                    e.kind(),
                    format!("its directory {}: {e}", dir.display()),
                ))),
            }
        }
        Err(e) => Err(refused(e)),
    }
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
    role: batch::Role,
) -> (Batched, batch::Flusher) {
    batch::start(name, destination, role, batch::MAX_BUFFERED)
}

fn init_from(
    format: LogFormat,
    audit_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Telemetry, Error> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut files = Vec::new();
    let stderr_audit = log_shows_audit(filter());
    let (stderr_writer, guard) = writer_thread(
        "log-writer",
        std::io::stderr(),
        batch::Role {
            label: "stderr",
            audit: stderr_audit,
        },
    );
    let log_writer = guard;
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(stderr_writer.clone())
        // Colour only for a terminal: redirected logs stay plain text.
        .with_ansi(std::io::stderr().is_terminal());
    let log = match format {
        LogFormat::Text => stderr.boxed(),
        LogFormat::Json => stderr.json().flatten_event(true).boxed(),
    }
    // Events only: formatting every call's span for the log cost more than the grant
    // itself; without an exporter no layer wants spans, and none is made. Audit lines
    // are not formatted here (below).
    .with_filter(filter().and(filter_fn(|m| m.is_event() && m.target() != AUDIT)));
    // Audit lines are written by `grant::audit` itself and appended to these
    // writers; `RUST_LOG` decides once whether stderr gets them, as it decides for the
    // log's other targets (`RUST_LOG=info,audit=off`).
    let mut audit: Vec<Box<dyn crate::grant::audit::Destination>> = Vec::new();
    if stderr_audit {
        audit.push(Box::new(stderr_writer));
    }
    if let Some(path) = audit_file {
        let file = AuditFile::open(path).map_err(|source| Error::AuditFile {
            path: path.to_owned(),
            source,
        })?;
        let (file_writer, guard) = writer_thread(
            "audit-writer",
            file,
            batch::Role {
                label: "audit_file",
                audit: true,
            },
        );
        files.push((guard, path.to_owned()));
        audit.push(Box::new(file_writer));
    }

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
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![log.boxed()];
    layers.extend(otel.map(Layer::boxed));
    Registry::default()
        .with(layers)
        .try_init()
        .map_err(Error::Init)?;
    // After the subscriber: a second `init` has failed above and installs nothing.
    crate::grant::audit::install(audit);
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC (OTEL_* environment)");
    }
    Ok(Telemetry {
        provider,
        log: log_writer,
        files,
    })
}

/// The tracer provider the `OTEL_*` variables in `env` ask for; `None` when they ask
/// for no export.
fn tracer_provider(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<SdkTracerProvider>, Error> {
    let set = |var: &str| set(env, var);
    if !exports(&set)? {
        return Ok(None);
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
            .with_batch_exporter(Reported::new(exporter))
            .with_resource(resource.build())
            .build(),
    ))
}

/// The OTLP exporter, with its failures counted (`storage_grants_trace_export_failures_total`)
/// and logged at most once a minute: the SDK drops a batch it could not send without a
/// word (its own diagnostics are not compiled in, and would name the endpoint).
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    failures: std::sync::Mutex<Throttle>,
}

impl<E> Reported<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            failures: std::sync::Mutex::new(Throttle::once_per(ONCE_A_MINUTE)),
        }
    }

    /// Counts a failed export; the failures since the last warning when one is due.
    fn failed(&self) -> Option<u64> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .note(std::time::Instant::now())
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Reported<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            crate::metrics::trace_export_failed(spans);
            if let Some(failed_batches) = self.failed() {
                tracing::warn!(
                    error = %e,
                    spans_in_this_batch = spans,
                    failed_batches,
                    "traces could not be exported; their spans are dropped (counted in \
                     storage_grants_trace_export_failures_total; logged once a minute)"
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Whether the `OTEL_*` variables ask for an export; refuses the values the SDK would
/// ignore or misread without a word, and a protocol other than gRPC for an export.
fn exports(set: &impl Fn(&str) -> Option<String>) -> Result<bool, Error> {
    check_otel_values(set)?;
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(false);
    }
    if read_by_sdk(set, ENDPOINT).is_none() {
        return Ok(false);
    }
    if let Some((var, value)) = read_by_sdk(set, PROTOCOL).filter(|(_, v)| v != "grpc") {
        return Err(Error::Protocol { var, value });
    }
    Ok(true)
}

/// The values the SDK would ignore or misread without a word.
fn check_otel_values(set: &impl Fn(&str) -> Option<String>) -> Result<(), Error> {
    // As each is read: the SDK matches the sampler exactly, this module the others
    // whatever their case.
    let one_of = |var: &'static str, allowed: &[&str], expected: &'static str| match set(var) {
        Some(value)
            if !allowed.iter().any(|a| {
                if var == "OTEL_TRACES_SAMPLER" {
                    value == *a
                } else {
                    value.eq_ignore_ascii_case(a)
                }
            }) =>
        {
            Err(Error::Unsupported {
                var,
                value,
                expected,
            })
        }
        _ => Ok(()),
    };
    one_of("OTEL_SDK_DISABLED", &["true", "false"], "true or false")?;
    one_of("OTEL_TRACES_EXPORTER", &["otlp", "none"], "otlp or none")?;
    one_of(
        "OTEL_TRACES_SAMPLER",
        &[
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ],
        "always_on, always_off, traceidratio or their parentbased_ forms",
    )?;
    if set("OTEL_TRACES_SAMPLER").is_some_and(|s| s.ends_with("traceidratio"))
        && let Some(arg) = set("OTEL_TRACES_SAMPLER_ARG")
        && !arg.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r))
    {
        return Err(Error::Unsupported {
            var: "OTEL_TRACES_SAMPLER_ARG",
            value: arg,
            expected: "a ratio from 0 to 1, e.g. 0.1",
        });
    }
    // The SDK reads the traces' own variable when it is set, and the general one only
    // otherwise: a general one left for another signal's exporter is none of ours.
    if let Some((var, value)) = read_by_sdk(set, TIMEOUT)
        && value.parse::<u64>().is_err()
    {
        return Err(Error::Unsupported {
            var,
            value,
            expected: "a whole number of milliseconds, e.g. 10000",
        });
    }
    if let Some((var, value)) = read_by_sdk(set, HEADERS) {
        otlp_headers(&value).map_err(|problem| Error::Malformed { var, problem })?;
    }
    // Without a scheme the exporter takes the endpoint for TLS, and every export fails
    // on a record error that says nothing of it.
    if let Some((var, value)) = read_by_sdk(set, ENDPOINT)
        && !["http://", "https://"].iter().any(|scheme| {
            value
                .get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        })
    {
        // The value is not echoed: an endpoint may carry a password or a token
        // anywhere (user info, query, fragment), the more so one mistyped.
        return Err(Error::Unsupported {
            var,
            value: "(not shown)".into(),
            expected: "a URL that begins http:// (plaintext) or https://, e.g. http://HOST:4317",
        });
    }
    Ok(())
}

/// An exporter setting's two variables: the traces' own, and the general one.
type Pair = (&'static str, &'static str);
const TIMEOUT: Pair = (
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
);
const HEADERS: Pair = (
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
);
const PROTOCOL: Pair = (
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
);
const ENDPOINT: Pair = (
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
);

/// The variable of `setting` the SDK reads, and its value: the traces' own when set,
/// else the general one.
fn read_by_sdk(
    set: &impl Fn(&str) -> Option<String>,
    (traces, general): Pair,
) -> Option<(&'static str, String)> {
    set(traces)
        .map(|value| (traces, value))
        .or_else(|| set(general).map(|value| (general, value)))
}

/// Checks exporter headers as the SDK reads them (`key=value` pairs separated by
/// commas, values percent-encoded), which skips a pair it cannot use without a word:
/// a collector's API key written `Authorization: Bearer …` would never be sent. The
/// problem names a pair by its place and its key, never its value.
fn otlp_headers(value: &str) -> Result<(), String> {
    const HOW: &str = "write key=value pairs separated by commas, values percent-encoded";
    for (n, pair) in value.split_terminator(',').map(str::trim).enumerate() {
        let n = n + 1;
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("pair {n} has no '='; {HOW}"));
        };
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() {
            // The key is not named: a base64 secret pasted alone ends in '='.
            return Err(format!("pair {n} has no value after '='; {HOW}"));
        }
        if http::HeaderName::from_bytes(key.as_bytes()).is_err() {
            return Err(format!(
                "pair {n}: its key is not a header name (letters, digits and '-'); {HOW}"
            ));
        }
        // A key is named only when it reads as a header's name, not as a secret.
        let named = if key.len() <= 40 && key.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-')
        {
            format!("pair {n} (`{key}`)")
        } else {
            format!("pair {n}")
        };
        match percent_decoded(value) {
            None => Err(format!(
                "{named}: a '%' not followed by two hex digits of UTF-8 (the SDK would send it \
                 undecoded); write '%' as %25"
            )),
            Some(v) if http::HeaderValue::from_str(&v).is_err() => Err(format!(
                "{named}: its value holds characters a header cannot carry (control characters, line breaks)"
            )),
            Some(_) => Ok(()),
        }?;
    }
    Ok(())
}

/// `value` with its `%XX` escapes decoded, as the SDK decodes header values; `None`
/// when an escape is broken or the result is not UTF-8.
fn percent_decoded(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What `--check-config` can tell of the `OTEL_*` environment without exporting: the
/// values `serve` would refuse.
///
/// # Errors
/// As serving would meet them.
pub fn check_trace_export() -> Result<(), Error> {
    let env = |var: &str| std::env::var(var).ok();
    exports(&|var: &str| set(&env, var)).map(drop)
}

/// The value of `var` in `env`, unless unset or blank (the SDK ignores those too).
fn set(env: &impl Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    env(var).filter(|v| !v.trim().is_empty())
}

/// Whether `filter` (the log's `RUST_LOG`) lets audit events through.
fn log_shows_audit(filter: EnvFilter) -> bool {
    let probe = Registry::default().with(filter);
    tracing::subscriber::with_default(
        probe,
        || tracing::enabled!(target: AUDIT, tracing::Level::INFO),
    )
}

impl crate::grant::audit::Destination for Batched {
    fn append(&self, line: &[u8]) {
        Batched::append(self, line);
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

    #[test]
    fn an_audit_file_whose_last_line_was_cut_gets_it_ended_before_the_next_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"cut").unwrap();
        let mut file = AuditFile::open(&path).unwrap();
        file.write_all(b"{\"b\":2}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"cut\n{\"b\":2}\n"
        );
        // A whole file, or an empty one, is left as it is.
        drop(file);
        let mut file = AuditFile::open(&path).unwrap();
        file.write_all(b"{\"c\":3}\n").unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("{\"b\":2}\n{\"c\":3}\n")
        );
        let empty = dir.path().join("empty.jsonl");
        AuditFile::open(&empty).unwrap();
        assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
    }

    /// The environment of exactly `vars`, as the checks read it.
    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |var: &str| vars.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
    }

    fn provider(vars: &[(&str, &str)]) -> Result<Option<SdkTracerProvider>, Error> {
        tracer_provider(&env(vars))
    }

    #[test]
    fn rust_log_decides_whether_stderr_gets_audit_events() {
        for (directives, shown) in [
            ("info", true),
            ("debug", true),
            ("warn", false),
            ("info,audit=off", false),
            ("error,audit=info", true),
            ("storage_grants=debug", false),
        ] {
            assert_eq!(
                log_shows_audit(EnvFilter::new(directives)),
                shown,
                "RUST_LOG={directives}"
            );
        }
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
    fn values_the_sdk_would_ignore_are_refused_with_what_they_may_be() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        for (var, value, says) in [
            ("OTEL_TRACES_SAMPLER", "alwaysoff", "always_on, always_off"),
            ("OTEL_TRACES_EXPORTER", "zipkin", "otlp or none"),
            ("OTEL_SDK_DISABLED", "yes", "true or false"),
        ] {
            // Refused whether or not an endpoint asks for an export.
            for vars in [vec![(var, value)], vec![endpoint, (var, value)]] {
                let err = provider(&vars).expect_err(value).to_string();
                assert!(err.contains(var) && err.contains(says), "{err}");
            }
        }
        let ratio = ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
        for bad in ["abc", "1.5"] {
            let err = provider(&[ratio, ("OTEL_TRACES_SAMPLER_ARG", bad)])
                .expect_err(bad)
                .to_string();
            assert!(err.contains("a ratio from 0 to 1"), "{err}");
        }
        assert!(
            provider(&[ratio, ("OTEL_TRACES_SAMPLER_ARG", "0.25")])
                .unwrap()
                .is_none()
        );
        // The SDK reads the sampler's name exactly.
        assert!(provider(&[("OTEL_TRACES_SAMPLER", "Always_Off")]).is_err());
        let timeout = ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s");
        let err = provider(&[endpoint, timeout]).unwrap_err().to_string();
        assert!(err.contains("milliseconds"), "{err}");
        // A value is quoted escaped: a line break in it cannot forge a log line.
        let broken = ("OTEL_EXPORTER_OTLP_TIMEOUT", "10\nforged line");
        let err = provider(&[endpoint, broken]).unwrap_err().to_string();
        assert!(
            err.contains("10\\nforged line") && !err.contains('\n'),
            "{err}"
        );
        let whole = |var: &str| (var == "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").then(|| "2500".into());
        assert!(check_otel_values(&whole).is_ok());
        // The traces' own variables are the ones the SDK reads when set: a general one
        // left for another signal's exporter is not checked.
        let general_for_another = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10000"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Bearer abc"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "authorization=Bearer%20abc",
            ),
        ]);
        assert_eq!(check_otel_values(&general_for_another).ok(), Some(()));
        // An endpoint without its scheme, which the exporter would take for TLS.
        for (var, value) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317"),
        ] {
            let err = provider(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var) && err.contains("begins http://"), "{err}");
        }
        let traces_own_has_it = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector:4317",
            ),
        ]);
        assert_eq!(check_otel_values(&traces_own_has_it).ok(), Some(()));
        // A secret anywhere in a refused endpoint is not echoed.
        for endpoint in [
            "user:s3cr3t@collector:4317",
            "https//user:s3cr3t@collector:4317",
            "grpc://collector:4317/?api_key=s3cr3t",
            " http://user:s3cr3t@collector:4317",
        ] {
            let err = provider(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)])
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("s3cr3t") && err.contains("(not shown)"),
                "{err}"
            );
        }
    }

    #[test]
    fn exporter_headers_the_sdk_would_drop_are_refused_without_their_values() {
        let secret = "s3cr3t-api-key";
        for (headers, says) in [
            (
                format!("Authorization: Bearer {secret}"),
                "pair 1 has no '='",
            ),
            (
                format!("x-team=a,api key={secret}"),
                "pair 2: its key is not a header name",
            ),
            (
                format!("x-api-key={secret}%zz"),
                "pair 1 (`x-api-key`): a '%'",
            ),
            (
                format!("x-api-key={secret}%0A"),
                "characters a header cannot carry",
            ),
            ("x-api-key=".to_owned(), "pair 1 has no value"),
            (format!("{secret}="), "pair 1 has no value"),
            (format!("sk-{secret}=x%zz"), "pair 1: a '%'"),
        ] {
            let err = otlp_headers(&headers).unwrap_err();
            assert!(err.contains(says), "{headers}: {err}");
            assert!(!err.contains(secret), "{err}");
            let var = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", headers.as_str());
            let err = provider(&[var]).unwrap_err().to_string();
            assert!(
                err.starts_with("OTEL_EXPORTER_OTLP_TRACES_HEADERS: pair"),
                "{err}"
            );
        }
        for good in [
            "authorization=Bearer%20abc, x-team = a ,",
            "Authorization=Basic%20YWxhZGRpbjpvcGVuc2VzYW1l",
        ] {
            assert_eq!(otlp_headers(good), Ok(()), "{good}");
        }
        assert!(provider(&[("OTEL_TRACES_SAMPLER", "always_off")]).is_ok());
    }

    #[test]
    fn the_protocol_checked_is_the_one_the_sdk_reads() {
        let set = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]);
        assert_eq!(exports(&set).ok(), Some(true));
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
