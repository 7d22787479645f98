//! One thread per CPU, each with its own single-threaded runtime, and the connections
//! of every listener dealt to them in turn: a connection, its calls and everything
//! they allocate stay on one thread.
//!
//! Why not one multi-threaded runtime for everything: its idle worker steals the
//! busy one's tasks, and a stolen call then works on its connection's state (the
//! HTTP/2 stream store, the write buffer, memory the other core allocated) from the
//! other core. Whether that happens depended on how a run's connections happened to
//! land on the workers; when it did, a call cost about 40 % more CPU (GrantWrite
//! 18.5 µs against 13.1 µs per call, BENCHMARKS.md). Dealing connections in turn gives
//! each core the same share from the start.
//!
//! What it gives up: one connection's calls no longer spread over several cores. That
//! was measured to buy little (one HTTP/2 connection with 64 calls in flight: about
//! 52,000 GrantRead calls/s with two workers, about 50,000 with one), because the
//! connection's own task (reading and writing every frame) is the serial part.
//!
//! Each thread is also held to a CPU of its own when the process may use exactly as
//! many CPUs as it has threads ([`cpus`], `server.pin_cores`): left to itself, the
//! kernel sometimes ran both on one CPU for milliseconds while the other ran something
//! else, and every call on their connections waited (p99 at half load 0.35–2.4 ms on
//! two CPUs shared with the load tool, held 0.30–0.69 ms; BENCHMARKS.md).
//!
//! Listeners, background tasks, the metrics endpoint and the exporters stay on the
//! runtime that called [`crate::server::run`]; it only accepts connections and hands
//! them over.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt as _};

use super::socket::Counted;

/// Why serving on a core stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The core's thread or runtime could not start.
    #[error("cannot start serving thread {index}: {source}")]
    Start {
        /// Which core.
        index: usize,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The core's thread ended without reporting (it panicked).
    #[error("serving thread {index} stopped unexpectedly")]
    Lost {
        /// Which core.
        index: usize,
    },
}

/// How many serving threads: `TOKIO_WORKER_THREADS` when set (as for tokio's own
/// runtimes), else the CPUs this process may use (its affinity and cgroup quota).
pub(super) fn count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// The CPU each serving thread is held to (`server.pin_cores`), by thread; `None`: the
/// kernel places them. `allowed` is the CPUs the process may use, in order.
///
/// Unset, threads are held only when there are exactly as many CPUs as threads: then
/// each gets one of its own and no CPU the process could use is given up. With more
/// CPUs than threads the process is likely under a CPU quota on a shared node, where
/// holding its threads to the first few CPUs would crowd them with other pods'.
fn placement(allowed: &[usize], threads: usize, pin: Option<bool>) -> Option<Vec<usize>> {
    let hold = match pin {
        Some(hold) => hold,
        None => threads > 1 && allowed.len() == threads,
    };
    (hold && !allowed.is_empty())
        .then(|| (0..threads).map(|i| allowed[i % allowed.len()]).collect())
}

/// The CPU each of `threads` serving threads is held to, by [`placement`] over the
/// CPUs this process may use; `None` when they are left to the kernel, also when
/// those CPUs cannot be read (said on the log).
pub(super) fn cpus(threads: usize, pin: Option<bool>) -> Option<Vec<usize>> {
    match allowed_cpus() {
        Ok(allowed) => placement(&allowed, threads, pin),
        Err(error) => {
            tracing::warn!(%error, "cannot read the CPUs this process may use; the kernel places the serving threads");
            None
        }
    }
}

/// The CPUs this process may use (its affinity, as the calling thread has it), in order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

