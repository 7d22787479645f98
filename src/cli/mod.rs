//! The binary's client modes, for programs that cannot call gRPC themselves: both ask
//! the service's `AssumeScoped` over gRPC with the caller's own token, and answer in a
//! format every AWS SDK reads.
//!
//! - `credential-process` prints `credential_process` JSON, for `~/.aws/config`;
//! - `credentials-proxy` serves the container-credentials endpoint on loopback, as a
//!   sidecar in the caller's pod, forwarding with the pod's token.
//!
//! Both ask for credentials with more than [`MIN_REMAINING`] to live, beyond every
//! SDK's refresh window, so that a refresh never gets back the credentials it replaces.

pub mod credential_process;
pub mod proxy;
mod upstream;

use std::time::Duration;

pub use upstream::{Upstream, UpstreamOptions, access as upstream_access};

/// botocore's 15-minute advisory refresh window, the widest of the SDKs', plus 5
/// minutes.
pub const MIN_REMAINING: Duration = crate::gateway::CREDENTIALS_MIN_LEFT;

/// Why a client mode failed; the message never carries a token or a key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line argument is missing or malformed.
    #[error("{0}")]
    Usage(String),
    /// The token file cannot be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    Token {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file cannot be read.
    #[error("cannot read the CA file {}: {source}", path.display())]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The service cannot be reached.
    #[error("cannot reach the service at {endpoint}: {source}")]
    Connect {
        /// Its address.
        endpoint: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The call never reached the service: no connection, or no TLS where it was
    /// expected.
    #[error("cannot reach the service at {endpoint}: {detail}")]
    Unreachable {
        /// Its address.
        endpoint: String,
        /// What the connection met, down to the operating system's error.
        detail: String,
    },
    /// The service refused.
    #[error("the service refused ({}): {}", crate::core::grpc_code_name(.0.code()), .0.message())]
    Refused(tonic::Status),
    /// The app's token file cannot be read or written.
    #[error("cannot use the authorization token file {}: {source}", path.display())]
    AppToken {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listener cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
