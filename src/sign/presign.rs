//! Presigned S3 requests: SigV4 with the signature in the query string
//! ("Authenticating Requests: Using Query Parameters" in the S3 docs).
//!
//! This module owns the canonical request, the string to sign and the URL. It leaves
//! key derivation and caching to `key_cache`, percent-encoding to `encode`, and the
//! lifetime (the `Ttl`, already cut down by every limit) to `expiry`.
//!
//! The hot path, a GET with a cached key, allocates only the URL it returns. The URL
//! is written once, already in canonical form (query sorted and encoded as SigV4
//! wants), and the canonical request is hashed from slices of it; the string to sign
//! goes straight into the HMAC. Nothing but the URL's `String` is built.
//!
//! Requests are described by a `Request`: method, bucket, key, extra signed query
//! parameters and extra signed headers. A GET has one extra parameter (`x-id`) and no
//! extra headers; a PUT adds a signed header for every value it pins (content type,
//! length, checksum, metadata, create-only), and they flow into
//! `X-Amz-SignedHeaders`, the canonical headers and [`PresignedRequest::headers`]
//! without other changes.
//!
//! Security invariant of a PUT: every pin is a *signed header*, never only a listed
//! one. S3 recomputes the signature over the headers the uploader actually sends, so
//! another value (or a missing header) breaks the signature and the upload is
//! refused; the pins cannot be dropped or changed by whoever holds the URL.

use hmac::Mac;
use sha2::digest::Update;
use sha2::{Digest, Sha256};
use std::time::SystemTime;

use super::amz_date::AmzDate;
use super::encode::{encode_path, encode_query, encoded_len_bound, hex_lower, push_hex_lower};
use super::endpoint::Endpoint;
use super::key_cache::{KeyCache, Prepared};
use crate::credentials::SigningCredentials;
use crate::expiry::Ttl;
use crate::scope::{BucketName, ChecksumSha256, HeaderText, Metadata, ObjectKey, VersionId};
use crate::secret::Secret;
use crate::upload::{PartNumber, UploadId};

pub(super) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Presigned URLs never sign their body: the uploader's bytes are unknown at signing
/// time (a PUT that pins a checksum signs `x-amz-checksum-sha256` instead).
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The request a presigned read URL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMethod {
    /// The object (GrantRead; a click-time link followed by a browser).
    Get,
    /// The object's headers only (a click-time link asked with HEAD).
    Head,
}

/// The object a presigned GET reads, and how S3 should label the response.
#[derive(Debug, Clone, Copy)]
pub struct GetObject<'a> {
    /// The bucket.
    pub bucket: &'a BucketName,
    /// The object's key.
    pub key: &'a ObjectKey,
    /// A specific version of the object; the current one if `None`.
    pub version_id: Option<&'a VersionId>,
    /// Overrides the response's `Content-Type` (S3's `response-content-type`).
    pub response_content_type: Option<&'a HeaderText>,
    /// Overrides the response's `Content-Disposition`, e.g. to make a browser
    /// download with a file name (S3's `response-content-disposition`).
    pub response_content_disposition: Option<&'a HeaderText>,
}

/// The object a presigned PUT writes, and what the upload must carry.
///
/// Every `Some` (and `create_only: true`, and every metadata entry) becomes a signed
/// header: the store refuses an upload that sends another value or leaves it out.
#[derive(Debug, Clone, Copy)]
pub struct PutObject<'a> {
    /// The bucket.
    pub bucket: &'a BucketName,
    /// The object's key.
    pub key: &'a ObjectKey,
    /// Pins `Content-Type`, which S3 stores and serves back with the object.
    pub content_type: Option<&'a HeaderText>,
    /// Pins `Content-Length`: the upload must be exactly this many bytes. (The caller
    /// checks it against S3's 5 GiB single-upload limit, see
    /// [`crate::scope::upload_length`].)
    pub content_length: Option<u64>,
    /// Pins `x-amz-checksum-sha256`: S3 computes the SHA-256 of the body it receives,
    /// refuses the upload (`BadDigest`) if it differs, and stores the checksum.
    pub checksum_sha256: Option<&'a ChecksumSha256>,
    /// User metadata, one signed `x-amz-meta-<name>` header per name.
    pub metadata: &'a Metadata,
    /// Pins `If-None-Match: *`: S3 refuses the upload (412) if the key exists.
    pub create_only: bool,
}

/// One part of a multipart upload, as a presigned UploadPart PUT, and what its body
/// must carry. Each `Some` becomes a signed header, as in [`PutObject`].
#[derive(Debug, Clone, Copy)]
pub struct UploadPart<'a> {
    /// The bucket.
    pub bucket: &'a BucketName,
    /// The object's key.
    pub key: &'a ObjectKey,
    /// The store's upload id (signed in the query: the URL works for no other upload).
    pub upload_id: &'a UploadId,
    /// The part number (signed in the query: the URL works for no other part).
    pub part_number: PartNumber,
    /// Pins `Content-Length`.
    pub content_length: Option<u64>,
    /// Pins `x-amz-checksum-sha256`.
    pub checksum_sha256: Option<&'a ChecksumSha256>,
}

/// A presigned request: everything a caller needs to make it, without credentials.
#[derive(Debug)]
pub struct PresignedRequest {
    /// The HTTP method the signature covers (`GET`, `PUT`).
    pub method: &'static str,
    /// The URL, signature included. A bearer credential until it expires: never log
    /// it, put it in a span or an error, or record it in an audit event.
    pub url: Secret<String>,
    /// Headers the caller must send, exactly as given (lowercase names, since HTTP
    /// names are case-insensitive and SigV4 signs them lowercase), because the
    /// signature covers them. Empty for a GET. Sorted by name, each name once.
    pub headers: Vec<(String, String)>,
}

/// Signs presigned S3 requests for one endpoint and region, caching the derived
/// signing key across requests. `Send + Sync`: share one per process.
#[derive(Debug)]
pub struct Signer {
    pub(super) endpoint: Endpoint,
    pub(super) region: String,
    /// Shared by every presigned method, URL and POST policy alike.
    pub(super) keys: KeyCache,
}

