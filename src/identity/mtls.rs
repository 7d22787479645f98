//! mTLS terminated by this service: the TLS server configuration, the accept loop that
//! logs why a handshake failed, and the caller id from the client certificate's SPIFFE
//! ID.
//!
//! Two checks, two places:
//! - **At the handshake** (rustls' WebPKI client verifier): the client chain must lead to
//!   a CA in `ca_file`, be within its validity period, and the leaf must allow client
//!   authentication; with `required = true` a client without a certificate is refused
//!   too. A refused handshake has no gRPC status; [`TlsIncoming`] logs which check failed.
//! - **At the connection's first call** ([`caller`], kept in its [`ConnectionCaller`]
//!   for the others): the leaf must carry exactly one URI SAN, a SPIFFE ID in one of
//!   `trust_domains`. Failures are UNAUTHENTICATED, on every call, with a message
//!   saying which.
//!
//! Tonic's own `ServerTlsConfig` cannot log why a handshake failed (it logs at debug,
//! without the reason), so the server builds its own rustls config here and hands tonic
//! already-encrypted streams through [`TlsIncoming`]; tonic's `Request::peer_certs()`
//! and `remote_addr()` work on them unchanged.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use x509_cert::der::Decode;

use super::spiffe::TrustDomains;
use super::{Caller, SanError, Source};

/// How many handshakes may run at once, for all peers, in one stream of connections
/// (the server runs one per serving thread and listener). Past it a new connection is
/// closed at once: the accept loop never stops taking connections, so a flood of slow
/// handshakes cannot keep everyone else out for a handshake timeout.
const MAX_CONCURRENT_HANDSHAKES: usize = 16_384;

/// How many handshakes one peer address (IP) may have running at once in one stream
/// of connections (as above; connections are dealt to the threads in turn, so a peer
/// gets this many on each): a client opens one or a few; an address holding more is
/// flooding, and its further connections are closed at once, leaving the slots to
/// everyone else.
const MAX_HANDSHAKES_PER_PEER: usize = 64;

/// How long a connection may stay silent before its ClientHello: a real client sends
/// it at once; an idle connection holds a slot for nothing.
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// `[identity.mtls]`: TLS with client certificates, terminated by this service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// PEM bundle of the CA(s) that issue client certificates. Only chains ending at
    /// one of them are accepted.
    pub ca_file: PathBuf,
    /// PEM certificate chain this server presents (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// SPIFFE trust domains whose workloads may call, e.g. `["prod.example"]`.
    pub trust_domains: Vec<String>,
    /// Whether every connection must present a client certificate. With `false`, a
    /// client without one is let through to the next identity source (e.g. a JWT);
    /// one that presents a certificate is still verified and refused if it is bad.
    #[serde(default = "default_required")]
    pub required: bool,
    /// Longest a TLS handshake may take before the connection is dropped.
    #[serde(default = "default_handshake_timeout", with = "crate::core::duration")]
    pub handshake_timeout: Duration,
    /// How often `cert_file` and `key_file` are checked for changes: a renewed pair
    /// serves new connections without a restart.
    #[serde(default = "default_reload_interval", with = "crate::core::duration")]
    pub reload_interval: Duration,
}

impl MtlsConfig {
    /// The certificate and key this server presents, named by their config keys.
    pub fn server_key_pair(&self) -> KeyPairFiles<'_> {
        KeyPairFiles {
            cert_file: &self.cert_file,
            cert_field: "identity.mtls.cert_file",
            key_file: &self.key_file,
            key_field: "identity.mtls.key_file",
        }
    }
}

fn default_required() -> bool {
    true
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(30)
}