/// Holds the calling thread to `cpu`.
fn hold_to(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// A connection between the listener and its core: the socket is taken off the
/// accepting runtime's reactor so that the core's runtime can register it.
pub(super) type Handed = Counted<std::net::TcpStream>;

/// Hands accepted connections to the cores in turn.
pub(super) struct Dealer {
    cores: Vec<mpsc::UnboundedSender<Handed>>,
    next: usize,
}

/// One core's share of a listener's connections: a stream of them, registered with
/// the runtime that polls it. It ends when the dealer is gone.
pub(super) struct Inbox {
    rx: mpsc::UnboundedReceiver<Handed>,
}

/// A dealer for `n` cores and each core's inbox.
pub(super) fn deal(n: usize) -> (Dealer, Vec<Inbox>) {
    let (cores, inboxes) = (0..n.max(1))
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            (tx, Inbox { rx })
        })
        .unzip();
    (Dealer { cores, next: 0 }, inboxes)
}

impl Dealer {
    /// Gives `connection` to the next core. A core that has stopped (shutdown) closes
    /// it, by dropping it.
    fn hand(&mut self, connection: Handed) {
        let core = self.next % self.cores.len();
        self.next = self.next.wrapping_add(1);
        let _ = self.cores[core].send(connection);
    }

    /// Deals the connections of `incoming` until `stop` completes or `incoming` ends.
    /// A failed accept was logged and paced by the listener; a connection whose
    /// socket cannot leave this runtime is closed.
    pub(super) async fn run<S>(mut self, incoming: S, stop: impl Future<Output = ()>)
    where
        S: Stream<Item = io::Result<Counted<tokio::net::TcpStream>>>,
    {
        let mut incoming = std::pin::pin!(incoming);
        let mut stop = std::pin::pin!(stop);
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                () = &mut stop => return,
            };
            match next {
                Some(Ok(connection)) => {
                    if let Ok(handed) = connection.try_map(tokio::net::TcpStream::into_std) {
                        self.hand(handed);
                    }
                }
                Some(Err(_)) => {}
                None => return,
            }
        }
    }
}

impl Stream for Inbox {
    type Item = io::Result<Counted<tokio::net::TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|handed| handed.map(|h| h.try_map(tokio::net::TcpStream::from_std)))
    }
}

/// The serving threads, started by [`start`].
pub(super) struct Cores<E> {
    done: Vec<oneshot::Receiver<Result<(), E>>>,
}

/// Starts one thread per item of `inboxes`, each with a single-threaded runtime that
/// runs `serve(its item)` to completion. `serve` builds its future on the core's own
/// thread, so that everything it spawns stays there. With `cpus` (from [`cpus`]),
/// thread `i` first holds itself to `cpus[i]`; one that cannot (a sandbox that refuses
/// the call) says so and serves wherever the kernel puts it.
///
/// # Errors
/// A thread or runtime that cannot start; the threads already started then stop
/// when their inboxes close.
pub(super) fn start<I, F, Fut, E>(
    inboxes: Vec<I>,
    cpus: Option<&[usize]>,
    serve: F,
) -> Result<Cores<E>, Error>
where
    I: Send + 'static,
    F: Fn(I) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Result<(), E>> + 'static,
    E: Send + 'static,
{
    let mut done = Vec::with_capacity(inboxes.len());
    for (index, inbox) in inboxes.into_iter().enumerate() {
        let runtime = runtime().map_err(|source| Error::Start { index, source })?;
        let (tx, rx) = oneshot::channel();
        let serve = serve.clone();
        let cpu = cpus.and_then(|cpus| cpus.get(index).copied());
        std::thread::Builder::new()
            .name(format!("storage-grants-core-{index}"))
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(error) = hold_to(cpu)
                {
                    tracing::warn!(thread = index, cpu, %error, "cannot hold a serving thread to its CPU; the kernel places it");
                }
                let result = runtime.block_on(serve(inbox));
                // Dropping the runtime stops whatever the calls left running, before
                // the server reports that it has stopped.
                drop(runtime);
                let _ = tx.send(result);
            })
            .map_err(|source| Error::Start { index, source })?;
        done.push(rx);
    }
    Ok(Cores { done })
}