impl Signer {
    /// A signer for `endpoint`, scoping signatures to `region`: the one `endpoint`
    /// was built with, whose validation it relies on (S3-compatible stores usually
    /// take any region, often `us-east-1`). The region only ever reaches the URL
    /// percent-encoded, so no value can break it; a wrong one makes S3 refuse the
    /// signature.
    pub fn new(endpoint: Endpoint, region: &str) -> Signer {
        Signer {
            endpoint,
            region: region.to_owned(),
            keys: KeyCache::new(),
        }
    }

    /// The region signatures are scoped to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A presigned GET for `object`, signed with `creds` at `signing_time` (truncated
    /// to whole seconds) and valid for `ttl` from then.
    ///
    /// Infallible: every input is already validated by its type. The caller must
    /// have clamped `ttl` to the credentials' remaining life (see [`Ttl::clamp`]):
    /// a URL stops working when the credentials that signed it expire.
    ///
    /// The URL agrees with aws-sdk-s3's `presigned()` GetObject for the same inputs
    /// in scheme, host, path and every query parameter, signature included (the
    /// differential test `tests/presign_oracle.rs` holds us to that); only the order
    /// of the parameters differs. That is why it carries `x-id=GetObject`: the SDK
    /// adds it (Smithy's operation marker) and S3 ignores it.
    pub fn presign_get(
        &self,
        creds: &SigningCredentials,
        object: &GetObject<'_>,
        signing_time: SystemTime,
        ttl: Ttl,
    ) -> PresignedRequest {
        self.presign_read(ReadMethod::Get, creds, object, signing_time, ttl)
    }

