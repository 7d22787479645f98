//! `STORAGE_GRANTS_*` environment overrides, applied to the file's TOML table before
//! it is read into [`super::raw::RawConfig`].

use super::Error;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "STORAGE_GRANTS_";

/// Whether `var` is an override (the config path itself is read by `main`).
pub(super) fn is_override(var: &str) -> bool {
    var.starts_with(ENV_PREFIX) && var != "STORAGE_GRANTS_CONFIG"
}

/// Sets the key that `var` names (`STORAGE_GRANTS_A__B` is `a.b`) in `table`. The value
/// is read as a TOML value when it parses as one (numbers, booleans, arrays), else as
/// a string.
pub(super) fn apply(table: &mut toml::Table, var: &str, value: &str) -> Result<(), Error> {
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
