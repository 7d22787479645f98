//! JWTs that passed every check, remembered until they stop holding: a workload sends
//! the same token on every call until it rotates it, and checking its signature (ES256
//! or RS256) cost several times a whole grant, on every call.
//!
//! A token is remembered by its SHA-256 (never the token itself), with the caller it
//! stands for, the key set that verified it and its time claims. It answers a later
//! call only while that key set is still the current one (any JWKS reload makes every
//! token verify again, so a removed key stops its tokens at once) and while its time
//! claims still hold, checked by the verifier's own rule. Refusals are not remembered.
//! Past [`CAPACITY`] tokens the memory starts over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

use super::Caller;
use super::jwks::KeySet;

/// Tokens remembered at once (each about 300 bytes).
pub(crate) const CAPACITY: usize = 10_000;

/// A token's time claims (seconds since the epoch), as the verifier read them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Times {
    pub(crate) exp: f64,
    pub(crate) nbf: Option<f64>,
    pub(crate) iat: Option<f64>,
}

struct Entry {
    caller: Caller,
    keys: Arc<KeySet>,
    times: Times,
}

/// The tokens verified so far; shared by every clone of a verifier.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl VerifiedTokens {
    /// What a token is remembered by.
    pub(crate) fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The caller and time claims of the token with `digest`, if `keys` (the current
    /// key set) is the set that verified it.
    pub(crate) fn get(&self, digest: &[u8; 32], keys: &Arc<KeySet>) -> Option<(Caller, Times)> {
        let entries = self.lock();
        let entry = entries.get(digest)?;
        Arc::ptr_eq(&entry.keys, keys).then(|| (entry.caller.clone(), entry.times))
    }

    /// Remembers a token that `keys` verified and whose claims held.
    pub(crate) fn insert(
        &self,
        digest: [u8; 32],
        caller: &Caller,
        keys: &Arc<KeySet>,
        times: Times,
    ) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY && !entries.contains_key(&digest) {
            entries.clear();
        }
        entries.insert(
            digest,
            Entry {
                caller: caller.clone(),
                keys: keys.clone(),
                times,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::Source;

    fn caller(id: &str) -> Caller {
        Caller::new(id.to_owned(), Source::Jwt)
    }

    const TIMES: Times = Times {
        exp: 2000.0,
        nbf: None,
        iat: Some(1000.0),
    };

    #[test]
    fn a_token_answers_only_with_the_key_set_that_verified_it() {
        let verified = VerifiedTokens::default();
        let keys = Arc::new(KeySet::default());
        let digest = VerifiedTokens::digest("a.b.c");
        assert!(verified.get(&digest, &keys).is_none());
        verified.insert(digest, &caller("user:a"), &keys, TIMES);
        assert_eq!(
            verified.get(&digest, &keys),
            Some((caller("user:a"), TIMES))
        );
        // A reloaded key set (even with the same keys) is another set.
        let reloaded = Arc::new(KeySet::default());
        assert!(verified.get(&digest, &reloaded).is_none());
        // Another token is another entry.
        assert!(
            verified
                .get(&VerifiedTokens::digest("a.b.d"), &keys)
                .is_none()
        );
    }

    #[test]
    fn memory_is_bounded() {
        let verified = VerifiedTokens::default();
        let keys = Arc::new(KeySet::default());
        for i in 0..=CAPACITY {
            verified.insert(
                VerifiedTokens::digest(&format!("t.{i}.s")),
                &caller("user:a"),
                &keys,
                TIMES,
            );
            assert!(verified.len() <= CAPACITY);
        }
        // The last one is there.
        let last = VerifiedTokens::digest(&format!("t.{CAPACITY}.s"));
        assert!(verified.get(&last, &keys).is_some());
    }
}
