//! Prometheus metrics, kept in one process-wide registry of the Prometheus project's
//! own client (`prometheus-client`) and rendered in the text exposition format
//! (`server` serves them on their own port, `metrics.listen`).
//!
//! Labels are closed sets (RPC names from a fixed list, gRPC codes, the gateway's route
//! templates and status classes, actions, outcomes, results): nothing a caller sends
//! ever becomes a label, so a caller cannot blow up the series count, and no key,
//! prefix, URL or credential can reach a metric.
//!
//! The names are a contract with dashboards and with the Helm chart's alert rules
//! (`helm/storage-grants/templates/prometheusrule.yaml`): rename one only together
//! with them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::core::Action;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Names of the RPCs this server answers, as `(service, method)`: the only values the
/// `method` label takes besides `"other"`.
pub const RPCS: [(&str, &str); 12] = [
    ("storagegrants.v1.GrantService", "GrantRead"),
    ("storagegrants.v1.GrantService", "GrantWrite"),
    ("storagegrants.v1.GrantService", "AssumeScoped"),
    ("storagegrants.v1.GrantService", "StartMultipartUpload"),
    ("storagegrants.v1.GrantService", "GrantUploadParts"),
    ("storagegrants.v1.GrantService", "ListUploadedParts"),
    ("storagegrants.v1.GrantService", "CompleteMultipartUpload"),
    ("storagegrants.v1.GrantService", "AbortMultipartUpload"),
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
];

/// The gRPC status codes by name, in code order: the values of the `code` label.
pub use crate::core::GRPC_CODES;

/// One of [`RPCS`], by its position, or any other path (`"other"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rpc(usize);

impl Rpc {
    /// The RPC a request path (`/service/method`) names; anything else is "other", so
    /// that no caller-chosen path becomes a span name or a metric label.
    pub fn of_path(path: &str) -> Self {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        Self(
            RPCS.iter()
                .position(|(s, m)| *s == service && *m == method)
                .unwrap_or(RPCS.len()),
        )
    }

    /// Whether the path named one of [`RPCS`].
    pub fn is_known(self) -> bool {
        self.0 < RPCS.len()
    }

    /// Whether the call is the grant service's, whose decisions are audited.
    pub fn is_grant_service(self) -> bool {
        self.service() == RPCS[0].0
    }

    /// The service's full name, or `"other"`.
    pub fn service(self) -> &'static str {
        RPCS.get(self.0).map_or("other", |(service, _)| service)
    }

    /// The method's name, or `"other"`.
    pub fn method(self) -> &'static str {
        RPCS.get(self.0).map_or("other", |(_, method)| method)
    }
}

/// `UNKNOWN`'s position in [`GRPC_CODES`] (its gRPC code).
const UNKNOWN: usize = 2;

/// The position in [`GRPC_CODES`] of status code `code`; `UNKNOWN`'s for a number gRPC
/// does not define.
fn grpc_code_index(code: i32) -> usize {
    usize::try_from(code)
        .ok()
        .filter(|&i| i < GRPC_CODES.len())
        .unwrap_or(UNKNOWN)
}

type Labels<const N: usize> = [(&'static str, &'static str); N];
type Histograms<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Upper bounds of a whole call, in seconds: a grant takes some tens of microseconds
/// (a p99 of about 125 µs at half load, BENCHMARKS.md), so the lowest buckets resolve
/// that; the tail is STS and deadlines.
fn rpc_buckets() -> Histogram {
    Histogram::new([
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0,
    ])
}

