//! What a grant may name: buckets, object keys, prefixes, and the few free-text values
//! that end up in a signed request.
//!
//! This is the security core. Every string a caller sends is parsed here into a type
//! whose fields are private, so an unvalidated string cannot reach the signer, the
//! rules or a session policy. The checks close these holes:
//! - `..` or `.` segments: a key that normalises to somewhere else on stores or
//!   proxies that resolve dot segments, escaping the granted prefix;
//! - empty segments (`a//b`, a leading `/`): keys that compare under a prefix as
//!   text but address another path on stores that collapse slashes;
//! - control characters: header and log injection, and keys that display as another;
//! - policy metacharacters in prefixes (`*`, `?`, `$`, `"`): a prefix that widens an
//!   IAM session policy or a rule match;
//! - a prefix without a trailing `/`: `reports` would also open `reports-old/`.
//!
//! It leaves to `rules` the question of who may use which prefix.

use std::fmt;
use std::str::FromStr;

use crate::core::text::{breaks_lines, is_format};

/// S3's limit on the length of an object key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Longest free-text value (content type, content disposition, version id) accepted.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Why a bucket, key, prefix or value was refused. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} bytes long; at most {max} bytes are allowed")]
    TooLong { len: usize, max: usize },
    #[error("contains a control character at byte {position}; remove it")]
    ControlCharacter { position: usize },
    #[error("contains a line or paragraph separator (U+{code:04X}) at byte {position}; remove it")]
    LineSeparator { position: usize, code: u32 },
    #[error("contains an invisible format character (U+{code:04X}) at byte {position}; remove it")]
    FormatCharacter { position: usize, code: u32 },
    #[error("contains an empty path segment ('//', or a leading or trailing '/'); remove it")]
    EmptySegment,
    #[error(
        "contains a '{segment}' path segment, which S3 keeps as it is (it is not resolved \
         as in a file path); remove it"
    )]
    DotSegment { segment: &'static str },
    #[error("must end with '/' so that it cannot also match sibling names")]
    PrefixWithoutSlash,
    #[error("contains '{character}', which has a meaning in IAM policies; remove it")]
    PolicyMetacharacter { character: char },
    #[error(
        "is not a valid S3 bucket name: {reason} (3 to 63 lowercase letters, digits, '.' and '-', \
         starting and ending with a letter or digit)"
    )]
    InvalidBucket { reason: &'static str },
    // Characters are quoted escaped: a control or format character never reaches a
    // message or a log line as itself.
    #[error("contains '{}'; use visible ASCII characters only", .character.escape_debug())]
    InvalidVersionId { character: char },
    #[error(
        "contains '{}' (U+{:04X}); a media type is ASCII: type/subtype and parameters, e.g. image/png",
        .character.escape_debug(),
        u32::from(*.character)
    )]
    InvalidMediaType { character: char },
    #[error(
        "contains '{}'; metadata names may hold lowercase letters, digits, '-' and '_'",
        .character.escape_debug()
    )]
    InvalidMetadataName { character: char },
    #[error(
        "contains '{}'; metadata values must be printable ASCII (S3 sends them as HTTP headers)",
        .character.escape_debug()
    )]
    InvalidMetadataValue { character: char },
    #[error("has leading or trailing spaces, which HTTP drops; remove them")]
    SurroundingSpaces,
    #[error("metadata is {len} bytes (names and values); S3 allows at most {max}")]
    MetadataTooLarge { len: usize, max: usize },
    #[error("is not the base64 of a 32-byte SHA-256 digest (44 characters ending in '=')")]
    InvalidChecksum,
    #[error("min_bytes ({min}) is greater than max_bytes ({max}); send min_bytes <= max_bytes")]
    InvertedRange { min: u64, max: u64 },
    #[error(
        "max_bytes is 0: the form would take empty files only; set max_bytes to the largest size to accept"
    )]
    EmptyRange,
    #[error("{value} bytes is over S3's {max}-byte limit for a single upload")]
    TooLargeUpload { value: u64, max: u64 },
}

/// Text a caller sent, borrowed or owned. A validated type checks it as `&str`, then
/// keeps it: borrowed text is copied once it has passed, owned text (a decoded
/// protobuf field, a JSON body's) is taken as it is, with no copy.
pub trait Text: AsRef<str> + Into<String> {}

impl<T: AsRef<str> + Into<String>> Text for T {}

