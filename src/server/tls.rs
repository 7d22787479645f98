//! `[server.tls]`: TLS terminated by this service for deployments without client
//! certificates (callers identify with JWTs), so that bearer tokens, presigned URLs
//! and credentials never cross a network in clear text.
//!
//! The handshake machinery is mTLS's (`identity::mtls`: the rustls configuration and
//! the accept loop that bounds and logs handshakes); what is added here is a
//! certificate that follows its files: they are polled, and a renewed pair (e.g. from
//! cert-manager) is served to new connections without a restart. A pair that does not
//! load keeps the previous one in force and says why.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::raw::ServerTlsConfig;
use crate::identity::mtls::{self, KeyPairFiles, PeerAddr, SetupError};
use crate::metrics::{self, TlsFile};

use super::socket::{Counted, next_connection};

/// The certificate in force, replaced when its files change.
pub(super) struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ReloadingCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }
}

/// The key pair the service presents (`[server.tls]`'s or `[identity.mtls]`'s): its
/// files, read again when they change, and how long a handshake may take.
#[derive(Debug, Clone)]
pub(super) struct Presented {
    section: &'static str,
    cert_file: std::path::PathBuf,
    cert_field: &'static str,
    key_file: std::path::PathBuf,
    key_field: &'static str,
    every: Duration,
    pub(super) handshake_timeout: Duration,
}

impl Presented {
    pub(super) fn server_tls(config: &ServerTlsConfig) -> Self {
        Self {
            section: "server.tls",
            cert_file: config.cert_file.clone(),
            cert_field: "server.tls.cert_file",
            key_file: config.key_file.clone(),
            key_field: "server.tls.key_file",
            every: config.reload_interval,
            handshake_timeout: config.handshake_timeout,
        }
    }

    pub(super) fn mtls(config: &mtls::MtlsConfig) -> Self {
        let files = config.server_key_pair();
        Self {
            section: "identity.mtls",
            cert_file: config.cert_file.clone(),
            cert_field: files.cert_field,
            key_file: config.key_file.clone(),
            key_field: files.key_field,
            every: config.reload_interval,
            handshake_timeout: config.handshake_timeout,
        }
    }

    fn files(&self) -> KeyPairFiles<'_> {
        KeyPairFiles {
            cert_file: &self.cert_file,
            cert_field: self.cert_field,
            key_file: &self.key_file,
            key_field: self.key_field,
        }
    }
}

/// Reads the pair once (at start, and for `--check-config`).
///
/// # Errors
/// A file that cannot be read, holds no certificate or key, or a key that is not the
/// certificate's.
pub(super) fn load(source: &Presented) -> Result<Arc<ReloadingCert>, SetupError> {
    let key = mtls::certified_key(&source.files())?;
    metrics::tls_loaded(TlsFile::Certificate);
    metrics::tls_certificate_expires_at(key.cert.first().and_then(|c| mtls::not_after(c)));
    Ok(Arc::new(ReloadingCert {
        current: RwLock::new(key),
    }))
}

/// The rustls configuration presenting `cert`, offering `protocols`.
///
/// # Errors
/// As [`mtls::server_only_tls_config`].
pub(super) fn server_config(
    cert: Arc<ReloadingCert>,
    protocols: mtls::Protocols,
) -> Result<Arc<rustls::ServerConfig>, SetupError> {
    mtls::server_only_tls_config(cert, protocols)
}

/// The HTTP gateway's TLS: the rustls configuration and how long a handshake may take.
#[derive(Debug, Clone)]
pub(super) struct GatewayTlsConfig {
    pub(super) config: Arc<rustls::ServerConfig>,
    pub(super) handshake_timeout: Duration,
}

/// What the gateway presents: the gRPC port's certificate (`[server.tls]`'s or
/// `[identity.mtls]`'s, following its files), never asking for a client certificate:
/// browsers and AWS SDKs have none; offering HTTP/2 and HTTP/1.1, both of which it
/// serves.
///
/// # Errors
/// As [`server_config`].
pub(super) fn gateway(
    cert: &Arc<ReloadingCert>,
    handshake_timeout: Duration,
) -> Result<GatewayTlsConfig, SetupError> {
    Ok(GatewayTlsConfig {
        config: server_config(cert.clone(), mtls::Protocols::Http2AndHttp1)?,
        handshake_timeout,
    })
}

