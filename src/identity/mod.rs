//! Who is calling: every identity source produces one [`Caller`].
//!
//! Grant code sees only `Caller`. The sources, each in its own module:
//! - [`mtls`]: mTLS terminated here; the client certificate's SPIFFE ID;
//! - [`jwt`] (keys from [`jwks`]): a bearer JWT, e.g. a Kubernetes service-account token;
//! - [`xfcc`]: a client certificate forwarded by a trusted mesh proxy;
//! - [`dev_token`]: static development tokens, refused unless `dev_mode`.
//!
//! [`Authenticator`] tries the sources in the operator's order (`identity.order`,
//! default `mtls, jwt, xfcc, dev_token`, keeping only configured ones). The first
//! source whose credential is *present* decides: a present but invalid credential is
//! refused, never skipped in favour of the next source (else a bad certificate plus a
//! weaker credential would pass as the weaker one). "Present" means: a verified client
//! certificate chain for `mtls`; an `authorization` value for `jwt` and `dev_token`;
//! an XFCC header from a trusted peer for `xfcc`.
//!
//! Bearer tokens: with both `jwt` and `dev_token` active, a token with exactly two dots
//! (a compact JWS) is a JWT and anything else a development token; with only one of
//! them active, every bearer token goes to it.
//!
//! [`spiffe`] parses SPIFFE IDs for the two certificate sources.

pub mod dev_token;
pub mod jwks;
pub mod jwt;
pub mod mtls;
pub mod spiffe;
mod verified;
pub mod xfcc;

use crate::core::text::SecretUrl;
use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use tonic::metadata::MetadataMap;

pub use crate::caller::{Caller, Source, attr};
use crate::secret::Secret;
use spiffe::{SpiffeId, TrustDomains};

pub use jwt::JwtConfig;
pub use mtls::MtlsConfig;
pub use xfcc::XfccConfig;

/// How callers prove who they are: `[identity]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The order in which sources are tried. Unset: `mtls, jwt, xfcc, dev_token`,
    /// keeping the configured ones. When set, it must name every configured source and
    /// no other.
    pub order: Option<Vec<SourceKind>>,
    /// Allows static development tokens. Never set this in production: a token is a
    /// shared secret with no expiry.
    pub dev_mode: bool,
    /// Static bearer tokens, each mapped to a caller id. Development only.
    pub dev_tokens: Vec<DevToken>,
    /// mTLS terminated by this service (`[identity.mtls]`).
    pub mtls: Option<MtlsConfig>,
    /// Bearer JWTs (`[identity.jwt]`).
    pub jwt: Option<JwtConfig>,
    /// Mesh-forwarded client certificates (`[identity.xfcc]`); off unless enabled.
    pub xfcc: XfccConfig,
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

impl fmt::Debug for DevToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevToken")
            .field("token", &self.token)
            .field("caller", &self.caller)
            .finish()
    }
}

/// An identity source, as named in `identity.order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// `mtls`
    Mtls,
    /// `jwt`
    Jwt,
    /// `xfcc`
    Xfcc,
    /// `dev_token`
    DevToken,
}

impl SourceKind {
    const DEFAULT_ORDER: [SourceKind; 4] = [Self::Mtls, Self::Jwt, Self::Xfcc, Self::DevToken];

    fn name(self) -> &'static str {
        match self {
            Self::Mtls => "mtls",
            Self::Jwt => "jwt",
            Self::Xfcc => "xfcc",
            Self::DevToken => "dev_token",
        }
    }
}

/// A configuration value that parses but makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The offending setting, e.g. `identity.jwt.audiences`.
    pub field: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

// === impl IdentityConfig ===