/// Why the TLS set-up could not be built at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{field}: cannot read {}: {source}", path.display())]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{field}: {} holds no certificate", path.display())]
    NoCertificate { field: &'static str, path: PathBuf },
    #[error(
        "{field}: {} holds no private key (a PEM PKCS#8, PKCS#1 or SEC1 key is expected; is it the certificate?)",
        path.display()
    )]
    NoKey { field: &'static str, path: PathBuf },
    #[error(
        "identity.mtls.ca_file: no certificate in {} is a CA ({certificates} certificate(s), \
         none with basicConstraints CA:TRUE): a server's or client's own certificate (tls.crt) \
         is not a CA; mount the issuer's (ca.crt)",
        path.display()
    )]
    NoUsableCa { path: PathBuf, certificates: usize },
    #[error(
        "{field}: the certificate in {} {when}; renew it (a client refuses it at the handshake)",
        path.display()
    )]
    OutOfValidity {
        field: &'static str,
        path: PathBuf,
        /// `expired at 2024-02-01T00:00:00Z`, `is not valid before …`.
        when: String,
    },
    #[error("identity.mtls: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("identity.mtls: the server certificate and key do not fit: {0}")]
    Tls(#[from] rustls::Error),
    #[error("server.tls: the certificate and key do not fit: {0}")]
    ServerKey(#[source] rustls::Error),
}

/// Where a server certificate and its key are read from, named as in the config (for
/// the errors).
#[derive(Debug, Clone, Copy)]
pub struct KeyPairFiles<'a> {
    /// The PEM chain, leaf first.
    pub cert_file: &'a Path,
    /// Its config key, e.g. `server.tls.cert_file`.
    pub cert_field: &'static str,
    /// The PEM private key.
    pub key_file: &'a Path,
    /// Its config key.
    pub key_field: &'static str,
}

impl KeyPairFiles<'_> {
    /// Reads the chain and the key.
    ///
    /// # Errors
    /// [`SetupError::Read`] or [`SetupError::NoCertificate`].
    pub fn read(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), SetupError> {
        let chain = read_certs(self.cert_field, self.cert_file)?;
        let key = read_pem(self.key_file)
            .and_then(|pem| PrivateKeyDer::from_pem_slice(&pem))
            .map_err(|source| match source {
                // rustls' words for "no key in this PEM file": say which kind it wants.
                rustls::pki_types::pem::Error::NoItemsFound => SetupError::NoKey {
                    field: self.key_field,
                    path: self.key_file.to_owned(),
                },
                source => SetupError::Read {
                    field: self.key_field,
                    path: self.key_file.to_owned(),
                    source,
                },
            })?;
        Ok((chain, key))
    }
}

/// The protocols a TLS listener offers in the handshake (ALPN). A client that offers
/// protocols and none of these is refused by the handshake itself
/// (`no_application_protocol`), so a listener offers every protocol it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/2 only: gRPC.
    Http2,
    /// HTTP/2 and HTTP/1.1: the HTTP gateway (browsers, SDKs, load balancers that
    /// speak HTTP/1.1 and say so), and the gRPC port when it serves gRPC-Web.
    Http2AndHttp1,
}

impl Protocols {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Self::Http2 => vec![b"h2".to_vec()],
            Self::Http2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// The configuration every TLS listener of this service shares: TLS 1.2 and 1.3 on
/// the ring provider, ALPN `protocols`, client certificates as `verifier` says, the
/// server certificate from `certs`.
fn tls_server_config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
    protocols: Protocols,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    tls.alpn_protocols = protocols.alpn();
    Ok(Arc::new(tls))
}

/// A TLS server configuration without client certificates, offering `protocols`,
/// presenting whatever `certs` resolves (`[server.tls]`, whose resolver reloads
/// renewed files).
///
/// # Errors
/// [`SetupError::ServerKey`] when the provider supports no protocol version.
pub fn server_only_tls_config(
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
    protocols: Protocols,
) -> Result<Arc<ServerConfig>, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(rustls::server::NoClientAuth);
    tls_server_config(provider, verifier, certs, protocols).map_err(SetupError::ServerKey)
}

