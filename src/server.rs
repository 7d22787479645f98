//! Assembles and runs the server: the grant service behind its authentication
//! interceptor, standard health and reflection, transport limits, and graceful
//! shutdown.
//!
//! Shutdown, step by step: the signal arrives; health turns NOT_SERVING (so load
//! balancers and probes stop sending traffic); the listener stops accepting; in-flight
//! calls finish, for at most `server.shutdown_grace`; then `run` returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::credentials::CredentialSource;
use crate::identity::Authenticator;
use crate::identity::mtls::TlsIncoming;
use crate::policy::{KmsKeyArn, Partition};
use crate::proto::grant_service_server::GrantServiceServer;
use crate::readiness::{GRANT_SERVICE, Readiness};
use crate::rules::Rules;
use crate::rules_reload::RulesHandle;
use crate::scope::BucketName;
use crate::service::{self, GrantService, ScopedGrants};
use crate::sign::{Endpoint, Signer};
use crate::sts::Broker;

/// Region used when neither the config nor the AWS chain names one.
const FALLBACK_REGION: &str = "us-east-1";

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rules(#[from] crate::rules::Error),
    #[error("storage.endpoint: {0}")]
    Endpoint(#[from] crate::sign::Error),
    #[error("storage.check_buckets: '{bucket}' {source}")]
    Bucket {
        bucket: String,
        #[source]
        source: crate::scope::Error,
    },
    #[error("identity: {0}")]
    Identity(#[from] crate::identity::SetupError),
    #[error("identity.jwt.jwks_file: {0}")]
    Jwks(crate::identity::jwks::LoadError),
    #[error("identity.mtls: {0}")]
    Tls(#[from] crate::identity::mtls::SetupError),
    #[error("metrics.listen: {0}")]
    Metrics(String),
    #[error("sts: {0}")]
    Sts(String),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The region grants are signed for: the config's, else the AWS chain's, else
/// us-east-1.
pub fn region(config: &Config, aws: &SdkConfig) -> String {
    config
        .storage
        .region
        .clone()
        .or_else(|| aws.region().map(|r| r.to_string()))
        .unwrap_or_else(|| FALLBACK_REGION.to_owned())
}

/// Everything `run` needs from the files, validated.
pub struct Checked {
    /// The rules in force at start.
    pub rules: Rules,
    buckets: Vec<BucketName>,
    tls: Option<Arc<rustls::ServerConfig>>,
    sts: Option<StsSettings>,
}

/// Reads and validates everything `run` needs from the files: the rules, the endpoint,
/// the readiness buckets, the STS settings and the TLS files.
///
/// # Errors
/// The first problem found, with file and line where there is one.
pub async fn check(config: &Config) -> Result<Checked, Error> {
    let rules = Rules::load(&config.grants.rules_file).await?;
    let region = config.storage.region.as_deref().unwrap_or(FALLBACK_REGION);
    Endpoint::new(
        config.storage.endpoint.as_deref(),
        region,
        config.storage.force_path_style,
    )?;
    let buckets = check_buckets(config, &rules)?;
    let sts = check_sts(config)?;
    let tls = config
        .identity
        .mtls
        .as_ref()
        .map(crate::identity::mtls::server_tls_config)
        .transpose()?;
    Ok(Checked {
        rules,
        buckets,
        tls,
        sts,
    })
}

/// What `--check-config` validates: [`check`], and a JWKS file, which serving reads
/// when its authenticator starts. A JWKS URL is fetched only when serving.
///
/// # Errors
/// As [`check`], and a JWKS file that cannot be read or holds no usable key.
pub async fn check_config(config: &Config) -> Result<Checked, Error> {
    let checked = check(config).await?;
    if let Some(file) = config
        .identity
        .jwt
        .as_ref()
        .and_then(|j| j.jwks_file.as_ref())
    {
        let bytes = tokio::fs::read(file).await.map_err(|source| {
            Error::Jwks(crate::identity::jwks::LoadError::Read {
                path: file.clone(),
                source,
            })
        })?;
        crate::identity::jwks::KeySet::parse(&bytes).map_err(Error::Jwks)?;
    }
    Ok(checked)
}

/// The parsed STS settings, when AssumeScoped is configured.
struct StsSettings {
    role_arn: String,
    partition: Partition,
    kms_key: Option<KmsKeyArn>,
    /// `sts.storage_endpoint`, validated and normalised like `storage.endpoint`.
    storage_endpoint: Option<String>,
}

fn check_sts(config: &Config) -> Result<Option<StsSettings>, Error> {
    let sts = &config.sts;
    let Some(role_arn) = &sts.role_arn else {
        return Ok(None);
    };
    let partition: Partition = sts
        .partition
        .parse()
        .map_err(|e| Error::Sts(format!("partition '{}': {e}", sts.partition)))?;
    let role_prefix = format!("arn:{partition}:iam::");
    let valid_role = role_arn.strip_prefix(&role_prefix).is_some_and(|rest| {
        rest.split_once(":role/").is_some_and(|(account, name)| {
            account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
        })
    });
    if !valid_role {
        return Err(Error::Sts(format!(
            "role_arn '{role_arn}' is not a role ARN of partition '{partition}' \
             (arn:{partition}:iam::123456789012:role/NAME)"
        )));
    }
    let kms_key = sts
        .kms_key_arn
        .as_deref()
        .map(|k| {
            k.parse::<KmsKeyArn>()
                .map_err(|e| Error::Sts(format!("kms_key_arn: {e}")))
        })
        .transpose()?;
    if let Some(key) = kms_key.as_ref().filter(|k| k.partition() != partition) {
        return Err(Error::Sts(format!(
            "kms_key_arn is in partition '{}', the role in '{partition}'; use a key of the \
             role's partition",
            key.partition()
        )));
    }
    let region = config.storage.region.as_deref().unwrap_or(FALLBACK_REGION);
    let storage_endpoint = sts
        .storage_endpoint
        .as_deref()
        .map(|url| {
            Endpoint::new(Some(url), region, config.storage.force_path_style)
                .map(|e| e.url())
                .map_err(|e| Error::Sts(format!("storage_endpoint: {e}")))
        })
        .transpose()?;
    Ok(Some(StsSettings {
        storage_endpoint,
        role_arn: role_arn.clone(),
        partition,
        kms_key,
    }))
}

fn check_buckets(config: &Config, rules: &Rules) -> Result<Vec<BucketName>, Error> {
    match &config.storage.check_buckets {
        None => Ok(rules.buckets()),
        Some(names) => names
            .iter()
            .map(|b| {
                b.parse().map_err(|source| Error::Bucket {
                    bucket: b.clone(),
                    source,
                })
            })
            .collect(),
    }
}

/// Serves on `listener` until `shutdown` completes, then drains.
///
/// `aws` supplies the service's own credentials (normally the default AWS chain)
/// and HTTP client; the store's endpoint and addressing come from `config`.
///
/// # Errors
/// A bad rules file or endpoint before serving; a transport failure while serving.
pub async fn run(
    config: Config,
    aws: SdkConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    // The file's version before it is read: a change from here on triggers a reload.
    let rules_version = crate::rules_reload::file_version(&config.grants.rules_file).await;
    let Checked {
        rules,
        buckets,
        tls,
        sts,
    } = check(&config).await?;
    let region = region(&config, &aws);
    let storage = &config.storage;
    let endpoint = Endpoint::new(
        storage.endpoint.as_deref(),
        &region,
        storage.force_path_style,
    )?;
    // The validated, normalised store URL, for the readiness client and for callers of
    // AssumeScoped; `None` means AWS's own regional endpoints.
    let endpoint_url = storage.endpoint.is_some().then(|| endpoint.url());
    let signer = Arc::new(Signer::new(endpoint, &region));

    let provider = aws.credentials_provider().unwrap_or_else(|| {
        aws_credential_types::provider::SharedCredentialsProvider::new(NoCredentials)
    });
    let credentials = CredentialSource::start(provider, storage.call_timeout).await;

    let authenticator = Authenticator::start(&config.identity).await?;
    if authenticator.dev_tokens_enabled() {
        tracing::warn!(
            tokens = config.identity.dev_tokens.len(),
            "DEVELOPMENT MODE: static bearer tokens are accepted; never run this in production"
        );
    }
    tracing::info!(
        rules = rules.len(),
        file = %config.grants.rules_file.display(),
        "rules loaded"
    );
    if rules.is_empty() {
        tracing::warn!("the rules file holds no rule: every grant will be refused");
    }

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(GRANT_SERVICE, ServingStatus::NotServing)
        .await;
    let readiness = Readiness::new(
        s3_client(
            &aws,
            &region,
            endpoint_url.as_deref(),
            storage.force_path_style,
        ),
        buckets,
        storage.call_timeout,
    );
    let readiness_task = tokio::spawn(readiness.watch(reporter.clone(), storage.check_interval));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let scoped = sts.map(|settings| {
        let client = Broker::client(&aws, &config.sts, &region);
        tracing::info!(role_arn = %settings.role_arn, "AssumeScoped enabled");
        Arc::new(ScopedGrants {
            broker: Broker::new(client, settings.role_arn, config.sts.clone()),
            partition: settings.partition,
            kms_key: settings.kms_key,
            config: config.sts.clone(),
            region: region.clone(),
            endpoint: settings
                .storage_endpoint
                .or_else(|| endpoint_url.clone())
                .unwrap_or_default(),
            force_path_style: config.storage.force_path_style,
        })
    });
    if scoped.is_none() {
        tracing::info!("AssumeScoped disabled: no sts.role_arn configured");
    }
    let rules = RulesHandle::new(rules, config.grants.rules_file.clone(), rules_version);
    let rules_task = tokio::spawn(rules.clone().watch(
        config.grants.rules_reload_interval,
        crate::rules_reload::hangup_signal(),
    ));
    let grants = GrantService::new(rules, signer, credentials, config.grants.clone(), scoped);
    let authenticate = move |mut request: Request<()>| -> Result<Request<()>, Status> {
        // The identity module logs which check failed; the caller gets the message.
        let caller = authenticator.authenticate(&request).map_err(|e| {
            crate::metrics::unauthenticated();
            Status::from(service::Error::from(e))
        })?;
        request.extensions_mut().insert(caller);
        Ok(request)
    };

    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = config.metrics.listen {
        let metrics_listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Metrics(format!("cannot listen on {addr}: {e}")))?;
        tracing::info!(addr = ?metrics_listener.local_addr().ok(), "metrics at GET /metrics");
        tokio::spawn(crate::metrics::serve(metrics_listener, async {
            let _ = metrics_stopped.await;
        }));
    }
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, "storage-grants listening");
    let grace = config.server.shutdown_grace;
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let health_on_shutdown = reporter.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
        health_on_shutdown
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health_on_shutdown
            .set_service_status(GRANT_SERVICE, ServingStatus::NotServing)
            .await;
        let _ = drain_tx.send(());
    };
    let router = Server::builder()
        .timeout(config.server.request_timeout)
        .concurrency_limit_per_connection(config.server.concurrency_limit_per_connection)
        .load_shed(true)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(GrantServiceServer::with_interceptor(grants, authenticate));
    // No Nagle: a grant is one small response, and waiting to coalesce it with the
    // next write adds the peer's delayed-ACK time (~40 ms) to the call.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // With mTLS, this service terminates TLS itself so that the client certificate
    // (the caller's SPIFFE ID) reaches the interceptor.
    let serve: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match (&config.identity.mtls, tls) {
            (Some(mtls), Some(tls)) => Box::pin(router.serve_with_incoming_shutdown(
                TlsIncoming::new(incoming, tls, mtls.handshake_timeout),
                signal,
            )),
            _ => Box::pin(router.serve_with_incoming_shutdown(incoming, signal)),
        };
    tokio::pin!(serve);
    // Serve until the signal; after it, give in-flight calls at most `grace`.
    let result = tokio::select! {
        result = &mut serve => result,
        _ = async {
            let _ = drain_rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "drain took too long; closing remaining calls");
            Ok(())
        }
    };
    readiness_task.abort();
    rules_task.abort();
    let _ = metrics_stop.send(());
    tracing::info!("storage-grants stopped");
    Ok(result?)
}

/// An S3 client for the store at `endpoint_url` (AWS's own when `None`), used only for
/// the readiness check.
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
