//! A log destination written in batches by a thread of its own.
//!
//! A call appends its line to a buffer of its thread's own and goes on; every
//! [`FLUSH_EVERY`] the writer thread takes every buffer and writes them with one
//! `write(2)`. Nothing on the call's path waits on the destination or wakes another
//! thread: a queue that wakes its consumer per line (tracing-appender's) cost a futex
//! wake and a context switch per grant, which on a busy two-core machine made grants
//! slower than writing inline. Nor does it write memory another core holds: one buffer
//! shared by every serving thread moved its lock and the lines it was written to from
//! core to core on every grant (about 0.13 µs of each, nearly all of the append), and
//! would serialise a machine with many cores. Each thread's lines stay in their order;
//! lines of different threads can be ordered differently from their timestamps by up
//! to a batch, as they could be by their threads' scheduling before.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// One thread's buffer (threads beyond the shards' count share them). Aligned to two
/// cache lines so that neighbouring shards share none (the hardware prefetches lines
/// in pairs).
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Buffer>);

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// Bytes in `bytes` not yet counted in [`Shared::queued`]: the shared count is
    /// brought up to date in steps ([`Shared::count_every`]), so that a grant's append
    /// touches no memory another core writes.
    uncounted: usize,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The shard of the calling thread: threads are numbered as they first append.
fn shard_of_this_thread(count: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| n % count)
}

/// How many shards a writer has: twice the CPUs, so that the serving threads (one
/// per CPU) rarely share one with each other or with the threads that log now and
/// then.
fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get().saturating_mul(2))
        .clamp(2, 64)
}

struct Shared {
    shards: Box<[Shard]>,
    /// Bytes in the shards, not yet taken by the writer, but for each shard's
    /// `uncounted`.
    queued: AtomicUsize,
    /// The step in which a shard counts its bytes in `queued`: a quarter of the limit
    /// over all shards, so the backlog appends see is short of the true one by less
    /// than a quarter of the limit, and at most 64 KiB (about 180 audit lines).
    count_every: usize,
    /// Bytes the writer took and has not written yet (a failed or short write).
    unwritten: AtomicUsize,
    /// Counted in [`BACKLOG`] as behind.
    behind: AtomicBool,
    /// Whether the writer was asked to stop; with `work`, how it waits.
    closed: Mutex<bool>,
    /// Signalled when the shards passed the high water mark, or on close.
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
    fn backlog(&self) -> usize {
        self.queued.load(Ordering::Acquire) + self.unwritten.load(Ordering::Acquire)
    }

    fn closed(&self) -> MutexGuard<'_, bool> {
        self.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts this destination behind in [`BACKLOG`], once.
    fn fall_behind(&self) {
        if !self.behind.swap(true, Ordering::AcqRel) {
            BACKLOG.fell_behind();
        }
    }

