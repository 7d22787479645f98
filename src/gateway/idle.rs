//! Closing gateway connections that sit idle.
//!
//! hyper bounds an idle HTTP/1.1 connection (`header_read_timeout` runs between
//! requests), but neither a new connection before hyper has told HTTP/1.1 from HTTP/2
//! (one that sends nothing, or half of HTTP/2's preface) nor an HTTP/2 one: a client
//! that answers PINGs and sends nothing holds its connection, and a slot of
//! `server.max_connections`, for good. Each gateway
//! connection counts its requests in flight ([`Tracked`]); its socket ([`Idle`]) reports
//! a timeout on the connection's next read once no request has been in flight for
//! `http.header_read_timeout`, and hyper closes it. HTTP/2 always has a read pending, so
//! the timer wakes it when due.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connection's requests in flight, and when the last one started or ended.
#[derive(Debug)]
pub(super) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the last start or end of a request.
    last_ms: AtomicU64,
    opened: Instant,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            opened: Instant::now(),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request started; the returned guard ends it when dropped (answered, or given
    /// up by the client).
    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// When the connection is due to be closed if nothing happens before, and whether a
    /// request is in flight now.
    fn due(&self, limit: Duration) -> (Instant, bool) {
        let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        (last + limit, self.in_flight.load(Ordering::Relaxed) > 0)
    }
}

/// One request in flight.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's service, counting its requests in [`Activity`].
#[derive(Clone)]
pub(super) struct Tracked<S> {
    pub(super) inner: S,
    pub(super) activity: Arc<Activity>,
}

impl<S, R> tower::Service<R> for Tracked<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let in_flight = self.activity.start();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(in_flight);
            response
        })
    }
}

/// A gateway connection's socket, failing its reads once the connection has been idle
/// for `limit`.
pub(super) struct Idle<IO> {
    io: IO,
    activity: Arc<Activity>,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<IO> Idle<IO> {
    pub(super) fn new(io: IO, activity: Arc<Activity>, limit: Duration) -> Self {
        let timer = Box::pin(tokio::time::sleep(limit));
        Self {
            io,
            activity,
            limit,
            timer,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Idle<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Polled first, so that the timer wakes the connection when it is due; re-armed
        // to the last activity's deadline (or a full period on while a request runs).
        while this.timer.as_mut().poll(cx).is_ready() {
            let (due, busy) = this.activity.due(this.limit);
            let now = Instant::now();
            if !busy && now >= due {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle for http.header_read_timeout",
                )));
            }
            let next = if busy { now + this.limit } else { due };
            this.timer.as_mut().reset(next);
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

crate::core::io::write_through!(Idle);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn due_follows_the_last_request_and_waits_while_one_runs() {
        let activity = Activity::new();
        let limit = Duration::from_secs(10);
        let (due, busy) = activity.due(limit);
        assert!(!busy);
        assert_eq!(due, activity.opened + limit);
        let request = activity.start();
        assert!(activity.due(limit).1, "busy while a request runs");
        tokio::time::sleep(Duration::from_millis(60)).await;
        drop(request);
        let (due, busy) = activity.due(limit);
        assert!(!busy);
        assert!(
            due >= activity.opened + Duration::from_millis(60) + limit,
            "counted from the request's end"
        );
    }
}