impl IdentityConfig {
    /// Checks what serde cannot: dev tokens only with `dev_mode`, one JWKS source,
    /// well-formed trust domains and URLs, an `order` that names exactly the configured
    /// sources.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError {
                field,
                message: message.to_owned(),
            })
        };
        if !self.dev_tokens.is_empty() && !self.dev_mode {
            return invalid(
                "identity.dev_tokens",
                "static development tokens are refused unless identity.dev_mode = true; \
                 they are shared secrets with no expiry",
            );
        }
        for (i, t) in self.dev_tokens.iter().enumerate() {
            if t.token.expose().len() < 16 {
                return invalid(
                    "identity.dev_tokens.token",
                    "must be at least 16 characters",
                );
            }
            if t.token.expose().trim() != t.token.expose() {
                return invalid(
                    "identity.dev_tokens.token",
                    "must not start or end with whitespace: HTTP trims header values, so \
                     no caller could present it",
                );
            }
            // One token for two callers would make the caller depend on the list's
            // order; the message names the entries, never the token.
            if let Some(j) = self.dev_tokens[..i]
                .iter()
                .position(|earlier| earlier.token.expose() == t.token.expose())
            {
                return Err(ConfigError {
                    field: "identity.dev_tokens.token",
                    message: format!(
                        "entries {} and {} (callers '{}' and '{}') have the same token; give \
                         each caller its own",
                        j + 1,
                        i + 1,
                        self.dev_tokens[j].caller,
                        t.caller
                    ),
                });
            }
            if crate::core::text::breaks_or_hides(&t.caller)
                || t.caller.trim() != t.caller
                || !t.caller.starts_with(crate::caller::DEV_PREFIX)
                || t.caller.len() == crate::caller::DEV_PREFIX.len()
            {
                return invalid(
                    "identity.dev_tokens.caller",
                    "must be a caller id that starts with 'dev:' (e.g. dev:alice), without \
                     control or format characters or a space at its end: ids of that form \
                     are kept to development tokens, and rules match them exactly",
                );
            }
        }
        if let Some(m) = &self.mtls {
            for (field, path) in [
                ("identity.mtls.ca_file", &m.ca_file),
                ("identity.mtls.cert_file", &m.cert_file),
                ("identity.mtls.key_file", &m.key_file),
            ] {
                if path.as_os_str().is_empty() {
                    return invalid(field, "must name a PEM file");
                }
            }
            validate_trust_domains("identity.mtls.trust_domains", &m.trust_domains)?;
            if m.handshake_timeout.is_zero() {
                return invalid("identity.mtls.handshake_timeout", "must be more than 0s");
            }
        }
        if let Some(j) = &self.jwt {
            validate_jwt(j)?;
        }
        if self.xfcc.enabled {
            if self.xfcc.trusted_peers.is_empty() {
                return invalid(
                    "identity.xfcc.trusted_peers",
                    "must name the proxies allowed to set x-forwarded-client-cert, \
                     e.g. [\"127.0.0.1/32\", \"::1/128\"] for a sidecar",
                );
            }
            validate_trust_domains("identity.xfcc.trust_domains", &self.xfcc.trust_domains)?;
        }
        if let Some(order) = &self.order {
            for (i, kind) in order.iter().enumerate() {
                if order[..i].contains(kind) {
                    return Err(ConfigError {
                        field: "identity.order",
                        message: format!("names '{}' twice", kind.name()),
                    });
                }
                if !self.configured(*kind) {
                    return Err(ConfigError {
                        field: "identity.order",
                        message: format!(
                            "names '{}', which is not configured{}",
                            kind.name(),
                            match kind {
                                SourceKind::Mtls => "; add [identity.mtls]",
                                SourceKind::Jwt => "; add [identity.jwt]",
                                SourceKind::Xfcc => "; set identity.xfcc.enabled = true",
                                SourceKind::DevToken =>
                                    "; set identity.dev_mode and add [[identity.dev_tokens]]",
                            }
                        ),
                    });
                }
            }
            for kind in SourceKind::DEFAULT_ORDER {
                if self.configured(kind) && !order.contains(&kind) {
                    return Err(ConfigError {
                        field: "identity.order",
                        message: format!(
                            "'{}' is configured but not in identity.order; add it or remove its settings",
                            kind.name()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Makes the relative paths (certificates, keys, JWKS file) relative to
    /// `base_dir`, the config file's directory.
    pub fn resolve_paths(&mut self, base_dir: &Path) {
        let resolve = |p: &mut std::path::PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base_dir.join(&*p);
            }
        };
        if let Some(m) = &mut self.mtls {
            resolve(&mut m.ca_file);
            resolve(&mut m.cert_file);
            resolve(&mut m.key_file);
        }
        if let Some(j) = &mut self.jwt {
            if let Some(p) = &mut j.jwks_file {
                resolve(p);
            }
            if let Some(p) = &mut j.jwks_ca_file {
                resolve(p);
            }
            if let Some(p) = &mut j.jwks_token_file {
                resolve(p);
            }
        }
    }

    /// Whether `kind` has what it needs to run.
    fn configured(&self, kind: SourceKind) -> bool {
        match kind {
            SourceKind::Mtls => self.mtls.is_some(),
            SourceKind::Jwt => self.jwt.is_some(),
            SourceKind::Xfcc => self.xfcc.enabled,
            SourceKind::DevToken => self.dev_mode && !self.dev_tokens.is_empty(),
        }
    }

    /// The sources in the order they are tried.
    pub fn effective_order(&self) -> Vec<SourceKind> {
        match &self.order {
            Some(order) => order
                .iter()
                .copied()
                .filter(|k| self.configured(*k))
                .collect(),
            None => SourceKind::DEFAULT_ORDER
                .into_iter()
                .filter(|k| self.configured(*k))
                .collect(),
        }
    }
}

fn validate_trust_domains(field: &'static str, domains: &[String]) -> Result<(), ConfigError> {
    if domains.is_empty() {
        return Err(ConfigError {
            field,
            message: "must name at least one SPIFFE trust domain, e.g. [\"prod.example\"]".into(),
        });
    }
    for d in domains {
        spiffe::validate_trust_domain(d).map_err(|e| ConfigError {
            field,
            message: format!("'{d}': {e}"),
        })?;
    }
    Ok(())
}

fn validate_jwt(j: &JwtConfig) -> Result<(), ConfigError> {
    let invalid = |field, message: &str| {
        Err(ConfigError {
            field,
            message: message.to_owned(),
        })
    };
    if j.issuer.is_empty() {
        return invalid(
            "identity.jwt.issuer",
            "must be the exact 'iss' of accepted tokens",
        );
    }
    if j.audiences.is_empty() || j.audiences.iter().any(String::is_empty) {
        return invalid(
            "identity.jwt.audiences",
            "must name at least one non-empty audience, e.g. [\"storage-grants\"]",
        );
    }
    match (&j.jwks_file, &j.jwks_url) {
        (Some(_), Some(_)) | (None, None) => {
            return invalid("identity.jwt", "set exactly one of jwks_file and jwks_url");
        }
        (None, Some(url)) => {
            jwks_uri(url).map_err(|message| ConfigError {
                field: "identity.jwt.jwks_url",
                message,
            })?;
        }
        (Some(_), None) => {
            if j.jwks_ca_file.is_some() {
                return invalid("identity.jwt.jwks_ca_file", "only applies with jwks_url");
            }
            if j.jwks_token_file.is_some() {
                return invalid("identity.jwt.jwks_token_file", "only applies with jwks_url");
            }
        }
    }
    if j.leeway > std::time::Duration::from_secs(300) {
        return invalid("identity.jwt.leeway", "must be at most 5m");
    }
    if j.refresh_interval < std::time::Duration::from_secs(1) {
        return invalid("identity.jwt.refresh_interval", "must be at least 1s");
    }
    if j.min_refresh_interval < std::time::Duration::from_secs(1) {
        return invalid("identity.jwt.min_refresh_interval", "must be at least 1s");
    }
    if j.fetch_timeout.is_zero() {
        return invalid("identity.jwt.fetch_timeout", "must be more than 0s");
    }
    if j.caller_claim.is_empty() {
        return invalid(
            "identity.jwt.caller_claim",
            "must name a claim, e.g. \"sub\"",
        );
    }
    Ok(())
}

/// A JWKS URL: `https://…`, or `http://` to a loopback host (a local agent or test).
/// Its errors quote the URL without user info or query ([`SecretUrl`]'s `Display`).
fn jwks_uri(url: &SecretUrl) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .expose()
        .parse()
        .map_err(|_| format!("'{url}' is not a URL"))?;
    let host = uri.host().unwrap_or("");
    let loopback = crate::core::text::is_loopback_host(host);
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(uri),
        Some("http") if loopback => Ok(uri),
        Some("http") => Err(format!(
            "'{url}': use https (plain http only to a loopback address), \
             else anyone on the path can swap the issuer's keys"
        )),
        _ => Err(format!("'{url}' must be an https:// URL")),
    }
}

/// The caller a certificate's URI SANs stand for: exactly one, a SPIFFE ID in
/// `domains`. Shared by [`mtls`] and [`xfcc`].
fn spiffe_caller(
    uris: &[impl AsRef<str>],
    domains: &TrustDomains,
    source: Source,
) -> Result<Caller, SanError> {
    let uri = match uris {
        [] => return Err(SanError::NoUri),
        [one] => one.as_ref(),
        several => return Err(SanError::SeveralUris(several.len())),
    };
    let id: SpiffeId = uri.parse().map_err(SanError::NotSpiffe)?;
    if !domains.contains(&id) {
        return Err(SanError::UntrustedDomain(id.trust_domain().to_owned()));
    }
    let mut caller =
        Caller::new(id.as_str(), source).with_attribute(attr::TRUST_DOMAIN, id.trust_domain());
    if let Some((namespace, service_account)) = id.kubernetes() {
        caller = caller
            .with_attribute(attr::NAMESPACE, namespace)
            .with_attribute(attr::SERVICE_ACCOUNT, service_account);
    }
    Ok(caller)
}

// === errors ===

/// Why a certificate (direct or forwarded) does not identify a caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SanError {
    #[error("the certificate cannot be parsed")]
    Unreadable,
    #[error("the header is malformed: {0}")]
    Malformed(xfcc::ParseError),
    #[error(
        "it has no URI SAN; it must carry exactly one SPIFFE ID, spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME"
    )]
    NoUri,
    #[error("it has {0} URI SANs; it must carry exactly one SPIFFE ID")]
    SeveralUris(usize),
    #[error("{0}")]
    NotSpiffe(spiffe::Error),
    #[error(
        "trust domain '{0}' is not accepted by this service; use a certificate from an accepted trust domain"
    )]
    UntrustedDomain(String),
}