/// The certified key of `files`, checked: the key must be the certificate's.
///
/// # Errors
/// As [`KeyPairFiles::read`]; [`SetupError::ServerKey`] when they do not fit.
pub fn certified_key(
    files: &KeyPairFiles<'_>,
) -> Result<Arc<rustls::sign::CertifiedKey>, SetupError> {
    let (chain, key) = files.read()?;
    if let Some(when) = chain
        .first()
        .and_then(|leaf| out_of_validity(leaf, std::time::SystemTime::now()))
    {
        return Err(SetupError::OutOfValidity {
            field: files.cert_field,
            path: files.cert_file.to_owned(),
            when,
        });
    }
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(SetupError::ServerKey)?;
    Ok(Arc::new(certified))
}

/// Builds the rustls server configuration of `config`: server certificate and key,
/// client certificates verified against `ca_file` (required or optional), ALPN `h2`
/// (gRPC), TLS 1.2 and 1.3 on the ring provider. Reads the files once; the service
/// itself presents the pair through [`server_tls`] with a resolver that reloads it.
///
/// Plug it into tonic with [`TlsIncoming`]:
/// `Server::builder()….serve_with_incoming_shutdown(TlsIncoming::new(TcpIncoming::from(listener), tls, config.handshake_timeout), signal)`.
///
/// # Errors
/// [`SetupError`] when a file cannot be read or holds no certificate/key, or when the
/// key does not match the certificate.
pub fn server_tls_config(config: &MtlsConfig) -> Result<Arc<ServerConfig>, SetupError> {
    let key = certified_key(&config.server_key_pair())?;
    let certs = Arc::new(rustls::sign::SingleCertAndKey::from(Arc::unwrap_or_clone(
        key,
    )));
    server_tls(config, certs, Protocols::Http2)
}

/// The rustls server configuration of `config`, offering `protocols` and presenting
/// whatever `certs` resolves: client certificates verified against `ca_file`.
///
/// # Errors
/// As [`server_tls_config`], for the CA.
pub fn server_tls(
    config: &MtlsConfig,
    certs: Arc<dyn rustls::server::ResolvesServerCert>,
    protocols: Protocols,
) -> Result<Arc<ServerConfig>, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = read_certs("identity.mtls.ca_file", &config.ca_file)?;
    let certificates = ca.len();
    let mut roots = RootCertStore::empty();
    // Only CAs: rustls would take any certificate as a trust anchor, and a leaf mounted
    // by mistake (tls.crt for ca.crt) would refuse every client, on a reload too.
    let (added, _ignored) =
        roots.add_parsable_certificates(ca.into_iter().filter(|der| is_ca(der)));
    if added == 0 {
        return Err(SetupError::NoUsableCa {
            path: config.ca_file.clone(),
            certificates,
        });
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if config.required {
        builder.build()?
    } else {
        builder.allow_unauthenticated().build()?
    };
    let verifier = Arc::new(NamingRefusals(verifier));
    Ok(tls_server_config(provider, verifier, certs, protocols)?)
}

/// A PEM file's bytes, read only when it is a regular file ([`crate::core::files`]).
fn read_pem(path: &Path) -> Result<Vec<u8>, rustls::pki_types::pem::Error> {
    crate::core::files::read_regular(path, crate::core::files::MAX_CONFIG_FILE)
        .map_err(rustls::pki_types::pem::Error::Io)
}