/// Upper bounds of one AssumeRole, in seconds.
fn sts_buckets() -> Histogram {
    Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Every metric, and the registry that renders them.
struct Metrics {
    registry: Registry,
    rpc_duration: Histograms<2>,
    http_duration: Histograms<2>,
    /// `http_duration`'s series by route (the caller's index, below [`HTTP_ROUTES`])
    /// and status class, each looked up in the family once, as `rpc_series`.
    http_series: Box<[[OnceLock<Histogram>; STATUS_CLASSES.len()]]>,
    /// `rpc_duration`'s series by RPC ([`Rpc`], "other" last) and code, each looked up
    /// in the family once: a family hashes its labels and takes its lock on every
    /// lookup, which every call would pay.
    rpc_series: Box<[[OnceLock<Histogram>; GRPC_CODES.len()]]>,
    rpc_in_flight: Gauge,
    load_shed: Counter,
    connections_open: Gauge,
    connections_refused: Counter,
    /// `grants`' series by action ([`Action::ALL`] order), granted then denied.
    grant_series: [[Counter; 2]; Action::ALL.len()],
    unauthenticated: Counter,
    over_budget: Counter,
    sts_calls: Family<Labels<1>, Counter>,
    sts_duration: Histograms<1>,
    /// `sts_cache`'s series, in [`CacheOutcome::ALL`]'s order.
    sts_cache_series: [Counter; 3],
    sts_cache_evictions: Counter,
    packed_policy: Histogram,
    jwks_refreshes: Family<Labels<1>, Counter>,
    rules_reloads: Family<Labels<1>, Counter>,
    rules_stale: Gauge,
    trace_export_failures: Counter,
    log_write_failures: Family<Labels<1>, Counter>,
    log_lines_dropped: Family<Labels<1>, Counter>,
    log_bytes_lost: Family<Labels<1>, Counter>,
    tls_reloads: Family<Labels<2>, Counter>,
    tls_stale: Family<Labels<1>, Gauge>,
    ready: Gauge,
    signing_expiry: &'static Expiry,
    certificate_expiry: &'static Expiry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("storage_grants");
        let rpc_duration = Histograms::<2>::new_with_constructor(rpc_buckets as fn() -> _);
        registry.register(
            "rpc_duration_seconds",
            "gRPC calls by method and status code, and how long they took",
            rpc_duration.clone(),
        );
        let http_duration = Histograms::<2>::new_with_constructor(rpc_buckets as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "HTTP gateway requests by route and status class (2xx to 5xx), and how long \
             they took",
            http_duration.clone(),
        );
        let rpc_in_flight = Gauge::default();
        registry.register(
            "rpc_in_flight",
            "gRPC calls being answered now",
            rpc_in_flight.clone(),
        );
        let load_shed = Counter::default();
        registry.register(
            "rpc_load_shed",
            "gRPC calls refused at once (RESOURCE_EXHAUSTED) because their connection had \
             server.concurrency_limit_per_connection calls in flight",
            load_shed.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Connections open now, on the gRPC port and the gateway together",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed as soon as they were accepted because \
             server.max_connections were open",
            connections_refused.clone(),
        );
        let grants = Family::<Labels<2>, Counter>::default();
        registry.register(
            "grants",
            "Grant decisions by action and outcome",
            grants.clone(),
        );
        let unauthenticated = Counter::default();
        registry.register(
            "unauthenticated",
            "Calls refused for want of a verifiable identity",
            unauthenticated.clone(),
        );
        let over_budget = Counter::default();
        registry.register(
            "over_budget",
            "Calls refused because the caller used up its budget of grants or new STS sessions",
            over_budget.clone(),
        );
        let sts_calls = Family::<Labels<1>, Counter>::default();
        registry.register(
            "sts_assume_role",
            "AssumeRole calls by result",
            sts_calls.clone(),
        );
        let sts_duration = Histograms::<1>::new_with_constructor(sts_buckets as fn() -> _);
        registry.register(
            "sts_assume_role_duration_seconds",
            "How long AssumeRole calls took, by result",
            sts_duration.clone(),
        );
        let sts_cache = Family::<Labels<1>, Counter>::default();
        registry.register(
            "sts_cache",
            "Scoped credential requests by cache outcome",
            sts_cache.clone(),
        );
        let sts_cache_evictions = Counter::default();
        registry.register(
            "sts_cache_evictions",
            "Cached scoped credentials dropped to keep the cache within sts.cache_max_entries",
            sts_cache_evictions.clone(),
        );
        let packed_policy = Histogram::new([10.0, 25.0, 50.0, 80.0, 90.0, 100.0]);
        registry.register(
            "sts_packed_policy_percent",
            "STS packed policy size of issued sessions, percent of its limit",
            packed_policy.clone(),
        );
        let jwks_refreshes = Family::<Labels<1>, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "JWKS loads by result",
            jwks_refreshes.clone(),
        );
        let rules_reloads = Family::<Labels<1>, Counter>::default();
        registry.register(
            "rules_reloads",
            "Rules reloads, applied or refused",
            rules_reloads.clone(),
        );
        let rules_stale = Gauge::default();
        registry.register(
            "rules_stale",
            "1 while the last rules reload was refused (file missing, unreadable or \
             invalid) and the previous rules stay in force",
            rules_stale.clone(),
        );
        let trace_export_failures = Counter::default();
        registry.register(
            "trace_export_failures",
            "Spans dropped because their batch could not be exported (collector \
             unreachable or refusing)",
            trace_export_failures.clone(),
        );
        registry.register_collector(Box::new(&*LOG_BACKLOG));
        let log_write_failures = Family::<Labels<1>, Counter>::default();
        registry.register(
            "log_write_failures",
            "Failed writes to a log destination (a full disk, an I/O error); the lines \
             are kept and written again",
            log_write_failures.clone(),
        );
        let log_lines_dropped = Family::<Labels<1>, Counter>::default();
        registry.register(
            "log_lines_dropped",
            "Log lines (never audit events) dropped because their destination was 32 MiB \
             behind",
            log_lines_dropped.clone(),
        );
        let log_bytes_lost = Family::<Labels<1>, Counter>::default();
        registry.register(
            "log_bytes_lost",
            "Bytes of log and audit lines lost because the pipe's reader was gone",
            log_bytes_lost.clone(),
        );
        let tls_reloads = Family::<Labels<2>, Counter>::default();
        registry.register(
            "tls_reloads",
            "Reloads of the TLS files (file: certificate, the served key pair; client_ca, \
             identity.mtls.ca_file), applied or refused",
            tls_reloads.clone(),
        );
        let tls_stale = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "tls_stale",
            "1 while the TLS files on disk are refused and the previous ones stay in force",
            tls_stale.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while the grant service reports SERVING (signing credentials loaded, the \
             checked buckets answer HeadBucket), 0 while it does not",
            ready.clone(),
        );
        let build_info = Family::<Labels<1>, Gauge>::default();
        build_info
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version of this build is a label",
            build_info,
        );
        let signing_expiry: &'static Expiry = Box::leak(Box::new(Expiry::named(
            "signing_credentials_remaining_seconds",
            "Seconds of life left on the credentials this service signs with",
        )));
        registry.register_collector(Box::new(signing_expiry));
        let certificate_expiry: &'static Expiry = Box::leak(Box::new(Expiry::named(
            "tls_certificate_remaining_seconds",
            "Seconds of validity left on the server certificate the service presents \
             (server.tls or identity.mtls)",
        )));
        registry.register_collector(Box::new(certificate_expiry));

        let http_series = (0..HTTP_ROUTES)
            .map(|_| std::array::from_fn(|_| OnceLock::new()))
            .collect();
        let rpc_series = (0..=RPCS.len())
            .map(|_| std::array::from_fn(|_| OnceLock::new()))
            .collect();
        let grant_series = Action::ALL.map(|action| {
            ["granted", "denied"].map(|outcome| {
                grants
                    .get_or_create(&[("action", action.as_str()), ("outcome", outcome)])
                    .clone()
            })
        });
        let sts_cache_series = CacheOutcome::ALL.map(|outcome| {
            sts_cache
                .get_or_create(&[("outcome", outcome.as_str())])
                .clone()
        });
        let metrics = Self {
            registry,
            rpc_duration,
            http_duration,
            http_series,
            rpc_series,
            rpc_in_flight,
            load_shed,
            connections_open,
            connections_refused,
            grant_series,
            unauthenticated,
            over_budget,
            sts_calls,
            sts_duration,
            sts_cache_series,
            sts_cache_evictions,
            packed_policy,
            jwks_refreshes,
            rules_reloads,
            rules_stale,
            trace_export_failures,
            log_write_failures,
            log_lines_dropped,
            log_bytes_lost,
            tls_reloads,
            tls_stale,
            ready,
            signing_expiry,
            certificate_expiry,
        };
        metrics.create_every_series();
        metrics
    }

    /// Creates every series of the closed label sets at zero, so that a rate or an
    /// alert sees a series before its first event.
    /// (`grants` and `sts_cache` were created with their series handles.)
    fn create_every_series(&self) {
        for index in 0..RPCS.len() {
            // OK, INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED
            for code in [0, 3, 7, 16] {
                let _ = self.rpc_histogram(Rpc(index), code);
            }
        }
        for result in StsResult::ALL {
            let _ = self.sts_calls.get_or_create(&[("result", result.as_str())]);
        }
        for result in ["loaded", "failed"] {
            let _ = self.jwks_refreshes.get_or_create(&[("result", result)]);
        }
        for result in ["applied", "refused"] {
            let _ = self.rules_reloads.get_or_create(&[("result", result)]);
        }
    }

    /// The `rpc_duration` series of `rpc` ending with `code`.
    fn rpc_histogram(&self, rpc: Rpc, code: i32) -> &Histogram {
        let code = grpc_code_index(code);
        self.rpc_series[rpc.0][code].get_or_init(|| {
            self.rpc_duration
                .get_or_create(&[("method", rpc.method()), ("code", GRPC_CODES[code])])
                .clone()
        })
    }
}

