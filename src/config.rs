//! Typed configuration, loaded once at start-up and validated before anything serves.
//!
//! Sources, later ones winning: built-in defaults, one TOML file, then
//! `STORAGE_GRANTS_*` environment variables (`__` separates nested keys:
//! `STORAGE_GRANTS_STORAGE__ENDPOINT` sets `storage.endpoint`), then command-line flags
//! (applied by `main`). Every setting has a safe default: loopback listen address,
//! short TTLs, no development tokens.
//!
//! It owns parsing and validation of the file; the rules file is `rules`'s business.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "STORAGE_GRANTS_";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
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
    #[serde(with = "duration")]
    pub check_interval: Duration,
    /// Timeout of each call to the store or to the credential chain.
    #[serde(with = "duration")]
    pub call_timeout: Duration,
}

/// Limits that apply to every grant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrantsConfig {
    /// TTL of a grant whose request names none.
    #[serde(with = "duration")]
    pub default_ttl: Duration,
    /// Ceiling on any grant's TTL, whatever the rules say.
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// The rules file; a relative path is relative to the config file's directory.
    pub rules_file: PathBuf,
    /// How often the rules file is checked for changes (it also reloads on SIGHUP).
    #[serde(with = "duration")]
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
    #[serde(with = "duration")]
    pub default_duration: Duration,
    /// The role's maximum session duration (IAM's `MaxSessionDuration`, 1h to 12h).
    #[serde(with = "duration")]
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
    #[serde(with = "duration")]
    pub reuse_min_remaining: Duration,
    /// Bound on one AssumeRole, retries included.
    #[serde(with = "duration")]
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
        Self {
            role_arn: None,
            endpoint: None,
            partition: "aws".into(),
            default_duration: Duration::from_secs(3600),
            role_max_duration: Duration::from_secs(3600),
            role_chaining: None,
            kms_key_arn: None,
            storage_endpoint: None,
            cache_max_entries: 10_000,
            reuse_fraction: 0.5,
            reuse_min_remaining: Duration::from_secs(300),
            call_timeout: Duration::from_secs(5),
            max_attempts: 3,
            source_identity: true,
            session_tags: false,
        }
    }
}

/// Transport limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Upper bound on any one call, whatever deadline the client sends.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// In-flight calls per connection before new ones are shed (RESOURCE_EXHAUSTED).
    pub concurrency_limit_per_connection: usize,
    /// How long shutdown waits for in-flight calls to finish.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
}

// === defaults ===

impl Default for Config {
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
        }
    }
}

impl Default for GrantsConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(5 * 60),
            max_ttl: Duration::from_secs(3600),
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
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

// === errors ===

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

// === loading ===

impl Config {
    /// Loads `path` (or only defaults when `None`), applies the environment in `env`,
    /// resolves the rules path and validates the result.
    ///
    /// # Errors
    /// [`Error::Read`] when the file cannot be read; [`Error::Parse`] with line and
    /// column for malformed TOML or unknown keys; [`Error::Env`] for an override that
    /// does not fit; [`Error::Invalid`] for values that parse but make no sense.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| Error::Read {
                    path: p.to_owned(),
                    source,
                })?,
                p.to_owned(),
            ),
            None => (String::new(), PathBuf::from("<defaults>")),
        };
        let base_dir = path
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_default();
        Self::from_toml(&text, &origin, &base_dir, env)
    }

    /// Like [`Config::load`], from TOML text already in memory.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(
        text: &str,
        origin: &Path,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let parse_err = |e: toml::de::Error| Error::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        };
        // Parsing the file on its own first gives errors with the file's line numbers.
        let _: Config = toml::from_str(text).map_err(parse_err)?;
        let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
        // The config path itself is read by `main`, not a setting.
        for (var, value) in env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != "STORAGE_GRANTS_CONFIG")
        {
            apply_env(&mut table, &var, &value)?;
            // Checked one variable at a time, so an error names the variable at fault.
            let _: Config = table
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| Error::Env {
                    var: var.clone(),
                    message: e.to_string().trim_end().to_owned(),
                })?;
        }
        let mut config: Config = table.try_into().map_err(|e: toml::de::Error| Error::Env {
            var: "STORAGE_GRANTS_*".into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if config.grants.rules_file.is_relative() {
            config.grants.rules_file = base_dir.join(&config.grants.rules_file);
        }
        config.identity.resolve_paths(base_dir);
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<(), Error> {
        let invalid = |field, message: &str| {
            Err(Error::Invalid {
                path: origin.to_owned(),
                field,
                message: message.to_owned(),
            })
        };
        let g = &self.grants;
        if g.max_ttl < Duration::from_secs(1) {
            return invalid("grants.max_ttl", "must be at least 1s");
        }
        if g.max_ttl > crate::expiry::SIGV4_MAX {
            return invalid("grants.max_ttl", "must be at most 7d (SigV4's limit)");
        }
        if g.default_ttl < Duration::from_secs(1) || g.default_ttl > g.max_ttl {
            return invalid(
                "grants.default_ttl",
                "must be between 1s and grants.max_ttl",
            );
        }
        self.identity.validate().map_err(|e| Error::Invalid {
            path: origin.to_owned(),
            field: e.field,
            message: e.message,
        })?;
        if g.rules_reload_interval.is_zero() {
            return invalid("grants.rules_reload_interval", "must be more than 0s");
        }
        if self.server.request_timeout.is_zero() {
            return invalid("server.request_timeout", "must be more than 0s");
        }
        if self.server.concurrency_limit_per_connection == 0 {
            return invalid(
                "server.concurrency_limit_per_connection",
                "must be at least 1",
            );
        }
        let sts = &self.sts;
        let fifteen_minutes = Duration::from_secs(900);
        let twelve_hours = Duration::from_secs(12 * 3600);
        if sts.role_max_duration < fifteen_minutes || sts.role_max_duration > twelve_hours {
            return invalid(
                "sts.role_max_duration",
                "must be between 15m and 12h, as IAM allows",
            );
        }
        if sts.default_duration < fifteen_minutes || sts.default_duration > sts.role_max_duration {
            return invalid(
                "sts.default_duration",
                "must be between 15m (STS's minimum) and sts.role_max_duration",
            );
        }
        if !(0.0..1.0).contains(&sts.reuse_fraction) {
            return invalid("sts.reuse_fraction", "must be at least 0 and below 1");
        }
        if sts.cache_max_entries == 0 {
            return invalid("sts.cache_max_entries", "must be at least 1");
        }
        if sts.max_attempts == 0 || sts.call_timeout.is_zero() {
            return invalid("sts", "max_attempts and call_timeout must be more than 0");
        }
        if self.storage.call_timeout.is_zero() {
            return invalid("storage.call_timeout", "must be more than 0s");
        }
        Ok(())
    }
}

/// Sets the key that `var` names (`STORAGE_GRANTS_A__B` is `a.b`) in `table`. The value
/// is read as a TOML value when it parses as one (numbers, booleans, arrays), else as
/// a string.
fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), Error> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(Error::Env {
            var: var.to_owned(),
            message: "malformed name; use STORAGE_GRANTS_SECTION__KEY".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().expect("path has at least one element");
    let mut node = table;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| Error::Env {
            var: var.to_owned(),
            message: format!("'{key}' is not a section"),
        })?;
    }
    node.insert(last.clone(), parsed);
    Ok(())
}

