//! Static development tokens: a bearer token from the config maps to a caller id.
//!
//! Development only: a token is a shared secret with no expiry and no audience.
//! The config refuses them unless `identity.dev_mode` is set, and start-up logs a
//! warning when any is loaded. Tokens are kept only as SHA-256 digests, so a lookup
//! compares digests (no timing signal about the token's characters) and no token
//! stays in memory in the clear after start-up.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::IdentityConfig;
use super::{Caller, Source};

/// The accepted development tokens.
#[derive(Debug, Clone, Default)]
pub struct DevTokens {
    by_digest: HashMap<[u8; 32], String>,
}

impl DevTokens {
    /// The tokens of `config`; none unless `dev_mode` is set.
    pub fn new(config: &IdentityConfig) -> Self {
        if !config.dev_mode {
            return Self::default();
        }
        let by_digest = config
            .dev_tokens
            .iter()
            .map(|t| (digest(t.token.expose()), t.caller.clone()))
            .collect();
        Self { by_digest }
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The caller `token` stands for, if any.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        self.by_digest
            .get(&digest(token))
            .map(|id| Caller::new(id.clone(), Source::DevToken))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DevToken;
    use crate::secret::Secret;

    fn config(dev_mode: bool) -> IdentityConfig {
        IdentityConfig {
            dev_mode,
            dev_tokens: vec![DevToken {
                token: Secret::new("dev-token-0123456789".into()),
                caller: "dev:demo".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn known_token_maps_to_its_caller() {
        let caller = DevTokens::new(&config(true))
            .caller("dev-token-0123456789")
            .unwrap();
        assert_eq!(caller.id(), "dev:demo");
        assert_eq!(caller.source(), Source::DevToken);
    }

    #[test]
    fn unknown_token_is_refused() {
        assert!(
            DevTokens::new(&config(true))
                .caller("dev-token-012345678")
                .is_none()
        );
    }

    #[test]
    fn tokens_are_ignored_without_dev_mode() {
        let tokens = DevTokens::new(&config(false));
        assert!(tokens.is_empty());
        assert!(tokens.caller("dev-token-0123456789").is_none());
    }
}
