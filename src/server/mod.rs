//! Assembles and runs the server from validated [`Settings`]: the grant pipeline and
//! its gRPC door behind the layer stack (`layers`), standard health and reflection,
//! the metrics endpoint (`metrics_http`), the background tasks, and graceful shutdown
//! (`shutdown`).
//!
//! Calls are served on one thread per CPU, to which every listener's connections are
//! dealt in turn (`cores`); the calling runtime accepts connections and runs the
//! background tasks. The server owns every task it spawns, in one `JoinSet`, and every
//! serving thread, and stops all of them before [`run`] returns.

mod connections;
mod cores;
mod gateway_observe;
mod layers;
mod listeners;
mod metrics_http;
mod reflection;
mod shutdown;
mod socket;
mod standard;
mod tls;

use std::future::Future;
use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::credentials::CredentialSource;
use crate::grant::{Pipeline, Scoped, Steps, Uploads};
use crate::identity::Authenticator;
use crate::identity::mtls::{ConfigInForce, Protocols, TlsIncoming};
use crate::readiness::{Health, Readiness};
use crate::rules::Rules;
use crate::rules::reload::RulesHandle;
use crate::service::GrantService;
use crate::sign::{Endpoint, Signer};
use crate::store::Store;
use crate::sts::Broker;
use crate::upload::TokenKeys;

pub use listeners::Listeners;
use shutdown::Shutdown;
pub use shutdown::{StopSender, StopSignals};

