//! The standard services beside the grant service, `grpc.health.v1.Health` and both
//! versions of `grpc.reflection.*.ServerReflection`, generated (build.rs) over the
//! messages of tonic-health and tonic-reflection but with the grant service's codec:
//! a request that does not decode is INVALID_ARGUMENT on every method of the port,
//! where tonic-health's and tonic-reflection's own servers answer INTERNAL (which the
//! service's alerts count as its own failure).

use tonic::{Request, Response, Status};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

#[allow(clippy::all, missing_docs, unused_qualifications)]
mod generated {
    pub(crate) mod health {
        include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.Health.rs"));
    }
    pub(crate) mod reflection_v1 {
        include!(concat!(
            env!("OUT_DIR"),
            "/grpc.reflection.v1.ServerReflection.rs"
        ));
    }
    pub(crate) mod reflection_v1alpha {
        include!(concat!(
            env!("OUT_DIR"),
            "/grpc.reflection.v1alpha.ServerReflection.rs"
        ));
    }
}

pub(super) use generated::health::health_server::HealthServer;
pub(super) use generated::reflection_v1::server_reflection_server as reflection_v1;
pub(super) use generated::reflection_v1alpha::server_reflection_server as reflection_v1alpha;

/// The health service over the statuses `reporter` sets: tonic-health's answers.
pub(super) fn health(reporter: HealthReporter) -> HealthServer<Health> {
    HealthServer::new(Health(HealthService::from_health_reporter(reporter)))
}

/// tonic-health's service behind the generated server.
#[derive(Debug)]
pub(super) struct Health(HealthService);

#[tonic::async_trait]
impl generated::health::health_server::Health for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        tonic_health::pb::health_server::Health::check(&self.0, request).await
    }

    type WatchStream = tonic_health::server::WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        tonic_health::pb::health_server::Health::watch(&self.0, request).await
    }
}