/// Polls the files every `reload_interval`; when either changed, loads the pair and
/// puts it in force, or keeps the previous one and logs why. Runs until aborted.
pub(super) async fn watch(cert: Arc<ReloadingCert>, source: Presented) {
    let files = [source.cert_file.clone(), source.key_file.clone()];
    on_change(&files, source.every, || {
        match mtls::certified_key(&source.files()) {
            Ok(key) => {
                metrics::tls_reload(TlsFile::Certificate, true);
                metrics::tls_certificate_expires_at(
                    key.cert.first().and_then(|c| mtls::not_after(c)),
                );
                cert.set(key);
                tracing::info!(
                    section = source.section,
                    cert_file = %source.cert_file.display(),
                    "certificate reloaded; new connections use it"
                );
            }
            Err(e) => {
                metrics::tls_reload(TlsFile::Certificate, false);
                tracing::error!(
                    section = source.section,
                    error = %e,
                    "certificate reload refused; the previous one stays in force"
                );
            }
        }
    })
    .await;
}

/// Polls `identity.mtls.ca_file` every `reload_interval`; when it changed, puts a TLS
/// configuration trusting its CAs in force for new connections (presenting `cert`,
/// offering `protocols`), or keeps the previous CAs and logs why. A CA rotation
/// (trust-manager, a renewed mesh root) thus needs no restart: publish the bundle with
/// both CAs, move the clients, then drop the old CA. Runs until aborted.
pub(super) async fn watch_client_ca(
    in_force: mtls::ConfigInForce,
    config: mtls::MtlsConfig,
    cert: Arc<ReloadingCert>,
    protocols: mtls::Protocols,
) {
    metrics::tls_loaded(TlsFile::ClientCa);
    let files = [config.ca_file.clone()];
    on_change(&files, config.reload_interval, || {
        match mtls::server_tls(&config, cert.clone(), protocols) {
            Ok(tls) => {
                metrics::tls_reload(TlsFile::ClientCa, true);
                in_force.set(tls);
                tracing::info!(
                    ca_file = %config.ca_file.display(),
                    "client CA reloaded; new connections are verified against it"
                );
            }
            Err(e) => {
                metrics::tls_reload(TlsFile::ClientCa, false);
                tracing::error!(
                    error = %e,
                    "client CA reload refused; the previous CAs stay in force"
                );
            }
        }
    })
    .await;
}

/// Calls `reload` each time one of `files` changed since the last poll; polls every
/// `every`. Runs until aborted.
///
/// A change is one of content, not of modification time: tools that keep times (`cp
/// -p`, `rsync -t`, an archive) would otherwise hide a renewal whose files have the
/// same length, as same-kind certificates from one issuer do. The files are a few
/// kilobytes, hashed once a poll.
async fn on_change(files: &[std::path::PathBuf], every: Duration, mut reload: impl FnMut()) {
    let versions = || async {
        let mut versions = Vec::with_capacity(files.len());
        for file in files {
            versions.push(content_version(file).await);
        }
        versions
    };
    let mut seen = versions().await;
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let now = versions().await;
        if now == seen {
            continue;
        }
        // A renewal may write several files; one poll may see only the first. A
        // failed load is retried at the next change of any of them.
        seen = now;
        reload();
    }
}

/// What identifies the content of `file` now: its SHA-256, or `None` when it cannot be
/// read.
async fn content_version(file: &std::path::Path) -> Option<[u8; 32]> {
    use sha2::Digest;
    let bytes = crate::core::files::read(file, crate::core::files::MAX_CONFIG_FILE)
        .await
        .ok()?;
    Some(sha2::Sha256::digest(&bytes).into())
}

/// The HTTP gateway's listener with TLS (`[server.tls]` or `[identity.mtls]`): the gRPC
/// port's server certificate and handshake machinery (bounded, logged, concurrent
/// handshakes), as an axum listener.
pub(super) struct GatewayTls<S> {
    incoming: mtls::TlsIncoming<S, Counted<tokio::net::TcpStream>>,
    local: std::net::SocketAddr,
}

impl<S> GatewayTls<S> {
    /// TLS with `config` on the connections of `tcp`, which a listener bound to `local`
    /// accepted.
    pub(super) fn new(
        tcp: S,
        local: std::net::SocketAddr,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> Self {
        Self {
            incoming: mtls::TlsIncoming::new(tcp, config, handshake_timeout),
            local,
        }
    }
}

impl<S> axum::serve::Listener for GatewayTls<S>
where
    S: tokio_stream::Stream<Item = std::io::Result<Counted<tokio::net::TcpStream>>>
        + Send
        + 'static,
{
    type Io = tokio_rustls::server::TlsStream<Counted<tokio::net::TcpStream>>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // A failed handshake was logged by the incoming stream.
        next_connection(&mut self.incoming, |stream: &Self::Io| {
            stream.get_ref().0.peer()
        })
        .await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
