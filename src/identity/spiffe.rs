//! SPIFFE IDs (`spiffe://TRUST-DOMAIN/PATH`), parsed once and then trusted.
//!
//! Both certificate sources ([`super::mtls`] and [`super::xfcc`]) turn the URI SAN they
//! find into a [`SpiffeId`] here, and check its trust domain against the operator's list
//! with [`TrustDomains`]. Syntax follows the SPIFFE ID specification: a lowercase
//! trust domain of `[a-z0-9.-_]`, a non-empty path of segments of `[a-zA-Z0-9.-_]`, no
//! empty, `.` or `..` segment, no query, fragment, port, user info or percent-encoding,
//! at most 2048 bytes. A caller id that passed this can be used in rules and prefix
//! templates without ever smuggling a `/`, `..` or wildcard into a segment.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID accepted, as the specification recommends.
const MAX_LEN: usize = 2048;
/// The longest trust domain accepted (a DNS name's limit).
const MAX_TRUST_DOMAIN_LEN: usize = 255;
const SCHEME: &str = "spiffe://";

/// A syntactically valid SPIFFE ID with a workload path.
///
/// Built only through [`FromStr`]; `Display` prints it back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// The whole ID, e.g. `spiffe://prod.example/ns/billing/sa/reporter`.
    raw: String,
    /// Where the path starts in `raw` (the index of its first `/`).
    path_start: usize,
}

/// Why a string is not a SPIFFE ID. Messages say what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a SPIFFE ID: expected spiffe://TRUST-DOMAIN/PATH")]
    NotSpiffe,
    #[error("the SPIFFE ID is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("the SPIFFE ID has no trust domain")]
    EmptyTrustDomain,
    #[error(
        "the SPIFFE ID's trust domain may hold only lowercase letters, digits, '.', '-' and '_'"
    )]
    BadTrustDomain,
    #[error(
        "the SPIFFE ID has no path; a workload ID looks like spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/NAME"
    )]
    NoPath,
    #[error("the SPIFFE ID's path has an empty, '.' or '..' segment")]
    BadSegment,
    #[error("the SPIFFE ID's path may hold only letters, digits, '.', '-', '_' and '/'")]
    BadPathCharacter,
}

// === impl SpiffeId ===

impl SpiffeId {
    /// The trust domain, e.g. `prod.example`.
    pub fn trust_domain(&self) -> &str {
        &self.raw[SCHEME.len()..self.path_start]
    }

    /// The path, starting with `/`, e.g. `/ns/billing/sa/reporter`.
    pub fn path(&self) -> &str {
        &self.raw[self.path_start..]
    }

