//! The issuer's signing keys (a JWKS), loaded from a file or a URL, cached, and
//! refreshed in the background.
//!
//! Verification ([`super::jwt`]) is synchronous and reads only the cached key set, so
//! the interceptor never waits on the network. A background task reloads the set every
//! `refresh_interval`; a token whose `kid` is not in the set wakes that task early
//! (`KeyStore::request_refresh`), at most once per `min_refresh_interval` however
//! many such tokens arrive, and that one call is refused with "unknown key; retry"
//! (the retry, moments later, finds the new key). A failed reload keeps the previous
//! set and is retried after `min_refresh_interval`.
//!
//! Only asymmetric keys are ever loaded, each bound to exactly one algorithm: RSA →
//! RS256 (at least 2048 bits), EC P-256 → ES256, OKP Ed25519 → EdDSA. Symmetric (`oct`)
//! keys, other curves and algorithms, and keys whose `use` is not `sig` are skipped
//! with a warning, so an HS256 token can never be checked against a public key used
//! as an HMAC secret, whatever the JWKS holds.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwapOption, Guard};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::Value;
use tokio::sync::Notify;

use crate::core::throttle::Throttle;

/// Largest JWKS document accepted (file or HTTP body).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The signature algorithms accepted. Anything else (`none`, `HS*`, `PS*`, `RS384`…)
/// is refused before a key is even looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 to 8192 bits.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// The algorithm a JWS `alg` names, if accepted.
    pub fn from_jws(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    /// The JWS name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }
}

/// One verification key, bound to its algorithm.
#[derive(Debug, Clone)]
pub struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    material: Material,
}

#[derive(Debug, Clone)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point, `04 || x || y`.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl Key {
    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            Material::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            Material::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// The keys of one JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

/// The outcome of looking a token's key up.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The key to verify with.
    Found(&'a Key),
    /// No key has this `kid`.
    UnknownKid,
    /// The `kid` exists, but for another algorithm.
    AlgorithmMismatch,
    /// The token has no `kid` and the set holds more than one key for its algorithm
    /// (or none).
    NeedKid,
}

/// Why fetching a JWKS URL failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read the token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token file {} is not a token", path.display())]
    NotAToken { path: PathBuf },
    #[error("cannot build the request: {0}")]
    Request(#[source] http::Error),
    /// hyper's own message says little, so the causes are spelled out.
    #[error("{}", crate::core::text::Chain(.0))]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("HTTP status {0}")]
    Status(http::StatusCode),
    #[error("reading the body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {}", crate::core::duration::display(*.0))]
    Timeout(Duration),
}

/// Why a JWKS document was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("fetching {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: FetchError,
    },
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWKS: {0}")]
    Syntax(#[source] serde_json::Error),
    #[error("not a JWKS: no \"keys\" array")]
    NoKeys,
    #[error("the JWKS holds no usable key (RSA ≥ 2048 bits, EC P-256 or Ed25519, for signing)")]
    NoUsableKey,
}

impl KeySet {
    /// Parses a JWKS (`{"keys": [...]}`), keeping the usable keys. Skipped keys are
    /// logged (warn) with their `kid` and why.
    ///
    /// # Errors
    /// [`LoadError::Syntax`] when the document is not a JWKS, [`LoadError::NoUsableKey`]
    /// when it holds no key this service can use.
    pub fn parse(json: &[u8]) -> Result<Self, LoadError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(LoadError::TooLarge);
        }
        let doc: Value = serde_json::from_slice(json).map_err(LoadError::Syntax)?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(LoadError::NoKeys)?;
        let mut set = KeySet::default();
        for jwk in keys {
            let kid = jwk.get("kid").and_then(Value::as_str);
            match parse_jwk(jwk) {
                Ok(key) => set.keys.push(key),
                Err(why) => {
                    tracing::warn!(kid = kid.unwrap_or(""), why, "JWKS key skipped");
                }
            }
        }
        if set.keys.is_empty() {
            return Err(LoadError::NoUsableKey);
        }
        Ok(set)
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token with header `kid` and `algorithm`.
    pub fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                let mut same_kid = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if same_kid.peek().is_none() {
                    return Lookup::UnknownKid;
                }
                same_kid
                    .find(|k| k.algorithm == algorithm)
                    .map_or(Lookup::AlgorithmMismatch, Lookup::Found)
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.algorithm == algorithm);
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => Lookup::Found(key),
                    _ => Lookup::NeedKid,
                }
            }
        }
    }
}

