//! Multipart uploads: the validated values (upload ids, part numbers and their
//! limits) and the upload token that binds an upload to the caller that started it.
//!
//! # The upload token
//! `StartMultipartUpload` answers an opaque token; every later step takes it instead
//! of a bucket, key and upload id. It is `v1.<claims>.<tag>`: the claims (bucket, key,
//! upload id, caller, expiry, and what `Start` pinned) in base64url JSON, and an
//! HMAC-SHA256 tag over them under a key only the service holds. Decisions:
//! - **Bound to the caller.** A token presented by anyone else is refused before any
//!   call reaches the store: an upload id alone (visible to whoever saw a part URL)
//!   cannot be completed or aborted by someone else.
//! - **Tamper-evident.** Changing one byte of the claims (another key, a later
//!   expiry, `create_only` off) breaks the tag; the tag is compared in constant time.
//! - **Rotation.** The first configured key signs; every configured key verifies, so
//!   a key being retired keeps old tokens working until they expire, and replicas
//!   that share the keys agree.
//! - **Stateless.** Nothing is stored per upload: any replica can serve any step.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::scope::{BucketName, ObjectKey};
use crate::secret::Secret;

/// S3's smallest part, except the last.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest object, which a multipart upload may reach (5 TiB).
pub const MAX_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// S3's highest part number.
pub const MAX_PARTS: u16 = 10_000;
/// Most parts one `GrantUploadParts` signs: a response of 1,000 URLs is about 1 MB,
/// well under gRPC's default 4 MiB message limit.
pub const MAX_PARTS_PER_CALL: usize = 1_000;
/// How long after its token expired an upload may still be aborted by its caller:
/// discarding the parts is what a client does when it gives up, often after the
/// token's life; an upload left behind costs storage until the bucket's lifecycle
/// rule removes it.
pub const ABORT_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest upload-token key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Why a multipart value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A part number outside 1..=10,000.
    #[error("part number {0} is outside 1..=10000")]
    PartNumber(u64),
    /// An upload id S3 could not have issued.
    #[error("is not an upload id (1 to 1024 visible ASCII characters)")]
    UploadId,
}

// === impl PartNumber ===

/// A part number, 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartNumber(u16);

impl PartNumber {
    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u64> for PartNumber {
    type Error = Error;

    fn try_from(n: u64) -> Result<Self, Error> {
        match u16::try_from(n) {
            Ok(n) if (1..=MAX_PARTS).contains(&n) => Ok(PartNumber(n)),
            _ => Err(Error::PartNumber(n)),
        }
    }
}

impl fmt::Display for PartNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === impl UploadId ===

/// The store's id of a multipart upload: opaque, but visible ASCII and bounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// The id as the store sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if !is_store_token(s) {
            return Err(Error::UploadId);
        }
        Ok(UploadId(s.to_owned()))
    }
}

/// Whether `s` can be a token the store answered (an upload id, an ETag): 1 to 1,024
/// visible ASCII characters, nothing a header or log line could be broken with.
pub fn is_store_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic())
}

// === browser file names ===

/// Longest file name kept in a browser upload's key, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// A browser's file name made safe to end a key the service chooses: only its last
/// path component; letters, digits and ` ._-()+,=@` kept, anything else (controls,
/// format characters, `$`, `{`, `%`, quotes, …) replaced by `_`; no leading dot (so
/// never `.` or `..`); at most 255 bytes; `file` when nothing is left. The browser
/// never chooses the prefix: this is only the last segment.
pub fn sanitize_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut out = String::with_capacity(last.len().min(MAX_FILE_NAME_BYTES));
    for c in last.chars() {
        let keep = c.is_alphanumeric() && !c.is_control() && !crate::core::text::is_format(c)
            || " ._-()+,=@".contains(c);
        let c = if keep { c } else { '_' };
        if out.len() + c.len_utf8() > MAX_FILE_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    let trimmed = out.trim_start_matches(['.', ' ']).trim_end_matches(' ');
    if trimmed.is_empty() {
        "file".to_owned()
    } else {
        trimmed.to_owned()
    }
}

// === the token ===

/// What a token says about its upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The bucket.
    pub bucket: BucketName,
    /// The object's key.
    pub key: ObjectKey,
    /// The store's upload id.
    pub upload_id: UploadId,
    /// The caller that started the upload; only it may continue it.
    pub caller: String,
    /// When the token stops working (whole seconds since the epoch).
    pub expires_at: SystemTime,
    /// Complete with `If-None-Match: *`.
    pub create_only: bool,
    /// The size the completed object must have, when `Start` named one.
    pub expected_size: Option<u64>,
    /// Parts must pin a SHA-256 checksum.
    pub checksum_sha256: bool,
}

