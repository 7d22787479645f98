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

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
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

    /// `listener`'s connections with these options (the gRPC port; the gateway with TLS).
    pub(super) fn incoming(self, listener: TcpListener) -> TcpIncoming {
        TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(self.idle))
            .with_keepalive_interval(Some(self.every))
            .with_keepalive_retries(Some(self.probes))
    }

    /// Sets these options on one accepted `stream` (the gateway without TLS). A failure
    /// leaves the connection as the kernel made it: served, and logged.
    pub(super) fn apply(self, stream: &TcpStream) {
        let socket = socket2::SockRef::from(stream);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(self.idle)
            .with_interval(self.every)
            .with_retries(self.probes);
        if let Err(e) = socket
            .set_tcp_nodelay(true)
            .and_then(|()| socket.set_tcp_keepalive(&keepalive))
        {
            tracing::warn!(error = %e, "could not set TCP_NODELAY or keepalive on a connection");
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
    use super::keepalive_probes;
    use std::time::Duration;

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