/// One JWK into a [`Key`], or why it is skipped.
fn parse_jwk(jwk: &Value) -> Result<Key, &'static str> {
    let field = |name| jwk.get(name).and_then(Value::as_str);
    let bytes = |name| -> Result<Vec<u8>, &'static str> {
        let text = field(name).ok_or("a required member is missing")?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| "a member is not base64url")
    };
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Err("'use' is not 'sig'");
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("'kid' is not a string"),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.as_str()),
        Some(_) => return Err("'alg' is not a string"),
    };
    let (algorithm, material) = match field("kty") {
        Some("RSA") => {
            if alg.is_some_and(|a| a != "RS256") {
                return Err("RSA key for an algorithm other than RS256");
            }
            let n = strip_leading_zeros(bytes("n")?);
            let e = strip_leading_zeros(bytes("e")?);
            if n.len() < 256 {
                return Err("RSA key shorter than 2048 bits");
            }
            if n.len() > 1024 {
                return Err("RSA key longer than 8192 bits");
            }
            if e.is_empty() || e.len() > 4 {
                return Err("RSA exponent out of range");
            }
            (Algorithm::Rs256, Material::Rsa { n, e })
        }
        Some("EC") => {
            if field("crv") != Some("P-256") {
                return Err("EC key on a curve other than P-256");
            }
            if alg.is_some_and(|a| a != "ES256") {
                return Err("EC key for an algorithm other than ES256");
            }
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("EC P-256 coordinates are not 32 bytes");
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (Algorithm::Es256, Material::P256(point))
        }
        Some("OKP") => {
            if field("crv") != Some("Ed25519") {
                return Err("OKP key on a curve other than Ed25519");
            }
            if alg.is_some_and(|a| a != "EdDSA" && a != "Ed25519") {
                return Err("Ed25519 key for an algorithm other than EdDSA");
            }
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err("Ed25519 key is not 32 bytes");
            }
            (Algorithm::EdDsa, Material::Ed25519(x))
        }
        Some("oct") => return Err("symmetric keys are never accepted"),
        _ => return Err("unsupported key type"),
    };
    Ok(Key {
        kid,
        algorithm,
        material,
    })
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|&&b| b == 0).count();
    v.drain(..zeros);
    v
}

// === where keys come from ===

/// Where the key set is loaded from.
#[derive(Clone)]
pub(crate) enum KeySource {
    /// A local file (e.g. a mounted ConfigMap), re-read on every refresh.
    File(PathBuf),
    /// An HTTPS URL (or HTTP on loopback), fetched with a timeout.
    Url(Box<fetch::Fetcher>),
}

impl KeySource {
    async fn load(&self) -> Result<KeySet, LoadError> {
        match self {
            KeySource::File(path) => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|source| LoadError::Read {
                        path: path.clone(),
                        source,
                    })?;
                if meta.len() > MAX_JWKS_BYTES as u64 {
                    return Err(LoadError::TooLarge);
                }
                let bytes = crate::core::files::read(path, MAX_JWKS_BYTES as u64)
                    .await
                    .map_err(|source| LoadError::Read {
                        path: path.clone(),
                        source,
                    })?;
                KeySet::parse(&bytes)
            }
            KeySource::Url(fetcher) => KeySet::parse(&fetcher.get(MAX_JWKS_BYTES).await?),
        }
    }

    fn describe(&self) -> String {
        match self {
            KeySource::File(p) => p.display().to_string(),
            KeySource::Url(f) => f.url(),
        }
    }
}

// === the cache and its refresher ===

/// Allows one forced refresh per window.
#[derive(Debug)]
pub(crate) struct RefreshLimiter(Mutex<Throttle>);

impl RefreshLimiter {
    pub(crate) fn new(window: Duration) -> Self {
        Self(Mutex::new(Throttle::once_per(window)))
    }

