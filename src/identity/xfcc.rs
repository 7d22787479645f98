//! Mesh-forwarded client certificates: the `x-forwarded-client-cert` (XFCC) header that
//! Envoy (and so Istio) writes after terminating the client's mTLS itself.
//!
//! The header is only as trustworthy as whoever wrote it: any client can send one. It
//! is believed only when the operator enables it (`identity.xfcc.enabled`) **and** the
//! TCP peer of this connection is in `trusted_peers` (the sidecar on loopback, or the
//! mesh's gateways); otherwise it is ignored, and its presence logged without its
//! value.
//!
//! Which element: Envoy appends one element per proxy, at the *end* ("A proxy can
//! append the current client certificate information as an XFCC element, to the end of
//! the request's XFCC header after a comma", Envoy docs, HTTP header manipulation).
//! So the last element was written by the trusted proxy next to this service and
//! describes the client that proxy authenticated; earlier elements came from further
//! away, possibly from the client itself, and are never read. The caller id is that
//! element's `URI` (the client certificate's URI SAN): exactly one, a SPIFFE ID in
//! `trust_domains`, exactly as for direct mTLS.
//!
//! Envoy must therefore forward with `APPEND_FORWARD` or `SANITIZE_SET` and
//! `set_current_client_cert_details.uri = true` (Istio's sidecar default).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

use super::spiffe::TrustDomains;
use super::{Caller, SanError, Source};

/// The header's name (lowercase, as gRPC metadata keys are).
pub const HEADER: &str = "x-forwarded-client-cert";

/// Longest header value parsed; a longer one is refused as malformed.
const MAX_HEADER_LEN: usize = 64 * 1024;

/// `[identity.xfcc]`: whether and from whom to believe the XFCC header.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XfccConfig {
    /// Believe the header at all. Off by default.
    pub enabled: bool,
    /// TCP peers (CIDR blocks) allowed to set it, e.g. `["127.0.0.1/32", "::1/128"]`
    /// for a sidecar.
    pub trusted_peers: Vec<Cidr>,
    /// SPIFFE trust domains whose workloads may call, e.g. `["cluster.local"]`.
    pub trust_domains: Vec<String>,
}

// === impl Cidr ===

/// An IP network, `ADDRESS/PREFIX-LENGTH` (IPv4 or IPv6), with host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a string is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("'{0}' is not a CIDR block; write ADDRESS/LENGTH, e.g. 10.0.0.0/8 or ::1/128")]
    Syntax(String),
    #[error("'{0}': the prefix length is longer than the address")]
    PrefixTooLong(String),
    #[error("'{0}' trusts every address; name the proxies' addresses")]
    Everything(String),
    #[error("'{0}' has host bits set; did you mean {1}?")]
    HostBits(String, String),
    #[error(
        "'{0}' is an IPv4-mapped block, which no peer matches (peers count as IPv4); write {1}"
    )]
    Mapped(String, String),
}

impl Cidr {
    /// Whether `addr` is inside. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a
    /// dual-stack listener reports IPv4 peers) counts as its IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                mask_v4(u32::from(a), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask_v6(u128::from(a), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `a` with all but its first `prefix` bits cleared (`prefix` at most 32).
fn mask_v4(a: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => a & (u32::MAX << (32 - u32::from(p))),
    }
}

