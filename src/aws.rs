//! The AWS SDK set-up shared by the binary and the tests: one HTTPS client (hyper 1
//! with rustls on ring, the only TLS stack in the build) and the standard credential
//! chain (environment, profile, web identity / IRSA, container and instance metadata).

use aws_config::SdkConfig;
use aws_sdk_s3::config::SharedHttpClient;

/// The HTTPS client every AWS call goes through.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Loads the SDK config from the standard AWS chain.
pub async fn load_from_env() -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client())
        .load()
        .await
}
