//! One structured audit event per grant decision, on the `audit` tracing target (the
//! README documents its fields, "Audit"; `audit.file` also writes them to a file of
//! their own), and the decision on the call's span.
//!
//! An event records who got what and until when (caller, action, bucket, key or
//! prefix, TTL, grant id, the rule that allowed it), never the grant itself: no URL,
//! signature, token or secret is ever a field here. The span gets the decision, the
//! bucket and the grant id, so one id joins the response, the audit event, the trace
//! and (for STS) the session name.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::caller::Caller;
use crate::core::Action;

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

/// Records an issued grant.
pub fn issued(event: &Issued<'_>) {
    for &action in event.actions {
        crate::metrics::grant(action, true);
    }
    let span = tracing::Span::current();
    span.record("decision", "granted");
    span.record("bucket", event.bucket);
    span.record("grant_id", event.grant_id);
    tracing::info!(
        target: "audit",
        outcome = "granted",
        grant_id = event.grant_id,
        caller = event.caller.id(),
        identity_source = event.caller.source().as_str(),
        action = &*join(event.actions),
        bucket = event.bucket,
        scope = event.target,
        ttl_secs = event.ttl_secs,
        expires_at_unix = unix_secs(event.expires_at),
        rule_line = event.rule_line,
        session_grant_id = event.session_grant_id,
        "grant issued"
    );
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
    tracing::info!(
        target: "audit",
        outcome = "denied",
        caller = caller.id(),
        identity_source = caller.source().as_str(),
        action = action.as_str(),
        bucket,
        scope = target,
        "grant denied"
    );
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
