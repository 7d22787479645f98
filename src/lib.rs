//! storage-grants: a gRPC service that grants short-lived, narrowly scoped access to
//! object storage.
//!
//! Modules, one concern each:
//! - [`scope`]: bucket, key and prefix validation (the security core);
//! - [`expiry`]: how long a grant lives;
//! - [`sign`]: our SigV4 presigner and its signing-key cache;
//! - [`credentials`]: the service's own storage credentials;
//! - [`secret`]: `Secret<T>`, redacted in every printout;
//! - [`proto`]: the generated API types.
#![forbid(unsafe_code)]

pub mod credentials;
pub mod expiry;
pub mod scope;
pub mod secret;
pub mod sign;

/// Generated types and services of `storagegrants.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("storagegrants.v1");

    /// Encoded descriptors of the API, served through reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("storagegrants_descriptor");
}
