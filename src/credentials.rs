//! The service's own storage credentials, the ones that sign presigned URLs.
//!
//! They come from the standard AWS chain (environment, profile, web identity / IRSA,
//! container and instance metadata) through aws-config. A background task keeps a
//! current snapshot and refreshes it well before it expires, so the signing path reads
//! a snapshot and never waits on the network.

use std::time::SystemTime;

use crate::secret::Secret;

/// One snapshot of the credentials that sign grants.
#[derive(Debug, Clone)]
pub struct SigningCredentials {
    /// Access key id; not secret, it appears in every presigned URL.
    pub access_key_id: String,
    /// Secret access key; only the signer's key derivation reads it.
    pub secret_access_key: Secret<String>,
    /// Session token of temporary credentials; it travels in presigned URLs as
    /// `X-Amz-Security-Token`.
    pub session_token: Option<Secret<String>>,
    /// When temporary credentials expire; `None` for long-lived keys.
    pub expires_at: Option<SystemTime>,
}
