//! `rules`: the rules file, and what an accepted file grants.

use std::path::Path;
use std::time::Duration;

use crate::caller::{self, Caller, Source};
use crate::core::Action;
use crate::core::limits::STS_MIN_DURATION;
use crate::rules::{CallerPattern, Rule, Rules, TEMPLATE_ATTRIBUTES, Target};
use crate::scope::{BucketName, ObjectKey, Prefix};

/// Most values of each kind a probe takes, so one input stays cheap.
const MAX_PROBES: usize = 4;

/// Parses the input as a rules file and asks it about the callers, buckets, keys and
/// prefixes that its `#? ` comment lines name (comments to TOML, so the fuzzer
/// mutates file and questions together):
///
/// ```text
/// #? caller ID          a caller (up to four), identified by the source below
/// #? source jwt         mtls, jwt, forwardedcert or devtoken (default: mtls
///                       for a spiffe:// id, devtoken otherwise)
/// #? attr NAME=VALUE    an identity attribute of every caller
/// #? other NAME=VALUE   an attribute of a second caller with the same id
/// #? bucket NAME        a bucket to ask about (besides those the rules name)
/// #? key KEY            a key to ask for
/// #? prefix PREFIX      a prefix to ask for
/// #? pattern PATTERN    a caller pattern, compared with a reference matcher
/// ```
///
/// Invariants: the parser never panics; an accepted file is accepted again, alike;
/// a rule that allows a request renders a prefix for the caller that holds the key
/// or prefix asked for; its `max_ttl` is at least 1 s (15 minutes for scoped
/// credentials and listing); a grant budget it sets is a positive, bounded rate with
/// a burst of at least one; two callers that differ in an attribute a template uses
/// never render the same prefix from it; refusals name the file; a caller pattern
/// matches exactly what a plain dynamic-programming matcher says (and a `spiffe://`
/// pattern only certificate callers).
pub fn rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let probe = Probe::read(&text);
    patterns(&probe);
    let Ok(rules) = Rules::parse(&text, Path::new("rules.toml")) else {
        return;
    };
    let again = Rules::parse(&text, Path::new("rules.toml")).expect("accepted again");
    assert_eq!(
        (again.len(), again.buckets()),
        (rules.len(), rules.buckets())
    );
    for collision in rules.collisions() {
        assert!(collision.to_string().starts_with("rules.toml:"));
    }

    let line_count = text.lines().count().max(1);
    let mut buckets = rules.buckets();
    buckets.extend(probe.buckets.iter().cloned());
    buckets.truncate(2 * MAX_PROBES);
    let targets: Vec<Target<'_>> = probe
        .keys
        .iter()
        .map(Target::Key)
        .chain(probe.prefixes.iter().map(Target::Prefix))
        .collect();
    for caller in &probe.callers {
        for bucket in &buckets {
            for action in Action::ALL {
                for target in &targets {
                    match rules.authorize(caller, action, bucket, *target) {
                        Ok(rule) => allowed(
                            rule,
                            caller,
                            &probe.other(caller),
                            action,
                            *target,
                            line_count,
                        ),
                        Err(denied) => assert!(denied.to_string().contains("rules.toml")),
                    }
                }
            }
            if let Some(prefix) = rules.write_prefix(caller, bucket)
                && let Ok(key) = format!("{prefix}upload.bin").parse::<ObjectKey>()
            {
                let rule = rules.authorize(caller, Action::Write, bucket, Target::Key(&key));
                assert!(
                    rule.is_ok(),
                    "the browser upload prefix allows writing under it"
                );
            }
        }
    }
}

/// What must hold of `rule`, which allowed `caller` to `action` on `target`.
fn allowed(
    rule: &Rule,
    caller: &Caller,
    other: &Caller,
    action: Action,
    target: Target<'_>,
    line_count: usize,
) {
    let prefix = rule
        .prefix_for(caller)
        .expect("a rule that allows renders a prefix");
    match target {
        Target::Key(key) => assert!(key.as_str().starts_with(prefix.as_str())),
        Target::Prefix(p) => assert!(p.as_str().starts_with(prefix.as_str())),
    }
    assert!(rule.max_ttl() >= Duration::from_secs(1));
    if matches!(
        action,
        Action::AssumeRead | Action::AssumeWrite | Action::List
    ) {
        assert!(rule.max_ttl() >= STS_MIN_DURATION, "STS's shortest session");
    }
    assert!((1..=line_count).contains(&rule.line()));
    if let Some(rate) = rule.grant_rate() {
        assert!(rate.per_second > 0.0 && rate.per_second <= 1e6, "{rate:?}");
        assert!((1.0..=1e6).contains(&rate.burst), "{rate:?}");
    }

    // Which attributes the prefix depends on: those whose change changes it.
    let uses = |name: &str| {
        let changed = caller.clone().with_attribute(name, "zz-probe-value");
        rule.prefix_for(&changed).as_deref() != Some(&*prefix)
    };
    if rule.prefix_for(other).as_deref() == Some(&*prefix) {
        for name in TEMPLATE_ATTRIBUTES {
            assert!(
                !uses(name) || caller.attribute(name) == other.attribute(name),
                "two callers with different {name} share {prefix}"
            );
        }
    }
}

