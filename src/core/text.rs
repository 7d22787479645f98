//! Bounds on caller input quoted back in messages.
//!
//! An error that quotes what the caller sent helps it fix the request, but a quote of
//! a 1 MB field makes a 1 MB status message: gRPC carries it in trailers, and trailers
//! over 16 KiB break the stream in common proxies and clients, and fill logs. Every
//! quote goes through [`echo`]; every message and violation list has a ceiling.
//!
//! URLs from the configuration are printed only through [`redact_url`]: user info and
//! query strings carry credentials. An error goes into a log line with its causes
//! through [`Chain`].

use std::borrow::Cow;

/// Longest quote of a caller's value, in bytes.
pub const MAX_ECHO: usize = 64;

/// Longest error message a front door sends, in bytes.
pub const MAX_MESSAGE: usize = 1024;

/// `value` as quoted in a message: whole when short, else its first [`MAX_ECHO`]
/// bytes (cut on a character boundary) and how long it was; control and invisible
/// formatting characters written as escapes (`\r`, `\u{202e}`), so that a quote
/// cannot break or forge the line of a client that logs the message.
pub fn echo(value: &str) -> Cow<'_, str> {
    let shown = cut(value, MAX_ECHO);
    let quote = escape_breaks(shown);
    if shown.len() == value.len() {
        return match quote {
            Cow::Borrowed(_) => Cow::Borrowed(value),
            Cow::Owned(escaped) => Cow::Owned(escaped),
        };
    }
    Cow::Owned(format!("{quote}… ({} bytes)", value.len()))
}

/// `text` (a message that quotes a caller's input whole, such as a parser's) with what
/// can end a line, or reorder or hide text, written as escapes; not cut.
pub fn escape_breaks(text: &str) -> Cow<'_, str> {
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` is quoted as an escape: what can end a line, or reorder or hide text.
fn escaped(c: char) -> bool {
    breaks_lines(c) || is_format(c)
}

/// `message` cut to at most `max` bytes (and a marker), on a character boundary.
pub fn bounded(message: &str, max: usize) -> Cow<'_, str> {
    if message.len() <= max {
        return Cow::Borrowed(message);
    }
    Cow::Owned(format!("{}… (cut)", cut(message, max)))
}

/// `url` with its user info and its query (and fragment) replaced by `[redacted]`,
/// for logs and messages: a JWKS or endpoint URL may carry a password before the host
/// or a token in its query.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    // User info ends at the last `@` before the path. A password written with an
    // unescaped `/`, `?` or `#` moves that boundary, and such a malformed URL is just
    // the one that ends up in an error message; so when the text before the first of
    // those holds a `:` (user:pass) and an `@` comes later, everything up to the last
    // `@` is taken for user info: hiding part of a path beats printing a password.
    let delimiter = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let user_info_end = match rest[..delimiter].rfind('@') {
        Some(at) => Some(at),
        None if rest[..delimiter].contains(':') => rest.rfind('@'),
        None => None,
    };
    let (user_info, rest) = match user_info_end {
        Some(at) => ("[redacted]@", &rest[at + 1..]),
        None => ("", rest),
    };
    let (rest, query) = match rest.find(['?', '#']) {
        Some(at) => (&rest[..at], "?[redacted]"),
        None => (rest, ""),
    };
    format!("{scheme}{user_info}{rest}{query}")
}

/// A URL from the configuration that may hold credentials (user info, a token in the
/// query): `Debug` and `Display` print it through [`redact_url`]; the whole value
/// comes out only through [`SecretUrl::expose`], where the request is made.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL as written, for the one place that requests it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Whether `host` (as in a URL, IPv6 in brackets or not) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An error with its causes, `error: cause: cause`, for an operator's log line
/// (the log's JSON format writes an error's own text only). A cause whose text the
/// line already ends with (an error that quotes its source) is not repeated.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let part = cause.to_string();
            if !text.ends_with(&part) {
                text.push_str(": ");
                text.push_str(&part);
            }
            source = cause.source();
        }
        f.write_str(&text)
    }
}

// === characters that break or hide text ===

/// Whether `text` holds a character that breaks a line ([`breaks_lines`]) or hides,
/// joins or reorders text ([`is_format`]): what no caller id or header value may carry.
pub fn breaks_or_hides(text: &str) -> bool {
    text.chars().any(|c| breaks_lines(c) || is_format(c))
}