    /// The path's segments, each non-empty and neither `.` nor `..`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path()[1..].split('/')
    }

    /// `(namespace, service account)` when the path is Kubernetes-shaped,
    /// `/ns/NAMESPACE/sa/NAME` (as Istio, Linkerd and SPIRE's k8s workload registrar
    /// write it); `None` for any other path.
    pub fn kubernetes(&self) -> Option<(&str, &str)> {
        let mut s = self.segments();
        match (s.next(), s.next(), s.next(), s.next(), s.next()) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if s.len() > MAX_LEN {
            return Err(Error::TooLong);
        }
        // The scheme is case-insensitive in URIs but the SPIFFE spec requires lowercase;
        // accepting only lowercase keeps one spelling per identity for rule matching.
        let rest = s.strip_prefix(SCHEME).ok_or(Error::NotSpiffe)?;
        let (domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(domain)?;
        if path.is_empty() || path == "/" {
            return Err(Error::NoPath);
        }
        for segment in path[1..].split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(Error::BadSegment);
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            {
                return Err(Error::BadPathCharacter);
            }
        }
        Ok(SpiffeId {
            raw: s.to_owned(),
            path_start: SCHEME.len() + domain.len(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Checks a trust domain's syntax: non-empty, at most 255 bytes, `[a-z0-9.-_]` only
/// (so no port, user info, upper case or percent-encoding).
///
/// # Errors
/// [`Error::EmptyTrustDomain`], [`Error::TooLong`] or [`Error::BadTrustDomain`].
pub fn validate_trust_domain(domain: &str) -> Result<(), Error> {
    if domain.is_empty() {
        return Err(Error::EmptyTrustDomain);
    }
    if domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(Error::TooLong);
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(Error::BadTrustDomain);
    }
    Ok(())
}

// === impl TrustDomains ===

/// The trust domains one source accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustDomains(Vec<String>);

impl TrustDomains {
    /// The accepted domains. Syntax is checked by config validation.
    pub fn new(domains: &[String]) -> Self {
        Self(domains.to_vec())
    }

    /// Whether `id` belongs to an accepted trust domain (exact, case-sensitive match;
    /// both sides are lowercase by construction).
    pub fn contains(&self, id: &SpiffeId) -> bool {
        self.0.iter().any(|d| d == id.trust_domain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SpiffeId, Error> {
        s.parse()
    }

    #[test]
    fn kubernetes_shaped_id_parses_into_its_parts() {
        let id = parse("spiffe://prod.example/ns/billing/sa/reporter").unwrap();
        assert_eq!(id.trust_domain(), "prod.example");
        assert_eq!(id.path(), "/ns/billing/sa/reporter");
        assert_eq!(id.kubernetes(), Some(("billing", "reporter")));
        assert_eq!(
            id.to_string(),
            "spiffe://prod.example/ns/billing/sa/reporter"
        );
    }

    #[test]
    fn other_paths_are_valid_but_not_kubernetes() {
        let id = parse("spiffe://prod.example/workload/batch-1").unwrap();
        assert_eq!(id.kubernetes(), None);
        let id = parse("spiffe://prod.example/ns/a/sa/b/extra").unwrap();
        assert_eq!(id.kubernetes(), None);
    }

    #[test]
    fn other_schemes_are_rejected() {
        for s in [
            "https://prod.example/ns/a/sa/b",
            "SPIFFE://prod.example/ns/a/sa/b",
            "spiffe:/prod.example/ns/a/sa/b",
            "prod.example/ns/a/sa/b",
            "",
        ] {
            assert_eq!(parse(s), Err(Error::NotSpiffe), "{s}");
        }
    }

    #[test]
    fn trust_domain_must_be_lowercase_dns_like() {
        assert_eq!(parse("spiffe:///ns/a/sa/b"), Err(Error::EmptyTrustDomain));
        for s in [
            "spiffe://Prod.example/ns/a/sa/b",
            "spiffe://prod.example:443/ns/a/sa/b",
            "spiffe://user@prod.example/ns/a/sa/b",
            "spiffe://prod%2eexample/ns/a/sa/b",
        ] {
            assert_eq!(parse(s), Err(Error::BadTrustDomain), "{s}");
        }
    }

    #[test]
    fn id_without_path_is_rejected() {
        assert_eq!(parse("spiffe://prod.example"), Err(Error::NoPath));
        assert_eq!(parse("spiffe://prod.example/"), Err(Error::NoPath));
    }

    #[test]
    fn dot_dot_and_empty_segments_are_rejected() {
        for s in [
            "spiffe://prod.example/ns/../sa/b",
            "spiffe://prod.example/ns/./sa/b",
            "spiffe://prod.example/ns//sa/b",
            "spiffe://prod.example/ns/a/sa/b/",
        ] {
            assert_eq!(parse(s), Err(Error::BadSegment), "{s}");
        }
    }

    #[test]
    fn query_fragment_wildcards_and_escapes_are_rejected() {
        for s in [
            "spiffe://prod.example/ns/a/sa/b?x=1",
            "spiffe://prod.example/ns/a/sa/b#frag",
            "spiffe://prod.example/ns/*/sa/b",
            "spiffe://prod.example/ns/a%2Fb/sa/c",
            "spiffe://prod.example/ns/a b/sa/c",
            "spiffe://prod.example/ns/a\n/sa/c",
        ] {
            assert_eq!(parse(s), Err(Error::BadPathCharacter), "{s:?}");
        }
    }

    #[test]
    fn overlong_id_is_rejected() {
        let s = format!("spiffe://prod.example/{}", "a".repeat(MAX_LEN));
        assert_eq!(parse(&s), Err(Error::TooLong));
    }

    #[test]
    fn trust_domain_membership_is_exact() {
        let domains = TrustDomains::new(&["prod.example".into()]);
        assert!(domains.contains(&parse("spiffe://prod.example/ns/a/sa/b").unwrap()));
        assert!(!domains.contains(&parse("spiffe://prod.example.evil/ns/a/sa/b").unwrap()));
        assert!(!domains.contains(&parse("spiffe://evil.prod.example/ns/a/sa/b").unwrap()));
    }
}
