//! The configuration as written: the TOML file's shape, with its defaults. Strings
//! stay strings here (endpoints, ARNs, bucket names); [`super::settings`] turns them
//! into validated types once, and nothing else reads this layer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Log output: `text` or `json`.
    pub log_format: crate::telemetry::LogFormat,
    /// Where the objects live and how to reach the store.
    pub storage: StorageConfig,
    /// Limits on the grants themselves.
    pub grants: GrantsConfig,
    /// How callers are identified.
    pub identity: crate::identity::IdentityConfig,
    /// Transport limits.
    pub server: ServerConfig,
    /// STS, for AssumeScoped.
    pub sts: StsConfig,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// The HTTP gateway for browsers and AWS SDKs.
    pub http: HttpConfig,
    /// Multipart uploads.
    pub uploads: UploadsConfig,
    /// Per-caller budgets.
    pub limits: LimitsConfig,
    /// Where audit events go besides the log.
    pub audit: AuditConfig,
}

/// The audit trail: one JSON object per grant decision, on the `audit` log target.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// A file that also receives every audit event, one JSON object per line
    /// (appended; relative to the config file's directory). Unset: the log only.
    pub file: Option<PathBuf>,
}

/// `[limits]`: what one caller may take of what all callers share. Over a budget a
/// call answers RESOURCE_EXHAUSTED with a retry delay (HTTP 429 with Retry-After).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Grants per second each caller may be issued, sustained.
    pub grants_per_second: f64,
    /// Grants a caller may be issued in a burst.
    pub grants_burst: f64,
    /// New STS sessions (cache misses) per minute each caller may cause, sustained:
    /// AssumeRole is rate-limited per AWS account, for every tenant at once.
    pub sts_misses_per_minute: f64,
    /// New STS sessions a caller may cause in a burst.
    pub sts_misses_burst: f64,
    /// AssumeRole calls in flight at once, for all callers.
    pub sts_max_pending: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            grants_per_second: 200.0,
            grants_burst: 400.0,
            sts_misses_per_minute: 60.0,
            sts_misses_burst: 30.0,
            sts_max_pending: 64,
        }
    }
}

/// `[uploads]`: the keys of the upload tokens that bind a multipart upload to its
/// caller. Each key is base64 of at least 32 random bytes (`head -c 32 /dev/urandom |
/// base64`); the first signs, all verify (rotation: put the new key first, keep the old
/// one until the longest upload TTL has passed). Unset: a random key per process, so
/// tokens work only on the replica that made them and until it restarts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// Keys given inline (for `STORAGE_GRANTS_UPLOADS__TOKEN_KEYS`, from a secret).
    pub token_keys: Vec<crate::secret::Secret<String>>,
    /// Files holding one key each (a mounted Secret); relative to the config file.
    pub token_key_files: Vec<PathBuf>,
}

/// `[http]`: the HTTP gateway, off unless `listen` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP listener, e.g. `127.0.0.1:8080`. Unset: no HTTP door.
    pub listen: Option<SocketAddr>,
    /// Origins whose pages may call the gateway with the session cookie, exactly as
    /// browsers send them (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// Name of the cookie that carries the caller's JWT.
    pub session_cookie: String,
    /// Login page a browser without identity is sent to (`?return_to=` is added).
    pub login_url: Option<String>,
    /// Lifetime asked for a click-time link's target; the rule's `max_ttl` cuts it.
    #[serde(with = "crate::core::duration")]
    pub link_ttl: Duration,
    /// How long a client may take to send a request's headers, and how long a
    /// connection may have no request in flight (from its opening on, HTTP/1.1 or
    /// HTTP/2); past it the connection is closed.
    #[serde(with = "crate::core::duration")]
    pub header_read_timeout: Duration,
    /// How long an upload started through the Uppy multipart routes may sign parts
    /// and complete, from its start; the rule's and the grants' `max_ttl` cut it.
    #[serde(with = "crate::core::duration")]
    pub multipart_ttl: Duration,
    /// Bucket that browser uploads through the Uppy routes go to, under the caller's
    /// `write` rule prefix there.
    pub upload_bucket: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            allowed_origins: Vec::new(),
            session_cookie: "sg_session".into(),
            login_url: None,
            link_ttl: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            multipart_ttl: Duration::from_secs(3600),
            upload_bucket: None,
        }
    }
}