// === recording ===

/// A call of `rpc` that ended with gRPC status `code` after `elapsed`.
pub fn rpc(rpc: Rpc, code: i32, elapsed: Duration) {
    METRICS
        .rpc_histogram(rpc, code)
        .observe(elapsed.as_secs_f64());
}

/// Whether the grant service is ready now (what `storage_grants_ready` says).
pub fn is_ready() -> bool {
    METRICS.ready.get() == 1
}

/// The grant service's readiness changed to `ready`.
pub fn ready(ready: bool) {
    METRICS.ready.set(i64::from(ready));
}

/// The `status` label's values: the class of an HTTP status.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// How many gateway routes `http_series` holds; a route past them is looked up in the
/// family on each request.
const HTTP_ROUTES: usize = 16;

/// The position of `status`'s class in [`STATUS_CLASSES`].
fn status_class(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}

/// A gateway request answered with `status` after `elapsed`, to `route`: its position
/// in the gateway's list of routes and its template (or "other").
pub fn http_request(route: (usize, &'static str), status: u16, elapsed: Duration) {
    let (index, template) = route;
    let class = status_class(status);
    let series = || {
        METRICS
            .http_duration
            .get_or_create(&[("route", template), ("status", STATUS_CLASSES[class])])
            .clone()
    };
    let elapsed = elapsed.as_secs_f64();
    match METRICS.http_series.get(index) {
        Some(row) => row[class].get_or_init(series).observe(elapsed),
        None => series().observe(elapsed),
    }
}

/// A call began (`true`) or ended (`false`).
/// How many gRPC calls are being served now.
pub fn rpcs_in_flight() -> i64 {
    METRICS.rpc_in_flight.get()
}

/// A gRPC call started (`true`) or ended.
pub fn rpc_in_flight(started: bool) {
    if started {
        METRICS.rpc_in_flight.inc();
    } else {
        METRICS.rpc_in_flight.dec();
    }
}

/// A call refused by load shedding.
pub fn load_shed() {
    METRICS.load_shed.inc();
}

/// A connection was accepted (`true`) or closed (`false`).
pub fn connection_open(opened: bool) {
    if opened {
        METRICS.connections_open.inc();
    } else {
        METRICS.connections_open.dec();
    }
}

/// A connection closed at once: `server.max_connections` were open.
pub fn connection_refused() {
    METRICS.connections_refused.inc();
}

/// A grant decision for `action`.
pub fn grant(action: Action, granted: bool) {
    METRICS.grant_series[action as usize][usize::from(!granted)].inc();
}

/// A call refused for want of a verifiable identity.
pub fn unauthenticated() {
    METRICS.unauthenticated.inc();
}

/// A call refused over a caller's budget.
pub fn over_budget() {
    METRICS.over_budget.inc();
}

/// How an AssumeRole ended.
#[derive(Debug, Clone, Copy)]
pub enum StsResult {
    /// Credentials issued.
    Issued,
    /// STS throttled.
    Throttled,
    /// STS unreachable or timed out.
    Unreachable,
    /// STS refused (permissions, trust policy, malformed input).
    Refused,
}

impl StsResult {
    const ALL: [StsResult; 4] = [
        Self::Issued,
        Self::Throttled,
        Self::Unreachable,
        Self::Refused,
    ];

    /// The `result` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Throttled => "throttled",
            Self::Unreachable => "unreachable",
            Self::Refused => "refused",
        }
    }
}