fn read_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let read_err = |source| SetupError::Read {
        field,
        path: path.to_owned(),
        source,
    };
    let pem = read_pem(path).map_err(read_err)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(SetupError::NoCertificate {
            field,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

// === the call: SPIFFE ID from the leaf certificate ===

/// The caller a verified client certificate chain stands for: the leaf's single URI
/// SAN as a SPIFFE ID in one of `domains`. Attributes: `trust_domain`, and `namespace`
/// and `service_account` when the path is `/ns/NAMESPACE/sa/NAME`.
///
/// The chain itself (issuer, validity, key usage) was verified at the handshake; this
/// only reads the leaf.
///
/// # Errors
/// [`SanError::Unreadable`] when the leaf cannot be parsed, [`SanError::NoUri`] or
/// [`SanError::SeveralUris`] unless there is exactly one URI SAN,
/// [`SanError::NotSpiffe`] when it is not a valid SPIFFE ID,
/// [`SanError::UntrustedDomain`] when its trust domain is not accepted.
pub fn caller(chain: &[CertificateDer<'_>], domains: &TrustDomains) -> Result<Caller, SanError> {
    let leaf = chain.first().ok_or(SanError::Unreadable)?;
    let uris = uri_sans(leaf)?;
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    super::spiffe_caller(&uris, domains, Source::Mtls)
}

/// The caller a connection's client certificate names, worked out at the connection's
/// first call and kept for the others: the certificate does not change while the
/// connection lives, and reading it (an X.509 parse) cost about 1.8 µs a call. The
/// server gives each TLS connection with a client certificate its own, in each call's
/// extensions; nothing else may share one.
#[derive(Clone, Default)]
pub struct ConnectionCaller(Arc<std::sync::OnceLock<Result<Caller, SanError>>>);

#[cfg(test)]
impl ConnectionCaller {
    /// Whether `other` is this connection's.
    pub(crate) fn same_connection(&self, other: &ConnectionCaller) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What [`caller`] answers for `chain`: read once per connection when the call
/// carries its [`ConnectionCaller`].
pub(super) fn connection_caller(
    chain: &[CertificateDer<'_>],
    domains: &TrustDomains,
    connection: Option<&ConnectionCaller>,
) -> Result<Caller, SanError> {
    match connection {
        Some(connection) => connection.0.get_or_init(|| caller(chain, domains)).clone(),
        None => caller(chain, domains),
    }
}

/// The WebPKI client verifier, logging which certificate it refused: the handshake's
/// own log line has only the peer's address (a pod IP, often gone by the time the log
/// is read), and a CA rotation needs to know who still presents the old CA's.
#[derive(Debug)]
struct NamingRefusals(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for NamingRefusals {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.0
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                tracing::info!(
                    presented = %PresentedCert(end_entity),
                    error = %e,
                    "client certificate refused: the certificate presented"
                );
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A client certificate as an operator looks for it: its URI SANs (the SPIFFE ID),
/// subject, issuer, serial and end of validity. Nothing in it is a secret.
struct PresentedCert<'a>(&'a CertificateDer<'a>);

impl fmt::Display for PresentedCert<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(cert) = x509_cert::Certificate::from_der(self.0) else {
            return f.write_str("(not a readable certificate)");
        };
        let tbs = &cert.tbs_certificate;
        let uris = uri_sans(self.0).unwrap_or_default();
        let not_after = std::time::UNIX_EPOCH + tbs.validity.not_after.to_unix_duration();
        // The client wrote these names: no line breaks or hidden characters reach the
        // log, and none is longer than a message quotes.
        let shown = |text: String| {
            let text: String = text
                .chars()
                .map(|c| {
                    if crate::core::text::breaks_lines(c) || crate::core::text::is_format(c) {
                        '?'
                    } else {
                        c
                    }
                })
                .collect();
            crate::core::text::echo(&text).into_owned()
        };
        write!(
            f,
            "uri_sans=[{}] subject=\"{}\" issuer=\"{}\" serial={} not_after={}",
            shown(uris.join(", ")),
            shown(tbs.subject.to_string()),
            shown(tbs.issuer.to_string()),
            crate::core::text::echo(&hex::encode(tbs.serial_number.as_bytes())),
            crate::sign::rfc3339(not_after)
        )
    }
}

/// Whether a DER certificate may issue others: basicConstraints says CA:TRUE, or (an
/// old v1 root without extensions) it is self-issued.
fn is_ca(der: &[u8]) -> bool {
    use x509_cert::ext::pkix::BasicConstraints;
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return false;
    };
    let tbs = &cert.tbs_certificate;
    match tbs.get::<BasicConstraints>() {
        Ok(Some((_critical, constraints))) => constraints.ca,
        Ok(None) => tbs.issuer == tbs.subject,
        Err(_) => false,
    }
}

/// A DER certificate's validity period, `(not before, not after)`; `None` when it
/// cannot be read.
fn validity(der: &[u8]) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let validity = &cert.tbs_certificate.validity;
    let at = |t: x509_cert::time::Time| std::time::UNIX_EPOCH + t.to_unix_duration();
    Some((at(validity.not_before), at(validity.not_after)))
}

/// When a DER certificate stops being valid; `None` when it cannot be read.
pub fn not_after(der: &[u8]) -> Option<std::time::SystemTime> {
    validity(der).map(|(_, not_after)| not_after)
}

/// Why a DER certificate cannot be used at `now` (`expired at …`, `is not valid
/// before …`), or `None` when it can; an unreadable one is left to rustls.
fn out_of_validity(der: &[u8], now: std::time::SystemTime) -> Option<String> {
    let (not_before, not_after) = validity(der)?;
    if now > not_after {
        Some(format!("expired at {}", crate::sign::rfc3339(not_after)))
    } else if now < not_before {
        Some(format!(
            "is not valid before {}",
            crate::sign::rfc3339(not_before)
        ))
    } else {
        None
    }
}

/// The URI SANs of a DER certificate, in order.
fn uri_sans(der: &[u8]) -> Result<Vec<String>, SanError> {
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;

    let cert = x509_cert::Certificate::from_der(der).map_err(|_| SanError::Unreadable)?;
    // `get` fails on a duplicated SAN extension, which RFC 5280 forbids; refusing it
    // avoids two parsers disagreeing about which one counts.
    let san = cert
        .tbs_certificate
        .get::<SubjectAltName>()
        .map_err(|_| SanError::Unreadable)?;
    Ok(san
        .map(|(_critical, san)| san.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect())
}

// === the handshake: accept loop ===

/// Why a TLS handshake failed, in the words of the check that failed.
#[derive(Debug)]
pub struct HandshakeError {
    reason: HandshakeFailure,
    source: io::Error,
}

/// The check a failed handshake tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// `required = true` and the client sent no certificate.
    NoClientCertificate,
    /// The client certificate (or one in its chain) has expired.
    Expired,
    /// The client certificate is not valid yet.
    NotYetValid,
    /// The chain does not lead to a CA in `ca_file`.
    UnknownIssuer,
    /// The certificate may not be used for client authentication (extended key usage).
    NotForClientAuth,
    /// Any other certificate problem (bad encoding, bad signature, critical extension…).
    BadCertificate,
    /// The handshake took longer than `handshake_timeout`.
    Timeout,
    /// Not about the certificate: the peer closed, spoke something else than TLS…
    Other,
}

impl HandshakeFailure {
    /// A short name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoClientCertificate => "no_client_certificate",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::UnknownIssuer => "unknown_issuer",
            Self::NotForClientAuth => "not_for_client_auth",
            Self::BadCertificate => "bad_certificate",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }
}

impl HandshakeError {
    /// Which check failed.
    pub fn failure(&self) -> HandshakeFailure {
        self.reason
    }

    fn new(source: io::Error) -> Self {
        Self {
            reason: classify(&source),
            source,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            HandshakeFailure::NoClientCertificate => {
                "no client certificate presented (identity.mtls.required = true)"
            }
            HandshakeFailure::Expired => "client certificate expired",
            HandshakeFailure::NotYetValid => "client certificate not valid yet",
            HandshakeFailure::UnknownIssuer => {
                "client certificate not issued by a CA in identity.mtls.ca_file"
            }
            HandshakeFailure::NotForClientAuth => {
                "client certificate's extended key usage does not allow client authentication"
            }
            HandshakeFailure::BadCertificate => "client certificate invalid",
            HandshakeFailure::Timeout => "TLS handshake timed out",
            HandshakeFailure::Other => "TLS handshake failed",
        };
        write!(f, "{what}: {}", self.source)
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn classify(error: &io::Error) -> HandshakeFailure {
    if error.kind() == io::ErrorKind::TimedOut {
        return HandshakeFailure::Timeout;
    }
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return HandshakeFailure::Other;
    };
    match tls {
        rustls::Error::NoCertificatesPresented => HandshakeFailure::NoClientCertificate,
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                HandshakeFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                HandshakeFailure::NotYetValid
            }
            CertificateError::UnknownIssuer => HandshakeFailure::UnknownIssuer,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                HandshakeFailure::NotForClientAuth
            }
            _ => HandshakeFailure::BadCertificate,
        },
        _ => HandshakeFailure::Other,
    }
}