    /// Takes what every shard holds into `taken`, after what it holds already.
    fn take_into(&self, taken: &mut Vec<u8>) {
        for shard in &self.shards {
            let mut buffer = shard.lock();
            if buffer.bytes.is_empty() {
                continue;
            }
            let moved = buffer.bytes.len();
            let counted = moved - std::mem::take(&mut buffer.uncounted);
            if taken.is_empty() {
                std::mem::swap(&mut buffer.bytes, taken);
            } else {
                taken.extend_from_slice(&buffer.bytes);
                buffer.bytes.clear();
            }
            drop(buffer);
            // Counted as unwritten before it stops counting as queued: the backlog
            // may read high for a moment, never low.
            self.unwritten.fetch_add(moved, Ordering::AcqRel);
            self.queued.fetch_sub(counted, Ordering::AcqRel);
        }
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
    let shards = shard_count();
    let shared = Arc::new(Shared {
        shards: (0..shards).map(|_| Shard::default()).collect(),
        queued: AtomicUsize::new(0),
        count_every: (max_buffered / (4 * shards)).clamp(1, 64 * 1024),
        unwritten: AtomicUsize::new(0),
        behind: AtomicBool::new(false),
        closed: Mutex::new(false),
        work: Condvar::new(),
        label: role.label,
        max_buffered,
        audit: role.audit,
        dropped: AtomicUsize::new(0),
    });
    let scraped = Arc::downgrade(&shared);
    crate::metrics::log_backlog(
        role.label,
        Box::new(move || scraped.upgrade().map_or(0, |s| s.backlog())),
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
    // What was taken from the shards and not written yet.
    let mut taken: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Since when writes fail, and how often that is reported.
    let mut failing: Option<(Instant, Throttle)> = None;
    loop {
        if failing.is_some() {
            // Not woken by appends (past the high water mark, each would wake it).
            std::thread::sleep(RETRY_AFTER);
        }
        let closed = {
            let mut closed = shared.closed();
            if failing.is_none() && !*closed && shared.queued.load(Ordering::Acquire) < HIGH_WATER {
                closed = shared
                    .work
                    .wait_timeout(closed, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            *closed
        };
        shared.take_into(&mut taken);
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            crate::metrics::log_lines_dropped(shared.label, dropped);
        }
        let outcome = write_out(&mut destination, &mut taken);
        shared.unwritten.store(taken.len(), Ordering::Release);
        // Reported once the backlog is settled: the report is a log line, and this may
        // be the log's own writer.
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
                shared.unwritten.store(0, Ordering::Release);
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
        let backlog = shared.backlog();
        if shared.audit {
            // Failing for a while holds calls back as a full backlog does: a disk that
            // stays full would otherwise leave up to 8 MiB of events that a restart
            // loses. The total is checked here too: appends check it only as they go.
            let failing_long = failing
                .as_ref()
                .is_some_and(|(since, _)| since.elapsed() >= HOLD_AFTER_FAILING);
            if failing_long || backlog >= shared.max_buffered {
                shared.fall_behind();
            } else if failing.is_none()
                && shared.behind.load(Ordering::Acquire)
                && shared.behind.swap(false, Ordering::AcqRel)
            {
                BACKLOG.caught_up();
            }
        }
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
        if closed && backlog == 0 {
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
        if shared.backlog() >= drop_from {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let shard = &shared.shards[shard_of_this_thread(shared.shards.len())];
        let (counted, queued) = {
            let mut buffer = shard.lock();
            buffer.bytes.extend_from_slice(bytes);
            buffer.uncounted += bytes.len();
            if buffer.uncounted < shared.count_every {
                return;
            }
            // Under the shard's lock, so that the writer cannot take these bytes
            // before they are counted (and count them off before they were).
            let counted = std::mem::take(&mut buffer.uncounted);
            (
                counted,
                shared.queued.fetch_add(counted, Ordering::AcqRel) + counted,
            )
        };
        if shared.audit && queued + shared.unwritten.load(Ordering::Acquire) >= shared.max_buffered
        {
            shared.fall_behind();
        }
        if queued >= HIGH_WATER && queued - counted < HIGH_WATER {
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
                self.shared.backlog().max(1)
            }
        }
    }

    /// The `destination` label of its metrics.
    pub(super) fn label(&self) -> &'static str {
        self.shared.label
    }

    /// Asks the writer to write what it holds and stop.
    pub(super) fn close(&self) {
        *self.shared.closed() = true;
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

    #[test]
    fn every_line_of_every_thread_arrives_whole_in_few_writes() {
        let captured = Captured::default();
        let (writer, flusher) = start(
            "test-batch",
            captured.clone(),
            Role {
                label: "test",
                audit: false,
            },
            MAX_BUFFERED,
        );
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        writer
                            .write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(flusher.finish(Instant::now() + Duration::from_secs(10)), 0);
        let text = captured.text();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let own: Vec<&str> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .copied()
                .collect();
            let want: Vec<String> = (0..5_000).map(|i| format!("thread {t} line {i}")).collect();
            assert!(own == want, "thread {t}'s lines are not whole and in order");
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

    const AUDIT: Role = Role {
        label: "test",
        audit: true,
    };

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
    fn lines_of_many_threads_hold_calls_back_by_a_quarter_past_the_limit_at_the_latest() {
        let captured = Captured {
            delay: Duration::from_secs(3),
            ..Captured::default()
        };
        let (writer, flusher) = start("test-threads-behind", captured.clone(), AUDIT, 4_000);
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        // 8 threads: more than the shards, so some share one. 8 × 7 lines: 5,600 bytes,
        // 1.4 times the limit, none of it written (the destination takes 3 s a write).
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let writer = writer.clone();
                let line = line.clone();
                std::thread::spawn(move || {
                    for _ in 0..7 {
                        writer.append(&line);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            BACKLOG.is_behind(),
            "5,600 bytes behind a limit of 4,000 held no call back"
        );
        assert_eq!(flusher.finish(Instant::now() + Duration::from_secs(20)), 0);
        assert_eq!(captured.text().len(), 5_600);
        assert!(!BACKLOG.is_behind(), "caught up, calls are still held");
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
        let log_only = Role {
            label: "test",
            audit: false,
        };
        let (writer, flusher) = start("test-epipe-log", gone(), log_only, 100);
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
        let (mut writer, flusher) = start(
            "test-drop",
            flaky,
            Role {
                label: "test",
                audit: false,
            },
            10,
        );
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
