//! How often a repeated event may be reported: warnings about something that can
//! happen thousands of times a second (failed accepts, refused callers, lost trace
//! batches) must not flood the log, yet none may vanish without a count.

use std::time::{Duration, Instant};

/// Once a minute: the pace of the service's repeated warnings.
pub const ONCE_A_MINUTE: Duration = Duration::from_secs(60);

/// Lets at most `allowance` reports through per window of `every`, a window opening
/// at the first event after the last one closed, and counts the events in between.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    every: Duration,
    allowance: u32,
    window: Option<Instant>,
    reported: u32,
    unreported: u64,
}

impl Throttle {
    /// One report per `every`.
    pub const fn once_per(every: Duration) -> Self {
        Self::per(every, 1)
    }

    /// At most `allowance` reports per `every`.
    pub const fn per(every: Duration, allowance: u32) -> Self {
        Self {
            every,
            allowance,
            window: None,
            reported: 0,
            unreported: 0,
        }
    }

    /// Counts an event at `now`; `Some(n)` when it is to be reported, `n` being the
    /// events since the last report, this one included.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        if self
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= self.every)
        {
            self.window = Some(now);
            self.reported = 0;
        }
        if self.reported >= self.allowance {
            return None;
        }
        self.reported += 1;
        Some(std::mem::take(&mut self.unreported))
    }

    /// Counts back `events` a report was due for but never made (a cap further on
    /// held it back), so the next report includes them. The window stays: the next
    /// report comes when it would have.
    pub fn unreport(&mut self, events: u64) {
        self.unreported += events;
    }

    /// Events counted since the last report.
    #[cfg(test)]
    pub fn unreported(&self) -> u64 {
        self.unreported
    }

    /// Whether any event was reported yet.
    #[cfg(test)]
    pub fn ever_reported(&self) -> bool {
        self.window.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_window_with_the_events_since_the_last() {
        let t0 = Instant::now();
        let mut t = Throttle::once_per(ONCE_A_MINUTE);
        assert!(!t.ever_reported());
        assert_eq!(t.note(t0), Some(1));
        assert_eq!(t.note(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.note(t0 + Duration::from_secs(59)), None);
        assert_eq!(t.unreported(), 2);
        // The window is a minute from the report, not from the last event.
        assert_eq!(t.note(t0 + ONCE_A_MINUTE), Some(3));
        assert_eq!(t.note(t0 + ONCE_A_MINUTE), None);
        // A clock read out of order (another thread's earlier `now`) is not a new window.
        assert_eq!(t.note(t0), None);
        assert_eq!(t.note(t0 + 3 * ONCE_A_MINUTE), Some(3));
        // A report dropped further on is counted in the next one.
        t.unreport(1);
        assert_eq!(t.note(t0 + 3 * ONCE_A_MINUTE), None);
        assert_eq!(t.note(t0 + 4 * ONCE_A_MINUTE), Some(3));
    }

    #[test]
    fn an_allowance_caps_reports_per_window() {
        let t0 = Instant::now();
        let mut t = Throttle::per(ONCE_A_MINUTE, 3);
        for _ in 0..3 {
            assert_eq!(t.note(t0), Some(1));
        }
        for _ in 0..5 {
            assert_eq!(t.note(t0 + Duration::from_secs(30)), None);
        }
        // The next window's first report carries the five held back, and itself.
        assert_eq!(t.note(t0 + ONCE_A_MINUTE), Some(6));
        assert_eq!(t.note(t0 + ONCE_A_MINUTE), Some(1));
    }
}
