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
//!
//! At most `server.max_connections` connections are open at once, on every listener
//! together: one more is closed as soon as it is accepted (before any TLS handshake),
//! so a flood of connections costs a refusal each rather than memory until the process
//! is killed. Its client sees the connection close and retries, elsewhere behind a
//! load balancer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpIncoming};

use crate::config::raw::ServerConfig;
use crate::identity::mtls::PeerAddr;

/// The socket options and the connection cap of accepted connections, from `[server]`.
#[derive(Debug, Clone)]
pub(super) struct Accepted {
    /// Silence before the first probe (`server.keepalive_interval`).
    idle: Duration,
    /// Between probes.
    every: Duration,
    /// Unanswered probes before the connection is reset.
    probes: u32,
    /// Connections that may still open, shared by every listener.
    slots: Arc<Semaphore>,
    /// `server.max_connections`, for the warning.
    max: usize,
}

impl Accepted {
    pub(super) fn new(server: &ServerConfig) -> Self {
        let (every, probes) = keepalive_probes(server.keepalive_timeout);
        Self {
            idle: server.keepalive_interval,
            every,
            probes,
            slots: Arc::new(Semaphore::new(server.max_connections)),
            max: server.max_connections,
        }
    }

    /// `listener`'s connections with these options, within the cap, accepting at a
    /// pace when a resource runs out: for the gRPC port and the gateway alike.
    pub(super) fn incoming(&self, listener: TcpListener) -> Admitted<TcpIncoming> {
        Admitted::new(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(self.idle))
                .with_keepalive_interval(Some(self.every))
                .with_keepalive_retries(Some(self.probes)),
            self.slots.clone(),
            self.max,
        )
    }
}

/// An accepted connection holding one of the `server.max_connections` slots until it
/// is dropped (closed).
#[derive(Debug)]
pub(super) struct Counted<T> {
    io: T,
    slot: Slot,
}

/// One slot of the cap, counted in the open-connections gauge while held.
#[derive(Debug)]
struct Slot(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::connection_open(false);
    }
}

impl<T> Counted<T> {
    pub(super) fn new(io: T, slot: OwnedSemaphorePermit) -> Self {
        crate::metrics::connection_open(true);
        Self {
            io,
            slot: Slot(slot),
        }
    }

    /// The same connection, its socket converted by `f` (handed from one runtime to
    /// another), keeping its slot; if `f` fails, the slot is given back.
    pub(super) fn try_map<U>(self, f: impl FnOnce(T) -> io::Result<U>) -> io::Result<Counted<U>> {
        Ok(Counted {
            io: f(self.io)?,
            slot: self.slot,
        })
    }

    /// The socket.
    #[cfg(test)]
    pub(super) fn get(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

/// `AsyncWrite` for `$wrapper<T>`, straight through to its `io`.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<T: AsyncWrite + Unpin> AsyncWrite for $wrapper<T> {
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

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.io).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                Pin::new(&mut self.io).poll_shutdown(cx)
            }
        }
    };
}

write_through!(Counted);

impl<T: Connected> Connected for Counted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: PeerAddr + Sync> PeerAddr for Counted<T> {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.io.peer()
    }

    fn first_bytes(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.io.first_bytes()
    }
}

/// A new connection's deadline to send its first bytes: hyper waits for ever for an
/// HTTP/2 client preface (and, on the gateway, for the bytes that tell HTTP/1.1 from
/// HTTP/2), so without it a client that sends half of one, or nothing, holds its
/// connection, and a slot of the cap, for good.
pub(super) struct Opening {
    /// Bytes still awaited.
    awaited: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The setting that bounds it, for the error.
    setting: &'static str,
}

impl Opening {
    /// `bytes` awaited within `within` (the value of `setting`).
    pub(super) fn new(bytes: usize, within: Duration, setting: &'static str) -> Self {
        Self {
            awaited: bytes,
            deadline: Box::pin(tokio::time::sleep(within)),
            setting,
        }
    }

    /// Reads from `io` into `buf` through `opening` (`None` once the bytes came): a
    /// TimedOut error once the deadline passed before they did.
    pub(super) fn poll_read<IO: AsyncRead + Unpin>(
        opening: &mut Option<Self>,
        io: &mut IO,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(this) = opening else {
            return Pin::new(io).poll_read(cx, buf);
        };
        // Polled first, so that the deadline wakes this connection when it passes.
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the connection did not start HTTP/2 (or HTTP/1.1) within {}",
                    this.setting
                ),
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(io).poll_read(cx, buf);
        if read.is_ready() {
            this.awaited = this.awaited.saturating_sub(buf.filled().len() - before);
            if this.awaited == 0 {
                *opening = None;
            }
        }
        read
    }
}