impl SanError {
    /// A short name of the failed check, for logs.
    pub fn check(&self) -> &'static str {
        match self {
            SanError::Unreadable => "unreadable",
            SanError::Malformed(_) => "malformed",
            SanError::NoUri => "no_uri_san",
            SanError::SeveralUris(_) => "several_uri_sans",
            SanError::NotSpiffe(_) => "not_spiffe",
            SanError::UntrustedDomain(_) => "trust_domain",
        }
    }
}

/// Why no caller could be identified. Messages tell the caller what to change and
/// never echo the credential presented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request carries no identity at all (e.g. it skipped authentication).
    #[error("no credentials were presented")]
    Missing,
    /// No configured source found a credential; the text says what is accepted.
    #[error("no credentials: {0}")]
    NoCredentials(String),
    #[error("malformed authorization metadata: expected one 'Bearer <token>'")]
    Malformed,
    #[error("the bearer token is not recognised")]
    UnknownToken,
    #[error("client certificate refused: {0}")]
    ClientCertificate(SanError),
    #[error("x-forwarded-client-cert refused: {0}")]
    ForwardedCertificate(SanError),
    #[error("bearer JWT refused: {0}")]
    Jwt(jwt::Error),
}

/// Why the authenticator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("identity.jwt.jwks_file: {0}")]
    JwksFile(#[source] jwks::LoadError),
    #[error("identity.jwt.jwks_url: {0}")]
    JwksUrl(String),
    /// The setting at fault, and why.
    #[error("{0}: {1}")]
    Jwks(&'static str, String),
}

/// What `--check-config` can tell of a JWKS URL's client without fetching: the URL and
/// `jwks_ca_file` are usable.
///
/// # Errors
/// As [`Authenticator::start`] would meet them.
pub fn check_jwks_client(config: &IdentityConfig) -> Result<(), SetupError> {
    let Some(j) = config.jwt.as_ref().filter(|j| j.jwks_file.is_none()) else {
        return Ok(());
    };
    let Some(url) = &j.jwks_url else {
        return Ok(());
    };
    jwks_fetcher(j, url).map(drop)
}

/// The client of `url` that `j` configures: its CA file read, its token file named.
fn jwks_fetcher(j: &jwt::JwtConfig, url: &SecretUrl) -> Result<jwks::fetch::Fetcher, SetupError> {
    let uri = jwks_uri(url).map_err(SetupError::JwksUrl)?;
    jwks::fetch::Fetcher::new(
        uri,
        j.jwks_ca_file.as_deref(),
        j.jwks_token_file.clone(),
        j.fetch_timeout,
    )
    .map_err(|(field, why)| SetupError::Jwks(field, why))
}

// === Authenticator ===

/// Identifies callers, trying each configured source in order.
///
/// Cheap to clone (shared state). Dropping the last clone stops the JWKS refresher.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    order: Vec<SourceKind>,
    mtls: Option<TrustDomains>,
    jwt: Option<jwt::JwtVerifier>,
    xfcc: xfcc::Xfcc,
    dev_tokens: dev_token::DevTokens,
    /// What to tell a caller that presented nothing.
    accepted: String,
    _refresher: Option<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("order", &self.inner.order)
            .finish_non_exhaustive()
    }
}