/// Whether `c` is a control character or a line or paragraph separator (U+2028,
/// U+2029): anything that can end a line of a header or a log.
pub fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `c` is a Unicode format character (category Cf) that can reorder, join or
/// hide text: soft hyphen, bidi marks, embeddings, overrides and isolates, zero-width
/// characters, invisible operators, the BOM, interlinear annotation, tags.
pub fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{0890}'..='\u{0891}' | '\u{08E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a fixed text and an optional cause.
    #[derive(Debug)]
    struct Link(&'static str, Option<Box<Link>>);

    impl std::fmt::Display for Link {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Link {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    fn chain(links: &[&'static str]) -> Link {
        links
            .iter()
            .rev()
            .fold(None, |cause, text| Some(Link(text, cause.map(Box::new))))
            .unwrap()
    }

    #[test]
    fn a_quote_is_bounded_and_escapes_what_could_break_a_line() {
        assert!(matches!(echo("owner name"), Cow::Borrowed("owner name")));
        assert_eq!(echo("it's \"a\\b\""), "it's \"a\\b\"");
        assert_eq!(echo("owner\r\nx-amz-acl"), "owner\\r\\nx-amz-acl");
        assert_eq!(echo("a\u{202e}b\u{0}"), "a\\u{202e}b\\0");
        let long = format!("\n{}", "x".repeat(100));
        let quoted = echo(&long);
        assert!(
            quoted.starts_with("\\nxxx") && quoted.ends_with("… (101 bytes)"),
            "{quoted}"
        );
        let long = "é".repeat(40);
        assert_eq!(echo(&long), format!("{}… (80 bytes)", "é".repeat(32)));
    }

    #[test]
    fn a_chain_lists_every_cause_in_order_once() {
        let error = chain(&["connection failed", "io error", "Connection refused"]);
        assert_eq!(
            Chain(&error).to_string(),
            "connection failed: io error: Connection refused"
        );
        assert_eq!(Chain(&chain(&["alone"])).to_string(), "alone");
        // An error that quotes its cause (thiserror's `{0}` with `#[source]`) does
        // not say it twice.
        let quoting = chain(&[
            "no usable answer from STS: connection failed",
            "connection failed",
            "tcp connect error",
        ]);
        assert_eq!(
            Chain(&quoting).to_string(),
            "no usable answer from STS: connection failed: tcp connect error"
        );
    }

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(echo("owner"), "owner");
    }

    proptest::proptest! {
        #[test]
        fn no_part_of_a_password_is_printed(password in "[a-z0-9/?#@:%]{0,20}") {
            // The marker starts the password; whatever follows it, it must not survive.
            let url = format!("https://user:Zq{password}@host.example/jwks?t=1");
            let printed = redact_url(&url);
            proptest::prop_assert!(!printed.contains("Zq"), "{url} -> {printed}");
        }
    }

    #[test]
    fn urls_lose_user_info_and_query_when_printed() {
        for (url, want) in [
            (
                "https://user:s3cret@issuer.example/jwks?token=tok3n#x",
                "https://[redacted]@issuer.example/jwks?[redacted]",
            ),
            ("https://issuer.example/jwks", "https://issuer.example/jwks"),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("https://h/p/a@b", "https://h/p/a@b"),
            ("not a url?k=v", "not a url?[redacted]"),
            ("https://u@h/p", "https://[redacted]@h/p"),
            // Passwords with characters that should have been escaped.
            (
                "https://user:pa/ss@host:9000/",
                "https://[redacted]@host:9000/",
            ),
            (
                "https://user:p#ss@host/jwks",
                "https://[redacted]@host/jwks",
            ),
            (
                "https://user:p?ss@host/?t=1",
                "https://[redacted]@host/?[redacted]",
            ),
            ("https://user:p@ss@host/", "https://[redacted]@host/"),
            ("user:pa/ss@host", "[redacted]@host"),
            // A port and an `@` in the path: hidden too (the rule cannot tell).
            ("https://host:9000/a@b", "https://[redacted]@b"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let printed = format!("{:?}", SecretUrl::from("https://u:p@h/?t=1".to_owned()));
        assert!(
            !printed.contains("u:p") && !printed.contains("t=1"),
            "{printed}"
        );
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let quoted = echo(&long);
        assert!(quoted.len() < MAX_ECHO + 20, "{quoted}");
        assert!(quoted.ends_with("(200 bytes)"), "{quoted}");
        let message = bounded(&long, 11);
        assert!(message.starts_with("ééééé…"), "{message}");
    }
}
