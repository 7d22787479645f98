//! What a front door asks the pipeline for: requests whose every field is a validated
//! type, built from the door's raw values with every bad field reported at once.
//!
//! A front door turns its wire format (protobuf, a URL path, JSON) into the raw
//! structs below; the rules for what a valid bucket, key, prefix or pin is live in
//! `scope` and are applied here, once, for every door.

use std::time::Duration;

use crate::scope::{
    self, BucketName, ChecksumSha256, FromText, HeaderText, MediaType, Metadata, MetadataError,
    ObjectKey, Prefix, SizeRange, Text, VersionId,
};

use super::Error;
use crate::core::text::echo;

/// The method a read URL is signed for (the signer's; the pipeline carries it).
pub use crate::sign::ReadMethod;

/// Most violations a refusal lists; the rest are counted. A request with a thousand
/// bad parts would otherwise make a status far over the 16 KiB trailers allow.
const MAX_VIOLATIONS: usize = 20;

/// One bad field and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's name in the door's request (`key`, `ttl`, `content_length_range`).
    pub field: &'static str,
    /// What is wrong with it and what to send instead.
    pub description: String,
}

/// Collects field violations while a request is parsed, so that a caller learns
/// about every bad field at once.
#[derive(Debug, Default)]
pub struct Violations {
    listed: Vec<FieldViolation>,
    /// Violations past [`MAX_VIOLATIONS`]: counted, not listed.
    more: usize,
}

impl Violations {
    /// Parses a required field.
    pub fn required<T: FromText>(&mut self, field: &'static str, value: impl Text) -> Option<T> {
        self.check(field, T::from_text(value))
    }

    /// Parses an optional field: empty means not set.
    pub fn optional<T: FromText>(
        &mut self,
        field: &'static str,
        value: impl Text,
    ) -> Option<Option<T>> {
        if value.as_ref().is_empty() {
            Some(None)
        } else {
            self.required(field, value).map(Some)
        }
    }

    /// An optional media type (`content_type`, `response_content_type`), as the
    /// header text the signers take.
    pub fn media_type(
        &mut self,
        field: &'static str,
        value: impl Text,
    ) -> Option<Option<HeaderText>> {
        self.optional::<MediaType>(field, value)
            .map(|t| t.map(HeaderText::from))
    }

    /// Keeps the value, or records why `field` is bad.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &'static str,
        result: Result<T, E>,
    ) -> Option<T> {
        result.map_err(|e| self.add(field, e.to_string())).ok()
    }

    /// How many violations were recorded so far.
    pub fn len(&self) -> usize {
        self.listed.len() + self.more
    }

    /// Whether none was recorded.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// Records that `field` is bad.
    pub fn add(&mut self, field: &'static str, description: impl Into<String>) {
        if self.listed.len() < MAX_VIOLATIONS {
            self.listed.push(FieldViolation {
                field,
                description: description.into(),
            });
        } else {
            self.more += 1;
        }
    }

    /// The request when no field was bad.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] with every violation recorded.
    pub fn finish<T>(self, request: Option<T>) -> Result<T, Error> {
        match request {
            Some(request) if self.listed.is_empty() => Ok(request),
            // `request` is `None` only when a field failed, and that recorded a violation.
            _ => {
                let mut listed = self.listed;
                if let Some(last) = listed.last().map(|v| v.field)
                    && self.more > 0
                {
                    listed.push(FieldViolation {
                        field: last,
                        description: format!(
                            "and {} more problems not listed; fix the ones above first",
                            self.more
                        ),
                    });
                }
                Err(Error::InvalidArgument(listed))
            }
        }
    }
}

/// What is wrong with user metadata, naming the entry.
pub(super) fn describe_metadata(e: MetadataError) -> String {
    match e {
        MetadataError::Name { name, error } => format!("name '{}' {error}", echo(&name)),
        MetadataError::Value { name, error } => {
            format!("value of '{}' {error}", echo(&name))
        }
        MetadataError::Total(error) => error.to_string(),
    }
}

// === read ===