    /// Whether a refresh may be forced at `now`; if so, the window starts again.
    pub(crate) fn try_acquire(&self, now: Instant) -> bool {
        let mut throttle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        throttle.note(now).is_some()
    }
}

/// The cached key set, shared by the verifier and the background refresher.
pub(crate) struct KeyStore {
    keys: ArcSwapOption<KeySet>,
    source: KeySource,
    limiter: RefreshLimiter,
    wake: Notify,
    loads: AtomicU64,
}

impl KeyStore {
    pub(crate) fn new(source: KeySource, min_refresh_interval: Duration) -> Self {
        Self {
            keys: ArcSwapOption::empty(),
            source,
            limiter: RefreshLimiter::new(min_refresh_interval),
            wake: Notify::new(),
            loads: AtomicU64::new(0),
        }
    }

    /// A store that already holds `keys` and never refreshes (tests, fuzzing).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn fixed(keys: KeySet) -> Self {
        let store = Self::new(
            KeySource::File(PathBuf::from("/nonexistent")),
            Duration::from_secs(30),
        );
        store.set(keys);
        store
    }

    /// The current key set; `None` until the first successful load. Every JWT call
    /// reads it, so it is read without a lock or a shared reference count
    /// (`arc_swap`), as the rules are: a lock's cache line crossed between the CPUs on
    /// every call.
    pub(crate) fn current(&self) -> Guard<Option<Arc<KeySet>>> {
        self.keys.load()
    }

    /// Puts `keys` in force, as a reload would.
    #[cfg(test)]
    pub(crate) fn replace(&self, keys: KeySet) {
        self.set(keys);
    }

    fn set(&self, keys: KeySet) {
        self.keys.store(Some(Arc::new(keys)));
    }

    /// Asks the refresher to reload now (a token named an unknown key). Returns whether
    /// the request was passed on; at most one per `min_refresh_interval` is.
    pub(crate) fn request_refresh(&self) -> bool {
        let allowed = self.limiter.try_acquire(Instant::now());
        if allowed {
            self.wake.notify_one();
        }
        allowed
    }

    /// How many loads were attempted (tests).
    #[cfg(test)]
    pub(crate) fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Loads the set once; on failure keeps the previous one.
    ///
    /// # Errors
    /// [`LoadError`] when the source cannot be read or holds no usable key.
    pub(crate) async fn refresh(&self) -> Result<(), LoadError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        // Its own trace (refreshes run in the background); the source's kind only:
        // a JWKS URL may carry credentials in its query.
        let span = tracing::info_span!(
            "jwks.fetch",
            otel.kind = "client",
            source = match self.source {
                KeySource::File(_) => "file",
                KeySource::Url(_) => "url",
            },
            result = tracing::field::Empty,
        );
        let keys = tracing::Instrument::instrument(self.source.load(), span.clone()).await;
        span.record("result", if keys.is_ok() { "loaded" } else { "failed" });
        crate::metrics::jwks_refresh(keys.is_ok());
        let keys = keys?;
        tracing::debug!(keys = keys.len(), from = %self.source.describe(), "JWKS loaded");
        self.set(keys);
        Ok(())
    }

    /// Reloads every `interval`, or when woken by [`KeyStore::request_refresh`]; after a
    /// failure, retries after `retry` (if shorter). Runs until aborted.
    pub(crate) async fn refresh_forever(self: Arc<Self>, interval: Duration, retry: Duration) {
        let mut wait = if self.current().is_some() {
            interval
        } else {
            retry.min(interval)
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
            wait = match self.refresh().await {
                Ok(()) => interval,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        from = %self.source.describe(),
                        keeping_previous = self.current().is_some(),
                        "JWKS refresh failed"
                    );
                    retry.min(interval)
                }
            };
        }
    }
}

// === HTTP fetch ===

pub(crate) mod fetch {
    //! One GET of the JWKS URL over hyper 1 + rustls (ring): the HTTP stack the AWS
    //! SDK client already brings, so no second one is compiled.

    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_rustls::HttpsConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::{FetchError, LoadError};

    /// Fetches one URL.
    #[derive(Clone)]
    pub(crate) struct Fetcher {
        client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
        uri: http::Uri,
        /// A file holding a bearer token to send (e.g. the pod's projected
        /// service-account token), re-read on every fetch because it rotates.
        token_file: Option<PathBuf>,
        timeout: Duration,
    }

