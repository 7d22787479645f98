//! The derived SigV4 signing key, cached per (date, region, service, credentials).
//!
//! Deriving a key costs four HMAC-SHA256s (kDate, kRegion, kService, kSigning); a
//! presigned URL then needs only one more HMAC with it. The key changes only when
//! the UTC date, the region or the credentials do, so one cached entry serves every
//! grant of a day. The entry also keeps what else depends only on those: the
//! credential scope, the encoded `X-Amz-Credential` value and the encoded session
//! token (the longest part of every URL). This module owns that cache
//! and the derivation; it leaves the canonical request and the URL to `presign`.
//!
//! Security invariant: the cache hands out a key (or token) only for the exact
//! credentials it was computed from. An entry matches on the date, the region, the
//! access key id, the secret access key *and* the session token, so a rotated secret
//! under the same access key id (or any other credentials) can never be signed for
//! with a stale key, nor a URL carry another snapshot's token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::amz_date::AmzDate;
use super::encode::{encode_query, encoded_len_bound};
use crate::credentials::SigningCredentials;
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// The only service this crate signs for.
pub(crate) const SERVICE: &str = "s3";

/// The last element of every SigV4 credential scope.
pub(crate) const TERMINATOR: &str = "aws4_request";

/// HMAC-SHA256 of `data` under `key`: one step of the key derivation.
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The SigV4 signing key: kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date),
/// region), service), "aws4_request").
pub(crate) fn derive_key_bytes(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut seed = Vec::with_capacity(4 + secret.len());
    seed.extend_from_slice(b"AWS4");
    seed.extend_from_slice(secret.as_bytes());
    let k_date = hmac(&seed, date.as_bytes());
    // Best effort: do not leave the secret in freed heap memory. `black_box` keeps the
    // compiler from dropping the write as dead.
    seed.fill(0);
    std::hint::black_box(&seed);
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, TERMINATOR.as_bytes())
}

// === impl SigningKey ===

/// A derived signing key, held as an HMAC-SHA256 already keyed with it: cloning the
/// keyed state skips the two compressions of HMAC's key setup on every signature.
#[derive(Clone)]
pub(crate) struct SigningKey {
    mac: HmacSha256,
}

impl SigningKey {
    /// Derives the key for `secret` on `date` (`YYYYMMDD`) in `region` for `service`.
    pub(crate) fn derive(secret: &str, date: &str, region: &str, service: &str) -> SigningKey {
        let bytes = derive_key_bytes(secret, date, region, service);
        SigningKey {
            mac: HmacSha256::new_from_slice(&bytes).expect("HMAC accepts 32-byte keys"),
        }
    }

    /// A fresh HMAC-SHA256 keyed with this key, ready for a string to sign.
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

// === impl KeyCache ===

/// What the signer computes once per credentials, day and region, and reuses for
/// every signature until one of them changes.
pub(crate) struct Prepared {
    key: SigningKey,
    /// `{date}/{region}/s3/aws4_request`: the credential scope, as the string to
    /// sign carries it.
    scope: String,
    /// `{access key id}/{scope}`, percent-encoded: the `X-Amz-Credential` value.
    encoded_credential: String,
    /// The session token, percent-encoded for the query. An STS token is about a
    /// kilobyte: encoding it per request would cost more than the rest of the URL.
    encoded_session_token: Option<Secret<String>>,
}

impl Prepared {
    fn new(creds: &SigningCredentials, date: &AmzDate, region: &str) -> Prepared {
        let key = SigningKey::derive(
            creds.secret_access_key.expose(),
            date.date(),
            region,
            SERVICE,
        );
        let scope = format!("{}/{region}/{SERVICE}/{TERMINATOR}", date.date());
        let mut encoded_credential = String::new();
        encode_query(&mut encoded_credential, &creds.access_key_id);
        encode_query(&mut encoded_credential, "/");
        encode_query(&mut encoded_credential, &scope);
        let encoded_session_token = creds.session_token.as_ref().map(|token| {
            let token = token.expose();
            let mut encoded = String::with_capacity(encoded_len_bound(token));
            encode_query(&mut encoded, token);
            Secret::new(encoded)
        });
        Prepared {
            key,
            scope,
            encoded_credential,
            encoded_session_token,
        }
    }

    /// The signing key.
    pub(crate) fn key(&self) -> &SigningKey {
        &self.key
    }

    /// `{date}/{region}/s3/aws4_request`.
    pub(crate) fn scope(&self) -> &str {
        &self.scope
    }

