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
//! load balancer. At most `server.max_connections_per_peer` of them come from one
//! address, so that one client (a broken one, or one holding connections open on
//! purpose) cannot take every slot and stop the service for all the others.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpIncoming};

use crate::config::raw::ServerConfig;
use crate::core::throttle::{ONCE_A_MINUTE, Throttle};
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
    /// Shared by every listener.
    cap: Arc<Cap>,
}

impl Accepted {
    pub(super) fn new(server: &ServerConfig) -> Self {
        let (every, probes) = keepalive_probes(server.keepalive_timeout);
        Self {
            idle: server.keepalive_interval,
            every,
            probes,
            cap: Arc::new(Cap::new(
                connections_within_the_descriptors(server.max_connections),
                server.max_connections_per_peer,
            )),
        }
    }

    /// `listener`'s connections with these options, within the cap, accepting at a
    /// pace when a resource runs out: for the gRPC port and the gateway alike.
    pub(super) fn incoming(&self, listener: TcpListener) -> Admitted<TcpIncoming> {
        let local = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let mut admitted = Admitted::new(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(self.idle))
                .with_keepalive_interval(Some(self.every))
                .with_keepalive_retries(Some(self.probes)),
            self.cap.clone(),
        );
        admitted.local = local;
        admitted
    }
}

/// The connections that may be open: `max` in all, `per_peer` from one address.
#[derive(Debug)]
pub(super) struct Cap {
    slots: Arc<Semaphore>,
    max: usize,
    per_peer: usize,
    /// Open connections by the address they come from (none at zero).
    peers: Mutex<HashMap<IpAddr, usize>>,
}

/// `max` connections, or fewer when the process's open-file limit leaves room for
/// fewer: a connection holds a descriptor, and once none is left (EMFILE) no listener
/// can accept, not even to close a connection past the cap, the metrics port's probes
/// go unanswered, and files and outgoing calls (STS, the store, JWKS) fail. So the cap
/// is at most the soft limit (`/proc/self/limits`) less the descriptors open now and
/// a reserve for the rest, a quarter of the limit up to 64, and the start-up log says
/// so when that lowers it.
fn connections_within_the_descriptors(max: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| open_files_limit(&limits));
    let open = std::fs::read_dir("/proc/self/fd").map(Iterator::count).ok();
    let (Some(limit), Some(open)) = (limit, open) else {
        return max;
    };
    let room = limit
        .saturating_sub(open)
        .saturating_sub((limit / 4).min(64))
        .max(1);
    if room < max {
        tracing::warn!(
            max_connections = max,
            open_files_limit = limit,
            open_files = open,
            connections = room,
            "server.max_connections is more than the open-file limit leaves room for: \
             connections are capped lower (past it, closed at once and counted), keeping \
             descriptors for probes, files and outgoing calls; raise the limit (ulimit -n, \
             the container runtime's nofile) to serve more"
        );
    }
    room.min(max)
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text; `None` when unlimited or
/// absent.
fn open_files_limit(limits: &str) -> Option<usize> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Why a connection was not let in.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// `server.max_connections` are open.
    Full,
    /// `server.max_connections_per_peer` are open from this address.
    Peer(IpAddr),
}

impl Cap {
    pub(super) fn new(max: usize, per_peer: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_peer,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Slots free.
    #[cfg(test)]
    pub(super) fn available(&self) -> usize {
        self.slots.available_permits()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `peer` (unknown: held to the total only).
    fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Slot, Refusal> {
        // Taken first: a refusal by the address's share gives it back by dropping it.
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        if let Some(peer) = peer {
            let mut peers = self.peers();
            let open = peers.entry(peer).or_insert(0);
            if *open >= self.per_peer {
                return Err(Refusal::Peer(peer));
            }
            *open += 1;
        }
        crate::metrics::connection_open(true);
        Ok(Slot {
            _permit: permit,
            peer: peer.map(|p| (self.clone(), p)),
        })
    }
}

/// One slot of the cap (and of its address's share), counted in the open-connections
/// gauge while held.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    peer: Option<(Arc<Cap>, IpAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::connection_open(false);
        if let Some((cap, peer)) = self.peer.take() {
            let mut peers = cap.peers();
            if let Some(open) = peers.get_mut(&peer) {
                *open -= 1;
                if *open == 0 {
                    peers.remove(&peer);
                }
            }
        }
    }
}

/// The address a connection comes from, for the per-peer share of the cap.
pub(super) trait PeerIp {
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl PeerIp for TcpStream {
    fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr().ok().map(|a| client_of(a.ip()))
    }
}

