//! The transport stack in front of the handlers, in the order a call meets it:
//!
//! 1. **trace**: one span per call ([`rpc_span`]), named by its RPC from a fixed list
//!    (never by its payload), continuing the caller's trace when a W3C `traceparent`
//!    came with it; the handler and the pipeline fill in caller, bucket, decision and
//!    grant id, [`Observe`] the status code;
//! 2. **timeout**: `server.request_timeout`, or the client's shorter `grpc-timeout`
//!    (one already past, or not gRPC's form, is refused before: [`unusable_deadline`]);
//! 3. **observe, concurrency and load shed** ([`Observe`]): at most
//!    `server.concurrency_limit_per_connection` calls in flight per connection; past
//!    that a call is refused at once (RESOURCE_EXHAUSTED) instead of queueing, and
//!    counted; every call is timed and counted by method and status code; a request
//!    over the message size limit, or with more than [`METADATA_LIMIT`] of metadata,
//!    answers RESOURCE_EXHAUSTED, as gRPC specifies;
//! 4. **authenticate**: only in front of the grant service (health and reflection
//!    stay open to probes); a call without a verifiable identity is refused here, and
//!    the handler finds the [`Caller`] in the request's extensions.
//!
//! Steps 1 and 2 are tonic's own server layers, configured here and nowhere else. Step
//! 3 is ours because tonic's load shedding happens where no layer of ours can see it;
//! its per-connection limit comes with each connection ([`Conn`]). With
//! `server.grpc_web`, CORS and the gRPC-Web translation sit in front of everything.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderName, Method, header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::Connected;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use tonic_web::GrpcWebLayer;
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower::util::Either;
use tower_http::cors::CorsLayer;
use tracing::field::Empty;

use crate::caller::Caller;
use crate::config::Settings;
use crate::identity::Authenticator;
use crate::identity::mtls::{ConnectionCaller, PeerAddr};
use crate::metrics::Rpc;
use crate::proto::grant_service_server::GrantServiceServer;
use crate::service::{self, GrantService};

/// Browser access to the gRPC port, when `server.grpc_web` is on: CORS for exactly
/// `http.allowed_origins` (outermost, so a preflight never reaches a service), then
/// gRPC-Web translated to gRPC.
pub(super) type Browser = Stack<
    Stack<Either<GrpcWebLayer, Identity>, Stack<Either<CorsLayer, Identity>, Identity>>,
    Identity,
>;

/// The layers [`transport`] puts around every service.
pub(super) type Transport = Stack<ObserveLayer, Browser>;

/// The server builder with layers 1–3, behind the browser layers when enabled.
pub(super) fn transport(settings: &Settings) -> Server<Transport> {
    let web = settings.server.grpc_web;
    let browser = ServiceBuilder::new()
        .option_layer(web.then(|| grpc_web_cors(&settings.allowed_origins)))
        .option_layer(web.then(GrpcWebLayer::new))
        .into_inner();
    // No `max_connection_age`: tonic gives every connection the same one, so
    // connections opened together would be sent away together; each connection is
    // sent away at an age of its own instead (`Conn::send_away_at`, `connections`).
    Server::builder()
        .trace_fn(rpc_span)
        .timeout(settings.server.request_timeout)
        // HTTP/2 refuses a header list over its limit with status 431, which clients
        // report as UNKNOWN, or past a multiple of it with a GOAWAY that fails every
        // call on the connection; under this transport limit the observe layer answers
        // an oversized one with RESOURCE_EXHAUSTED and the size instead.
        .http2_max_header_list_size(Some(METADATA_TRANSPORT_LIMIT))
        // gRPC-Web comes over HTTP/1.1 as well as HTTP/2.
        .accept_http1(web)
        .layer(browser)
        .layer(ObserveLayer {
            hold: crate::grant::audit::hold_at_most(settings.server.request_timeout),
        })
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

// === trace ===

/// Layer 1: the call's span, with OpenTelemetry's RPC attributes and the fields the
/// rest of the call records (`Empty` until then). None of them is ever a token, key,
/// signature or URL: `caller` is an identity, `bucket` a validated bucket name,
/// `grant_id` a random id.
fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    // A gRPC-Web CORS preflight is no call (the CORS layer answers it): untraced, as
    // the gateway's `/healthz`, not a span of the RPC that has no status.
    if request.method() == http::Method::OPTIONS {
        return tracing::Span::none();
    }
    let rpc = Rpc::of_path(request.uri().path());
    let (service, method) = (rpc.service(), rpc.method());
    let span = tracing::info_span!(
        "rpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        caller = Empty,
        bucket = Empty,
        decision = Empty,
        grant_id = Empty,
    );
    crate::telemetry::continue_trace(&span, request.headers());
    span
}