/// A GrantRead as the door received it; empty strings mean "not set". The text is
/// borrowed (`&str`) or owned (`String`, kept by the validated request without a copy).
#[derive(Debug, Default, Clone, Copy)]
pub struct RawRead<S> {
    /// Bucket name.
    pub bucket: S,
    /// Object key.
    pub key: S,
    /// Object version.
    pub version_id: S,
    /// `response-content-type` override.
    pub response_content_type: S,
    /// `response-content-disposition` override.
    pub response_content_disposition: S,
}

/// A validated read grant request.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Bucket.
    pub bucket: BucketName,
    /// Object key.
    pub key: ObjectKey,
    /// Object version, if pinned.
    pub version_id: Option<VersionId>,
    /// Content type the store answers with.
    pub response_content_type: Option<HeaderText>,
    /// Content disposition the store answers with.
    pub response_content_disposition: Option<HeaderText>,
    /// Requested lifetime; `None` takes the configured default.
    pub ttl: Option<Duration>,
    /// The method the URL is signed for: S3 signs it, so a HEAD needs its own URL.
    pub method: ReadMethod,
}

impl ReadRequest {
    /// Validates `raw`, adding violations to `v`. `ttl` reads the door's lifetime
    /// field last, so violations come in the request's field order; it returns `None`
    /// when the field is bad and `Some(None)` when it is unset.
    pub fn parse<S: Text>(
        v: &mut Violations,
        raw: RawRead<S>,
        ttl: impl FnOnce(&mut Violations) -> Option<Option<Duration>>,
    ) -> Option<Self> {
        let bucket = v.required("bucket", raw.bucket);
        let key = v.required("key", raw.key);
        let version_id = v.optional("version_id", raw.version_id);
        let content_type = v.media_type("response_content_type", raw.response_content_type);
        let disposition = v.optional(
            "response_content_disposition",
            raw.response_content_disposition,
        );
        let ttl = ttl(v);
        Some(ReadRequest {
            bucket: bucket?,
            key: key?,
            version_id: version_id?,
            response_content_type: content_type?,
            response_content_disposition: disposition?,
            ttl: ttl?,
            method: ReadMethod::Get,
        })
    }
}

impl ReadRequest {
    /// Whether the request changes how a browser would treat the object: any content
    /// type, or a disposition other than `attachment` (which only ever downloads).
    pub fn overrides_rendering(&self) -> bool {
        let attachment = |d: &HeaderText| {
            let kind = d.as_str().split(';').next().unwrap_or_default().trim();
            kind.eq_ignore_ascii_case("attachment")
        };
        self.response_content_type.is_some()
            || self
                .response_content_disposition
                .as_ref()
                .is_some_and(|d| !attachment(d))
    }
}

// === write ===

/// The size an uploader asked to pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSize {
    /// No size pinned.
    Any,
    /// Exactly this many bytes.
    Exact(u64),
    /// Between these bounds, inclusive (a POST form).
    Range {
        /// Smallest accepted size.
        min: u64,
        /// Largest accepted size.
        max: u64,
    },
}

/// A GrantWrite as the door received it; empty strings mean "not set". The text is
/// borrowed (`&str`) or owned (`String`, kept by the validated request without a copy).
#[derive(Debug, Clone, Copy)]
pub struct RawWrite<S, M> {
    /// Bucket name.
    pub bucket: S,
    /// Object key.
    pub key: S,
    /// Content type to pin.
    pub content_type: S,
    /// Base64 SHA-256 to pin.
    pub checksum_sha256: S,
    /// User metadata to pin, as (name, value) pairs.
    pub metadata: M,
    /// Size to pin.
    pub size: RawSize,
    /// `If-None-Match: *`.
    pub create_only: bool,
}

/// What kind of upload a write grant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// Presigned PUT, optionally with an exact length.
    Put(Option<u64>),
    /// Presigned POST whose policy carries the size range.
    Post(SizeRange),
}

/// A validated write grant request.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// Bucket.
    pub bucket: BucketName,
    /// Object key.
    pub key: ObjectKey,
    /// Content type the upload must declare.
    pub content_type: Option<HeaderText>,
    /// SHA-256 the upload must match.
    pub checksum_sha256: Option<ChecksumSha256>,
    /// User metadata the upload must carry.
    pub metadata: Metadata,
    /// PUT or POST, and the size pin.
    pub upload: Upload,
    /// Refuse to overwrite an existing object.
    pub create_only: bool,
    /// Requested lifetime; `None` takes the configured default.
    pub ttl: Option<Duration>,
}

