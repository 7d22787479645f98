//! SigV4's percent-encoding (`UriEncode` in the AWS docs) and lowercase hex.
//!
//! SigV4 encodes every byte except the unreserved characters `A-Z a-z 0-9 - . _ ~`,
//! as `%XX` with uppercase hex, over the UTF-8 bytes; a space is `%20`, never `+`.
//! In an S3 object key the `/` stays as is; everywhere else it is `%2F`. The encoded
//! text is both the canonical form the signature covers and a valid URL, so the signer
//! writes it once, into the output URL, and hashes slices of that.
//!
//! Everything here appends to a caller's buffer and never allocates on its own.

/// Which bytes pass through unencoded; a table, because this runs per byte of every
/// key, value and session token on the hot path.
static UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Whether `b` is one of SigV4's unreserved bytes.
pub(crate) fn is_unreserved(b: u8) -> bool {
    UNRESERVED[usize::from(b)]
}

/// Appends `text` percent-encoded for a query name or value (`/` becomes `%2F`).
pub(crate) fn encode_query(out: &mut String, text: &str) {
    encode(out, text, false);
}

/// Appends an object key percent-encoded for the URI path: each segment encoded
/// once, the `/` between segments kept (S3 does not double-encode).
pub(crate) fn encode_path(out: &mut String, key: &str) {
    encode(out, key, true);
}

/// How many bytes `encode_*` appends at most for `text`: three per byte.
pub(crate) fn encoded_len_bound(text: &str) -> usize {
    text.len() * 3
}

fn encode(out: &mut String, text: &str, keep_slash: bool) {
    let bytes = text.as_bytes();
    // Copy runs of unreserved bytes with one `push_str` each: most keys and values
    // are mostly unreserved, so this is a few memcpys instead of a push per byte.
    // A non-empty run is ASCII, so it starts and ends on character boundaries; an
    // empty one (between two bytes of one encoded character) is skipped.
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            continue;
        }
        if run_start < i {
            out.push_str(&text[run_start..i]);
        }
        out.push('%');
        out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
        out.push(char::from(HEX_UPPER[usize::from(b & 0xf)]));
        run_start = i + 1;
    }
    out.push_str(&text[run_start..]);
}

/// `bytes` as lowercase hex, as SigV4 writes hashes and signatures.
pub(crate) fn hex_lower(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX_LOWER[usize::from(b >> 4)];
        out[2 * i + 1] = HEX_LOWER[usize::from(b & 0xf)];
    }
    out
}

/// Appends lowercase hex to a `String`.
pub(crate) fn push_hex_lower(out: &mut String, bytes: &[u8; 32]) {
    let hex = hex_lower(bytes);
    out.push_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query(s: &str) -> String {
        let mut out = String::new();
        encode_query(&mut out, s);
        out
    }

    fn path(s: &str) -> String {
        let mut out = String::new();
        encode_path(&mut out, s);
        out
    }

    #[test]
    fn unreserved_characters_pass_through() {
        let unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
        assert_eq!(query(unreserved), unreserved);
        assert_eq!(path(unreserved), unreserved);
    }

    #[test]
    fn space_is_percent_20_not_plus() {
        // The AWS docs single this out: "The space character ... must be encoded as
        // %20 (and not as '+')".
        assert_eq!(query("a b"), "a%20b");
        assert_eq!(query("a+b"), "a%2Bb");
    }

    #[test]
    fn slash_is_kept_in_keys_only() {
        // The AWS docs' example: the key `photos/Jan/sample.jpg` keeps its slashes.
        assert_eq!(path("photos/Jan/sample.jpg"), "photos/Jan/sample.jpg");
        assert_eq!(query("photos/Jan/sample.jpg"), "photos%2FJan%2Fsample.jpg");
    }

    #[test]
    fn reserved_ascii_is_encoded_with_uppercase_hex() {
        assert_eq!(
            query("!\"#$%&'()*+,/:;<=>?@[\\]^`{|}"),
            "%21%22%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%5E%60%7B%7C%7D"
        );
        // The AWS docs' example of a value with an equals sign and a slash (the
        // X-Amz-Credential scope).
        assert_eq!(
            query("AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
            "AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        );
    }

    #[test]
    fn percent_is_encoded_once_never_passed_through() {
        // A key that looks encoded is still just text to S3.
        assert_eq!(path("a%20b"), "a%2520b");
        assert_eq!(query("%"), "%25");
    }

    #[test]
    fn utf8_bytes_are_each_encoded() {
        assert_eq!(query("ü"), "%C3%BC");
        assert_eq!(path("€/日本"), "%E2%82%AC/%E6%97%A5%E6%9C%AC");
        assert_eq!(query("😀"), "%F0%9F%98%80");
        assert_eq!(path("a ü/b~c*d"), "a%20%C3%BC/b~c%2Ad");
    }

    #[test]
    fn bound_covers_the_worst_case() {
        for s in ["", "abc", "   ", "€€", "a/b c"] {
            assert!(query(s).len() <= encoded_len_bound(s), "{s}");
        }
        assert_eq!(query("€€").len(), encoded_len_bound("€€"));
    }

    #[test]
    fn hex_is_lowercase_and_complete() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x0f;
        let mut out = String::new();
        push_hex_lower(&mut out, &bytes);
        assert_eq!(out, format!("ab{}0f", "0".repeat(60)));
    }

    /// The AWS docs' `UriEncode`, byte by byte, as plainly as it can be written.
    fn naive(s: &str, keep_slash: bool) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                b'/' if keep_slash => "/".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_the_naive_encoder(s in any::<String>()) {
            prop_assert_eq!(query(&s), naive(&s, false));
            prop_assert_eq!(path(&s), naive(&s, true));
        }

        #[test]
        fn appends_without_touching_what_is_there(prefix in "[a-z%]{0,4}", s in any::<String>()) {
            let mut out = prefix.clone();
            encode_query(&mut out, &s);
            prop_assert_eq!(out, format!("{prefix}{}", naive(&s, false)));
        }
    }
}