/// `a` with all but its first `prefix` bits cleared (`prefix` at most 128).
fn mask_v6(a: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => a & (u128::MAX << (128 - u32::from(p))),
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(s.to_owned());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(syntax)?;
        let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        let (max, masked) = match addr {
            IpAddr::V4(a) => (
                32,
                IpAddr::from(mask_v4(u32::from(a), prefix.min(32)).to_be_bytes()),
            ),
            IpAddr::V6(a) => (
                128,
                IpAddr::from(mask_v6(u128::from(a), prefix.min(128)).to_be_bytes()),
            ),
        };
        if prefix > max {
            return Err(CidrError::PrefixTooLong(s.to_owned()));
        }
        if prefix == 0 {
            return Err(CidrError::Everything(s.to_owned()));
        }
        if masked != addr {
            return Err(CidrError::HostBits(
                s.to_owned(),
                format!("{masked}/{prefix}"),
            ));
        }
        // `contains` compares a mapped peer (`::ffff:10.0.0.1`) as IPv4, so a mapped
        // block would silently trust no one. With its host bits clear, its prefix is
        // at least 96.
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Err(CidrError::Mapped(
                s.to_owned(),
                format!("{v4}/{}", prefix - 96),
            ));
        }
        Ok(Cidr {
            network: addr,
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// === parsing the header ===

/// Why an XFCC value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the header is empty")]
    Empty,
    #[error("the header is too long")]
    TooLong,
    #[error("a quoted value is not closed")]
    UnclosedQuote,
    #[error("a key-value pair has no '='")]
    NoEquals,
    #[error("text after a closing quote")]
    AfterQuote,
    #[error("the header is not visible ASCII")]
    NotText,
}

/// One XFCC element: the key-value pairs one proxy added, in order. Keys are kept as
/// written (trimmed) and compared case-insensitively; values are unquoted and
/// unescaped, borrowed from the header unless an escaped quote had to be removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element<'a>(Vec<(&'a str, Cow<'a, str>)>);

impl<'a> Element<'a> {
    /// Every value of `key` (any case), in order.
    pub fn values<'k>(&'k self, key: &'k str) -> impl Iterator<Item = &'k str> + 'k {
        self.0
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_ref())
    }
}

/// Parses an XFCC value into its elements, first (furthest) to last (nearest).
///
/// Grammar (Envoy): elements separated by `,`; pairs by `;`; key and value by `=`;
/// a value containing `,`, `;` or `=` is double-quoted, with `\"` for a quote inside.
///
/// # Errors
/// [`ParseError`] for an empty or overlong value, an unclosed quote, a pair without
/// `=`, or text after a closing quote.
pub fn parse(value: &str) -> Result<Vec<Element<'_>>, ParseError> {
    let mut elements = vec![Element::default()];
    each_pair(value, |pair| {
        if pair.starts_element {
            elements.push(Element::default());
        }
        elements
            .last_mut()
            .expect("elements starts non-empty and only grows")
            .0
            .push((pair.key, pair.value));
    })?;
    Ok(elements)
}

/// One key-value pair of an XFCC value, as [`each_pair`] reads it.
struct Pair<'a> {
    /// The first pair of an element after the first.
    starts_element: bool,
    /// The key as written, trimmed.
    key: &'a str,
    value: Cow<'a, str>,
}