/// The TLS configuration new connections get, replaced whole when the client CA file
/// changes (see `server::tls`); open connections keep the one they were accepted with.
///
/// Replaced whole rather than through a verifier that delegates to the current CA:
/// rustls asks a verifier for the CA names it sends as hints by reference, which a
/// replaceable verifier cannot lend, and clients choose their certificate by them.
#[derive(Debug, Clone)]
pub struct ConfigInForce(Arc<arc_swap::ArcSwap<ServerConfig>>);

impl ConfigInForce {
    /// `config`, until [`ConfigInForce::set`] replaces it.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self(Arc::new(arc_swap::ArcSwap::new(config)))
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.0.load_full()
    }

    /// Puts `config` in force for the handshakes that begin after this.
    pub fn set(&self, config: Arc<ServerConfig>) {
        self.0.store(config);
    }
}

impl From<Arc<ServerConfig>> for ConfigInForce {
    fn from(config: Arc<ServerConfig>) -> Self {
        Self::new(config)
    }
}

/// Runs the server side of one TLS handshake on `io`, bounded by `timeout`.
///
/// # Errors
/// [`HandshakeError`], saying which check failed.
pub async fn accept<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    timeout: Duration,
) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Ok(result) => result.map_err(HandshakeError::new),
        Err(_) => Err(HandshakeError::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "handshake timeout",
        ))),
    }
}

