//! `STORAGE_GRANTS_*` environment overrides, applied to the file's TOML table before
//! it is read into [`super::raw::RawConfig`].

use super::Error;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "STORAGE_GRANTS_";

/// Whether `var` is an override: not the config path (read by `main`), not the token
/// of the client modes (`credential-process`, `credentials-proxy`), which a shell or a
/// pod shared with a sidecar may well hold, and not a Kubernetes service link.
pub(super) fn is_override(var: &str) -> bool {
    var.strip_prefix(ENV_PREFIX)
        .is_some_and(|rest| !matches!(rest, "CONFIG" | "TOKEN") && !is_service_link(rest))
}

/// Whether `rest` (a variable's name after `STORAGE_GRANTS_`) has the shape of the
/// variables Kubernetes puts in every pod for every Service of its namespace
/// ("service links"): `{SERVICE}_SERVICE_HOST`, `{SERVICE}_SERVICE_PORT[_{NAME}]`,
/// `{SERVICE}_PORT[_{N}_{PROTOCOL}[_{FIELD}]]`. A Service named `storage-grants…` makes
/// them start with this prefix; read as overrides, they would stop the service at
/// start (no such key), in this release's pods and in every other pod of the
/// namespace. No override has that shape: keys below the top level take `__`, and no
/// top-level key ends in `SERVICE_HOST`, `SERVICE_PORT…` or `PORT…`.
fn is_service_link(rest: &str) -> bool {
    if rest.contains("__") {
        return false;
    }
    let segments: Vec<&str> = rest.split('_').collect();
    let at = |i: usize| segments.get(i).copied();
    (0..segments.len()).any(|i| match at(i) {
        Some("SERVICE") => {
            (at(i + 1) == Some("HOST") && i + 2 == segments.len()) || at(i + 1) == Some("PORT")
        }
        Some("PORT") => {
            i + 1 == segments.len()
                || (at(i + 1)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    && matches!(at(i + 2), Some("TCP" | "UDP" | "SCTP")))
        }
        _ => false,
    })
}

/// The key `var` names, section by section (`STORAGE_GRANTS_A__B` is `a`, `b`).
fn key_path(var: &str) -> Vec<String> {
    var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The key `var` names, as a setting is named (`metrics.listen`).
pub(super) fn key_of(var: &str) -> String {
    key_path(var).join(".")
}

/// Sets the key that `var` names (`STORAGE_GRANTS_A__B` is `a.b`) in `table`. The value
/// is read as a TOML value when it parses as one (numbers, booleans, arrays), else as
/// a string.
pub(super) fn apply(table: &mut toml::Table, var: &str, value: &str) -> Result<(), Error> {
    let path = key_path(var);
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

/// An RFC 3339 time such as `2030-01-02T03:04:05Z`, as the AWS tools write
/// `AWS_CREDENTIAL_EXPIRATION`.
pub(super) fn rfc3339(value: &str) -> Result<std::time::SystemTime, String> {
    aws_smithy_types::DateTime::from_str(
        value.trim(),
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()
    .and_then(|t| std::time::SystemTime::try_from(t).ok())
    .ok_or_else(|| "is not an RFC 3339 time; write e.g. 2030-01-02T03:04:05Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_service_links_are_not_overrides_and_every_override_is() {
        // What Kubernetes sets for Services named storage-grants and storage-grants-prod.
        for link in [
            "STORAGE_GRANTS_SERVICE_HOST",
            "STORAGE_GRANTS_SERVICE_PORT",
            "STORAGE_GRANTS_SERVICE_PORT_GRPC",
            "STORAGE_GRANTS_SERVICE_PORT_HTTP_METRICS",
            "STORAGE_GRANTS_PORT",
            "STORAGE_GRANTS_PORT_50051_TCP",
            "STORAGE_GRANTS_PORT_50051_TCP_ADDR",
            "STORAGE_GRANTS_PORT_8080_TCP_PROTO",
            "STORAGE_GRANTS_PROD_SERVICE_HOST",
            "STORAGE_GRANTS_PROD_PORT_9464_TCP_PORT",
        ] {
            assert!(!is_override(link), "{link}");
        }
        for over in [
            "STORAGE_GRANTS_LISTEN",
            "STORAGE_GRANTS_LOG_FORMAT",
            "STORAGE_GRANTS_SERVER__REQUEST_TIMEOUT",
            "STORAGE_GRANTS_HTTP__LISTEN",
            "STORAGE_GRANTS_METRICS__LISTEN",
            "STORAGE_GRANTS_STS__ENDPOINT",
            // A typo still reaches the config, which names it.
            "STORAGE_GRANTS_LISTN",
            "STORAGE_GRANTS_SERVER__PORT",
        ] {
            assert!(is_override(over), "{over}");
        }
        assert!(!is_override("STORAGE_GRANTS_CONFIG"));
        assert!(!is_override("STORAGE_GRANTS_TOKEN"));
        assert!(!is_override("OTHER_SERVICE_HOST"));
    }
}
