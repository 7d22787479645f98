//! The transport stack in front of the handlers, in the order a call meets it:
//!
//! 1. **trace**: one span per call, named by its gRPC path (never its payload);
//! 2. **timeout**: `server.request_timeout`, or the client's shorter `grpc-timeout`;
//! 3. **concurrency**: at most `server.concurrency_limit_per_connection` calls in
//!    flight per connection;
//! 4. **load shed**: past that limit a call is refused at once (RESOURCE_EXHAUSTED
//!    in tonic's mapping of `Overloaded`) instead of queueing;
//! 5. **authenticate**: only in front of the grant service (health and reflection
//!    stay open to probes); a call without a verifiable identity is refused here, and
//!    the handler finds the [`Caller`] in the request's extensions.
//!
//! Steps 1 to 4 are tonic's own server layers, configured here and nowhere else.

use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Request, Status};

use crate::caller::Caller;
use crate::config::Settings;
use crate::identity::Authenticator;
use crate::proto::grant_service_server::GrantServiceServer;
use crate::service::{self, GrantService};

/// The server builder with layers 1–4.
pub(super) fn transport(settings: &Settings) -> Server<tower::layer::util::Identity> {
    Server::builder()
        .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
        .timeout(settings.server.request_timeout)
        .concurrency_limit_per_connection(settings.server.concurrency_limit_per_connection)
        .load_shed(true)
}

/// Layer 5: finds the caller of each grant call, or refuses the call.
#[derive(Clone)]
pub(super) struct Authenticate(Authenticator);

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // The identity module logs which check failed; the caller gets the message.
        let caller: Caller = self.0.authenticate(&request).map_err(|e| {
            crate::metrics::unauthenticated();
            Status::from(service::Error::from(e))
        })?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The grant service behind layer 5.
pub(super) fn authenticated(
    grants: GrantService,
    authenticator: Authenticator,
) -> InterceptedService<GrantServiceServer<GrantService>, Authenticate> {
    GrantServiceServer::with_interceptor(grants, Authenticate(authenticator))
}
