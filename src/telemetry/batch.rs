//! A log destination written in batches by a thread of its own.
//!
//! A call appends its line to a shared buffer and goes on; every [`FLUSH_EVERY`] the
//! writer thread takes the whole buffer and writes it with one `write(2)`. Nothing on
//! the call's path waits on the destination or wakes another thread: a queue that
//! wakes its consumer per line (tracing-appender's) cost a futex wake and a context
//! switch per grant, which on a busy two-core machine made grants slower than writing
//! inline.
//!
//! Nothing appended ever blocks. Audit lines are lossless: a write that fails (a full
//! disk, a pipe whose reader is gone) keeps its bytes and is tried again, a short write
//! goes on from where it stopped (no line is torn), and once an audit destination is
//! [`MAX_BUFFERED`] bytes behind or has failed for [`HOLD_AFTER_FAILING`], it holds new
//! calls back at their door ([`BACKLOG`]) until it catches up. Log lines (not audit
//! events) are dropped past four times that, and counted, and so are they when a pipe's
//! reader is gone: a destination that stopped reading must not grow the process
//! without end. [`Flusher::finish`] writes what is buffered within a deadline.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core::throttle::Throttle;
use crate::grant::audit::BACKLOG;

/// How long a line may wait in the buffer.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Past this, the writer is woken early.
const HIGH_WATER: usize = 1024 * 1024;
/// Past this many bytes not yet written, an audit destination holds new calls back:
/// about 25,000 audit lines.
pub(super) const MAX_BUFFERED: usize = 8 * 1024 * 1024;
/// After failing this long, a destination of audit events holds calls back.
const HOLD_AFTER_FAILING: Duration = Duration::from_secs(5);
/// After a failed write, the next attempt.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How long the writers get at exit: the chart's termination grace period leaves 5
/// seconds after the drain, the traces take at most 2 of them.
pub(super) const FINAL_FLUSH: Duration = Duration::from_secs(2);

struct State {
    buffer: Vec<u8>,
    /// Bytes the writer took and has not written yet (a failed or short write).
    unwritten: usize,
    closed: bool,
    /// Counted in [`BACKLOG`] as behind.
    behind: bool,
}

impl State {
    fn backlog(&self) -> usize {
        self.buffer.len() + self.unwritten
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the buffer passed the high water mark, or on close.
    work: Condvar,
    /// The `destination` label of this writer's metrics.
    label: &'static str,
    max_buffered: usize,
    /// Whether audit lines come here: only then does falling behind hold calls back.
    audit: bool,
    /// Log lines dropped past the limit, not yet counted in the metrics.
    dropped: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where log lines go; cheap to clone, one per layer.
#[derive(Clone)]
pub(super) struct Batched(Arc<Shared>);

/// Owns the writer thread; dropping it writes what is buffered and stops the thread.
pub(super) struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread ends.
    ended: mpsc::Receiver<()>,
}

/// What a writer is for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Role {
    /// The `destination` label of its metrics (`stderr`, `audit_file`).
    pub(super) label: &'static str,
    /// Audit lines go there: falling behind holds calls back.
    pub(super) audit: bool,
}

/// A writer thread named `name` for `destination`.
pub(super) fn start(
    name: &str,
    destination: impl Write + Send + 'static,
    role: Role,
    max_buffered: usize,
) -> (Batched, Flusher) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Vec::with_capacity(64 * 1024),
            unwritten: 0,
            closed: false,
            behind: false,
        }),
        work: Condvar::new(),
        label: role.label,
        max_buffered,
        audit: role.audit,
        dropped: AtomicUsize::new(0),
    });
    let scraped = Arc::downgrade(&shared);
    crate::metrics::log_backlog(
        role.label,
        Box::new(move || scraped.upgrade().map_or(0, |s| s.lock().backlog())),
    );
    let writer = shared.clone();
    let (ended_tx, ended) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ended = ended_tx;
            write_batches(&writer, destination);
        })
        .expect("the system can start a thread");
    (
        Batched(shared.clone()),
        Flusher {
            shared,
            thread: Some(thread),
            ended,
        },
    )
}

