//! `scope`: every parser of a caller's names and free text, on the same input.

use crate::core::text;
use crate::scope::{
    BucketName, ChecksumSha256, HeaderText, MAX_KEY_BYTES, MAX_METADATA_BYTES, MAX_TEXT_BYTES,
    Metadata, ObjectKey, Prefix, VersionId,
};
use crate::upload::{self, UploadId};

/// Parses the input as every kind of name and value; with a newline, also the first
/// line as a prefix and the rest as a key (is the key under it?), and `name=value`
/// lines as user metadata.
///
/// Invariants: an accepted key or prefix has no control or format character and no
/// empty, `.` or `..` segment, and parses back from its `Display`; a prefix ends with
/// `/` and holds no IAM metacharacter; a key under a prefix starts with it and what
/// follows is a key of its own; an accepted bucket is a DNS-safe S3 name; metadata
/// is sorted, printable and within 2 KB; a browser file name always becomes one plain
/// key segment; quotes of a caller's text are bounded.
pub fn scope(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    names(&text);
    if let Some((first, rest)) = text.split_once('\n') {
        names(first);
        names(rest);
        nesting(first, rest);
    }
    metadata(&text);
    file_name(&text);
    echoes(&text);
}

/// Every single-value parser on `s`.
fn names(s: &str) {
    if let Ok(key) = s.parse::<ObjectKey>() {
        assert_eq!(key.as_str(), s, "a key is kept as sent");
        assert!(!s.is_empty() && s.len() <= MAX_KEY_BYTES);
        assert_plain_path(s);
        assert!(!s.starts_with('/') && !s.ends_with('/'));
        assert_eq!(key.to_string().parse::<ObjectKey>().as_ref(), Ok(&key));
    }
    if let Ok(prefix) = s.parse::<Prefix>() {
        assert_eq!(prefix.as_str(), s, "a prefix is kept as sent");
        assert!(s.len() <= MAX_KEY_BYTES);
        let body = s.strip_suffix('/').expect("a prefix ends with '/'");
        assert_plain_path(body);
        assert!(
            !s.contains(['*', '?', '$', '"']),
            "{s:?} holds an IAM metacharacter"
        );
        assert!(prefix.contains(&prefix));
        assert_eq!(prefix.to_string().parse::<Prefix>().as_ref(), Ok(&prefix));
    }
    if let Ok(bucket) = s.parse::<BucketName>() {
        let b = bucket.as_str();
        assert!((3..=63).contains(&b.len()));
        assert!(
            b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        );
        assert!(
            b.split('.')
                .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
        );
        assert!(b.parse::<std::net::Ipv4Addr>().is_err());
    }
    if s.parse::<HeaderText>().is_ok() {
        assert!(!s.is_empty() && s.len() <= MAX_TEXT_BYTES);
        assert!(!s.chars().any(char::is_control), "{s:?} can split a header");
    }
    if s.parse::<VersionId>().is_ok() {
        assert!(!s.is_empty() && s.len() <= MAX_TEXT_BYTES);
        assert!(s.bytes().all(|b| b.is_ascii_graphic()));
    }
    if s.parse::<UploadId>().is_ok() {
        assert!(s.bytes().all(|b| b.is_ascii_graphic()));
    }
    if s.parse::<ChecksumSha256>().is_ok() {
        use base64::Engine;
        let digest = base64::engine::general_purpose::STANDARD.decode(s);
        assert_eq!(digest.map(|d| d.len()), Ok(32));
    }
}

/// What every accepted key and prefix body must be: segments that are neither
/// empty nor `.` or `..`, and no character that splits a line or hides text.
fn assert_plain_path(path: &str) {
    assert!(
        path.split('/').all(|seg| !matches!(seg, "" | "." | "..")),
        "{path:?} has an empty or dot segment"
    );
    assert!(
        !path.chars().any(|c| c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}')
            || crate::core::text::is_format(c)),
        "{path:?} has a control, line separator or format character"
    );
}

/// `prefix` and `key` as a grant compares them.
fn nesting(prefix: &str, key: &str) {
    let Ok(p) = prefix.parse::<Prefix>() else {
        return;
    };
    if let Ok(k) = key.parse::<ObjectKey>() {
        assert_eq!(k.is_under(&p), key.starts_with(prefix));
        if k.is_under(&p) {
            let rest = &key[prefix.len()..];
            assert!(
                rest.parse::<ObjectKey>().is_ok(),
                "{key:?} is under {prefix:?} but {rest:?} is not a key"
            );
        }
    }
    if let Ok(inner) = key.parse::<Prefix>()
        && p.contains(&inner)
        && let Ok(k) = format!("{inner}x").parse::<ObjectKey>()
    {
        assert!(
            k.is_under(&inner) && k.is_under(&p),
            "nesting is transitive"
        );
    }
}

/// `name=value` lines as user metadata.
fn metadata(text: &str) {
    let entries: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .take(32)
        .collect();
    let Ok(metadata) = Metadata::new(entries.iter().copied()) else {
        return;
    };
    let got = metadata.entries();
    assert_eq!(got.len(), entries.len());
    assert!(got.is_sorted(), "metadata is signed in name order");
    let total: usize = got.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(total <= MAX_METADATA_BYTES);
    for (name, value) in got {
        assert!(!name.is_empty());
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        );
        assert!(value.bytes().all(|b| (b' '..=b'~').contains(&b)));
        assert_eq!(value.trim(), value, "HTTP would drop the spaces");
    }
}

/// A browser's file name as the last segment of a key the service picks.
fn file_name(name: &str) {
    let safe = upload::sanitize_file_name(name);
    assert!(!safe.is_empty() && safe.len() <= upload::MAX_FILE_NAME_BYTES);
    assert!(!safe.contains(['/', '\\', '$', '{', '%', '"']), "{safe:?}");
    let key = format!("uploads/caller/{safe}");
    assert!(
        key.parse::<ObjectKey>().is_ok(),
        "{name:?} becomes {safe:?}, which is not a key segment"
    );
}

/// Quotes of caller text in messages are bounded, cut on a character boundary, and
/// say that they were cut; they hold no control character.
fn echoes(s: &str) {
    let quoted = text::echo(s);
    assert!(!quoted.chars().any(char::is_control), "{quoted:?}");
    // At most ten bytes (`\u{10ffff}`) for each byte shown, and the length.
    assert!(quoted.len() <= 10 * text::MAX_ECHO + 32, "{quoted:?}");
    let plain = !s
        .chars()
        .any(|c| text::breaks_lines(c) || text::is_format(c));
    if plain && quoted != s {
        let (cut, _) = quoted
            .rsplit_once("\u{2026} (")
            .expect("a cut quote says how long the value was");
        assert!(cut.len() <= text::MAX_ECHO && s.starts_with(cut));
    }
    let bounded = text::bounded(s, text::MAX_MESSAGE);
    if bounded != s {
        let cut = bounded
            .strip_suffix("\u{2026} (cut)")
            .expect("a cut message says so");
        assert!(cut.len() <= text::MAX_MESSAGE && s.starts_with(cut));
    }
}
