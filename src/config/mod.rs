//! Configuration, loaded once at start-up into validated [`Settings`] before anything
//! serves.
//!
//! Sources, later ones winning: built-in defaults, one TOML file, then
//! `STORAGE_GRANTS_*` environment variables (`__` separates nested keys:
//! `STORAGE_GRANTS_STORAGE__ENDPOINT` sets `storage.endpoint`), then command-line flags
//! (applied by `main`). Every setting has a safe default: loopback listen address,
//! short TTLs, no development tokens.
//!
//! - `raw`: the file's shape; strings live only there;
//! - `env`: the environment overrides;
//! - `settings`: every value parsed into its validated type, exactly once.
//!
//! The rules file is `rules`'s business.

mod env;
pub mod raw;
mod settings;

use std::path::{Path, PathBuf};

pub use env::ENV_PREFIX;
pub use settings::{GrantsSettings, Problem, Settings, StorageSettings, StsSettings};

use raw::RawConfig;

/// The AWS tools' variable for the expiry of credentials given in the environment.
const CREDENTIAL_EXPIRATION: &str = "AWS_CREDENTIAL_EXPIRATION";

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Malformed TOML or an unknown key.
    #[error("{path}: {at}: {}", with_hint(.message))]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where: line, column and the key on that line.
        at: Location,
        /// What TOML or the setting's type refused, without the values it quoted.
        message: String,
    },
    /// An environment override that does not fit.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but makes no sense; the value as quoted with what could
    /// break or hide a log line written as escapes.
    #[error(
        "{}: {field}: {}",
        path.display(),
        crate::core::text::escape_breaks(&source.to_string())
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The setting, e.g. `storage.endpoint`.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: Problem,
    },
}

/// A parse error, with how to write what it wanted: an environment override is read
/// as TOML, so a list is a TOML array; an address is an IP and a port.
fn with_hint(message: &str) -> String {
    let hint = if message.contains("expected a sequence") {
        "; write a TOML array, e.g. '[\"https://a.example\"]'"
    } else if message.contains("invalid socket address syntax") {
        "; write IP:PORT, e.g. 127.0.0.1:50051 (host names are not resolved)"
    } else {
        ""
    };
    format!("{message}{hint}")
}

use crate::core::toml_errors::{Location, without_values};
#[cfg(test)]
use crate::core::toml_errors::{key_of, without_odd_names};

impl Settings {
    /// Loads `path` (or only defaults when `None`), applies the environment in `env`,
    /// resolves relative paths and validates every value.
    ///
    /// # Errors
    /// [`Error::Read`] when the file cannot be read; [`Error::Parse`] with line and
    /// column for malformed TOML or unknown keys; [`Error::Env`] for an override that
    /// does not fit; [`Error::Invalid`] for values that parse but make no sense.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, Error> {
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

