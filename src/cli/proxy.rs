//! `storage-grants credentials-proxy`: the container-credentials endpoint on loopback,
//! as a sidecar in the caller's pod. An SDK configured with
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/v1/credentials/{bucket}/{prefix}?access=read`
//! fetches (and refreshes) credentials from it; the proxy asks the service over gRPC
//! with the pod's token, which never leaves the sidecar. The SDKs accept `http://`
//! only on loopback, which is why this listens there and nowhere else.
//!
//! Loopback is not a boundary of its own: a page in a browser that rebinds its DNS
//! name to 127.0.0.1, or a request forgery (SSRF) in the app, reaches it too. So a
//! request must name the proxy by a loopback address or `localhost` in every name it
//! gives (a rebinding page sends its own host name), and carry the app's token: a random value the proxy writes to
//! `--authorization-token-file`, which the app's SDK sends as `Authorization` from
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (as ECS and EKS Pod Identity ask), and
//! which a forged request cannot know.

use std::net::SocketAddr;
use std::path::Path as FilePath;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::{Error, Upstream, upstream};
use crate::gateway::{ContainerCredentials, Problem};
use crate::secret::Secret;

/// The token a request must carry as `Authorization`: the app's, not the caller's
/// (which only the proxy holds).
#[derive(Debug, Clone)]
pub struct AppToken(Arc<Secret<String>>);

impl AppToken {
    /// The token in `path` when the file holds one (the proxy's own from before a
    /// restart, or one the operator mounted), else a new random one written there for
    /// the app to read.
    ///
    /// # Errors
    /// The file cannot be read or written, is not a regular file of at most 4 KiB, or
    /// holds a token the SDKs could not send or that is too short.
    pub fn load_or_create(path: &FilePath) -> Result<AppToken, Error> {
        let failed = |source| Error::AppToken {
            path: path.to_owned(),
            source,
        };
        let adopt = |text: String| {
            usable(&text)
                .map(|()| AppToken(Arc::new(Secret::new(text))))
                .map_err(|why| failed(std::io::Error::new(std::io::ErrorKind::InvalidData, why)))
        };
        let blank = match read_existing(path).map_err(failed)? {
            Existing::Token(text) => return adopt(text),
            Existing::Blank => true,
            Existing::None => false,
        };
        let token = random_token();
        // Written whole under a name of this process's own, then put in place: the app
        // never reads half. Linked rather than renamed where no file was, since a link
        // never replaces one: of two proxies starting on one file, the first one's token
        // stands and the other takes it.
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(".partial-{}", std::process::id()));
        let partial = std::path::PathBuf::from(partial);
        let placed = (|| {
            use std::io::Write as _;
            use std::os::unix::fs::PermissionsExt as _;
            match std::fs::remove_file(&partial) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&partial)?;
            file.write_all(token.as_bytes())?;
            // Readable by the app's user whatever the umask, writable by the proxy only.
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            if blank {
                std::fs::rename(&partial, path)
            } else {
                std::fs::hard_link(&partial, path)
            }
        })();
        let _ = std::fs::remove_file(&partial);
        match placed {
            Ok(()) => Ok(AppToken(Arc::new(Secret::new(token)))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match read_existing(path).map_err(failed)? {
                    Existing::Token(text) => adopt(text),
                    _ => Err(failed(e)),
                }
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// Whether `token` (the caller's own) is this token.
    pub fn is(&self, token: &str) -> bool {
        self.admits(token.as_bytes())
    }

    /// Whether `presented` (the request's `Authorization`) is the token, compared in
    /// time that does not depend on where they differ.
    fn admits(&self, presented: &[u8]) -> bool {
        let token = self.0.expose().as_bytes();
        presented.len() == token.len()
            && presented
                .iter()
                .zip(token)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

/// What the token file holds.
enum Existing {
    None,
    Blank,
    Token(String),
}

/// The token file's content. Only a regular file of at most 4 KiB is read: a FIFO
/// would hold the start for ever, `/dev/zero` would never end, and no SDK sends a
/// header that long.
fn read_existing(path: &FilePath) -> std::io::Result<Existing> {
    use std::io::Read as _;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::None),
        Err(e) => return Err(e),
    };
    let refused = |why: &str| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
    if !meta.is_file() {
        return refused("not a regular file");
    }
    if meta.len() > 4096 {
        return refused("larger than 4 KiB, which no SDK sends as a header");
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(4097)
        .read_to_string(&mut text)?;
    Ok(if text.trim().is_empty() {
        Existing::Blank
    } else {
        Existing::Token(text)
    })
}

/// Why a token someone else wrote cannot be the app's: the SDKs send the file as it
/// is, and refuse a header value with a line break (a file written with `echo`).
fn usable(text: &str) -> Result<(), &'static str> {
    if text.ends_with(['\n', '\r']) {
        return Err(
            "it ends in a line break, which the AWS SDKs refuse to send; write it \
                    without one (printf, not echo)",
        );
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "it holds spaces, line breaks or characters other than visible ASCII, \
                    which a header cannot carry as the SDKs send it",
        );
    }
    if text.len() < 16 {
        return Err(
            "it is shorter than 16 characters: too easy to guess; remove the file \
                    and the proxy writes a random one",
        );
    }
    Ok(())
}

