//! One structured audit event per grant decision (the README documents its fields,
//! "Audit"), and the decision on the call's span.
//!
//! An event records who got what and until when (caller, action, bucket, key or
//! prefix, TTL, grant id, the rule that allowed it), never the grant itself: no URL,
//! signature, token or secret is ever a field here. The span gets the decision, the
//! bucket and the grant id, so one id joins the response, the audit event, the trace
//! and (for STS) the session name.
//!
//! The event is written here as one JSON line, field by field, and handed to the
//! [`Destination`]s the wiring installed at start (the log on stderr, `audit.file`).
//! Going through `tracing` and a formatting layer instead cost about 3,000 more
//! instructions per grant, twice what the event costs now (dispatch, filters, a visitor
//! call per field, the message formatted into a `String`); `tracing` still gets the
//! event, with the same fields, for the span when traces are exported, and costs
//! nothing when they are not.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::caller::Caller;
use crate::core::{Action, span_int};

/// A new random grant id: 128 bits, hex. It joins the audit log to the caller's
/// response (and, for STS, to the session name in the store's own trail).
///
/// From the thread's CSPRNG (ChaCha, seeded and reseeded from the operating system):
/// a `getrandom(2)` per grant cost more than signing the URL.
pub fn new_grant_id() -> String {
    use rand::RngCore;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

/// A grant that was issued.
#[derive(Debug)]
pub struct Issued<'a> {
    /// Identifier returned to the caller.
    pub grant_id: &'a str,
    /// Who asked.
    pub caller: &'a Caller,
    /// What was granted (several actions for scoped credentials).
    pub actions: &'a [Action],
    /// Bucket of the grant.
    pub bucket: &'a str,
    /// Object key or prefix of the grant.
    pub target: &'a str,
    /// Lifetime granted, in seconds.
    pub ttl_secs: u64,
    /// When the grant expires.
    pub expires_at: SystemTime,
    /// Line of the rule that allowed it.
    pub rule_line: usize,
    /// For scoped credentials: the grant id of the STS session handed out, which
    /// differs from `grant_id` when cached credentials were reused.
    pub session_grant_id: Option<&'a str>,
}

/// The target of audit events, in their lines and for `tracing` (which `RUST_LOG`
/// filters by, e.g. `audit=off`).
pub const TARGET: &str = "audit";

/// Where audit lines go: a writer that takes whole lines and never blocks the
/// caller (`telemetry` installs its batch writers). A destination that falls behind
/// says so through [`BACKLOG`], and calls wait there, before they grant anything.
pub trait Destination: Send + Sync {
    /// Takes one line, `\n` included; never drops it.
    fn append(&self, line: &[u8]);
}

/// Back-pressure from the audit destinations: lossless means that when one stops
/// taking lines (a stalled log pipe, a full disk) calls wait for it rather than grant
/// without a record. They wait asynchronously, at their door, before they grant
/// ([`Backlog::room`]): a worker thread blocked on a destination would also stop the
/// calls that write nothing (health checks) and the shutdown.
pub struct Backlog {
    /// How many destinations are past their limit.
    over: AtomicUsize,
    /// Woken when one gets back under it.
    freed: tokio::sync::Notify,
}

/// What a call held back longer than its door allows is told (UNAVAILABLE, HTTP 503).
pub const BEHIND: &str = "this replica's audit log is not taking events (a stalled log pipe \
     or a full disk), so it grants nothing until it does; retry, another replica may serve \
     the call";

/// How long a call may wait at its door for the audit log: most of the server's
/// `request_timeout`, so that it is answered [`BEHIND`] with a retry hint before the
/// timeout cuts it off (gRPC: as CANCELLED, which no client retries).
pub fn hold_at_most(request_timeout: std::time::Duration) -> std::time::Duration {
    request_timeout.saturating_sub(request_timeout / 10)
}

/// The retry hint given with [`BEHIND`].
pub const BEHIND_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// The process's audit back-pressure.
pub static BACKLOG: Backlog = Backlog {
    over: AtomicUsize::new(0),
    freed: tokio::sync::Notify::const_new(),
};

impl Backlog {
    /// A destination went past its limit.
    pub fn fell_behind(&self) {
        self.over.fetch_add(1, Ordering::SeqCst);
    }

    /// A destination that [`Backlog::fell_behind`] is back under its limit.
    pub fn caught_up(&self) {
        self.over.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_waiters();
    }

    /// Whether some destination is past its limit.
    pub fn is_behind(&self) -> bool {
        self.over.load(Ordering::Relaxed) > 0
    }

    /// Whether every destination has room within `limit`: at once, unless one is
    /// behind. A call that waited `limit` is better answered "unavailable, retry"
    /// (another replica may take it) than cut off by its timeout.
    pub async fn room_within(&self, limit: std::time::Duration) -> bool {
        !self.is_behind() || tokio::time::timeout(limit, self.room()).await.is_ok()
    }