/// The code of a gRPC response: in the headers when the call failed before a message
/// (tonic sends every error of a unary call that way, "trailers-only"); otherwise the
/// handler answered and the trailers carry OK.
fn response_code(headers: &http::HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// Records how a call ended on its span (layer 1's) and in the metrics.
fn finish(rpc: Rpc, code: Code, started: Instant) {
    let span = tracing::Span::current();
    span.record("rpc.grpc.status_code", code as i32);
    // OpenTelemetry's convention for servers: these codes are the server's failures;
    // the others are the caller's.
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
    crate::metrics::rpc(rpc, code as i32, started.elapsed());
}

// === observe, concurrency and load shed ===

/// Layer 3 (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(super) struct ObserveLayer {
    /// How long a grant call may wait for the audit log
    /// ([`crate::grant::audit::hold_at_most`]).
    hold: Duration,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            hold: self.hold,
        }
    }
}

/// Layer 3's service.
#[derive(Debug, Clone)]
pub(super) struct Observe<S> {
    inner: S,
    hold: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let rpc = Rpc::of_path(request.uri().path());
        if let Some(refusal) = unsupported(request.method(), request.headers()) {
            return Box::pin(async move {
                finish(rpc, refusal.code, started);
                Ok(refusal.into_http())
            });
        }
        if !rpc.is_known() {
            // tonic's answer has no message; this one says what is served.
            let status = Status::unimplemented(unknown_method(request.uri().path()));
            return Box::pin(async move {
                finish(rpc, Code::Unimplemented, started);
                Ok(status.into_http())
            });
        }
        if let Some(size) = oversized_metadata(request.headers()) {
            let status = Status::resource_exhausted(format!(
                "the call's metadata is {size} bytes (as HTTP/2 counts a header list); this \
                 server takes at most {METADATA_LIMIT}: send a shorter token or fewer entries"
            ));
            return Box::pin(async move {
                finish(rpc, Code::ResourceExhausted, started);
                Ok(status.into_http())
            });
        }
        let conn = request.extensions_mut().remove::<ConnInfo>();
        let permit = match &conn {
            Some(conn) => {
                (conn.restore)(request.extensions_mut());
                // Once: a store per call would write the line on every call.
                if !conn.used.load(Ordering::Relaxed) {
                    conn.used.store(true, Ordering::Relaxed);
                }
                match conn.slots.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        crate::metrics::load_shed();
                        let status = Status::resource_exhausted(
                            "too many calls in flight on this connection; retry, or spread \
                             calls over more connections",
                        );
                        // Recorded when polled: only then is the call's span current.
                        return Box::pin(async move {
                            finish(rpc, Code::ResourceExhausted, started);
                            Ok(status.into_http())
                        });
                    }
                }
            }
            // Not from our listener (in-process callers): no per-connection limit.
            None => None,
        };
        // Lossless audit: while a destination is behind, a grant waits for it (below),
        // at most most of `request_timeout` and of the caller's own deadline, then is
        // answered UNAVAILABLE with a retry hint rather than cut off. Worked out only
        // then: a call otherwise pays one atomic load for it.
        let hold =
            (crate::grant::audit::BACKLOG.is_behind() && rpc.is_grant_service()).then(|| {
                request
                    .headers()
                    .get("grpc-timeout")
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::service::parse_grpc_timeout)
                    .map_or(self.hold, |deadline| {
                        self.hold.min(crate::grant::audit::hold_at_most(deadline))
                    })
            });
        let call = self.inner.call(request);
        Box::pin(async move {
            crate::metrics::rpc_in_flight(true);
            let mut guard = InFlight {
                rpc,
                started,
                done: false,
                _permit: permit,
            };
            // The wait does not hold the thread: health checks and the drain go on.
            if let Some(hold) = hold
                && !crate::grant::audit::BACKLOG.room_within(hold).await
            {
                guard.done = true;
                finish(rpc, Code::Unavailable, started);
                return Ok(Status::with_error_details(
                    Code::Unavailable,
                    crate::grant::audit::BEHIND,
                    tonic_types::ErrorDetails::with_retry_info(Some(
                        crate::grant::audit::BEHIND_RETRY_AFTER,
                    )),
                )
                .into_http());
            }
            let response = call.await.map(oversized_is_resource_exhausted);
            let code = match &response {
                Ok(response) => response_code(response.headers()),
                Err(_) => Code::Unknown,
            };
            guard.done = true;
            finish(rpc, code, started);
            response
        })
    }
}

