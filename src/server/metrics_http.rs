//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1, served by hyper on its own
//! port, apart from the gRPC port; and `GET /readyz` (200 while the grant service is
//! ready, 503 otherwise) and `GET /livez`, in plaintext whatever the gRPC port speaks,
//! for probes that cannot speak TLS or gRPC (the kubelet's HTTP probes). Every connection it accepts is its own task in a
//! `JoinSet`, stopped with the endpoint. It serves until its task is stopped, which the
//! server does after the drain, so the drain itself can be scraped.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::core::throttle::Throttle;

/// A scraper that sends nothing is dropped after this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the task is stopped; its connections stop with it. A failed accept
/// (EMFILE) is retried at the sockets' pace and warned about once a minute; the
/// connection cap leaves descriptors for this port (`socket::Accepted`).
pub(super) async fn serve(listener: TcpListener) {
    let mut connections = JoinSet::new();
    let mut failed = Throttle::once_per(Duration::from_secs(60));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_one(stream));
                }
                Err(e) if super::socket::one_connection(&e) => {}
                Err(e) => {
                    if let Some(failed) = failed.note(std::time::Instant::now()) {
                        tracing::warn!(
                            error = %e,
                            failed_accepts = failed,
                            pause_ms = super::socket::ACCEPT_PAUSE.as_millis(),
                            "metrics listener: cannot accept connections; retrying at a pace"
                        );
                    }
                    tokio::time::sleep(super::socket::ACCEPT_PAUSE).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection: a request, then closed.
async fn serve_one(stream: tokio::net::TcpStream) {
    let connection = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service_fn(respond));
    let _ = connection.await;
}

/// What this port serves, for a request it does not.
const ROUTES: &str = "GET /metrics, GET /readyz, GET /livez\n";

async fn respond(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => (
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            crate::metrics::render(),
        ),
        // Not ready at once while the audit log holds grants back, not only at the
        // readiness check's next run.
        (&Method::GET | &Method::HEAD, "/readyz") => {
            match crate::metrics::is_ready() && !crate::grant::audit::BACKLOG.is_behind() {
                true => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
                false => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: see the log's readiness lines\n".to_owned(),
                ),
            }
        }
        (&Method::GET | &Method::HEAD, "/livez") => {
            (StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        (_, "/metrics" | "/readyz" | "/livez") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            ROUTES.to_owned(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", ROUTES.to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}
