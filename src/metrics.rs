//! Prometheus metrics: process-wide counters and one histogram, rendered as text
//! (`server` serves them on their own port, `metrics.listen`).
//!
//! Labels are closed sets (actions, outcomes, results): nothing a caller sends ever
//! becomes a label, so a caller cannot blow up the series count, and no key, prefix,
//! URL or credential can reach a metric.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::Action;

const ACTIONS: [Action; 5] = Action::ALL;

/// A counter.
struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the packed policy size buckets, in percent of STS's limit.
const PACKED_BUCKETS: [i32; 6] = [10, 25, 50, 80, 90, 100];

static GRANTED: [Counter; 5] = [const { Counter::new() }; 5];
static DENIED: [Counter; 5] = [const { Counter::new() }; 5];
static UNAUTHENTICATED: Counter = Counter::new();
static STS_CALLS: [Counter; 4] = [const { Counter::new() }; 4];
static STS_CACHE: [Counter; 2] = [const { Counter::new() }; 2];
static PACKED: [Counter; 7] = [const { Counter::new() }; 7];
static PACKED_SUM: Counter = Counter::new();
static RELOADS: [Counter; 2] = [const { Counter::new() }; 2];

fn action_index(action: Action) -> usize {
    ACTIONS
        .iter()
        .position(|a| *a == action)
        .expect("ACTIONS lists every action")
}

/// A grant decision for `action`.
pub fn grant(action: Action, granted: bool) {
    let counters = if granted { &GRANTED } else { &DENIED };
    counters[action_index(action)].inc();
}

/// A call refused for want of a verifiable identity.
pub fn unauthenticated() {
    UNAUTHENTICATED.inc();
}

/// How an AssumeRole ended.
#[derive(Debug, Clone, Copy)]
pub enum StsResult {
    /// Credentials issued.
    Issued = 0,
    /// STS throttled.
    Throttled = 1,
    /// STS unreachable or timed out.
    Unreachable = 2,
    /// STS refused (permissions, trust policy, malformed input).
    Refused = 3,
}

const STS_RESULTS: [&str; 4] = ["issued", "throttled", "unreachable", "refused"];

/// An AssumeRole call and its result.
pub fn sts_call(result: StsResult) {
    STS_CALLS[result as usize].inc();
}

/// A credential request answered from the cache (`true`: reused or shared with a
/// concurrent caller) or by a new AssumeRole (`false`).
pub fn sts_cache(hit: bool) {
    STS_CACHE[usize::from(hit)].inc();
}

/// STS's packed policy size of an issued session, in percent of the limit.
pub fn packed_policy_percent(percent: i32) {
    let bucket = PACKED_BUCKETS
        .iter()
        .position(|b| percent <= *b)
        .unwrap_or(PACKED_BUCKETS.len());
    PACKED[bucket].inc();
    PACKED_SUM.0.fetch_add(
        u64::try_from(percent.max(0)).unwrap_or(0),
        Ordering::Relaxed,
    );
}

/// A rules reload, applied (`true`) or refused.
pub fn rules_reload(applied: bool) {
    RELOADS[usize::from(!applied)].inc();
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// All metrics in Prometheus' text exposition format.
pub fn render() -> String {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "storage_grants_grants_total",
        "counter",
        "Grant decisions by action and outcome.",
    );
    for (i, action) in ACTIONS.iter().enumerate() {
        for (outcome, counters) in [("granted", &GRANTED), ("denied", &DENIED)] {
            let _ = writeln!(
                out,
                "storage_grants_grants_total{{action=\"{action}\",outcome=\"{outcome}\"}} {}",
                counters[i].get()
            );
        }
    }
    header(
        &mut out,
        "storage_grants_unauthenticated_total",
        "counter",
        "Calls refused for want of a verifiable identity.",
    );
    let _ = writeln!(
        out,
        "storage_grants_unauthenticated_total {}",
        UNAUTHENTICATED.get()
    );
    header(
        &mut out,
        "storage_grants_sts_assume_role_total",
        "counter",
        "AssumeRole calls by result.",
    );
    for (i, result) in STS_RESULTS.iter().enumerate() {
        let _ = writeln!(
            out,
            "storage_grants_sts_assume_role_total{{result=\"{result}\"}} {}",
            STS_CALLS[i].get()
        );
    }
    header(
        &mut out,
        "storage_grants_sts_cache_total",
        "counter",
        "Scoped credential requests by cache outcome.",
    );
    for (i, outcome) in ["miss", "hit"].iter().enumerate() {
        let _ = writeln!(
            out,
            "storage_grants_sts_cache_total{{outcome=\"{outcome}\"}} {}",
            STS_CACHE[i].get()
        );
    }
    header(
        &mut out,
        "storage_grants_sts_packed_policy_percent",
        "histogram",
        "STS packed policy size, percent of its limit.",
    );
    let mut cumulative = 0;
    for (i, bound) in PACKED_BUCKETS.iter().enumerate() {
        cumulative += PACKED[i].get();
        let _ = writeln!(
            out,
            "storage_grants_sts_packed_policy_percent_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += PACKED[PACKED_BUCKETS.len()].get();
    let _ = writeln!(
        out,
        "storage_grants_sts_packed_policy_percent_bucket{{le=\"+Inf\"}} {cumulative}\n\
         storage_grants_sts_packed_policy_percent_sum {}\n\
         storage_grants_sts_packed_policy_percent_count {cumulative}",
        PACKED_SUM.get()
    );
    header(
        &mut out,
        "storage_grants_rules_reloads_total",
        "counter",
        "Rules reloads, applied or refused.",
    );
    for (i, result) in ["applied", "refused"].iter().enumerate() {
        let _ = writeln!(
            out,
            "storage_grants_rules_reloads_total{{result=\"{result}\"}} {}",
            RELOADS[i].get()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_every_family() {
        grant(Action::Read, true);
        grant(Action::List, false);
        packed_policy_percent(30);
        packed_policy_percent(95);
        let text = render();
        assert!(text.contains("storage_grants_grants_total{action=\"read\",outcome=\"granted\"}"));
        assert!(text.contains("storage_grants_grants_total{action=\"list\",outcome=\"denied\"}"));
        // 30 falls in le=50 and above; 95 only in le=100 and +Inf.
        let bucket = |le: &str| -> u64 {
            let prefix = format!("storage_grants_sts_packed_policy_percent_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(bucket("25") < bucket("50"));
        assert!(bucket("90") < bucket("100"));
        assert_eq!(bucket("100"), bucket("+Inf"));
    }
}