/// An AssumeRole call, its result and how long it took.
pub fn sts_call(result: StsResult, elapsed: Duration) {
    let labels = [("result", result.as_str())];
    METRICS.sts_calls.get_or_create(&labels).inc();
    METRICS
        .sts_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

/// How the STS cache met a request for credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Credentials at hand, reused.
    Hit,
    /// None: this request started an AssumeRole.
    Miss,
    /// None at hand: this request waits on the AssumeRole another one started, and
    /// gets what it brings (credentials, an error, or nothing before its deadline).
    Joined,
}

impl CacheOutcome {
    /// Every outcome, in the order of the series.
    pub const ALL: [CacheOutcome; 3] = [Self::Hit, Self::Miss, Self::Joined];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Joined => "joined",
        }
    }
}

/// A credential request met the STS cache with `outcome`.
pub fn sts_cache(outcome: CacheOutcome) {
    METRICS.sts_cache_series[outcome as usize].inc();
}

/// `count` cached credential sets dropped to make room.
pub fn sts_cache_evictions(count: u64) {
    METRICS.sts_cache_evictions.inc_by(count);
}

/// STS's packed policy size of an issued session, in percent of the limit.
pub fn packed_policy_percent(percent: i32) {
    METRICS.packed_policy.observe(f64::from(percent));
}

