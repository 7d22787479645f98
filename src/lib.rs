//! storage-grants: a gRPC service that grants short-lived, narrowly scoped access to
//! object storage.
//!
//! Modules, one concern each:
//! - [`config`]: typed configuration, validated once at start-up;
//! - [`identity`]: who is calling, as one [`identity::Caller`];
//! - [`rules`]: which caller may be granted what;
//! - [`rules_reload`]: the rules in force, reloaded on change and SIGHUP;
//! - [`scope`]: bucket, key and prefix validation (the security core);
//! - [`expiry`]: how long a grant lives;
//! - [`policy`]: the STS session policy that confines credentials to one prefix;
//! - [`sign`]: our SigV4 presigner and its signing-key cache;
//! - [`sts`]: scoped STS credentials, cached, one call per scope;
//! - [`credentials`]: the service's own storage credentials;
//! - [`secret`]: `Secret<T>`, redacted in every printout;
//! - [`service`]: the gRPC handlers, and the one place errors become statuses;
//! - [`server`]: transport, health, reflection, graceful shutdown;
//! - [`readiness`]: HeadBucket checks behind the readiness probe;
//! - [`metrics`]: Prometheus counters on their own HTTP port;
//! - [`audit`]: one audit event per grant decision;
//! - [`codec`]: the protobuf codec, with decode failures as INVALID_ARGUMENT;
//! - [`aws`]: the AWS SDK's HTTPS client and credential chain;
//! - [`telemetry`]: logging set-up;
//! - [`proto`]: the generated API types.
#![forbid(unsafe_code)]

pub mod audit;
pub mod aws;
pub mod codec;
pub mod config;
pub mod credentials;
pub mod expiry;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod readiness;
pub mod rules;
pub mod rules_reload;
pub mod scope;
pub mod secret;
pub mod server;
pub mod service;
pub mod sign;
pub mod sts;
pub mod telemetry;

/// Generated types and services of `storagegrants.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("storagegrants.v1");

    /// Encoded descriptors of the API, served through reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("storagegrants_descriptor");
}