/// Where Prometheus metrics are served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint serving `GET /metrics`, apart from the gRPC port,
    /// e.g. `0.0.0.0:9464` in a pod. Unset: no metrics endpoint.
    pub listen: Option<SocketAddr>,
}

/// The object store and how this service reaches it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Region to sign for. Unset: the AWS chain's region (`AWS_REGION`, profile), then
    /// `us-east-1`.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible store, e.g. `http://127.0.0.1:9000`. Unset: AWS S3.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores
    /// need.
    pub force_path_style: bool,
    /// Buckets checked with HeadBucket at start and by the readiness probe. Unset:
    /// every bucket the rules name.
    pub check_buckets: Option<Vec<String>>,
    /// How often the readiness check runs again.
    #[serde(with = "crate::core::duration")]
    pub check_interval: Duration,
    /// Timeout of each call to the store or to the credential chain.
    #[serde(with = "crate::core::duration")]
    pub call_timeout: Duration,
    /// Timeout of a CompleteMultipartUpload, which S3 may take minutes to carry out.
    /// Unset: 10 minutes, or `call_timeout` when that is longer.
    #[serde(default, deserialize_with = "crate::core::duration::optional")]
    pub complete_timeout: Option<Duration>,
}

/// Limits that apply to every grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrantsConfig {
    /// TTL of a grant whose request names none.
    #[serde(with = "crate::core::duration")]
    pub default_ttl: Duration,
    /// Ceiling on any grant's TTL, whatever the rules say.
    #[serde(with = "crate::core::duration")]
    pub max_ttl: Duration,
    /// Ceiling on presigned TTLs while the signing credentials carry a session token
    /// but no expiry (environment variables without `AWS_CREDENTIAL_EXPIRATION`).
    #[serde(with = "crate::core::duration")]
    pub max_ttl_without_expiry: Duration,
    /// The rules file; a relative path is relative to the config file's directory.
    pub rules_file: PathBuf,
    /// How often the rules file is checked for changes (it also reloads on SIGHUP).
    #[serde(with = "crate::core::duration")]
    pub rules_reload_interval: Duration,
}

/// STS, for AssumeScoped: which role to assume and how the credentials are cached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StsConfig {
    /// Role whose permissions the scoped credentials narrow down, e.g.
    /// `arn:aws:iam::123456789012:role/storage-grants-scoped`. Unset: AssumeScoped
    /// answers FAILED_PRECONDITION.
    pub role_arn: Option<String>,
    /// STS endpoint. Unset: the regional AWS endpoint.
    pub endpoint: Option<String>,
    /// Partition of the ARNs in session policies: `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// Credential lifetime when a request names none.
    #[serde(with = "crate::core::duration")]
    pub default_duration: Duration,
    /// The role's maximum session duration (IAM's `MaxSessionDuration`, 1h to 12h).
    #[serde(with = "crate::core::duration")]
    pub role_max_duration: Duration,
    /// Whether this service's own credentials are an assumed role, which limits STS
    /// to 1 hour (role chaining). Unset: assumed when they carry a session token.
    pub role_chaining: Option<bool>,
    /// KMS key that SSE-KMS objects under granted prefixes use; adds kms:Decrypt and
    /// kms:GenerateDataKey on it to session policies.
    pub kms_key_arn: Option<String>,
    /// S3 endpoint returned with scoped credentials. Unset: `storage.endpoint`.
    pub storage_endpoint: Option<String>,
    /// Most cached credential sets kept.
    pub cache_max_entries: usize,
    /// Cached credentials are reused while more than this fraction of their life is
    /// left (and at least `reuse_min_remaining`).
    pub reuse_fraction: f64,
    /// Cached credentials are never handed out with less than this left.
    #[serde(with = "crate::core::duration")]
    pub reuse_min_remaining: Duration,
    /// Bound on one AssumeRole, retries included.
    #[serde(with = "crate::core::duration")]
    pub call_timeout: Duration,
    /// Attempts per AssumeRole (throttling and transient errors are retried with
    /// exponential backoff and jitter).
    pub max_attempts: u32,
    /// Sets SourceIdentity to the caller id (the role's trust policy must allow
    /// `sts:SetSourceIdentity`).
    pub source_identity: bool,
    /// Adds session tags `caller` and `grant` (needs `sts:TagSession`).
    pub session_tags: bool,
}

