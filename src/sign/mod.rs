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

pub use endpoint::Endpoint;
pub use post::{PostObject, PresignedPost};
pub use presign::{GetObject, PresignedRequest, PutObject, Signer};

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