    /// A presigned GET or HEAD of `object`. A HEAD gets its headers (size, type, ETag)
    /// without its body: S3 signs the method, so a GET URL answers a HEAD with 403, and
    /// a client that asks with HEAD (a link checker, `curl -I`) needs its own URL. As
    /// [`Signer::presign_get`] otherwise; a HEAD agrees with aws-sdk-s3's `presigned()`
    /// HeadObject, which carries no `x-id`.
    pub fn presign_read(
        &self,
        method: ReadMethod,
        creds: &SigningCredentials,
        object: &GetObject<'_>,
        signing_time: SystemTime,
        ttl: Ttl,
    ) -> PresignedRequest {
        // The SDK's operation marker, which the oracle holds us to.
        let (method, x_id) = match method {
            ReadMethod::Get => ("GET", Some("GetObject")),
            ReadMethod::Head => ("HEAD", None),
        };
        // Sorted by name, as `Request::query` requires; all names sort after the
        // `X-Amz-*` ones, but `presign` merges rather than relying on that.
        let mut query = [QueryParam::text("", ""); 4];
        let mut n = 0;
        let optional = [
            (
                "response-content-disposition",
                object.response_content_disposition.map(HeaderText::as_str),
            ),
            (
                "response-content-type",
                object.response_content_type.map(HeaderText::as_str),
            ),
            ("versionId", object.version_id.map(VersionId::as_str)),
            ("x-id", x_id),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                query[n] = QueryParam::text(name, value);
                n += 1;
            }
        }
        let request = Request {
            method,
            bucket: object.bucket,
            key: object.key,
            query: &query[..n],
            headers: &[],
        };
        self.presign(creds, &request, AmzDate::new(signing_time), ttl)
    }

    /// A presigned PUT of `object`, signed with `creds` at `signing_time` (truncated
    /// to whole seconds) and valid for `ttl` from then, with every pin a signed
    /// header. [`PresignedRequest::headers`] lists exactly the headers the uploader
    /// must send (besides `Host`, which every HTTP client sends): for all pins,
    /// `content-length`, `content-type`, `if-none-match: *`,
    /// `x-amz-checksum-sha256` and one `x-amz-meta-<name>` per metadata name.
    ///
    /// Infallible, like [`Signer::presign_get`], and under the same contract on
    /// `ttl`.
    ///
    /// The URL carries `x-id=PutObject` and agrees with aws-sdk-s3's `presigned()`
    /// PutObject with the same pins, signature and signed-header list included
    /// (`tests/presign_oracle.rs`). The checksum needs no other header: S3 verifies
    /// `x-amz-checksum-sha256` on its own; `x-amz-sdk-checksum-algorithm` only tells
    /// S3 what an SDK computed and "provides no additional functionality" without
    /// one (S3 API reference, PutObject).
    ///
    /// Header values are sent as given, minus surrounding spaces (which HTTP cannot
    /// carry); the signature covers them with runs of inner spaces collapsed, as
    /// SigV4 canonicalises them on both sides. Metadata entries that share a name
    /// are sent as one header, their values joined with `,`: what HTTP makes of
    /// repeated fields, and what S3 would have stored.
    pub fn presign_put(
        &self,
        creds: &SigningCredentials,
        object: &PutObject<'_>,
        signing_time: SystemTime,
        ttl: Ttl,
    ) -> PresignedRequest {
        let groups = || metadata_groups(object.metadata);
        // Joined values of repeated names, in order; empty (no allocation) as a rule.
        let joined: Vec<String> = groups()
            .filter(|group| group.len() > 1)
            .map(joined_value)
            .collect();
        // Every `x-amz-meta-<name>` in one buffer, sliced below.
        let mut names =
            String::with_capacity(groups().map(|g| META_PREFIX.len() + g[0].0.len()).sum());
        for group in groups() {
            names.push_str(META_PREFIX);
            names.push_str(&group[0].0);
        }

        // Sorted by name, as `Request::headers` requires: the fixed names sort in
        // this order, and `x-amz-meta-*` after `x-amz-checksum-sha256`.
        let mut length_buf = [0u8; 20];
        let mut headers = Vec::with_capacity(4 + groups().count());
        if let Some(length) = object.content_length {
            headers.push(SignedHeader {
                name: "content-length",
                value: decimal(&mut length_buf, length),
            });
        }
        if let Some(content_type) = object.content_type {
            headers.push(SignedHeader {
                name: "content-type",
                value: content_type.as_str().trim_matches(' '),
            });
        }
        if object.create_only {
            headers.push(SignedHeader {
                name: "if-none-match",
                value: "*",
            });
        }
        if let Some(checksum) = object.checksum_sha256 {
            headers.push(SignedHeader {
                name: "x-amz-checksum-sha256",
                value: checksum.as_str(),
            });
        }
        let mut joined = joined.iter();
        let mut at = 0;
        for group in groups() {
            let end = at + META_PREFIX.len() + group[0].0.len();
            let value = match group {
                [(_, value)] => value.as_str(),
                _ => joined
                    .next()
                    .expect("one joined value was made per repeated name"),
            };
            headers.push(SignedHeader {
                name: &names[at..end],
                value,
            });
            at = end;
        }

        let query = [QueryParam::text("x-id", "PutObject")];
        let request = Request {
            method: "PUT",
            bucket: object.bucket,
            key: object.key,
            query: &query,
            headers: &headers,
        };
        self.presign(creds, &request, AmzDate::new(signing_time), ttl)
    }

    /// A presigned UploadPart PUT for `part`, under the same contract on `ttl` as
    /// [`Signer::presign_put`]. `partNumber` and `uploadId` are signed query
    /// parameters, so the URL uploads that part of that upload and nothing else; it
    /// carries `x-id=UploadPart` and agrees with aws-sdk-s3's `presigned()` UploadPart
    /// (`tests/presign_oracle.rs`).
    pub fn presign_upload_part(
        &self,
        creds: &SigningCredentials,
        part: &UploadPart<'_>,
        signing_time: SystemTime,
        ttl: Ttl,
    ) -> PresignedRequest {
        let mut length_buf = [0u8; 20];
        let mut headers = Vec::with_capacity(2);
        if let Some(length) = part.content_length {
            headers.push(SignedHeader {
                name: "content-length",
                value: decimal(&mut length_buf, length),
            });
        }
        if let Some(checksum) = part.checksum_sha256 {
            headers.push(SignedHeader {
                name: "x-amz-checksum-sha256",
                value: checksum.as_str(),
            });
        }
        let mut number_buf = [0u8; 20];
        // Sorted by name: partNumber < uploadId < x-id.
        let query = [
            QueryParam::text(
                "partNumber",
                decimal(&mut number_buf, u64::from(part.part_number.get())),
            ),
            QueryParam::text("uploadId", part.upload_id.as_str()),
            QueryParam::text("x-id", "UploadPart"),
        ];
        let request = Request {
            method: "PUT",
            bucket: part.bucket,
            key: part.key,
            query: &query,
            headers: &headers,
        };
        self.presign(creds, &request, AmzDate::new(signing_time), ttl)
    }

    /// Signs `request`: the one implementation behind every presigned method.
    pub(crate) fn presign(
        &self,
        creds: &SigningCredentials,
        request: &Request<'_>,
        time: AmzDate,
        ttl: Ttl,
    ) -> PresignedRequest {
        debug_assert!(
            request.is_well_formed(),
            "query and headers must be sorted and plain"
        );
        self.keys.with(creds, &time, &self.region, |prepared| {
            self.presign_prepared(prepared, request, &time, ttl)
        })
    }

    fn presign_prepared(
        &self,
        prepared: &Prepared,
        request: &Request<'_>,
        time: &AmzDate,
        ttl: Ttl,
    ) -> PresignedRequest {
        let mut expires_buf = [0u8; 20];
        let values = AuthValues {
            encoded_credential: prepared.encoded_credential(),
            date_time: time.date_time(),
            expires: decimal(&mut expires_buf, u64::from(ttl.as_secs())),
        };
        let token = prepared.encoded_session_token();

        // SigV4's own parameters, in sorted order; merged with the request's below.
        let mut auth = [
            QueryParam::text("X-Amz-Algorithm", ALGORITHM),
            QueryParam {
                name: "X-Amz-Credential",
                value: Value::Credential,
            },
            QueryParam {
                name: "X-Amz-Date",
                value: Value::Date,
            },
            QueryParam {
                name: "X-Amz-Expires",
                value: Value::Expires,
            },
            QueryParam {
                name: "X-Amz-Security-Token",
                value: Value::Encoded(token.unwrap_or_default()),
            },
            QueryParam {
                name: "X-Amz-SignedHeaders",
                value: Value::SignedHeaders,
            },
        ];
        // Without a session token, its slot is dropped and the rest moves up.
        let auth: &[QueryParam<'_>] = if token.is_some() {
            &auth
        } else {
            auth[4] = auth[5];
            &auth[..5]
        };

        let virtual_hosted = self.endpoint.virtual_hosted(request.bucket);
        let bucket = request.bucket.as_str();
        let mut url = String::with_capacity(self.url_len_bound(request, &values, token));
        let capacity = url.capacity();

        // scheme://host/path
        url.push_str(self.endpoint.scheme());
        url.push_str("://");
        let host_start = url.len();
        if virtual_hosted {
            url.push_str(bucket);
            url.push('.');
        }
        url.push_str(self.endpoint.authority());
        let path_start = url.len();
        url.push('/');
        if !virtual_hosted {
            url.push_str(bucket);
            url.push('/');
        }
        encode_path(&mut url, request.key.as_str());
        let path_end = url.len();

        // ?query, in canonical order and encoding, signature last.
        url.push('?');
        for (i, param) in merge_sorted(auth, request.query, |p| p.name).enumerate() {
            if i > 0 {
                url.push('&');
            }
            url.push_str(param.name);
            url.push('=');
            param.value.write(&mut url, &values, request.headers);
        }
        let query_end = url.len();

        // The canonical request, hashed from slices of the URL.
        let host = SignedHeader {
            name: "host",
            value: &url[host_start..path_start],
        };
        let mut creq = Sha256::new();
        let mut feed = Coalesce::new(&mut creq);
        for part in [
            request.method,
            "\n",
            &url[path_start..path_end],
            "\n",
            &url[path_end + 1..query_end],
            "\n",
        ] {
            feed.push(part);
        }
        for header in merge_sorted(std::slice::from_ref(&host), request.headers, |h| h.name) {
            feed.push(header.name);
            feed.push(":");
            push_canonical_value(&mut feed, header.value);
            feed.push("\n");
        }
        feed.push("\n");
        for (i, header) in
            merge_sorted(std::slice::from_ref(&host), request.headers, |h| h.name).enumerate()
        {
            if i > 0 {
                feed.push(";");
            }
            feed.push(header.name);
        }
        feed.push("\n");
        feed.push(UNSIGNED_PAYLOAD);
        feed.finish();
        let creq_hash: [u8; 32] = creq.finalize().into();

        // The string to sign, straight into the HMAC keyed with the cached key.
        let mut mac = prepared.key().mac();
        let mut feed = Coalesce::new(&mut mac);
        for part in [
            ALGORITHM,
            "\n",
            values.date_time,
            "\n",
            prepared.scope(),
            "\n",
        ] {
            feed.push(part);
        }
        feed.push(hex_lower(&creq_hash));
        feed.finish();
        let signature: [u8; 32] = mac.finalize().into_bytes().into();

        url.push_str("&X-Amz-Signature=");
        push_hex_lower(&mut url, &signature);
        debug_assert_eq!(url.capacity(), capacity, "the URL was allocated once");

        PresignedRequest {
            method: request.method,
            url: Secret::new(url),
            headers: request
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_owned()))
                .collect(),
        }
    }

    /// An upper bound of the URL's length, so it is allocated once.
    fn url_len_bound(
        &self,
        request: &Request<'_>,
        values: &AuthValues<'_>,
        token: Option<&str>,
    ) -> usize {
        // Everything of fixed length: `https://`, the separators around bucket and
        // path, the `X-Amz-*` names with their `&` and `=` (about 160), the
        // algorithm, date, expiry and `host` values (about 60) and the signature
        // (64): about 300, rounded up.
        const FIXED: usize = 384;
        let bucket = request.bucket.as_str().len();
        let params: usize = request
            .query
            .iter()
            .map(|p| {
                let value = match p.value {
                    Value::Text(t) => encoded_len_bound(t),
                    _ => 0,
                };
                p.name.len() + 2 + value
            })
            .sum();
        let headers: usize = request
            .headers
            .iter()
            .map(|h| encoded_len_bound(h.name) + 3)
            .sum();
        FIXED
            + self.endpoint.authority().len()
            + 2 * bucket
            + encoded_len_bound(request.key.as_str())
            + values.encoded_credential.len()
            + token.map_or(0, str::len)
            + params
            + headers
    }
}

