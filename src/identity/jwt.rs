//! Bearer JWTs, verified against the issuer's JWKS ([`super::jwks`]); a Kubernetes
//! projected service-account token is the main case.
//!
//! Verification is our own small JWS check over *ring*, the crypto already in the
//! build (jsonwebtoken ≤ 9 carries GHSA-h395-gr6q-cpjc, and 10+ needs either
//! aws-lc-rs or a second, RustCrypto stack). The threats each step blocks:
//! - only `RS256`, `ES256`, `EdDSA`; `none`, `HS*` and everything else are refused
//!   before a key is looked up, and every key is bound to one algorithm, so neither
//!   algorithm confusion (a public key used as an HMAC secret) nor an unsigned token
//!   gets through;
//! - keys come only from the configured JWKS, never from the token (`jwk`, `jku`,
//!   `x5u`, `x5c` headers are ignored); a `crit` header is refused (RFC 7515 §4.1.11);
//! - claims are type-checked strictly: a `exp` that is a string is refused, not
//!   treated as absent; `exp`, `iss`, `aud` and the caller claim are required;
//!   `nbf` and `iat` are checked when present; all times with `leeway`;
//! - a caller claim in the form of a SPIFFE ID (`spiffe://…`, any case) is refused:
//!   anyone the issuer signs tokens for (any pod, with an `email` or custom claim)
//!   could otherwise name a workload and match rules written for its certificate; so
//!   is one in the form of a development token's caller id (`dev:…`).
//!
//! The caller id is the `caller_claim` (default `sub`). Attributes: `issuer`,
//! `subject`, and for Kubernetes tokens `namespace` and `service_account`, from the
//! `kubernetes.io` claim, cross-checked against `sub`
//! (`system:serviceaccount:NAMESPACE:NAME`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::{Algorithm, KeyStore, Lookup};
use super::verified::{Times, VerifiedTokens};
use super::{Caller, Source, attr};

/// Longest bearer JWT accepted; Kubernetes tokens are about 1 KiB.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// `[identity.jwt]`: which issuer's tokens are accepted, for which audience.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The exact `iss` accepted, e.g. `https://kubernetes.default.svc.cluster.local`
    /// (`kubectl get --raw /.well-known/openid-configuration` shows it).
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. For Kubernetes, the
    /// `audience` of the projected token volume.
    pub audiences: Vec<String>,
    /// A local JWKS file (e.g. a mounted ConfigMap); re-read every `refresh_interval`.
    /// Exactly one of `jwks_file` and `jwks_url`.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL: `https://…`, or `http://` on loopback only.
    pub jwks_url: Option<crate::core::text::SecretUrl>,
    /// PEM CA bundle for `jwks_url`'s server; unset: the system's roots. In a pod,
    /// `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt` for the API server.
    pub jwks_ca_file: Option<PathBuf>,
    /// A bearer token sent with the `jwks_url` request, re-read on every fetch. The
    /// Kubernetes API server's `/openid/v1/jwks` wants one by default (any service
    /// account may read it): `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    pub jwks_token_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "crate::core::duration")]
    pub leeway: Duration,
    /// How often the JWKS is reloaded.
    #[serde(default = "default_refresh", with = "crate::core::duration")]
    pub refresh_interval: Duration,
    /// Shortest time between two reloads forced by tokens with an unknown `kid`, and
    /// the retry delay after a failed reload.
    #[serde(default = "default_min_refresh", with = "crate::core::duration")]
    pub min_refresh_interval: Duration,
    /// Timeout of one JWKS fetch.
    #[serde(default = "default_fetch_timeout", with = "crate::core::duration")]
    pub fetch_timeout: Duration,
    /// The claim that becomes the caller id.
    #[serde(default = "default_caller_claim")]
    pub caller_claim: String,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_min_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_caller_claim() -> String {
    "sub".into()
}

