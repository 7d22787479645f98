//! [`Settings`]: every configured value parsed into its validated type, once. The
//! server, the signer, the STS broker and `--check-config` read these and never a
//! configuration string.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{AuditConfig, MetricsConfig, RawConfig, ServerConfig};
use crate::arn::RoleArn;
use crate::core::limits::{IAM_ROLE_MAX_DURATION, SIGV4_MAX, STS_MIN_DURATION};
use crate::grant::Limits;
use crate::identity::IdentityConfig;
use crate::policy::{KmsKeyArn, Partition};
use crate::scope::BucketName;
use crate::sign::Endpoint;
use crate::telemetry::LogFormat;

/// What is wrong with one setting.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A value outside its allowed range.
    #[error("{0}")]
    OutOfRange(&'static str),
    /// An endpoint URL or region the signer cannot use.
    #[error(transparent)]
    Endpoint(#[from] crate::sign::Error),
    /// A bucket name S3 would refuse.
    #[error("'{name}' {source}")]
    Bucket {
        /// The name as written.
        name: String,
        /// Why.
        #[source]
        source: crate::scope::Error,
    },
    /// A role ARN that is not one.
    #[error("'{value}' {source}")]
    RoleArn {
        /// The ARN as written.
        value: String,
        /// Why.
        #[source]
        source: crate::arn::Error,
    },
    /// A partition or KMS key ARN the policy cannot use.
    #[error(transparent)]
    Policy(#[from] crate::policy::Error),
    /// Two settings that contradict each other.
    #[error("{0}")]
    Mismatch(String),
    /// An identity setting (`[identity]`).
    #[error("{0}")]
    Identity(String),
}

/// The validated configuration.
#[derive(Debug)]
pub struct Settings {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Log output.
    pub log_format: LogFormat,
    /// The store.
    pub storage: StorageSettings,
    /// Grant lifetimes and the rules file.
    pub grants: GrantsSettings,
    /// How callers are identified (validated by `identity`'s own checks).
    pub identity: IdentityConfig,
    /// Transport limits.
    pub server: ServerConfig,
    /// STS, when AssumeScoped is configured (`sts.role_arn` set).
    pub sts: Option<StsSettings>,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The HTTP gateway, when `http.listen` is set.
    pub http: Option<crate::gateway::Settings>,
    /// Origins allowed to call from a browser (`http.allowed_origins`), for the
    /// gateway's and gRPC-Web's CORS.
    pub allowed_origins: Vec<String>,
    /// Each caller's budget of grants.
    pub grant_rate: crate::budget::Rate,
    /// Where the upload-token keys come from (read when the service starts).
    pub upload_keys: crate::upload::KeySources,
    /// The audit file, if any.
    pub audit: AuditConfig,
    /// Settings that are valid but likely not what was meant, for `--check-config` to
    /// print and the service to log at start.
    pub warnings: Vec<String>,
}

/// `[storage]`, validated.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// The configured region, a valid DNS label; `None`: the AWS chain's, else
    /// us-east-1.
    pub region: Option<String>,
    /// An S3-compatible store; `None`: AWS S3 in the region.
    pub endpoint: Option<Endpoint>,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// `AWS_CREDENTIAL_EXPIRATION`: when credentials taken from the environment with a
    /// session token expire (the AWS chain itself does not read it).
    pub credential_expiration: Option<std::time::SystemTime>,
    /// Buckets the readiness check heads; `None`: every bucket the rules name.
    pub check_buckets: Option<Vec<BucketName>>,
    /// How often the readiness check runs.
    pub check_interval: Duration,
    /// Timeout of each call to the store or the credential chain.
    pub call_timeout: Duration,
    /// Timeout of a CompleteMultipartUpload.
    pub complete_timeout: Duration,
}

/// `[grants]`, validated.
#[derive(Debug, Clone)]
pub struct GrantsSettings {
    /// Default and ceiling TTLs.
    pub limits: Limits,
    /// The rules file, absolute or relative to the working directory.
    pub rules_file: PathBuf,
    /// How often the rules file is checked for changes.
    pub rules_reload_interval: Duration,
}

/// `[sts]` with a role, validated.
#[derive(Debug, Clone)]
pub struct StsSettings {
    /// The role to narrow.
    pub role_arn: RoleArn,
    /// Partition of the policy ARNs (the role's).
    pub partition: Partition,
    /// KMS key for SSE-KMS buckets.
    pub kms_key: Option<KmsKeyArn>,
    /// S3 endpoint handed out with credentials; `None`: `storage.endpoint`.
    pub storage_endpoint: Option<Endpoint>,
    /// How the broker calls STS and caches.
    pub broker: crate::sts::Settings,
    /// Session lengths.
    pub durations: crate::sts::Durations,
}

type Refusal = (&'static str, Problem);

fn out_of_range<T>(field: &'static str, message: &'static str) -> Result<T, Refusal> {
    Err((field, Problem::OutOfRange(message)))
}

impl Settings {
    /// Validates every value of `raw`.
    ///
    /// # Errors
    /// The first bad setting and what is wrong with it.
    pub(super) fn from_raw(raw: RawConfig) -> Result<Settings, Refusal> {
        let g = &raw.grants;
        if g.max_ttl < Duration::from_secs(1) {
            return out_of_range("grants.max_ttl", "must be at least 1s");
        }
        if g.max_ttl > SIGV4_MAX {
            return out_of_range("grants.max_ttl", "must be at most 7d (SigV4's limit)");
        }
        if g.default_ttl < Duration::from_secs(1) || g.default_ttl > g.max_ttl {
            let show = crate::core::duration::display;
            return Err((
                "grants.default_ttl",
                Problem::Mismatch(format!(
                    "is {} and grants.max_ttl is {}: it must be between 1s and \
                     grants.max_ttl; lower default_ttl (5m unless set) or raise max_ttl",
                    show(g.default_ttl),
                    show(g.max_ttl)
                )),
            ));
        }
        raw.identity
            .validate()
            .map_err(|e| (e.field, Problem::Identity(e.message)))?;
        if g.max_ttl_without_expiry < Duration::from_secs(1) {
            return out_of_range("grants.max_ttl_without_expiry", "must be at least 1s");
        }
        if g.rules_reload_interval.is_zero() {
            return out_of_range("grants.rules_reload_interval", "must be more than 0s");
        }
        if raw.server.request_timeout.is_zero() {
            return out_of_range("server.request_timeout", "must be more than 0s");
        }
        if raw.server.concurrency_limit_per_connection == 0 {
            return out_of_range(
                "server.concurrency_limit_per_connection",
                "must be at least 1",
            );
        }
        if !(1..=1_000_000).contains(&raw.server.max_connections) {
            return out_of_range("server.max_connections", "must be between 1 and 1000000");
        }
        if !(1..=1_000_000).contains(&raw.server.max_connections_per_peer) {
            return out_of_range(
                "server.max_connections_per_peer",
                "must be between 1 and 1000000",
            );
        }
        if raw.server.connection_timeout < Duration::from_secs(1)
            || raw.server.connection_timeout > Duration::from_secs(300)
        {
            return out_of_range("server.connection_timeout", "must be between 1s and 5m");
        }
        if raw.server.keepalive_interval < Duration::from_secs(1)
            || raw.server.keepalive_interval > Duration::from_secs(2 * 3600)
        {
            return out_of_range("server.keepalive_interval", "must be between 1s and 2h");
        }
        if raw.server.keepalive_timeout < Duration::from_secs(1)
            || raw.server.keepalive_timeout > Duration::from_secs(300)
        {
            return out_of_range("server.keepalive_timeout", "must be between 1s and 5m");
        }
        if let Some(age) = raw.server.max_connection_age
            && (age < Duration::from_secs(1) || age > Duration::from_secs(7 * 86_400))
        {
            return out_of_range("server.max_connection_age", "must be between 1s and 7d");
        }
        transport_security(&raw)?;
        distinct_listeners(&raw)?;
        let storage = storage(&raw)?;
        let sts = sts(&raw, &storage)?;
        let http = http(&raw)?;
        let upload_keys = upload_keys(&raw)?;
        let allowed_origins = origins(&raw)?;
        let grant_rate = limits(&raw)?;
        Ok(Settings {
            listen: raw.listen,
            log_format: raw.log_format,
            storage,
            grants: GrantsSettings {
                limits: Limits {
                    default_ttl: raw.grants.default_ttl,
                    max_ttl: raw.grants.max_ttl,
                    max_ttl_without_expiry: raw.grants.max_ttl_without_expiry,
                },
                rules_file: raw.grants.rules_file,
                rules_reload_interval: raw.grants.rules_reload_interval,
            },
            identity: raw.identity,
            server: raw.server,
            sts,
            metrics: raw.metrics,
            http,
            allowed_origins,
            grant_rate,
            upload_keys,
            audit: raw.audit,
            warnings: Vec::new(),
        })
    }

    /// How the gRPC port is protected, for the start-up log.
    pub fn transport_security(&self) -> &'static str {
        if self.identity.mtls.is_some() {
            "mTLS terminated by this service (identity.mtls)"
        } else if self.server.tls.is_some() {
            "TLS terminated by this service (server.tls)"
        } else if self.listen.ip().is_loopback() {
            "plaintext, on a loopback address only"
        } else {
            "plaintext on a network address, allowed by server.allow_plaintext: TLS must \
             be terminated in front of this service (e.g. by a mesh sidecar)"
        }
    }
}

/// Whether a listener on `addr` may speak clear text: on loopback, or where the
/// operator says TLS is terminated in front of the service. The one rule for both
/// listeners.
fn clear_text_allowed(addr: SocketAddr, raw: &RawConfig) -> bool {
    addr.ip().is_loopback() || raw.server.allow_plaintext
}

/// JWTs, presigned URLs and credentials cross the gRPC port: a listener that other
/// hosts can reach speaks TLS, unless the operator says something else in front of it
/// does (a mesh sidecar), and only one of the two TLS set-ups owns the port.
/// The listeners' addresses, of which no two may take the same port: the second would
/// fail to bind when serving starts, after `--check-config` said OK. Port 0 (any free
/// port) never collides.
fn distinct_listeners(raw: &RawConfig) -> Result<(), Refusal> {
    let listeners = [
        ("listen", Some(raw.listen)),
        ("http.listen", raw.http.listen),
        ("metrics.listen", raw.metrics.listen),
    ];
    let set: Vec<(&str, SocketAddr)> = listeners
        .into_iter()
        .filter_map(|(key, addr)| Some((key, addr?)))
        .collect();
    for (i, (key, addr)) in set.iter().enumerate() {
        for (earlier, other) in &set[..i] {
            let overlap = addr.ip() == other.ip()
                || addr.ip().is_unspecified()
                || other.ip().is_unspecified();
            if addr.port() != 0 && addr.port() == other.port() && overlap {
                return Err((
                    key,
                    Problem::Mismatch(format!(
                        "{addr} takes the port of {earlier} ({other}); give each listener a \
                         port of its own"
                    )),
                ));
            }
        }
    }
    Ok(())
}

fn transport_security(raw: &RawConfig) -> Result<(), Refusal> {
    let mtls = raw.identity.mtls.is_some();
    let tls = raw.server.tls.is_some();
    if mtls && tls {
        return Err((
            "server.tls",
            Problem::Mismatch(
                "set together with identity.mtls, and both configure TLS on the gRPC port; \
                 identity.mtls already serves TLS (with client certificates): keep only one"
                    .into(),
            ),
        ));
    }
    if let Some(t) = &raw.server.tls
        && (t.reload_interval.is_zero() || t.handshake_timeout.is_zero())
    {
        return out_of_range(
            "server.tls",
            "reload_interval and handshake_timeout must be more than 0s",
        );
    }
    if let Some(m) = &raw.identity.mtls
        && (m.reload_interval.is_zero() || m.handshake_timeout.is_zero())
    {
        return out_of_range(
            "identity.mtls",
            "reload_interval and handshake_timeout must be more than 0s",
        );
    }
    if !mtls && !tls && !clear_text_allowed(raw.listen, raw) {
        return Err((
            "listen",
            Problem::Mismatch(format!(
                "{} is not a loopback address and no TLS is configured: bearer tokens, \
                 presigned URLs and credentials would cross the network in clear text. \
                 Configure [server.tls] (or [identity.mtls]), or set \
                 server.allow_plaintext = true where a mesh sidecar terminates TLS",
                raw.listen
            )),
        ));
    }
    Ok(())
}

fn limits(raw: &RawConfig) -> Result<crate::budget::Rate, Refusal> {
    let l = &raw.limits;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(positive(l.grants_per_second) && l.grants_burst.is_finite() && l.grants_burst >= 1.0) {
        return out_of_range(
            "limits.grants_per_second",
            "grants_per_second must be more than 0 and grants_burst at least 1",
        );
    }
    if !(positive(l.sts_misses_per_minute)
        && l.sts_misses_burst.is_finite()
        && l.sts_misses_burst >= 1.0)
    {
        return out_of_range(
            "limits.sts_misses_per_minute",
            "sts_misses_per_minute must be more than 0 and sts_misses_burst at least 1",
        );
    }
    if l.sts_max_pending == 0 {
        return out_of_range("limits.sts_max_pending", "must be at least 1");
    }
    Ok(crate::budget::Rate {
        per_second: l.grants_per_second,
        burst: l.grants_burst,
    })
}

fn upload_keys(raw: &RawConfig) -> Result<crate::upload::KeySources, Refusal> {
    let u = &raw.uploads;
    let inline = u
        .token_keys
        .iter()
        .map(|key| {
            crate::upload::decode_key(key.expose()).ok_or((
                "uploads.token_keys",
                Problem::OutOfRange(crate::upload::KEY_FORMAT),
            ))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::upload::KeySources {
        inline,
        files: u.token_key_files.clone(),
    })
}

/// `http.allowed_origins`, checked: exact origins as browsers send them. Used by the
/// gateway and by gRPC-Web.
fn origins(raw: &RawConfig) -> Result<Vec<String>, Refusal> {
    for origin in &raw.http.allowed_origins {
        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
            matches!(scheme, "http" | "https")
                && !host.is_empty()
                && !host.contains(['/', '?', '#', '@', '*', ' '])
        });
        if !valid {
            return Err((
                "http.allowed_origins",
                Problem::Mismatch(format!(
                    "'{origin}' is not an origin; write scheme://host[:port] as browsers send \
                     it, e.g. https://app.example.com (no path, no wildcard)"
                )),
            ));
        }
    }
    Ok(raw.http.allowed_origins.clone())
}