/// A JWKS load (URL or file), successful or not.
pub fn jwks_refresh(loaded: bool) {
    let result = if loaded { "loaded" } else { "failed" };
    METRICS
        .jwks_refreshes
        .get_or_create(&[("result", result)])
        .inc();
}

/// A rules reload, applied (`true`) or refused.
pub fn rules_reload(applied: bool) {
    let result = if applied { "applied" } else { "refused" };
    METRICS
        .rules_reloads
        .get_or_create(&[("result", result)])
        .inc();
    METRICS.rules_stale.set(i64::from(!applied));
}

/// When the credentials the service signs with expire; `None` for credentials that do
/// not (static keys), which leaves the remaining-life gauge out of the scrape.
pub fn signing_credentials_expire_at(expires_at: Option<SystemTime>) {
    METRICS.signing_expiry.set(expires_at);
}

/// Which TLS files a reload read.
#[derive(Debug, Clone, Copy)]
pub enum TlsFile {
    /// The key pair the service presents.
    Certificate,
    /// `identity.mtls.ca_file`.
    ClientCa,
}

impl TlsFile {
    fn as_str(self) -> &'static str {
        match self {
            TlsFile::Certificate => "certificate",
            TlsFile::ClientCa => "client_ca",
        }
    }
}

/// `file` was loaded at start: its series appear (at zero, not stale), so a service
/// without TLS has none and an alert sees them before the first reload.
pub fn tls_loaded(file: TlsFile) {
    let file = file.as_str();
    for result in ["applied", "refused"] {
        let _ = METRICS
            .tls_reloads
            .get_or_create(&[("file", file), ("result", result)]);
    }
    METRICS.tls_stale.get_or_create(&[("file", file)]).set(0);
}

/// A reload of `file`, applied (`true`) or refused.
pub fn tls_reload(file: TlsFile, applied: bool) {
    let file = file.as_str();
    let result = if applied { "applied" } else { "refused" };
    METRICS
        .tls_reloads
        .get_or_create(&[("file", file), ("result", result)])
        .inc();
    METRICS
        .tls_stale
        .get_or_create(&[("file", file)])
        .set(i64::from(!applied));
}

/// A batch of `spans` could not be exported and is dropped.
pub fn trace_export_failed(spans: usize) {
    METRICS.trace_export_failures.inc_by(spans as u64);
}

/// Reports `bytes()` as the backlog of `destination` at each scrape: read when
/// scraped, so that the writers' appends (one per grant) update no metric, and a
/// writer blocked in a write still shows its backlog.
pub fn log_backlog(destination: &'static str, bytes: BacklogSource) {
    // The destination's counters exist from the start at 0, as the other outcomes'
    // do: a series that first appears at 1 is no `increase` to an alert.
    let labels = [("destination", destination)];
    let _ = METRICS.log_write_failures.get_or_create(&labels);
    let _ = METRICS.log_lines_dropped.get_or_create(&labels);
    let _ = METRICS.log_bytes_lost.get_or_create(&labels);
    LOG_BACKLOG
        .sources
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((destination, bytes));
}