/// Reads an XFCC value's pairs in order, handing each to `on_pair`: the one reading
/// of the grammar, which [`parse`] collects and [`Xfcc::caller`] reads through without
/// keeping what it does not need. Nothing is copied but a value with an escaped quote.
///
/// Every delimiter is ASCII, so the text is scanned as bytes and cut only next to
/// one, on a character boundary.
fn each_pair<'a>(value: &'a str, mut on_pair: impl FnMut(Pair<'a>)) -> Result<(), ParseError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(ParseError::TooLong);
    }
    if value.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let bytes = value.as_bytes();
    let mut pos = 0;
    let mut pairs = 0usize;
    let mut starts_element = false;
    loop {
        // Key, up to '='.
        let key_start = pos;
        pos = memchr::memchr3(b'=', b',', b';', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
        if bytes.get(pos) != Some(&b'=') {
            if value[key_start..pos].trim().is_empty() && pos + 1 >= bytes.len() {
                // Trailing separator: tolerated.
                return finish(pairs);
            }
            return Err(ParseError::NoEquals);
        }
        let key = &value[key_start..pos];
        pos += 1;
        // Value, quoted or up to the next separator.
        let (val, end) = if bytes.get(pos) == Some(&b'"') {
            pos += 1;
            let val = quoted(value, &mut pos)?;
            match bytes.get(pos) {
                Some(&c @ (b',' | b';')) => {
                    pos += 1;
                    (val, Some(c))
                }
                None => (val, None),
                Some(_) => return Err(ParseError::AfterQuote),
            }
        } else {
            let start = pos;
            pos = memchr::memchr2(b',', b';', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
            let end = bytes.get(pos).copied();
            let val = Cow::Borrowed(&value[start..pos]);
            pos += 1;
            (val, end)
        };
        on_pair(Pair {
            starts_element,
            key: key.trim(),
            value: val,
        });
        pairs += 1;
        starts_element = false;
        match end {
            Some(b',') => starts_element = true,
            Some(_) => {}
            None => return finish(pairs),
        }
    }
}

/// A quoted value from just after its opening quote: `pos` ends just after the
/// closing one. `\"` stands for a quote; any other backslash is itself.
fn quoted<'a>(value: &'a str, pos: &mut usize) -> Result<Cow<'a, str>, ParseError> {
    let bytes = value.as_bytes();
    let start = *pos;
    // Text before the last escaped quote, unescaped; none while there was none.
    let mut unescaped: Option<String> = None;
    let mut piece = start;
    loop {
        let Some(quote) = memchr::memchr(b'"', &bytes[*pos..]).map(|i| *pos + i) else {
            return Err(ParseError::UnclosedQuote);
        };
        *pos = quote + 1;
        // The byte before is the opening quote, an escaped quote's, or the value's.
        if bytes[quote - 1] == b'\\' {
            let text = unescaped.get_or_insert_with(String::new);
            text.push_str(&value[piece..quote - 1]);
            text.push('"');
            piece = *pos;
            continue;
        }
        return Ok(match unescaped {
            None => Cow::Borrowed(&value[start..quote]),
            Some(mut text) => {
                text.push_str(&value[piece..quote]);
                Cow::Owned(text)
            }
        });
    }
}

/// The end of a value whose last pair has been read: at least one pair, or empty.
fn finish(pairs: usize) -> Result<(), ParseError> {
    if pairs == 0 {
        return Err(ParseError::Empty);
    }
    Ok(())
}

// === the source ===

/// What the XFCC source needs at call time.
#[derive(Debug, Clone)]
pub(crate) struct Xfcc {
    enabled: bool,
    trusted_peers: Vec<Cidr>,
    domains: TrustDomains,
}

/// Whether this request's XFCC header may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Enabled and the peer is trusted.
    Trusted,
    /// `identity.xfcc.enabled` is false.
    Disabled,
    /// The TCP peer is not in `trusted_peers` (or unknown).
    UntrustedPeer,
}

impl Xfcc {
    pub(crate) fn new(config: &XfccConfig) -> Self {
        Self {
            enabled: config.enabled,
            trusted_peers: config.trusted_peers.clone(),
            domains: TrustDomains::new(&config.trust_domains),
        }
    }

    /// Whether the header from `peer` may be believed.
    pub(crate) fn trust(&self, peer: Option<IpAddr>) -> Trust {
        if !self.enabled {
            return Trust::Disabled;
        }
        match peer {
            Some(ip) if self.trusted_peers.iter().any(|c| c.contains(ip)) => Trust::Trusted,
            _ => Trust::UntrustedPeer,
        }
    }