/// Why a bearer JWT was refused. Messages tell the caller what to change and never
/// echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the bearer token is not a well-formed JWT ({0})")]
    Malformed(&'static str),
    #[error("the JWT's algorithm{} is not accepted; sign with RS256, ES256 or EdDSA", .0.map(|a| format!(" ({a})")).unwrap_or_default())]
    UnsupportedAlgorithm(Option<&'static str>),
    #[error("the JWT has critical header extensions ('crit') this service does not understand")]
    CriticalHeader,
    #[error("the service has not loaded the issuer's signing keys yet; retry in a few seconds")]
    KeysUnavailable,
    /// `refreshing`: this token's key id made the service fetch the issuer's keys now,
    /// so a retry may pass; otherwise they were fetched moments ago, without it.
    #[error("{}", if *refreshing {
        "the JWT is signed with a key this service does not know yet; it is fetching the \
         issuer's keys now: retry in a few seconds"
    } else {
        "the JWT is signed with a key that is not among the issuer's keys, fetched moments \
         ago; check the token comes from the configured issuer (a key the issuer has just \
         rotated in is taken at the next fetch: retry in a minute)"
    })]
    UnknownKey { refreshing: bool },
    #[error(
        "the JWT has no 'kid' header and the issuer has several keys; send a token with a 'kid'"
    )]
    NeedKid,
    #[error("the JWT's 'alg' does not match the algorithm of the key its 'kid' names")]
    AlgorithmMismatch,
    #[error("the JWT signature does not verify; send the token exactly as issued")]
    BadSignature,
    #[error("the JWT's issuer is not accepted; send a token issued by '{0}'")]
    WrongIssuer(String),
    #[error(
        "the JWT's audience does not include this service; request a token with audience '{0}'"
    )]
    WrongAudience(String),
    #[error("the JWT has expired; request a fresh token")]
    Expired,
    #[error("the JWT is not valid yet ('nbf' is in the future); check the clocks")]
    NotYetValid,
    #[error("the JWT was issued in the future ('iat'); check the issuer's clock")]
    IssuedInFuture,
    #[error("the JWT has no '{0}' claim")]
    MissingClaim(String),
    #[error("the JWT's '{0}' claim has the wrong type or an invalid value")]
    InvalidClaim(String),
    #[error(
        "the JWT's 'sub' and 'kubernetes.io' claims name different service accounts; a \
         token the cluster issued has them agree: request a new one"
    )]
    ClaimsDisagree,
    #[error(
        "the JWT's '{0}' claim has the form of a SPIFFE ID, which only a client certificate \
         may carry; use the workload's certificate, or a token whose caller claim is not a \
         spiffe:// URI"
    )]
    ForeignIdForm(String),
    #[error(
        "the JWT's '{0}' claim has the form of a development token's caller id ('dev:…'), \
         which only a static development token may carry; use a token whose caller claim \
         does not start with dev:"
    )]
    DevIdForm(String),
}

impl Error {
    /// A short name of the failed check, for logs and metrics.
    pub fn check(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::UnsupportedAlgorithm(_) => "alg",
            Error::CriticalHeader => "crit",
            Error::KeysUnavailable => "keys_unavailable",
            Error::UnknownKey { .. } => "unknown_kid",
            Error::NeedKid => "no_kid",
            Error::AlgorithmMismatch => "alg_key_mismatch",
            Error::BadSignature => "signature",
            Error::WrongIssuer(_) => "iss",
            Error::WrongAudience(_) => "aud",
            Error::Expired => "exp",
            Error::NotYetValid => "nbf",
            Error::IssuedInFuture => "iat",
            Error::MissingClaim(_) => "missing_claim",
            Error::InvalidClaim(_) | Error::ClaimsDisagree => "invalid_claim",
            Error::ForeignIdForm(_) | Error::DevIdForm(_) => "foreign_id_form",
        }
    }
}

/// A refusal and, when the signature was good, who was refused (for the log).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) error: Error,
    pub(crate) subject: Option<String>,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal {
            error,
            subject: None,
        }
    }
}

/// Verifies bearer JWTs against one issuer.
#[derive(Clone)]
pub(crate) struct JwtVerifier {
    issuer: String,
    audiences: Vec<String>,
    leeway: f64,
    caller_claim: String,
    keys: Arc<KeyStore>,
    /// Tokens that passed every check ([`super::verified`]).
    verified: Arc<VerifiedTokens>,
}

impl JwtVerifier {
    pub(crate) fn new(config: &JwtConfig, keys: Arc<KeyStore>) -> Self {
        Self {
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            leeway: config.leeway.as_secs_f64(),
            caller_claim: config.caller_claim.clone(),
            keys,
            verified: Arc::default(),
        }
    }