/// What reads a log destination's backlog, in bytes.
pub type BacklogSource = Box<dyn Fn() -> usize + Send + Sync>;

/// `storage_grants_log_backlog_bytes`, by destination.
struct LogBacklog {
    sources: std::sync::Mutex<Vec<(&'static str, BacklogSource)>>,
}

static LOG_BACKLOG: LazyLock<LogBacklog> = LazyLock::new(|| LogBacklog {
    sources: std::sync::Mutex::new(Vec::new()),
});

impl std::fmt::Debug for LogBacklog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogBacklog")
    }
}

impl Collector for &'static LogBacklog {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sources.is_empty() {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(
            "log_backlog_bytes",
            "Bytes of log and audit lines not yet written, per destination (stderr, \
             audit_file); past 8 MiB on an audit destination new calls wait for it",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (destination, bytes) in sources.iter() {
            let gauge = ConstGauge::new(i64::try_from(bytes()).unwrap_or(i64::MAX));
            gauge.encode(metric.encode_family(&[("destination", *destination)])?)?;
        }
        Ok(())
    }
}

/// A write to `destination` failed; its bytes are kept.
pub fn log_write_failed(destination: &'static str) {
    METRICS
        .log_write_failures
        .get_or_create(&[("destination", destination)])
        .inc();
}

/// `lines` log lines for `destination` were dropped past its limit.
pub fn log_lines_dropped(destination: &'static str, lines: usize) {
    METRICS
        .log_lines_dropped
        .get_or_create(&[("destination", destination)])
        .inc_by(lines as u64);
}

/// `bytes` for `destination` were lost with the pipe's reader.
pub fn log_bytes_lost(destination: &'static str, bytes: usize) {
    METRICS
        .log_bytes_lost
        .get_or_create(&[("destination", destination)])
        .inc_by(bytes as u64);
}

/// When the served server certificate stops being valid.
pub fn tls_certificate_expires_at(not_after: Option<SystemTime>) {
    METRICS.certificate_expiry.set(not_after);
}

/// All metrics in Prometheus' text exposition format (version 0.0.4).
pub fn render() -> String {
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail.
    prometheus_client::encoding::prometheus_text::encode(&mut out, &METRICS.registry)
        .expect("encoding into a String cannot fail");
    out
}

// === impl Expiry ===

const NO_EXPIRY: i64 = i64::MIN;

/// An expiry (Unix seconds, or [`NO_EXPIRY`]: no series), turned into seconds left at
/// each scrape: the value falls between refreshes, which is what an alert on a stuck
/// refresh or renewal needs. The signing credentials' and the server certificate's.
#[derive(Debug)]
struct Expiry {
    at: AtomicI64,
    name: &'static str,
    help: &'static str,
}

impl Expiry {
    fn named(name: &'static str, help: &'static str) -> Self {
        Self {
            at: AtomicI64::new(NO_EXPIRY),
            name,
            help,
        }
    }

    fn set(&self, expires_at: Option<SystemTime>) {
        let unix = expires_at.map_or(NO_EXPIRY, |t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => 0,
        });
        self.at.store(unix, Ordering::Relaxed);
    }
}

