//! The AWS SDK set-up shared by the binary and the tests: one HTTPS client (hyper 1
//! with rustls on ring, the only TLS stack in the build) and the standard credential
//! chain (environment, profile, web identity / IRSA, container and instance metadata).

use aws_config::SdkConfig;
use aws_sdk_s3::config::SharedHttpClient;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

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

/// A one-line description of an SDK failure for the operator's log: the HTTP status,
/// the service's error code and message, or what failed on the way.
///
/// Deliberately not the SDK's full error display, which can carry the raw response
/// body: S3's SignatureDoesNotMatch body includes the request's signature and string
/// to sign, and signatures never go to logs.
pub fn describe_error<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> String {
    match error {
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(e) if e.is_timeout() => "timed out".into(),
        SdkError::DispatchFailure(_) => "connection failed".into(),
        SdkError::ConstructionFailure(_) => "the request could not be built".into(),
        SdkError::ResponseError(e) => format!("HTTP {}: malformed response", e.raw().status()),
        SdkError::ServiceError(e) => format!(
            "HTTP {}: {}{}",
            e.raw().status(),
            error.code().unwrap_or("no error code"),
            error
                .message()
                .map(|m| format!(": {m}"))
                .unwrap_or_default(),
        ),
        _ => "unknown failure".into(),
    }
}