/// Why a request's method or `content-type` is not served, and how it is answered.
#[derive(Debug, PartialEq)]
struct Unsupported {
    code: Code,
    /// HTTP 405 or 415 for a request that is not gRPC at all; 200 (a gRPC status)
    /// otherwise.
    http_status: http::StatusCode,
    message: String,
    /// For an encoding it does not take: `grpc-accept-encoding`, as gRPC asks.
    accept_encoding: bool,
}

impl Unsupported {
    fn into_http(self) -> http::Response<tonic::body::Body> {
        let method_not_allowed = self.http_status == http::StatusCode::METHOD_NOT_ALLOWED;
        let mut response = Status::new(self.code, self.message).into_http();
        *response.status_mut() = self.http_status;
        if self.accept_encoding {
            response.headers_mut().insert(
                "grpc-accept-encoding",
                http::HeaderValue::from_static("gzip,deflate,identity"),
            );
        }
        if method_not_allowed {
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        }
        response
    }
}

/// A request that is not a gRPC call this server answers: not a POST (gRPC's HTTP/2
/// protocol sends every call as one; a GET was served as if it were a call), or see
/// [`unsupported_content_type`]. A browser's CORS preflight is answered before this
/// layer when gRPC-Web is on.
fn unsupported(method: &Method, headers: &http::HeaderMap) -> Option<Unsupported> {
    if method != Method::POST {
        return Some(Unsupported {
            code: Code::Unimplemented,
            http_status: http::StatusCode::METHOD_NOT_ALLOWED,
            accept_encoding: false,
            message: format!(
                "gRPC calls are POST requests, not {}; plain HTTP goes to the gateway \
                 (http.listen)",
                crate::core::text::echo(method.as_str())
            ),
        });
    }
    unsupported_content_type(headers)
        .or_else(|| unsupported_encoding(headers))
        .or_else(|| unusable_deadline(headers))
}

/// A `grpc-timeout` the call cannot be held to. Not gRPC's form (1 to 8 digits and a
/// unit): INVALID_ARGUMENT, where tonic would ignore it and give the call the server's
/// own timeout. Zero: DEADLINE_EXCEEDED at once, where tonic would still run the call,
/// and a grant would be issued and audited for a caller that has already given up.
fn unusable_deadline(headers: &http::HeaderMap) -> Option<Unsupported> {
    let value = headers.get("grpc-timeout")?;
    let amount = value.to_str().ok().and_then(|text| {
        let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
        let form = (1..=8).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && matches!(unit, "H" | "M" | "S" | "m" | "u" | "n");
        form.then(|| digits.parse::<u64>().ok()).flatten()
    });
    let (code, message) = match amount {
        Some(0) => (
            Code::DeadlineExceeded,
            "grpc-timeout is 0: the call's deadline had passed when it arrived".to_owned(),
        ),
        Some(_) => return None,
        None => (
            Code::InvalidArgument,
            format!(
                "grpc-timeout '{}' is not a timeout: send 1 to 8 digits and a unit (H, M, S, \
                 m, u, n), e.g. 5S",
                crate::core::text::echo(&String::from_utf8_lossy(value.as_bytes()))
            ),
        ),
    };
    Some(Unsupported {
        code,
        http_status: http::StatusCode::OK,
        accept_encoding: false,
        message,
    })
}

/// A request compressed with an encoding this server does not take (it takes
/// [`ACCEPTED_ENCODINGS`]): answered here as tonic would (UNIMPLEMENTED), naming the
/// encodings it takes, and quoting what was sent through `echo` (tonic's own message
/// quotes the header raw).
fn unsupported_encoding(headers: &http::HeaderMap) -> Option<Unsupported> {
    let sent = headers.get("grpc-encoding")?;
    let known = sent
        .to_str()
        .is_ok_and(|e| e == "identity" || ACCEPTED_ENCODING_NAMES.contains(&e));
    (!known).then(|| Unsupported {
        code: Code::Unimplemented,
        http_status: http::StatusCode::OK,
        accept_encoding: true,
        message: format!(
            "grpc-encoding '{}' is not one this server takes: send identity, gzip or deflate",
            crate::core::text::echo(&String::from_utf8_lossy(sent.as_bytes()))
        ),
    })
}