/// What a presigned request signs besides SigV4's own parameters.
pub(crate) struct Request<'a> {
    /// `GET`, `PUT`, …
    pub(crate) method: &'static str,
    pub(crate) bucket: &'a BucketName,
    pub(crate) key: &'a ObjectKey,
    /// Signed query parameters, sorted by name. Names are of unreserved characters
    /// only, so sorting them raw is sorting them encoded, as SigV4 requires; none is
    /// an `X-Amz-*` name (SigV4 adds those).
    pub(crate) query: &'a [QueryParam<'a>],
    /// Signed headers besides `host`, sorted by name, each name once: lowercase
    /// names, values as the caller will send them, without surrounding spaces (HTTP
    /// cannot carry those). Inner runs of spaces are collapsed when hashing, as
    /// SigV4's canonical form wants.
    pub(crate) headers: &'a [SignedHeader<'a>],
}

impl Request<'_> {
    /// Whether the invariants documented on the fields hold.
    fn is_well_formed(&self) -> bool {
        let plain = |s: &str| !s.is_empty() && s.bytes().all(super::encode::is_unreserved);
        self.query.is_sorted_by(|a, b| a.name < b.name)
            && self
                .query
                .iter()
                .all(|p| plain(p.name) && !p.name.starts_with("X-Amz-"))
            && self.headers.is_sorted_by(|a, b| a.name < b.name)
            && self.headers.iter().all(|h| {
                h.name != "host"
                    && !h.name.is_empty()
                    && !h.name.bytes().any(|b| b.is_ascii_uppercase())
                    && h.value.trim_matches(' ') == h.value
            })
    }
}

/// A signed query parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryParam<'a> {
    name: &'a str,
    value: Value<'a>,
}

impl<'a> QueryParam<'a> {
    /// A parameter whose value is plain text, percent-encoded when written.
    pub(crate) fn text(name: &'a str, value: &'a str) -> QueryParam<'a> {
        QueryParam {
            name,
            value: Value::Text(value),
        }
    }
}

/// A query value; SigV4's own come preformatted in `AuthValues`.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    /// Plain text, percent-encoded when written
    Text(&'a str),
    /// Already percent-encoded (the cached session token)
    Encoded(&'a str),
    /// `{access key id}/{date}/{region}/s3/aws4_request`, cached per credentials
    Credential,
    /// `X-Amz-Date`
    Date,
    /// `X-Amz-Expires`
    Expires,
    /// `host` and the request's headers, `;`-separated
    SignedHeaders,
}

impl Value<'_> {
    fn write(&self, url: &mut String, values: &AuthValues<'_>, headers: &[SignedHeader<'_>]) {
        match *self {
            Value::Text(text) => encode_query(url, text),
            Value::Encoded(text) => url.push_str(text),
            Value::Credential => url.push_str(values.encoded_credential),
            Value::Date => url.push_str(values.date_time),
            Value::Expires => url.push_str(values.expires),
            Value::SignedHeaders => {
                let host = SignedHeader {
                    name: "host",
                    value: "",
                };
                for (i, header) in
                    merge_sorted(std::slice::from_ref(&host), headers, |h| h.name).enumerate()
                {
                    if i > 0 {
                        url.push_str("%3B");
                    }
                    encode_query(url, header.name);
                }
            }
        }
    }
}

/// A header the signature covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedHeader<'a> {
    name: &'a str,
    value: &'a str,
}

/// SigV4's own query values, preformatted.
struct AuthValues<'a> {
    /// `{access key id}/{date}/{region}/s3/aws4_request`, percent-encoded.
    encoded_credential: &'a str,
    /// `X-Amz-Date`.
    date_time: &'a str,
    /// `X-Amz-Expires`: whole seconds.
    expires: &'a str,
}

/// `value` in decimal, written into `buf` (a `u64` has at most 20 digits).
pub(super) fn decimal(buf: &mut [u8; 20], mut value: u64) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + u8::try_from(value % 10).expect("a decimal digit fits in u8");
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[start..]).expect("ASCII digits")
}

/// Writes a header value in SigV4's canonical form: runs of inner spaces collapsed
/// to one. Only spaces: S3 and the SDK leave tabs and other whitespace alone, and
/// the value is trimmed already (see `Request::headers`).
fn push_canonical_value<H: Update>(feed: &mut Coalesce<'_, H>, value: &str) {
    // A byte scan, not `str::contains`: its substring searcher's set-up costs more
    // than the short values it searches, once per signed header.
    if !value.as_bytes().windows(2).any(|w| w == b"  ") {
        feed.push(value);
        return;
    }
    for (i, word) in value.split(' ').filter(|w| !w.is_empty()).enumerate() {
        if i > 0 {
            feed.push(" ");
        }
        feed.push(word);
    }
}

