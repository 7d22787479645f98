//! `storage-grants credentials-proxy`: the container-credentials endpoint on loopback,
//! as a sidecar in the caller's pod. An SDK configured with
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/v1/credentials/{bucket}/{prefix}?access=read`
//! fetches (and refreshes) credentials from it; the proxy asks the service over gRPC
//! with the pod's token, which never leaves the sidecar. The SDKs accept `http://`
//! only on loopback, which is why this listens there and nowhere else.

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::{Error, Upstream, upstream};
use crate::gateway::{ContainerCredentials, Problem};

/// `?access=read|write|read-write&list=true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskQuery {
    access: Option<String>,
    #[serde(default)]
    list: bool,
}

async fn credentials(
    State(upstream): State<Upstream>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<AskQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (Ok(Path((bucket, prefix))), Ok(Query(query))) = (path, query) else {
        return Problem::bad_request(
            "GET /v1/credentials/{bucket}/{prefix}?access=read|write|read-write[&list=true]",
        )
        .into_response();
    };
    let Some(access) = query.access.as_deref() else {
        return Problem::bad_request("access is required: ?access=read|write|read-write")
            .into_response();
    };
    let access = match upstream::access(access) {
        Ok(access) => access,
        Err(e) => return Problem::bad_request(e.to_string()).into_response(),
    };
    match upstream.assume(&bucket, &prefix, access, query.list).await {
        Ok(answer) => match ContainerCredentials::from_proto(answer) {
            Some(body) => crate::gateway::no_store(Json(body)),
            None => Problem::from_status(&tonic::Status::internal(
                "the service answered without credentials",
            ))
            .into_response(),
        },
        Err(Error::Refused(status)) => Problem::from_status(&status).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "credentials proxy: upstream failed");
            Problem::from_status(&tonic::Status::unavailable(e.to_string())).into_response()
        }
    }
}

/// The proxy's listening socket and the address it listens on (for port 0, the
/// system's pick), read once when it was bound.
#[derive(Debug)]
pub struct Listening {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listening {
    /// Where the proxy listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds `addr`, which must be on loopback (port 0: the system picks;
/// [`Listening::addr`] says which).
///
/// # Errors
/// A non-loopback address; an address that cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<Listening, Error> {
    if !addr.ip().is_loopback() {
        return Err(Error::Usage(format!(
            "--listen {addr}: the proxy listens on loopback only (the SDKs accept http:// \
             only there); use 127.0.0.1"
        )));
    }
    let listen = |source| Error::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    Ok(Listening { listener, addr })
}

/// Serves on `listening` (from [`bind`]) until `shutdown` completes.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listening: Listening,
    upstream: Upstream,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Listening { listener, addr } = listening;
    tracing::info!(%addr, "credentials proxy listening");
    let router = Router::new()
        // GET only: a HEAD would make credentials only to throw them away.
        .route(
            "/v1/credentials/{bucket}/{*prefix}",
            crate::gateway::get_issuing(credentials),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        // Problem bodies, as the gateway's: an SDK pointed at a wrong path says why.
        .fallback(|| async { Problem::not_found() })
        .with_state(upstream);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Listen { addr, source })
}