fn write_batches(shared: &Shared, mut destination: impl Write) {
    // What was taken from the buffer and not written yet.
    let mut taken: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Since when writes fail, and how often that is reported.
    let mut failing: Option<(Instant, Throttle)> = None;
    loop {
        if failing.is_some() {
            // Not woken by appends (past the high water mark, each would wake it).
            std::thread::sleep(RETRY_AFTER);
        }
        let closed = {
            let mut state = shared.lock();
            if failing.is_none() && !state.closed && state.buffer.len() < HIGH_WATER {
                state = shared
                    .work
                    .wait_timeout(state, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if taken.is_empty() {
                std::mem::swap(&mut state.buffer, &mut taken);
            } else {
                taken.extend_from_slice(&state.buffer);
                state.buffer.clear();
            }
            state.unwritten = taken.len();
            state.closed
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            crate::metrics::log_lines_dropped(shared.label, dropped);
        }
        let outcome = write_out(&mut destination, &mut taken);
        // Reported after the lock is let go: the report is a log line, and this may be
        // the log's own writer.
        let mut report = None;
        match outcome {
            Ok(()) => {
                if failing.take().is_some() {
                    report = Some(None);
                }
            }
            // A pipe whose reader is gone, for log lines only: nothing may ever read
            // them. Audit lines are kept as for any failure (a FIFO's reader may come
            // back; if not, grants stop rather than go unrecorded).
            Err(e) if e.kind() == ErrorKind::BrokenPipe && !shared.audit => {
                crate::metrics::log_bytes_lost(shared.label, taken.len());
                taken.clear();
            }
            Err(e) => {
                crate::metrics::log_write_failed(shared.label);
                let (_, throttle) = failing.get_or_insert_with(|| {
                    (Instant::now(), Throttle::once_per(Duration::from_secs(60)))
                });
                if throttle.note(Instant::now()).is_some() {
                    report = Some(Some(e));
                }
            }
        }
        let (backlog, done) = {
            let mut state = shared.lock();
            state.unwritten = taken.len();
            let backlog = state.backlog();
            // Failing for a while holds calls back as a full backlog does: a disk that
            // stays full would otherwise leave up to 8 MiB of events that a restart
            // loses.
            if shared.audit
                && !state.behind
                && failing
                    .as_ref()
                    .is_some_and(|(since, _)| since.elapsed() >= HOLD_AFTER_FAILING)
            {
                state.behind = true;
                BACKLOG.fell_behind();
            }
            if state.behind && failing.is_none() && backlog < shared.max_buffered {
                state.behind = false;
                BACKLOG.caught_up();
            }
            (backlog, closed && backlog == 0)
        };
        match report {
            Some(Some(e)) => tracing::error!(
                destination = shared.label,
                error = %e,
                bytes_waiting = backlog,
                "cannot write to a log destination; its lines are kept and written when it \
                 takes them again; when it takes audit events, grants wait for it after 5 s \
                 of failures or 8 MiB waiting"
            ),
            Some(None) => tracing::info!(
                destination = shared.label,
                "the log destination takes lines again; nothing was lost"
            ),
            None => {}
        }
        if done {
            return;
        }
    }
}

/// Writes `bytes` to `destination`, removing what was written; on an error, what is
/// left stays for the next attempt (a short write goes on from where it stopped).
fn write_out(destination: &mut impl Write, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    let mut written = 0;
    let result = loop {
        if written == bytes.len() {
            break destination.flush();
        }
        match destination.write(&bytes[written..]) {
            Ok(0) => break Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    bytes.drain(..written);
    result
}

impl Batched {
    /// Appends an audit line (whole lines): never dropped, never waits. Past the
    /// limit, the destination counts itself behind in [`BACKLOG`], where new calls
    /// wait.
    pub(super) fn append(&self, bytes: &[u8]) {
        self.append_unless(bytes, usize::MAX);
    }

    /// Appends a log line: as [`Batched::append`], but dropped (and counted) past
    /// four times the limit.
    fn append_log(&self, bytes: &[u8]) {
        self.append_unless(bytes, self.0.max_buffered.saturating_mul(4));
    }

    /// Appends `bytes` unless `drop_from` bytes are waiting already.
    fn append_unless(&self, bytes: &[u8], drop_from: usize) {
        let shared = &self.0;
        let mut state = shared.lock();
        if state.backlog() >= drop_from {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        state.buffer.extend_from_slice(bytes);
        if shared.audit && !state.behind && state.backlog() >= shared.max_buffered {
            state.behind = true;
            BACKLOG.fell_behind();
        }
        if state.buffer.len() >= HIGH_WATER {
            shared.work.notify_one();
        }
    }
}

impl Write for Batched {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append_log(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Batched;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Flusher {
    /// Closes the writer and waits until `deadline` for it to write what it holds;
    /// answers the bytes it could not write by then (0: all of them).
    pub(super) fn finish(mut self, deadline: Instant) -> usize {
        self.close();
        match self
            .ended
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Err(mpsc::RecvTimeoutError::Disconnected) | Ok(()) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                0
            }
            // Still writing: the destination is not taking lines. The thread is left
            // to the process's exit.
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.thread.take();
                self.shared.lock().backlog().max(1)
            }
        }
    }

    /// The `destination` label of its metrics.
    pub(super) fn label(&self) -> &'static str {
        self.shared.label
    }

    /// Asks the writer to write what it holds and stop.
    pub(super) fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.close();
            let _ = thread.join();
        }
    }
}

/// A destination tests read back, optionally slow.
#[cfg(test)]
#[derive(Clone, Default)]
pub(super) struct Captured {
    pub(super) bytes: Arc<Mutex<Vec<u8>>>,
    pub(super) writes: Arc<Mutex<usize>>,
    pub(super) delay: Duration,
}

#[cfg(test)]
impl Captured {
    /// Everything written so far, as text.
    pub(super) fn text(&self) -> String {
        String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.delay);
        self.bytes.lock().unwrap().extend_from_slice(buf);
        *self.writes.lock().unwrap() += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A destination of log lines only.
    const LOG: Role = Role {
        label: "test",
        audit: false,
    };

    /// A destination of audit events.
    const AUDIT: Role = Role {
        label: "test",
        audit: true,
    };

    /// Runs `body` on `threads` threads at once, each with its own handle on `writer`
    /// and its number, and returns once all are done.
    fn on_threads(
        writer: &Batched,
        threads: usize,
        body: impl Fn(Batched, usize) + Clone + Send + 'static,
    ) {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (writer, body) = (writer.clone(), body.clone());
                std::thread::spawn(move || body(writer, t))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    }

    #[test]
    fn every_line_of_every_thread_arrives_whole_in_few_writes() {
        let captured = Captured::default();
        let (writer, flusher) = start("test-batch", captured.clone(), LOG, MAX_BUFFERED);
        on_threads(&writer, 4, |mut writer, t| {
            for i in 0..5_000 {
                writer
                    .write_all(format!("thread {t} line {i}\n").as_bytes())
                    .unwrap();
            }
        });
        assert_eq!(flusher.finish(Instant::now() + Duration::from_secs(10)), 0);
        let text = captured.text();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let prefix = format!("thread {t} ");
            let own = lines.iter().copied().filter(|l| l.starts_with(&prefix));
            assert!(
                own.eq((0..5_000).map(|i| format!("thread {t} line {i}"))),
                "thread {t}'s lines are not whole and in order"
            );
        }
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), 20_000, "a line was split or doubled");
        let writes = *captured.writes.lock().unwrap();
        assert!(writes < 2_000, "{writes} writes for 20,000 lines");
    }

    /// A destination that refuses its first `failures` writes (a full disk), then
    /// takes at most `chunk` bytes a write (short writes).
    struct Flaky {
        bytes: Arc<Mutex<Vec<u8>>>,
        failures: usize,
        chunk: usize,
        kind: ErrorKind,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(self.kind.into());
            }
            let n = buf.len().min(self.chunk);
            self.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_destination_that_falls_behind_holds_calls_back_and_loses_nothing() {
        let captured = Captured {
            delay: Duration::from_millis(50),
            ..Captured::default()
        };
        // Room for about ten lines: appending never waits, the backlog holds calls.
        let (writer, flusher) = start("test-stalled", captured.clone(), AUDIT, 100);
        let started = Instant::now();
        for i in 0..100 {
            writer.append(format!("line {i:03}\n").as_bytes());
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "appending waited for the destination"
        );
        assert!(
            BACKLOG.is_behind(),
            "a destination 900 bytes behind holds no call"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while BACKLOG.is_behind() {
            assert!(Instant::now() < deadline, "the backlog never cleared");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(flusher.finish(Instant::now() + Duration::from_secs(10)), 0);
        let want: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        assert_eq!(captured.text(), want);
    }

    #[test]
    fn appends_from_many_threads_hold_calls_back_once_past_the_limit() {
        let captured = Captured {
            delay: Duration::from_secs(3),
            ..Captured::default()
        };
        let (writer, flusher) = start("test-threads-behind", captured.clone(), AUDIT, 4_000);
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        // 8 threads × 7 lines: 5,600 bytes, 1.4 times the limit, none of it written
        // yet (the destination takes 3 s a write).
        on_threads(&writer, 8, move |writer, _| {
            for _ in 0..7 {
                writer.append(&line);
            }
        });
        assert!(
            BACKLOG.is_behind(),
            "5,600 bytes behind a limit of 4,000 held no call back"
        );
        assert_eq!(flusher.finish(Instant::now() + Duration::from_secs(20)), 0);
        assert_eq!(captured.text().len(), 5_600);
        assert!(!BACKLOG.is_behind(), "caught up, calls are still held");
    }

    /// A destination whose every write and flush says so and waits for a go-ahead.
    struct Gated {
        bytes: Arc<Mutex<Vec<u8>>>,
        entered: mpsc::Sender<&'static str>,
        go: mpsc::Receiver<()>,
    }

    impl Gated {
        fn wait(&self, what: &'static str) {
            self.entered.send(what).unwrap();
            self.go.recv().unwrap();
        }
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.wait("write");
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.wait("flush");
            Ok(())
        }
    }

    #[test]
    fn a_line_appended_while_the_writer_finishes_is_written_before_it_stops() {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let gated = Gated {
            bytes: bytes.clone(),
            entered: entered_tx,
            go: go_rx,
        };
        let (writer, flusher) = start("test-last-line", gated, LOG, MAX_BUFFERED);
        writer.append(b"A\n");
        // Empty batches go by (each only flushes) until the writer holds A.
        while entered.recv().unwrap() != "write" {
            go.send(()).unwrap();
        }
        flusher.close();
        go.send(()).unwrap();
        assert_eq!(entered.recv().unwrap(), "flush");
        go.send(()).unwrap();
        // The last batch, taken after the close: nothing in it. While it flushes, a
        // call appends B; the writer must not stop before writing it.
        assert_eq!(entered.recv().unwrap(), "flush");
        writer.append(b"B\n");
        go.send(()).unwrap();
        std::thread::spawn(move || {
            while entered.recv().is_ok() {
                let _ = go.send(());
            }
        });
        assert_eq!(flusher.finish(Instant::now() + Duration::from_secs(10)), 0);
        assert_eq!(
            String::from_utf8(bytes.lock().unwrap().clone()).unwrap(),
            "A\nB\n"
        );
    }

    #[test]
    fn a_failed_or_short_write_is_tried_again_from_where_it_stopped() {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let flaky = Flaky {
            bytes: bytes.clone(),
            failures: 3,
            chunk: 7,
            kind: ErrorKind::StorageFull,
        };
        let (writer, flusher) = start("test-flaky", flaky, AUDIT, MAX_BUFFERED);
        let want: String = (0..200).map(|i| format!("{{\"line\":{i}}}\n")).collect();
        for line in want.split_inclusive('\n') {
            writer.append(line.as_bytes());
        }
        assert_eq!(flusher.finish(Instant::now() + Duration::from_secs(10)), 0);
        assert_eq!(
            String::from_utf8(bytes.lock().unwrap().clone()).unwrap(),
            want
        );
    }

    #[test]
    fn a_destination_that_takes_nothing_is_given_up_at_the_deadline() {
        let flaky = Flaky {
            bytes: Arc::default(),
            failures: usize::MAX,
            chunk: 1,
            kind: ErrorKind::StorageFull,
        };
        let (writer, flusher) = start("test-full", flaky, AUDIT, MAX_BUFFERED);
        writer.append(b"an event\n");
        let started = Instant::now();
        assert_eq!(
            flusher.finish(Instant::now() + Duration::from_millis(600)),
            9
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_pipe_without_a_reader_drops_log_lines_and_keeps_audit_lines_holding_calls() {
        let gone = || Flaky {
            bytes: Arc::default(),
            failures: usize::MAX,
            chunk: 1,
            kind: ErrorKind::BrokenPipe,
        };
        let (writer, flusher) = start("test-epipe-log", gone(), LOG, 100);
        for _ in 0..50 {
            writer.append(b"a line nobody reads\n");
        }
        assert_eq!(flusher.finish(Instant::now() + Duration::from_secs(5)), 0);
        assert!(!BACKLOG.is_behind());

        // Audit lines: kept, and after failing for a while, calls are held.
        let (writer, flusher) = start("test-epipe-audit", gone(), AUDIT, MAX_BUFFERED);
        writer.append(b"an event\n");
        let deadline = Instant::now() + HOLD_AFTER_FAILING + Duration::from_secs(5);
        while !BACKLOG.is_behind() {
            assert!(
                Instant::now() < deadline,
                "a failing audit destination held nothing"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(flusher.finish(Instant::now()), 9);
    }

    #[test]
    fn log_lines_past_four_times_the_limit_are_dropped_audit_lines_never() {
        let flaky = Flaky {
            bytes: Arc::default(),
            failures: usize::MAX,
            chunk: 1,
            kind: ErrorKind::StorageFull,
        };
        let (mut writer, flusher) = start("test-drop", flaky, LOG, 10);
        for _ in 0..10 {
            writer.write_all(b"a log line\n").unwrap();
        }
        writer.append(b"an audit line\n");
        // Four lines fit under 40 bytes; the rest of the log lines are dropped, the
        // audit line is kept.
        assert_eq!(flusher.finish(Instant::now()), 4 * 11 + 14);
        assert!(
            !BACKLOG.is_behind(),
            "a log-only destination holds no call back"
        );
    }

    #[test]
    fn a_line_waits_at_most_about_one_period() {
        let captured = Captured::default();
        let (mut writer, _flusher) = start("test-period", captured.clone(), AUDIT, MAX_BUFFERED);
        writer.write_all(b"one line\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while captured.bytes.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
