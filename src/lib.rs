//! storage-grants: a gRPC service that grants short-lived, narrowly scoped access to
//! object storage.
//!
//! Modules by layer; a module uses its own layer or a lower one, never a higher one
//! (`scripts/check-layers.py` checks it, and that no import cycle exists):
//!
//! 1. vocabulary, importing nothing from the crate:
//!    [`core`] (actions, AWS limits, durations), [`secret`], [`proto`];
//! 2. domain, pure and most tested: [`scope`] (bucket, key and prefix validation, the
//!    security core), [`budget`] (per-caller limits), [`upload`] (multipart values and the upload token), [`expiry`],
//!    [`arn`], [`policy`] (the STS session policy),
//!    [`caller`], [`rules`] (who may be granted what, and their reload), [`metrics`]
//!    (counters);
//! 3. adapters to the outside: [`sign`] (our SigV4 presigner), [`sts`] (scoped
//!    credentials, cached), [`store`] (multipart calls to the store), [`credentials`]
//!    (the service's own), [`identity`] (who is
//!    calling), [`readiness`], [`aws`] (the SDK's HTTPS client), [`codec`];
//! 4. [`grant`]: the one pipeline every front door calls (authorize → clamp → sign or
//!    assume → audit);
//! 5. front doors: [`service`] (gRPC, and the one place errors become statuses),
//!    [`gateway`] (HTTP, for browsers and AWS SDKs; errors as problem details);
//! 6. wiring: [`config`] (settings parsed once), [`server`] (layers, tasks, shutdown),
//!    [`telemetry`] (logging), [`cli`] (the client modes: credential-process, the
//!    credentials proxy).
#![forbid(unsafe_code)]

pub(crate) mod arn;
pub mod aws;
pub(crate) mod budget;
pub(crate) mod caller;
pub mod cli;
pub(crate) mod codec;
pub mod config;
pub(crate) mod core;
pub mod credentials;
pub mod expiry;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gateway;
pub(crate) mod grant;
pub mod identity;
pub(crate) mod metrics;
pub mod policy;
pub(crate) mod readiness;
pub(crate) mod rules;
pub mod scope;
pub mod secret;
pub mod server;
pub(crate) mod service;
pub mod sign;
pub(crate) mod store;
pub(crate) mod sts;
pub mod telemetry;
pub mod upload;

/// Generated types and services of `storagegrants.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("storagegrants.v1");

    /// Encoded descriptors of the API, served through reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("storagegrants_descriptor");
}