/// `x-amz-meta-`: what S3 puts before a user metadata name, as a header or form
/// field name.
pub(crate) const META_PREFIX: &str = "x-amz-meta-";

/// User metadata grouped by name, one group per header (or form field) S3 will
/// receive. `Metadata` is sorted, so equal names are adjacent; it does not rule
/// them out, and repeated names must not become repeated signed headers (SigV4
/// would fold them into one canonical line, clients and maps might not keep both).
pub(crate) fn metadata_groups(
    metadata: &Metadata,
) -> impl Iterator<Item = &[(String, String)]> + Clone {
    metadata.entries().chunk_by(|a, b| a.0 == b.0)
}

/// The values of one group joined with `,`, as HTTP joins repeated header fields.
pub(crate) fn joined_value(group: &[(String, String)]) -> String {
    let mut joined = String::with_capacity(group.iter().map(|(_, v)| v.len() + 1).sum());
    for (i, (_, value)) in group.iter().enumerate() {
        if i > 0 {
            joined.push(',');
        }
        joined.push_str(value);
    }
    joined
}

/// Feeds a hash many small pieces through a stack buffer. Each `update` of sha2
/// costs a few nanoseconds of bookkeeping whatever its length, and a URL's canonical
/// request and string to sign come in about 25 pieces; long pieces (the path, the
/// query) still go straight through.
struct Coalesce<'h, H: Update> {
    hasher: &'h mut H,
    buf: [u8; 256],
    len: usize,
}

impl<'h, H: Update> Coalesce<'h, H> {
    fn new(hasher: &'h mut H) -> Self {
        Coalesce {
            hasher,
            buf: [0; 256],
            len: 0,
        }
    }

