//! A log destination written in batches by a thread of its own.
//!
//! A call appends its line to a shared buffer and goes on; every [`FLUSH_EVERY`] the
//! writer thread takes the whole buffer and writes it with one `write(2)`. Nothing on
//! the call's path waits on the destination or wakes another thread: a queue that
//! wakes its consumer per line (tracing-appender's) cost a futex wake and a context
//! switch per grant, which on a busy two-core machine made grants slower than writing
//! inline. Lossless: past [`MAX_BUFFERED`] bytes (a destination that stopped
//! reading), callers wait for room. Dropping the [`Flusher`] writes everything still
//! buffered, then stops the thread.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait in the buffer.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Past this, the writer is woken early.
const HIGH_WATER: usize = 1024 * 1024;
/// Past this, callers wait for the writer: about 16,000 audit lines.
pub(super) const MAX_BUFFERED: usize = 8 * 1024 * 1024;

struct State {
    buffer: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the writer took the buffer (room for waiting callers).
    room: Condvar,
    /// Signalled when the buffer passed the high water mark, or on close.
    work: Condvar,
    max_buffered: usize,
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
}

/// A writer thread named `name` for `destination`.
pub(super) fn start(
    name: &str,
    destination: impl Write + Send + 'static,
    max_buffered: usize,
) -> (Batched, Flusher) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Vec::with_capacity(64 * 1024),
            closed: false,
        }),
        room: Condvar::new(),
        work: Condvar::new(),
        max_buffered,
    });
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || write_batches(&writer, destination))
        .expect("the system can start a thread");
    (
        Batched(shared.clone()),
        Flusher {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_batches(shared: &Shared, mut destination: impl Write) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let closed = {
            let mut state = shared.lock();
            if !state.closed && state.buffer.len() < HIGH_WATER {
                state = shared
                    .work
                    .wait_timeout(state, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.buffer, &mut spare);
            shared.room.notify_all();
            state.closed
        };
        if !spare.is_empty() {
            // A failed write loses this batch, as a failed inline write would lose
            // its line; there is nowhere else to report it.
            let _ = destination.write_all(&spare);
            let _ = destination.flush();
            spare.clear();
        }
        if closed && shared.lock().buffer.is_empty() {
            return;
        }
    }
}

impl Batched {
    /// Appends `bytes` (whole lines) to the buffer, waiting for room past the limit.
    pub(super) fn append(&self, bytes: &[u8]) {
        let shared = &self.0;
        let mut state = shared.lock();
        while state.buffer.len() >= shared.max_buffered && !state.closed {
            shared.work.notify_one();
            state = shared
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.buffer.extend_from_slice(bytes);
        if state.buffer.len() >= HIGH_WATER {
            shared.work.notify_one();
        }
    }
}

impl Write for Batched {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes);
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

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
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
        let (writer, flusher) = start("test-batch", captured.clone(), MAX_BUFFERED);
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
        drop(flusher);
        let text = captured.text();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), 20_000, "a line was split or doubled");
        let writes = *captured.writes.lock().unwrap();
        assert!(writes < 2_000, "{writes} writes for 20,000 lines");
    }

    #[test]
    fn a_stalled_destination_makes_callers_wait_and_loses_nothing() {
        let captured = Captured {
            delay: Duration::from_millis(50),
            ..Captured::default()
        };
        // Room for about ten lines: the caller must wait for the slow writer.
        let (mut writer, flusher) = start("test-stalled", captured.clone(), 100);
        let started = Instant::now();
        for i in 0..100 {
            writer
                .write_all(format!("line {i:03}\n").as_bytes())
                .unwrap();
        }
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "callers did not wait for room"
        );
        drop(flusher);
        let text = captured.text();
        let want: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        assert_eq!(text, want);
    }

    #[test]
    fn a_line_waits_at_most_about_one_period() {
        let captured = Captured::default();
        let (mut writer, _flusher) = start("test-period", captured.clone(), MAX_BUFFERED);
        writer.write_all(b"one line\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while captured.bytes.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