    /// The caller of a trusted XFCC value: the last element's single `URI`, a SPIFFE
    /// ID in one of the trust domains.
    ///
    /// # Errors
    /// [`SanError::Malformed`] when the value does not parse; otherwise as
    /// [`super::mtls::caller`].
    pub(crate) fn caller(&self, value: &str) -> Result<Caller, SanError> {
        // Only the nearest element's URIs are kept; the whole value is still read, so
        // a malformed one is refused wherever the fault is.
        let mut uris: Vec<Cow<'_, str>> = Vec::new();
        each_pair(value, |pair| {
            if pair.starts_element {
                uris.clear();
            }
            if pair.key.eq_ignore_ascii_case("uri") {
                uris.push(pair.value);
            }
        })
        .map_err(SanError::Malformed)?;
        super::spiffe_caller(&uris, &self.domains, Source::ForwardedCert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_cidr_matches_its_addresses_only() {
        let c = cidr("10.0.0.0/8");
        assert!(c.contains(ip("10.0.0.1")));
        assert!(c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let host = cidr("127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
    }

    #[test]
    fn ipv4_mapped_ipv6_peer_matches_ipv4_cidr() {
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn ipv6_cidr_matches_its_addresses_only() {
        let c = cidr("fd00::/8");
        assert!(c.contains(ip("fd12:3456::1")));
        assert!(!c.contains(ip("fe80::1")));
        assert!(!c.contains(ip("10.0.0.1")));
        assert!(cidr("::1/128").contains(ip("::1")));
    }

    #[test]
    fn bad_cidrs_are_rejected_with_a_fix() {
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/+8".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong(_))
        ));
        assert!(matches!(
            "0.0.0.0/0".parse::<Cidr>(),
            Err(CidrError::Everything(_))
        ));
        assert!(matches!(
            "::/0".parse::<Cidr>(),
            Err(CidrError::Everything(_))
        ));
        assert_eq!(
            "10.1.0.0/8".parse::<Cidr>(),
            Err(CidrError::HostBits(
                "10.1.0.0/8".into(),
                "10.0.0.0/8".into()
            ))
        );
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn ipv4_mapped_cidr_is_refused_with_the_ipv4_block() {
        // Peers are compared by their IPv4 form, so this block would hold no peer.
        assert_eq!(
            "::ffff:10.0.0.0/104".parse::<Cidr>(),
            Err(CidrError::Mapped(
                "::ffff:10.0.0.0/104".into(),
                "10.0.0.0/8".into()
            ))
        );
        assert!(matches!(
            "::ffff:127.0.0.1/128".parse::<Cidr>(),
            Err(CidrError::Mapped(_, fix)) if fix == "127.0.0.1/32"
        ));
    }

    // Examples from Envoy's documentation (HTTP header manipulation,
    // x-forwarded-client-cert).
    const ENVOY_ONE: &str = "By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject=\"/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client\";URI=http://testclient.lyft.com";
    const ENVOY_TWO: &str = "By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;URI=http://testclient.lyft.com,By=http://backend.lyft.com;Hash=9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e;URI=http://frontend.lyft.com";
    const ENVOY_DNS: &str = "By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject=\"/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client\";URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com";
    // As Istio's sidecar writes it.
    const ISTIO: &str = "By=spiffe://cluster.local/ns/storage/sa/storage-grants;Hash=2d6d8a1e4f8b7c1f0e0b6d1e9a3f0c2b7d5e4a9c8b7a6f5e4d3c2b1a0f9e8d7c;Subject=\"\";URI=spiffe://cluster.local/ns/billing/sa/reporter";

    #[test]
    fn envoy_single_element_parses() {
        let e = parse(ENVOY_ONE).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].values("by").collect::<Vec<_>>(),
            ["http://frontend.lyft.com"]
        );
        assert_eq!(
            e[0].values("subject").collect::<Vec<_>>(),
            ["/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"]
        );
        assert_eq!(
            e[0].values("uri").collect::<Vec<_>>(),
            ["http://testclient.lyft.com"]
        );
    }

    #[test]
    fn envoy_two_elements_parse_in_order() {
        let e = parse(ENVOY_TWO).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].values("uri").collect::<Vec<_>>(),
            ["http://testclient.lyft.com"]
        );
        assert_eq!(
            e[1].values("by").collect::<Vec<_>>(),
            ["http://backend.lyft.com"]
        );
        assert_eq!(
            e[1].values("uri").collect::<Vec<_>>(),
            ["http://frontend.lyft.com"]
        );
    }