/// The JSON form of [`Claims`]: short names, since the token travels in URLs.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    b: String,
    k: String,
    u: String,
    c: String,
    e: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    o: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    h: bool,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// None was sent.
    #[error(
        "must not be empty: send the token the upload's start returned (StartMultipartUpload's upload, or the uploadId of POST /s3/multipart)"
    )]
    Empty,
    /// Not a token of this service, or altered.
    #[error(
        "is not an upload token of this service (or was altered); use the one the upload's start returned (StartMultipartUpload's upload, or the uploadId of POST /s3/multipart)"
    )]
    Invalid,
    /// Past its expiry.
    #[error("has expired; start a new upload")]
    Expired,
    /// Presented by a caller other than the one that started the upload.
    #[error("belongs to another caller")]
    OtherCaller,
}

/// Where the upload-token keys come from: keys written in the configuration, decoded
/// and checked with it, and files (a Kubernetes Secret's), read when the service
/// starts: the configuration can then be checked where those files are not
/// (`--check-config --skip-files`).
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// `uploads.token_keys`, decoded.
    pub inline: Vec<Secret<Vec<u8>>>,
    /// `uploads.token_key_files`: one base64 key each.
    pub files: Vec<std::path::PathBuf>,
}

/// Why the upload-token keys could not be loaded; [`KeyError::field`] names the setting.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key file that does not hold a key.
    #[error("{}: {KEY_FORMAT}", .0.display())]
    NotAKey(std::path::PathBuf),
    /// The keys together are not usable.
    #[error("{0}")]
    Invalid(&'static str),
}

impl KeyError {
    /// The setting at fault.
    pub fn field(&self) -> &'static str {
        match self {
            KeyError::Read { .. } | KeyError::NotAKey(_) => "uploads.token_key_files",
            KeyError::Invalid(_) => "uploads",
        }
    }
}

/// What a key must be, for the messages that refuse one.
pub const KEY_FORMAT: &str =
    "each key must be base64 of at least 32 random bytes (head -c 32 /dev/urandom | base64)";

/// A key as written (base64, surrounding whitespace ignored), when it is one.
pub fn decode_key(text: &str) -> Option<Secret<Vec<u8>>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|k| k.len() >= MIN_KEY_BYTES)
        .map(Secret::new)
}

impl KeySources {
    /// The keys, signing key first; `None` when none is configured.
    ///
    /// # Errors
    /// A file that cannot be read or holds no key.
    pub fn load(&self) -> Result<Option<TokenKeys>, KeyError> {
        let mut keys = self.inline.clone();
        for file in &self.files {
            let text =
                crate::core::files::read_regular_text(file, crate::core::files::MAX_TOKEN_FILE)
                    .map_err(|source| KeyError::Read {
                        path: file.clone(),
                        source,
                    })?;
            keys.push(decode_key(&text).ok_or_else(|| KeyError::NotAKey(file.clone()))?);
        }
        if keys.is_empty() {
            return Ok(None);
        }
        TokenKeys::new(keys).map(Some).map_err(KeyError::Invalid)
    }
}

/// The keys that sign and verify upload tokens: the first signs, all verify.
pub struct TokenKeys(Vec<Secret<Vec<u8>>>);

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKeys({} key(s), [redacted])", self.0.len())
    }
}

type HmacSha256 = Hmac<Sha256>;