/// What a request presents to the identity sources.
pub struct Presented<'a> {
    /// The request metadata (`x-forwarded-client-cert`).
    pub metadata: &'a MetadataMap,
    /// The bearer token (from `authorization`, read once for every source).
    pub bearer: Bearer<'a>,
    /// The TLS peer's verified certificate chain, leaf first (mTLS only).
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The TCP peer's address (for `identity.xfcc.trusted_peers`).
    pub remote_addr: Option<SocketAddr>,
    /// Where the connection keeps the caller its certificate names (mTLS only).
    pub connection: Option<&'a mtls::ConnectionCaller>,
}

impl<'a> Presented<'a> {
    /// What `metadata` (its `authorization` included) and the connection present.
    pub fn new(
        metadata: &'a MetadataMap,
        peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
        remote_addr: Option<SocketAddr>,
    ) -> Self {
        Self {
            metadata,
            bearer: bearer(metadata),
            peer_certs,
            remote_addr,
            connection: None,
        }
    }
}

/// The bearer token a request presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// None: no `authorization`.
    Absent,
    /// An `authorization` that is not exactly one `Bearer <token>` of visible ASCII.
    Malformed,
    /// The token.
    Token(&'a str),
}

impl<'a> Bearer<'a> {
    /// The token for bearer source `source`: `None` without one (the source does not
    /// apply), a refusal logged for `source` when it is malformed.
    fn token_for(self, source: &'static str) -> Option<Result<&'a str, Error>> {
        match self {
            Bearer::Absent => None,
            Bearer::Malformed => {
                let e = Error::Malformed;
                tracing::info!(source, check = "authorization", reason = %e, "caller refused");
                Some(Err(e))
            }
            Bearer::Token(token) => Some(Ok(token)),
        }
    }
}

/// Something the authenticator can read credentials from: a whole
/// `tonic::Request` (everything), or bare metadata (bearer tokens only: no peer
/// certificate, no peer address, so mTLS and XFCC never apply; fails closed).
pub trait Credentials {
    /// The credentials presented.
    fn presented(&self) -> Presented<'_>;
}

impl<T> Credentials for tonic::Request<T> {
    fn presented(&self) -> Presented<'_> {
        let peer_certs = self.peer_certs();
        // Looked up only where there is a certificate to read.
        let connection = peer_certs.as_ref().and_then(|_| self.extensions().get());
        Presented {
            connection,
            ..Presented::new(self.metadata(), peer_certs, self.remote_addr())
        }
    }
}