    /// The caller `token` stands for, now.
    pub(crate) fn verify(&self, token: &str) -> Result<Caller, Refusal> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.verify_at(token, now)
    }

    /// The caller `token` stands for at `now` (seconds since the epoch).
    pub(crate) fn verify_at(&self, token: &str, now: f64) -> Result<Caller, Refusal> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::Malformed("longer than 16 KiB").into());
        }
        // A token verified before, with the key set still in force, whose time claims
        // still hold: nothing else about it can have changed. The key set is read once,
        // for this and for a full verification.
        let digest = VerifiedTokens::digest(token);
        let current = self.keys.current();
        if let Some(keys) = &*current
            && let Some((caller, times)) = self.verified.get(&digest, keys)
            && self.check_times(&times, now).is_ok()
        {
            return Ok(caller);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Malformed("not three dot-separated parts").into());
        };

        let header = decode_object(header_b64, "header")?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) => a.as_str(),
            Some(_) => return Err(Error::Malformed("'alg' is not a string").into()),
            None => return Err(Error::Malformed("no 'alg' header").into()),
        };
        let algorithm = Algorithm::from_jws(alg)
            .ok_or_else(|| Error::UnsupportedAlgorithm(known_algorithm(alg)))?;
        if header.contains_key("crit") {
            return Err(Error::CriticalHeader.into());
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(Error::Malformed("'kid' is not a string").into()),
        };

        let Some(keys) = &*current else {
            self.keys.request_refresh();
            return Err(Error::KeysUnavailable.into());
        };
        let key = match keys.find(kid, algorithm) {
            Lookup::Found(key) => key,
            Lookup::UnknownKid => {
                let refreshing = self.keys.request_refresh();
                tracing::debug!(refreshing, "JWT names an unknown kid");
                return Err(Error::UnknownKey { refreshing }.into());
            }
            Lookup::AlgorithmMismatch => return Err(Error::AlgorithmMismatch.into()),
            Lookup::NeedKid => return Err(Error::NeedKid.into()),
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| Error::Malformed("the signature is not base64url"))?;
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        if !key.verify(signed.as_bytes(), &signature) {
            return Err(Error::BadSignature.into());
        }

        // The signature holds: from here on the claims are the issuer's word.
        let claims = decode_object(payload_b64, "payload")?;
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        let (caller, times) = self.check_claims(&claims, now).map_err(|error| Refusal {
            error,
            subject: subject.clone(),
        })?;
        self.verified.insert(digest, &caller, keys, times);
        Ok(caller)
    }

    /// The time claims' rule: `exp` not passed, `nbf` reached, `iat` not in the future,
    /// each with `leeway`.
    fn check_times(&self, times: &Times, now: f64) -> Result<(), Error> {
        if now >= times.exp + self.leeway {
            return Err(Error::Expired);
        }
        if let Some(nbf) = times.nbf
            && now + self.leeway < nbf
        {
            return Err(Error::NotYetValid);
        }
        if let Some(iat) = times.iat
            && iat > now + self.leeway
        {
            return Err(Error::IssuedInFuture);
        }
        Ok(())
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: f64,
    ) -> Result<(Caller, Times), Error> {
        // iss: required, exact.
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(_)) => return Err(Error::WrongIssuer(self.issuer.clone())),
            Some(_) => return Err(Error::InvalidClaim("iss".into())),
            None => return Err(Error::MissingClaim("iss".into())),
        }
        // aud: required; a string or an array of strings naming one of ours.
        let accepted = |a: &str| self.audiences.iter().any(|ours| ours == a);
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => accepted(a),
            Some(Value::Array(list)) => {
                let mut ok = false;
                for a in list {
                    match a {
                        Value::String(a) => ok |= accepted(a),
                        _ => return Err(Error::InvalidClaim("aud".into())),
                    }
                }
                ok
            }
            Some(_) => return Err(Error::InvalidClaim("aud".into())),
            None => return Err(Error::MissingClaim("aud".into())),
        };
        if !audience_ok {
            return Err(Error::WrongAudience(
                self.audiences.first().cloned().unwrap_or_default(),
            ));
        }
        // exp: required. nbf, iat: checked when present. All strictly numeric.
        let times = Times {
            exp: numeric_date(claims, "exp")?.ok_or(Error::MissingClaim("exp".into()))?,
            nbf: numeric_date(claims, "nbf")?,
            iat: numeric_date(claims, "iat")?,
        };
        self.check_times(&times, now)?;

        let id = match claims.get(&self.caller_claim) {
            // A SPIFFE ID is a certificate's name; a token naming one would match rules
            // written for that workload (rules also bind `spiffe://` patterns to
            // certificate sources; this refuses it at the door as well).
            Some(Value::String(id)) if crate::caller::has_spiffe_form(id) => {
                return Err(Error::ForeignIdForm(self.caller_claim.clone()));
            }
            Some(Value::String(id)) if crate::caller::has_dev_form(id) => {
                return Err(Error::DevIdForm(self.caller_claim.clone()));
            }
            Some(Value::String(id)) if is_clean(id) => id.clone(),
            Some(_) => return Err(Error::InvalidClaim(self.caller_claim.clone())),
            None => return Err(Error::MissingClaim(self.caller_claim.clone())),
        };
        let mut caller = Caller::new(id, Source::Jwt).with_attribute(attr::ISSUER, &self.issuer);
        if let Some(sub) = claims.get("sub") {
            match sub {
                Value::String(s) if is_clean(s) => caller = caller.with_attribute(attr::SUBJECT, s),
                _ => return Err(Error::InvalidClaim("sub".into())),
            }
        }
        if let Some((namespace, service_account)) = kubernetes(claims)? {
            caller = caller
                .with_attribute(attr::NAMESPACE, namespace)
                .with_attribute(attr::SERVICE_ACCOUNT, service_account);
        }
        Ok((caller, times))
    }
}