impl Default for StsConfig {
    fn default() -> Self {
        let settings = crate::sts::Settings::default();
        let durations = crate::sts::Durations::default();
        Self {
            role_arn: None,
            endpoint: None,
            partition: "aws".into(),
            default_duration: durations.default,
            role_max_duration: durations.role_max,
            role_chaining: durations.role_chaining,
            kms_key_arn: None,
            storage_endpoint: None,
            cache_max_entries: settings.cache_max_entries,
            reuse_fraction: settings.reuse_fraction,
            reuse_min_remaining: settings.reuse_min_remaining,
            call_timeout: settings.call_timeout,
            max_attempts: settings.max_attempts,
            source_identity: settings.source_identity,
            session_tags: settings.session_tags,
        }
    }
}

/// Transport limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Upper bound on any one call, whatever deadline the client sends.
    #[serde(with = "crate::core::duration")]
    pub request_timeout: Duration,
    /// In-flight calls per connection before new ones are shed (RESOURCE_EXHAUSTED).
    pub concurrency_limit_per_connection: usize,
    /// Connections open at once, on the gRPC port and the gateway together; one more
    /// is closed as soon as it is accepted. An idle HTTP/2 connection holds about
    /// 32 KiB, so the default (4,096, about 130 MiB) fits the chart's 256 MiB limit with
    /// room for the calls; without a cap a flood of connections gets the process
    /// killed for memory, dropping every call in flight.
    pub max_connections: usize,
    /// Of those, how many may come from one address (an IPv6 one by its /64): one
    /// client (a broken one, or one holding connections open on purpose) cannot take
    /// every slot. Behind a load balancer or proxy that hides client addresses, every
    /// connection comes from a few; raise it to `max_connections` there.
    pub max_connections_per_peer: usize,
    /// How long a new connection (after its TLS handshake, if any) may take to send the
    /// start of its protocol: HTTP/2's client preface and first frame header, or an
    /// HTTP/1.1 request line. Past it, the connection is closed. A connection that has
    /// begun no call by then is sent away (GOAWAY), and closed after the drain an aged
    /// one gets.
    #[serde(with = "crate::core::duration")]
    pub connection_timeout: Duration,
    /// After this long without a packet from the client, the server probes it (TCP
    /// keepalive, on the gRPC port and the gateway alike); a client whose host does
    /// not answer within `keepalive_timeout` is
    /// gone (it vanished without closing, a NAT forgot it) and the connection is
    /// closed. The probes also keep idle channels alive through load balancers that
    /// cut silent connections (an AWS NLB counts them as traffic).
    #[serde(with = "crate::core::duration")]
    pub keepalive_interval: Duration,
    /// About how long the probes may go unanswered before the connection is closed.
    #[serde(with = "crate::core::duration")]
    pub keepalive_timeout: Duration,
    /// How long shutdown waits for in-flight calls to finish.
    #[serde(with = "crate::core::duration")]
    pub shutdown_grace: Duration,
    /// When set, a gRPC connection about this old (each draws its own age, within
    /// 10 % of it) is asked to close (HTTP/2 GOAWAY): its
    /// calls in flight finish (for at most `request_timeout`), and the client opens a
    /// new one, through the load balancer or DNS again, so that clients spread onto
    /// pods added since they connected. Unset: connections live as long as clients
    /// keep them.
    #[serde(default, deserialize_with = "crate::core::duration::optional")]
    pub max_connection_age: Option<Duration>,
    /// Hold each serving thread (one per CPU) to a CPU of its own. Unset: held when
    /// the process may use exactly as many CPUs as it has serving threads (a host of
    /// its own, a pod with whole CPUs under Kubernetes' static CPU manager policy), and
    /// left to the kernel when it may use more (a CPU quota on a shared node, where
    /// holding would tie it to CPUs other pods use). `true`: held in any case, thread
    /// `i` to the `i`-th CPU it may use (in turn when there are fewer); `false`: never.
    /// Left to itself the kernel sometimes runs two serving threads on one CPU for a
    /// few milliseconds while the other CPU runs something else, and every call on
    /// their connections waits (BENCHMARKS.md, "Serving threads held to their CPUs").
    pub pin_cores: Option<bool>,
    /// Serve gRPC-Web (HTTP/1.1 and browsers' fetch) on the gRPC port too, with CORS
    /// for `http.allowed_origins`.
    pub grpc_web: bool,
    /// TLS terminated by this service, without client certificates (`[server.tls]`).
    /// For client certificates use `[identity.mtls]` instead.
    pub tls: Option<ServerTlsConfig>,
    /// Serve plaintext gRPC on a non-loopback `listen` address, for a service mesh
    /// whose sidecar terminates TLS in front of this one. Without it, such a listener
    /// needs `[server.tls]` or `[identity.mtls]`, or the service refuses to start.
    pub allow_plaintext: bool,
}