/// A gateway connection held to its [`Opening`].
pub(super) struct Opened<IO> {
    io: IO,
    opening: Option<Opening>,
}

/// What a gateway connection must send within `http.header_read_timeout`: as many
/// bytes as HTTP/2's client preface, by which hyper tells it from HTTP/1.1 (a request
/// line and its `Host` header are as long).
const GATEWAY_OPENING_BYTES: usize = 24;

/// A gateway listener whose connections are held to an [`Opening`] of
/// `http.header_read_timeout`; hyper's own header timeout starts only once it has
/// told HTTP/1.1 from HTTP/2, so a connection that sent nothing was held for ever.
pub(super) struct OpenedListener<L> {
    pub(super) inner: L,
    pub(super) within: Duration,
}

impl<L: axum::serve::Listener> axum::serve::Listener for OpenedListener<L> {
    type Io = Opened<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        let opening = Opening::new(
            GATEWAY_OPENING_BYTES,
            self.within,
            "http.header_read_timeout",
        );
        (
            Opened {
                io,
                opening: Some(opening),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Opened<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        Opening::poll_read(&mut this.opening, &mut this.io, cx, buf)
    }
}

write_through!(Opened);

/// How long accepting pauses after an accept failed for want of a resource. Short
/// enough that connections are taken again soon after descriptors are freed; a failed
/// accept costs one system call, so four a second cost nothing.
pub(super) const ACCEPT_PAUSE: Duration = Duration::from_millis(250);

/// The connections of `inner` that are let in: each holds a slot of the cap; one accepted
/// while every slot is taken is closed at once. After an accept that failed for want
/// of a resource, accepting pauses [`ACCEPT_PAUSE`]. Both are logged as warnings at
/// most once per [`WARN_EVERY`] each, with how many there were since the last one (at
/// the edge of a limit, every freed descriptor or slot lets one connection in before
/// the next fails). Failures of one connection (reset or aborted before it was
/// accepted) pass through at once.
pub(super) struct Admitted<S> {
    inner: S,
    slots: Arc<Semaphore>,
    max: usize,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: Throttled,
    refused: Throttled,
}

/// At most one warning about failing accepts, and one about refused connections, this
/// often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Events to warn about at most once per [`WARN_EVERY`].
#[derive(Default)]
struct Throttled {
    /// When the last warning was logged.
    warned: Option<Instant>,
    /// Events since.
    count: u64,
}

impl Throttled {
    /// Counts one event; the count to warn with, when a warning is due.
    fn note(&mut self) -> Option<u64> {
        self.count += 1;
        if self.warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return None;
        }
        self.warned = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

impl<S> Admitted<S> {
    pub(super) fn new(inner: S, slots: Arc<Semaphore>, max: usize) -> Self {
        Self {
            inner,
            slots,
            max,
            pause: None,
            failed: Throttled::default(),
            refused: Throttled::default(),
        }
    }
}

/// The gateway's listener without TLS (with TLS, `tls::GatewayTls` takes the stream):
/// the connections of `incoming`, accepted by a listener bound to `local`.
pub(super) struct Listening<S> {
    pub(super) incoming: S,
    pub(super) local: std::net::SocketAddr,
}

impl<S> axum::serve::Listener for Listening<S>
where
    S: Stream<Item = io::Result<Counted<TcpStream>>> + Unpin + Send + 'static,
{
    type Io = Counted<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        next_connection(&mut self.incoming, |stream: &Counted<TcpStream>| {
            stream.peer()
        })
        .await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The next connection of `incoming` and its peer's address (unspecified when the
/// socket no longer knows it), as an axum listener answers: a failed accept or
/// handshake (one connection's, or already logged) is skipped, and an ended stream
/// waits for ever, since serving stops at shutdown, not when a listener ends.
pub(super) async fn next_connection<S, IO>(
    incoming: &mut S,
    peer: impl Fn(&IO) -> Option<std::net::SocketAddr>,
) -> (IO, std::net::SocketAddr)
where
    S: Stream<Item = io::Result<IO>> + Unpin,
{
    use tokio_stream::StreamExt as _;
    loop {
        match incoming.next().await {
            Some(Ok(stream)) => {
                let addr = peer(&stream).unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
                return (stream, addr);
            }
            Some(Err(_)) => continue,
            None => std::future::pending::<()>().await,
        }
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

impl<S, IO> Stream for Admitted<S>
where
    S: Stream<Item = io::Result<IO>> + Unpin,
{
    type Item = io::Result<Counted<IO>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(pause) = this.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(io)) => match this.slots.clone().try_acquire_owned() {
                    Ok(slot) => return Poll::Ready(Some(Ok(Counted::new(io, slot)))),
                    Err(_) => {
                        // Closed before anything is read or written.
                        drop(io);
                        crate::metrics::connection_refused();
                        if let Some(refused) = this.refused.note() {
                            tracing::warn!(
                                max_connections = this.max,
                                refused,
                                "connection limit reached: closing new connections until \
                                 some close (raise server.max_connections with the memory \
                                 limit, or add replicas)"
                            );
                        }
                    }
                },
                Some(Err(e)) if !one_connection(&e) => {
                    if let Some(failed) = this.failed.note() {
                        tracing::warn!(
                            error = %e,
                            failed_accepts = failed,
                            pause_ms = ACCEPT_PAUSE.as_millis(),
                            "cannot accept connections; retrying at a pace (for EMFILE, \
                             raise the file descriptor limit or lower the number of clients)"
                        );
                    }
                    this.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
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
    use super::*;
    use tokio_stream::StreamExt;

    fn admitted(
        accepts: Vec<io::Result<u32>>,
        max: usize,
    ) -> Admitted<impl Stream<Item = io::Result<u32>> + Unpin> {
        Admitted::new(
            tokio_stream::iter(accepts),
            Arc::new(Semaphore::new(max)),
            max,
        )
    }

    #[tokio::test]
    async fn accepting_pauses_after_a_resource_error_and_not_after_a_connections_own() {
        let emfile = || Err(io::Error::from_raw_os_error(24));
        let reset = || Err(io::Error::from(io::ErrorKind::ConnectionReset));
        let mut admitted = admitted(vec![Ok(1), emfile(), emfile(), Ok(2), reset(), Ok(3)], 10);
        let started = Instant::now();
        assert_eq!(admitted.next().await.unwrap().unwrap().io, 1);
        assert!(admitted.pause.is_none() && admitted.failed.warned.is_none());
        // Two failed accepts: two pauses before the next connection, one warning.
        assert_eq!(admitted.next().await.unwrap().unwrap().io, 2);
        assert!(
            started.elapsed() >= 2 * ACCEPT_PAUSE,
            "{:?}",
            started.elapsed()
        );
        assert!(admitted.failed.warned.is_some());
        assert_eq!(admitted.failed.count, 1, "one failure since the warning");
        // A connection's own failure passes through (tonic skips it) without a pause.
        let failed = admitted.next().await.unwrap().unwrap_err();
        assert_eq!(failed.kind(), io::ErrorKind::ConnectionReset);
        assert!(admitted.pause.is_none());
        assert_eq!(admitted.failed.count, 1);
        assert_eq!(admitted.next().await.unwrap().unwrap().io, 3);
        assert!(admitted.next().await.is_none());
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_is_closed_until_one_is_dropped() {
        let mut admitted = admitted((1..=6).map(Ok).collect(), 2);
        let first = admitted.next().await.unwrap().unwrap();
        let second = admitted.next().await.unwrap().unwrap();
        assert_eq!((first.io, second.io), (1, 2));
        drop(first);
        // 3 takes the freed slot; 4, 5 and 6 find none and are closed.
        let third = admitted.next().await.unwrap().unwrap();
        assert_eq!(third.io, 3);
        assert!(admitted.next().await.is_none());
        assert!(admitted.refused.warned.is_some());
        assert_eq!(admitted.refused.count, 2, "one warning, two refusals since");
        assert_eq!(admitted.slots.available_permits(), 0);
        drop((second, third));
        assert_eq!(admitted.slots.available_permits(), 2);
    }

    #[test]
    fn warnings_are_throttled_and_count_what_they_summarise() {
        let mut throttled = Throttled::default();
        assert_eq!(throttled.note(), Some(1));
        assert_eq!(throttled.note(), None);
        assert_eq!(throttled.note(), None);
        throttled.warned = Some(Instant::now() - WARN_EVERY);
        assert_eq!(throttled.note(), Some(3), "the two held back, and this one");
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