/// 32 random bytes from the operating system, as hex.
fn random_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `host` (a request's `Host` or `:authority`) names the proxy by a loopback
/// address or as `localhost`, with or without a port: what a rebinding page sends is its
/// own name.
fn names_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:9911`
        Some(v6) => {
            return v6.split_once(']').is_some_and(|(ip, rest)| {
                ip.parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|ip| ip.to_canonical().is_loopback())
                    && (rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port))
            });
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

/// The refusal of a request that is not the app's, or `None` to serve it.
fn refusal(token: &AppToken, uri: &http::Uri, headers: &http::HeaderMap) -> Option<Response> {
    // Every name the request gives itself: an absolute-form target or HTTP/2's
    // `:authority` (the URI's), and each `Host`; at least one, and all loopback.
    let uri_host = uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or(""));
    let mut names = headers
        .get_all(http::header::HOST)
        .iter()
        .map(|h| h.to_str().ok())
        .chain(uri_host.map(Some))
        .peekable();
    let addressed = names.peek().is_some();
    if !addressed || !names.all(|name| name.is_some_and(names_loopback)) {
        return Some(
            Problem::from_status(&tonic::Status::permission_denied(
                "the credentials proxy answers requests addressed to it as a loopback \
                 address (127.0.0.1, [::1]) or localhost only; a page or server led here by \
                 another name, or a request without a Host, is refused",
            ))
            .into_response(),
        );
    }
    let presented = headers.get(http::header::AUTHORIZATION);
    if presented.is_some_and(|p| token.admits(p.as_bytes())) {
        return None;
    }
    let what = if presented.is_some() {
        "is not"
    } else {
        "was not sent as"
    };
    Some(
        Problem::from_status(&tonic::Status::unauthenticated(format!(
            "the app's token {what} Authorization: set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE \
             to the file the proxy writes (--authorization-token-file)"
        )))
        .into_response(),
    )
}

/// `?access=read|write|read-write&list=true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AskQuery {
    access: Option<String>,
    #[serde(default)]
    list: bool,
}

/// What the proxy's routes share.
#[derive(Clone)]
struct Proxy {
    upstream: Upstream,
    token: AppToken,
}

async fn credentials(
    State(Proxy { upstream, token }): State<Proxy>,
    uri: http::Uri,
    headers: http::HeaderMap,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    query: Result<Query<AskQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(refused) = refusal(&token, &uri, &headers) {
        return refused;
    }
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

/// Serves on `listening` (from [`bind`]) until `shutdown` completes, to requests that
/// carry `token`.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listening: Listening,
    upstream: Upstream,
    token: AppToken,
    signals: crate::server::StopSignals,
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
        .with_state(Proxy { upstream, token });
    let first = signals.clone().first();
    let served = axum::serve(listener, router).with_graceful_shutdown(async move {
        first.await;
        tracing::info!("credentials proxy stopping: finishing the requests in flight");
    });
    // A second signal does not wait for requests in flight (an upstream that hangs).
    tokio::select! {
        served = served => served.map_err(|source| Error::Listen { addr, source }),
        () = signals.second() => {
            tracing::warn!("a second stop signal: requests in flight are closed");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_and_localhost_name_the_proxy() {
        for host in [
            "127.0.0.1:9911",
            "127.0.0.1",
            "[::1]:9911",
            "[::1]",
            "localhost:9911",
            "LocalHost",
            "127.1.2.3:80",
            "[::ffff:127.0.0.1]:9911",
            "[0:0:0:0:0:0:0:1]",
        ] {
            assert!(names_loopback(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9911",
            "localhost.evil.example",
            "127.0.0.1.nip.io:9911",
            "[::1]x",
            "[::1]:99999",
            "::1",
            "",
            "8.8.8.8",
            "[::ffff:1.2.3.4]",
            "169.254.170.23",
            "localhost.",
            "user@localhost",
        ] {
            assert!(!names_loopback(host), "{host}");
        }
    }

    #[test]
    fn the_token_is_written_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("sg-app-token-{}", random_token()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("token");
        let made = AppToken::load_or_create(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.len(), 64);
        assert!(made.admits(written.as_bytes()));
        assert!(!made.admits(b""));
        assert!(!made.admits(&written.as_bytes()[1..]));
        // A restarted proxy keeps the token the app already read.
        let again = AppToken::load_or_create(&path).unwrap();
        assert!(again.admits(written.as_bytes()));
        assert_ne!(random_token(), random_token());
        // A token someone wrote that the SDKs could not send, or that is easy to guess,
        // is refused at start rather than refusing every request.
        for (bad, says) in [
            ("0123456789abcdef0123\n", "line break"),
            ("0123456789 abcdef0123", "visible ASCII"),
            ("short", "shorter than 16"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = AppToken::load_or_create(&path).unwrap_err().to_string();
            assert!(err.contains(says) && !err.contains("0123456789"), "{err}");
        }
        // A link planted where the proxy writes its new token is replaced, not followed.
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(".partial-{}", std::process::id()));
        std::os::unix::fs::symlink(&target, &partial).unwrap();
        AppToken::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 64);
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "{mode:o}");
        }
        // Not a regular file, or larger than any header: refused, not read.
        for (bad, says) in [
            (FilePath::new("/dev/zero"), "not a regular file"),
            (&dir, "not a regular file"),
        ] {
            let err = AppToken::load_or_create(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let big = dir.join("big");
        std::fs::write(&big, "a".repeat(5000)).unwrap();
        assert!(
            AppToken::load_or_create(&big)
                .unwrap_err()
                .to_string()
                .contains("4 KiB")
        );
        // Another proxy's token, already in place, is taken, not replaced.
        let shared = dir.join("shared");
        let first = AppToken::load_or_create(&shared).unwrap();
        let second = AppToken::load_or_create(&shared).unwrap();
        let written = std::fs::read_to_string(&shared).unwrap();
        assert!(first.is(&written) && second.is(&written));
        // A directory that does not exist is an error naming the file.
        let err = AppToken::load_or_create(&dir.join("no/token")).unwrap_err();
        assert!(err.to_string().contains("no/token"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
