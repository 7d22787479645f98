//! The HTTP front door, for browsers and AWS SDKs, on its own listener
//! (`[http] listen`, off unless configured). Every route identifies its caller with
//! the same authenticator as gRPC and calls the one grant pipeline; this module only
//! reads its wire format and writes its answers.
//!
//! Routes:
//! - `GET|HEAD /v1/objects/{bucket}/{key…}`: the click-time download link (`objects`);
//! - `POST /v1/uploads`: upload signing as JSON (`uploads`);
//! - `GET /v1/credentials/{bucket}/{prefix…}`: AWS container credentials
//!   (`credentials`);
//! - `/s3/params`, `/s3/multipart…`: the routes of `@uppy/aws-s3` (`uppy`);
//! - `GET /healthz`: the listener is up (no identity, no grant).
//!
//! Errors are RFC 9457 problem details (`problem`), the only place an error becomes an
//! HTTP status here. CORS admits exactly the configured origins, with credentials.

mod caller;
mod credentials;
mod disposition;
mod idle;
mod objects;
mod problem;
mod uploads;
mod uppy;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, Method, header};
use serde::Deserialize;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::grant::{Pipeline, Violations};

use crate::identity::Authenticator;
pub use credentials::{
    ContainerCredentials, MIN_LEFT as CREDENTIALS_MIN_LEFT, expiration as credentials_expiration,
};
pub use problem::Problem;

/// `[http]`, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address of the HTTP listener.
    pub listen: std::net::SocketAddr,
    /// Origins (`scheme://host[:port]`) whose pages may call the gateway with the
    /// session cookie; matched exactly.
    pub allowed_origins: Vec<String>,
    /// Name of the cookie that carries the caller's JWT.
    pub session_cookie: String,
    /// Where a browser without identity is sent, with `return_to`; unset: 401.
    pub login_url: Option<String>,
    /// Lifetime asked for a click-time link's target (cut by the rule).
    pub link_ttl: Duration,
    /// How long a client may take to send a request's headers, counted from when
    /// the connection is ready for its next request (so it also bounds a kept-alive
    /// connection left idle). Without it, clients that trickle headers a byte at a
    /// time hold connections open for good.
    pub header_read_timeout: Duration,
    /// Lifetime asked for an upload started through the Uppy multipart routes (cut
    /// by the rule's and the grants' `max_ttl`): a large file over a slow link takes
    /// longer than a grant's default.
    pub multipart_ttl: Duration,
    /// Longest a request may take, its body included (`server.request_timeout`): a
    /// client that trickles a body would otherwise hold its stream, and its share of
    /// the connection, for good.
    pub request_timeout: Duration,
    /// The bucket browser uploads through the Uppy routes go to; unset: those routes
    /// answer 501.
    pub upload_bucket: Option<crate::scope::BucketName>,
}

/// What every route needs; shared behind one `Arc`, because axum hands every request
/// its own clone of the state, and a clone of the parts was eight reference counts
/// that both cores update.
pub(crate) struct App {
    pipeline: Pipeline,
    authenticator: Authenticator,
    settings: Settings,
}

/// Largest request body read, in bytes: the largest is a multipart complete listing
/// 10,000 parts (about 600 KiB).
pub(crate) const BODY_LIMIT: usize = 2 * 1024 * 1024;