/// A request whose `content-type` is not gRPC with protobuf messages: gRPC's HTTP/2
/// protocol asks for HTTP 415 when it does not begin with `application/grpc`, so that
/// an HTTP client does not take the answer (status 200) for a success; another codec
/// (`application/grpc+json`) gets a gRPC status, since tonic would decode its JSON as
/// protobuf. gRPC-Web was translated to `application/grpc` before this layer.
fn unsupported_content_type(headers: &http::HeaderMap) -> Option<Unsupported> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let media = value
        .as_deref()
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim();
    let grpc = "application/grpc";
    let is_grpc = media
        .get(..grpc.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(grpc));
    let subtype = media.get(grpc.len()..).unwrap_or("");
    if is_grpc && (subtype.is_empty() || subtype.eq_ignore_ascii_case("+proto")) {
        return None;
    }
    let sent = match &value {
        Some(v) => format!("content-type '{}'", crate::core::text::echo(v)),
        None => "no content-type".to_owned(),
    };
    Some(if is_grpc && subtype.starts_with('+') {
        Unsupported {
            code: Code::Unimplemented,
            http_status: http::StatusCode::OK,
            accept_encoding: false,
            message: format!(
                "this server's messages are protobuf only: send content-type \
                 application/grpc (or application/grpc+proto), not {sent}"
            ),
        }
    } else {
        Unsupported {
            code: Code::InvalidArgument,
            http_status: http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            accept_encoding: false,
            message: format!(
                "this port speaks gRPC: send content-type application/grpc, not {sent} \
                 (plain HTTP goes to the gateway, http.listen)"
            ),
        }
    })
}

/// Most metadata a call may carry, counted as HTTP/2 counts a header list (each entry's
/// name and value, and 32 bytes): gRPC's common default (C-core servers refuse more),
/// room for any JWT a cluster issues.
pub const METADATA_LIMIT: usize = 16 << 10;

/// What the transport decodes before the observe layer can answer (above it: HTTP 431,
/// or a GOAWAY, from hyper): four times [`METADATA_LIMIT`], so that an oversized call
/// gets a status that says why.
const METADATA_TRANSPORT_LIMIT: u32 = 64 << 10;

/// The header list's size when it is over [`METADATA_LIMIT`].
fn oversized_metadata(headers: &http::HeaderMap) -> Option<usize> {
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    (size > METADATA_LIMIT).then_some(size)
}

/// What UNIMPLEMENTED says for `path`: the methods this service does serve.
fn unknown_method(path: &str) -> String {
    let mut served: Vec<String> = Vec::new();
    for (service, method) in crate::metrics::RPCS {
        match served.last_mut() {
            Some(last) if last.starts_with(&format!("{service}/")) => {
                last.pop();
                last.push_str(&format!(", {method}}}"));
            }
            _ => served.push(format!("{service}/{{{method}}}")),
        }
    }
    format!(
        "no method {}; this server serves {}",
        crate::core::text::echo(path),
        served.join(", ")
    )
}

/// A request message over the size limit answers RESOURCE_EXHAUSTED, as gRPC's
/// status codes document ("a message larger than the receiver accepts"), so clients
/// that treat OUT_OF_RANGE as a bad field value know to send less. tonic refuses it
/// before any handler runs, with OUT_OF_RANGE in a trailers-only response; only that
/// status is rewritten.
fn oversized_is_resource_exhausted(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        let replaced = Status::resource_exhausted(status.message().to_owned());
        if replaced.add_header(response.headers_mut()).is_err() {
            tracing::warn!("could not rewrite an oversized request's status");
        }
    }
    response
}

/// One call in flight: counted while it lives, holding its connection's slot; a call
/// dropped before it answered (timeout, or the client went away) ends as CANCELLED,
/// which is what tonic answers on a timeout.
struct InFlight {
    rpc: Rpc,
    started: Instant,
    done: bool,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::rpc_in_flight(false);
        if !self.done {
            finish(self.rpc, Code::Cancelled, self.started);
        }
    }
}

/// What each connection hands to each of its calls (through tonic's connect info):
/// its slots, and how to put back the connect info tonic's own accessors read
/// (`remote_addr`, `peer_certs`).
#[derive(Clone)]
pub(super) struct ConnInfo {
    slots: Arc<Semaphore>,
    /// Set by the connection's first call.
    used: Arc<AtomicBool>,
    restore: Arc<dyn Fn(&mut http::Extensions) + Send + Sync>,
}

