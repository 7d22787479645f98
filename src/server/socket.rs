//! What every connection the service accepts gets, on the gRPC port and the gateway
//! alike: no Nagle, and TCP keepalive.
//!
//! No Nagle: a grant is one small response, and waiting to coalesce it with the next
//! write adds the peer's delayed-ACK time (~40 ms) to the call.
//!
//! Keepalive catches clients that are gone without closing (a host that vanished, a
//! NAT that forgot the flow) and keeps idle connections alive through load balancers
//! that cut silent ones (an AWS NLB counts the probes as traffic). It is TCP's, run by
//! the kernel at no cost to a call. HTTP/2 PINGs would also catch a peer whose process
//! hangs, but hyper's keepalive takes a lock that the connection's tasks share on every
//! frame received, and that cost GrantWrite about 5 % of its calls/s (BENCHMARKS.md).
//!
//! An accept that fails for want of a resource (the process's or the system's file
//! descriptors, kernel memory) is retried after [`ACCEPT_PAUSE`], not at once: the
//! connection waits in the backlog, so an immediate retry fails again, and tonic's
//! accept loop (which skips failed accepts) would spin a worker at full CPU for as
//! long as the descriptors stay used up, starving the calls in flight.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;

use crate::config::raw::ServerConfig;

/// The socket options of accepted connections, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Accepted {
    /// Silence before the first probe (`server.keepalive_interval`).
    idle: Duration,
    /// Between probes.
    every: Duration,
    /// Unanswered probes before the connection is reset.
    probes: u32,
}

impl Accepted {
    pub(super) fn new(server: &ServerConfig) -> Self {
        let (every, probes) = keepalive_probes(server.keepalive_timeout);
        Self {
            idle: server.keepalive_interval,
            every,
            probes,
        }
    }

    /// `listener`'s connections with these options, accepting at a pace when a
    /// resource runs out: for the gRPC port and the gateway alike.
    pub(super) fn incoming(self, listener: TcpListener) -> Paced<TcpIncoming> {
        Paced::new(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(self.idle))
                .with_keepalive_interval(Some(self.every))
                .with_keepalive_retries(Some(self.probes)),
        )
    }
}

/// How long accepting pauses after an accept failed for want of a resource. Short
/// enough that connections are taken again soon after descriptors are freed; a failed
/// accept costs one system call, so four a second cost nothing.
pub(super) const ACCEPT_PAUSE: Duration = Duration::from_millis(250);

/// Accepted connections from `inner`, pausing [`ACCEPT_PAUSE`] after an accept that
/// failed for want of a resource. Such failures are logged as a warning at most once
/// per [`WARN_EVERY`], with how many there were since the last one: at the edge of the
/// limit every freed descriptor lets one connection in before accepts fail again.
/// Failures of one connection (reset or aborted before it was accepted) pass through
/// at once, as do the connections.
pub(super) struct Paced<S> {
    inner: S,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the last warning was logged, and the failures since.
    warned: Option<Instant>,
    failures: u64,
}

/// At most one warning about failing accepts this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

impl<S> Paced<S> {
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner,
            pause: None,
            warned: None,
            failures: 0,
        }
    }
}

/// The gateway's listener without TLS (with TLS, `tls::GatewayTls` takes the stream).
impl axum::serve::Listener for Paced<TcpIncoming> {
    type Io = TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt as _;
        loop {
            match self.next().await {
                Some(Ok(stream)) => {
                    let peer = stream
                        .peer_addr()
                        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
                    return (stream, peer);
                }
                // One connection's failure (reset before it was accepted).
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Whether a failed accept concerns one connection only, which the next accept does
/// not meet again (as hyper classifies them).
fn one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl<S, IO> Stream for Paced<S>
where
    S: Stream<Item = io::Result<IO>> + Unpin,
{
    type Item = io::Result<IO>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(pause) = this.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Err(e)) if !one_connection(&e) => {
                    this.failures += 1;
                    if this.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        tracing::warn!(
                            error = %e,
                            failed_accepts = this.failures,
                            pause_ms = ACCEPT_PAUSE.as_millis(),
                            "cannot accept connections; retrying at a pace (for EMFILE, \
                             raise the file descriptor limit or lower the number of clients)"
                        );
                        this.warned = Some(Instant::now());
                        this.failures = 0;
                    }
                    this.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

/// TCP keepalive probes that together take about `timeout`: every quarter of it (in
/// whole seconds, as the socket option counts them, at least one), as many as fit. A
/// peer that answers none within that is gone, and its connection is reset.
fn keepalive_probes(timeout: Duration) -> (Duration, u32) {
    let total = timeout.as_secs().max(1);
    let every = (total / 4).max(1);
    let probes = u32::try_from(total.div_ceil(every)).unwrap_or(u32::MAX);
    (Duration::from_secs(every), probes)
}

#[cfg(test)]
mod tests {
    use super::{ACCEPT_PAUSE, Paced, keepalive_probes};
    use std::io;
    use std::time::{Duration, Instant};
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepting_pauses_after_a_resource_error_and_not_after_a_connections_own() {
        let emfile = || Err(io::Error::from_raw_os_error(24));
        let reset = || Err(io::Error::from(io::ErrorKind::ConnectionReset));
        let accepts: Vec<io::Result<u32>> = vec![Ok(1), emfile(), emfile(), Ok(2), reset(), Ok(3)];
        let mut paced = Paced::new(tokio_stream::iter(accepts));
        let started = Instant::now();
        assert_eq!(paced.next().await.unwrap().unwrap(), 1);
        assert!(paced.pause.is_none() && paced.warned.is_none());
        // Two failed accepts: two pauses before the next connection, one warning.
        assert_eq!(paced.next().await.unwrap().unwrap(), 2);
        assert!(
            started.elapsed() >= 2 * ACCEPT_PAUSE,
            "{:?}",
            started.elapsed()
        );
        assert!(paced.warned.is_some());
        assert_eq!(paced.failures, 1, "one failure since the warning");
        // A connection's own failure passes through (tonic skips it) without a pause.
        let failed = paced.next().await.unwrap().unwrap_err();
        assert_eq!(failed.kind(), io::ErrorKind::ConnectionReset);
        assert!(paced.pause.is_none());
        assert_eq!(paced.failures, 1);
        assert_eq!(paced.next().await.unwrap().unwrap(), 3);
        assert!(paced.next().await.is_none());
    }

    #[test]
    fn keepalive_probes_take_about_the_timeout() {
        let secs = |s| Duration::from_secs(s);
        assert_eq!(keepalive_probes(secs(20)), (secs(5), 4));
        assert_eq!(keepalive_probes(secs(1)), (secs(1), 1));
        assert_eq!(keepalive_probes(secs(30)), (secs(7), 5));
        assert_eq!(keepalive_probes(secs(300)), (secs(75), 4));
        // Under a second still probes once a second, once.
        assert_eq!(keepalive_probes(Duration::from_millis(500)), (secs(1), 1));
        for s in 1..=300 {
            let (every, probes) = keepalive_probes(secs(s));
            let total = every.as_secs() * u64::from(probes);
            assert!(
                total >= s && total < s + every.as_secs(),
                "{s}: {every:?} x {probes}"
            );
        }
    }
}