impl Collector for &'static Expiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let expires = self.at.load(Ordering::Relaxed);
        if expires == NO_EXPIRY {
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let gauge = ConstGauge::new(expires.saturating_sub(now).max(0));
        let metric = encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_fall_in_their_class() {
        for (status, class) in [
            (101, "1xx"),
            (200, "2xx"),
            (302, "3xx"),
            (404, "4xx"),
            (503, "5xx"),
        ] {
            assert_eq!(STATUS_CLASSES[status_class(status)], class, "{status}");
        }
    }

    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn render_counts_every_family() {
        grant(Action::Read, true);
        grant(Action::List, false);
        packed_policy_percent(30);
        packed_policy_percent(95);
        let text = render();
        assert!(text.contains("storage_grants_grants_total{action=\"read\",outcome=\"granted\"}"));
        assert!(text.contains("storage_grants_grants_total{action=\"list\",outcome=\"denied\"}"));
        // 30 falls in le=50 and above; 95 only in le=100 and +Inf.
        let bucket = |le: &str| {
            sample(
                &text,
                &format!("storage_grants_sts_packed_policy_percent_bucket{{le=\"{le}\"}}"),
            )
        };
        assert!(bucket("25") < bucket("50"));
        assert!(bucket("90") < bucket("100"));
        assert_eq!(bucket("100"), bucket("+Inf"));
        assert!(text.contains("storage_grants_build_info{version=\""));
    }

    #[test]
    fn only_listed_rpcs_are_named() {
        let read = Rpc::of_path("/storagegrants.v1.GrantService/GrantRead");
        assert_eq!(
            (read.service(), read.method()),
            ("storagegrants.v1.GrantService", "GrantRead")
        );
        assert_eq!(
            Rpc::of_path("/grpc.health.v1.Health/Check").method(),
            "Check"
        );
        for path in ["/evil/../x", "/storagegrants.v1.GrantService/Nope", "", "/"] {
            let rpc = Rpc::of_path(path);
            assert_eq!((rpc.service(), rpc.method()), ("other", "other"), "{path}");
        }
    }

    #[test]
    fn code_names_follow_the_grpc_numbering() {
        let name = |code| GRPC_CODES[grpc_code_index(code)];
        assert_eq!(name(0), "OK");
        assert_eq!(name(7), "PERMISSION_DENIED");
        assert_eq!(name(16), "UNAUTHENTICATED");
        for undefined in [-1, 17, i32::MAX] {
            assert_eq!(name(undefined), "UNKNOWN");
        }
    }

    /// Every recorded event lands in its own labelled series and in no other.
    #[test]
    fn each_event_counts_in_its_own_series() {
        let count = |text: &str, series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .map_or(0.0, |v| v.parse::<f64>().unwrap())
        };
        let mut series = Vec::new();
        for action in Action::ALL {
            for outcome in ["granted", "denied"] {
                series.push(format!(
                    "storage_grants_grants_total{{action=\"{}\",outcome=\"{outcome}\"}}",
                    action.as_str()
                ));
            }
        }
        for outcome in CacheOutcome::ALL {
            series.push(format!(
                "storage_grants_sts_cache_total{{outcome=\"{}\"}}",
                outcome.as_str()
            ));
        }
        let rpc_count = |method: &str, code: &str| {
            format!(
                "storage_grants_rpc_duration_seconds_count{{method=\"{method}\",code=\"{code}\"}}"
            )
        };
        series.push(rpc_count("GrantWrite", "PERMISSION_DENIED"));
        series.push(rpc_count("GrantWrite", "OK"));
        series.push(rpc_count("other", "UNKNOWN"));
        let events: Vec<Box<dyn Fn()>> = Action::ALL
            .into_iter()
            .flat_map(|action| {
                [true, false]
                    .map(|granted| Box::new(move || grant(action, granted)) as Box<dyn Fn()>)
            })
            .chain(
                CacheOutcome::ALL
                    .map(|outcome| Box::new(move || sts_cache(outcome)) as Box<dyn Fn()>),
            )
            .chain([
                Box::new(|| {
                    rpc(
                        Rpc::of_path("/storagegrants.v1.GrantService/GrantWrite"),
                        7,
                        Duration::from_millis(1),
                    );
                }) as Box<dyn Fn()>,
                Box::new(|| {
                    rpc(
                        Rpc::of_path("/storagegrants.v1.GrantService/GrantWrite"),
                        0,
                        Duration::from_millis(1),
                    );
                }),
                Box::new(|| rpc(Rpc::of_path("/x/y"), 99, Duration::from_millis(1))),
            ])
            .collect();
        assert_eq!(events.len(), series.len());
        for (i, event) in events.iter().enumerate() {
            let before = render();
            event();
            let after = render();
            for (j, name) in series.iter().enumerate() {
                let delta = count(&after, name) - count(&before, name);
                assert_eq!(
                    delta,
                    if i == j { 1.0 } else { 0.0 },
                    "event {i}, series {name}"
                );
            }
        }
    }

    #[test]
    fn remaining_life_is_computed_at_scrape_time() {
        signing_credentials_expire_at(Some(SystemTime::now() + Duration::from_secs(3600)));
        let left = sample(
            &render(),
            "storage_grants_signing_credentials_remaining_seconds",
        );
        assert!((3500.0..=3600.0).contains(&left), "{left}");
        signing_credentials_expire_at(None);
        assert!(!render().contains("signing_credentials_remaining_seconds"));
    }
}