    impl Fetcher {
        /// A fetcher of `uri` (already validated: https, or http on loopback), trusting
        /// the CAs of `ca_file` or else the system's roots, sending the bearer token
        /// in `token_file` if given.
        ///
        /// # Errors
        /// The setting at fault (`jwks_ca_file`, or `jwks_url` for the system's roots)
        /// and why, when the CA file cannot be read or the roots cannot be loaded.
        pub(crate) fn new(
            uri: http::Uri,
            ca_file: Option<&Path>,
            token_file: Option<PathBuf>,
            timeout: Duration,
        ) -> Result<Self, (&'static str, String)> {
            const CA_FILE: &str = "identity.jwt.jwks_ca_file";
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = hyper_rustls::HttpsConnectorBuilder::new();
            let builder = match ca_file {
                Some(path) => {
                    let mut roots = rustls::RootCertStore::empty();
                    let certs = CertificateDer::pem_file_iter(path)
                        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| (CA_FILE, format!("cannot read {}: {e}", path.display())))?;
                    let (added, _) = roots.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err((
                            CA_FILE,
                            format!("{} holds no usable CA certificate", path.display()),
                        ));
                    }
                    let tls = rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .map_err(|e| (CA_FILE, e.to_string()))?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                    builder.with_tls_config(tls)
                }
                None => builder
                    .with_provider_and_native_roots(provider)
                    .map_err(|e| {
                        (
                            "identity.jwt.jwks_url",
                            format!("cannot load the system's CA roots: {e}"),
                        )
                    })?,
            };
            let connector = builder.https_or_http().enable_http1().build();
            let client = Client::builder(TokioExecutor::new()).build(connector);
            Ok(Self {
                client,
                uri,
                token_file,
                timeout,
            })
        }

        /// The URL, for logs and errors: without user info or query, which may hold
        /// credentials.
        pub(crate) fn url(&self) -> String {
            crate::core::text::redact_url(&self.uri.to_string())
        }

        /// GETs the URL: status 200, body at most `max_bytes`, all within the timeout.
        pub(crate) async fn get(&self, max_bytes: usize) -> Result<Vec<u8>, LoadError> {
            let fail = |source: FetchError| LoadError::Fetch {
                url: self.url(),
                source,
            };
            let work = async {
                let mut request = http::Request::get(self.uri.clone())
                    .header(http::header::ACCEPT, "application/json");
                if let Some(path) = &self.token_file {
                    let token =
                        crate::core::files::read_text(path, crate::core::files::MAX_TOKEN_FILE)
                            .await
                            .map_err(|source| FetchError::TokenFile {
                                path: path.clone(),
                                source,
                            })?;
                    let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.trim()))
                        .map_err(|_| FetchError::NotAToken { path: path.clone() })?;
                    value.set_sensitive(true);
                    request = request.header(http::header::AUTHORIZATION, value);
                }
                let request = request.body(Empty::new()).map_err(FetchError::Request)?;
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(FetchError::Connect)?;
                if response.status() != http::StatusCode::OK {
                    return Err(FetchError::Status(response.status()));
                }
                let body = Limited::new(response.into_body(), max_bytes)
                    .collect()
                    .await
                    .map_err(FetchError::Body)?;
                Ok(body.to_bytes().to_vec())
            };
            match tokio::time::timeout(self.timeout, work).await {
                Ok(result) => result.map_err(fail),
                Err(_) => Err(fail(FetchError::Timeout(self.timeout))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_one_refresh_per_window() {
        let limiter = RefreshLimiter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(limiter.try_acquire(t0));
        assert!(!limiter.try_acquire(t0));
        assert!(!limiter.try_acquire(t0 + Duration::from_secs(29)));
        assert!(limiter.try_acquire(t0 + Duration::from_secs(30)));
        assert!(!limiter.try_acquire(t0 + Duration::from_secs(31)));
        assert!(limiter.try_acquire(t0 + Duration::from_secs(61)));
    }

    fn ed_jwk(kid: &str) -> Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode([7u8; 32])})
    }

    #[test]
    fn symmetric_and_unsupported_keys_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "small", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": URL_SAFE_NO_PAD.encode([7u8; 32])},
            ed_jwk("good"),
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(matches!(
            set.find(Some("good"), Algorithm::EdDsa),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("hmac"), Algorithm::EdDsa),
            Lookup::UnknownKid
        ));
    }

    #[test]
    fn jwks_without_usable_keys_is_refused() {
        let doc = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        assert!(matches!(
            KeySet::parse(doc.to_string().as_bytes()),
            Err(LoadError::NoUsableKey)
        ));
        assert!(matches!(KeySet::parse(b"{}"), Err(LoadError::NoKeys)));
        assert!(matches!(
            KeySet::parse(b"not json"),
            Err(LoadError::Syntax(_))
        ));
    }

    #[test]
    fn lookup_binds_kid_and_algorithm() {
        let doc = serde_json::json!({"keys": [ed_jwk("a")]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert!(matches!(
            set.find(Some("a"), Algorithm::Rs256),
            Lookup::AlgorithmMismatch
        ));
        assert!(matches!(set.find(None, Algorithm::EdDsa), Lookup::Found(_)));
        assert!(matches!(set.find(None, Algorithm::Es256), Lookup::NeedKid));
        let doc = serde_json::json!({"keys": [ed_jwk("a"), ed_jwk("b")]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert!(matches!(set.find(None, Algorithm::EdDsa), Lookup::NeedKid));
    }

    fn write_jwks(path: &std::path::Path, kids: &[&str]) {
        let keys: Vec<Value> = kids.iter().map(|k| ed_jwk(k)).collect();
        std::fs::write(path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
    }

    #[tokio::test]
    async fn unknown_kid_wakes_the_refresher_at_most_once_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        write_jwks(&path, &["old"]);
        let store = Arc::new(KeyStore::new(
            KeySource::File(path.clone()),
            Duration::from_millis(400),
        ));
        store.refresh().await.unwrap();
        assert_eq!(store.loads(), 1);
        let task = tokio::spawn(
            store
                .clone()
                .refresh_forever(Duration::from_secs(3600), Duration::from_secs(3600)),
        );

        // The issuer rotates; the first unknown kid wakes the refresher…
        write_jwks(&path, &["old", "new"]);
        assert!(store.request_refresh());
        wait_until(|| store.loads() == 2).await;
        let keys = store.current().clone().unwrap();
        assert!(matches!(
            keys.find(Some("new"), Algorithm::EdDsa),
            Lookup::Found(_)
        ));

        // …but a burst of unknown kids within the window does not reload again.
        for _ in 0..50 {
            assert!(!store.request_refresh());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.loads(), 2);

        // After the window, one more is allowed.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.request_refresh());
        wait_until(|| store.loads() == 3).await;
        task.abort();
    }

    #[tokio::test]
    async fn failed_refresh_keeps_the_previous_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        write_jwks(&path, &["a"]);
        let store = KeyStore::new(KeySource::File(path.clone()), Duration::from_secs(30));
        store.refresh().await.unwrap();
        std::fs::write(&path, "{\"keys\": []}").unwrap();
        assert!(matches!(store.refresh().await, Err(LoadError::NoUsableKey)));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(store.refresh().await, Err(LoadError::Read { .. })));
        let keys = store.current().clone().unwrap();
        assert!(matches!(
            keys.find(Some("a"), Algorithm::EdDsa),
            Lookup::Found(_)
        ));
    }

    /// Serves `response` (status line and body) to every HTTP request on loopback,
    /// over TLS when `tls` is given; returns the base URL.
    async fn serve_http(
        status: &'static str,
        body: String,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> String {
        serve_http_auth(status, body, tls, None).await
    }

    /// As `serve_http`, answering 401 unless the request carries
    /// `authorization: Bearer <token>`.
    async fn serve_http_auth(
        status: &'static str,
        body: String,
        tls: Option<Arc<rustls::ServerConfig>>,
        token: Option<&'static str>,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let respond = |mut io: Box<dyn Io>| async move {
                        let mut buf = vec![0u8; 4096];
                        let n = io.read(&mut buf).await.unwrap_or(0);
                        let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                        let authorized = token.is_none_or(|t| {
                            head.contains(&format!(
                                "authorization: bearer {}",
                                t.to_ascii_lowercase()
                            ))
                        });
                        let status = if authorized {
                            status
                        } else {
                            "401 Unauthorized"
                        };
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = io.write_all(reply.as_bytes()).await;
                        let _ = io.shutdown().await;
                    };
                    match tls {
                        Some(cfg) => {
                            if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                                respond(Box::new(s)).await;
                            }
                        }
                        None => respond(Box::new(tcp)).await,
                    }
                });
            }
        });
        format!(
            "{scheme}://{}",
            if scheme == "https" {
                format!("localhost:{}", addr.port())
            } else {
                addr.to_string()
            }
        )
    }

    trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

    fn jwks_body(kids: &[&str]) -> String {
        let keys: Vec<Value> = kids.iter().map(|k| ed_jwk(k)).collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    fn url_store(url: &str, ca_file: Option<&std::path::Path>, timeout: Duration) -> KeyStore {
        let fetcher = fetch::Fetcher::new(url.parse().unwrap(), ca_file, None, timeout).unwrap();
        KeyStore::new(KeySource::Url(Box::new(fetcher)), Duration::from_secs(30))
    }

    #[tokio::test]
    async fn jwks_url_is_fetched_over_loopback_http() {
        let base = serve_http("200 OK", jwks_body(&["k1"]), None).await;
        let store = url_store(
            &format!("{base}/openid/v1/jwks"),
            None,
            Duration::from_secs(5),
        );
        store.refresh().await.unwrap();
        let keys = store.current().clone().unwrap();
        assert!(matches!(
            keys.find(Some("k1"), Algorithm::EdDsa),
            Lookup::Found(_)
        ));
    }

    #[tokio::test]
    async fn jwks_url_is_fetched_over_https_with_a_private_ca() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let base = serve_http("200 OK", jwks_body(&["k2"]), Some(Arc::new(server))).await;
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let store = url_store(
            &format!("{base}/keys"),
            Some(&ca_file),
            Duration::from_secs(5),
        );
        store.refresh().await.unwrap();
        assert!(store.current().is_some());

        // Another CA's roots: the server is not trusted, nothing is loaded.
        let other_key = rcgen::KeyPair::generate().unwrap();
        let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca_file, other.self_signed(&other_key).unwrap().pem()).unwrap();
        let store = url_store(
            &format!("{base}/keys"),
            Some(&ca_file),
            Duration::from_secs(5),
        );
        assert!(matches!(
            store.refresh().await,
            Err(LoadError::Fetch { .. })
        ));
        assert!(store.current().is_none());
    }

    #[tokio::test]
    async fn jwks_url_request_carries_the_token_from_the_token_file() {
        let base = serve_http_auth("200 OK", jwks_body(&["k3"]), None, Some("sa-token-1")).await;
        let url = format!("{base}/openid/v1/jwks");
        // Without the token the server refuses.
        let store = url_store(&url, None, Duration::from_secs(5));
        assert!(
            store
                .refresh()
                .await
                .unwrap_err()
                .to_string()
                .contains("401")
        );
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "sa-token-1\n").unwrap();
        let fetcher = fetch::Fetcher::new(
            url.parse().unwrap(),
            None,
            Some(token_file),
            Duration::from_secs(5),
        )
        .unwrap();
        let store = KeyStore::new(KeySource::Url(Box::new(fetcher)), Duration::from_secs(30));
        store.refresh().await.unwrap();
        assert!(store.current().is_some());
    }

    #[tokio::test]
    async fn jwks_url_error_status_is_a_failed_load() {
        let base = serve_http("503 Service Unavailable", "{}".into(), None).await;
        let store = url_store(&base, None, Duration::from_secs(5));
        let err = store.refresh().await.unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
    }

    #[tokio::test]
    async fn jwks_url_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, then never writes.
        let hold = tokio::spawn(async move {
            let (_tcp, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let store = url_store(
            &format!("http://{addr}/jwks"),
            None,
            Duration::from_millis(300),
        );
        let started = Instant::now();
        let err = store.refresh().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("no answer within"), "{err}");
        hold.abort();
    }

    async fn wait_until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