    /// The `X-Amz-Credential` value, percent-encoded.
    pub(crate) fn encoded_credential(&self) -> &str {
        &self.encoded_credential
    }

    /// The credentials' session token, percent-encoded as a query value.
    pub(crate) fn encoded_session_token(&self) -> Option<&str> {
        self.encoded_session_token
            .as_ref()
            .map(|t| t.expose().as_str())
    }
}

/// What a cached `Prepared` was computed from, and the result.
struct Entry {
    date: [u8; 8],
    region: String,
    access_key_id: String,
    /// Compared on every hit (see the module's security invariant). Plain `==` is
    /// fine: both sides are our own credentials; no caller input reaches them.
    secret_access_key: Secret<String>,
    session_token: Option<Secret<String>>,
    prepared: Prepared,
}

impl Entry {
    fn matches(&self, creds: &SigningCredentials, date: &[u8; 8], region: &str) -> bool {
        self.date == *date
            && self.region == region
            && self.access_key_id == creds.access_key_id
            && self.secret_access_key.expose() == creds.secret_access_key.expose()
            && self.session_token.as_ref().map(Secret::expose)
                == creds.session_token.as_ref().map(Secret::expose)
    }
}

/// A one-entry cache of the signing key (and the encoded session token), shared by
/// all requests of a `Signer`.
///
/// One entry because the service signs with one credential snapshot at a time: it
/// misses once a day and once per credential refresh. Should two credential sets
/// ever alternate, each miss costs one derivation (about 1 µs), never a wrong key.
///
/// A hit reads the entry without a lock or a shared reference count (`arc_swap`), so
/// signatures on several cores at once do not contend for it; a miss computes, signs,
/// then replaces the entry whole.
pub(crate) struct KeyCache {
    slot: ArcSwapOption<Entry>,
    /// How many keys were derived; tests use it to tell a hit from a miss.
    derivations: AtomicU64,
}

impl KeyCache {
    /// An empty cache.
    pub(crate) fn new() -> KeyCache {
        KeyCache {
            slot: ArcSwapOption::empty(),
            derivations: AtomicU64::new(0),
        }
    }

    /// Runs `sign` with what `creds` need on `date`'s scope date in `region`: from the
    /// cache when it was computed from these very credentials, else computed now and
    /// cached.
    pub(crate) fn with<R>(
        &self,
        creds: &SigningCredentials,
        date: &AmzDate,
        region: &str,
        sign: impl FnOnce(&Prepared) -> R,
    ) -> R {
        let scope_date = date.date_bytes();
        {
            let slot = self.slot.load();
            if let Some(entry) = slot.as_deref()
                && entry.matches(creds, &scope_date, region)
            {
                return sign(&entry.prepared);
            }
        }

        let prepared = Prepared::new(creds, date, region);
        self.derivations.fetch_add(1, Ordering::Relaxed);
        let result = sign(&prepared);
        let entry = Entry {
            date: scope_date,
            region: region.to_owned(),
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: creds.secret_access_key.clone(),
            session_token: creds.session_token.clone(),
            prepared,
        };
        self.slot.store(Some(Arc::new(entry)));
        result
    }

    /// The signing key alone, for tests.
    #[cfg(test)]
    pub(crate) fn get(
        &self,
        creds: &SigningCredentials,
        date: &AmzDate,
        region: &str,
    ) -> SigningKey {
        self.with(creds, date, region, |prepared| prepared.key().clone())
    }

    /// How many keys this cache has derived so far.
    #[cfg(test)]
    pub(crate) fn derivations(&self) -> u64 {
        self.derivations.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn creds(access_key_id: &str, secret: &str) -> SigningCredentials {
        SigningCredentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: Secret::new(secret.to_owned()),
            session_token: None,
            expires_at: None,
        }
    }