/// What every gRPC connection is held to.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnLimits {
    /// Calls in flight at once (`server.concurrency_limit_per_connection`).
    pub(super) calls: usize,
    /// Time to start the protocol (`server.connection_timeout`).
    pub(super) open_within: Duration,
    /// `server.max_connection_age`: about when a connection is sent away (each draws
    /// its own, [`spread_age`]). Unset: never.
    pub(super) age: Option<Duration>,
    /// Past its age, how long a connection has before it is closed whatever it is
    /// doing: HTTP/2's graceful close waits for ever on a client that does not
    /// acknowledge the GOAWAY's PING.
    pub(super) drain: Duration,
    /// Whether the listener terminates TLS, so that a connection may carry a client
    /// certificate: each such connection then keeps the caller it names
    /// ([`ConnectionCaller`]).
    pub(super) client_certs: bool,
}

impl ConnLimits {
    /// The limits `server` sets. An aged connection is closed once its calls have had
    /// `request_timeout` to finish, and its client [`RETIRE_SLACK`] to answer.
    pub(super) fn new(server: &crate::config::raw::ServerConfig) -> Self {
        Self {
            calls: server.concurrency_limit_per_connection,
            open_within: server.connection_timeout,
            age: server.max_connection_age,
            drain: server.request_timeout + RETIRE_SLACK,
            client_certs: false,
        }
    }
}

/// Past an aged connection's last call, how long its client has to leave.
const RETIRE_SLACK: Duration = Duration::from_secs(1);

/// How far a connection's age strays from `server.max_connection_age`, either way.
const AGE_SPREAD: f64 = 0.1;

/// `age` moved by `AGE_SPREAD` of itself at most, by `unit` (in `[0, 1]`: 0 the
/// shortest, 1 the longest). Connections that opened together (a rollout, a client
/// fleet started at once) would otherwise all be sent away together, and all their
/// clients reconnect at once, at every age; gRPC's own servers spread theirs the same
/// way.
fn spread_age(age: Duration, unit: f64) -> Duration {
    let unit = if unit.is_nan() {
        0.5
    } else {
        unit.clamp(0.0, 1.0)
    };
    age.mul_f64(1.0 - AGE_SPREAD + 2.0 * AGE_SPREAD * unit)
}

/// An accepted connection with its own call limit, closed if it does not start its
/// protocol in time, or when it is due to retire.
pub(super) struct Conn<IO> {
    io: IO,
    slots: Arc<Semaphore>,
    /// Until the connection has sent [`OPENING_BYTES`]: how many are still awaited, and
    /// by when. hyper waits for an HTTP/2 client preface for ever; without this, a
    /// client that sends half of one (or nothing) holds its connection for good.
    opening: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
    /// Set by the connection's first call; until then it is sent away at
    /// `first_call_by`.
    used: Arc<AtomicBool>,
    first_call_by: tokio::time::Instant,
    /// When an unused connection is closed whatever it is doing: [`ConnLimits::drain`]
    /// after `first_call_by`. Dropped once the connection is used.
    retire_unused: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the connection is sent away (HTTP/2 GOAWAY), if ever.
    send_away_at: Option<tokio::time::Instant>,
    /// When the connection is closed, if ever: [`ConnLimits::drain`] after it was sent
    /// away.
    retire: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Dropped with the connection, which tells [`Conn::closed`]'s receiver.
    closing: Option<tokio::sync::oneshot::Sender<()>>,
    /// [`ConnLimits::client_certs`].
    client_certs: bool,
}

/// HTTP/2's client preface (24 bytes) and the header of its first frame (9); an
/// HTTP/1.1 (gRPC-Web) request line is as long.
const OPENING_BYTES: usize = 24 + 9;

impl<IO> Conn<IO> {
    /// `io`, held to `limits` from now.
    pub(super) fn new(io: IO, limits: ConnLimits) -> Self {
        let now = tokio::time::Instant::now();
        let send_away_at = limits
            .age
            .map(|age| now + spread_age(age, rand::random::<f64>()));
        Self {
            io,
            slots: Arc::new(Semaphore::new(limits.calls)),
            opening: Some((
                OPENING_BYTES,
                Box::pin(tokio::time::sleep(limits.open_within)),
            )),
            used: Arc::new(AtomicBool::new(false)),
            first_call_by: now + limits.open_within,
            retire_unused: Some(Box::pin(tokio::time::sleep_until(
                now + limits.open_within + limits.drain,
            ))),
            send_away_at,
            retire: send_away_at.map(|at| Box::pin(tokio::time::sleep_until(at + limits.drain))),
            closing: None,
            client_certs: limits.client_certs,
        }
    }

    /// Completes once this connection is dropped (closed), whoever drops it. For one
    /// watcher: calling it again ends the wait of the one before.
    pub(super) fn closed(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.closing = Some(tx);
        async move {
            let _ = rx.await;
        }
    }