    /// Completes once every destination has room: at once, unless one is behind.
    pub async fn room(&self) {
        while self.is_behind() {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Registered before the check, so a wake-up between the two is not lost.
            freed.as_mut().enable();
            if !self.is_behind() {
                return;
            }
            freed.await;
        }
    }
}

static DESTINATIONS: OnceLock<Vec<Box<dyn Destination>>> = OnceLock::new();

/// Sends every later audit event to `destinations`. Once per process: a second call
/// changes nothing and returns false. Until it is called (unit tests, the
/// command-line tools) events reach the span only.
pub fn install(destinations: Vec<Box<dyn Destination>>) -> bool {
    DESTINATIONS.set(destinations).is_ok()
}

fn deliver(line: impl FnOnce() -> Vec<u8>) {
    if let Some(destinations) = DESTINATIONS.get().filter(|d| !d.is_empty()) {
        let line = line();
        for destination in destinations {
            destination.append(&line);
        }
    }
}

/// Records an issued grant.
pub fn issued(event: &Issued<'_>) {
    for &action in event.actions {
        crate::metrics::grant(action, true);
    }
    let span = tracing::Span::current();
    span.record("decision", "granted");
    span.record("bucket", event.bucket);
    span.record("grant_id", event.grant_id);
    let action = join(event.actions);
    deliver(|| issued_line(event, &action, SystemTime::now()));
    // The span event, when a layer wants it (traces exported); otherwise the
    // callsite is disabled once and this costs a load.
    tracing::info!(
        target: TARGET,
        outcome = "granted",
        grant_id = event.grant_id,
        caller = event.caller.id(),
        identity_source = event.caller.source().as_str(),
        action = &*action,
        bucket = event.bucket,
        scope = event.target,
        ttl_secs = span_int(event.ttl_secs),
        expires_at_unix = span_int(unix_secs(event.expires_at)),
        rule_line = span_int(event.rule_line as u64),
        session_grant_id = event.session_grant_id,
        "grant issued"
    );
}

fn issued_line(event: &Issued<'_>, action: &str, now: SystemTime) -> Vec<u8> {
    let mut line = Line::start(now, "grant issued", "granted");
    line.text("grant_id", event.grant_id);
    line.text("caller", event.caller.id());
    line.text("identity_source", event.caller.source().as_str());
    line.text("action", action);
    line.text("bucket", event.bucket);
    line.text("scope", event.target);
    line.number("ttl_secs", event.ttl_secs);
    line.number("expires_at_unix", unix_secs(event.expires_at));
    line.number("rule_line", event.rule_line as u64);
    if let Some(session) = event.session_grant_id {
        line.text("session_grant_id", session);
    }
    line.end()
}

/// The actions as the audit log writes them, `read` or `read+write`.
fn join(actions: &[Action]) -> std::borrow::Cow<'static, str> {
    match actions {
        [one] => one.as_str().into(),
        many => many
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join("+")
            .into(),
    }
}

/// Records a refused request from an identified caller.
pub fn denied(caller: &Caller, action: Action, bucket: &str, target: &str) {
    crate::metrics::grant(action, false);
    let span = tracing::Span::current();
    span.record("decision", "denied");
    span.record("bucket", bucket);
    deliver(|| denied_line(caller, action, bucket, target, SystemTime::now()));
    tracing::info!(
        target: TARGET,
        outcome = "denied",
        caller = caller.id(),
        identity_source = caller.source().as_str(),
        action = action.as_str(),
        bucket,
        scope = target,
        "grant denied"
    );
}

fn denied_line(
    caller: &Caller,
    action: Action,
    bucket: &str,
    target: &str,
    now: SystemTime,
) -> Vec<u8> {
    let mut line = Line::start(now, "grant denied", "denied");
    line.text("caller", caller.id());
    line.text("identity_source", caller.source().as_str());
    line.text("action", action.as_str());
    line.text("bucket", bucket);
    line.text("scope", target);
    line.end()
}

/// An audit event as one JSON object on one line, with the members the log's JSON
/// lines have (`timestamp`, `level`, `message`, `target`) around the event's own.
/// Keys are this module's constants, which need no escaping.
struct Line(Vec<u8>);

