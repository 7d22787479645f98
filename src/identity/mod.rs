//! Who is calling: every identity source produces one [`Caller`].
//!
//! Grant code sees only `Caller`; adding mTLS or JWT means adding a source here, not
//! touching the grant path. Today the one source is static development tokens
//! ([`dev_token`]), refused unless the operator sets `identity.dev_mode`.

pub mod dev_token;

use std::collections::BTreeMap;
use std::fmt;

use tonic::metadata::MetadataMap;

use serde::Deserialize;

use crate::secret::Secret;

/// How callers prove who they are.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Allows static development tokens. Never set this in production: a token is a
    /// shared secret with no expiry.
    pub dev_mode: bool,
    /// Static bearer tokens, each mapped to a caller id. Development only.
    pub dev_tokens: Vec<DevToken>,
}

/// One development token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevToken {
    /// The bearer token; a secret.
    pub token: Secret<String>,
    /// The caller id it stands for.
    pub caller: String,
}

impl fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("dev_mode", &self.dev_mode)
            .field("dev_tokens", &self.dev_tokens)
            .finish()
    }
}

impl fmt::Debug for DevToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevToken")
            .field("token", &self.token)
            .field("caller", &self.caller)
            .finish()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    id: String,
    source: Source,
    attributes: BTreeMap<String, String>,
}

/// Which identity source vouched for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A static development token.
    DevToken,
}

impl Caller {
    /// A caller with `id`, vouched for by `source`.
    pub fn new(id: impl Into<String>, source: Source) -> Self {
        Self {
            id: id.into(),
            source,
            attributes: BTreeMap::new(),
        }
    }

    /// The caller id that rules match against.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which source identified the caller.
    pub fn source(&self) -> Source {
        self.source
    }

    /// Attributes from the identity (namespace, service account, issuer…).
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Why no caller could be identified. Messages never echo the credential presented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no credentials: send 'authorization: Bearer <token>' metadata")]
    Missing,
    #[error("malformed authorization metadata: expected 'Bearer <token>'")]
    Malformed,
    #[error("the bearer token is not recognised")]
    UnknownToken,
}

/// Identifies callers from request metadata, trying each configured source.
#[derive(Debug, Clone)]
pub struct Authenticator {
    dev_tokens: dev_token::DevTokens,
}

impl Authenticator {
    /// Builds the sources the configuration enables.
    pub fn new(config: &IdentityConfig) -> Self {
        Self {
            dev_tokens: dev_token::DevTokens::new(config),
        }
    }

    /// Whether any development token is accepted (logged loudly at start).
    pub fn dev_tokens_enabled(&self) -> bool {
        !self.dev_tokens.is_empty()
    }

    /// Identifies the caller of a request.
    ///
    /// # Errors
    /// [`Error::Missing`] without `authorization` metadata, [`Error::Malformed`] when it
    /// is not a bearer token, [`Error::UnknownToken`] when no source knows the token.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Error> {
        let value = metadata.get("authorization").ok_or(Error::Missing)?;
        let value = value.to_str().map_err(|_| Error::Malformed)?;
        let token = bearer_token(value).ok_or(Error::Malformed)?;
        self.dev_tokens.caller(token).ok_or(Error::UnknownToken)
    }
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