/// Region used when neither the config nor the AWS chain names one.
const FALLBACK_REGION: &str = "us-east-1";

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rules file is missing or invalid.
    #[error(transparent)]
    Rules(#[from] crate::rules::Error),
    /// The region from the AWS chain is not one the signer can use.
    #[error("the AWS chain's region: {0}")]
    Region(#[source] crate::sign::Error),
    /// An identity source could not start.
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::SetupError),
    /// The JWKS file cannot be read or holds no usable key.
    #[error("identity.jwt.jwks_file: {0}")]
    Jwks(#[source] crate::identity::jwks::LoadError),
    /// The TLS files (`identity.mtls` or `server.tls`) are unusable.
    #[error(transparent)]
    Tls(#[from] crate::identity::mtls::SetupError),
    /// The upload-token keys cannot be loaded.
    #[error("{}: {source}", source.field())]
    UploadKeys {
        /// Why.
        #[source]
        source: crate::upload::KeyError,
    },
    /// A configured address cannot be listened on.
    #[error("{setting}: cannot listen on {addr}: {source}")]
    Listen {
        /// The setting that names the address, e.g. `http.listen`.
        setting: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reflection service could not be built.
    #[error("reflection service: {0}")]
    Reflection(#[from] reflection::Error),
    /// The transport failed while serving.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A serving thread could not start or stopped unexpectedly.
    #[error(transparent)]
    Cores(#[from] cores::Error),
}

impl Error {
    /// Whether the configuration was refused (what `--check-config` refuses too), as
    /// against a failure to start or to go on serving with a configuration that is
    /// valid: the process's exit code tells them apart (2 and 1).
    pub fn is_refused_configuration(&self) -> bool {
        match self {
            Error::Rules(_)
            | Error::Region(_)
            | Error::Identity(_)
            | Error::Jwks(_)
            | Error::Tls(_)
            | Error::UploadKeys { .. } => true,
            Error::Listen { .. } | Error::Reflection(_) | Error::Transport(_) | Error::Cores(_) => {
                false
            }
        }
    }
}

/// What the settings alone do not hold and serving needs: the rules file, the TLS
/// files and the upload-token key files, read and validated.
pub struct Checked {
    /// The rules in force at start.
    pub rules: Rules,
    /// The upload-token keys; `None` when none is configured.
    upload_keys: Option<TokenKeys>,
    /// The TLS configuration of the gRPC port (mTLS or server TLS), if it speaks TLS.
    tls: Option<ConfigInForce>,
    /// The certificate the service presents (`[identity.mtls]`'s or `[server.tls]`'s)
    /// and its files, which a watcher reads again when they change.
    server_cert: Option<(Arc<tls::ReloadingCert>, tls::Presented)>,
    /// What the HTTP gateway presents: the gRPC port's server certificate, without
    /// asking for a client's; `None` when the gRPC port has no TLS either.
    gateway_tls: Option<tls::GatewayTlsConfig>,
}

/// What the gRPC port offers in the TLS handshake: HTTP/1.1 too when it serves
/// gRPC-Web over it.
fn grpc_protocols(settings: &Settings) -> Protocols {
    if settings.server.grpc_web {
        Protocols::Http2AndHttp1
    } else {
        Protocols::Http2
    }
}

/// Reads and validates the files the settings name: the rules and the TLS files.
///
/// # Errors
/// The first problem found, with file and line where there is one.
pub async fn check(settings: &Settings) -> Result<Checked, Error> {
    let rules = Rules::load(&settings.grants.rules_file).await?;
    let upload_keys = settings
        .upload_keys
        .load()
        .map_err(|source| Error::UploadKeys { source })?;
    // One certificate for the gRPC port and the gateway, reloaded when renewed: the
    // mTLS pair, or server TLS's (the settings refuse both).
    let presented = match (&settings.identity.mtls, &settings.server.tls) {
        (Some(m), _) => Some(tls::Presented::mtls(m)),
        (None, Some(t)) => Some(tls::Presented::server_tls(t)),
        (None, None) => None,
    };
    let server_cert = presented
        .map(|p| tls::load(&p).map(|cert| (cert, p)))
        .transpose()?;
    let protocols = grpc_protocols(settings);
    let tls = match (&settings.identity.mtls, &server_cert) {
        (Some(mtls), Some((cert, _))) => Some(crate::identity::mtls::server_tls(
            mtls,
            cert.clone(),
            protocols,
        )?),
        (None, Some((cert, _))) => Some(tls::server_config(cert.clone(), protocols)?),
        (_, None) => None,
    }
    .map(ConfigInForce::new);
    let gateway_tls = match (&settings.http, &server_cert) {
        (Some(_), Some((cert, p))) => Some(tls::gateway(cert, p.handshake_timeout)?),
        _ => None,
    };
    Ok(Checked {
        rules,
        upload_keys,
        tls,
        server_cert,
        gateway_tls,
    })
}

/// Whether `--check-config` reads the files the configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedFiles {
    /// Read and validated, as serving reads them.
    Read,
    /// Not read (`--skip-files`): they exist only where the service runs (a pod's
    /// Secrets and service-account files), not where a rendered configuration is
    /// checked before an upgrade. The rules file is read either way.
    Skip,
}

/// What `--check-config` validates: the settings were loaded; here [`check`], and a
/// JWKS file, which serving reads when its authenticator starts. A JWKS URL is
/// fetched only when serving. With [`NamedFiles::Skip`], the rules only.
///
/// # Errors
/// As [`check`], and a JWKS file that cannot be read or holds no usable key.
pub async fn check_config(settings: &Settings, files: NamedFiles) -> Result<Checked, Error> {
    if files == NamedFiles::Skip {
        return Ok(Checked {
            rules: Rules::load(&settings.grants.rules_file).await?,
            upload_keys: None,
            tls: None,
            server_cert: None,
            gateway_tls: None,
        });
    }
    let checked = check(settings).await?;
    crate::identity::check_jwks_client(&settings.identity)?;
    if let Some(file) = settings
        .identity
        .jwt
        .as_ref()
        .and_then(|j| j.jwks_file.as_ref())
    {
        let bytes = crate::core::files::read(file, crate::core::files::MAX_CONFIG_FILE)
            .await
            .map_err(|source| {
                Error::Jwks(crate::identity::jwks::LoadError::Read {
                    path: file.clone(),
                    source,
                })
            })?;
        crate::identity::jwks::KeySet::parse(&bytes).map_err(Error::Jwks)?;
    }
    Ok(checked)
}

/// The region grants are signed for: the settings', else the AWS chain's, else
/// us-east-1.
pub fn region(settings: &Settings, aws: &SdkConfig) -> String {
    settings
        .storage
        .region
        .clone()
        .or_else(|| aws.region().map(|r| r.to_string()))
        .unwrap_or_else(|| FALLBACK_REGION.to_owned())
}

/// The encoded descriptors of every service the gRPC port serves: the grant service,
/// health and both reflection versions. Reflection answers from them; every method in
/// them must be one the observe layer knows (`metrics::RPCS`), or it answers
/// UNIMPLEMENTED.
const SERVED_DESCRIPTORS: [&[u8]; 4] = [
    crate::proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Serves on `listeners` (bound from the same `settings`) until the first of `signals`,
/// then drains, for at most `server.shutdown_grace`, or until the second.
///
/// `aws` supplies the service's own credentials (normally the default AWS chain)
/// and HTTP client; the store's endpoint and addressing come from `settings`.
///
/// # Errors
/// A bad rules or TLS file before serving; a transport failure while serving.
pub async fn run(
    settings: Settings,
    aws: SdkConfig,
    listeners: Listeners,
    signals: StopSignals,
) -> Result<(), Error> {
    // The file's version before it is read: a change from here on triggers a reload.
    let rules_version = crate::rules::reload::file_version(&settings.grants.rules_file).await;
    let Checked {
        rules,
        upload_keys,
        tls,
        server_cert,
        gateway_tls,
    } = check(&settings).await?;
    let region = region(&settings, &aws);
    let storage = &settings.storage;
    let endpoint = match &storage.endpoint {
        Some(custom) => custom.clone(),
        None => Endpoint::aws(&region, storage.force_path_style).map_err(Error::Region)?,
    };
    // The store URL for the readiness client and for callers of AssumeScoped; `None`
    // means AWS's own regional endpoints.
    let endpoint_url = storage.endpoint.as_ref().map(Endpoint::url);
    let signer = Arc::new(Signer::new(endpoint, &region));
    let provider = aws.credentials_provider().unwrap_or_else(|| {
        aws_credential_types::provider::SharedCredentialsProvider::new(NoCredentials)
    });
    let credentials = CredentialSource::start(
        provider,
        storage.call_timeout,
        storage.credential_expiration,
    )
    .await;

    let authenticator = Authenticator::start(&settings.identity).await?;
    if authenticator.dev_tokens_enabled() {
        tracing::warn!(
            tokens = settings.identity.dev_tokens.len(),
            "DEVELOPMENT MODE: static bearer tokens are accepted; never run this in production"
        );
    }
    tracing::info!(
        rules = rules.len(),
        file = %settings.grants.rules_file.display(),
        "rules loaded"
    );
    if let Some(warning) = rules.empty_warning() {
        tracing::warn!("{warning}");
    }

    let mut tasks = JoinSet::new();
    if let (Some(mtls), Some(in_force), Some((cert, _))) =
        (&settings.identity.mtls, &tls, &server_cert)
    {
        tasks.spawn(tls::watch_client_ca(
            in_force.clone(),
            mtls.clone(),
            cert.clone(),
            grpc_protocols(&settings),
        ));
    }
    if let Some((cert, source)) = server_cert {
        tasks.spawn(tls::watch(cert, source));
    }
    let reporter = tonic_health::server::HealthReporter::new();
    let health = standard::health(reporter.clone());
    let reported = Health::new(reporter).await;
    let buckets = storage
        .check_buckets
        .clone()
        .unwrap_or_else(|| rules.buckets());
    let s3 = s3_client(
        &aws,
        &region,
        endpoint_url.as_deref(),
        storage.force_path_style,
    );
    let readiness = Readiness::new(
        credentials.clone(),
        s3.clone(),
        buckets,
        storage.call_timeout,
        || crate::grant::audit::BACKLOG.is_behind(),
    );
    tasks.spawn(readiness.watch(reported.clone(), storage.check_interval));

    let scoped = settings.sts.as_ref().map(|sts| {
        let client = Broker::client(&aws, &sts.broker, &region);
        tracing::info!(role_arn = %sts.role_arn, "AssumeScoped enabled");
        Arc::new(Scoped {
            // On this runtime, which outlives the serving threads.
            broker: Broker::new(
                client,
                sts.role_arn.clone(),
                sts.broker.clone(),
                tokio::runtime::Handle::current(),
            ),
            partition: sts.partition,
            kms_key: sts.kms_key.clone(),
            durations: sts.durations,
            region: region.clone(),
            endpoint: sts
                .storage_endpoint
                .as_ref()
                .map(Endpoint::url)
                .or_else(|| endpoint_url.clone())
                .unwrap_or_default(),
            force_path_style: storage.force_path_style,
            account_id: sts.role_arn.account().to_owned(),
        })
    });
    if scoped.is_none() {
        tracing::info!("AssumeScoped disabled: no sts.role_arn configured");
    }
    let rules = RulesHandle::new(rules, settings.grants.rules_file.clone(), rules_version);
    tasks.spawn(rules.clone().watch(
        settings.grants.rules_reload_interval,
        crate::rules::reload::hangup_signal(),
    ));
    // SIGHUP also has the audit file opened again at its path: logrotate's `create`
    // (rename, then signal) then works, as `copytruncate` does without a signal.
    if let (Some(file), Some(mut hangup)) = (
        settings.audit.file.clone(),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
    ) {
        tasks.spawn(async move {
            while hangup.recv().await.is_some() {
                crate::telemetry::reopen_audit_file();
                tracing::info!(
                    file = %file.display(),
                    "SIGHUP: the audit file is opened again at its path before the next event"
                );
            }
        });
    }
    let token_keys = upload_keys.unwrap_or_else(|| {
        tracing::warn!(
            "uploads.token_keys unset: multipart upload tokens use a random key, valid only on \
             this replica and until it restarts; configure shared keys for several replicas"
        );
        TokenKeys::random()
    });
    // On this runtime, which outlives the serving threads: shutdown waits for them.
    let steps = Arc::new(Steps::on(tokio::runtime::Handle::current()));
    let pipeline = Pipeline::new(rules, signer, credentials, settings.grants.limits, scoped)
        .with_grant_rate(settings.grant_rate)
        .with_uploads(Uploads {
            store: Store::new(
                s3,
                settings.storage.call_timeout,
                settings.storage.complete_timeout,
            ),
            keys: token_keys,
            ended: Default::default(),
            steps: steps.clone(),
        });

    // Shutdown begins at the caller's signal, or when a serving thread fails (below).
    let (core_failed, failure) = tokio::sync::oneshot::channel::<()>();
    let first = signals.clone().first();
    let signal = async move {
        tokio::select! {
            () = first => {}
            Ok(()) = failure => {}
        }
    };
    let grace = settings.server.shutdown_grace;
    let (stop, trigger) = Shutdown::start(signal, signals.second(), grace, reported);
    tasks.spawn(trigger);
    let Listeners {
        grpc,
        http: http_bound,
        metrics: metrics_bound,
    } = listeners;
    if let Some(metrics) = metrics_bound {
        tracing::info!(addr = %metrics.addr, "metrics at GET /metrics");
        // Served through the drain, until the tasks stop: a scrape then sees the last
        // calls finish and the pod not ready, where a closed port would be a gap.
        tasks.spawn(metrics_http::serve(metrics.listener));
    }

    // Every listener's connections are dealt to the serving threads, one per CPU
    // (`cores`); this runtime only accepts them.
    let cores = cores::count();
    let accepted = socket::Accepted::new(&settings.server);
    let gateway = match settings.http.clone().zip(http_bound) {
        Some((http, bound)) => {
            let local = bound.addr;
            let header_read_timeout = http.header_read_timeout;
            let router = crate::gateway::router(pipeline.clone(), authenticator.clone(), http)
                .layer(axum::middleware::from_fn(gateway_observe::observe));
            let (dealer, inboxes) = cores::deal(cores);
            tasks.spawn(dealer.run(accepted.incoming(bound.listener), stop.clone().begun()));
            // The gateway presents the gRPC port's server certificate ([server.tls], whose
            // renewals it follows, or [identity.mtls]'s); client certificates are the
            // gRPC port's business only.
            match &gateway_tls {
                Some(_) => tracing::info!(addr = %local, "HTTP gateway listening (TLS)"),
                None => tracing::info!(addr = %local, "HTTP gateway listening"),
            }
            Some((
                Gateway {
                    router,
                    local,
                    header_read_timeout,
                    tls: gateway_tls,
                },
                inboxes,
            ))
        }
        None => None,
    };

    let reflection = reflection::Reflection::new(&SERVED_DESCRIPTORS)?;
    let router = layers::transport(&settings)
        .add_service(shutdown::EndWatches::new(
            layers::open_to_anyone!(health),
            stop.clone(),
        ))
        .add_service(layers::open_to_anyone!(reflection.v1()))
        .add_service(layers::open_to_anyone!(reflection.v1alpha()))
        .add_service(layers::authenticated(
            GrantService::new(pipeline, settings.server.request_timeout),
            authenticator,
        ));
    let cpus = cores::cpus(cores, settings.server.pin_cores);
    tracing::info!(
        addr = %grpc.addr,
        transport = settings.transport_security(),
        cores,
        cpus = %cpus.as_deref().map_or_else(|| "as the kernel places them".to_owned(), |cpus| format!("{cpus:?}")),
        "storage-grants listening"
    );
    let (dealer, grpc_inboxes) = cores::deal(cores);
    tasks.spawn(dealer.run(accepted.incoming(grpc.listener), stop.clone().begun()));
    // With mTLS, this service terminates TLS itself so that the client certificate
    // (the caller's SPIFFE ID) reaches the interceptor; with server TLS, so that no
    // token or grant crosses the network in clear text.
    let handshake_timeout = match (&settings.identity.mtls, &settings.server.tls) {
        (Some(mtls), _) => mtls.handshake_timeout,
        (None, Some(server)) => server.handshake_timeout,
        (None, None) => std::time::Duration::ZERO,
    };
    let grpc = Grpc {
        router,
        tls,
        handshake_timeout,
        // Each connection, after its TLS handshake if any, carries its own limits.
        limits: layers::ConnLimits::new(&settings.server),
    };
    let (gateway, http_inboxes) = gateway.unzip();
    let mut http_inboxes = http_inboxes.map(Vec::into_iter);
    let inboxes: Vec<_> = grpc_inboxes
        .into_iter()
        .map(|grpc| (grpc, http_inboxes.as_mut().and_then(Iterator::next)))
        .collect();
    // The store steps get what is left of the one grace after the calls' drain.
    let grace_over = stop.clone().grace_over();
    let serving = cores::start(inboxes, cpus.as_deref(), move |(grpc_inbox, http_inbox)| {
        serve_core(
            grpc.clone(),
            grpc_inbox,
            gateway.clone().zip(http_inbox),
            stop.clone(),
            grace,
        )
    })?;
    // A core that fails takes the process down, through the same drain as a shutdown.
    let result = serving
        .finished(move |error| {
            tracing::error!(%error, "a serving thread failed; shutting down");
            let _ = core_failed.send(());
        })
        .await;
    abandon_at_grace(&steps, grace_over).await;
    tasks.shutdown().await;
    tracing::info!("storage-grants stopped");
    result
}

/// Waits for the store steps still running (a completion whose caller was answered can
/// run for `storage.complete_timeout`) until `grace_over`, then names those it
/// abandons: the store may still carry them out.
async fn abandon_at_grace(steps: &Steps, grace_over: impl Future<Output = ()>) {
    tokio::select! {
        () = steps.finished() => {}
        () = grace_over => {
            let running = steps.running();
            tracing::warn!(
                steps = running.len(),
                "the drain is over with store steps still running; the store \
                 may still carry them out: a completion then makes an object this service \
                 did not audit, a start an upload the bucket's lifecycle rule removes"
            );
            for what in running.iter().take(20) {
                tracing::warn!(step = %what, "store step abandoned at shutdown");
            }
        }
    }
}

/// What each core needs to serve the gRPC port.
#[derive(Clone)]
struct Grpc {
    router: tonic::transport::server::Router<layers::Transport>,
    tls: Option<ConfigInForce>,
    handshake_timeout: std::time::Duration,
    limits: layers::ConnLimits,
}

/// What each core needs to serve the HTTP gateway.
#[derive(Clone)]
struct Gateway {
    router: axum::Router,
    local: std::net::SocketAddr,
    header_read_timeout: std::time::Duration,
    tls: Option<tls::GatewayTlsConfig>,
}

impl Gateway {
    /// Serves the gateway on `listener` until `stopped`, then drains.
    async fn serve_on<L>(self, listener: L, stopped: impl Future<Output = ()> + Send + 'static)
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        crate::gateway::serve(listener, self.router, self.header_read_timeout, stopped).await;
    }
}

/// One core's share: its gRPC connections and its gateway connections, served until
/// shutdown has begun and they have drained, or the grace is over (then the calls
/// still running are cut off when the core's runtime stops).
async fn serve_core(
    grpc: Grpc,
    grpc_inbox: cores::Inbox,
    gateway: Option<(Gateway, cores::Inbox)>,
    stop: Shutdown,
    grace: std::time::Duration,
) -> Result<(), Error> {
    let Grpc {
        router,
        tls,
        handshake_timeout,
        limits,
    } = grpc;
    let gateway_stop = stop.clone();
    let grpc_stop = stop.clone();
    let grpc = async move {
        match tls {
            Some(tls) => {
                let incoming = TlsIncoming::new(grpc_inbox, tls, handshake_timeout);
                let limits = layers::ConnLimits {
                    client_certs: true,
                    ..limits
                };
                let incoming = layers::limited(incoming, limits);
                connections::serve(router, incoming, grpc_stop).await
            }
            None => {
                let incoming = layers::limited(grpc_inbox, limits);
                connections::serve(router, incoming, grpc_stop).await
            }
        }
    };
    let http = async move {
        let Some((gateway, inbox)) = gateway else {
            return;
        };
        let stopped = gateway_stop.begun();
        match gateway.tls.clone() {
            Some(tls) => {
                let listener =
                    tls::GatewayTls::new(inbox, gateway.local, tls.config, tls.handshake_timeout);
                gateway.serve_on(listener, stopped).await;
            }
            None => {
                let listener = socket::Listening {
                    incoming: inbox,
                    local: gateway.local,
                };
                gateway.serve_on(listener, stopped).await;
            }
        }
    };
    // A gRPC transport failure ends the core at once, its gateway share with it:
    // waiting for the gateway, which serves until shutdown, would hide the failure.
    let http = async {
        http.await;
        Ok(())
    };
    let served = async { tokio::try_join!(grpc, http).map(|((), ())| ()) };
    tokio::select! {
        result = served => result,
        () = stop.clone().grace_over() => {
            // Every core reaches its grace at once; the first says it, for the whole
            // process, which is what an operator counts.
            if stop.first_to_report_grace() {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    grpc_calls_cut = crate::metrics::rpcs_in_flight(),
                    "the drain is over (server.shutdown_grace, or a second stop signal); \
                     closing remaining calls (clients see UNAVAILABLE; multipart uploads \
                     they were starting may be left for the bucket's lifecycle rule)"
                );
            }
            Ok(())
        }
    }
}

/// An S3 client for the store at `endpoint_url` (AWS's own when `None`), for the
/// readiness check and the multipart calls.
fn s3_client(
    aws: &SdkConfig,
    region: &str,
    endpoint_url: Option<&str>,
    force_path_style: bool,
) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(aws)
        .region(aws_sdk_s3::config::Region::new(region.to_owned()))
        .force_path_style(force_path_style);
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Stands in when the AWS chain yields no provider at all, so that the service still
/// starts (health NOT_SERVING, grants UNAVAILABLE) and says why.
#[derive(Debug)]
struct NoCredentials;

impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no credentials provider is configured",
            ),
        ))
    }
}

/// Settings from `text` (a config file's TOML), for the server's unit tests.
#[cfg(test)]
fn test_settings(text: &str) -> Settings {
    Settings::from_toml(
        text,
        std::path::Path::new("test.toml"),
        std::path::Path::new("/etc/sg"),
        [],
    )
    .expect("valid settings")
}
