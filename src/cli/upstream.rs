//! The gRPC connection to the service, and the caller's token, read again for every
//! call (a projected service-account token is rotated by the kubelet).

use std::path::PathBuf;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::{Error, MIN_REMAINING};
use crate::proto;
use crate::proto::grant_service_client::GrantServiceClient;

/// Where the service is and who the caller is.
#[derive(Debug, Clone, Default)]
pub struct UpstreamOptions {
    /// The service's gRPC address, `https://…` (or `http://` on loopback and in a
    /// mesh).
    pub endpoint: String,
    /// A file holding the caller's token (a JWT such as a projected service-account
    /// token); read for every call.
    pub token_file: Option<PathBuf>,
    /// The token itself, when no file is given (`STORAGE_GRANTS_TOKEN`).
    pub token: Option<crate::secret::Secret<String>>,
    /// A PEM CA bundle for the service's certificate; unset: the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// A connection to the service.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: GrantServiceClient<Channel>,
    options: UpstreamOptions,
}

impl Upstream {
    /// Connects lazily (the first call connects, a broken connection is redone).
    ///
    /// # Errors
    /// A malformed endpoint, an unreadable CA file, no token source.
    pub fn new(mut options: UpstreamOptions) -> Result<Self, Error> {
        if options.token_file.is_none() && options.token.is_none() {
            return Err(Error::Usage(
                "name the caller's token: --token-file FILE or STORAGE_GRANTS_TOKEN".into(),
            ));
        }
        // Schemes are case-insensitive (RFC 3986); tonic reads them lowercase.
        let scheme = options
            .endpoint
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("https" | "http")) {
            return Err(Error::Usage(format!(
                "--endpoint '{}' needs an https:// or http:// scheme, e.g. \
                 https://storage-grants.example:50051 or http://127.0.0.1:50051",
                crate::core::text::redact_url(&options.endpoint)
            )));
        }
        if let Some((scheme, rest)) = options.endpoint.split_once("://") {
            options.endpoint = format!("{}://{rest}", scheme.to_ascii_lowercase());
        }
        let connect = |source| Error::Connect {
            endpoint: crate::core::text::redact_url(&options.endpoint),
            source,
        };
        let mut endpoint = Endpoint::from_shared(options.endpoint.clone())
            .map_err(connect)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15));
        if options.endpoint.starts_with("https://") {
            let tls = match &options.ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|source| Error::Ca {
                        path: path.clone(),
                        source,
                    })?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_native_roots(),
            };
            endpoint = endpoint.tls_config(tls).map_err(connect)?;
        }
        Ok(Self {
            client: GrantServiceClient::new(endpoint.connect_lazy()),
            options,
        })
    }

    async fn token(&self) -> Result<String, Error> {
        match &self.options.token_file {
            Some(path) => tokio::fs::read_to_string(path)
                .await
                .map(|t| t.trim().to_owned())
                .map_err(|source| Error::Token {
                    path: path.clone(),
                    source,
                }),
            None => Ok(self
                .options
                .token
                .as_ref()
                .map(|t| t.expose().trim().to_owned())
                .unwrap_or_default()),
        }
    }

    /// Scoped credentials with more than [`MIN_REMAINING`] to live.
    ///
    /// # Errors
    /// The token, the connection, or the service's refusal.
    pub async fn assume(
        &self,
        bucket: &str,
        prefix: &str,
        access: proto::Access,
        list: bool,
    ) -> Result<proto::AssumeScopedResponse, Error> {
        let token = self.token().await?;
        let mut request = tonic::Request::new(proto::AssumeScopedRequest {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            access: access.into(),
            list,
            duration: None,
            min_remaining: Some(prost_types::Duration {
                seconds: i64::try_from(MIN_REMAINING.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
        });
        let mut value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::Usage("the token is not a printable ASCII string".into()))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        self.client
            .clone()
            .assume_scoped(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| self.refused_or_unreachable(status))
    }

    /// A status the service sent, or the channel's own for a call that never reached
    /// it (which carries the transport error as its source).
    fn refused_or_unreachable(&self, status: tonic::Status) -> Error {
        let Some(source) = std::error::Error::source(&status) else {
            return Error::Refused(status);
        };
        let mut detail = crate::core::text::Chain(source).to_string();
        if self.options.endpoint.starts_with("https://") && detail.contains("corrupt message") {
            detail.push_str(" (is the service serving TLS there? use http:// if not)");
        }
        Error::Unreachable {
            endpoint: crate::core::text::redact_url(&self.options.endpoint),
            detail,
        }
    }
}

/// `read`, `write` or `read-write`.
///
/// # Errors
/// Anything else.
pub fn access(text: &str) -> Result<proto::Access, Error> {
    match text {
        "read" => Ok(proto::Access::Read),
        "write" => Ok(proto::Access::Write),
        "read-write" => Ok(proto::Access::ReadWrite),
        other => Err(Error::Usage(format!(
            "access '{other}': use read, write or read-write"
        ))),
    }
}