/// A stream of TLS connections for tonic's `serve_with_incoming*`: takes TCP
/// connections from `tcp` (e.g. tonic's `TcpIncoming`, which keeps its TCP options),
/// runs their handshakes concurrently (a slow client never holds up others), and
/// yields the ones that succeed. A failed handshake is logged, at info level when a
/// client certificate was refused (saying which check failed and the peer address),
/// at debug level otherwise (port scans, TCP probes), and never ends the stream.
pub struct TlsIncoming<S, IO> {
    tcp: Pin<Box<S>>,
    tcp_done: bool,
    /// Read per connection: a reloaded client CA applies to the next handshake.
    config: ConfigInForce,
    timeout: Duration,
    handshakes: JoinSet<(Option<IpAddr>, Option<TlsStream<IO>>)>,
    /// Handshakes running per peer address.
    per_peer: HashMap<IpAddr, usize>,
}

/// An I/O stream that may know its peer's address (for the per-peer handshake slots
/// and the handshake log line).
pub trait PeerAddr {
    /// The peer's address, if known.
    fn peer(&self) -> Option<SocketAddr>;

    /// Completes when the peer has sent something (its ClientHello).
    fn first_bytes(&self) -> impl std::future::Future<Output = io::Result<()>> + Send + '_;
}

impl PeerAddr for tokio::net::TcpStream {
    fn peer(&self) -> Option<SocketAddr> {
        self.peer_addr().ok()
    }

    fn first_bytes(&self) -> impl std::future::Future<Output = io::Result<()>> + Send + '_ {
        self.readable()
    }
}

impl<S, IO> TlsIncoming<S, IO> {
    /// TLS connections over `tcp`, with the configuration of [`server_tls_config`].
    pub fn new(tcp: S, config: impl Into<ConfigInForce>, handshake_timeout: Duration) -> Self {
        Self {
            tcp: Box::pin(tcp),
            tcp_done: false,
            config: config.into(),
            timeout: handshake_timeout,
            handshakes: JoinSet::new(),
            per_peer: HashMap::new(),
        }
    }
}