// The routes, as templates: also the `route` label of the gateway's metric and span
// (`server` observes each request).
const OBJECT: &str = "/v1/objects/{bucket}/{*key}";
const BUCKET: &str = "/v1/objects/{bucket}";
const BUCKET_SLASH: &str = "/v1/objects/{bucket}/";
const UPLOADS: &str = "/v1/uploads";
const CREDENTIALS: &str = "/v1/credentials/{bucket}/{*prefix}";
const CREDENTIALS_BUCKET: &str = "/v1/credentials/{bucket}";
const CREDENTIALS_BUCKET_SLASH: &str = "/v1/credentials/{bucket}/";
const UPPY_PARAMS: &str = "/s3/params";
const UPPY_MULTIPART: &str = "/s3/multipart";
const UPPY_UPLOAD: &str = "/s3/multipart/{upload}";
const UPPY_COMPLETE: &str = "/s3/multipart/{upload}/complete";
const UPPY_PART: &str = "/s3/multipart/{upload}/{part}";
pub(crate) const HEALTHZ: &str = "/healthz";
/// Every route, for the labels.
pub(crate) const ROUTES: [&str; 11] = [
    OBJECT,
    BUCKET,
    BUCKET_SLASH,
    UPLOADS,
    CREDENTIALS,
    UPPY_PARAMS,
    UPPY_MULTIPART,
    UPPY_UPLOAD,
    UPPY_COMPLETE,
    UPPY_PART,
    HEALTHZ,
];

/// The gateway's routes and layers.
pub fn router(pipeline: Pipeline, authenticator: Authenticator, settings: Settings) -> Router {
    let cors = cors(&settings);
    let app = Arc::new(App {
        pipeline,
        authenticator,
        settings,
    });
    Router::new()
        .route(OBJECT, get(objects::link))
        .route(BUCKET, get(objects::no_key))
        .route(BUCKET_SLASH, get(objects::no_key))
        .route(UPLOADS, post_json(uploads::sign))
        .route(CREDENTIALS, get_issuing(credentials::credentials))
        .route(CREDENTIALS_BUCKET, get(credentials::no_prefix))
        .route(CREDENTIALS_BUCKET_SLASH, get(credentials::no_prefix))
        .route(UPPY_PARAMS, get_issuing(uppy::params))
        .route(UPPY_MULTIPART, post_json(uppy::create))
        .route(UPPY_UPLOAD, get(uppy::list).delete(uppy::abort))
        .route(UPPY_COMPLETE, post_json(uppy::complete))
        .route(UPPY_PART, get_issuing(uppy::sign_part))
        .route(HEALTHZ, get(|| async { "ok\n" }))
        // After every route: it applies to the routes registered before it.
        .method_not_allowed_fallback(|method: Method| async move {
            problem::Problem::method_not_allowed(&method)
        })
        .fallback(|| async { problem::Problem::not_found() })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            app.settings.request_timeout,
            within_request_timeout,
        ))
        .with_state(app)
        .layer(cors)
}

/// A request's whole handling, its body's arrival included, within
/// `server.request_timeout`. Past it, whose pace it was decides the answer: a body
/// still arriving is 408 (the client's), a request received whole whose answer is not
/// ready is 504 with `Retry-After` (calls to STS and the store answer 503 before
/// this, in the pipeline; this is the net under the rest). While the
/// audit log holds grants back, a request (but `/healthz`) waits for it first, for
/// most of that time, then is answered 503 with `Retry-After`: another replica may
/// serve it.
async fn within_request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body::Body as _;
    if request.uri().path() != HEALTHZ
        && !crate::grant::audit::BACKLOG
            .room_within(crate::grant::audit::hold_at_most(limit))
            .await
    {
        return problem::Problem::audit_behind().into_response();
    }
    // A request without a body (the GETs) is whole already: only a body is watched,
    // and only its handler needs the deadline's instant (the time its arrival took
    // comes off what the handler's calls to STS and the store may wait; without a
    // body, `Deadline::left_of` takes the whole `request_timeout`, and nothing is
    // allocated for the click-time link).
    let received = if request.body().is_end_stream() {
        None
    } else {
        let received = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watched = WatchedBody {
            inner: Box::pin(std::mem::take(request.body_mut())),
            received: received.clone(),
        };
        *request.body_mut() = axum::body::Body::new(watched);
        request
            .extensions_mut()
            .insert(Deadline(tokio::time::Instant::now() + limit));
        Some(received)
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) if received.is_some_and(|r| !r.load(std::sync::atomic::Ordering::Relaxed)) => {
            problem::Problem::request_timeout(limit).into_response()
        }
        Err(_) => problem::Problem::answer_timeout(limit).into_response(),
    }
}