/// `[server.tls]`: the certificate this server presents. Both files are watched and
/// read again when they change (a renewed certificate needs no restart).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes.
    #[serde(
        default = "default_tls_reload_interval",
        with = "crate::core::duration"
    )]
    pub reload_interval: Duration,
    /// Longest a TLS handshake may take before the connection is dropped.
    #[serde(default = "default_handshake_timeout", with = "crate::core::duration")]
    pub handshake_timeout: Duration,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl RawConfig {
    /// Makes the relative paths of `[server.tls]` and `[audit]` relative to
    /// `base_dir`, the config file's directory.
    pub(super) fn resolve_paths(&mut self, base_dir: &std::path::Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base_dir.join(&*p);
            }
        };
        if let Some(tls) = &mut self.server.tls {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
        }
        if let Some(file) = &mut self.audit.file {
            resolve(file);
        }
    }
}

// === defaults ===

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            log_format: Default::default(),
            storage: StorageConfig::default(),
            grants: GrantsConfig::default(),
            identity: Default::default(),
            server: ServerConfig::default(),
            sts: StsConfig::default(),
            metrics: MetricsConfig::default(),
            http: HttpConfig::default(),
            uploads: UploadsConfig::default(),
            limits: LimitsConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint: None,
            force_path_style: false,
            check_buckets: None,
            check_interval: Duration::from_secs(30),
            call_timeout: Duration::from_secs(5),
            complete_timeout: None,
        }
    }
}

impl Default for GrantsConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(5 * 60),
            max_ttl: Duration::from_secs(3600),
            max_ttl_without_expiry: Duration::from_secs(15 * 60),
            rules_file: PathBuf::from("rules.toml"),
            rules_reload_interval: Duration::from_secs(5),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            concurrency_limit_per_connection: 256,
            max_connections: 4096,
            max_connections_per_peer: 1024,
            connection_timeout: Duration::from_secs(10),
            // Under the common idle cuts of cloud load balancers (AWS NLB: 350 s).
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(20),
            max_connection_age: None,
            pin_cores: None,
            grpc_web: false,
            tls: None,
            allow_plaintext: false,
        }
    }
}