/// `(namespace, service account)` of a Kubernetes service-account token: from the
/// `kubernetes.io` claim and from `sub` (`system:serviceaccount:NS:NAME`); when both
/// are present they must agree. `None` for other tokens.
fn kubernetes(claims: &Map<String, Value>) -> Result<Option<(String, String)>, Error> {
    let invalid = || Error::InvalidClaim("kubernetes.io".into());
    let from_sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("system:serviceaccount:"))
        .map(|rest| {
            rest.split_once(':')
                .filter(|(ns, sa)| is_name(ns) && is_name(sa))
                .map(|(ns, sa)| (ns.to_owned(), sa.to_owned()))
                .ok_or_else(|| Error::InvalidClaim("sub".into()))
        })
        .transpose()?;
    let from_claim = match claims.get("kubernetes.io") {
        None => None,
        Some(Value::Object(k8s)) => {
            let namespace = k8s.get("namespace").and_then(Value::as_str);
            let name = k8s
                .get("serviceaccount")
                .and_then(|sa| sa.get("name"))
                .and_then(Value::as_str);
            // The member at fault, named: a token with a partial claim is a puzzle.
            match (namespace, name) {
                (Some(ns), Some(sa)) if is_name(ns) && is_name(sa) => {
                    Some((ns.to_owned(), sa.to_owned()))
                }
                (Some(ns), _) if !is_name(ns) => {
                    return Err(Error::InvalidClaim("kubernetes.io.namespace".into()));
                }
                (None, _) => return Err(Error::MissingClaim("kubernetes.io.namespace".into())),
                (_, None) => {
                    return Err(Error::MissingClaim(
                        "kubernetes.io.serviceaccount.name".into(),
                    ));
                }
                _ => {
                    return Err(Error::InvalidClaim(
                        "kubernetes.io.serviceaccount.name".into(),
                    ));
                }
            }
        }
        Some(_) => return Err(invalid()),
    };
    match (from_sub, from_claim) {
        (Some(a), Some(b)) if a != b => Err(Error::ClaimsDisagree),
        (a, b) => Ok(b.or(a)),
    }
}

/// A Kubernetes name as it may appear in a namespace or service account: a DNS
/// subdomain (lowercase alphanumerics, `-`, `.`), at most 253 bytes. Anything else
/// in these claims is refused rather than passed on to prefix templates.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s != "."
        && s != ".."
}

/// A non-empty claim value, at most 1 KiB, without control characters, line
/// separators or format characters (a bidi override in a caller id would display it,
/// in the audit log and in messages, as another).
fn is_clean(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024 && !crate::core::text::breaks_or_hides(s)
}

/// A NumericDate claim: absent, or a finite JSON number (anything else is refused,
/// never treated as absent).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Error> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| Error::InvalidClaim(name.into())),
        Some(_) => Err(Error::InvalidClaim(name.into())),
    }
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, Error> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        Error::Malformed(if what == "header" {
            "the header is not base64url"
        } else {
            "the payload is not base64url"
        })
    })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::Malformed(if what == "header" {
            "the header is not a JSON object"
        } else {
            "the payload is not a JSON object"
        })),
        // Not JSON at all: text that is not UTF-8, a number no 64-bit float holds
        // (`1e400`), `NaN`.
        Err(_) => Err(Error::Malformed(if what == "header" {
            "the header is not valid JSON (UTF-8 text, numbers within a 64-bit float)"
        } else {
            "the payload is not valid JSON (UTF-8 text, numbers within a 64-bit float)"
        })),
    }
}