/// When the request's answer is due (`server.request_timeout` from its start), for
/// the handlers that wait on STS or the store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(tokio::time::Instant);

impl Deadline {
    /// The time left of a request's `request_timeout`: from its deadline when it had a
    /// body, else all of it (a request without one reached its handler at once).
    pub(crate) fn left_of(deadline: Option<axum::Extension<Deadline>>, app: &App) -> Duration {
        deadline.map_or(app.settings.request_timeout, |axum::Extension(d)| {
            d.0.saturating_duration_since(tokio::time::Instant::now())
        })
    }
}

/// A request body that notes when it has been read to its end.
struct WatchedBody {
    inner: std::pin::Pin<Box<axum::body::Body>>,
    received: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            self.received
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Up to how many bytes of a body past [`BODY_LIMIT`] are read and thrown away before
/// the 413 goes out.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
/// How long at most that reading may take.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// POST of a JSON body, behind [`limit_body`]: only the routes that read a body pay
/// for the check, not the click-time link or the other GETs.
fn post_json<H, T>(handler: H) -> axum::routing::MethodRouter<Arc<App>>
where
    H: axum::handler::Handler<T, Arc<App>>,
    T: 'static,
{
    post(handler).layer(axum::middleware::from_fn(limit_body))
}

/// The one place a body's size is checked: a body past [`BODY_LIMIT`], whether its
/// `Content-Length` says so or its chunks add up to it, gets the 413 problem before
/// any route reads it, once what the client sends has been read (up to
/// [`DRAIN_LIMIT`], for at most [`DRAIN_TIME`]). A connection closed with the client's
/// bytes still unread is reset by the kernel, and a client still sending then often
/// sees the reset instead of the answer; reading them first lets it read the 413.
/// Bodies past the drain limit are not read to the end: the connection closes after
/// the answer.
///
/// A body without a length (chunked) is read here, up to the limit, and handed on
/// whole; a declared one within the limit is left to the route's extractor.
async fn limit_body(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > BODY_LIMIT as u64 => {
            if length <= DRAIN_LIMIT as u64 {
                let _ = tokio::time::timeout(DRAIN_TIME, discard(request.into_body(), 0)).await;
            }
            problem::Problem::too_large(&format!("the body is {length} bytes")).into_response()
        }
        Some(_) => next.run(request).await,
        None => {
            let (parts, body) = request.into_parts();
            match read_within_limit(body).await {
                Ok(whole) => {
                    let request = axum::extract::Request::from_parts(parts, whole.into());
                    next.run(request).await
                }
                Err(BodyError::TooLarge(rest, read)) => {
                    let _ = tokio::time::timeout(DRAIN_TIME, discard(rest, read)).await;
                    problem::Problem::too_large(&format!(
                        "the body, sent without a Content-Length, passed {BODY_LIMIT} bytes"
                    ))
                    .into_response()
                }
                Err(BodyError::Unreadable(e)) => {
                    problem::Problem::bad_request(format!("the body could not be read: {e}"))
                        .into_response()
                }
            }
        }
    }
}

/// Why a body without a declared length was not handed on.
enum BodyError {
    /// Past [`BODY_LIMIT`]: the rest of the body, and how many bytes were read.
    TooLarge(axum::body::Body, usize),
    /// The connection failed while it was read.
    Unreadable(axum::Error),
}

/// The whole of `body`, if it ends within [`BODY_LIMIT`].
async fn read_within_limit(mut body: axum::body::Body) -> Result<bytes::Bytes, BodyError> {
    use http_body_util::BodyExt as _;
    let mut whole = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Unreadable)?;
        if let Some(data) = frame.data_ref() {
            if whole.len() + data.len() > BODY_LIMIT {
                let read = whole.len() + data.len();
                return Err(BodyError::TooLarge(body, read));
            }
            whole.extend_from_slice(data);
        }
    }
    Ok(whole.freeze())
}

