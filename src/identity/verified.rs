//! JWTs that passed every check, remembered until they stop holding: a workload sends
//! the same token on every call until it rotates it, and checking its signature (ES256
//! or RS256) cost several times a whole grant, on every call.
//!
//! A token is remembered by its SHA-256 (never the token itself), with the caller it
//! stands for, the key set that verified it and its time claims. It answers a later
//! call only while that key set is still the current one (any JWKS reload makes every
//! token verify again, so a removed key stops its tokens at once) and while its time
//! claims still hold, checked by the verifier's own rule. Refusals are not remembered.
//!
//! Each thread keeps its own memory: every call reads it, and one memory behind one
//! lock had both serving threads pull the lock's cache line from the other CPU on
//! every call. A token is verified once on each thread that serves it. Past
//! [`CAPACITY`] tokens a thread's memory starts over.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use thread_local::ThreadLocal;

use super::Caller;
use super::jwks::KeySet;

/// Tokens one thread remembers at once (each about 300 bytes; the service's serving
/// threads are one per CPU).
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

type Entries = HashMap<[u8; 32], Entry>;

/// The tokens verified so far; shared by every clone of a verifier, kept per thread.
#[derive(Default)]
pub(crate) struct VerifiedTokens {
    entries: ThreadLocal<RefCell<Entries>>,
}

impl VerifiedTokens {
    /// What a token is remembered by.
    pub(crate) fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The caller and time claims of the token with `digest`, if `keys` (the current
    /// key set) is the set that verified it.
    pub(crate) fn get(&self, digest: &[u8; 32], keys: &Arc<KeySet>) -> Option<(Caller, Times)> {
        let entries = self.entries.get()?.borrow();
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
        let mut entries = self.entries.get_or_default().borrow_mut();
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

    /// How many tokens this thread remembers (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .get()
            .map_or(0, |entries| entries.borrow().len())
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
    fn each_thread_remembers_the_tokens_it_verified() {
        let verified = Arc::new(VerifiedTokens::default());
        let keys = Arc::new(KeySet::default());
        let digest = VerifiedTokens::digest("a.b.c");
        verified.insert(digest, &caller("user:a"), &keys, TIMES);
        let (verified_there, keys_there) = (verified.clone(), keys.clone());
        let there = std::thread::spawn(move || {
            let before = verified_there.get(&digest, &keys_there).is_some();
            verified_there.insert(digest, &caller("user:a"), &keys_there, TIMES);
            let after = verified_there.get(&digest, &keys_there);
            (before, after, verified_there.len())
        })
        .join()
        .unwrap();
        // Another thread verifies the token once more, then remembers it too.
        assert_eq!(there, (false, Some((caller("user:a"), TIMES)), 1));
        assert_eq!(
            verified.get(&digest, &keys),
            Some((caller("user:a"), TIMES))
        );
        assert_eq!(verified.len(), 1);
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