impl<E: From<Error> + Send + 'static> Cores<E> {
    /// Completes when every core has finished serving.
    ///
    /// The first core to fail (its serving ended with an error, or its thread
    /// panicked) calls `on_failure` with its error at once, which is to stop the
    /// others: a core that no longer serves leaves every n-th connection unanswered,
    /// so the process must not go on serving with it gone. The others then drain as
    /// at any shutdown, and this completes when they have.
    ///
    /// # Errors
    /// The first core's error, or a core whose thread ended without finishing (a
    /// panic).
    pub(super) async fn finished(self, on_failure: impl FnOnce(&E)) -> Result<(), E> {
        let mut cores = tokio::task::JoinSet::new();
        for (index, done) in self.done.into_iter().enumerate() {
            cores.spawn(async move { done.await.unwrap_or(Err(E::from(Error::Lost { index }))) });
        }
        let mut on_failure = Some(on_failure);
        let mut result = Ok(());
        while let Some(outcome) = cores.join_next().await {
            // The waiting tasks neither panic nor are aborted.
            let Ok(Err(error)) = outcome else { continue };
            if let Some(stop_the_others) = on_failure.take() {
                stop_the_others(&error);
            }
            if result.is_ok() {
                result = Err(error);
            }
        }
        result
    }
}