impl WriteRequest {
    /// Validates `raw`, adding violations to `v`; `ttl` as in [`ReadRequest::parse`].
    pub fn parse<S: Text, M, N: Text, V: Text>(
        v: &mut Violations,
        raw: RawWrite<S, M>,
        ttl: impl FnOnce(&mut Violations) -> Option<Option<Duration>>,
    ) -> Option<Self>
    where
        M: IntoIterator<Item = (N, V)>,
    {
        let post = matches!(raw.size, RawSize::Range { .. });
        // Read before the key is taken by its check.
        let filename_in_key = post && raw.key.as_ref().contains("${filename}");
        let bucket = v.required("bucket", raw.bucket);
        let key = v.required("key", raw.key);
        let content_type = v.media_type("content_type", raw.content_type);
        let checksum = v.optional("checksum_sha256", raw.checksum_sha256);
        let metadata = Metadata::new(raw.metadata)
            .map_err(|e| v.add("metadata", describe_metadata(e)))
            .ok();
        let upload = match raw.size {
            RawSize::Any => Some(Upload::Put(None)),
            RawSize::Exact(n) => v.check(
                "content_length",
                scope::upload_length(n).map(|n| Upload::Put(Some(n))),
            ),
            RawSize::Range { min, max } => v.check(
                "content_length_range",
                SizeRange::new(min, max).map(Upload::Post),
            ),
        };
        if post {
            // S3 replaces `${filename}` in a POST form's key with the uploaded file's
            // name before it checks the policy, so such a grant could never be used.
            if filename_in_key {
                v.add(
                    "key",
                    "contains '${filename}', which S3 replaces in POST uploads, so the signed \
                     key could never match; name the object's final key",
                );
            }
            if raw.create_only {
                v.add(
                    "create_only",
                    "applies to presigned PUT only: S3's POST form has no If-None-Match; \
                     send content_length (or no size) instead of content_length_range",
                );
            }
        }
        let ttl = ttl(v);
        Some(WriteRequest {
            bucket: bucket?,
            key: key?,
            content_type: content_type?,
            checksum_sha256: checksum?,
            metadata: metadata?,
            upload: upload?,
            create_only: raw.create_only,
            ttl: ttl?,
        })
    }
}

// === assume ===

/// What scoped credentials may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// Download under the prefix.
    pub read: bool,
    /// Upload under the prefix.
    pub write: bool,
    /// List keys under the prefix.
    pub list: bool,
}

/// A validated request for scoped credentials.
#[derive(Debug, Clone)]
pub struct AssumeRequest {
    /// Bucket.
    pub bucket: BucketName,
    /// The prefix the credentials are confined to.
    pub prefix: Prefix,
    /// What they may do there (at least read or write).
    pub access: Access,
    /// Requested session length; `None` takes `sts.default_duration`.
    pub duration: Option<Duration>,
    /// Least life cached credentials must have left to be handed out again: a door
    /// whose clients refresh well before expiry asks for more than the default.
    pub min_left: Duration,
}

impl AssumeRequest {
    /// Validates the bucket and prefix, adding violations to `v`, then lets the door
    /// read `access` (recording its own violation when it names neither read nor
    /// write) and `duration` (as `ttl` in [`ReadRequest::parse`]), in that order.
    pub fn parse(
        v: &mut Violations,
        bucket: impl Text,
        prefix: impl Text,
        access: impl FnOnce(&mut Violations) -> Option<Access>,
        duration: impl FnOnce(&mut Violations) -> Option<Option<Duration>>,
    ) -> Option<Self> {
        let bucket = v.required("bucket", bucket);
        let prefix = v.required("prefix", prefix);
        let access = access(v);
        let duration = duration(v);
        Some(AssumeRequest {
            bucket: bucket?,
            prefix: prefix?,
            access: access?,
            duration: duration?,
            min_left: Duration::ZERO,
        })
    }
}