/// Reads `body` to its end, until [`DRAIN_LIMIT`] bytes in all (`read` of them
/// already), keeping none of it.
async fn discard(mut body: axum::body::Body, mut read: usize) {
    use http_body_util::BodyExt as _;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |data| data.len());
        if read > DRAIN_LIMIT {
            return;
        }
    }
}

/// The largest header section taken, in bytes (HTTP/1.1: 431 past it; HTTP/2: the
/// stream is refused, with a 431 where the header block could still be read).
const HEADER_LIMIT: usize = 64 * 1024;

/// Serves `router` on `listener`, HTTP/1.1 and HTTP/2 (by ALPN over TLS, by prior
/// knowledge without), closing an HTTP/1.1 connection that takes longer than
/// `header_read_timeout` to send a request's headers, until `shutdown` completes;
/// then lets in-flight requests finish and closes idle connections.
///
/// hyper's connection builder directly rather than `axum::serve`, which gives hyper
/// no timer, and so no header timeout.
/// A failed accept is the listener's to retry (axum's `Listener` yields only accepted
/// connections), so serving ends only at `shutdown`.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // hyper's default lets HTTP/1.1 headers grow to about 400 KiB; the gRPC port's
        // transport limit holds here too.
        .max_buf_size(HEADER_LIMIT);
    http.http2().max_header_list_size(HEADER_LIMIT as u32);
    // HTTP/2 has no header timeout; `idle` closes a connection with no request in flight
    // (one whose client answers no PING included), the request deadline bounds the rest.
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let activity = idle::Activity::new();
        let service = TowerToHyperService::new(idle::Tracked {
            inner: router
                .clone()
                .map_request(|request: http::Request<hyper::body::Incoming>| {
                    request.map(axum::body::Body::new)
                }),
            activity: activity.clone(),
        });
        let io = idle::Idle::new(io, activity, header_read_timeout);
        let connection = http
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection's error (a reset, a header timeout) ends that connection only.
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// GET only, HEAD refused like any other method (405, `Allow: GET`): on these routes
/// a GET issues something (credentials, a signature), so a HEAD would issue it and
/// throw it away, spending the caller's budget, an STS call and an audit event for
/// nothing. (The click-time link answers HEAD with a URL signed for HEAD instead.)
/// Every refusal names GET alone, where axum's own would list the HEAD it adds to a
/// GET route.
pub(crate) fn get_issuing<H, T, S>(handler: H) -> axum::routing::MethodRouter<S>
where
    H: axum::handler::Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    let refuse = |method: Method| async move {
        (
            [(header::ALLOW, HeaderValue::from_static("GET"))],
            problem::Problem::method_not_allowed(&method),
        )
    };
    get(handler).head(refuse).fallback(refuse)
}

/// Exact origins, with credentials (so never `*`); preflight admits only the methods
/// and headers the routes use, and is cached for ten minutes.
fn cors(settings: &Settings) -> CorsLayer {
    exact_origins(&settings.allowed_origins)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// CORS for exactly `origins` (validated when the settings loaded), with credentials,
/// so never `*`: the base of every browser-facing CORS policy of the service.
pub fn exact_origins(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
}

/// A JSON object of strings with each name once: serde's maps take the last of two
/// members with one name, so `{"owner": "a", "owner": "b"}` would be signed as `b`
/// while a reader of the body could take `a`. For `#[serde(deserialize_with = "...")]`.
pub(crate) fn json_unique_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = std::collections::BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some((name, value)) = map.next_entry::<String, String>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "'{}' is named twice; send each name once",
                        crate::core::text::echo(&name)
                    )));
                }
                out.insert(name, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

/// A uint64 in JSON: a number, or a string of digits as protobuf's JSON mapping
/// writes 64-bit integers (`"1048576"`), so a body written for GrantWrite's JSON
/// works here too. For `#[serde(deserialize_with = "...")]`.
pub(crate) fn json_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a whole number of bytes, e.g. 1048576 or \"1048576\"")
    })? {
        Raw::Number(n) => Ok(n),
        Raw::Text(text) => text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "'{}' is not a whole number of bytes; write e.g. 1048576 or \"1048576\"",
                crate::core::text::echo(&text)
            ))
        }),
    }
}