    /// When this connection is due to be sent away, if ever.
    pub(super) fn send_away_at(&self) -> Option<tokio::time::Instant> {
        self.send_away_at
    }

    /// Completes if this connection has begun no call by `server.connection_timeout`
    /// after it opened: it is then sent away like an aged one (GOAWAY, then closed if
    /// its client does not leave). A connection that starts HTTP/2 and then only holds
    /// its slot of `server.max_connections` (or never answers a PING) would otherwise
    /// keep it for as long as it likes; a client's channel connects for a call.
    pub(super) fn unused(&self) -> impl Future<Output = ()> + Send + 'static {
        let (at, used) = (self.first_call_by, self.used.clone());
        async move {
            tokio::time::sleep_until(at).await;
            if used.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The connections of `incoming`, each held to `limits`.
pub(super) fn limited<IO>(
    incoming: impl tokio_stream::Stream<Item = io::Result<IO>>,
    limits: ConnLimits,
) -> impl tokio_stream::Stream<Item = io::Result<Conn<IO>>> {
    tokio_stream::StreamExt::map(incoming, move |accepted| {
        accepted.map(|io| Conn::new(io, limits))
    })
}

impl<IO> Connected for Conn<IO>
where
    IO: Connected,
{
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let inner = self.io.connect_info();
        // One per connection, never shared: it holds the caller of this connection's
        // certificate.
        let caller = self.client_certs.then(ConnectionCaller::default);
        ConnInfo {
            slots: self.slots.clone(),
            used: self.used.clone(),
            restore: Arc::new(move |extensions| {
                extensions.insert(inner.clone());
                if let Some(caller) = &caller {
                    extensions.insert(caller.clone());
                }
            }),
        }
    }
}

impl<IO: PeerAddr> PeerAddr for Conn<IO> {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.io.peer()
    }