impl Credentials for MetadataMap {
    fn presented(&self) -> Presented<'_> {
        Presented::new(self, None, None)
    }
}

impl Authenticator {
    /// Builds the configured sources (of a validated config). With `[identity.jwt]`,
    /// loads the JWKS once and spawns its refresher, so call it inside the runtime: a
    /// `jwks_file` that cannot be loaded stops start-up; a `jwks_url` that cannot be
    /// fetched yet is logged and retried in the background (JWT calls are refused with
    /// "retry" until it loads).
    ///
    /// # Errors
    /// [`SetupError`] for an unusable JWKS file, or a JWKS URL client that cannot be
    /// built (unreadable `jwks_ca_file`).
    pub async fn start(config: &IdentityConfig) -> Result<Self, SetupError> {
        let order = config.effective_order();
        let mut refresher = None;
        let jwt = match &config.jwt {
            Some(j) if order.contains(&SourceKind::Jwt) => {
                let (source, from_file) = match (&j.jwks_file, &j.jwks_url) {
                    (Some(path), _) => (jwks::KeySource::File(path.clone()), true),
                    (None, Some(url)) => {
                        (jwks::KeySource::Url(Box::new(jwks_fetcher(j, url)?)), false)
                    }
                    (None, None) => {
                        return Err(SetupError::JwksUrl(
                            "set exactly one of jwks_file and jwks_url".into(),
                        ));
                    }
                };
                let store = Arc::new(jwks::KeyStore::new(source, j.min_refresh_interval));
                match store.refresh().await {
                    Ok(()) => {}
                    Err(e) if from_file => return Err(SetupError::JwksFile(e)),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "JWKS not loaded yet; retrying in the background, JWT calls are refused until then"
                    ),
                }
                refresher = Some(AbortOnDrop(tokio::spawn(
                    store
                        .clone()
                        .refresh_forever(j.refresh_interval, j.min_refresh_interval),
                )));
                Some(jwt::JwtVerifier::new(j, store))
            }
            _ => None,
        };
        if order.is_empty() {
            tracing::warn!("no identity source is configured: every call will be refused");
        }
        Ok(Self::assemble(config, order, jwt, refresher))
    }

    fn assemble(
        config: &IdentityConfig,
        order: Vec<SourceKind>,
        jwt: Option<jwt::JwtVerifier>,
        refresher: Option<AbortOnDrop>,
    ) -> Self {
        let mtls = config
            .mtls
            .as_ref()
            .filter(|_| order.contains(&SourceKind::Mtls))
            .map(|m| TrustDomains::new(&m.trust_domains));
        let accepted = order
            .iter()
            .map(|k| match k {
                SourceKind::Mtls => "connect with a client certificate carrying your SPIFFE ID",
                SourceKind::Jwt => "send 'authorization: Bearer <JWT>' metadata",
                SourceKind::Xfcc => "call through the service mesh",
                SourceKind::DevToken => "send 'authorization: Bearer <development token>' metadata",
            })
            .collect::<Vec<_>>()
            .join(", or ");
        let accepted = if accepted.is_empty() {
            "this service has no identity source configured".to_owned()
        } else {
            accepted
        };
        let dev_tokens = if order.contains(&SourceKind::DevToken) {
            dev_token::DevTokens::new(config)
        } else {
            dev_token::DevTokens::default()
        };
        Self {
            inner: Arc::new(Inner {
                order,
                mtls,
                jwt,
                xfcc: xfcc::Xfcc::new(&config.xfcc),
                dev_tokens,
                accepted,
                _refresher: refresher,
            }),
        }
    }

    /// Whether any development token is accepted (logged loudly at start).
    pub fn dev_tokens_enabled(&self) -> bool {
        !self.inner.dev_tokens.is_empty()
    }

    /// The sources tried, in order.
    pub fn order(&self) -> &[SourceKind] {
        &self.inner.order
    }

    /// Identifies the caller of a request, from its metadata, its TLS peer
    /// certificates and its TCP peer address: pass the whole `&tonic::Request`.
    /// Synchronous: JWT keys come from a cache refreshed in the background. Logs
    /// (info) which check refused a caller.
    ///
    /// # Errors
    /// [`Error::NoCredentials`] when no source finds a credential; otherwise the
    /// deciding source's refusal: [`Error::ClientCertificate`], [`Error::Jwt`],
    /// [`Error::ForwardedCertificate`], [`Error::Malformed`], [`Error::UnknownToken`].
    pub fn authenticate(&self, request: &(impl Credentials + ?Sized)) -> Result<Caller, Error> {
        self.identify(&request.presented())
    }

    /// Identifies the caller of an HTTP request by its bearer token (a JWT, or a
    /// development token in dev mode): the sources a browser or an SDK can present.
    /// mTLS and mesh-forwarded certificates are not read here, so they fail closed.
    ///
    /// # Errors
    /// As [`Authenticator::authenticate`].
    pub fn authenticate_token(&self, token: &str) -> Result<Caller, Error> {
        // What `authorization: Bearer <token>` would present; an empty map allocates
        // nothing.
        let no_metadata = MetadataMap::new();
        self.identify(&Presented {
            metadata: &no_metadata,
            bearer: token_text(token).map_or(Bearer::Malformed, Bearer::Token),
            peer_certs: None,
            remote_addr: None,
            connection: None,
        })
    }

    pub(crate) fn identify(&self, p: &Presented<'_>) -> Result<Caller, Error> {
        let inner = &*self.inner;
        let mut xfcc_checked = false;
        for kind in &inner.order {
            let outcome = match kind {
                SourceKind::Mtls => self.try_mtls(p),
                SourceKind::Jwt => self.try_jwt(p),
                SourceKind::Xfcc => {
                    xfcc_checked = true;
                    self.try_xfcc(p)
                }
                SourceKind::DevToken => self.try_dev_token(p),
            };
            if let Some(result) = outcome {
                if let Ok(caller) = &result {
                    tracing::debug!(source = kind.name(), caller = %caller, "caller identified");
                }
                return result;
            }
        }
        if !xfcc_checked {
            // Not an active source, but say that the header was there and ignored.
            self.try_xfcc(p);
        }
        tracing::info!(reason = "no credentials", "caller refused");
        Err(Error::NoCredentials(inner.accepted.clone()))
    }

    fn try_mtls(&self, p: &Presented<'_>) -> Option<Result<Caller, Error>> {
        let domains = self.inner.mtls.as_ref()?;
        let certs = p.peer_certs.as_deref().filter(|c| !c.is_empty())?;
        Some(mtls::connection_caller(certs, domains, p.connection).map_err(|e| {
            tracing::info!(source = "mtls", check = e.check(), reason = %e, peer = ?p.remote_addr, "caller refused");
            Error::ClientCertificate(e)
        }))
    }

    fn try_jwt(&self, p: &Presented<'_>) -> Option<Result<Caller, Error>> {
        let verifier = self.inner.jwt.as_ref()?;
        let token = match p.bearer.token_for("jwt")? {
            Ok(token) => token,
            Err(e) => return Some(Err(e)),
        };
        if self.dev_tokens_enabled() && !is_jwt_shaped(token) {
            return None;
        }
        Some(verifier.verify(token).map_err(|r| {
            tracing::info!(
                source = "jwt",
                check = r.error.check(),
                reason = %r.error,
                subject = r.subject.as_deref().unwrap_or(""),
                "caller refused"
            );
            Error::Jwt(r.error)
        }))
    }

    fn try_xfcc(&self, p: &Presented<'_>) -> Option<Result<Caller, Error>> {
        let mut lines = p.metadata.get_all(xfcc::HEADER).iter();
        let first = lines.next()?;
        let peer = p.remote_addr.map(|a| a.ip());
        match self.inner.xfcc.trust(peer) {
            xfcc::Trust::Trusted => {}
            why => {
                tracing::info!(
                    peer = ?p.remote_addr,
                    why = match why {
                        xfcc::Trust::Disabled => "identity.xfcc.enabled is false",
                        _ => "peer not in identity.xfcc.trusted_peers",
                    },
                    "x-forwarded-client-cert header ignored"
                );
                return None;
            }
        }
        let not_text = || {
            let e = SanError::Malformed(xfcc::ParseError::NotText);
            tracing::info!(source = "xfcc", check = e.check(), reason = %e, "caller refused");
            Some(Err(Error::ForwardedCertificate(e)))
        };
        let Ok(mut value) = first.to_str().map(Cow::Borrowed) else {
            return not_text();
        };
        // Several header lines read as one comma-separated value, in order, so the
        // last element is still the nearest proxy's. One line, the usual case, is read
        // where it is.
        for line in lines {
            let Ok(line) = line.to_str() else {
                return not_text();
            };
            let joined = value.to_mut();
            joined.push(',');
            joined.push_str(line);
        }
        Some(self.inner.xfcc.caller(&value).map_err(|e| {
            tracing::info!(source = "xfcc", check = e.check(), reason = %e, peer = ?p.remote_addr, "caller refused");
            Error::ForwardedCertificate(e)
        }))
    }

    fn try_dev_token(&self, p: &Presented<'_>) -> Option<Result<Caller, Error>> {
        if !self.dev_tokens_enabled() {
            return None;
        }
        let token = match p.bearer.token_for("dev_token")? {
            Ok(token) => token,
            Err(e) => return Some(Err(e)),
        };
        if self.inner.jwt.is_some() && is_jwt_shaped(token) {
            return None;
        }
        Some(self.inner.dev_tokens.caller(token).ok_or_else(|| {
            tracing::info!(
                source = "dev_token",
                check = "unknown_token",
                "caller refused"
            );
            Error::UnknownToken
        }))
    }
}