/// The name of a well-known but refused algorithm, to echo in the message; anything
/// else (attacker-chosen text) is not echoed.
fn known_algorithm(alg: &str) -> Option<&'static str> {
    [
        "none", "HS256", "HS384", "HS512", "RS384", "RS512", "PS256", "PS384", "PS512", "ES384",
        "ES512", "ES256K", "Ed25519", "Ed448",
    ]
    .into_iter()
    .find(|known| *known == alg)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::jwks::KeySet;
    use ring::rand::SystemRandom;
    use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;
    use std::sync::OnceLock;

    pub(crate) const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    pub(crate) const AUDIENCE: &str = "storage-grants";
    pub(crate) const NOW: f64 = 1_750_000_000.0;

    /// A signing key of each accepted kind, generated once per test run.
    pub(crate) enum Signer {
        Rsa(RsaKeyPair),
        Ec(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl Signer {
        pub(crate) fn rsa() -> &'static Signer {
            static KEY: OnceLock<Signer> = OnceLock::new();
            KEY.get_or_init(|| {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
                let der = key.to_pkcs8_der().unwrap();
                Signer::Rsa(RsaKeyPair::from_pkcs8(der.as_bytes()).unwrap())
            })
        }

        pub(crate) fn ec() -> &'static Signer {
            static KEY: OnceLock<Signer> = OnceLock::new();
            KEY.get_or_init(|| {
                let rng = SystemRandom::new();
                let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
                Signer::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
            })
        }

        pub(crate) fn ed() -> &'static Signer {
            static KEY: OnceLock<Signer> = OnceLock::new();
            KEY.get_or_init(|| {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
                Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
            })
        }

        pub(crate) fn alg(&self) -> &'static str {
            match self {
                Signer::Rsa(_) => "RS256",
                Signer::Ec(_) => "ES256",
                Signer::Ed(_) => "EdDSA",
            }
        }

        /// The public JWK of this key, with `kid`.
        pub(crate) fn jwk(&self, kid: &str) -> Value {
            let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            match self {
                Signer::Rsa(k) => {
                    let c: sig::RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                    json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
                }
                Signer::Ec(k) => {
                    let p = k.public_key().as_ref();
                    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])})
                }
                Signer::Ed(k) => {
                    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(k.public_key().as_ref())})
                }
            }
        }

        pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            match self {
                Signer::Rsa(k) => {
                    let mut out = vec![0; k.public().modulus_len()];
                    k.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut out)
                        .unwrap();
                    out
                }
                Signer::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
                Signer::Ed(k) => k.sign(message).as_ref().to_vec(),
            }
        }
    }

    /// A compact JWS of `header` and `claims`, signed by `signer`.
    pub(crate) fn token(signer: &Signer, header: &Value, claims: &Value) -> String {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signed = format!("{}.{}", b64(header), b64(claims));
        let signature = URL_SAFE_NO_PAD.encode(signer.sign(signed.as_bytes()));
        format!("{signed}.{signature}")
    }

    /// Claims of a Kubernetes projected service-account token, valid at `NOW`.
    pub(crate) fn k8s_claims() -> Value {
        json!({
            "aud": [AUDIENCE],
            "exp": NOW as i64 + 3600,
            "iat": NOW as i64 - 60,
            "nbf": NOW as i64 - 60,
            "iss": ISSUER,
            "sub": "system:serviceaccount:billing:reporter",
            "kubernetes.io": {
                "namespace": "billing",
                "pod": {"name": "reporter-7d9f", "uid": "1b2c3d4e-0000-4000-8000-000000000001"},
                "serviceaccount": {"name": "reporter", "uid": "5f6a7b8c-0000-4000-8000-000000000002"}
            }
        })
    }

    pub(crate) fn config() -> JwtConfig {
        JwtConfig {
            issuer: ISSUER.into(),
            audiences: vec![AUDIENCE.into()],
            jwks_file: Some("/nonexistent".into()),
            jwks_url: None,
            jwks_ca_file: None,
            jwks_token_file: None,
            leeway: Duration::from_secs(30),
            refresh_interval: default_refresh(),
            min_refresh_interval: default_min_refresh(),
            fetch_timeout: default_fetch_timeout(),
            caller_claim: "sub".into(),
        }
    }

    /// A verifier trusting `rsa-1`, `ec-1` and `ed-1`.
    pub(crate) fn verifier() -> JwtVerifier {
        let jwks = json!({"keys": [
            Signer::rsa().jwk("rsa-1"), Signer::ec().jwk("ec-1"), Signer::ed().jwk("ed-1")
        ]});
        let keys = KeySet::parse(jwks.to_string().as_bytes()).unwrap();
        JwtVerifier::new(&config(), Arc::new(KeyStore::fixed(keys)))
    }

    fn header(signer: &Signer, kid: &str) -> Value {
        json!({"alg": signer.alg(), "kid": kid})
    }

    fn verify(token: &str) -> Result<Caller, Error> {
        verifier().verify_at(token, NOW).map_err(|r| r.error)
    }

    fn with(claims: Value, f: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut claims = claims;
        f(claims.as_object_mut().unwrap());
        claims
    }

    #[test]
    fn rs256_kubernetes_token_is_accepted_with_its_attributes() {
        let t = token(
            Signer::rsa(),
            &header(Signer::rsa(), "rsa-1"),
            &k8s_claims(),
        );
        let caller = verify(&t).unwrap();
        assert_eq!(caller.id(), "system:serviceaccount:billing:reporter");
        assert_eq!(caller.source(), Source::Jwt);
        assert_eq!(caller.attribute(attr::ISSUER), Some(ISSUER));
        assert_eq!(
            caller.attribute(attr::SUBJECT),
            Some("system:serviceaccount:billing:reporter")
        );
        assert_eq!(caller.attribute(attr::NAMESPACE), Some("billing"));
        assert_eq!(caller.attribute(attr::SERVICE_ACCOUNT), Some("reporter"));
    }

    #[test]
    fn es256_token_is_accepted() {
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &k8s_claims());
        assert_eq!(
            verify(&t).unwrap().id(),
            "system:serviceaccount:billing:reporter"
        );
    }

    #[test]
    fn eddsa_token_is_accepted() {
        let t = token(Signer::ed(), &header(Signer::ed(), "ed-1"), &k8s_claims());
        assert_eq!(
            verify(&t).unwrap().id(),
            "system:serviceaccount:billing:reporter"
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &k8s_claims());
        let forged = with(k8s_claims(), |c| {
            c.insert("sub".into(), json!("system:serviceaccount:admin:root"));
        });
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert_eq!(verify(&parts.join(".")), Err(Error::BadSignature));
    }

    #[test]
    fn tampered_signature_is_refused() {
        for signer in [Signer::rsa(), Signer::ec(), Signer::ed()] {
            let kid = match signer {
                Signer::Rsa(_) => "rsa-1",
                Signer::Ec(_) => "ec-1",
                Signer::Ed(_) => "ed-1",
            };
            let t = token(signer, &header(signer, kid), &k8s_claims());
            let (signed, s) = t.rsplit_once('.').unwrap();
            let mut bytes = URL_SAFE_NO_PAD.decode(s).unwrap();
            bytes[5] ^= 0x01;
            let t = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes));
            assert_eq!(verify(&t), Err(Error::BadSignature), "{}", signer.alg());
        }
    }

    #[test]
    fn token_signed_by_another_key_with_a_known_kid_is_refused() {
        let other = {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
        };
        let t = token(&other, &header(&other, "ed-1"), &k8s_claims());
        assert_eq!(verify(&t), Err(Error::BadSignature));
    }

    #[test]
    fn expired_jwt_is_unauthenticated() {
        let claims = with(k8s_claims(), |c| {
            c.insert("exp".into(), json!(NOW as i64 - 31));
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        let refusal = verifier().verify_at(&t, NOW).unwrap_err();
        assert_eq!(refusal.error, Error::Expired);
        // The signature held, so the log may say who it was.
        assert_eq!(
            refusal.subject.as_deref(),
            Some("system:serviceaccount:billing:reporter")
        );
    }

    #[test]
    fn expiry_within_leeway_is_tolerated() {
        let claims = with(k8s_claims(), |c| {
            c.insert("exp".into(), json!(NOW as i64 - 29));
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert!(verify(&t).is_ok());
    }

    #[test]
    fn nbf_in_the_future_is_refused() {
        let claims = with(k8s_claims(), |c| {
            c.insert("nbf".into(), json!(NOW as i64 + 120));
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert_eq!(verify(&t), Err(Error::NotYetValid));
    }

    #[test]
    fn iat_in_the_future_is_refused() {
        let claims = with(k8s_claims(), |c| {
            c.insert("iat".into(), json!(NOW as i64 + 120));
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert_eq!(verify(&t), Err(Error::IssuedInFuture));
    }

    /// A token that passed is remembered; a refused one is not; a remembered token
    /// still expires, still waits for `nbf`, and is checked again against a reloaded
    /// key set (which here no longer holds its key).
    #[test]
    fn a_remembered_token_is_checked_again_when_its_time_or_the_keys_change() {
        let v = verifier();
        let claims = k8s_claims();
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        let forged = format!("{}x", &t[..t.len() - 1]);
        assert!(v.verify_at(&forged, NOW).is_err());
        assert_eq!(v.verified.len(), 0);

        let first = v.verify_at(&t, NOW).unwrap();
        assert_eq!(v.verified.len(), 1);
        assert_eq!(v.verify_at(&t, NOW + 60.0).unwrap(), first);
        assert_eq!(v.verified.len(), 1);

        // exp is NOW + 3600, leeway 30 s; nbf is NOW - 60.
        assert_eq!(
            v.verify_at(&t, NOW + 3630.0).map_err(|r| r.error),
            Err(Error::Expired)
        );
        assert_eq!(
            v.verify_at(&t, NOW - 91.0).map_err(|r| r.error),
            Err(Error::NotYetValid)
        );
        assert_eq!(v.verify_at(&t, NOW).unwrap(), first);

        v.keys.replace(
            KeySet::parse(
                json!({"keys": [Signer::rsa().jwk("rsa-1")]})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap(),
        );
        assert_eq!(
            v.verify_at(&t, NOW).map_err(|r| r.error),
            Err(Error::UnknownKey { refreshing: true })
        );
    }

    #[test]
    fn time_claims_of_the_wrong_type_are_refused_not_ignored() {
        for name in ["exp", "nbf", "iat"] {
            let claims = with(k8s_claims(), |c| {
                c.insert(name.into(), json!("99999999999"));
            });
            let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
            assert_eq!(verify(&t), Err(Error::InvalidClaim(name.into())), "{name}");
        }
        let claims = with(k8s_claims(), |c| {
            c.remove("exp");
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert_eq!(verify(&t), Err(Error::MissingClaim("exp".into())));
    }

    #[test]
    fn wrong_audience_is_refused() {
        let claims = with(k8s_claims(), |c| {
            c.insert("aud".into(), json!(["https://kubernetes.default.svc"]));
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        let err = verify(&t).unwrap_err();
        assert_eq!(err, Error::WrongAudience(AUDIENCE.into()));
        assert!(
            err.to_string().contains("audience 'storage-grants'"),
            "{err}"
        );
        let claims = with(k8s_claims(), |c| {
            c.remove("aud");
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert_eq!(verify(&t), Err(Error::MissingClaim("aud".into())));
    }

    #[test]
    fn audience_as_a_single_string_is_accepted() {
        let claims = with(k8s_claims(), |c| {
            c.insert("aud".into(), json!(AUDIENCE));
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert!(verify(&t).is_ok());
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let claims = with(k8s_claims(), |c| {
            c.insert("iss".into(), json!("https://evil.example"));
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert_eq!(verify(&t), Err(Error::WrongIssuer(ISSUER.into())));
    }

    #[test]
    fn unknown_kid_is_refused_and_asks_for_a_refresh() {
        let t = token(
            Signer::ec(),
            &header(Signer::ec(), "rotated-2"),
            &k8s_claims(),
        );
        let v = verifier();
        // The first asks for the issuer's keys: a retry may pass.
        let first = v.verify_at(&t, NOW).unwrap_err().error;
        assert_eq!(first, Error::UnknownKey { refreshing: true });
        assert!(
            first.to_string().contains("retry in a few seconds"),
            "{first}"
        );
        // The next, moments later, finds them fetched already: not a matter of time.
        let next = v.verify_at(&t, NOW).unwrap_err().error;
        assert_eq!(next, Error::UnknownKey { refreshing: false });
        assert!(
            next.to_string()
                .contains("check the token comes from the configured issuer"),
            "{next}"
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let t = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "kid": "ec-1"})),
            b64(k8s_claims())
        );
        assert_eq!(verify(&t), Err(Error::UnsupportedAlgorithm(Some("none"))));
    }

    #[test]
    fn hs256_is_refused_even_with_an_oct_key_in_the_jwks() {
        let secret = b"shared-secret-of-at-least-32-bytes!!";
        let jwks = json!({"keys": [
            {"kty": "oct", "kid": "hmac-1", "k": URL_SAFE_NO_PAD.encode(secret)},
            Signer::ec().jwk("ec-1"),
        ]});
        let keys = KeySet::parse(jwks.to_string().as_bytes()).unwrap();
        let v = JwtVerifier::new(&config(), Arc::new(KeyStore::fixed(keys)));
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let signed = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "kid": "hmac-1"})),
            b64(k8s_claims())
        );
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            signed.as_bytes(),
        );
        let t = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        assert_eq!(
            v.verify_at(&t, NOW).unwrap_err().error,
            Error::UnsupportedAlgorithm(Some("HS256"))
        );
    }

    #[test]
    fn alg_confusion_with_a_key_of_another_type_is_refused() {
        // Signed with the EC key but naming the RSA key's kid.
        let t = token(
            Signer::ec(),
            &json!({"alg": "ES256", "kid": "rsa-1"}),
            &k8s_claims(),
        );
        assert_eq!(verify(&t), Err(Error::AlgorithmMismatch));
    }

    #[test]
    fn crit_header_is_refused() {
        let t = token(
            Signer::ec(),
            &json!({"alg": "ES256", "kid": "ec-1", "crit": ["exp"]}),
            &k8s_claims(),
        );
        assert_eq!(verify(&t), Err(Error::CriticalHeader));
    }

    #[test]
    fn a_payload_that_is_not_json_is_told_from_one_that_is_not_an_object() {
        let b64 = |text: &[u8]| URL_SAFE_NO_PAD.encode(text);
        for (payload, says) in [
            (&br#"{"exp":1e400}"#[..], "not valid JSON"),
            (br#"{"exp":NaN}"#, "not valid JSON"),
            (b"{\"sub\":\"\xff\"}", "not valid JSON"),
            (b"[1]", "not a JSON object"),
        ] {
            let err = decode_object(&b64(payload), "payload")
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{payload:?}: {err}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for t in ["a.b", "a.b.c.d", "!!.e30.AA", "e30.e30.AA"] {
            assert!(matches!(verify(t), Err(Error::Malformed(_))), "{t}");
        }
        assert!(matches!(
            verify(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn kubernetes_claim_must_agree_with_sub() {
        let claims = with(k8s_claims(), |c| {
            c.insert("sub".into(), json!("system:serviceaccount:admin:root"));
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert_eq!(verify(&t), Err(Error::ClaimsDisagree));
        assert!(
            Error::ClaimsDisagree
                .to_string()
                .contains("different service accounts")
        );
    }

    #[test]
    fn a_partial_kubernetes_claim_names_the_member_at_fault() {
        for (claim, want) in [
            (
                json!({"namespace": "billing"}),
                Error::MissingClaim("kubernetes.io.serviceaccount.name".into()),
            ),
            (
                json!({"serviceaccount": {"name": "reporter"}}),
                Error::MissingClaim("kubernetes.io.namespace".into()),
            ),
            (
                json!({"namespace": "../x", "serviceaccount": {"name": "reporter"}}),
                Error::InvalidClaim("kubernetes.io.namespace".into()),
            ),
            (
                json!({"namespace": "billing", "serviceaccount": {"name": "Reporter!"}}),
                Error::InvalidClaim("kubernetes.io.serviceaccount.name".into()),
            ),
        ] {
            let claims = with(k8s_claims(), |c| {
                c.insert("kubernetes.io".into(), claim.clone());
            });
            let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
            assert_eq!(verify(&t), Err(want), "{claim}");
        }
    }

    #[test]
    fn namespace_that_could_escape_a_prefix_is_refused() {
        let claims = with(k8s_claims(), |c| {
            c.insert("sub".into(), json!("system:serviceaccount:../x:reporter"));
            c.remove("kubernetes.io");
        });
        let t = token(Signer::ec(), &header(Signer::ec(), "ec-1"), &claims);
        assert_eq!(verify(&t), Err(Error::InvalidClaim("sub".into())));
    }

    #[test]
    fn non_kubernetes_token_uses_the_configured_caller_claim() {
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "exp": NOW as i64 + 60,
            "sub": "7f3a", "email": "ci@example.com"
        });
        let mut cfg = config();
        cfg.caller_claim = "email".into();
        let v = JwtVerifier::new(&cfg, verifier().keys);
        let t = token(Signer::ed(), &header(Signer::ed(), "ed-1"), &claims);
        let caller = v.verify_at(&t, NOW).unwrap();
        assert_eq!(caller.id(), "ci@example.com");
        assert_eq!(caller.attribute(attr::SUBJECT), Some("7f3a"));
        assert_eq!(caller.attribute(attr::NAMESPACE), None);
        let claims = with(claims, |c| {
            c.remove("email");
        });
        let t = token(Signer::ed(), &header(Signer::ed(), "ed-1"), &claims);
        assert_eq!(
            v.verify_at(&t, NOW).unwrap_err().error,
            Error::MissingClaim("email".into())
        );
    }

    /// A valid token whose caller claim (`sub`) is `id`.
    fn naming(id: &str) -> String {
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "exp": NOW as i64 + 60, "sub": id
        });
        token(Signer::ed(), &header(Signer::ed(), "ed-1"), &claims)
    }

    #[test]
    fn caller_claim_in_the_form_of_a_spiffe_id_is_refused() {
        // Only a verified certificate may name a SPIFFE ID; a token that claims one
        // would otherwise match rules written for that workload.
        for id in [
            "spiffe://prod.example/ns/finance/sa/reporting",
            "SPIFFE://prod.example/ns/finance/sa/reporting",
        ] {
            let t = naming(id);
            assert_eq!(verify(&t), Err(Error::ForeignIdForm("sub".into())), "{id}");
        }
    }

    #[test]
    fn caller_claims_that_break_or_hide_text_are_refused() {
        // A bidi override would make the id display, in the audit log and in
        // messages, as another; a line separator would break the log's line.
        for id in ["user-\u{202E}evil", "a\u{200B}b", "a\u{2028}b", "a\nb"] {
            let t = naming(id);
            assert_eq!(verify(&t), Err(Error::InvalidClaim("sub".into())), "{id:?}");
        }
        let t = naming("ünïcödé-ok");
        assert_eq!(verify(&t).unwrap().id(), "ünïcödé-ok");
    }

    #[test]
    fn caller_claim_in_the_form_of_a_development_id_is_refused() {
        // Development tokens' callers are dev:…; a JWT naming one would match rules
        // written for that development caller.
        for id in ["dev:alice", "DEV:alice", " dev:alice"] {
            let t = naming(id);
            let err = verify(&t).unwrap_err();
            assert!(
                matches!(err, Error::DevIdForm(_) | Error::InvalidClaim(_)),
                "{id}: {err:?}"
            );
        }
        // A name that only contains it is anyone's.
        let t = naming("team-dev:alice");
        assert_eq!(verify(&t).unwrap().id(), "team-dev:alice");
    }

    #[test]
    fn messages_never_echo_the_token() {
        let t = token(Signer::ec(), &header(Signer::ec(), "nope"), &k8s_claims());
        let err = verify(&t).unwrap_err();
        for part in t.split('.') {
            assert!(!err.to_string().contains(part));
        }
    }
}