    fn first_bytes(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.io.first_bytes()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // HTTP/2 always has a read pending, so this wakes the connection when it is due.
        if let Some(retire) = &mut this.retire
            && retire.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection outlived server.max_connection_age and the time its calls \
                 had to finish",
            )));
        }
        if let Some(retire) = &mut this.retire_unused {
            if this.used.load(Ordering::Relaxed) {
                this.retire_unused = None;
            } else if retire.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection began no call within server.connection_timeout, and \
                     did not leave when sent away",
                )));
            }
        }
        let Some((awaited, deadline)) = &mut this.opening else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        // Polled first, so that the deadline wakes this connection when it passes.
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection did not start HTTP/2 (or HTTP/1.1) within server.connection_timeout",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if read.is_ready() {
            *awaited = awaited.saturating_sub(buf.filled().len() - before);
            if *awaited == 0 {
                this.opening = None;
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    /// Always `false`, so that HTTP/2 copies every frame payload under 1 KiB (a whole
    /// grant response) into its write buffer, and the responses of many calls leave
    /// in one `send(2)`. When the socket says it writes vectors, h2 keeps each payload
    /// of 256 bytes or more apart and must flush its buffer before it takes the next
    /// frame: one or two writes per grant. Measured with h2load driving 64 calls in
    /// flight as `scripts/bench.sh` does, and `perf stat` on the server: GrantRead went
    /// from 1.38 `writev(2)` per call to 0.6, and from 0.62x to 0.72x the health
    /// check's calls/s; the health check's small payloads were copied either way.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// === authenticate ===

/// Layer 4: finds the caller of each grant call, or refuses the call.
#[derive(Clone)]
pub(super) struct Authenticate(Authenticator);

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        // The identity module logs which check failed; the caller gets the message.
        let caller: Caller = self.0.authenticate(&request).map_err(|e| {
            crate::metrics::unauthenticated();
            tracing::Span::current().record("decision", "unauthenticated");
            Status::from(service::Error::from(e))
        })?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// [`ACCEPTED_ENCODINGS`] as `grpc-encoding` names them, compared without building a
/// string per compressed call.
const ACCEPTED_ENCODING_NAMES: [&str; 2] = ["gzip", "deflate"];

/// Request encodings every service decompresses, besides none: what clients send when
/// their channel compresses (grpc-java and grpc-go offer gzip, C-core deflate too).
/// Without them such a client gets UNIMPLEMENTED on every call. A compressed message is
/// held to the same 4 MiB decoded limit as any other (RESOURCE_EXHAUSTED past it).
/// Responses stay uncompressed: they are a few hundred bytes.
pub(super) const ACCEPTED_ENCODINGS: [CompressionEncoding; 2] =
    [CompressionEncoding::Gzip, CompressionEncoding::Deflate];

/// Largest decoded message of the services anyone may call without identity (health,
/// reflection): theirs are a service or symbol name. A compressed message of a few KiB
/// can decode to the 4 MiB every other call may send, which would let an anonymous
/// caller spend milliseconds of CPU for each few KiB it sends.
pub(super) const OPEN_MESSAGE_LIMIT: usize = 64 << 10;

/// `$server`, any generated gRPC server (they share `accept_compressed` but no
/// trait), decompressing every one of [`ACCEPTED_ENCODINGS`].
macro_rules! decompressing {
    ($server:expr) => {
        $crate::server::layers::ACCEPTED_ENCODINGS
            .into_iter()
            .fold($server, |server, encoding| {
                server.accept_compressed(encoding)
            })
    };
}
pub(super) use decompressing;

/// `$server`, a generated gRPC server anyone may call without identity (health,
/// reflection): [`decompressing!`], and held to [`OPEN_MESSAGE_LIMIT`].
macro_rules! open_to_anyone {
    ($server:expr) => {
        $crate::server::layers::decompressing!($server)
            .max_decoding_message_size($crate::server::layers::OPEN_MESSAGE_LIMIT)
    };
}
pub(super) use open_to_anyone;

/// The grant service behind layer 4.
pub(super) fn authenticated(
    grants: GrantService,
    authenticator: Authenticator,
) -> InterceptedService<GrantServiceServer<GrantService>, Authenticate> {
    InterceptedService::new(
        decompressing!(GrantServiceServer::new(grants)),
        Authenticate(authenticator),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grpc_with_protobuf_messages_is_served() {
        let refusal = |content_type: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(v) = content_type {
                headers.insert(header::CONTENT_TYPE, v.parse().unwrap());
            }
            unsupported_content_type(&headers).map(|u| (u.code, u.http_status.as_u16()))
        };
        for served in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC",
            "application/grpc; charset=utf-8",
            "application/grpc+PROTO;x=1",
        ] {
            assert_eq!(refusal(Some(served)), None, "{served}");
        }
        for not_grpc in [
            None,
            Some(""),
            Some("application/json"),
            Some("text/html"),
            Some("application/grpcx"),
            Some("application/grpc-web"),
        ] {
            assert_eq!(
                refusal(not_grpc),
                Some((Code::InvalidArgument, 415)),
                "{not_grpc:?}"
            );
        }
        assert_eq!(
            refusal(Some("application/grpc+json")),
            Some((Code::Unimplemented, 200))
        );
        // What was sent is quoted escaped, never as raw control characters.
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_bytes(b"text/\tx").unwrap(),
        );
        // So is an unknown grpc-encoding (tonic's own message would quote it raw).
        let mut encoded = http::HeaderMap::new();
        encoded.insert(
            "grpc-encoding",
            http::HeaderValue::from_bytes("x\u{202e}y".as_bytes()).unwrap(),
        );
        let refused = unsupported_encoding(&encoded).unwrap();
        assert_eq!(refused.code, Code::Unimplemented);
        assert!(
            refused.message.contains("x\\u{202e}y"),
            "{}",
            refused.message
        );
        let names: Vec<String> = ACCEPTED_ENCODINGS.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            names, ACCEPTED_ENCODING_NAMES,
            "the names follow the encodings"
        );
        for known in ["gzip", "deflate", "identity"] {
            encoded.insert("grpc-encoding", http::HeaderValue::from_static(known));
            assert!(unsupported_encoding(&encoded).is_none(), "{known}");
        }
        // A deadline gRPC cannot read, or one already past.
        let mut timed = http::HeaderMap::new();
        for (sent, code) in [
            ("0n", Some(Code::DeadlineExceeded)),
            ("0S", Some(Code::DeadlineExceeded)),
            ("abc", Some(Code::InvalidArgument)),
            ("123456789S", Some(Code::InvalidArgument)),
            ("5", Some(Code::InvalidArgument)),
            ("S", Some(Code::InvalidArgument)),
            ("5s", Some(Code::InvalidArgument)),
            ("5S", None),
            ("99999999n", None),
            ("1H", None),
        ] {
            timed.insert("grpc-timeout", http::HeaderValue::from_static(sent));
            assert_eq!(unusable_deadline(&timed).map(|u| u.code), code, "{sent}");
        }
        let message = unsupported_content_type(&headers).unwrap().message;
        assert!(
            !message.contains('\t') && message.contains("text/\\tx"),
            "{message}"
        );
    }

    #[test]
    fn a_connections_age_is_within_a_tenth_of_the_setting_either_way() {
        let age = Duration::from_secs(600);
        assert_eq!(spread_age(age, 0.0), Duration::from_secs(540));
        assert_eq!(spread_age(age, 0.5), age);
        assert_eq!(spread_age(age, 1.0), Duration::from_secs(660));
        // Out of range draws are held to the range.
        assert_eq!(spread_age(age, -3.0), Duration::from_secs(540));
        assert_eq!(spread_age(age, 7.0), Duration::from_secs(660));
        assert_eq!(spread_age(age, f64::NAN), age);
    }

    #[tokio::test]
    async fn a_connection_that_begins_no_call_in_time_is_unused_and_one_that_does_is_not() {
        let limits = ConnLimits {
            calls: 1,
            open_within: Duration::from_millis(50),
            age: None,
            drain: Duration::from_secs(7),
            client_certs: false,
        };
        let idle = Conn::new((), limits);
        tokio::time::timeout(Duration::from_secs(2), idle.unused())
            .await
            .expect("unused past connection_timeout");
        let called = Conn::new((), limits);
        called.used.store(true, Ordering::Relaxed);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), called.unused())
                .await
                .is_err(),
            "a connection that called stays"
        );
    }

    #[tokio::test]
    async fn each_connection_draws_its_own_age_and_is_closed_its_drain_after_it() {
        let limits = ConnLimits {
            calls: 1,
            open_within: Duration::from_secs(1),
            age: Some(Duration::from_secs(100)),
            drain: Duration::from_secs(7),
            client_certs: false,
        };
        let before = tokio::time::Instant::now();
        let ages: Vec<Duration> = (0..50)
            .map(|_| Conn::new((), limits).send_away_at().unwrap() - before)
            .collect();
        assert!(
            ages.iter()
                .all(|a| *a >= Duration::from_secs(90) && *a <= Duration::from_secs(111)),
            "{ages:?}"
        );
        let (low, high) = (ages.iter().min().unwrap(), ages.iter().max().unwrap());
        assert!(*high - *low >= Duration::from_secs(5), "{ages:?}");
        // The close follows the send-away by the drain.
        let conn = Conn::new((), limits);
        let retire = conn.retire.as_ref().unwrap().deadline();
        assert_eq!(
            retire - conn.send_away_at().unwrap(),
            Duration::from_secs(7)
        );
        // Without an age, never.
        let never = Conn::new(
            (),
            ConnLimits {
                age: None,
                ..limits
            },
        );
        assert!(never.send_away_at().is_none() && never.retire.is_none());
    }

    #[tokio::test]
    async fn a_tls_listeners_connections_each_keep_their_own_caller() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = |client_certs| ConnLimits {
            calls: 1,
            open_within: Duration::from_secs(1),
            age: None,
            drain: Duration::from_secs(1),
            client_certs,
        };
        // Each connection's calls (two here) get the connection's own memory.
        let mut callers = Vec::new();
        for client_certs in [true, true, false] {
            let _client = tokio::net::TcpStream::connect(address).await.unwrap();
            let (io, _) = listener.accept().await.unwrap();
            let info = Conn::new(io, limits(client_certs)).connect_info();
            let mut calls = [http::Extensions::new(), http::Extensions::new()];
            for call in &mut calls {
                (info.restore)(call);
            }
            let [a, b] = calls.map(|call| call.get::<ConnectionCaller>().cloned());
            assert_eq!(a.is_some(), client_certs);
            if let (Some(a), Some(b)) = (a, b) {
                assert!(a.same_connection(&b));
                callers.push(a);
            }
        }
        assert!(!callers[0].same_connection(&callers[1]));
    }

    #[test]
    fn every_served_method_is_known_here() {
        use prost::Message as _;
        let mut methods = 0;
        for encoded in super::super::SERVED_DESCRIPTORS {
            let set = prost_types::FileDescriptorSet::decode(encoded).unwrap();
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        let path =
                            format!("/{}.{}/{}", file.package(), service.name(), method.name());
                        assert!(
                            Rpc::of_path(&path).is_known(),
                            "{path} would be UNIMPLEMENTED"
                        );
                        methods += 1;
                    }
                }
            }
        }
        assert_eq!(methods, crate::metrics::RPCS.len());
    }

    #[test]
    fn response_code_reads_trailers_only_errors() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(response_code(&headers), Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(response_code(&headers), Code::PermissionDenied);
    }
}
