//! Graceful shutdown, step by step: the signal arrives; health turns NOT_SERVING (so
//! load balancers and probes stop sending traffic); the listener stops accepting;
//! in-flight calls finish, for at most `server.shutdown_grace` (a second signal ends
//! the grace at once); then every task the server spawned is stopped.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::readiness::Health;

/// Stop signals, counted: the first begins the drain, a second cuts it short (an
/// operator who pressed Ctrl-C twice, or sent SIGTERM again, wants the process gone,
/// not a wait of up to `server.shutdown_grace`).
#[derive(Debug, Clone)]
pub struct StopSignals {
    count: watch::Receiver<u32>,
}

/// Sends stop signals to the [`StopSignals`] it was made with.
#[derive(Debug)]
pub struct StopSender(watch::Sender<u32>);

impl StopSender {
    /// One more stop signal.
    pub fn signal(&self) {
        self.0.send_modify(|count| *count += 1);
    }
}

impl StopSignals {
    /// Signals sent by hand (tests, an embedding program).
    pub fn manual() -> (StopSender, Self) {
        let (tx, count) = watch::channel(0);
        (StopSender(tx), Self { count })
    }

    /// SIGTERM (Kubernetes' stop signal) and SIGINT (Ctrl-C), each counted; a platform
    /// without them has Ctrl-C only. Listens from the call on, on the current runtime.
    pub fn from_os() -> Self {
        let (tx, signals) = Self::manual();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    tracing::warn!("cannot listen for SIGTERM and SIGINT; stop with SIGKILL");
                    return;
                };
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    tx.signal();
                }
            }
            #[cfg(not(unix))]
            while tokio::signal::ctrl_c().await.is_ok() {
                tx.signal();
            }
        });
        signals
    }

    /// Completes at the `nth` signal; never, once no more can come before it.
    async fn nth(mut self, nth: u32) {
        if self.count.wait_for(|count| *count >= nth).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes at the first signal.
    pub async fn first(self) {
        self.nth(1).await;
    }

    /// Completes at the second signal.
    pub async fn second(self) {
        self.nth(2).await;
    }
}

/// Where shutdown is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Serving,
    /// Health is NOT_SERVING, the listeners closed, calls finishing.
    Draining,
    /// The grace is over, or was cut short: calls still running are closed.
    Ended,
}

/// Fans one shutdown signal out to the transport, the drain timer and the tasks.
#[derive(Debug, Clone)]
pub(super) struct Shutdown {
    rx: watch::Receiver<Stage>,
    /// Set by the first core past the grace, which reports the calls it cuts.
    grace_reported: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Shutdown {
    /// Waits for `signal`, turns health NOT_SERVING, then tells every subscriber; ends
    /// the drain `grace` later, or at `cut_short` if that comes first.
    pub(super) fn start(
        signal: impl Future<Output = ()> + Send + 'static,
        cut_short: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
        health: Health,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = watch::channel(Stage::Serving);
        let trigger = async move {
            signal.await;
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            // The grace's clock starts with the drain, whatever health's stop takes.
            let grace_over = tokio::time::sleep(grace);
            health.stop().await;
            // A receiver sees the last stage even after the sender is gone.
            let _ = tx.send(Stage::Draining);
            tokio::select! {
                () = grace_over => {}
                () = cut_short => tracing::warn!(
                    "a second stop signal: the drain is cut short (calls still running \
                     are closed, store steps abandoned)"
                ),
            }
            let _ = tx.send(Stage::Ended);
        };
        (
            Self {
                rx,
                grace_reported: std::sync::Arc::default(),
            },
            trigger,
        )
    }

    async fn reached(mut self, stage: Stage) {
        let _ = self.rx.wait_for(|now| *now >= stage).await;
    }

    /// Completes once shutdown has begun (or its trigger is gone).
    pub(super) async fn begun(self) {
        self.reached(Stage::Draining).await;
    }

    /// Completes when the drain ends: `server.shutdown_grace` after shutdown began, or
    /// at a second signal; calls still running are then cut off.
    pub(super) async fn grace_over(self) {
        self.reached(Stage::Ended).await;
    }

    /// Whether this is the first caller since the service started: the one core that
    /// reports the end of the grace for all.
    pub(super) fn first_to_report_grace(&self) -> bool {
        !self
            .grace_reported
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }
}

/// The health service, whose `Watch` streams end (UNAVAILABLE) once shutdown has begun
/// and they have sent NOT_SERVING: a client that keeps watching would otherwise hold
/// the drain for the whole `shutdown_grace`, as every gRPC client with client-side
/// health checking does.
#[derive(Clone)]
pub(super) struct EndWatches<S> {
    inner: S,
    shutdown: Shutdown,
}

impl<S> EndWatches<S> {
    pub(super) fn new(inner: S, shutdown: Shutdown) -> Self {
        Self { inner, shutdown }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for EndWatches<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for EndWatches<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let watch = request.uri().path().ends_with("/Watch");
        let shutdown = self.shutdown.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            if !watch {
                return Ok(response);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(UntilShutdown {
                    inner: body,
                    begun: Box::pin(shutdown.begun()),
                    stopping: false,
                    done: false,
                })
            }))
        })
    }
}

/// A `Watch` response that ends after shutdown begins, once its pending messages
/// (NOT_SERVING) are out.
struct UntilShutdown {
    inner: tonic::body::Body,
    begun: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    stopping: bool,
    done: bool,
}

impl http_body::Body for UntilShutdown {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if !self.stopping && self.begun.as_mut().poll(cx).is_ready() {
            self.stopping = true;
        }
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending if self.stopping => {
                self.done = true;
                let status = tonic::Status::unavailable(
                    "the server is shutting down; watch another replica",
                );
                let mut trailers = http::HeaderMap::new();
                let frame = match status.add_header(&mut trailers) {
                    Ok(()) => http_body::Frame::trailers(trailers),
                    Err(e) => return Poll::Ready(Some(Err(e))),
                };
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    /// The inner body's: an answer that ends at once (a refused Watch, its status in
    /// the headers) must say so, or HTTP/2 sends its headers without END_STREAM and an
    /// empty DATA frame after them, which gRPC's C core takes for a broken stream.
    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `future` has completed after the runtime ran everything ready.
    async fn completes(future: impl Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::from_millis(20), future)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_first_signal_begins_and_the_second_cuts_short() {
        let (tx, signals) = StopSignals::manual();
        assert!(!completes(signals.clone().first()).await);
        tx.signal();
        assert!(completes(signals.clone().first()).await);
        assert!(!completes(signals.clone().second()).await);
        tx.signal();
        assert!(completes(signals.clone().second()).await);
    }

    #[tokio::test]
    async fn no_signal_comes_once_the_sender_is_gone() {
        let (tx, signals) = StopSignals::manual();
        tx.signal();
        drop(tx);
        assert!(completes(signals.clone().first()).await);
        assert!(
            !completes(signals.second()).await,
            "a lost sender is no signal"
        );
    }
}