    fn day(secs: u64) -> AmzDate {
        AmzDate::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// What a key signs, as a comparable fingerprint of the key itself.
    fn probe(key: &SigningKey) -> [u8; 32] {
        key.mac()
            .chain_update(b"probe")
            .finalize()
            .into_bytes()
            .into()
    }

    fn fresh(secret: &str, date: &AmzDate, region: &str) -> [u8; 32] {
        let bytes = derive_key_bytes(secret, date.date(), region, SERVICE);
        hmac(&bytes, b"probe")
    }

    const T: u64 = 1_369_353_600; // 2013-05-24T00:00:00Z

    #[test]
    fn derivation_matches_the_aws_docs_example() {
        // AWS General Reference, "Derive a signing key for Signature Version 4".
        let key = derive_key_bytes(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn hit_returns_the_same_key_as_a_fresh_derivation() {
        let cache = KeyCache::new();
        let c = creds("AKID", "secret-1");
        let first = cache.get(&c, &day(T), "us-east-1");
        let second = cache.get(&c, &day(T + 3600), "us-east-1"); // same UTC day
        assert_eq!(cache.derivations(), 1, "the second call is a hit");
        assert_eq!(probe(&first), fresh("secret-1", &day(T), "us-east-1"));
        assert_eq!(probe(&second), probe(&first));
    }

    #[test]
    fn date_change_gives_a_new_key() {
        let cache = KeyCache::new();
        let c = creds("AKID", "secret-1");
        let today = cache.get(&c, &day(T), "us-east-1");
        let tomorrow = cache.get(&c, &day(T + 86_400), "us-east-1");
        assert_eq!(cache.derivations(), 2);
        assert_ne!(probe(&today), probe(&tomorrow));
        assert_eq!(
            probe(&tomorrow),
            fresh("secret-1", &day(T + 86_400), "us-east-1")
        );
    }

    #[test]
    fn region_change_gives_a_new_key() {
        let cache = KeyCache::new();
        let c = creds("AKID", "secret-1");
        let east = cache.get(&c, &day(T), "us-east-1");
        let west = cache.get(&c, &day(T), "eu-west-1");
        assert_eq!(cache.derivations(), 2);
        assert_ne!(probe(&east), probe(&west));
        assert_eq!(probe(&west), fresh("secret-1", &day(T), "eu-west-1"));
    }

    #[test]
    fn rotated_secret_under_the_same_access_key_id_is_never_served_the_old_key() {
        let cache = KeyCache::new();
        let old = cache.get(&creds("AKID", "secret-1"), &day(T), "us-east-1");
        let new = cache.get(&creds("AKID", "secret-2"), &day(T), "us-east-1");
        assert_eq!(cache.derivations(), 2);
        assert_ne!(probe(&old), probe(&new));
        assert_eq!(probe(&new), fresh("secret-2", &day(T), "us-east-1"));
    }

    #[test]
    fn other_access_key_id_misses_even_with_the_same_secret() {
        let cache = KeyCache::new();
        cache.get(&creds("AKID1", "secret-1"), &day(T), "us-east-1");
        cache.get(&creds("AKID2", "secret-1"), &day(T), "us-east-1");
        assert_eq!(cache.derivations(), 2);
    }

    #[test]
    fn refreshed_session_token_is_never_served_the_old_token() {
        let cache = KeyCache::new();
        let with_token = |token: &str| SigningCredentials {
            session_token: Some(Secret::new(token.to_owned())),
            ..creds("ASIA", "secret-1")
        };
        let encoded = |c: &SigningCredentials| {
            cache.with(c, &day(T), "us-east-1", |p| {
                p.encoded_session_token().map(str::to_owned)
            })
        };
        assert_eq!(
            encoded(&with_token("old/token=")).as_deref(),
            Some("old%2Ftoken%3D")
        );
        assert_eq!(
            encoded(&with_token("old/token=")).as_deref(),
            Some("old%2Ftoken%3D")
        );
        assert_eq!(cache.derivations(), 1);
        assert_eq!(
            encoded(&with_token("new+token")).as_deref(),
            Some("new%2Btoken")
        );
        assert_eq!(encoded(&creds("ASIA", "secret-1")), None);
        assert_eq!(cache.derivations(), 3);
    }

    #[test]
    fn concurrent_users_of_two_credentials_always_get_their_own_key() {
        let cache = KeyCache::new();
        let expected = [
            fresh("secret-a", &day(T), "us-east-1"),
            fresh("secret-b", &day(T), "us-east-1"),
        ];
        std::thread::scope(|s| {
            for t in 0..4 {
                let (cache, expected) = (&cache, &expected);
                s.spawn(move || {
                    for i in 0..500 {
                        let which = (t + i) % 2;
                        let secret = ["secret-a", "secret-b"][which];
                        let key = cache.get(&creds("AKID", secret), &day(T), "us-east-1");
                        assert_eq!(probe(&key), expected[which]);
                    }
                });
            }
        });
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = SigningKey::derive("secret", "20130524", "us-east-1", SERVICE);
        assert_eq!(format!("{key:?}"), "SigningKey([redacted])");
        assert_eq!(format!("{:?}", KeyCache::new()), "KeyCache { .. }");
    }
}