fn http(raw: &RawConfig) -> Result<Option<crate::gateway::Settings>, Refusal> {
    let h = &raw.http;
    let Some(listen) = h.listen else {
        return Ok(None);
    };
    // The gateway carries the same bearer tokens, links and credentials as the gRPC
    // port: off loopback it speaks TLS (with the gRPC port's server certificate, from
    // [server.tls] or [identity.mtls]) unless something in front does.
    if raw.server.tls.is_none() && raw.identity.mtls.is_none() && !clear_text_allowed(listen, raw) {
        return Err((
            "http.listen",
            Problem::Mismatch(format!(
                "{listen} is not a loopback address and no TLS is configured: \
                 cookies, tokens and presigned URLs would cross the network in clear text. \
                 Configure [server.tls] or [identity.mtls] (the gateway presents their \
                 server certificate), or set server.allow_plaintext = true where a proxy \
                 in front terminates TLS"
            )),
        ));
    }
    let cookie = &h.session_cookie;
    // RFC 6265's cookie-name is an RFC 7230 token.
    if cookie.is_empty()
        || !cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return out_of_range(
            "http.session_cookie",
            "must be a cookie name: letters, digits and !#$%&'*+-.^_`|~",
        );
    }
    if let Some(login) = &h.login_url {
        let absolute = login.starts_with("https://") || login.starts_with("http://");
        if !(absolute || login.starts_with('/')) || login.contains(['#', ' ']) {
            return out_of_range(
                "http.login_url",
                "must be an http(s) URL or an absolute path, without a fragment",
            );
        }
    }
    if h.link_ttl < Duration::from_secs(1) || h.link_ttl > raw.grants.max_ttl {
        return out_of_range("http.link_ttl", "must be between 1s and grants.max_ttl");
    }
    if h.header_read_timeout < Duration::from_secs(1)
        || h.header_read_timeout > Duration::from_secs(300)
    {
        return out_of_range("http.header_read_timeout", "must be between 1s and 5m");
    }
    if h.multipart_ttl < Duration::from_secs(1) || h.multipart_ttl > SIGV4_MAX {
        return out_of_range(
            "http.multipart_ttl",
            "must be between 1s and 7d (the rule's and grants.max_ttl cut it)",
        );
    }
    let upload_bucket = h
        .upload_bucket
        .as_ref()
        .map(|name| {
            name.parse().map_err(|source| {
                (
                    "http.upload_bucket",
                    Problem::Bucket {
                        name: name.clone(),
                        source,
                    },
                )
            })
        })
        .transpose()?;
    Ok(Some(crate::gateway::Settings {
        listen,
        allowed_origins: origins(raw)?,
        session_cookie: cookie.clone(),
        login_url: h.login_url.clone(),
        link_ttl: h.link_ttl,
        header_read_timeout: h.header_read_timeout,
        multipart_ttl: h.multipart_ttl,
        request_timeout: raw.server.request_timeout,
        upload_bucket,
    }))
}

