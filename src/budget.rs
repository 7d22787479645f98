//! Per-caller budgets: token buckets keyed by caller id, so that one caller's burst
//! cannot use up what every caller shares (the grant path, STS's account-wide quota).
//!
//! Decisions:
//! - **Per caller, not global.** A global limit lets one caller starve the others;
//!   a bucket per caller id bounds each one on its own.
//! - **Bounded memory.** At most `max_callers` buckets are kept; when full, the buckets
//!   that have refilled completely (callers idle long enough to be back at their burst)
//!   are dropped first, which loses nothing, and otherwise the stalest one.
//! - **A refusal says when to retry**: the time until one token is back.
//! - **A refused caller is named in the log**, once a minute per bucket: refusals are
//!   not audited (a client looping past its budget would flood the audit log), and the
//!   metric has no caller label, so the warning is how an operator finds the caller.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::core::throttle::{ONCE_A_MINUTE, Throttle};

/// How fast a budget refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens a bucket holds (the burst).
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The rate this bucket refills at (a key's rate may differ from the default).
    rate: Rate,
    /// This bucket's refusals: one logged a minute.
    refusals: Throttle,
}

/// How many callers' refusals are logged a minute, at most, for all buckets: many
/// identities over budget at once (a fleet's bad rollout) must not flood the log.
const WARNINGS_PER_MINUTE: u32 = 20;

/// What taking a token came to.
#[derive(Debug, PartialEq)]
struct Taken {
    /// `Err`: the time until a token is back.
    result: Result<(), Duration>,
    /// A refusal the log should name the caller for: the bucket's refusals since its
    /// last warning (this one included), and the other callers' warnings the cap of
    /// [`WARNINGS_PER_MINUTE`] held back since the last line.
    warn: Option<(u64, u64)>,
}

/// Token buckets, one per caller.
#[derive(Debug)]
pub struct Budgets {
    /// What the budget counts, for the log: `grants`, `new STS sessions`.
    counts: &'static str,
    rate: Rate,
    max_callers: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
    warnings: Mutex<Throttle>,
}

impl Budgets {
    /// Budgets of what `counts` names, refilling at `rate`, for at most `max_callers`
    /// callers at once.
    pub fn new(counts: &'static str, rate: Rate, max_callers: usize) -> Self {
        Self {
            counts,
            rate,
            max_callers: max_callers.max(1),
            buckets: Mutex::new(HashMap::new()),
            warnings: Mutex::new(Throttle::per(ONCE_A_MINUTE, WARNINGS_PER_MINUTE)),
        }
    }

    /// Takes one token from `caller`'s bucket at `now`, at the default rate.
    ///
    /// # Errors
    /// The time until a token is back, when the bucket is empty.
    pub fn take(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        self.take_logged(caller, caller, None, self.rate, now)
    }

    /// Takes one token from `caller`'s bucket under the rule at `rule_line`, which sets
    /// a rate of its own: a bucket apart from the caller's default one.
    ///
    /// # Errors
    /// The time until a token is back, when the bucket is empty.
    pub fn take_for_rule(
        &self,
        caller: &str,
        rule_line: usize,
        rate: Rate,
        now: Instant,
    ) -> Result<(), Duration> {
        // '\n' cannot occur in a caller id: no caller's default bucket has this key.
        let key = format!("{caller}\nrule {rule_line}");
        self.take_logged(&key, caller, Some(rule_line), rate, now)
    }

    fn take_logged(
        &self,
        key: &str,
        caller: &str,
        rule_line: Option<usize>,
        rate: Rate,
        now: Instant,
    ) -> Result<(), Duration> {
        let Taken { result, warn } = self.take_at(key, rate, now);
        if let Some((refused, held_back)) = warn
            && let Err(retry_after) = result
        {
            tracing::warn!(
                budget = self.counts,
                caller,
                rule_line,
                per_second = rate.per_second,
                burst = rate.burst,
                retry_after_ms = retry_after.as_millis() as u64,
                refused,
                other_callers_not_logged = held_back,
                "caller over its budget: its calls are refused (RESOURCE_EXHAUSTED, HTTP 429) \
                 until it slows down; logged once a minute per caller, for at most 20 \
                 callers a minute"
            );
        }
        result
    }