    fn push(&mut self, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        if self.len + bytes.len() > self.buf.len() {
            self.flush();
            if bytes.len() >= self.buf.len() {
                self.hasher.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn flush(&mut self) {
        if self.len > 0 {
            self.hasher.update(&self.buf[..self.len]);
            self.len = 0;
        }
    }

    /// Hands the rest to the hash; what was pushed is then all in it.
    fn finish(mut self) {
        self.flush();
    }
}

/// The items of two slices, each sorted by `key`, in one sorted sequence.
fn merge_sorted<'s, T>(
    a: &'s [T],
    b: &'s [T],
    key: impl Fn(&T) -> &str,
) -> impl Iterator<Item = &'s T> {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if key(x) <= key(y) => {
                i += 1;
                x
            }
            (_, Some(y)) => {
                j += 1;
                y
            }
            (Some(x), None) => {
                i += 1;
                x
            }
            (None, None) => return None,
        };
        Some(next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::sign::test_fixtures::{AKID, SECRET, at, creds, signer, ttl};
    const T: u64 = 1_369_353_600; // 2013-05-24T00:00:00Z

    fn get<'a>(bucket: &'a BucketName, key: &'a ObjectKey) -> GetObject<'a> {
        GetObject {
            bucket,
            key,
            version_id: None,
            response_content_type: None,
            response_content_disposition: None,
        }
    }

    fn query_of(url: &str) -> BTreeMap<String, String> {
        let (_, query) = url.split_once('?').unwrap();
        query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    /// A deliberately naive SigV4 presigner, written from the AWS docs with
    /// `format!` and sorting, to check the fast one against, headers included.
    /// Signs with `AKID` and `SECRET` on 2013-05-24T00:00:00Z in us-east-1.
    struct Reference<'a> {
        scheme_host: &'a str,
        host: &'a str,
        path: &'a str,
        method: &'a str,
        extra_query: &'a [(&'a str, &'a str)],
        headers: &'a [(&'a str, &'a str)],
        token: Option<&'a str>,
        expires: u32,
    }

    fn reference_url(r: &Reference<'_>) -> String {
        let Reference {
            scheme_host,
            host,
            path,
            method,
            extra_query,
            headers,
            token,
            expires,
        } = *r;
        let (date_time, region) = ("20130524T000000Z", "us-east-1");
        fn enc(s: &str, keep_slash: bool) -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric()
                        || b"-._~".contains(&b)
                        || (keep_slash && b == b'/')
                    {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        }
        let date = &date_time[..8];
        let mut all_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all_headers.push(("host".into(), host.into()));
        all_headers.sort();
        let signed_headers = all_headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let mut query: Vec<(String, String)> = vec![
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            (
                "X-Amz-Credential".into(),
                format!("{AKID}/{date}/{region}/s3/aws4_request"),
            ),
            ("X-Amz-Date".into(), date_time.into()),
            ("X-Amz-Expires".into(), expires.to_string()),
            ("X-Amz-SignedHeaders".into(), signed_headers.clone()),
        ];
        if let Some(token) = token {
            query.push(("X-Amz-Security-Token".into(), token.into()));
        }
        query.extend(
            extra_query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (enc(k, false), enc(v, false)))
            .collect();
        query.sort();
        let query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        // SigV4: values trimmed, runs of spaces collapsed.
        let canonical_headers: String = all_headers
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}:{}\n",
                    v.split(' ')
                        .filter(|w| !w.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })
            .collect();
        let encoded_path = enc(path, true);
        let creq = format!(
            "{method}\n{encoded_path}\n{query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD"
        );
        let sts = format!(
            "AWS4-HMAC-SHA256\n{date_time}\n{date}/{region}/s3/aws4_request\n{}",
            hex::encode(Sha256::digest(creq.as_bytes()))
        );
        let key = super::super::key_cache::derive_key_bytes(SECRET, date, region, "s3");
        let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        Mac::update(&mut mac, sts.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        format!("{scheme_host}{encoded_path}?{query}&X-Amz-Signature={signature}")
    }

    #[test]
    fn matches_the_aws_docs_presigned_url_example() {
        // S3 docs, "Authenticating Requests: Using Query Parameters (AWS Signature
        // Version 4)": GET examplebucket/test.txt, us-east-1, 20130524T000000Z,
        // 86400 s. That example has no `x-id`, so it is signed through `presign`
        // with no extra parameters rather than through `presign_get`.
        let signer = signer(Some("https://s3.amazonaws.com"), false);
        let bucket: BucketName = "examplebucket".parse().unwrap();
        let key: ObjectKey = "test.txt".parse().unwrap();
        let request = Request {
            method: "GET",
            bucket: &bucket,
            key: &key,
            query: &[],
            headers: &[],
        };
        let signed = signer.presign(&creds(None), &request, AmzDate::new(at(T)), ttl(86_400));
        assert_eq!(
            signed.url.expose(),
            "https://examplebucket.s3.amazonaws.com/test.txt\
             ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z\
             &X-Amz-Expires=86400\
             &X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
        assert_eq!(signed.method, "GET");
        assert!(signed.headers.is_empty());
    }

    #[test]
    fn get_adds_x_id_and_the_overrides_in_canonical_order() {
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "reports/q3 summary €.pdf".parse().unwrap();
        let version: VersionId = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY".parse().unwrap();
        let content_type: HeaderText = "application/pdf".parse().unwrap();
        let disposition: HeaderText = "attachment; filename=\"q3 summary.pdf\"".parse().unwrap();
        let object = GetObject {
            version_id: Some(&version),
            response_content_type: Some(&content_type),
            response_content_disposition: Some(&disposition),
            ..get(&bucket, &key)
        };
        let signed = signer.presign_get(&creds(Some("tok/en+=")), &object, at(T), ttl(900));
        let url = signed.url.expose();
        assert!(
            url.starts_with("http://127.0.0.1:9000/demo/reports/q3%20summary%20%E2%82%AC.pdf?"),
            "{url}"
        );
        let names: Vec<&str> = url
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-Security-Token",
                "X-Amz-SignedHeaders",
                "response-content-disposition",
                "response-content-type",
                "versionId",
                "x-id",
                "X-Amz-Signature",
            ]
        );
        let q = query_of(url);
        assert_eq!(q["x-id"], "GetObject");
        assert_eq!(q["X-Amz-Security-Token"], "tok%2Fen%2B%3D");
        assert_eq!(q["versionId"], "3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY");
        assert_eq!(
            q["response-content-disposition"],
            "attachment%3B%20filename%3D%22q3%20summary.pdf%22"
        );
        assert_eq!(q["X-Amz-Expires"], "900");

        let expected = reference_url(&Reference {
            scheme_host: "http://127.0.0.1:9000",
            host: "127.0.0.1:9000",
            path: "/demo/reports/q3 summary €.pdf",
            method: "GET",
            extra_query: &[
                ("x-id", "GetObject"),
                ("versionId", version.as_str()),
                ("response-content-type", content_type.as_str()),
                ("response-content-disposition", disposition.as_str()),
            ],
            headers: &[],
            token: Some("tok/en+="),
            expires: 900,
        });
        assert_eq!(q, query_of(&expected));
    }

    #[test]
    fn virtual_hosted_puts_the_bucket_in_the_host() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a/b.txt".parse().unwrap();
        let url = signer
            .presign_get(&creds(None), &get(&bucket, &key), at(T), ttl(60))
            .url;
        assert!(
            url.expose()
                .starts_with("https://reports.s3.us-east-1.amazonaws.com/a/b.txt?")
        );
        let expected = reference_url(&Reference {
            scheme_host: "https://reports.s3.us-east-1.amazonaws.com",
            host: "reports.s3.us-east-1.amazonaws.com",
            path: "/a/b.txt",
            method: "GET",
            extra_query: &[("x-id", "GetObject")],
            headers: &[],
            token: None,
            expires: 60,
        });
        assert_eq!(url.expose(), &expected);
    }

    #[test]
    fn extra_signed_headers_slot_into_the_signature_and_the_response() {
        // The shape a PUT that pins its content will take: headers sorted around `host`.
        let signer = signer(Some("http://localhost:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "up/load.bin".parse().unwrap();
        let headers = [
            SignedHeader {
                name: "content-length",
                value: "42",
            },
            SignedHeader {
                name: "content-type",
                value: "application/octet-stream",
            },
            SignedHeader {
                name: "if-none-match",
                value: "*",
            },
            SignedHeader {
                name: "x-amz-meta-owner",
                value: "team a",
            },
        ];
        let query = [QueryParam::text("x-id", "PutObject")];
        let request = Request {
            method: "PUT",
            bucket: &bucket,
            key: &key,
            query: &query,
            headers: &headers,
        };
        let signed = signer.presign(
            &creds(Some("token")),
            &request,
            AmzDate::new(at(T)),
            ttl(300),
        );
        let q = query_of(signed.url.expose());
        assert_eq!(
            q["X-Amz-SignedHeaders"],
            "content-length%3Bcontent-type%3Bhost%3Bif-none-match%3Bx-amz-meta-owner"
        );
        let expected = reference_url(&Reference {
            scheme_host: "http://localhost:9000",
            host: "localhost:9000",
            path: "/demo/up/load.bin",
            method: "PUT",
            extra_query: &[("x-id", "PutObject")],
            headers: &[
                ("content-length", "42"),
                ("content-type", "application/octet-stream"),
                ("if-none-match", "*"),
                ("x-amz-meta-owner", "team a"),
            ],
            token: Some("token"),
            expires: 300,
        });
        assert_eq!(q, query_of(&expected));
        assert_eq!(signed.method, "PUT");
        assert_eq!(signed.headers.len(), 4);
        assert_eq!(
            signed.headers[3],
            ("x-amz-meta-owner".to_owned(), "team a".to_owned())
        );
    }

    fn put<'a>(
        bucket: &'a BucketName,
        key: &'a ObjectKey,
        metadata: &'a Metadata,
    ) -> PutObject<'a> {
        PutObject {
            bucket,
            key,
            content_type: None,
            content_length: None,
            checksum_sha256: None,
            metadata,
            create_only: false,
        }
    }

    fn header_pairs(signed: &PresignedRequest) -> Vec<(&str, &str)> {
        signed
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    const CHECKSUM: &str = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";

    #[test]
    fn put_signs_every_pin_as_a_header_and_lists_it() {
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "uploads/q3 report.csv".parse().unwrap();
        let content_type: HeaderText = "text/csv".parse().unwrap();
        let checksum: ChecksumSha256 = CHECKSUM.parse().unwrap();
        let metadata = Metadata::new([("owner", "team-a"), ("case-id", "42")]).unwrap();
        let object = PutObject {
            content_type: Some(&content_type),
            content_length: Some(5_368_709_120),
            checksum_sha256: Some(&checksum),
            create_only: true,
            ..put(&bucket, &key, &metadata)
        };
        let signed = signer.presign_put(&creds(Some("tok/en")), &object, at(T), ttl(600));
        assert_eq!(signed.method, "PUT");
        assert_eq!(
            header_pairs(&signed),
            [
                ("content-length", "5368709120"),
                ("content-type", "text/csv"),
                ("if-none-match", "*"),
                ("x-amz-checksum-sha256", CHECKSUM),
                ("x-amz-meta-case-id", "42"),
                ("x-amz-meta-owner", "team-a"),
            ]
        );
        let url = signed.url.expose();
        assert!(
            url.starts_with("http://127.0.0.1:9000/demo/uploads/q3%20report.csv?"),
            "{url}"
        );
        let q = query_of(url);
        assert_eq!(
            q["X-Amz-SignedHeaders"],
            "content-length%3Bcontent-type%3Bhost%3Bif-none-match%3B\
             x-amz-checksum-sha256%3Bx-amz-meta-case-id%3Bx-amz-meta-owner"
        );
        assert_eq!(q["x-id"], "PutObject");
        let expected = reference_url(&Reference {
            scheme_host: "http://127.0.0.1:9000",
            host: "127.0.0.1:9000",
            path: "/demo/uploads/q3 report.csv",
            method: "PUT",
            extra_query: &[("x-id", "PutObject")],
            headers: &header_pairs(&signed),
            token: Some("tok/en"),
            expires: 600,
        });
        assert_eq!(q, query_of(&expected));
    }

    #[test]
    fn put_without_pins_signs_only_host() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let metadata = Metadata::default();
        let signed =
            signer.presign_put(&creds(None), &put(&bucket, &key, &metadata), at(T), ttl(60));
        assert!(signed.headers.is_empty());
        let expected = reference_url(&Reference {
            scheme_host: "https://reports.s3.us-east-1.amazonaws.com",
            host: "reports.s3.us-east-1.amazonaws.com",
            path: "/a.txt",
            method: "PUT",
            extra_query: &[("x-id", "PutObject")],
            headers: &[],
            token: None,
            expires: 60,
        });
        assert_eq!(signed.url.expose(), &expected);
    }

    #[test]
    fn every_put_pin_changes_the_signature() {
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "a".parse().unwrap();
        let (t1, t2): (HeaderText, HeaderText) =
            ("text/plain".parse().unwrap(), "text/html".parse().unwrap());
        let c1: ChecksumSha256 = CHECKSUM.parse().unwrap();
        let c2: ChecksumSha256 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
            .parse()
            .unwrap();
        let (m0, m1, m2, m3) = (
            Metadata::default(),
            Metadata::new([("a", "1")]).unwrap(),
            Metadata::new([("a", "2")]).unwrap(),
            Metadata::new([("b", "1")]).unwrap(),
        );
        let sig = |object: &PutObject<'_>| {
            query_of(
                signer
                    .presign_put(&creds(None), object, at(T), ttl(60))
                    .url
                    .expose(),
            )["X-Amz-Signature"]
                .clone()
        };
        let base_object = PutObject {
            content_type: Some(&t1),
            content_length: Some(10),
            checksum_sha256: Some(&c1),
            create_only: true,
            ..put(&bucket, &key, &m1)
        };
        let base = sig(&base_object);
        let variants = [
            sig(&PutObject {
                content_type: Some(&t2),
                ..base_object
            }),
            sig(&PutObject {
                content_type: None,
                ..base_object
            }),
            sig(&PutObject {
                content_length: Some(11),
                ..base_object
            }),
            sig(&PutObject {
                content_length: None,
                ..base_object
            }),
            sig(&PutObject {
                checksum_sha256: Some(&c2),
                ..base_object
            }),
            sig(&PutObject {
                checksum_sha256: None,
                ..base_object
            }),
            sig(&PutObject {
                create_only: false,
                ..base_object
            }),
            sig(&PutObject {
                metadata: &m0,
                ..base_object
            }),
            sig(&PutObject {
                metadata: &m2,
                ..base_object
            }),
            sig(&PutObject {
                metadata: &m3,
                ..base_object
            }),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v, &base, "variant {i}");
        }
    }

    #[test]
    fn header_values_are_sent_as_given_and_signed_with_spaces_collapsed() {
        // HTTP cannot carry surrounding spaces, so they are dropped from what the
        // uploader is told to send; inner runs are kept there (S3 stores the value
        // as sent) and collapsed only in the canonical request, as S3 does when it
        // verifies.
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "a".parse().unwrap();
        let spaced: HeaderText = "  text/plain;   charset=utf-8 ".parse().unwrap();
        let single: HeaderText = "text/plain; charset=utf-8".parse().unwrap();
        let metadata = Metadata::new([("note", "two  spaces")]).unwrap();
        let signed = |ct| {
            signer.presign_put(
                &creds(None),
                &PutObject {
                    content_type: Some(ct),
                    ..put(&bucket, &key, &metadata)
                },
                at(T),
                ttl(60),
            )
        };
        let with_runs = signed(&spaced);
        assert_eq!(
            header_pairs(&with_runs),
            [
                ("content-type", "text/plain;   charset=utf-8"),
                ("x-amz-meta-note", "two  spaces"),
            ]
        );
        let expected = reference_url(&Reference {
            scheme_host: "http://127.0.0.1:9000",
            host: "127.0.0.1:9000",
            path: "/demo/a",
            method: "PUT",
            extra_query: &[("x-id", "PutObject")],
            headers: &header_pairs(&with_runs),
            token: None,
            expires: 60,
        });
        assert_eq!(with_runs.url.expose(), &expected);
        // The same canonical value, so the same signature.
        assert_eq!(
            query_of(with_runs.url.expose())["X-Amz-Signature"],
            query_of(signed(&single).url.expose())["X-Amz-Signature"]
        );
    }

    #[test]
    fn repeated_metadata_names_become_one_joined_header() {
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "a".parse().unwrap();
        let metadata = Metadata::new([("tag", "b"), ("x", "1"), ("tag", "a")]).unwrap();
        let signed =
            signer.presign_put(&creds(None), &put(&bucket, &key, &metadata), at(T), ttl(60));
        assert_eq!(
            header_pairs(&signed),
            [("x-amz-meta-tag", "a,b"), ("x-amz-meta-x", "1")]
        );
        assert_eq!(
            query_of(signed.url.expose())["X-Amz-SignedHeaders"],
            "host%3Bx-amz-meta-tag%3Bx-amz-meta-x"
        );
    }

    #[test]
    fn put_url_is_allocated_once_with_much_metadata() {
        // The debug assertion in `presign` checks the URL's capacity never grew.
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "€".repeat(341).parse().unwrap();
        let names: Vec<String> = (0..60)
            .map(|i| format!("n{i:02}-{}", "x".repeat(20)))
            .collect();
        let metadata = Metadata::new(names.iter().map(|n| (n.as_str(), "v"))).unwrap();
        let text: HeaderText = "\"".repeat(1024).parse().unwrap();
        let object = PutObject {
            content_type: Some(&text),
            content_length: Some(u64::MAX),
            create_only: true,
            ..put(&bucket, &key, &metadata)
        };
        let signed = signer.presign_put(&creds(Some(&"/".repeat(2000))), &object, at(T), ttl(60));
        assert_eq!(signed.headers.len(), 63);
    }

    #[test]
    fn every_input_changes_the_signature() {
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let (b1, b2): (BucketName, BucketName) =
            ("demo".parse().unwrap(), "demo2".parse().unwrap());
        let (k1, k2): (ObjectKey, ObjectKey) = ("a".parse().unwrap(), "b".parse().unwrap());
        let v: VersionId = "v1".parse().unwrap();
        let text: HeaderText = "text/plain".parse().unwrap();
        let sig = |creds: &SigningCredentials, object: &GetObject<'_>, time: u64, ttl_secs: u64| {
            query_of(
                signer
                    .presign_get(creds, object, at(time), ttl(ttl_secs))
                    .url
                    .expose(),
            )["X-Amz-Signature"]
                .clone()
        };
        let base = sig(&creds(None), &get(&b1, &k1), T, 60);
        let variants = [
            sig(&creds(Some("t")), &get(&b1, &k1), T, 60),
            sig(&creds(None), &get(&b2, &k1), T, 60),
            sig(&creds(None), &get(&b1, &k2), T, 60),
            sig(
                &creds(None),
                &GetObject {
                    version_id: Some(&v),
                    ..get(&b1, &k1)
                },
                T,
                60,
            ),
            sig(
                &creds(None),
                &GetObject {
                    response_content_type: Some(&text),
                    ..get(&b1, &k1)
                },
                T,
                60,
            ),
            sig(
                &creds(None),
                &GetObject {
                    response_content_disposition: Some(&text),
                    ..get(&b1, &k1)
                },
                T,
                60,
            ),
            sig(&creds(None), &get(&b1, &k1), T + 1, 60),
            sig(&creds(None), &get(&b1, &k1), T, 61),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v, &base, "variant {i}");
        }
        // Sub-second differences do not change anything: X-Amz-Date has whole seconds.
        let object = get(&b1, &k1);
        let later = signer.presign_get(
            &creds(None),
            &object,
            at(T) + Duration::from_millis(999),
            ttl(60),
        );
        assert_eq!(query_of(later.url.expose())["X-Amz-Signature"], base);
    }

    #[test]
    fn the_url_is_allocated_once_even_for_worst_case_inputs() {
        // The debug assertion in `presign` checks the capacity never grew; this
        // drives it with inputs where every byte encodes to three.
        let signer = signer(Some("http://bucket-host.example:9000"), false);
        let bucket: BucketName = "a-bucket-name-that-is-rather-long-for-a-bucket-0123456789"
            .parse()
            .unwrap();
        let key: ObjectKey = "€".repeat(341).parse().unwrap();
        let text: HeaderText = "\"".repeat(1024).parse().unwrap();
        let version: VersionId = "+".repeat(1024).parse().unwrap();
        let object = GetObject {
            version_id: Some(&version),
            response_content_type: Some(&text),
            response_content_disposition: Some(&text),
            ..get(&bucket, &key)
        };
        let token = "/".repeat(2000);
        let signed = signer.presign_get(&creds(Some(&token)), &object, at(T), ttl(604_800));
        assert!(signed.url.expose().len() > 12_000);
    }

    #[test]
    fn debug_output_hides_the_url() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let signed =
            signer.presign_get(&creds(Some("session")), &get(&bucket, &key), at(T), ttl(60));
        let printed = format!("{signed:?} {signer:?}");
        assert!(
            !printed.contains("X-Amz-Signature") && !printed.contains("reports.s3"),
            "{printed}"
        );
        assert!(
            !printed.contains(SECRET) && !printed.contains("session"),
            "{printed}"
        );
    }

    #[test]
    fn signer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Signer>();
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(&mut buf, 0), "0");
        assert_eq!(decimal(&mut buf, 7), "7");
        assert_eq!(decimal(&mut buf, 604_800), "604800");
        assert_eq!(decimal(&mut buf, u64::from(u32::MAX)), "4294967295");
        assert_eq!(decimal(&mut buf, 5 * 1024 * 1024 * 1024), "5368709120");
        assert_eq!(decimal(&mut buf, u64::MAX), "18446744073709551615");
    }

    #[test]
    fn coalesced_pieces_hash_like_the_whole() {
        let text: String = (0..2000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        for sizes in [
            &[1usize, 2, 3][..],
            &[255, 1, 256, 300, 0, 7],
            &[1000, 1, 999],
            &[17; 50],
        ] {
            let mut hasher = Sha256::new();
            let mut feed = Coalesce::new(&mut hasher);
            let mut at = 0;
            for &size in sizes {
                feed.push(&text[at..at + size]);
                at += size;
            }
            feed.finish();
            assert_eq!(hasher.finalize(), Sha256::digest(&text[..at]), "{sizes:?}");
        }
    }

    #[test]
    fn merge_keeps_both_sides_in_order() {
        let a = [
            QueryParam::text("X-Amz-A", ""),
            QueryParam::text("X-Amz-Z", ""),
        ];
        let b = [
            QueryParam::text("A", ""),
            QueryParam::text("X-Amz-M", ""),
            QueryParam::text("x-id", ""),
        ];
        let names: Vec<&str> = merge_sorted(&a, &b, |p| p.name).map(|p| p.name).collect();
        assert_eq!(names, ["A", "X-Amz-A", "X-Amz-M", "X-Amz-Z", "x-id"]);
    }
}