/// The bearer token of the request's `authorization` metadata: malformed unless it is
/// exactly one `Bearer <token>`.
fn bearer(metadata: &MetadataMap) -> Bearer<'_> {
    let mut values = metadata.get_all("authorization").iter();
    let Some(value) = values.next() else {
        return Bearer::Absent;
    };
    if values.next().is_some() {
        return Bearer::Malformed;
    }
    // Not `to_str`: `bearer_token` checks every byte of the token as header text, so
    // `to_str`'s own scan of the value would be a second one over a kilobyte-long JWT.
    std::str::from_utf8(value.as_bytes())
        .ok()
        .and_then(bearer_token)
        .map_or(Bearer::Malformed, Bearer::Token)
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token_text(token))
        .flatten()
}

/// `token` as the token of `authorization: Bearer <token>`: trimmed of spaces and tabs,
/// not empty, and what a header value's text may hold (visible ASCII, spaces and tabs).
fn token_text(token: &str) -> Option<&str> {
    let token = token.trim_matches([' ', '\t']);
    // No early exit, so the compiler checks many bytes at a time: a JWT is read on
    // every call.
    let text = token.bytes().fold(true, |text, b| {
        text & ((b == b'\t') | (0x20..0x7f).contains(&b))
    });
    (!token.is_empty() && text).then_some(token)
}

/// Whether a bearer token looks like a compact JWS (`header.payload.signature`).
fn is_jwt_shaped(token: &str) -> bool {
    // Counted in 32 bits, which the compiler does many bytes at a time (a `usize`
    // count took four bytes a step).
    token
        .bytes()
        .fold(0u32, |dots, b| dots + u32::from(b == b'.'))
        == 2
}

#[cfg(test)]
mod tests;