    /// Takes one token from the bucket of `key`, which refills at `rate`.
    fn take_at(&self, key: &str, rate: Rate, now: Instant) -> Taken {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A known key is looked up without building an owned key: this runs on every
        // grant, under a lock that every core takes.
        if let Some(bucket) = buckets.get_mut(key) {
            return Self::spend(bucket, rate, now, &self.warnings);
        }
        if buckets.len() >= self.max_callers {
            Self::make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
            rate,
            refusals: Throttle::once_per(ONCE_A_MINUTE),
        });
        Self::spend(bucket, rate, now, &self.warnings)
    }

    /// Refills `bucket` for the time since it was last used and takes one token; a
    /// refusal is to be logged when none of this bucket's was in the last minute.
    /// A warning the cap (`warnings`) holds back is counted back into the bucket, so
    /// that its next line says how many refusals it had.
    fn spend(bucket: &mut Bucket, rate: Rate, now: Instant, warnings: &Mutex<Throttle>) -> Taken {
        // A rules reload may have changed the rate of this key.
        bucket.rate = rate;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Taken {
                result: Ok(()),
                warn: None,
            };
        }
        let missing = 1.0 - bucket.tokens;
        let retry_after = Duration::from_secs_f64(missing / rate.per_second.max(f64::MIN_POSITIVE))
            .max(Duration::from_millis(1));
        let warn = bucket.refusals.note(now).and_then(|refused| {
            let due = warnings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .note(now);
            if due.is_none() {
                bucket.refusals.unreport(refused);
            }
            due.map(|due| (refused, due - 1))
        });
        Taken {
            result: Err(retry_after),
            warn,
        }
    }

    fn make_room(buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let full = |b: &Bucket| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * b.rate.per_second
                >= b.rate.burst
        };
        let before = buckets.len();
        buckets.retain(|_, b| !full(b));
        if buckets.len() == before
            && let Some(stalest) = buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone())
        {
            buckets.remove(&stalest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 2.0,
        burst: 3.0,
    };

    #[test]
    fn a_caller_gets_its_burst_then_waits_for_the_refill() {
        let b = Budgets::new("grants", RATE, 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take("a", t0), Ok(()));
        }
        let wait = b.take("a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(b.take("a", t0 + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn one_callers_burst_leaves_the_others_untouched() {
        let b = Budgets::new("grants", RATE, 10);
        let t0 = Instant::now();
        while b.take("greedy", t0).is_ok() {}
        assert_eq!(b.take("other", t0), Ok(()));
    }

    #[test]
    fn a_key_refills_at_its_own_rate() {
        let b = Budgets::new("grants", RATE, 10);
        let t0 = Instant::now();
        let fast = Rate {
            per_second: 100.0,
            burst: 10.0,
        };
        for _ in 0..10 {
            assert_eq!(b.take_for_rule("batch", 7, fast, t0), Ok(()));
        }
        let wait = b.take_for_rule("batch", 7, fast, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
        // The default-rate bucket of another key is untouched and slower.
        for _ in 0..3 {
            assert_eq!(b.take("batch-default", t0), Ok(()));
        }
        assert!(b.take("batch-default", t0).unwrap_err() > Duration::from_millis(400));
    }

    #[test]
    fn a_refused_bucket_is_reported_once_a_minute() {
        let b = Budgets::new("grants", RATE, 10);
        let t0 = Instant::now();
        let taken = |key: &str, at: Instant| b.take_at(key, RATE, at);
        for _ in 0..3 {
            assert_eq!(
                taken("a", t0),
                Taken {
                    result: Ok(()),
                    warn: None
                }
            );
        }
        // The first refusal is reported; the next ones in that minute are not.
        assert_eq!(taken("a", t0).warn, Some((1, 0)));
        assert_eq!(taken("a", t0).warn, None);
        let later = t0 + Duration::from_secs(30);
        let refused = std::iter::repeat_with(|| taken("a", later))
            .find(|t| t.result.is_err())
            .unwrap();
        assert_eq!(refused.warn, None, "reported again within the minute");
        // Another bucket is reported on its own.
        for _ in 0..3 {
            taken("b", later);
        }
        assert_eq!(taken("b", later).warn, Some((1, 0)));
        // A minute after the last report, the next refusal is reported again, with
        // the refusals since.
        let minute = t0 + ONCE_A_MINUTE;
        let refused = std::iter::repeat_with(|| taken("a", minute))
            .find(|t| t.result.is_err())
            .unwrap();
        assert_eq!(refused.warn, Some((3, 0)));
        assert_eq!(taken("a", minute).warn, None);
    }

    #[test]
    fn at_most_twenty_callers_a_minute_are_logged_and_the_rest_counted() {
        let b = Budgets::new("grants", RATE, 100);
        let t0 = Instant::now();
        for caller in 0..25 {
            let caller = format!("caller-{caller}");
            while b.take(&caller, t0).is_ok() {}
        }
        // Twenty named; five held for the count in the next minute's first warning.
        assert_eq!(b.warnings.lock().unwrap().unreported(), 5);
        // A held-back caller's refusals are all in its next line: the one held back
        // and the one that makes the line.
        let minute = t0 + ONCE_A_MINUTE;
        let refused = std::iter::repeat_with(|| b.take_at("caller-24", RATE, minute))
            .find(|t| t.result.is_err())
            .unwrap();
        assert_eq!(
            refused.warn,
            Some((2, 5)),
            "two refusals, five callers held back"
        );
    }

    #[test]
    fn memory_is_bounded_and_idle_callers_go_first() {
        let b = Budgets::new("grants", RATE, 2);
        let t0 = Instant::now();
        b.take("idle", t0).unwrap();
        for _ in 0..3 {
            b.take("busy", t0).unwrap();
        }
        // Later, "idle" has refilled: it is dropped to make room, "busy" is kept.
        let t1 = t0 + Duration::from_secs(1);
        b.take("new", t1).unwrap();
        let buckets = b.buckets.lock().unwrap();
        assert_eq!(buckets.len(), 2);
        assert!(buckets.contains_key("busy") && buckets.contains_key("new"));
    }
}