/// Every `#? pattern` against every caller, compared with the reference matcher.
fn patterns(probe: &Probe) {
    for text in &probe.patterns {
        let Ok(pattern) = text.parse::<CallerPattern>() else {
            continue;
        };
        for caller in &probe.callers {
            let certificate = matches!(caller.source(), Source::Mtls | Source::ForwardedCert);
            let want = (certificate || !caller::has_spiffe_form(text))
                && reference_match(text.as_bytes(), caller.id().as_bytes());
            assert_eq!(
                pattern.matches(caller),
                want,
                "{text:?} against {:?}",
                caller.id()
            );
        }
    }
}

/// `*` matches any run of bytes but `/`: a table of which pattern prefixes match which
/// text prefixes, filled row by row.
fn reference_match(pattern: &[u8], text: &[u8]) -> bool {
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            next[0] = row[0];
            for j in 1..=text.len() {
                next[j] = row[j] || (next[j - 1] && text[j - 1] != b'/');
            }
        } else {
            for j in 1..=text.len() {
                next[j] = row[j - 1] && text[j - 1] == p;
            }
        }
        row = next;
    }
    row[text.len()]
}

// === the probe ===

/// The questions an input asks its rules.
#[derive(Default)]
struct Probe {
    callers: Vec<Caller>,
    /// Attributes of the second caller, `#? other`.
    other: Vec<(String, String)>,
    buckets: Vec<BucketName>,
    keys: Vec<ObjectKey>,
    prefixes: Vec<Prefix>,
    patterns: Vec<String>,
}

impl Probe {
    fn read(text: &str) -> Probe {
        let mut probe = Probe::default();
        let mut ids = Vec::new();
        let mut source = None;
        let mut attributes = Vec::new();
        for line in text.lines() {
            let Some((kind, value)) = line.strip_prefix("#? ").and_then(|l| l.split_once(' '))
            else {
                continue;
            };
            let attribute = || {
                value
                    .split_once('=')
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
            };
            match kind {
                "caller" if ids.len() < MAX_PROBES => ids.push(value.to_owned()),
                "source" => {
                    let sources = [
                        Source::Mtls,
                        Source::Jwt,
                        Source::ForwardedCert,
                        Source::DevToken,
                    ];
                    source = sources
                        .into_iter()
                        .find(|s| format!("{s:?}").eq_ignore_ascii_case(value));
                }
                "attr" => attributes.extend(attribute()),
                "other" => probe.other.extend(attribute()),
                "bucket" if probe.buckets.len() < MAX_PROBES => {
                    probe.buckets.extend(value.parse().ok());
                }
                "key" if probe.keys.len() < MAX_PROBES => probe.keys.extend(value.parse().ok()),
                "prefix" if probe.prefixes.len() < MAX_PROBES => {
                    probe.prefixes.extend(value.parse().ok());
                }
                "pattern" if probe.patterns.len() < MAX_PROBES && value.len() <= 256 => {
                    probe.patterns.push(value.to_owned());
                }
                _ => {}
            }
        }
        for id in ids {
            let source = source.unwrap_or(if id.starts_with("spiffe://") {
                Source::Mtls
            } else {
                Source::DevToken
            });
            let mut caller = Caller::new(id, source);
            for (name, value) in &attributes {
                caller = caller.with_attribute(name, value.as_str());
            }
            probe.callers.push(caller);
        }
        probe
    }

    /// `caller` with the `#? other` attributes in place of its own.
    fn other(&self, caller: &Caller) -> Caller {
        self.other
            .iter()
            .fold(Caller::new(caller.id(), caller.source()), |c, (n, v)| {
                c.with_attribute(n, v.as_str())
            })
    }
}