/// A type made only from text that passed its checks.
pub trait FromText: Sized {
    /// The validated value of `text`.
    ///
    /// # Errors
    /// What is wrong with `text`, as a message that says what to change.
    fn from_text(text: impl Text) -> Result<Self, Error>;
}

/// `str::parse` for the [`FromText`] types: the text is copied once it has passed.
macro_rules! from_str_by_from_text {
    ($($name:ident),+) => {$(
        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                Self::from_text(s)
            }
        }
    )+};
}

from_str_by_from_text!(
    BucketName,
    ObjectKey,
    Prefix,
    HeaderText,
    MediaType,
    VersionId,
    ChecksumSha256
);

/// Rejects control characters (C0, DEL and C1) and Unicode's line and paragraph
/// separators: they inject headers and log lines (a log viewer or a JavaScript string
/// breaks the line at U+2028 as at a newline) and make two different keys print alike.
fn check_no_control(s: &str) -> Result<(), Error> {
    if printable_ascii(s) {
        return Ok(());
    }
    match s.char_indices().find(|(_, c)| breaks_lines(*c)) {
        Some((position, c)) if c.is_control() => Err(Error::ControlCharacter { position }),
        Some((position, c)) => Err(Error::LineSeparator {
            position,
            code: u32::from(c),
        }),
        None => Ok(()),
    }
}

/// Whether `s` is printable ASCII only (space to `~`), which holds no character the
/// checks here refuse: most keys and values are, and a scan without an early exit
/// runs many bytes at a time where decoding characters runs one.
fn printable_ascii(s: &str) -> bool {
    s.bytes().fold(true, |ok, b| ok & (0x20..0x7f).contains(&b))
}

/// Rejects Unicode format characters (category Cf): a bidi override makes
/// `tenant-a/\u{202E}gnp.exe` display as `tenant-a/exe.png`, and zero-width characters
/// make two different keys print alike.
fn check_no_format(s: &str) -> Result<(), Error> {
    // Every format character is outside ASCII.
    if s.is_ascii() {
        return Ok(());
    }
    match s.char_indices().find(|(_, c)| is_format(*c)) {
        Some((position, c)) => Err(Error::FormatCharacter {
            position,
            code: u32::from(c),
        }),
        None => Ok(()),
    }
}

/// Checks the `/`-separated segments of a key or prefix body (a prefix's body is the
/// part before its final `/`).
fn check_segments(path: &str) -> Result<(), Error> {
    for segment in path.split('/') {
        match segment {
            "" => return Err(Error::EmptySegment),
            "." => return Err(Error::DotSegment { segment: "." }),
            ".." => return Err(Error::DotSegment { segment: ".." }),
            _ => {}
        }
    }
    Ok(())
}

// === impl BucketName ===

/// A bucket name that follows S3's naming rules, so it is safe in a URL host or path
/// and in an ARN.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName(String);

impl BucketName {
    /// The name as sent to S3.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromText for BucketName {
    fn from_text(text: impl Text) -> Result<Self, Error> {
        let s = text.as_ref();
        let invalid = |reason| Err(Error::InvalidBucket { reason });
        if s.is_empty() {
            return Err(Error::Empty);
        }
        if s.len() < 3 || s.len() > 63 {
            return invalid("length is not between 3 and 63");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return invalid("it has a character other than a-z, 0-9, '.' and '-'");
        }
        let (first, last) = (s.as_bytes()[0], s.as_bytes()[s.len() - 1]);
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return invalid("it does not start and end with a letter or digit");
        }
        // Pairs of neighbouring bytes, not `str::contains`: its substring search cost
        // about 0.2 µs a pattern, 4 % of a GrantRead's CPU for these three (perf).
        let pairs = || s.as_bytes().windows(2);
        if pairs().any(|pair| pair == b"..") {
            return invalid("it has two '.' in a row");
        }
        if pairs().any(|pair| pair == b".-" || pair == b"-.") {
            return invalid("it has a '.' next to a '-'");
        }
        if s.parse::<std::net::Ipv4Addr>().is_ok() {
            return invalid("it is formatted as an IP address");
        }
        Ok(Self(text.into()))
    }
}

