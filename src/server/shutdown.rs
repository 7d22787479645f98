//! Graceful shutdown, step by step: the signal arrives; health turns NOT_SERVING (so
//! load balancers and probes stop sending traffic); the listener stops accepting;
//! in-flight calls finish, for at most `server.shutdown_grace`; then every task the
//! server spawned is stopped.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::readiness::GRANT_SERVICE;

/// Fans one shutdown signal out to the transport, the drain timer and the tasks.
#[derive(Debug, Clone)]
pub(super) struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Waits for `signal`, turns health NOT_SERVING, then tells every subscriber.
    pub(super) fn start(
        signal: impl Future<Output = ()> + Send + 'static,
        health: HealthReporter,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = watch::channel(false);
        let trigger = async move {
            signal.await;
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(GRANT_SERVICE, ServingStatus::NotServing)
                .await;
            // A receiver sees `true` even after the sender is gone.
            let _ = tx.send(true);
        };
        (Self { rx }, trigger)
    }

    /// Completes once shutdown has begun (or its trigger is gone).
    pub(super) async fn begun(mut self) {
        let _ = self.rx.wait_for(|stopping| *stopping).await;
    }

    /// Completes `grace` after shutdown began: when in-flight calls are cut off.
    pub(super) async fn grace_over(self, grace: Duration) {
        self.begun().await;
        tokio::time::sleep(grace).await;
    }
}
