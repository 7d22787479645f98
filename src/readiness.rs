//! Readiness: can the service sign grants, and reach its store with its own
//! credentials?
//!
//! The signing credentials must be loaded and unexpired (a refresh that keeps failing
//! until they expire turns the service not ready, while grants answer UNAVAILABLE).
//! HeadBucket on each configured bucket, at start and then periodically, drives the
//! health status of `storagegrants.v1.GrantService`, so that a wrong endpoint, a
//! missing bucket or a bad credential shows up in the readiness probe before the first
//! grant is handed out. The overall status (service "") stays SERVING while the
//! process runs: it is the liveness signal. Shutdown turns both NOT_SERVING for good
//! ([`Health::stop`]).

use std::sync::Arc;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::credentials::{self, CredentialSource};
use crate::scope::BucketName;

/// Health service name of the grant API, as generated from the proto.
pub const GRANT_SERVICE: &str = crate::proto::grant_service_server::SERVICE_NAME;

/// The health the service reports, and `storage_grants_ready`: the readiness check
/// sets the grant service's, shutdown turns every status NOT_SERVING for good. One lock
/// orders the two, so a check that ends during the drain cannot report the service
/// ready again.
#[derive(Clone)]
pub struct Health(Arc<tokio::sync::Mutex<Option<HealthReporter>>>);

impl Health {
    /// Reports through `reporter`: the process SERVING, the grant service NOT_SERVING
    /// until the first check passes.
    pub async fn new(reporter: HealthReporter) -> Self {
        report(&reporter, ServingStatus::Serving, ServingStatus::NotServing).await;
        Self(Arc::new(tokio::sync::Mutex::new(Some(reporter))))
    }

    /// Reports the grant service ready or not, unless shutdown has begun.
    async fn set_ready(&self, ready: bool) {
        if let Some(reporter) = &*self.0.lock().await {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(GRANT_SERVICE, status).await;
            crate::metrics::ready(ready);
        }
    }

    /// Turns the process and the grant service NOT_SERVING; nothing reports after.
    pub async fn stop(&self) {
        if let Some(reporter) = self.0.lock().await.take() {
            report(
                &reporter,
                ServingStatus::NotServing,
                ServingStatus::NotServing,
            )
            .await;
        }
    }
}

/// Reports the process (service "") as `process` and the grant service as `grant`.
async fn report(reporter: &HealthReporter, process: ServingStatus, grant: ServingStatus) {
    reporter.set_service_status("", process).await;
    reporter.set_service_status(GRANT_SERVICE, grant).await;
    crate::metrics::ready(grant == ServingStatus::Serving);
}

/// Why the store is not ready.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Credentials(#[from] credentials::Error),
    #[error("HeadBucket '{bucket}' failed: {reason}")]
    Bucket { bucket: String, reason: String },
    #[error("HeadBucket '{bucket}' timed out after {timeout:?}")]
    Timeout { bucket: String, timeout: Duration },
    #[error(
        "an audit log destination is not taking events (8 MiB behind, or failing writes \
         for 5 s: a stalled log pipe, a full disk, a FIFO whose reader is gone): grants wait \
         for it; storage_grants_log_backlog_bytes names it"
    )]
    AuditBehind,
}

/// The readiness check.
#[derive(Debug, Clone)]
pub struct Readiness {
    credentials: Arc<CredentialSource>,
    client: aws_sdk_s3::Client,
    buckets: Vec<BucketName>,
    timeout: Duration,
    /// Whether an audit destination holds grants back (lossless audit).
    audit_behind: fn() -> bool,
}

impl Readiness {
    /// A check of the signing `credentials`, and of `buckets` through `client`, each
    /// call bounded by `timeout`; not ready either while `audit_behind` says grants
    /// wait for the audit log.
    pub fn new(
        credentials: Arc<CredentialSource>,
        client: aws_sdk_s3::Client,
        buckets: Vec<BucketName>,
        timeout: Duration,
        audit_behind: fn() -> bool,
    ) -> Self {
        Self {
            credentials,
            client,
            buckets,
            timeout,
            audit_behind,
        }
    }

    /// Checks the signing credentials, then runs HeadBucket on every bucket.
    ///
    /// # Errors
    /// An audit destination that holds grants back; credentials that are not loaded or
    /// have expired; else the first bucket that
    /// could not be reached, and why.
    pub async fn check(&self) -> Result<(), Error> {
        if (self.audit_behind)() {
            return Err(Error::AuditBehind);
        }
        self.credentials.current()?;
        for bucket in &self.buckets {
            let call = self.client.head_bucket().bucket(bucket.as_str()).send();
            match tokio::time::timeout(self.timeout, call).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(Error::Bucket {
                        bucket: bucket.to_string(),
                        reason: crate::aws::describe_error(e),
                    });
                }
                Err(_) => {
                    return Err(Error::Timeout {
                        bucket: bucket.to_string(),
                        timeout: self.timeout,
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks now, then every `interval`, and reports the result as the health of
    /// the grant service. Logs each change of state.
    pub async fn watch(self, health: Health, interval: Duration) {
        let mut last_ok = None;
        loop {
            let result = self.check().await;
            let ok = result.is_ok();
            if last_ok != Some(ok) {
                match &result {
                    Ok(()) => {
                        tracing::info!(
                            buckets = ?self.bucket_names(),
                            "signing credentials loaded, store reachable: ready"
                        )
                    }
                    Err(e) => tracing::warn!(error = %e, "not ready"),
                }
                health.set_ready(ok).await;
                last_ok = Some(ok);
            }
            tokio::time::sleep(interval).await;
        }
    }

    fn bucket_names(&self) -> Vec<&str> {
        self.buckets.iter().map(BucketName::as_str).collect()
    }
}
