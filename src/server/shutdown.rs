//! Graceful shutdown, step by step: the signal arrives; health turns NOT_SERVING (so
//! load balancers and probes stop sending traffic); the listener stops accepting;
//! in-flight calls finish, for at most `server.shutdown_grace`; then every task the
//! server spawned is stopped.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::readiness::Health;

/// Fans one shutdown signal out to the transport, the drain timer and the tasks.
#[derive(Debug, Clone)]
pub(super) struct Shutdown {
    rx: watch::Receiver<bool>,
    /// Set by the first core past the grace, which reports the calls it cuts.
    grace_reported: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Shutdown {
    /// Waits for `signal`, turns health NOT_SERVING, then tells every subscriber.
    pub(super) fn start(
        signal: impl Future<Output = ()> + Send + 'static,
        health: Health,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = watch::channel(false);
        let trigger = async move {
            signal.await;
            tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
            health.stop().await;
            // A receiver sees `true` even after the sender is gone.
            let _ = tx.send(true);
        };
        (
            Self {
                rx,
                grace_reported: std::sync::Arc::default(),
            },
            trigger,
        )
    }

    /// Completes once shutdown has begun (or its trigger is gone).
    pub(super) async fn begun(mut self) {
        let _ = self.rx.wait_for(|stopping| *stopping).await;
    }

    /// Completes `grace` after shutdown began: when in-flight calls are cut off.
    pub(super) async fn grace_over(self, grace: Duration) {
        self.begun().await;
        tokio::time::sleep(grace).await;
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