/// [`json_u64`], for an optional field.
pub(crate) fn json_u64_optional<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    json_u64(d).map(Some)
}

/// A JSON body that must be an object. serde's derived structs also read an array,
/// their fields by position (and an empty one as every default), which is no form the
/// gateway documents: such a body is refused, not read as a request.
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) T);

/// What a body that is not an object is told it should be.
const OBJECT_EXPECTED: &str = "a JSON object with the route's fields";

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(OBJECT_EXPECTED)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
            .map(Object)
    }
}

/// A TTL in JSON: protobuf JSON's `"300s"`, or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum JsonTtl {
    /// `300`
    Secs(u64),
    /// `"300s"`, `"1.5s"`
    Text(String),
}

/// Reads a requested lifetime into `v`: `Some(None)` when unset, `None` when bad.
pub(crate) fn ttl(v: &mut Violations, ttl: Option<&JsonTtl>) -> Option<Option<Duration>> {
    let parsed = match ttl {
        None => Ok(None),
        Some(JsonTtl::Secs(0)) => Err("must be at least 1 second; omit it to get the default"),
        Some(JsonTtl::Secs(n)) => Ok(Some(Duration::from_secs(*n))),
        Some(JsonTtl::Text(text)) => text
            .strip_suffix('s')
            .and_then(|n| n.parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 1.0 && *n <= u32::MAX as f64)
            .map(|n| Some(Duration::from_secs_f64(n)))
            .ok_or("must be a duration such as \"300s\", of at least 1 second"),
    };
    v.check("ttl", parsed)
}

/// A JSON answer that carries a credential: no cache may keep it.
pub fn no_store(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Percent-encodes everything but RFC 3986's unreserved characters: the signer's own
/// query encoding, which is exactly that.
pub(crate) fn percent_encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    crate::sign::encode_query(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_ttls_read_like_protobuf_json() {
        let mut v = Violations::default();
        assert_eq!(ttl(&mut v, None), Some(None));
        assert_eq!(
            ttl(&mut v, Some(&JsonTtl::Text("90s".into()))),
            Some(Some(Duration::from_secs(90)))
        );
        assert_eq!(
            ttl(&mut v, Some(&JsonTtl::Secs(30))),
            Some(Some(Duration::from_secs(30)))
        );
        assert_eq!(ttl(&mut v, Some(&JsonTtl::Text("90".into()))), None);
        assert_eq!(ttl(&mut v, Some(&JsonTtl::Text("0.5s".into()))), None);
        assert_eq!(ttl(&mut v, Some(&JsonTtl::Secs(0))), None);
    }

    #[tokio::test]
    async fn a_request_out_of_time_is_408_while_its_body_arrives_and_504_once_whole() {
        use tower::ServiceExt;
        let app: Router = Router::new()
            .route(
                "/slow",
                post(|body: String| async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    body
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(200),
                within_request_timeout,
            ));
        let post_to =
            |body: axum::body::Body| http::Request::post("/slow").body(body).expect("a request");
        let whole = app
            .clone()
            .oneshot(post_to(axum::body::Body::from("x")))
            .await
            .expect("an answer");
        assert_eq!(whole.status(), http::StatusCode::GATEWAY_TIMEOUT);
        assert!(whole.headers().contains_key(header::RETRY_AFTER));
        let never_ends = tokio_stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let arriving = app
            .oneshot(post_to(axum::body::Body::from_stream(never_ends)))
            .await
            .expect("an answer");
        assert_eq!(arriving.status(), http::StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn components_are_encoded_with_only_unreserved_left() {
        assert_eq!(
            percent_encode_component("/a b?c=é"),
            "%2Fa%20b%3Fc%3D%C3%A9"
        );
        assert_eq!(percent_encode_component("A-z_0.~"), "A-z_0.~");
    }
}