impl TokenKeys {
    /// Keys from configuration, signing key first.
    ///
    /// # Errors
    /// None given, or one shorter than [`MIN_KEY_BYTES`].
    pub fn new(keys: Vec<Secret<Vec<u8>>>) -> Result<TokenKeys, &'static str> {
        if keys.is_empty() {
            return Err("at least one key is needed");
        }
        if keys.iter().any(|k| k.expose().len() < MIN_KEY_BYTES) {
            return Err("every key must be at least 32 bytes");
        }
        Ok(TokenKeys(keys))
    }

    /// One random key, for a single replica without configured keys.
    pub fn random() -> TokenKeys {
        use ring::rand::SecureRandom;
        let mut key = vec![0u8; MIN_KEY_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("the system random generator is available");
        TokenKeys(vec![Secret::new(key)])
    }

    fn mac(key: &Secret<Vec<u8>>, signed: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(key.expose()).expect("HMAC takes keys of any length");
        mac.update(signed);
        mac
    }

    /// The token for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let wire = Wire {
            b: claims.bucket.to_string(),
            k: claims.key.as_str().to_owned(),
            u: claims.upload_id.as_str().to_owned(),
            c: claims.caller.clone(),
            e: unix_secs(claims.expires_at),
            o: claims.create_only,
            s: claims.expected_size,
            h: claims.checksum_sha256,
        };
        let json = serde_json::to_vec(&wire).expect("plain strings and numbers serialise");
        let signed = format!("v1.{}", URL_SAFE_NO_PAD.encode(json));
        let tag = Self::mac(&self.0[0], signed.as_bytes())
            .finalize()
            .into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The claims of `token`, if one of the keys made it, it has not expired at `now`,
    /// and `caller` is the one it was made for.
    ///
    /// # Errors
    /// [`TokenError`].
    pub fn verify(&self, token: &str, caller: &str, now: SystemTime) -> Result<Claims, TokenError> {
        self.verify_within(token, caller, now, Duration::ZERO)
    }

    /// As [`TokenKeys::verify`], taking a token that expired less than `grace` ago.
    ///
    /// # Errors
    /// [`TokenError`].
    pub fn verify_within(
        &self,
        token: &str,
        caller: &str,
        now: SystemTime,
        grace: Duration,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify_for_anyone(token, now, grace)?;
        if claims.caller != caller {
            return Err(TokenError::OtherCaller);
        }
        Ok(claims)
    }

    /// The claims of `token`, signed by one of the keys and alive (or expired less than
    /// `grace` ago), whoever its caller: for a door that must say who asked for whose
    /// upload (the caller check is then the door's).
    ///
    /// # Errors
    /// [`TokenError`], never `OtherCaller`.
    pub fn verify_for_anyone(
        &self,
        token: &str,
        now: SystemTime,
        grace: Duration,
    ) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Invalid)?;
        // `verify_slice` compares in constant time.
        if !self
            .0
            .iter()
            .any(|key| Self::mac(key, signed.as_bytes()).verify_slice(&tag).is_ok())
        {
            return Err(TokenError::Invalid);
        }
        let claims = signed
            .strip_prefix("v1.")
            .and_then(|b64| URL_SAFE_NO_PAD.decode(b64).ok())
            .and_then(|json| serde_json::from_slice::<Wire>(&json).ok())
            .ok_or(TokenError::Invalid)?;
        // What the service signed it checked when it minted it; parsing again keeps the
        // types honest should a key ever leak.
        let claims = Claims {
            bucket: claims.b.parse().map_err(|_| TokenError::Invalid)?,
            key: claims.k.parse().map_err(|_| TokenError::Invalid)?,
            upload_id: claims.u.parse().map_err(|_| TokenError::Invalid)?,
            caller: claims.c,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.e),
            create_only: claims.o,
            expected_size: claims.s,
            checksum_sha256: claims.h,
        };
        if claims
            .expires_at
            .checked_add(grace)
            .is_none_or(|end| end <= now)
        {
            return Err(TokenError::Expired);
        }
        Ok(claims)
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

    fn keys(byte: u8) -> TokenKeys {
        TokenKeys::new(vec![Secret::new(vec![byte; 32])]).unwrap()
    }

    #[test]
    fn key_files_are_read_at_load_after_the_inline_keys() {
        use base64::engine::general_purpose::STANDARD;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("current");
        std::fs::write(&file, format!("{}\n", STANDARD.encode([2u8; 32]))).unwrap();
        let sources = KeySources {
            inline: vec![Secret::new(vec![1u8; 32])],
            files: vec![file.clone()],
        };
        let loaded = sources.load().unwrap().expect("two keys");
        // The inline key signs; the file's verifies what it signed.
        let now = UNIX_EPOCH + NOW;
        let token = loaded.mint(&claims());
        assert_eq!(keys(1).verify(&token, "dev:demo", now), Ok(claims()));
        assert!(keys(2).verify(&token, "dev:demo", now).is_err());
        assert_eq!(
            loaded.verify(&keys(2).mint(&claims()), "dev:demo", now),
            Ok(claims())
        );
        assert!(KeySources::default().load().unwrap().is_none());

        let missing = KeySources {
            files: vec![dir.path().join("absent")],
            ..Default::default()
        };
        let err = missing.load().unwrap_err();
        assert_eq!(err.field(), "uploads.token_key_files");
        assert!(err.to_string().contains("cannot read"), "{err}");
        std::fs::write(&file, "not base64 of 32 bytes").unwrap();
        let err = sources.load().unwrap_err();
        assert!(matches!(err, KeyError::NotAKey(_)), "{err:?}");
        assert!(!err.to_string().contains("not base64"), "{err}");
    }

    fn claims() -> Claims {
        Claims {
            bucket: "demo".parse().unwrap(),
            key: "public/big.bin".parse().unwrap(),
            upload_id: "abc-123".parse().unwrap(),
            caller: "dev:demo".into(),
            expires_at: UNIX_EPOCH + Duration::from_secs(2_000_000_000),
            create_only: true,
            expected_size: Some(42),
            checksum_sha256: false,
        }
    }

    const NOW: Duration = Duration::from_secs(1_900_000_000);

    #[test]
    fn a_token_verifies_for_its_caller_with_every_claim() {
        let k = keys(1);
        let token = k.mint(&claims());
        assert_eq!(k.verify(&token, "dev:demo", UNIX_EPOCH + NOW), Ok(claims()));
    }

    #[test]
    fn an_expired_token_verifies_within_a_grace_only() {
        let k = keys(1);
        let token = k.mint(&claims());
        let expiry = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(
            k.verify_within(&token, "dev:demo", expiry + day, ABORT_GRACE),
            Ok(claims())
        );
        assert_eq!(
            k.verify_within(&token, "dev:demo", expiry + ABORT_GRACE, ABORT_GRACE),
            Err(TokenError::Expired)
        );
        assert_eq!(
            k.verify_within(&token, "dev:other", expiry + day, ABORT_GRACE),
            Err(TokenError::OtherCaller)
        );
    }

    #[test]
    fn another_caller_an_altered_token_and_an_expired_one_are_refused() {
        let k = keys(1);
        let token = k.mint(&claims());
        assert_eq!(
            k.verify(&token, "dev:other", UNIX_EPOCH + NOW),
            Err(TokenError::OtherCaller)
        );
        assert_eq!(
            k.verify(
                &token,
                "dev:demo",
                UNIX_EPOCH + Duration::from_secs(2_000_000_000)
            ),
            Err(TokenError::Expired)
        );
        // Every single-character change of the claims breaks the tag.
        let (signed, tag) = token.rsplit_once('.').unwrap();
        for i in 3..signed.len() {
            let mut bytes = signed.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = format!("{}.{tag}", String::from_utf8(bytes).unwrap());
            assert_eq!(
                k.verify(&altered, "dev:demo", UNIX_EPOCH + NOW),
                Err(TokenError::Invalid),
                "byte {i}"
            );
        }
        assert_eq!(
            keys(2).verify(&token, "dev:demo", UNIX_EPOCH + NOW),
            Err(TokenError::Invalid)
        );
        for junk in [".", "v1..", "v1.e30.AAAA", "not a token"] {
            assert_eq!(
                k.verify(junk, "dev:demo", UNIX_EPOCH + NOW),
                Err(TokenError::Invalid)
            );
        }
        // None at all is told as such.
        let empty = k.verify("", "dev:demo", UNIX_EPOCH + NOW);
        assert_eq!(empty, Err(TokenError::Empty));
        assert!(
            empty
                .unwrap_err()
                .to_string()
                .starts_with("must not be empty")
        );
    }

    #[test]
    fn a_retired_key_still_verifies_while_the_new_one_signs() {
        let old = keys(1);
        let token = old.mint(&claims());
        let rotated =
            TokenKeys::new(vec![Secret::new(vec![2; 32]), Secret::new(vec![1; 32])]).unwrap();
        assert!(rotated.verify(&token, "dev:demo", UNIX_EPOCH + NOW).is_ok());
        let fresh = rotated.mint(&claims());
        assert_eq!(
            old.verify(&fresh, "dev:demo", UNIX_EPOCH + NOW),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(TokenKeys::new(vec![Secret::new(vec![0; 31])]).is_err());
        assert!(TokenKeys::new(Vec::new()).is_err());
    }

    #[test]
    fn file_names_keep_their_last_segment_and_safe_characters() {
        assert_eq!(sanitize_file_name("report (1).pdf"), "report (1).pdf");
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("C:\\Users\\a\\photo.jpg"), "photo.jpg");
        assert_eq!(sanitize_file_name(".."), "file");
        assert_eq!(sanitize_file_name(".bashrc"), "bashrc");
        assert_eq!(sanitize_file_name("a${filename}b"), "a__filename_b");
        assert_eq!(sanitize_file_name("gnp.\u{202E}exe"), "gnp._exe");
        assert_eq!(sanitize_file_name("tab\there"), "tab_here");
        assert_eq!(sanitize_file_name("résumé 日本.txt"), "résumé 日本.txt");
        assert_eq!(sanitize_file_name(""), "file");
        let long = sanitize_file_name(&"é".repeat(200));
        assert!(long.len() <= MAX_FILE_NAME_BYTES && long.chars().all(|c| c == 'é'));
    }

    #[test]
    fn part_numbers_are_1_to_10000() {
        assert!(PartNumber::try_from(0).is_err());
        assert_eq!(PartNumber::try_from(1).unwrap().get(), 1);
        assert_eq!(PartNumber::try_from(10_000).unwrap().get(), 10_000);
        assert!(PartNumber::try_from(10_001).is_err());
        assert!(PartNumber::try_from(u64::MAX).is_err());
    }
}