/// A core's runtime: single-threaded, so a task woken by the running one runs after
/// the tasks already ready (its queue is first in, first out), which lets a
/// connection's task write the answers of every call that finished in one `send`
/// (BENCHMARKS.md).
pub(crate) fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::super::socket::Cap;
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// A connection's client end, and its server end as the dealer is handed it.
    async fn pair(listener: &TcpListener, cap: &std::sync::Arc<Cap>) -> (TcpStream, Handed) {
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        let handed = Counted::in_cap(server, cap)
            .try_map(TcpStream::into_std)
            .expect("into_std");
        (client.expect("connect"), handed)
    }

    #[tokio::test]
    async fn connections_are_dealt_to_the_cores_in_turn() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let cap = std::sync::Arc::new(Cap::new(16, 16));
        let (mut dealer, mut inboxes) = deal(3);
        let mut sent = Vec::new();
        // Kept open to the end, so that every server end still has its peer.
        let mut clients = Vec::new();
        for _ in 0..7 {
            let (client, handed) = pair(&listener, &cap).await;
            sent.push(handed.get().peer_addr().expect("peer").port());
            clients.push(client);
            dealer.hand(handed);
        }
        assert_eq!(cap.available(), 16 - 7);
        drop(dealer);
        let mut received = Vec::new();
        for inbox in &mut inboxes {
            let mut got = Vec::new();
            while let Some(connection) = inbox.next().await {
                let connection = connection.expect("registered on this runtime");
                got.push(connection.get().peer_addr().expect("peer").port());
            }
            received.push(got);
        }
        // In turn: the first, fourth and seventh to the first core, and so on.
        let expected: Vec<Vec<u16>> = (0..3)
            .map(|core| sent.iter().copied().skip(core).step_by(3).collect())
            .collect();
        assert_eq!(received, expected);
        // Each connection kept its slot of the cap until it was dropped here.
        assert_eq!(cap.available(), 16);
    }

    #[derive(Debug, PartialEq)]
    enum Failed {
        Serving(usize),
        Core(String),
    }

    impl From<Error> for Failed {
        fn from(error: Error) -> Self {
            Failed::Core(error.to_string())
        }
    }

    /// One core failing while the others serve on stops them at once, and its error
    /// is the one reported; a core whose thread panics counts as failed too.
    #[tokio::test]
    async fn the_first_core_to_fail_stops_the_others() {
        for failing in [1, 2] {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let cores = start(vec![0usize, 1, 2], None, move |index| {
                let mut stopped = stopped.clone();
                async move {
                    match (index, failing) {
                        (1, 1) => return Err(Failed::Serving(1)),
                        (2, 2) => panic!("core 2 panics (expected in this test)"),
                        _ => {}
                    }
                    // Serving until told to stop, like a core before shutdown.
                    let _ = stopped.wait_for(|stop| *stop).await;
                    Ok(())
                }
            })
            .expect("start");
            let result = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                cores.finished(move |_| {
                    let _ = stop.send(true);
                }),
            )
            .await
            .expect("the failure stopped the cores still serving");
            let want = match failing {
                1 => Failed::Serving(1),
                _ => Failed::Core("serving thread 2 stopped unexpectedly".into()),
            };
            assert_eq!(result, Err(want));
        }
    }

    /// Cores that all finish (at shutdown) finish without calling the failure path.
    #[tokio::test]
    async fn cores_that_finish_report_success() {
        let cores =
            start(vec![0usize, 1], None, |_| async { Ok::<(), Failed>(()) }).expect("start");
        let mut called = false;
        let result = cores.finished(|_| called = true).await;
        assert_eq!(result, Ok(()));
        assert!(!called);
    }

    /// Unset, threads are held to CPUs only when each can have one of its own and no
    /// CPU is left out; `true` holds them in any case (in turn over fewer CPUs), `false`
    /// never.
    #[test]
    fn threads_are_held_to_cpus_of_their_own_only_when_they_fit_exactly() {
        // A host or exclusive CPUs of its own: one CPU each, in the set's order.
        assert_eq!(placement(&[2, 5], 2, None), Some(vec![2, 5]));
        // A CPU quota on a larger node: the kernel places them.
        assert_eq!(placement(&[0, 1, 2, 3], 2, None), None);
        // More threads than CPUs (TOKIO_WORKER_THREADS), and one thread: left alone.
        assert_eq!(placement(&[0, 1], 4, None), None);
        assert_eq!(placement(&[3], 1, None), None);
        assert_eq!(placement(&[0, 1, 2, 3], 2, Some(true)), Some(vec![0, 1]));
        assert_eq!(placement(&[0, 1], 3, Some(true)), Some(vec![0, 1, 0]));
        assert_eq!(placement(&[0, 1], 2, Some(false)), None);
        assert_eq!(placement(&[], 2, Some(true)), None);
    }

    /// A started thread runs on the CPU it was given, and only there.
    #[tokio::test]
    async fn each_thread_holds_itself_to_its_cpu() {
        let allowed = allowed_cpus().expect("affinity");
        let cpus = [*allowed.last().expect("a CPU"), allowed[0]];
        let (tx, rx) = std::sync::mpsc::channel();
        let cores = start(vec![0usize, 1], Some(&cpus), move |index| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((index, allowed_cpus().expect("affinity")));
                Ok::<(), Failed>(())
            }
        })
        .expect("start");
        assert_eq!(cores.finished(|_| {}).await, Ok(()));
        let mut seen: Vec<_> = rx.try_iter().collect();
        seen.sort();
        assert_eq!(seen, vec![(0, vec![cpus[0]]), (1, vec![cpus[1]])]);
    }

    /// What the service's throughput rests on: a task woken by the running one (a call
    /// waking its connection's task) runs after the tasks already ready (the other
    /// calls), not before them, as with a multi-threaded runtime's LIFO slot.
    #[test]
    fn a_woken_task_runs_after_the_tasks_already_ready() {
        use std::sync::{Arc, Mutex};
        let runtime = runtime().expect("runtime");
        let order = Arc::new(Mutex::new(Vec::new()));
        let (wake, woken) = oneshot::channel::<()>();
        runtime.block_on(async {
            let log = order.clone();
            let waiter = tokio::spawn(async move {
                woken.await.expect("sender kept");
                log.lock().expect("lock").push("woken");
            });
            // Queued before the task below, so it runs first and parks on its channel.
            let log = order.clone();
            tokio::spawn(async move {
                let ready: Vec<_> = (0..3)
                    .map(|i| {
                        let log = log.clone();
                        tokio::spawn(
                            async move { log.lock().expect("lock").push(["a", "b", "c"][i]) },
                        )
                    })
                    .collect();
                wake.send(()).expect("waiter alive");
                drop(ready);
            })
            .await
            .expect("spawner");
            waiter.await.expect("waiter");
        });
        let order = order.lock().expect("lock").clone();
        assert_eq!(order.last(), Some(&"woken"), "order: {order:?}");
        assert_eq!(order.len(), 4, "order: {order:?}");
    }
}