/// Parses durations written as `90s`, `15m`, `1h`, `7d`, `500ms`, or a bare number
/// of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; write e.g. 90s, 15m, 1h or 7d"))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("'{s}' is too long"))
    };
    match unit.trim() {
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "ms" => Ok(Duration::from_millis(n)),
        other => Err(format!(
            "'{other}' is not a duration unit; use ms, s, m, h or d"
        )),
    }
}

/// Serde adapter for durations in config and rules files.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    /// Deserializes a duration from a string (`15m`) or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(s) => super::parse_duration(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, Error> {
        Config::from_toml(
            text,
            Path::new("test.toml"),
            Path::new("/etc/sg"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn empty_file_gives_safe_defaults() {
        let c = load("", &[]).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert!(!c.identity.dev_mode);
        assert!(c.identity.dev_tokens.is_empty());
        assert_eq!(c.grants.max_ttl, Duration::from_secs(3600));
        assert_eq!(c.grants.rules_file, Path::new("/etc/sg/rules.toml"));
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let err = load(
            "listen = \"127.0.0.1:1\"\n[grants]\nmax_tll = \"1h\"\n",
            &[],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("test.toml"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("max_tll"), "{msg}");
    }

    #[test]
    fn env_overrides_the_file() {
        let c = load(
            "[storage]\nendpoint = \"http://a:1\"\n",
            &[
                ("STORAGE_GRANTS_STORAGE__ENDPOINT", "http://127.0.0.1:9000"),
                ("STORAGE_GRANTS_STORAGE__FORCE_PATH_STYLE", "true"),
                ("STORAGE_GRANTS_GRANTS__MAX_TTL", "30m"),
                ("STORAGE_GRANTS_LISTEN", "127.0.0.1:7000"),
                ("OTHER", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.storage.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(c.storage.force_path_style);
        assert_eq!(c.grants.max_ttl, Duration::from_secs(1800));
        assert_eq!(c.listen.port(), 7000);
    }

    #[test]
    fn bad_env_override_names_the_variable() {
        let err = load("", &[("STORAGE_GRANTS_LISTEN", "nowhere")]).unwrap_err();
        assert!(err.to_string().contains("STORAGE_GRANTS_LISTEN"), "{err}");
        let err = load("", &[("STORAGE_GRANTS_GRANTS__MAX_TLL", "1h")]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("STORAGE_GRANTS_GRANTS__MAX_TLL") && msg.contains("max_tll"),
            "{msg}"
        );
    }

    #[test]
    fn dev_tokens_need_dev_mode() {
        let text = "[[identity.dev_tokens]]\ntoken = \"0123456789abcdef\"\ncaller = \"dev:a\"\n";
        let err = load(text, &[]).unwrap_err();
        assert!(err.to_string().contains("dev_mode"), "{err}");
        let ok = load(&format!("[identity]\ndev_mode = true\n{text}"), &[]).unwrap();
        assert_eq!(ok.identity.dev_tokens.len(), 1);
    }

    #[test]
    fn printed_config_redacts_tokens() {
        let text = "[identity]\ndev_mode = true\n[[identity.dev_tokens]]\ntoken = \"supersecret-token-1\"\ncaller = \"dev:a\"\n";
        let printed = format!("{:?}", load(text, &[]).unwrap());
        assert!(!printed.contains("supersecret"), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
    }

    #[test]
    fn ttl_limits_are_checked() {
        assert!(load("[grants]\nmax_ttl = \"8d\"\n", &[]).is_err());
        assert!(load("[grants]\ndefault_ttl = \"2h\"\nmax_ttl = \"1h\"\n", &[]).is_err());
        assert!(load("[grants]\ndefault_ttl = 60\nmax_ttl = \"1h\"\n", &[]).is_ok());
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