fn storage(raw: &RawConfig) -> Result<StorageSettings, Refusal> {
    let s = &raw.storage;
    if s.call_timeout.is_zero() || s.call_timeout > MAX_STORE_TIMEOUT {
        return out_of_range(
            "storage.call_timeout",
            "must be more than 0s and at most 1h",
        );
    }
    let complete_timeout = match s.complete_timeout {
        None => s.call_timeout.max(DEFAULT_COMPLETE_TIMEOUT),
        Some(set) if set < s.call_timeout || set > MAX_STORE_TIMEOUT => {
            return out_of_range(
                "storage.complete_timeout",
                "must be at least storage.call_timeout and at most 1h",
            );
        }
        Some(set) => set,
    };
    if let Some(region) = &s.region {
        crate::sign::check_region(region).map_err(|e| ("storage.region", e.into()))?;
    }
    let endpoint = s
        .endpoint
        .as_deref()
        .map(|url| Endpoint::custom(url, s.force_path_style))
        .transpose()
        .map_err(|e| ("storage.endpoint", e.into()))?;
    let check_buckets = s
        .check_buckets
        .as_ref()
        .map(|names| {
            names
                .iter()
                .map(|name| {
                    name.parse().map_err(|source| {
                        (
                            "storage.check_buckets",
                            Problem::Bucket {
                                name: name.clone(),
                                source,
                            },
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(StorageSettings {
        region: s.region.clone(),
        endpoint,
        force_path_style: s.force_path_style,
        // From the environment, not the file: set by `Settings::from_toml`.
        credential_expiration: None,
        check_buckets,
        check_interval: s.check_interval,
        call_timeout: s.call_timeout,
        complete_timeout,
    })
}

/// `storage.complete_timeout` unless set (or `call_timeout`, when that is longer).
const DEFAULT_COMPLETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest `storage.call_timeout` or `complete_timeout` one may set: a store call
/// holds a task and a connection to the store while it runs.
const MAX_STORE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The host of `host[:port]` (an IPv6 host keeps its brackets).
fn host_of(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(at) if !authority[at..].contains(']') => &authority[..at],
        _ => authority,
    }
}

fn sts(raw: &RawConfig, storage: &StorageSettings) -> Result<Option<StsSettings>, Refusal> {
    let s = &raw.sts;
    if s.role_max_duration < STS_MIN_DURATION || s.role_max_duration > IAM_ROLE_MAX_DURATION {
        return out_of_range(
            "sts.role_max_duration",
            "must be between 15m and 12h, as IAM allows",
        );
    }
    if s.default_duration < STS_MIN_DURATION || s.default_duration > s.role_max_duration {
        return out_of_range(
            "sts.default_duration",
            "must be between 15m (STS's minimum) and sts.role_max_duration",
        );
    }
    if !(0.0..1.0).contains(&s.reuse_fraction) {
        return out_of_range("sts.reuse_fraction", "must be at least 0 and below 1");
    }
    if s.cache_max_entries == 0 {
        return out_of_range("sts.cache_max_entries", "must be at least 1");
    }
    if s.max_attempts == 0 || s.call_timeout.is_zero() {
        return out_of_range("sts", "max_attempts and call_timeout must be more than 0");
    }
    let partition: Partition = s
        .partition
        .parse()
        .map_err(|e| ("sts.partition", Problem::Policy(e)))?;
    let endpoint = s
        .endpoint
        .as_deref()
        .map(|url| Endpoint::custom(url, false).map(|e| e.url()))
        .transpose()
        .map_err(|e| ("sts.endpoint", e.into()))?;
    // STS answers with credentials: over plain http anyone on the path reads them (a
    // local emulator on loopback is the one exception).
    if let Some(url) = &endpoint
        && let Some(authority) = url.strip_prefix("http://")
        && !crate::core::text::is_loopback_host(host_of(authority))
    {
        return out_of_range(
            "sts.endpoint",
            "use https: STS answers with credentials (plain http only to a loopback address)",
        );
    }
    let Some(role_arn) = &s.role_arn else {
        return Ok(None);
    };
    if raw.grants.max_ttl < STS_MIN_DURATION {
        return out_of_range(
            "grants.max_ttl",
            "must be at least 15m while sts.role_arn turns AssumeScoped on: scoped \
             credentials are clamped to it and STS gives no session under 15m",
        );
    }
    let role_arn: RoleArn = role_arn.parse().map_err(|source| {
        (
            "sts.role_arn",
            Problem::RoleArn {
                value: role_arn.clone(),
                source,
            },
        )
    })?;
    if role_arn.partition() != partition {
        return Err((
            "sts.role_arn",
            Problem::Mismatch(format!(
                "is in partition '{}', but sts.partition is '{partition}'; set sts.partition \
                 to the role's",
                role_arn.partition()
            )),
        ));
    }
    let kms_key = s
        .kms_key_arn
        .as_deref()
        .map(str::parse::<KmsKeyArn>)
        .transpose()
        .map_err(|e| ("sts.kms_key_arn", Problem::Policy(e)))?;
    if let Some(key) = kms_key.as_ref().filter(|k| k.partition() != partition) {
        return Err((
            "sts.kms_key_arn",
            Problem::Mismatch(format!(
                "is in partition '{}', the role in '{partition}'; use a key of the role's \
                 partition",
                key.partition()
            )),
        ));
    }
    let storage_endpoint = s
        .storage_endpoint
        .as_deref()
        .map(|url| Endpoint::custom(url, storage.force_path_style))
        .transpose()
        .map_err(|e| ("sts.storage_endpoint", e.into()))?;
    Ok(Some(StsSettings {
        role_arn,
        partition,
        kms_key,
        storage_endpoint,
        broker: crate::sts::Settings {
            endpoint,
            cache_max_entries: s.cache_max_entries,
            reuse_fraction: s.reuse_fraction,
            reuse_min_remaining: s.reuse_min_remaining,
            call_timeout: s.call_timeout,
            max_attempts: s.max_attempts,
            source_identity: s.source_identity,
            session_tags: s.session_tags,
            miss_rate: crate::budget::Rate {
                per_second: raw.limits.sts_misses_per_minute / 60.0,
                burst: raw.limits.sts_misses_burst,
            },
            max_pending: raw.limits.sts_max_pending,
        },
        durations: crate::sts::Durations {
            default: s.default_duration,
            role_max: s.role_max_duration,
            role_chaining: s.role_chaining,
        },
    }))
}