impl<S, IO> Stream for TlsIncoming<S, IO>
where
    S: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + PeerAddr + Unpin + Send + 'static,
{
    type Item = io::Result<TlsStream<IO>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // Take every connection that is ready, always: a connection over the
            // limits is closed at once rather than left waiting in the backlog. TCP
            // accept errors go to tonic, which decides whether they are fatal.
            while !this.tcp_done {
                match this.tcp.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(io))) => {
                        let peer = io.peer();
                        let ip = peer.map(|p| p.ip());
                        let held = ip.map_or(0, |ip| this.per_peer.get(&ip).copied().unwrap_or(0));
                        if this.handshakes.len() >= MAX_CONCURRENT_HANDSHAKES
                            || held >= MAX_HANDSHAKES_PER_PEER
                        {
                            tracing::debug!(peer = ?peer, "TLS handshake slots full; connection closed");
                            drop(io);
                            continue;
                        }
                        if let Some(ip) = ip {
                            *this.per_peer.entry(ip).or_insert(0) += 1;
                        }
                        let acceptor = TlsAcceptor::from(this.config.current());
                        let timeout = this.timeout;
                        this.handshakes.spawn(async move {
                            let hello = timeout.min(CLIENT_HELLO_TIMEOUT);
                            if !matches!(
                                tokio::time::timeout(hello, io.first_bytes()).await,
                                Ok(Ok(()))
                            ) {
                                tracing::debug!(peer = ?peer, "no ClientHello in time; connection closed");
                                return (ip, None);
                            }
                            match accept(&acceptor, io, timeout).await {
                                Ok(tls) => (ip, Some(tls)),
                                Err(e) => {
                                    log_handshake_failure(&e, peer);
                                    (ip, None)
                                }
                            }
                        });
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => this.tcp_done = true,
                    Poll::Pending => break,
                }
            }
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok((ip, result)))) => {
                    if let Some(ip) = ip
                        && let Some(n) = this.per_peer.get_mut(&ip)
                    {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            this.per_peer.remove(&ip);
                        }
                    }
                    match result {
                        Some(tls) => return Poll::Ready(Some(Ok(tls))),
                        // Failed (already logged): take new connections before waiting.
                        None => continue,
                    }
                }
                // A task panicked: its peer's count stays (bounded by the cap), the
                // global slot is free again.
                Poll::Ready(Some(Err(_))) => continue,
                Poll::Ready(None) if this.tcp_done => return Poll::Ready(None),
                // No handshake running, and the TCP stream has registered the waker.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn log_handshake_failure(error: &HandshakeError, peer: Option<SocketAddr>) {
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    match error.failure() {
        HandshakeFailure::Timeout | HandshakeFailure::Other => {
            tracing::debug!(%peer, error = %error, "TLS handshake failed");
        }
        failure => {
            tracing::info!(
                %peer,
                source = "mtls",
                check = failure.as_str(),
                error = %error,
                "client certificate refused at the TLS handshake"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate from a client: a CN with a line break and a bidi override, a
    /// SPIFFE ID.
    fn hostile_client_cert() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "evil\nINFO forged line\u{202E}");
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://prod.example/ns/billing/sa/reporter"
                .try_into()
                .unwrap(),
        )];
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_refused_certificate_is_named_without_what_could_forge_a_log_line() {
        let der = hostile_client_cert();
        let shown = PresentedCert(&der).to_string();
        assert!(
            shown.contains("uri_sans=[spiffe://prod.example/ns/billing/sa/reporter]"),
            "{shown}"
        );
        // x509-cert escapes the line break (`\0a`); the bidi override is replaced.
        assert!(shown.contains("forged line?\""), "{shown}");
        assert!(!crate::core::text::breaks_or_hides(&shown), "{shown}");
        assert!(
            shown.contains("serial=") && shown.contains("not_after="),
            "{shown}"
        );
    }

    #[test]
    fn only_ca_certificates_are_trust_anchors() {
        assert!(!is_ca(&hostile_client_cert()), "a leaf taken as a CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        assert!(is_ca(ca.der()));
        assert!(!is_ca(b"not DER"));
    }
}
