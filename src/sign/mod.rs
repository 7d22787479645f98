//! Our SigV4 presigner for S3, and the cache of derived signing keys.
//!
//! Presigning is local CPU work and the hot path of `GrantRead` and `GrantWrite`, so
//! it is our own small implementation (about a microsecond a URL) rather than
//! aws-sdk-s3's `presigned()` (tens of microseconds and hundreds of allocations).
//! The SDK stays its oracle: `tests/presign_oracle.rs` checks our GET and PUT URLs
//! against it, signature included. The SDK cannot presign a POST form; that one is
//! checked against the AWS docs' example and a strict model of S3's policy checks.
//!
//! - `endpoint`: where URLs point, and path-style versus virtual-hosted addressing;
//! - `presign`: the canonical request, the string to sign and the URL (GET, PUT);
//! - `post`: the POST policy, its signature and the form fields;
//! - `key_cache`: the derived signing key, cached per day, region and credentials,
//!   shared by URLs and POST policies;
//! - `encode`, `amz_date`: SigV4's percent-encoding and time formats.
//!
//! It leaves to others what may be signed (`scope`, `rules`) and for how long
//! (`expiry`). Nothing here logs, and no error carries a secret, a signature or a URL.

mod amz_date;
mod encode;
mod endpoint;
mod key_cache;
mod post;
mod presign;

pub(crate) use encode::encode_query;
pub use endpoint::{Endpoint, check_region};
pub use post::{PostObject, PresignedPost};
pub use presign::{GetObject, PresignedRequest, PutObject, ReadMethod, Signer, UploadPart};

/// Why a signer could not be configured. Signing itself cannot fail: its inputs are
/// validated types. Messages say what to change and never echo the URL, which might
/// hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The endpoint URL's scheme is not `http` or `https`.
    #[error("the S3 endpoint URL must start with http:// or https://")]
    UnsupportedScheme,
    /// The endpoint URL carries `user[:password]@`.
    #[error(
        "the S3 endpoint URL must not contain user info (user:password@); \
         the service's credentials come from the AWS credential chain"
    )]
    UserInfo,
    /// The endpoint URL has a query or a fragment.
    #[error("the S3 endpoint URL must not have a query (?…) or a fragment (#…)")]
    QueryOrFragment,
    /// The endpoint URL has a path; buckets and keys are added per request.
    #[error(
        "the S3 endpoint URL must not have a path (at most a trailing '/'); \
         the bucket and key are added per request"
    )]
    PathNotAllowed,
    /// The endpoint URL's host is malformed.
    #[error("the S3 endpoint URL's host {reason}")]
    InvalidHost {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The endpoint URL's port is not a number from 1 to 65535.
    #[error("the S3 endpoint URL's port must be a number from 1 to 65535")]
    InvalidPort,
    /// The region is not a DNS label.
    #[error("the S3 region {reason} (for example 'us-east-1')")]
    InvalidRegion {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// `time` in RFC 3339 / ISO 8601 UTC (`2026-01-02T03:04:05.000Z`, whole seconds), as
/// JSON answers carry it.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    String::from_utf8_lossy(&amz_date::AmzDate::new(time).iso8601_millis()).into_owned()
}

/// Credentials, times and signers shared by the signer's unit tests.
#[cfg(test)]
pub(crate) mod test_fixtures {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{Endpoint, Signer};
    use crate::credentials::SigningCredentials;
    use crate::expiry::Ttl;
    use crate::secret::Secret;

    /// The access key id of AWS's documentation examples.
    pub const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    /// The secret key of AWS's documentation examples.
    pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// The example credentials, temporary when `token` is given.
    pub fn creds(token: Option<&str>) -> SigningCredentials {
        SigningCredentials {
            access_key_id: AKID.to_owned(),
            secret_access_key: Secret::new(SECRET.to_owned()),
            session_token: token.map(|t| Secret::new(t.to_owned())),
            expires_at: None,
        }
    }

    /// A lifetime of `secs` seconds.
    pub fn ttl(secs: u64) -> Ttl {
        Ttl::clamp(&[Duration::from_secs(secs)], UNIX_EPOCH, None).unwrap()
    }

    /// `secs` seconds after the epoch.
    pub fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A us-east-1 signer for `url`.
    pub fn signer(url: Option<&str>, path_style: bool) -> Signer {
        Signer::new(
            Endpoint::new(url, "us-east-1", path_style).unwrap(),
            "us-east-1",
        )
    }
}
