//! Serving a core's gRPC connections one by one, so that each is sent away at an age
//! of its own.
//!
//! tonic's server sends every connection it serves away at one `max_connection_age`,
//! counted from when each opened: connections opened together (a rollout, a fleet of
//! clients started at once) would all get their GOAWAY together, and all their
//! clients reconnect at once, at every age. Here each connection is served by a
//! tonic server of its own, whose shutdown signal is that connection's own age
//! ([`Conn::send_away_at`]) or the service's shutdown, whichever comes first: tonic
//! then sends the GOAWAY, lets the calls in flight finish and closes the connection,
//! as it does for a shutdown. (tonic's `max_connection_age_grace` is not used for the
//! clients that never leave: in tonic 0.14 it skips the GOAWAY and cuts calls in
//! flight; `Conn` closes those itself, its drain after the age.) A server per
//! connection costs a task and a copy of the router's handles when the connection
//! opens, nothing per call.

use std::future::Future;
use std::pin::pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, Router};

use super::Error;
use super::layers::{Conn, Transport};
use super::shutdown::Shutdown;

/// Serves every connection of `incoming` until it is sent away or shutdown begins;
/// once shutdown has begun, stops taking connections and returns when those it has
/// are closed. A connection whose server fails ends this with that failure.
pub(super) async fn serve<IO>(
    router: Router<Transport>,
    incoming: impl Stream<Item = std::io::Result<Conn<IO>>>,
    stop: Shutdown,
) -> Result<(), Error>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    let mut served = JoinSet::new();
    {
        let mut incoming = pin!(incoming);
        let mut begun = pin!(stop.clone().begun());
        loop {
            tokio::select! {
                () = &mut begun => break,
                Some(done) = served.join_next(), if !served.is_empty() => finished(done)?,
                next = incoming.next() => match next {
                    Some(Ok(mut conn)) => {
                        // The server ends once its connection is closed, whoever closed it.
                        let leave = leave(
                            conn.send_away_at(),
                            conn.unused(),
                            conn.closed(),
                            stop.clone(),
                        );
                        // One connection, then nothing: an ended stream would stop the
                        // server, and it with the connection, at once.
                        let one = tokio_stream::once(Ok::<_, std::io::Error>(conn))
                            .chain(tokio_stream::pending());
                        served.spawn(router.clone().serve_with_incoming_shutdown(one, leave));
                    }
                    // The sockets below report their own failures (and skip them).
                    Some(Err(error)) => tracing::debug!(%error, "connection not served"),
                    None => break,
                },
            }
        }
    }
    while let Some(done) = served.join_next().await {
        finished(done)?;
    }
    Ok(())
}

/// Completes when a connection's server is to stop: at `at` (its age), when it has
/// proved `unused`, when shutdown begins, or once the connection is `closed` (tonic's
/// server outlives the connections it serves, and would otherwise wait for a signal
/// that may never come).
async fn leave(
    at: Option<tokio::time::Instant>,
    unused: impl Future<Output = ()>,
    closed: impl Future<Output = ()>,
    stop: Shutdown,
) {
    let aged = async {
        match at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = aged => {}
        () = unused => {}
        () = closed => {}
        () = stop.begun() => {}
    }
}

/// A connection's server's end: its failure, or its panic carried on.
fn finished(
    done: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), Error> {
    match done {
        Ok(result) => Ok(result?),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        // Aborted: only when this core's runtime stops, after the grace.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::layers::{self, ConnLimits};
    use super::super::test_settings;
    use super::*;
    use crate::readiness::Health;

    fn router() -> Router<Transport> {
        let settings = test_settings("listen = \"127.0.0.1:0\"\n");
        let (_, health) = tonic_health::server::health_reporter();
        layers::transport(&settings).add_service(health)
    }

    fn limits(age: Option<Duration>) -> ConnLimits {
        ConnLimits {
            calls: 8,
            open_within: Duration::from_secs(5),
            age,
            drain: Duration::from_secs(1),
            client_certs: false,
        }
    }

    /// A shutdown that has not begun, and stays so while the returned trigger lives.
    async fn not_stopping() -> (Shutdown, impl Future<Output = ()>) {
        let (reporter, _) = tonic_health::server::health_reporter();
        Shutdown::start(
            std::future::pending(),
            std::future::pending(),
            Duration::from_secs(60),
            Health::new(reporter).await,
        )
    }

    /// tonic's server outlives the connections it serves; each connection's server
    /// must end with its connection, or every connection ever opened would leave a
    /// server behind (with no age set, for good).
    #[tokio::test]
    async fn each_connections_server_ends_with_its_connection() {
        let (stop, _trigger) = not_stopping().await;
        let (mut clients, mut conns) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let (client, server) = tokio::io::duplex(4096);
            clients.push(client);
            conns.push(Ok(Conn::new(server, limits(None))));
        }
        let serving = tokio::spawn(serve(router(), tokio_stream::iter(conns), stop));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!serving.is_finished(), "returned with its connections open");
        drop(clients);
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("every connection's server ended once its connection closed")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_connection_is_left_at_its_age_unused_when_it_closes_or_when_shutdown_begins() {
        let soon = || Some(tokio::time::Instant::now() + Duration::from_millis(50));
        let (stop, _trigger) = not_stopping().await;
        let mut conn = Conn::new((), limits(None));

        // Open, young, no shutdown: stays.
        let stays = leave(None, std::future::pending(), conn.closed(), stop.clone());
        assert!(
            tokio::time::timeout(Duration::from_millis(200), stays)
                .await
                .is_err()
        );
        // At its age.
        let aged = leave(soon(), std::future::pending(), conn.closed(), stop.clone());
        tokio::time::timeout(Duration::from_secs(2), aged)
            .await
            .expect("left at its age");
        // Once it proved unused.
        let unused = leave(None, std::future::ready(()), conn.closed(), stop.clone());
        tokio::time::timeout(Duration::from_secs(2), unused)
            .await
            .expect("left unused");
        // Once it is closed.
        let closed = leave(None, std::future::pending(), conn.closed(), stop.clone());
        drop(conn);
        tokio::time::timeout(Duration::from_secs(2), closed)
            .await
            .expect("left once closed");
        // When shutdown begins.
        let (begin, signal) = tokio::sync::oneshot::channel::<()>();
        let (reporter, _) = tonic_health::server::health_reporter();
        let (stopping, trigger) = Shutdown::start(
            async {
                let _ = signal.await;
            },
            std::future::pending(),
            Duration::from_secs(60),
            Health::new(reporter).await,
        );
        tokio::spawn(trigger);
        let mut open = Conn::new((), limits(None));
        let shut = leave(None, std::future::pending(), open.closed(), stopping);
        begin.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), shut)
            .await
            .expect("left when shutdown began");
    }
}