impl Line {
    fn start(now: SystemTime, message: &'static str, outcome: &'static str) -> Line {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(&crate::core::utc::rfc3339_micros(now));
        out.extend_from_slice(b"\",\"level\":\"INFO\"");
        let mut line = Line(out);
        line.text("message", message);
        line.text("outcome", outcome);
        line
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn text(&mut self, key: &'static str, value: &str) {
        self.key(key);
        json_string(&mut self.0, value);
    }

    fn number(&mut self, key: &'static str, value: u64) {
        self.key(key);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn end(mut self) -> Vec<u8> {
        self.text("target", TARGET);
        self.0.extend_from_slice(b"}\n");
        self.0
    }
}

/// `text` as a JSON string, as serde_json writes it. Audit values rarely hold a byte
/// JSON escapes (`"`, a backslash, control characters), so such a value is copied whole;
/// serde_json's escaping, a formatter call per run of bytes, cost more per audit line
/// than the rest of the line together.
fn json_string(out: &mut Vec<u8>, text: &str) {
    // The scan has no early exit, so the compiler does it many bytes at a time; it
    // was the largest cost of the audit line byte by byte.
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caller::Source;
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #[test]
        fn json_strings_are_written_as_serde_json_writes_them(text in any::<String>()) {
            let mut ours = Vec::new();
            json_string(&mut ours, &text);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn json_strings_with_escapes_too(text in "[a-z\"\\\\\\x00-\\x1f\\x7f\\u{2028}é]{0,40}") {
            let mut ours = Vec::new();
            json_string(&mut ours, &text);
            prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn every_issued_line_is_one_json_object_with_the_values_given(
            caller in any::<String>(),
            target in any::<String>(),
            session in proptest::option::of(any::<String>()),
            ttl in any::<u64>(),
        ) {
            let caller = Caller::new(caller, Source::Jwt);
            let event = Issued {
                grant_id: "0123456789abcdef0123456789abcdef",
                caller: &caller,
                actions: &[Action::AssumeRead, Action::List],
                bucket: "demo",
                target: &target,
                ttl_secs: ttl,
                expires_at: UNIX_EPOCH + Duration::from_secs(1_796_407_860),
                rule_line: 7,
                session_grant_id: session.as_deref(),
            };
            let line = issued_line(&event, &join(event.actions), UNIX_EPOCH);
            prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert!(line.ends_with(b"}\n"), "{:?}", line);
            let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
            prop_assert_eq!(&parsed["caller"], caller.id());
            prop_assert_eq!(&parsed["scope"], target.as_str());
            prop_assert_eq!(&parsed["ttl_secs"], ttl);
            prop_assert_eq!(parsed.get("session_grant_id").and_then(|v| v.as_str()), session.as_deref());
        }
    }

    #[test]
    fn an_issued_line_has_the_documented_members_in_order() {
        let caller = Caller::new("dev:demo", Source::DevToken);
        let event = Issued {
            grant_id: "43be01b17ba9be3ec95c56edb5ee0973",
            caller: &caller,
            actions: &[Action::Read],
            bucket: "demo",
            target: "public/report.csv",
            ttl_secs: 300,
            expires_at: UNIX_EPOCH + Duration::from_secs(1_796_407_860),
            rule_line: 2,
            session_grant_id: None,
        };
        let now = UNIX_EPOCH + Duration::from_micros(1_796_407_560_256_344);
        let line = issued_line(&event, &join(event.actions), now);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            concat!(
                r#"{"timestamp":"2026-12-04T18:06:00.256344Z","level":"INFO","message":"grant issued","#,
                r#""outcome":"granted","grant_id":"43be01b17ba9be3ec95c56edb5ee0973","caller":"dev:demo","#,
                r#""identity_source":"DevToken","action":"read","bucket":"demo","scope":"public/report.csv","#,
                r#""ttl_secs":300,"expires_at_unix":1796407860,"rule_line":2,"target":"audit"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_denied_line_says_who_asked_for_what_and_nothing_granted() {
        let hostile = "tenant-a/\u{202e}gnp.exe \"quoted\"\n{\"forged\":1}\\ \u{1}";
        let caller = Caller::new(hostile, Source::Mtls);
        let line = denied_line(&caller, Action::Write, "demo", hostile, SystemTime::now());
        let text = String::from_utf8(line).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(event["message"], "grant denied");
        assert_eq!(event["outcome"], "denied");
        assert_eq!(event["caller"], hostile);
        assert_eq!(event["scope"], hostile);
        assert_eq!(event["identity_source"], "Mtls");
        assert_eq!(event["action"], "write");
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["target"], "audit");
        assert!(event.get("forged").is_none());
        assert!(event.get("grant_id").is_none());
        let timestamp = event["timestamp"].as_str().unwrap();
        assert!(
            timestamp.len() == 27 && timestamp.ends_with('Z'),
            "{timestamp}"
        );
    }

    #[test]
    fn grant_ids_are_128_random_bits_in_lowercase_hex() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_grant_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
        // Every hex digit turns up in every position of some id.
        for position in 0..32 {
            let digits: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[position]).collect();
            assert_eq!(digits.len(), 16, "position {position}");
        }
    }

    #[test]
    fn actions_are_joined_with_plus() {
        assert_eq!(join(&[Action::Read]), "read");
        assert_eq!(join(&[Action::Read, Action::Write]), "read+write");
    }
}
