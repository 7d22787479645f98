//! The AWS SDK set-up shared by the binary and the tests: one HTTPS client (hyper 1
//! with rustls on ring, the only TLS stack in the build) and the standard credential
//! chain (environment, profile, web identity / IRSA, container and instance metadata).

use std::sync::Arc;
use std::time::Duration;

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

/// Loads the SDK config from the standard AWS chain; with `region` (the settings'),
/// the chain is not asked for one, so a pod without instance metadata logs no failed
/// lookup.
pub async fn load_from_env(region: Option<&str>) -> SdkConfig {
    let loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client());
    match region {
        Some(region) => loader.region(aws_config::Region::new(region.to_owned())),
        None => loader,
    }
    .load()
    .await
}

/// A one-line description of an SDK failure for the operator's log: the HTTP status,
/// the service's error code and message, or what failed on the way and why.
///
/// Deliberately not the SDK's full error display, which can carry the raw response
/// body: S3's SignatureDoesNotMatch body includes the request's signature and string
/// to sign, and signatures never go to logs.
pub fn describe_error<E>(error: SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match Unanswered::from_sdk(error) {
        Ok(unanswered) => crate::core::text::Chain(&unanswered).to_string(),
        Err(answer) => describe_answer(&answer),
    }
}

/// The status, error code and message of an error the service answered with.
pub fn describe_answer<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> String {
    format!(
        "HTTP {}: {}{}",
        error.raw_response().map_or(0, |r| r.status().as_u16()),
        error.code().unwrap_or("no error code"),
        error
            .message()
            .map(|m| format!(": {m}"))
            .unwrap_or_default(),
    )
}

/// Why a call to an AWS API got no answer to act on: anything but an error response
/// of the service itself. Its text names the kind of failure only, fit for a caller's
/// message; a failed connection keeps its cause (the connector's error, down to the
/// operating system's) as its `source`, for the operator's log
/// ([`crate::core::text::Chain`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unanswered {
    /// Nothing came back within the bound this service put on the call.
    #[error("no answer within {}", crate::core::duration::display(*.0))]
    Deadline(Duration),
    /// The SDK's own timeout (connect, read or the whole operation) ran out.
    #[error("timed out")]
    TimedOut,
    /// No connection, or a broken one: refused, name not resolved, TLS, reset.
    #[error("connection failed")]
    Connection(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// An answer that could not be read. Its cause is not kept: a parse error can
    /// quote the body, and a body can quote the request's signature.
    #[error("HTTP {0}: malformed response")]
    Malformed(u16),
    /// The SDK could not build the request (its cause can name the request's
    /// fields, so it is not kept either).
    #[error("the request could not be built")]
    Construction,
    /// A failure the SDK does not classify.
    #[error("unknown failure")]
    Unknown,
}

impl Unanswered {
    /// The failure of `error`; an error response of the service is given back as
    /// it is (it is an answer: its code says what to do).
    ///
    /// # Errors
    /// `error` itself when it is the service's error response.
    pub fn from_sdk<E>(
        error: SdkError<E, HttpResponse>,
    ) -> Result<Self, Box<SdkError<E, HttpResponse>>>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        Ok(match error {
            // A success whose body is not the operation's answer (a proxy's or login
            // page, a cut body): the SDK reports it as an error of the service with no
            // code, but the service said nothing.
            SdkError::ServiceError(ref e)
                if e.raw().status().is_success() && error.code().is_none() =>
            {
                Unanswered::Malformed(e.raw().status().as_u16())
            }
            SdkError::ServiceError(_) => return Err(Box::new(error)),
            SdkError::TimeoutError(_) => Unanswered::TimedOut,
            SdkError::DispatchFailure(ref e) if e.is_timeout() => Unanswered::TimedOut,
            SdkError::DispatchFailure(_) => match error.into_source() {
                Ok(cause) => Unanswered::Connection(Arc::from(cause)),
                Err(_) => Unanswered::Unknown,
            },
            SdkError::ResponseError(ref e) => Unanswered::Malformed(e.raw().status().as_u16()),
            SdkError::ConstructionFailure(_) => Unanswered::Construction,
            _ => Unanswered::Unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::text::Chain;

    #[test]
    fn only_a_failed_connection_keeps_its_cause() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused here");
        let connection = Unanswered::Connection(Arc::new(refused));
        assert_eq!(connection.to_string(), "connection failed");
        assert_eq!(
            Chain(&connection).to_string(),
            "connection failed: refused here"
        );
        for causeless in [
            Unanswered::Deadline(Duration::from_millis(1500)),
            Unanswered::TimedOut,
            Unanswered::Malformed(502),
            Unanswered::Construction,
            Unanswered::Unknown,
        ] {
            assert!(
                std::error::Error::source(&causeless).is_none(),
                "{causeless:?}"
            );
        }
        assert_eq!(
            Unanswered::Deadline(Duration::from_millis(1500)).to_string(),
            "no answer within 1500ms"
        );
    }
}