impl From<BucketName> for String {
    fn from(bucket: BucketName) -> String {
        bucket.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl ObjectKey ===

/// An object key that is safe to sign: 1 to 1024 bytes, no control characters, no
/// empty, `.` or `..` segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key as stored in S3.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this key lies under `prefix`. Sound as a plain text comparison because
    /// neither side can hold a dot segment and the prefix ends with `/`.
    pub fn is_under(&self, prefix: &Prefix) -> bool {
        self.0.starts_with(prefix.as_str())
    }
}

impl FromText for ObjectKey {
    fn from_text(text: impl Text) -> Result<Self, Error> {
        let s = text.as_ref();
        if s.is_empty() {
            return Err(Error::Empty);
        }
        if s.len() > MAX_KEY_BYTES {
            return Err(Error::TooLong {
                len: s.len(),
                max: MAX_KEY_BYTES,
            });
        }
        check_no_control(s)?;
        check_no_format(s)?;
        check_segments(s)?;
        Ok(Self(text.into()))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Prefix ===

/// A key prefix that can scope a grant or a session policy: it ends with `/`, has no
/// empty, `.` or `..` segments, no control characters, and none of IAM's policy
/// metacharacters (`*`, `?`, `$`, `"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

/// Characters that mean something in an IAM resource or condition pattern, or that
/// would end a JSON string. A prefix holding one could widen a session policy.
const POLICY_METACHARACTERS: [char; 4] = ['*', '?', '$', '"'];

impl Prefix {
    /// The prefix, always ending in `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` lies under this prefix (or is this prefix).
    pub fn contains(&self, other: &Prefix) -> bool {
        other.0.starts_with(&self.0)
    }
}

impl FromText for Prefix {
    fn from_text(text: impl Text) -> Result<Self, Error> {
        let s = text.as_ref();
        if s.is_empty() {
            return Err(Error::Empty);
        }
        if s.len() > MAX_KEY_BYTES {
            return Err(Error::TooLong {
                len: s.len(),
                max: MAX_KEY_BYTES,
            });
        }
        check_no_control(s)?;
        check_no_format(s)?;
        if let Some(character) = s.chars().find(|c| POLICY_METACHARACTERS.contains(c)) {
            return Err(Error::PolicyMetacharacter { character });
        }
        let Some(body) = s.strip_suffix('/') else {
            return Err(Error::PrefixWithoutSlash);
        };
        check_segments(body)?;
        Ok(Self(text.into()))
    }
}

impl From<Prefix> for String {
    fn from(prefix: Prefix) -> String {
        prefix.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl HeaderText ===

/// Free text that ends up in a signed header or query value (a content type, a
/// content disposition): at most 1024 bytes, no control characters, so it cannot
/// split a header or a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderText(String);

impl HeaderText {
    /// The text as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromText for HeaderText {
    fn from_text(text: impl Text) -> Result<Self, Error> {
        let s = text.as_ref();
        if s.is_empty() {
            return Err(Error::Empty);
        }
        if s.len() > MAX_TEXT_BYTES {
            return Err(Error::TooLong {
                len: s.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        check_no_control(s)?;
        // A download's file name or type that displays otherwise than it is.
        check_no_format(s)?;
        Ok(Self(text.into()))
    }
}

// === impl MediaType ===

/// A content type to pin or to have the store answer with: [`HeaderText`] that is also
/// ASCII, as RFC 9110's media types are. A browser that cannot parse a type (say
/// `image/png` followed by a no-break space) guesses one from the bytes instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType(HeaderText);

impl MediaType {
    /// The type as sent.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl From<MediaType> for HeaderText {
    fn from(media_type: MediaType) -> Self {
        media_type.0
    }
}

impl FromText for MediaType {
    fn from_text(text: impl Text) -> Result<Self, Error> {
        let text = HeaderText::from_text(text)?;
        if let Some(character) = text.as_str().chars().find(|c| !c.is_ascii()) {
            return Err(Error::InvalidMediaType { character });
        }
        Ok(Self(text))
    }
}

// === impl VersionId ===

/// An object version id: opaque to us, but visible ASCII only and bounded, as S3
/// issues them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionId(String);

impl VersionId {
    /// The version id as sent to S3.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromText for VersionId {
    fn from_text(text: impl Text) -> Result<Self, Error> {
        let s = text.as_ref();
        if s.is_empty() {
            return Err(Error::Empty);
        }
        if s.len() > MAX_TEXT_BYTES {
            return Err(Error::TooLong {
                len: s.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        if let Some(character) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(Error::InvalidVersionId { character });
        }
        Ok(Self(text.into()))
    }
}

// === impl Metadata ===

/// S3's limit on user metadata: names and values together, in bytes.
pub const MAX_METADATA_BYTES: usize = 2048;

/// S3's limit on one PUT or POST upload, in bytes (5 GiB).
pub const MAX_UPLOAD_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// User metadata (`x-amz-meta-*`) that is safe to sign and send as headers: names of
/// lowercase letters, digits, `-` and `_`; values of printable ASCII without
/// surrounding spaces; at most 2 KB in all. Sorted by name, so signing is
/// deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Vec<(String, String)>);

/// Which part of a metadata entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// The name `name` is not acceptable.
    Name { name: String, error: Error },
    /// The value of `name` is not acceptable.
    Value { name: String, error: Error },
    /// The whole set is too large.
    Total(Error),
}

impl Metadata {
    /// Validates `entries` (any order; names are lowercased by HTTP anyway, so an
    /// uppercase name is refused rather than silently changed).
    ///
    /// # Errors
    /// The first bad entry, or the size limit.
    pub fn new<N: Text, V: Text>(
        entries: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Metadata, MetadataError> {
        let mut out = Vec::new();
        let mut total = 0;
        for (name_text, value_text) in entries {
            let (name, value) = (name_text.as_ref(), value_text.as_ref());
            let name_error = |error| MetadataError::Name {
                name: name.to_owned(),
                error,
            };
            if name.is_empty() {
                return Err(name_error(Error::Empty));
            }
            if let Some(character) = name
                .chars()
                .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
            {
                return Err(name_error(Error::InvalidMetadataName { character }));
            }
            let value_error = |error| MetadataError::Value {
                name: name.to_owned(),
                error,
            };
            if let Some(character) = value.chars().find(|c| !(' '..='~').contains(c)) {
                return Err(value_error(Error::InvalidMetadataValue { character }));
            }
            if value.trim() != value {
                return Err(value_error(Error::SurroundingSpaces));
            }
            total += name.len() + value.len();
            out.push((name_text.into(), value_text.into()));
        }
        if total > MAX_METADATA_BYTES {
            return Err(MetadataError::Total(Error::MetadataTooLarge {
                len: total,
                max: MAX_METADATA_BYTES,
            }));
        }
        out.sort();
        Ok(Metadata(out))
    }

    /// The entries, sorted by name.
    pub fn entries(&self) -> &[(String, String)] {
        &self.0
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// === impl ChecksumSha256 ===

/// A SHA-256 digest in base64, as `x-amz-checksum-sha256` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumSha256(String);

impl ChecksumSha256 {
    /// The base64 text, as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromText for ChecksumSha256 {
    fn from_text(text: impl Text) -> Result<Self, Error> {
        let s = text.as_ref();
        use base64::Engine;
        // Decoded into the digest's own 32 bytes: no buffer sized by the caller's
        // text, and no allocation on a write grant's path. The base64 of 32 bytes is
        // always 44 characters.
        if s.len() != 44 {
            return Err(Error::InvalidChecksum);
        }
        let mut digest = [0u8; 32];
        match base64::engine::general_purpose::STANDARD.decode_slice(s, &mut digest) {
            Ok(32) => Ok(Self(text.into())),
            _ => Err(Error::InvalidChecksum),
        }
    }
}

// === impl SizeRange ===

/// An inclusive range of upload sizes, within S3's single-upload limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    min: u64,
    max: u64,
}

impl SizeRange {
    /// A range from `min` to `max` bytes.
    ///
    /// # Errors
    /// [`Error::InvertedRange`] when `min > max`; [`Error::EmptyRange`] when `max` is 0
    /// (a range a client left unset, which would take empty files only);
    /// [`Error::TooLargeUpload`] when `max` is over 5 GiB.
    pub fn new(min: u64, max: u64) -> Result<SizeRange, Error> {
        if max == 0 {
            return Err(Error::EmptyRange);
        }
        if min > max {
            return Err(Error::InvertedRange { min, max });
        }
        if max > MAX_UPLOAD_BYTES {
            return Err(Error::TooLargeUpload {
                value: max,
                max: MAX_UPLOAD_BYTES,
            });
        }
        Ok(SizeRange { min, max })
    }

    /// Smallest size allowed.
    pub fn min(self) -> u64 {
        self.min
    }

    /// Largest size allowed.
    pub fn max(self) -> u64 {
        self.max
    }
}

/// Checks an exact upload size against S3's single-upload limit.
///
/// # Errors
/// [`Error::TooLargeUpload`] over 5 GiB.
pub fn upload_length(value: u64) -> Result<u64, Error> {
    if value > MAX_UPLOAD_BYTES {
        return Err(Error::TooLargeUpload {
            value,
            max: MAX_UPLOAD_BYTES,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    #[test]
    fn refused_characters_are_quoted_escaped() {
        for (character, quoted) in [
            ('\n', "'\\n'"),
            ('\u{0}', "'\\0'"),
            ('\u{202e}', "'\\u{202e}'"),
            ('\u{1b}', "'\\u{1b}'"),
            ('é', "'é'"),
        ] {
            for error in [
                Error::InvalidMetadataValue { character },
                Error::InvalidMetadataName { character },
                Error::InvalidVersionId { character },
                Error::InvalidMediaType { character },
            ] {
                let text = error.to_string();
                assert!(text.contains(quoted), "{character:?}: {text}");
                assert!(
                    !text.chars().any(|c| c.is_control() || c == '\u{202e}'),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn media_types_are_ascii_header_text() {
        assert_eq!(
            "text/plain; charset=utf-8"
                .parse::<MediaType>()
                .unwrap()
                .as_str(),
            "text/plain; charset=utf-8"
        );
        for (bad, says) in [
            ("image/png\u{a0}", "(U+00A0)"),
            ("image/png\u{3000}", "(U+3000)"),
            ("text/plain; name=\"é\"", "(U+00E9)"),
        ] {
            let err = bad.parse::<MediaType>().unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("image/png"), "{err}");
        }
        assert!(matches!(
            "image/png\r\n".parse::<MediaType>(),
            Err(Error::ControlCharacter { .. })
        ));
    }

    #[test]
    fn metadata_names_and_values_are_checked() {
        let ok = Metadata::new([("owner", "team-a"), ("build_id", "42")]).unwrap();
        assert_eq!(ok.entries()[0].0, "build_id", "sorted by name");
        for (name, want) in [
            ("", Error::Empty),
            ("Owner", Error::InvalidMetadataName { character: 'O' }),
            ("a b", Error::InvalidMetadataName { character: ' ' }),
            ("a:b", Error::InvalidMetadataName { character: ':' }),
        ] {
            assert_eq!(
                Metadata::new([(name, "v")]),
                Err(MetadataError::Name {
                    name: name.into(),
                    error: want
                })
            );
        }
        for (value, want) in [
            (
                "caf\u{e9}",
                Error::InvalidMetadataValue {
                    character: '\u{e9}',
                },
            ),
            (
                "a\r\nx-evil: 1",
                Error::InvalidMetadataValue { character: '\r' },
            ),
            (" padded", Error::SurroundingSpaces),
        ] {
            assert_eq!(
                Metadata::new([("k", value)]),
                Err(MetadataError::Value {
                    name: "k".into(),
                    error: want
                })
            );
        }
    }

    #[test]
    fn metadata_over_2kb_is_refused() {
        let big = "v".repeat(1000);
        assert!(Metadata::new([("a", big.as_str()), ("b", big.as_str())]).is_ok());
        let err = Metadata::new([("a", big.as_str()), ("b", big.as_str()), ("c", &big[..50])]);
        assert_eq!(
            err,
            Err(MetadataError::Total(Error::MetadataTooLarge {
                len: 2053,
                max: 2048
            }))
        );
    }

    #[test]
    fn checksum_must_be_base64_of_32_bytes() {
        let good = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert!(good.parse::<ChecksumSha256>().is_ok());
        for bad in [
            "",
            "not base64!",
            "AAAA",
            &good[..40],
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=",
        ] {
            assert_eq!(
                bad.parse::<ChecksumSha256>(),
                Err(Error::InvalidChecksum),
                "{bad}"
            );
        }
    }

    #[test]
    fn size_range_must_be_ordered_and_within_5_gib() {
        assert!(SizeRange::new(0, 10).is_ok());
        assert!(SizeRange::new(10, 10).is_ok());
        assert_eq!(SizeRange::new(0, 0), Err(Error::EmptyRange));
        assert_eq!(
            SizeRange::new(11, 10),
            Err(Error::InvertedRange { min: 11, max: 10 })
        );
        assert!(matches!(
            SizeRange::new(0, MAX_UPLOAD_BYTES + 1),
            Err(Error::TooLargeUpload { .. })
        ));
        assert!(upload_length(MAX_UPLOAD_BYTES).is_ok());
        assert!(upload_length(MAX_UPLOAD_BYTES + 1).is_err());
    }

    fn key(s: &str) -> Result<ObjectKey, Error> {
        s.parse()
    }

    fn prefix(s: &str) -> Result<Prefix, Error> {
        s.parse()
    }

    #[test]
    fn plain_key_is_accepted() {
        assert_eq!(
            key("reports/2026/q3.pdf").unwrap().as_str(),
            "reports/2026/q3.pdf"
        );
    }

    #[test]
    fn empty_key_is_rejected() {
        assert_eq!(key(""), Err(Error::Empty));
    }

    #[test]
    fn key_over_1024_bytes_is_rejected() {
        assert!(key(&"a".repeat(1024)).is_ok());
        assert_eq!(
            key(&"a".repeat(1025)),
            Err(Error::TooLong {
                len: 1025,
                max: 1024
            })
        );
        // Bytes, not characters: 342 three-byte characters are 1026 bytes.
        assert!(matches!(key(&"€".repeat(342)), Err(Error::TooLong { .. })));
    }

    #[test]
    fn dot_dot_segment_is_rejected() {
        for k in ["a/../b", "../a", "a/..", ".."] {
            assert_eq!(key(k), Err(Error::DotSegment { segment: ".." }), "{k}");
        }
    }

    #[test]
    fn dot_segment_is_rejected() {
        for k in ["a/./b", "./a", "a/.", "."] {
            assert_eq!(key(k), Err(Error::DotSegment { segment: "." }), "{k}");
        }
    }

    #[test]
    fn dots_inside_a_segment_are_fine() {
        for k in ["a/..b", "a/b..", "...", "a/.hidden", "v1.2/x"] {
            assert!(key(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn empty_segment_is_rejected() {
        for k in ["a//b", "/a", "a/", "/"] {
            assert_eq!(key(k), Err(Error::EmptySegment), "{k}");
        }
    }

    #[test]
    fn control_characters_are_rejected() {
        for k in ["a\nb", "a\rb", "a\0", "\u{7f}x", "x\u{85}y", "tab\there"] {
            assert!(
                matches!(key(k), Err(Error::ControlCharacter { .. })),
                "{k:?}"
            );
        }
        assert_eq!(key("ab\ncd"), Err(Error::ControlCharacter { position: 2 }));
    }

    #[test]
    fn line_and_paragraph_separators_are_rejected_in_keys_and_prefixes() {
        for (c, code) in [('\u{2028}', 0x2028), ('\u{2029}', 0x2029)] {
            assert_eq!(
                key(&format!("logs/a{c}b")),
                Err(Error::LineSeparator { position: 6, code })
            );
            assert_eq!(
                format!("tenant{c}/").parse::<Prefix>(),
                Err(Error::LineSeparator { position: 6, code })
            );
        }
        // A control character before a separator is reported as what it is.
        assert_eq!(
            key("a\nb\u{2028}"),
            Err(Error::ControlCharacter { position: 1 })
        );
        assert!(
            Error::LineSeparator {
                position: 3,
                code: 0x2028
            }
            .to_string()
            .contains("U+2028")
        );
    }

    #[test]
    fn format_characters_are_rejected_in_keys_and_prefixes() {
        assert_eq!(
            key("tenant-a/\u{202E}gnp.exe"),
            Err(Error::FormatCharacter {
                position: 9,
                code: 0x202E
            })
        );
        for c in [
            '\u{200B}',
            '\u{200D}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            assert!(
                matches!(key(&format!("a/b{c}c")), Err(Error::FormatCharacter { .. })),
                "U+{:04X}",
                u32::from(c)
            );
            assert!(
                matches!(
                    format!("a{c}/").parse::<Prefix>(),
                    Err(Error::FormatCharacter { .. })
                ),
                "U+{:04X}",
                u32::from(c)
            );
        }
        // Letters of other scripts, and combining marks, are fine.
        assert!(key("dossiers/résumé/日本語/e\u{0301}.txt").is_ok());
    }

    #[test]
    fn key_outside_prefix_is_not_under_it() {
        let p = prefix("reports/").unwrap();
        assert!(key("reports/x").unwrap().is_under(&p));
        assert!(!key("reports2/x").unwrap().is_under(&p));
        assert!(!key("reports").unwrap().is_under(&p));
        assert!(!key("other/reports/x").unwrap().is_under(&p));
    }

    #[test]
    fn prefix_without_trailing_slash_is_rejected() {
        assert_eq!(prefix("reports"), Err(Error::PrefixWithoutSlash));
    }

    #[test]
    fn prefix_with_policy_metacharacter_is_rejected() {
        for (p, c) in [
            ("a*/", '*'),
            ("a?/", '?'),
            ("${aws:username}/", '$'),
            ("a\"/", '"'),
        ] {
            assert_eq!(
                prefix(p),
                Err(Error::PolicyMetacharacter { character: c }),
                "{p}"
            );
        }
    }

    #[test]
    fn prefix_with_bad_segments_is_rejected() {
        assert_eq!(prefix("/"), Err(Error::EmptySegment));
        assert_eq!(prefix("a//"), Err(Error::EmptySegment));
        assert_eq!(prefix("a/../"), Err(Error::DotSegment { segment: ".." }));
        assert_eq!(prefix("./"), Err(Error::DotSegment { segment: "." }));
    }

    #[test]
    fn nested_prefix_is_contained() {
        let outer = prefix("tenants/a/").unwrap();
        assert!(outer.contains(&prefix("tenants/a/jobs/").unwrap()));
        assert!(outer.contains(&outer));
        assert!(!outer.contains(&prefix("tenants/ab/").unwrap()));
        assert!(!outer.contains(&prefix("tenants/").unwrap()));
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["demo", "my-bucket.logs", "a1b", &"x".repeat(63)] {
            assert!(ok.parse::<BucketName>().is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "UPPER",
            "-lead",
            "trail-",
            "a..b",
            "a.-b",
            "192.168.1.1",
            "has space",
            "under_score",
            &"x".repeat(64),
        ] {
            assert!(
                matches!(bad.parse::<BucketName>(), Err(Error::InvalidBucket { .. })),
                "{bad}"
            );
        }
        assert_eq!("".parse::<BucketName>(), Err(Error::Empty));
        // The reason says which rule the name breaks.
        for (bad, reason) in [
            ("de..mo", "two '.' in a row"),
            ("de.-mo", "a '.' next to a '-'"),
            ("de-.mo", "a '.' next to a '-'"),
        ] {
            let message = bad.parse::<BucketName>().unwrap_err().to_string();
            assert!(message.contains(reason), "{bad}: {message}");
        }
    }

    #[test]
    fn header_text_refuses_line_breaks_and_format_characters() {
        for good in [
            "attachment; filename=\"a.pdf\"",
            "attachment; filename=\"résumé.pdf\"",
        ] {
            assert!(good.parse::<HeaderText>().is_ok(), "{good}");
        }
        assert!(matches!(
            "text/plain\r\nx-evil: 1".parse::<HeaderText>(),
            Err(Error::ControlCharacter { position: 10 })
        ));
        // A download named "\u{202E}fdp.exe" would display as "exe.pdf".
        assert!(matches!(
            "attachment; filename=\"\u{202E}fdp.exe\"".parse::<HeaderText>(),
            Err(Error::FormatCharacter {
                position: 22,
                code: 0x202E
            })
        ));
    }

    #[test]
    fn version_id_is_visible_ascii() {
        assert!(
            "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
                .parse::<VersionId>()
                .is_ok()
        );
        assert!(matches!(
            "a b".parse::<VersionId>(),
            Err(Error::InvalidVersionId { character: ' ' })
        ));
    }

    fn segment() -> impl Strategy<Value = String> {
        // Mostly ordinary characters, with the troublesome ones mixed in.
        proptest::string::string_regex("[a-z0-9.*?$\"€ _-]{1,8}").unwrap()
    }

    fn candidate() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(segment(), 1..5).prop_map(|s| s.join("/")),
            ".{0,40}",
        ]
    }

    /// The character checks one character at a time, with no shortcut for ASCII.
    fn checked_per_character(s: &str) -> Result<(), Error> {
        for (position, c) in s.char_indices() {
            if c.is_control() {
                return Err(Error::ControlCharacter { position });
            }
            if matches!(c, '\u{2028}' | '\u{2029}') {
                return Err(Error::LineSeparator {
                    position,
                    code: u32::from(c),
                });
            }
        }
        match s.char_indices().find(|(_, c)| is_format(*c)) {
            Some((position, c)) => Err(Error::FormatCharacter {
                position,
                code: u32::from(c),
            }),
            None => Ok(()),
        }
    }

    proptest! {
        #[test]
        fn character_checks_agree_with_a_per_character_scan(
            s in "[ -~\u{0}-\u{1f}\u{7f}\u{85}\u{a0}\u{ad}\u{2028}\u{2029}\u{202e}\u{200b}é€𝄞]{0,40}"
        ) {
            prop_assert_eq!(
                check_no_control(&s).and_then(|()| check_no_format(&s)),
                checked_per_character(&s)
            );
        }

        #[test]
        fn checksum_check_agrees_with_a_full_decode(
            s in "[A-Za-z0-9+/]{40,44}={0,2}|[A-Za-z0-9+/=_-]{0,48}"
        ) {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(&s);
            prop_assert_eq!(
                s.parse::<ChecksumSha256>().is_ok(),
                decoded.is_ok_and(|bytes| bytes.len() == 32),
                "{}", s
            );
        }

        #[test]
        fn bucket_pair_checks_agree_with_substring_search(s in "[a-z0-9.-]{3,10}") {
            let message = s.parse::<BucketName>().err().map(|e| e.to_string());
            let ends_ok = |b: u8| b.is_ascii_alphanumeric();
            if ends_ok(s.as_bytes()[0]) && ends_ok(s.as_bytes()[s.len() - 1]) {
                let says = |reason: &str| message.as_deref().is_some_and(|m| m.contains(reason));
                if s.contains("..") {
                    prop_assert!(says("two '.' in a row"), "{s}: {message:?}");
                } else if s.contains(".-") || s.contains("-.") {
                    prop_assert!(says("a '.' next to a '-'"), "{s}: {message:?}");
                } else {
                    prop_assert!(!says("two '.'") && !says("next to a '-'"), "{s}: {message:?}");
                }
            }
        }

        #[test]
        fn accepted_keys_have_no_dot_or_empty_segments_or_controls(s in candidate()) {
            if let Ok(k) = s.parse::<ObjectKey>() {
                let k = k.as_str();
                prop_assert!(!k.is_empty() && k.len() <= MAX_KEY_BYTES);
                prop_assert!(!k.contains("//") && !k.starts_with('/') && !k.ends_with('/'));
                prop_assert!(k.split('/').all(|seg| seg != "." && seg != ".."));
                prop_assert!(!k.chars().any(char::is_control));
            }
        }

        #[test]
        fn key_display_round_trips(s in candidate()) {
            if let Ok(k) = s.parse::<ObjectKey>() {
                prop_assert_eq!(k.to_string().parse::<ObjectKey>().unwrap(), k);
            }
        }

        #[test]
        fn accepted_prefixes_end_in_slash_and_hold_no_metacharacters(s in candidate()) {
            if let Ok(p) = s.parse::<Prefix>() {
                let p = p.as_str();
                prop_assert!(p.ends_with('/'));
                prop_assert!(!p.contains(POLICY_METACHARACTERS));
                prop_assert!(!p.contains("//") && !p.starts_with('/'));
                prop_assert!(p.split('/').all(|seg| seg != "." && seg != ".."));
            }
        }

        #[test]
        fn a_key_under_a_prefix_starts_with_it_and_no_sibling_is_under(
            p in prop::collection::vec("[a-z]{1,4}", 1..3),
            rest in prop::collection::vec("[a-z0-9]{1,4}", 1..3),
        ) {
            let prefix: Prefix = format!("{}/", p.join("/")).parse().unwrap();
            let inside: ObjectKey = format!("{}{}", prefix, rest.join("/")).parse().unwrap();
            prop_assert!(inside.is_under(&prefix));
            let sibling: ObjectKey =
                format!("{}x/{}", prefix.as_str().trim_end_matches('/'), rest.join("/"))
                    .parse()
                    .unwrap();
            prop_assert!(!sibling.is_under(&prefix));
        }

        #[test]
        fn owned_text_is_judged_as_borrowed_text_is(s in candidate()) {
            fn same<T: FromText + PartialEq + fmt::Debug>(s: &str) -> Result<(), TestCaseError> {
                prop_assert_eq!(T::from_text(s.to_owned()), T::from_text(s));
                Ok(())
            }
            same::<BucketName>(&s)?;
            same::<ObjectKey>(&s)?;
            same::<Prefix>(&s)?;
            same::<HeaderText>(&s)?;
            same::<MediaType>(&s)?;
            same::<VersionId>(&s)?;
            same::<ChecksumSha256>(&s)?;
        }
    }
}