/// The address a share of the cap is counted by: an IPv4 client of a dual-stack
/// listener is one address however written, and an IPv6 client is its /64, the
/// smallest network a host is given (one host holds 2^64 addresses of its own).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

/// An accepted connection holding one of the `server.max_connections` slots until it
/// is dropped (closed).
#[derive(Debug)]
pub(super) struct Counted<T> {
    io: T,
    slot: Slot,
}

impl<T> Counted<T> {
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

    /// `io` in a slot of `cap`, as a listener admits a connection from an unknown peer.
    #[cfg(test)]
    pub(super) fn in_cap(io: T, cap: &Arc<Cap>) -> Self {
        Counted {
            io,
            slot: cap.admit(None).expect("a free slot"),
        }
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

crate::core::io::write_through!(Counted);

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
    cap: Arc<Cap>,
    /// The listener's address, for its warnings (both ports share the cap).
    local: String,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// At most one warning a minute about failing accepts, and one about each kind of
    /// refused connection.
    failed: Throttle,
    refused: Throttle,
    refused_peer: Throttle,
}

impl<S> Admitted<S> {
    pub(super) fn new(inner: S, cap: Arc<Cap>) -> Self {
        Self {
            inner,
            cap,
            local: String::new(),
            pause: None,
            failed: Throttle::once_per(ONCE_A_MINUTE),
            refused: Throttle::once_per(ONCE_A_MINUTE),
            refused_peer: Throttle::once_per(ONCE_A_MINUTE),
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
pub(super) fn one_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl<S> Admitted<S> {
    /// Warns of `refusal`, at most once a [`WARN_EVERY`] for each kind.
    fn warn(&mut self, refusal: &Refusal) {
        match refusal {
            Refusal::Full => {
                if let Some(refused) = self.refused.note(Instant::now()) {
                    tracing::warn!(
                        listener = %self.local,
                        max_connections = self.cap.max,
                        refused,
                        "connection limit reached: closing new connections until some close \
                         (raise server.max_connections with the memory limit, or the open-file \
                         limit if the start-up log said it lowers the cap, or add replicas)"
                    );
                }
            }
            Refusal::Peer(peer) => {
                if let Some(refused) = self.refused_peer.note(Instant::now()) {
                    // `refused` counts every address's refusals since the last line;
                    // `latest_peer` is the one refused now.
                    tracing::warn!(
                        listener = %self.local,
                        max_connections_per_peer = self.cap.per_peer,
                        latest_peer = %peer,
                        refused,
                        "one address holds server.max_connections_per_peer connections: \
                         closing its new ones until some close (a client that opens a \
                         connection per call should reuse one; behind a proxy that hides \
                         client addresses, raise the setting)"
                    );
                }
            }
        }
    }
}

impl<S, IO> Stream for Admitted<S>
where
    S: Stream<Item = io::Result<IO>> + Unpin,
    IO: PeerIp,
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
                Some(Ok(io)) => match this.cap.admit(io.peer_ip()) {
                    Ok(slot) => return Poll::Ready(Some(Ok(Counted { io, slot }))),
                    Err(refusal) => {
                        // Closed before anything is read or written.
                        drop(io);
                        crate::metrics::connection_refused();
                        this.warn(&refusal);
                    }
                },
                Some(Err(e)) if !one_connection(&e) => {
                    if let Some(failed) = this.failed.note(Instant::now()) {
                        tracing::warn!(
                            listener = %this.local,
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

    /// A test connection: its number, and the last byte of the 10.0.0.x address it
    /// comes from (`None`: unknown).
    #[derive(Debug, PartialEq)]
    struct Client(u32, Option<u8>);

    impl PeerIp for Client {
        fn peer_ip(&self) -> Option<IpAddr> {
            self.1.map(|b| IpAddr::from([10, 0, 0, b]))
        }
    }

    /// `accepts` (connection numbers, from unknown peers) let in by a cap of `max`.
    fn admitted(
        accepts: Vec<io::Result<u32>>,
        max: usize,
    ) -> Admitted<impl Stream<Item = io::Result<Client>> + Unpin> {
        let accepts = accepts.into_iter().map(|a| a.map(|n| Client(n, None)));
        Admitted::new(tokio_stream::iter(accepts), Arc::new(Cap::new(max, max)))
    }

    #[test]
    fn the_open_files_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95346                95346                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_limit(limits), Some(1024));
        assert_eq!(
            open_files_limit(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(open_files_limit(""), None);
        // This process's own: some limit, and the cap within it.
        let cap = connections_within_the_descriptors(usize::MAX);
        assert!((1..usize::MAX).contains(&cap), "{cap}");
    }

    #[tokio::test]
    async fn accepting_pauses_after_a_resource_error_and_not_after_a_connections_own() {
        let emfile = || Err(io::Error::from_raw_os_error(24));
        let reset = || Err(io::Error::from(io::ErrorKind::ConnectionReset));
        let mut admitted = admitted(vec![Ok(1), emfile(), emfile(), Ok(2), reset(), Ok(3)], 10);
        let started = Instant::now();
        assert_eq!(admitted.next().await.unwrap().unwrap().io.0, 1);
        assert!(admitted.pause.is_none() && !admitted.failed.ever_reported());
        // Two failed accepts: two pauses before the next connection, one warning.
        assert_eq!(admitted.next().await.unwrap().unwrap().io.0, 2);
        assert!(
            started.elapsed() >= 2 * ACCEPT_PAUSE,
            "{:?}",
            started.elapsed()
        );
        assert!(admitted.failed.ever_reported());
        assert_eq!(
            admitted.failed.unreported(),
            1,
            "one failure since the warning"
        );
        // A connection's own failure passes through (tonic skips it) without a pause.
        let failed = admitted.next().await.unwrap().unwrap_err();
        assert_eq!(failed.kind(), io::ErrorKind::ConnectionReset);
        assert!(admitted.pause.is_none());
        assert_eq!(admitted.failed.unreported(), 1);
        assert_eq!(admitted.next().await.unwrap().unwrap().io.0, 3);
        assert!(admitted.next().await.is_none());
    }

    #[tokio::test]
    async fn past_the_cap_a_connection_is_closed_until_one_is_dropped() {
        let mut admitted = admitted((1..=6).map(Ok).collect(), 2);
        let first = admitted.next().await.unwrap().unwrap();
        let second = admitted.next().await.unwrap().unwrap();
        assert_eq!((first.io.0, second.io.0), (1, 2));
        drop(first);
        // 3 takes the freed slot; 4, 5 and 6 find none and are closed.
        let third = admitted.next().await.unwrap().unwrap();
        assert_eq!(third.io.0, 3);
        assert!(admitted.next().await.is_none());
        assert!(admitted.refused.ever_reported());
        assert_eq!(
            admitted.refused.unreported(),
            2,
            "one warning, two refusals since"
        );
        assert_eq!(admitted.cap.available(), 0);
        drop((second, third));
        assert_eq!(admitted.cap.available(), 2);
    }

    #[tokio::test]
    async fn one_address_gets_its_share_of_the_cap_and_no_more() {
        // A cap of 4, 2 from one address: 10.0.0.1 opens 1, 2, 3 (refused), then
        // 10.0.0.2 opens 4, 5 (its share), and 6 finds the cap full.
        let peers = [1, 1, 1, 2, 2, 3];
        let accepts = (1..=6).zip(peers).map(|(n, p)| Ok(Client(n, Some(p))));
        let cap = Arc::new(Cap::new(4, 2));
        let mut admitted = Admitted::new(tokio_stream::iter(accepts), cap.clone());
        let mut open = Vec::new();
        while let Some(conn) = admitted.next().await {
            open.push(conn.unwrap());
        }
        let ids: Vec<u32> = open.iter().map(|c| c.io.0).collect();
        assert_eq!(ids, [1, 2, 4, 5]);
        assert_eq!(cap.available(), 0);
        assert_eq!(admitted.refused_peer.unreported(), 0, "warned of the first");
        assert!(admitted.refused_peer.ever_reported());
        // The refusal of 6 was the whole cap's, not its address's (it had none open).
        assert!(admitted.refused.ever_reported());
        // Closing one of 10.0.0.1's gives back its share and a slot; once all close,
        // no address is left counted.
        open.remove(0);
        assert_eq!(cap.available(), 1);
        assert_eq!(cap.peers().get(&IpAddr::from([10, 0, 0, 1])), Some(&1));
        assert!(cap.admit(Some(IpAddr::from([10, 0, 0, 1]))).is_ok());
        drop(open);
        assert!(cap.peers().is_empty(), "{:?}", cap.peers());
        assert_eq!(cap.available(), 4);
        // An address refused by the full cap is not counted as holding a connection.
        let full = Cap::new(0, 2);
        let full = Arc::new(full);
        assert_eq!(
            full.admit(Some(IpAddr::from([10, 0, 0, 9]))).unwrap_err(),
            Refusal::Full
        );
        assert!(full.peers().is_empty());
    }

    #[test]
    fn a_client_is_its_ipv4_address_or_its_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            client_of(ip("2001:db8:1:2::5"))
        );
        assert_ne!(
            client_of(ip("2001:db8:1:3::1")),
            client_of(ip("2001:db8:1:2::1"))
        );
        assert_eq!(client_of(ip("::1")), ip("::"));
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
