//! Bounds on caller input quoted back in messages.
//!
//! An error that quotes what the caller sent helps it fix the request, but a quote of
//! a 1 MB field makes a 1 MB status message: gRPC carries it in trailers, and trailers
//! over 16 KiB break the stream in common proxies and clients, and fill logs. Every
//! quote goes through [`echo`]; every message and violation list has a ceiling.

use std::borrow::Cow;

/// Longest quote of a caller's value, in bytes.
pub const MAX_ECHO: usize = 64;

/// Longest error message a front door sends, in bytes.
pub const MAX_MESSAGE: usize = 1024;

/// `value` as quoted in a message: whole when short, else its first [`MAX_ECHO`]
/// bytes (cut on a character boundary) and how long it was.
pub fn echo(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_ECHO {
        return Cow::Borrowed(value);
    }
    Cow::Owned(format!("{}… ({} bytes)", cut(value, MAX_ECHO), value.len()))
}

/// `message` cut to at most `max` bytes (and a marker), on a character boundary.
pub fn bounded(message: &str, max: usize) -> Cow<'_, str> {
    if message.len() <= max {
        return Cow::Borrowed(message);
    }
    Cow::Owned(format!("{}… (cut)", cut(message, max)))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(echo("owner"), "owner");
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
