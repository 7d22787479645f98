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
//! Steps 1 to 4 are tonic's own server layers, configured here and nowhere else. With
//! `server.grpc_web`, CORS and the gRPC-Web translation sit in front of step 5.

use http::{HeaderName, Method, header};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Request, Status};
use tonic_web::GrpcWebLayer;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::util::Either;
use tower_http::cors::CorsLayer;

use crate::caller::Caller;
use crate::config::Settings;
use crate::identity::Authenticator;
use crate::proto::grant_service_server::GrantServiceServer;
use crate::service::{self, GrantService};

/// Browser access to the gRPC port, when `server.grpc_web` is on: CORS for exactly
/// `http.allowed_origins` (outermost, so a preflight never reaches a service), then
/// gRPC-Web translated to gRPC.
pub(super) type Browser = Stack<
    Stack<Either<GrpcWebLayer, Identity>, Stack<Either<CorsLayer, Identity>, Identity>>,
    Identity,
>;

/// The server builder with layers 1–4, and the browser layers when enabled.
pub(super) fn transport(settings: &Settings) -> Server<Browser> {
    let web = settings.server.grpc_web;
    let browser = ServiceBuilder::new()
        .option_layer(web.then(|| grpc_web_cors(&settings.allowed_origins)))
        .option_layer(web.then(GrpcWebLayer::new))
        .into_inner();
    Server::builder()
        .trace_fn(|request| tracing::info_span!("grpc", path = %request.uri().path()))
        .timeout(settings.server.request_timeout)
        .concurrency_limit_per_connection(settings.server.concurrency_limit_per_connection)
        .load_shed(true)
        // gRPC-Web comes over HTTP/1.1 as well as HTTP/2.
        .accept_http1(web)
        .layer(browser)
}

/// Exact origins with credentials; the headers a gRPC-Web client sends and reads.
fn grpc_web_cors(origins: &[String]) -> CorsLayer {
    crate::gateway::exact_origins(origins)
        .allow_methods([Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(std::time::Duration::from_secs(600))
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