    #[test]
    fn repeated_keys_are_all_kept() {
        let e = parse(ENVOY_DNS).unwrap();
        assert_eq!(
            e[0].values("dns").collect::<Vec<_>>(),
            ["lyft.com", "www.lyft.com"]
        );
    }

    #[test]
    fn quoted_values_keep_separators_and_escaped_quotes() {
        let e = parse(r#"Subject="CN=a,O=\"b\";c";URI=spiffe://td/x"#).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].values("subject").collect::<Vec<_>>(),
            [r#"CN=a,O="b";c"#]
        );
        assert_eq!(e[0].values("uri").collect::<Vec<_>>(), ["spiffe://td/x"]);
    }

    #[test]
    fn keys_are_case_insensitive() {
        let e = parse("uri=spiffe://td/x;BY=spiffe://td/y").unwrap();
        assert_eq!(e[0].values("uri").count(), 1);
        assert_eq!(e[0].values("by").count(), 1);
    }

    #[test]
    fn malformed_values_are_rejected() {
        assert_eq!(parse(""), Err(ParseError::Empty));
        assert_eq!(parse("   "), Err(ParseError::Empty));
        assert_eq!(parse("URI"), Err(ParseError::NoEquals));
        assert_eq!(parse("By=a;URI"), Err(ParseError::NoEquals));
        assert_eq!(parse("Subject=\"abc"), Err(ParseError::UnclosedQuote));
        assert_eq!(parse("Subject=\"abc\"def"), Err(ParseError::AfterQuote));
        assert_eq!(
            parse(&"a".repeat(MAX_HEADER_LEN + 1)),
            Err(ParseError::TooLong)
        );
    }

    fn source(enabled: bool) -> Xfcc {
        Xfcc::new(&XfccConfig {
            enabled,
            trusted_peers: vec![cidr("127.0.0.1/32"), cidr("10.0.0.0/8")],
            trust_domains: vec!["cluster.local".into()],
        })
    }

    #[test]
    fn header_is_trusted_only_when_enabled_and_from_a_trusted_peer() {
        assert_eq!(source(true).trust(Some(ip("127.0.0.1"))), Trust::Trusted);
        assert_eq!(source(true).trust(Some(ip("10.3.2.1"))), Trust::Trusted);
        assert_eq!(
            source(true).trust(Some(ip("192.168.1.1"))),
            Trust::UntrustedPeer
        );
        assert_eq!(source(true).trust(None), Trust::UntrustedPeer);
        assert_eq!(source(false).trust(Some(ip("127.0.0.1"))), Trust::Disabled);
    }

    #[test]
    fn istio_header_gives_the_client_workload() {
        let caller = source(true).caller(ISTIO).unwrap();
        assert_eq!(caller.id(), "spiffe://cluster.local/ns/billing/sa/reporter");
        assert_eq!(caller.source(), Source::ForwardedCert);
        assert_eq!(caller.attribute("namespace"), Some("billing"));
        assert_eq!(caller.attribute("service_account"), Some("reporter"));
        assert_eq!(caller.attribute("trust_domain"), Some("cluster.local"));
    }

    #[test]
    fn the_nearest_element_decides_not_a_forged_earlier_one() {
        // A client sent its own XFCC claiming to be the admin; the trusted sidecar
        // appended the element for the certificate the client really presented.
        let value = format!("URI=spiffe://cluster.local/ns/admin/sa/root,{ISTIO}");
        let caller = source(true).caller(&value).unwrap();
        assert_eq!(caller.id(), "spiffe://cluster.local/ns/billing/sa/reporter");
    }

    #[test]
    fn nearest_element_without_uri_is_refused_even_if_an_earlier_has_one() {
        let value = "URI=spiffe://cluster.local/ns/admin/sa/root,By=spiffe://cluster.local/ns/storage/sa/sg;Hash=abc";
        assert_eq!(source(true).caller(value), Err(SanError::NoUri));
    }

    #[test]
    fn two_uris_in_the_nearest_element_are_refused() {
        let value = "URI=spiffe://cluster.local/ns/a/sa/b;URI=spiffe://cluster.local/ns/c/sa/d";
        assert_eq!(source(true).caller(value), Err(SanError::SeveralUris(2)));
    }

    #[test]
    fn non_spiffe_uri_and_foreign_trust_domain_are_refused() {
        assert!(matches!(
            source(true).caller(ENVOY_ONE),
            Err(SanError::NotSpiffe(_))
        ));
        assert_eq!(
            source(true).caller("URI=spiffe://other.example/ns/a/sa/b"),
            Err(SanError::UntrustedDomain("other.example".into()))
        );
    }

    #[test]
    fn values_are_read_where_they_are_unless_a_quote_was_unescaped() {
        let e = parse(r#"By=spiffe://td/a;Subject="CN=x,O=y";DNS="say \"hi\"""#).unwrap();
        let values: Vec<_> = e[0].0.iter().map(|(_, v)| v).collect();
        assert!(matches!(values[0], Cow::Borrowed("spiffe://td/a")));
        assert!(matches!(values[1], Cow::Borrowed("CN=x,O=y")));
        assert!(matches!(values[2], Cow::Owned(v) if v == r#"say "hi""#));
    }

    /// A value as a proxy writes it: quoted when it holds a separator, `=` or a
    /// quote (escaped), or when it is empty.
    fn written(value: &str) -> String {
        if value.is_empty() || value.contains([',', ';', '=', '"']) {
            format!("\"{}\"", value.replace('"', "\\\""))
        } else {
            value.to_owned()
        }
    }

    proptest::proptest! {
        #[test]
        fn a_written_value_parses_back_to_its_elements(
            elements in proptest::collection::vec(
                proptest::collection::vec(("[A-Za-z]{1,8}", "[ -\\[\\]-~]{0,12}"), 1..4),
                1..4,
            )
        ) {
            let text = elements
                .iter()
                .map(|pairs| {
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={}", written(v)))
                        .collect::<Vec<_>>()
                        .join(";")
                })
                .collect::<Vec<_>>()
                .join(",");
            let parsed = parse(&text).unwrap();
            let read: Vec<Vec<(String, String)>> = parsed
                .iter()
                .map(|e| e.0.iter().map(|(k, v)| ((*k).to_owned(), v.to_string())).collect())
                .collect();
            proptest::prop_assert_eq!(read, elements);
        }

        #[test]
        fn the_caller_is_the_parsed_nearest_elements_uri(
            text in "(URI|uri|By|Hash)=(\"?spiffe://(cluster\\.local|x\\.example)/ns/[a-z]{1,3}/sa/[a-z]{1,3}\"?|[a-z;,=\" ]{0,6})([;,] ?(URI|By)=[a-z:/.\"]{0,12}){0,4}[;, ]{0,2}"
        ) {
            let xfcc = source(true);
            let through_parse = parse(&text).map_err(SanError::Malformed).and_then(|elements| {
                let uris: Vec<&str> = elements.last().unwrap().values("uri").collect();
                crate::identity::spiffe_caller(&uris, &xfcc.domains, Source::ForwardedCert)
            });
            proptest::prop_assert_eq!(xfcc.caller(&text), through_parse);
        }
    }

    #[test]
    fn malformed_header_is_refused() {
        assert!(matches!(
            source(true).caller("URI=\"spiffe://cluster.local/ns/a/sa/b"),
            Err(SanError::Malformed(ParseError::UnclosedQuote))
        ));
    }
}