    /// Like [`Settings::load`], from TOML text already in memory.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_toml(
        text: &str,
        origin: &Path,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, Error> {
        let parse_err = |source: toml::de::Error| Error::Parse {
            path: origin.to_owned(),
            at: Location::of(text, source.span()),
            message: without_values(source.message().trim_end()),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let credential_expiration = env
            .iter()
            .find(|(k, _)| k == CREDENTIAL_EXPIRATION)
            .map(|(_, v)| env::rfc3339(v))
            .transpose()
            .map_err(|message| Error::Env {
                var: CREDENTIAL_EXPIRATION.into(),
                message,
            })?;
        // Parsing the file on its own first gives errors with the file's line numbers.
        let _: RawConfig = toml::from_str(text).map_err(parse_err)?;
        let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
        // Which variable set which key: a value refused later is told by its variable.
        let mut overridden: Vec<(String, String)> = Vec::new();
        for (var, value) in env.into_iter().filter(|(k, _)| env::is_override(k)) {
            env::apply(&mut table, &var, &value)?;
            overridden.push((env::key_of(&var), var.clone()));
            // Checked one variable at a time, so an error names the variable at fault.
            let _: RawConfig =
                table
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| Error::Env {
                        var: var.clone(),
                        message: with_hint(&without_values(e.to_string().trim_end())),
                    })?;
        }
        let mut http_keys: Vec<String> = table
            .get("http")
            .and_then(toml::Value::as_table)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        let mut raw: RawConfig = table.try_into().map_err(|e: toml::de::Error| Error::Env {
            var: "STORAGE_GRANTS_*".into(),
            message: without_values(e.to_string().trim_end()),
        })?;
        if raw.grants.rules_file.is_relative() {
            raw.grants.rules_file = base_dir.join(&raw.grants.rules_file);
        }
        raw.identity.resolve_paths(base_dir);
        for file in &mut raw.uploads.token_key_files {
            if file.is_relative() {
                *file = base_dir.join(&*file);
            }
        }
        raw.resolve_paths(base_dir);
        // `[http]` settings other than what gRPC-Web also reads are dead without a
        // listener: likely a forgotten `listen`.
        http_keys.retain(|k| k != "allowed_origins" || !raw.server.grpc_web);
        let mut settings = Settings::from_raw(raw).map_err(|(field, source)| {
            match overridden.iter().rev().find(|(key, _)| key == field) {
                Some((_, var)) => Error::Env {
                    var: var.clone(),
                    message: format!(
                        "{field}: {}",
                        crate::core::text::escape_breaks(&source.to_string())
                    ),
                },
                None => Error::Invalid {
                    path: origin.to_owned(),
                    field,
                    source,
                },
            }
        })?;
        settings.storage.credential_expiration = credential_expiration;
        if settings.http.is_none() && !http_keys.is_empty() {
            settings.warnings.push(format!(
                "[http] sets {} but no listen: the HTTP gateway is off; set http.listen \
                 (e.g. \"127.0.0.1:8080\") to serve it",
                http_keys.join(", ")
            ));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_override_that_does_not_fit_is_refused_without_its_value() {
        let token = "dev-secret-0123456789abc";
        let quoted = format!("\"{token}\"");
        let err = load(
            "",
            &[("STORAGE_GRANTS_IDENTITY__DEV_TOKENS", quoted.as_str())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("STORAGE_GRANTS_IDENTITY__DEV_TOKENS"), "{err}");
        assert!(!err.contains(token), "{err}");
        assert_eq!(
            without_values(r#"invalid type: string "a\"b", expected x; string "c""#),
            "invalid type: a string (not shown), expected x; a string (not shown)"
        );
    }

    #[test]
    fn a_number_where_a_token_goes_is_not_shown_and_number_types_are_named_in_words() {
        let err = load(
            "[identity]\ndev_mode = true\n[[identity.dev_tokens]]\ntoken = 123456789012345678\ncaller = \"dev:a\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("123456789012345678"), "{err}");
        assert!(err.contains("a whole number (not shown)"), "{err}");
        let err = load("[server]\nmax_connections = \"100\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected a whole number of 0 or more"),
            "{err}"
        );
        assert!(!err.contains("usize"), "{err}");
        assert_eq!(
            without_values("invalid type: floating point `1.5`, expected u640 or u16"),
            "invalid type: a decimal number (not shown), expected u640 or u16"
        );
        assert_eq!(
            without_values("expected u16"),
            "expected a whole number from 0 to 65535"
        );
        assert_eq!(
            without_values("invalid type: integer `99999999999999999999` as i128, expected u64"),
            "invalid type: a whole number (not shown), expected a whole number of 0 or more"
        );
        assert_eq!(
            without_values("invalid type: sequence, expected a string"),
            "invalid type: a list, expected a string"
        );
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, Error> {
        Settings::from_toml(
            text,
            Path::new("test.toml"),
            Path::new("/etc/sg"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    /// Loads `text`, which must be refused as an invalid `field`; the refusal.
    fn refused(text: &str, field: &str) -> Error {
        let err = load(text, &[]).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field: f, .. } if *f == field),
            "{text}: {err}"
        );
        err
    }

    #[test]
    fn a_refused_value_is_quoted_with_what_it_hides_written_out() {
        let err = load("[storage]\ncheck_buckets = [\"de\\u200Bmo\\nx\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.check_buckets"), "{err}");
        assert!(err.contains("de\\u{200b}mo\\nx"), "{err}");
        assert!(!err.contains(['\u{200B}', '\n']), "{err}");
    }

    #[test]
    fn a_value_an_override_set_is_refused_naming_the_variable() {
        let err = load(
            "listen = \"127.0.0.1:9000\"\n",
            &[("STORAGE_GRANTS_METRICS__LISTEN", "\"127.0.0.1:9000\"")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("environment variable STORAGE_GRANTS_METRICS__LISTEN: metrics.listen:"),
            "{err}"
        );
        assert!(!err.contains("test.toml"), "{err}");
    }

    #[test]
    fn two_listeners_on_one_port_are_refused() {
        for (text, key) in [
            (
                "listen = \"127.0.0.1:9000\"\n[http]\nlisten = \"127.0.0.1:9000\"\n",
                "http.listen",
            ),
            (
                "[http]\nlisten = \"0.0.0.0:8080\"\n[metrics]\nlisten = \"127.0.0.1:8080\"\n",
                "metrics.listen",
            ),
            (
                "listen = \"[::]:9000\"\n[server]\nallow_plaintext = true\n\
                 [metrics]\nlisten = \"10.0.0.1:9000\"\n",
                "metrics.listen",
            ),
        ] {
            let err = load(text, &[]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{key}:")) && err.contains("a port of its own"),
                "{text}: {err}"
            );
        }
        // Other ports, other addresses, or any free port: accepted.
        for text in [
            "listen = \"127.0.0.1:9000\"\n[http]\nlisten = \"127.0.0.1:9001\"\n",
            "listen = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.2:9000\"\n",
            "listen = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        ] {
            load(text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn empty_file_gives_safe_defaults() {
        let c = load("", &[]).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert!(!c.identity.dev_mode);
        assert!(c.identity.dev_tokens.is_empty());
        assert_eq!(c.grants.limits.max_ttl, Duration::from_secs(3600));
        assert_eq!(c.grants.rules_file, Path::new("/etc/sg/rules.toml"));
    }

    #[test]
    fn a_malformed_line_is_located_without_its_value() {
        let token = "dev-secret-0123456789abc";
        // An unterminated string: TOML's own message would print the line.
        let text = format!(
            "[identity]\ndev_mode = true\n[[identity.dev_tokens]]\ntoken = \"{token}\ncaller = \"dev:a\"\n"
        );
        let msg = load(&text, &[]).unwrap_err().to_string();
        assert!(msg.starts_with("test.toml: line 4, column "), "{msg}");
        assert!(msg.contains("(`token`)"), "{msg}");
        assert!(!msg.contains("dev-secret"), "{msg}");
        // A value of the wrong type: serde's message quotes it.
        let text = format!("[grants]\nmax_ttl = [\"{token}\"]\n");
        let msg = load(&text, &[]).unwrap_err().to_string();
        assert!(msg.contains("line 2, column 11 (`max_ttl`)"), "{msg}");
        assert!(!msg.contains("dev-secret"), "{msg}");
        let text = format!(
            "[storage]\nregion = 7\n[[identity.dev_tokens]]\ntoken = \"{token}\"\ncaller = 5\n"
        );
        let msg = load(&text, &[]).unwrap_err().to_string();
        assert!(!msg.contains("dev-secret"), "{msg}");
        assert_eq!(
            key_of("  [[identity.dev_tokens]] "),
            Some("[[identity.dev_tokens]]".into())
        );
        assert_eq!(key_of("\"quoted key\" = 1"), None);
        // A token written where a key goes is never named, in the location or in
        // serde's "unknown field".
        for text in [
            format!(
                "[identity]\ndev_mode = true\n[[identity.dev_tokens]]\n\"{token}\" = \"dev:x\"\n"
            ),
            format!("[{token}]\nx = 1\n"),
            format!("{token} = 1\n"),
            format!("[grants]\n{token} = \"1h\"\n"),
        ] {
            let msg = load(&text, &[]).unwrap_err().to_string();
            assert!(!msg.contains("secret"), "{text}: {msg}");
        }
        // A backquote inside the pasted token does not end the name early.
        let text = format!("[grants]\n\"x`{token}\" = 1\n");
        let msg = load(&text, &[]).unwrap_err().to_string();
        assert!(!msg.contains("secret"), "{msg}");
        assert_eq!(
            without_odd_names("unknown field `a`b-secret`, expected `x` or `y`"),
            "unknown field `(not shown)`, expected `x` or `y`"
        );
        let msg = load("[grants]\nmax_tll = \"1h\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("unknown field `max_tll`") && msg.contains("`max_ttl`"),
            "{msg}"
        );
        assert_eq!(key_of("no equals sign here"), None);
        assert_eq!(
            Location::of("a = 1\nb", Some(7..8)).to_string(),
            "line 2, column 2"
        );
        assert!(
            Location::of("é = \"", Some(99..100))
                .to_string()
                .starts_with("line 1,")
        );
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
        assert_eq!(
            c.storage.endpoint.map(|e| e.url()).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert!(c.storage.force_path_style);
        assert_eq!(c.grants.limits.max_ttl, Duration::from_secs(1800));
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
    fn network_listener_without_tls_is_refused_unless_plaintext_is_allowed() {
        let err = load("listen = \"0.0.0.0:50051\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("server.allow_plaintext") && msg.contains("[server.tls]"),
            "{msg}"
        );
        let allowed = load(
            "listen = \"0.0.0.0:50051\"\n[server]\nallow_plaintext = true\n",
            &[],
        )
        .unwrap();
        assert!(
            allowed.transport_security().contains("allow_plaintext"),
            "{}",
            allowed.transport_security()
        );
        let tls = load(
            "listen = \"[::]:50051\"\n[server.tls]\ncert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n",
            &[],
        )
        .unwrap();
        let files = tls.server.tls.as_ref().expect("server.tls");
        assert_eq!(files.cert_file, Path::new("/etc/sg/tls.crt"));
        assert!(tls.transport_security().contains("server.tls"));
        assert!(
            load("", &[])
                .unwrap()
                .transport_security()
                .contains("loopback")
        );
        // The environment can open the listener too, and is checked the same way.
        assert!(load("", &[("STORAGE_GRANTS_LISTEN", "10.0.0.1:50051")]).is_err());
    }

    #[test]
    fn server_tls_and_mtls_cannot_both_own_the_port() {
        let text = "[server.tls]\ncert_file = \"a\"\nkey_file = \"b\"\n\
                    [identity.mtls]\nca_file = \"c\"\ncert_file = \"a\"\nkey_file = \"b\"\n\
                    trust_domains = [\"example.org\"]\n";
        let err = load(text, &[]).unwrap_err();
        assert!(err.to_string().contains("identity.mtls"), "{err}");
    }

    #[test]
    fn audit_file_is_relative_to_the_config() {
        let c = load("[audit]\nfile = \"audit.jsonl\"\n", &[]).unwrap();
        assert_eq!(
            c.audit.file.as_deref(),
            Some(Path::new("/etc/sg/audit.jsonl"))
        );
    }

    #[test]
    fn ttl_limits_are_checked() {
        assert!(load("[grants]\nmax_ttl = \"8d\"\n", &[]).is_err());
        assert!(load("[grants]\ndefault_ttl = \"2h\"\nmax_ttl = \"1h\"\n", &[]).is_err());
        assert!(load("[grants]\ndefault_ttl = 60\nmax_ttl = \"1h\"\n", &[]).is_ok());
    }

    #[test]
    fn assume_scoped_needs_a_grants_ceiling_of_at_least_15m() {
        // AssumeScoped is clamped to grants.max_ttl, and STS gives nothing shorter
        // than 15 minutes: a lower ceiling could only be exceeded.
        let sts = "[sts]\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n";
        let text = format!("[grants]\ndefault_ttl = \"1m\"\nmax_ttl = \"10m\"\n{sts}");
        let err = load(&text, &[]).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Invalid {
                    field: "grants.max_ttl",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("15m"), "{err}");
        // Without STS a short ceiling is fine.
        assert!(load("[grants]\ndefault_ttl = \"1m\"\nmax_ttl = \"10m\"\n", &[]).is_ok());
    }

    #[test]
    fn aws_credential_expiration_is_read_once() {
        let c = load("", &[("AWS_CREDENTIAL_EXPIRATION", "2030-01-02T03:04:05Z")]).unwrap();
        assert_eq!(
            c.storage.credential_expiration,
            Some(std::time::UNIX_EPOCH + Duration::from_secs(1_893_553_445))
        );
        assert_eq!(load("", &[]).unwrap().storage.credential_expiration, None);
        let err = load("", &[("AWS_CREDENTIAL_EXPIRATION", "tomorrow")]).unwrap_err();
        assert!(
            err.to_string().contains("AWS_CREDENTIAL_EXPIRATION"),
            "{err}"
        );
        let c = load("[grants]\nmax_ttl_without_expiry = \"2m\"\n", &[]).unwrap();
        assert_eq!(
            c.grants.limits.max_ttl_without_expiry,
            Duration::from_secs(120)
        );
        assert_eq!(
            load("", &[]).unwrap().grants.limits.max_ttl_without_expiry,
            Duration::from_secs(15 * 60)
        );
    }

    #[test]
    fn urls_are_redacted_in_the_printed_config_and_in_errors() {
        let jwt = |url: &str| {
            format!(
                "[identity]\norder = [\"jwt\"]\n[identity.jwt]\nissuer = \"https://i.example\"\n\
                 audiences = [\"sg\"]\njwks_url = \"{url}\"\n"
            )
        };
        let printed = format!(
            "{:?}",
            load(&jwt("https://user:s3cret@i.example/jwks?token=tok3n"), &[]).unwrap()
        );
        assert!(
            !printed.contains("s3cret") && !printed.contains("tok3n"),
            "{printed}"
        );
        assert!(printed.contains("i.example/jwks"), "{printed}");
        let err = load(&jwt("http://user:s3cret@i.example/jwks?token=tok3n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("jwks_url"), "{err}");
        assert!(!err.contains("s3cret") && !err.contains("tok3n"), "{err}");
    }

    #[test]
    fn plain_http_sts_endpoint_off_loopback_is_refused() {
        // STS answers with credentials: over plain http anyone on the path reads them.
        let sts = |endpoint: &str| {
            format!(
                "[sts]\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\nendpoint = \"{endpoint}\"\n"
            )
        };
        let err = load(&sts("http://sts.internal:8080"), &[]).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Invalid {
                    field: "sts.endpoint",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("https"), "{err}");
        for ok in [
            "http://127.0.0.1:5000",
            "http://localhost:5000",
            "https://sts.internal",
        ] {
            assert!(load(&sts(ok), &[]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn strings_are_parsed_into_their_types_once() {
        let c = load(
            "[storage]\nregion = \"eu-west-1\"\nendpoint = \"HTTP://LocalHost:9000/\"\n\
             check_buckets = [\"demo\"]\n[sts]\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.storage.endpoint.map(|e| e.url()).as_deref(),
            Some("http://localhost:9000")
        );
        assert_eq!(c.storage.check_buckets.unwrap()[0].as_str(), "demo");
        let sts = c.sts.expect("a role makes AssumeScoped available");
        assert_eq!(sts.role_arn.as_str(), "arn:aws:iam::123456789012:role/r");
    }

    #[test]
    fn a_gateway_off_loopback_needs_tls_or_an_explicit_plaintext() {
        let err = load("[http]\nlisten = \"0.0.0.0:8080\"\n", &[]).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Invalid {
                    field: "http.listen",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("server.tls") && err.to_string().contains("identity.mtls"),
            "{err}"
        );
        // mTLS owns the gRPC port's TLS; the gateway presents its server certificate.
        let mtls = load(
            "listen = \"0.0.0.0:50051\"\n[identity.mtls]\nca_file = \"/ca.crt\"\n\
             cert_file = \"/tls.crt\"\nkey_file = \"/tls.key\"\ntrust_domains = [\"example.org\"]\n\
             [http]\nlisten = \"0.0.0.0:8080\"\n",
            &[],
        );
        assert!(mtls.is_ok(), "{:?}", mtls.err());
        let ok = load(
            "listen = \"127.0.0.1:50051\"\n[server]\nallow_plaintext = true\n[http]\nlisten = \"0.0.0.0:8080\"\n",
            &[],
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
        assert!(load("[http]\nlisten = \"127.0.0.1:8080\"\n", &[]).is_ok());
    }

    #[test]
    fn the_gateways_header_timeout_defaults_to_10s_and_stays_within_1s_to_5m() {
        let http = |extra: &str| {
            load(
                &format!("[http]\nlisten = \"127.0.0.1:8080\"\n{extra}"),
                &[],
            )
        };
        let default = http("").unwrap().http.expect("a gateway");
        assert_eq!(default.header_read_timeout, Duration::from_secs(10));
        let set = http("header_read_timeout = \"30s\"\n")
            .unwrap()
            .http
            .unwrap();
        assert_eq!(set.header_read_timeout, Duration::from_secs(30));
        for bad in ["500ms", "6m"] {
            let err = http(&format!("header_read_timeout = \"{bad}\"\n")).unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Invalid {
                        field: "http.header_read_timeout",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        assert_eq!(default.multipart_ttl, Duration::from_secs(3600));
        for bad in ["500ms", "8d"] {
            let err = http(&format!("multipart_ttl = \"{bad}\"\n")).unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Invalid {
                        field: "http.multipart_ttl",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_connection_timeout_defaults_to_10s_and_stays_within_1s_to_5m() {
        assert_eq!(
            load("", &[]).unwrap().server.connection_timeout,
            Duration::from_secs(10)
        );
        let set = load("[server]\nconnection_timeout = \"30s\"\n", &[]).unwrap();
        assert_eq!(set.server.connection_timeout, Duration::from_secs(30));
        for bad in ["0s", "6m"] {
            refused(
                &format!("[server]\nconnection_timeout = \"{bad}\"\n"),
                "server.connection_timeout",
            );
        }
    }

    #[test]
    fn connections_have_no_age_limit_unless_one_within_1s_to_7d_is_set() {
        assert_eq!(load("", &[]).unwrap().server.max_connection_age, None);
        let set = load("[server]\nmax_connection_age = \"30m\"\n", &[]).unwrap();
        assert_eq!(
            set.server.max_connection_age,
            Some(Duration::from_secs(1800))
        );
        let env = load(
            "",
            &[("STORAGE_GRANTS_SERVER__MAX_CONNECTION_AGE", "\"5m\"")],
        )
        .unwrap();
        assert_eq!(
            env.server.max_connection_age,
            Some(Duration::from_secs(300))
        );
        for bad in ["0s", "8d"] {
            let err = refused(
                &format!("[server]\nmax_connection_age = \"{bad}\"\n"),
                "server.max_connection_age",
            );
            assert!(err.to_string().contains("between 1s and 7d"), "{err}");
        }
        let err = load("[server]\nmax_connection_age = \"soon\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }

    #[test]
    fn serving_threads_are_placed_by_default_and_held_or_not_when_told() {
        assert_eq!(load("", &[]).unwrap().server.pin_cores, None);
        let set = load("[server]\npin_cores = true\n", &[]).unwrap();
        assert_eq!(set.server.pin_cores, Some(true));
        let env = load("", &[("STORAGE_GRANTS_SERVER__PIN_CORES", "false")]).unwrap();
        assert_eq!(env.server.pin_cores, Some(false));
        let err = load("[server]\npin_cores = \"auto\"\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("pin_cores") && err.to_string().contains("bool"),
            "{err}"
        );
    }

    #[test]
    fn a_completion_has_10m_or_call_timeout_by_default_and_from_call_timeout_to_1h() {
        let storage = load("", &[]).unwrap().storage;
        assert_eq!(storage.complete_timeout, Duration::from_secs(600));
        let set = load("[storage]\ncomplete_timeout = \"30m\"\n", &[]).unwrap();
        assert_eq!(set.storage.complete_timeout, Duration::from_secs(1800));
        for bad in [
            "complete_timeout = \"2s\"",
            "complete_timeout = \"2h\"",
            "call_timeout = \"20s\"\ncomplete_timeout = \"10s\"",
        ] {
            let err = refused(&format!("[storage]\n{bad}\n"), "storage.complete_timeout");
            assert!(err.to_string().contains("at most 1h"), "{err}");
        }
        // Unset, it is never under call_timeout: a config that set only a long
        // call_timeout (as one did for slow completions) still loads.
        for (call, complete) in [("11m", 660), ("1h", 3600)] {
            let set = load(&format!("[storage]\ncall_timeout = \"{call}\"\n"), &[]).unwrap();
            assert_eq!(set.storage.complete_timeout, Duration::from_secs(complete));
        }
        // A call to the store is bounded too.
        for bad in ["0s", "61m", "400d"] {
            let err = refused(
                &format!("[storage]\ncall_timeout = \"{bad}\"\n"),
                "storage.call_timeout",
            );
            assert!(err.to_string().contains("at most 1h"), "{err}");
        }
    }

    #[test]
    fn keepalive_defaults_to_probes_after_60s_answered_within_20s() {
        let server = load("", &[]).unwrap().server;
        assert_eq!(server.keepalive_interval, Duration::from_secs(60));
        assert_eq!(server.keepalive_timeout, Duration::from_secs(20));
        let set = load(
            "[server]\nkeepalive_interval = \"2h\"\nkeepalive_timeout = \"1s\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(set.server.keepalive_interval, Duration::from_secs(7200));
        assert_eq!(set.server.keepalive_timeout, Duration::from_secs(1));
        for (text, field) in [
            ("keepalive_interval = \"0s\"", "server.keepalive_interval"),
            ("keepalive_interval = \"3h\"", "server.keepalive_interval"),
            ("keepalive_timeout = \"500ms\"", "server.keepalive_timeout"),
            ("keepalive_timeout = \"6m\"", "server.keepalive_timeout"),
        ] {
            refused(&format!("[server]\n{text}\n"), field);
        }
    }

    #[test]
    fn connection_caps_default_to_4096_and_1024_from_one_address_and_take_1_to_a_million() {
        let server = load("", &[]).unwrap().server;
        assert_eq!(
            (server.max_connections, server.max_connections_per_peer),
            (4096, 1024)
        );
        for key in ["max_connections", "max_connections_per_peer"] {
            for ok in [1, 1_000_000] {
                let text = format!("[server]\n{key} = {ok}\n");
                let server = load(&text, &[]).unwrap().server;
                let got = match key {
                    "max_connections" => server.max_connections,
                    _ => server.max_connections_per_peer,
                };
                assert_eq!(got, ok, "{key}");
            }
            for bad in ["0", "1000001"] {
                let err = refused(
                    &format!("[server]\n{key} = {bad}\n"),
                    &format!("server.{key}"),
                );
                assert!(err.to_string().contains("between 1 and 1000000"), "{err}");
            }
        }
    }

    #[test]
    fn each_bad_string_names_its_setting() {
        for (text, field) in [
            ("[storage]\nendpoint = \"ftp://x\"\n", "storage.endpoint"),
            ("[storage]\nregion = \"US East\"\n", "storage.region"),
            (
                "[storage]\ncheck_buckets = [\"No_Such\"]\n",
                "storage.check_buckets",
            ),
            (
                "[sts]\nrole_arn = \"arn:aws:iam::1:role/r\"\n",
                "sts.role_arn",
            ),
            ("[sts]\npartition = \"moon\"\n", "sts.partition"),
            (
                "[sts]\nrole_arn = \"arn:aws-cn:iam::123456789012:role/r\"\n",
                "sts.role_arn",
            ),
            (
                "[sts]\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\nkms_key_arn = \"alias/x\"\n",
                "sts.kms_key_arn",
            ),
        ] {
            let err = refused(text, field);
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
