//! `presign` and `post_policy`: presigned URLs and POST forms, checked as S3 checks
//! them.
//!
//! The checks here share no code with the signer: the verifier parses the URL it was
//! given, rebuilds the canonical request from what it parsed (as the store does from
//! the request it receives), derives the key and compares signatures. A URL that is
//! not in canonical form, an unsigned pin, or a query value that decodes to something
//! else than what was granted all fail here as they would fail at the store.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{bit, flags_and_text, lines};
use crate::credentials::SigningCredentials;
use crate::expiry::Ttl;
use crate::scope::{BucketName, ChecksumSha256, HeaderText, Metadata, ObjectKey, SizeRange};
use crate::secret::Secret;
use crate::sign::{
    Endpoint, GetObject, PostObject, PresignedRequest, PutObject, Signer, UploadPart,
};
use crate::upload::{PartNumber, UploadId};

const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
/// 2025-06-15T15:06:40Z; inputs add up to 2^32 seconds to it.
const BASE_TIME: u64 = 1_750_000_000;

/// Signs a GET, PUT or UploadPart for the input's values and verifies the URL.
///
/// Flags: bit 0 forces path-style; bits 1–2 pick GET (0, 3), PUT (1) or UploadPart
/// (2); bit 3 asks for create-only. Lines: those of `Setup`, then version id,
/// response content type and disposition for a GET; content type, checksum and
/// length for a PUT; upload id, checksum and length for a part; then the part number
/// and `name=value` metadata lines. Values that do not parse are left out, so the
/// other fields stay in play.
///
/// Invariants: the URL is plain ASCII that an HTTP client parses; it addresses the
/// bucket and key given; its query is in canonical order and encoding and carries
/// exactly the granted parameters, each decoding to the value given; every header
/// the uploader must send is signed and every signed header is listed; and the
/// signature verifies as the store computes it.
pub fn presign(data: &[u8]) {
    let (flags, text) = flags_and_text(data);
    let s = Setup::new(flags, &text);
    let [a, b, c, part, metadata] = lines::<5>(s.rest);
    let length = c.trim().parse::<u64>().ok();
    let checksum = b.parse::<ChecksumSha256>().ok();

    let mut expected = Expected {
        host_and_path: host_and_path(&s.endpoint, &s.bucket, &s.key),
        date_time: amz_date(s.time),
        ttl: s.ttl,
        token: (!s.token.is_empty()).then_some(s.token),
        query: BTreeMap::new(),
        headers: BTreeMap::new(),
    };
    let method = (flags >> 1) & 0b11;
    if matches!(method, 1 | 2) {
        // The pins a PUT and a part share.
        if let Some(n) = length {
            expected
                .headers
                .insert("content-length".into(), n.to_string());
        }
        if let Some(c) = &checksum {
            expected
                .headers
                .insert("x-amz-checksum-sha256".into(), c.as_str().into());
        }
    }
    let signed = match method {
        1 => {
            let content_type = a.parse::<HeaderText>().ok();
            let metadata = metadata_of(metadata);
            let create_only = bit(flags, 3);
            let request = s.signer.presign_put(
                &s.creds,
                &PutObject {
                    bucket: &s.bucket,
                    key: &s.key,
                    content_type: content_type.as_ref(),
                    content_length: length,
                    checksum_sha256: checksum.as_ref(),
                    metadata: &metadata,
                    create_only,
                },
                s.time,
                s.ttl,
            );
            expected.query.insert("x-id", "PutObject".into());
            let headers = &mut expected.headers;
            if let Some(t) = &content_type {
                headers.insert("content-type".into(), t.as_str().trim_matches(' ').into());
            }
            if create_only {
                headers.insert("if-none-match".into(), "*".into());
            }
            for (name, value) in metadata.entries() {
                headers
                    .entry(format!("x-amz-meta-{name}"))
                    .and_modify(|v| *v = format!("{v},{value}"))
                    .or_insert_with(|| value.clone());
            }
            request
        }
        2 => {
            let upload_id = a
                .parse::<UploadId>()
                .unwrap_or_else(|_| "upload-1".parse().expect("a valid upload id"));
            let number = part.trim().parse::<u64>().unwrap_or(1);
            let number = PartNumber::try_from(number)
                .unwrap_or_else(|_| PartNumber::try_from(1).expect("part 1 exists"));
            let request = s.signer.presign_upload_part(
                &s.creds,
                &UploadPart {
                    bucket: &s.bucket,
                    key: &s.key,
                    upload_id: &upload_id,
                    part_number: number,
                    content_length: length,
                    checksum_sha256: checksum.as_ref(),
                },
                s.time,
                s.ttl,
            );
            expected.query.insert("x-id", "UploadPart".into());
            expected.query.insert("partNumber", number.to_string());
            expected
                .query
                .insert("uploadId", upload_id.as_str().to_owned());
            request
        }
        _ => {
            let version = a.parse().ok();
            let content_type = b.parse::<HeaderText>().ok();
            let disposition = c.parse::<HeaderText>().ok();
            let request = s.signer.presign_get(
                &s.creds,
                &GetObject {
                    bucket: &s.bucket,
                    key: &s.key,
                    version_id: version.as_ref(),
                    response_content_type: content_type.as_ref(),
                    response_content_disposition: disposition.as_ref(),
                },
                s.time,
                s.ttl,
            );
            expected.query.insert("x-id", "GetObject".into());
            if version.is_some() {
                expected.query.insert("versionId", a.into());
            }
            if let Some(t) = content_type {
                expected
                    .query
                    .insert("response-content-type", t.as_str().into());
            }
            if let Some(d) = disposition {
                expected
                    .query
                    .insert("response-content-disposition", d.as_str().into());
            }
            request
        }
    };
    verify_url(&signed, &expected);
    encoder(&text);
}

/// Signs a POST form for the input's values and checks it against its own policy.
///
/// Flags: bit 0 forces path-style. Lines: those of `Setup`, then content type,
/// checksum, `MIN MAX` size range and `name=value` metadata lines.
///
/// Invariants: the policy is JSON in plain ASCII; it pins the bucket and the exact
/// key (never a prefix match), the size range, and every field the form carries to
/// the value the form carries (S3 refuses a form with a field its policy does not
/// name, and a condition without its field); it expires when the grant does; and the
/// signature verifies.
pub fn post_policy(data: &[u8]) {
    let (flags, text) = flags_and_text(data);
    let s = Setup::new(flags, &text);
    let [content_type, checksum, size, metadata] = lines::<4>(s.rest);
    let content_type = content_type.parse::<HeaderText>().ok();
    let checksum = checksum.parse::<ChecksumSha256>().ok();
    let metadata = metadata_of(metadata);
    let mut bounds = size.split(' ').map(|n| n.trim().parse::<u64>().ok());
    let size = match (bounds.next().flatten(), bounds.next().flatten()) {
        (Some(min), Some(max)) => SizeRange::new(min, max).ok(),
        _ => None,
    }
    .unwrap_or_else(|| SizeRange::new(0, 1024).expect("a valid range"));

    let form = s.signer.presign_post(
        &s.creds,
        &PostObject {
            bucket: &s.bucket,
            key: &s.key,
            content_type: content_type.as_ref(),
            size,
            checksum_sha256: checksum.as_ref(),
            metadata: &metadata,
        },
        s.time,
        s.ttl,
    );

    form.url.parse::<http::Uri>().expect("the form URL parses");
    let (scheme, authority) = (s.endpoint.scheme(), s.endpoint.authority());
    let url = if s.endpoint.virtual_hosted(&s.bucket) {
        format!("{scheme}://{}.{authority}/", s.bucket)
    } else {
        format!("{scheme}://{authority}/{}", s.bucket)
    };
    assert_eq!(form.url, url, "the form goes to the bucket");
    assert_eq!(form.file_field, "file");

    let fields: BTreeMap<String, &str> = form
        .fields
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
        .collect();
    assert_eq!(fields.len(), form.fields.len(), "each field is sent once");
    assert_eq!(form.fields[0].0, "key", "the key comes first");
    let policy_b64 = fields["policy"];
    let date_time = amz_date(s.time);
    assert_eq!(fields["x-amz-date"], date_time);
    assert_eq!(fields["x-amz-credential"], credential(&date_time));
    assert_eq!(
        fields.get("x-amz-security-token").copied(),
        (!s.token.is_empty()).then_some(s.token)
    );
    let mut mac = signing_key(&date_time[..8]);
    mac.update(policy_b64.as_bytes());
    assert_eq!(
        fields["x-amz-signature"],
        hex::encode(mac.finalize().into_bytes()),
        "the policy signature verifies"
    );

    let policy = base64::engine::general_purpose::STANDARD
        .decode(policy_b64)
        .expect("the policy is base64");
    assert!(
        policy.iter().all(|b| (b' '..=b'~').contains(b)),
        "the policy is printable ASCII"
    );
    let policy: Value = serde_json::from_slice(&policy).expect("the policy is JSON");
    let expires = s.time + Duration::from_secs(u64::from(s.ttl.as_secs()));
    assert_eq!(policy["expiration"], Value::from(iso8601(expires)));
    let mut pinned: BTreeMap<String, String> = BTreeMap::new();
    let mut range = None;
    for condition in policy["conditions"].as_array().expect("a conditions array") {
        match condition {
            Value::Object(map) => {
                assert_eq!(map.len(), 1, "one field per condition object");
                let (name, value) = map.iter().next().expect("one entry");
                let value = value.as_str().expect("an exact value").to_owned();
                assert!(pinned.insert(name.to_ascii_lowercase(), value).is_none());
            }
            Value::Array(items) => match items.as_slice() {
                [Value::String(op), Value::String(name), Value::String(value)] => {
                    assert_eq!(op, "eq", "only exact matches");
                    let name = name.strip_prefix('$').expect("a field reference");
                    assert!(
                        pinned
                            .insert(name.to_ascii_lowercase(), value.clone())
                            .is_none()
                    );
                }
                [Value::String(op), min, max] if op == "content-length-range" => {
                    range = Some((min.as_u64(), max.as_u64()));
                }
                other => panic!("unexpected condition {other:?}"),
            },
            other => panic!("unexpected condition {other:?}"),
        }
    }
    assert_eq!(range, Some((Some(size.min()), Some(size.max()))));
    assert_eq!(pinned.remove("bucket").as_deref(), Some(s.bucket.as_str()));
    assert_eq!(pinned.get("key").map(String::as_str), Some(s.key.as_str()));
    for (name, value) in &fields {
        if name == "policy" || name == "x-amz-signature" {
            continue;
        }
        assert_eq!(
            pinned.remove(name).as_deref(),
            Some(*value),
            "field {name} is pinned to the value sent"
        );
    }
    assert!(pinned.is_empty(), "conditions without a field: {pinned:?}");
}

/// The encoder on its own: every byte but the unreserved ones becomes `%XX`, and the
/// result decodes to the input.
fn encoder(text: &str) {
    let mut out = String::new();
    crate::sign::encode_query(&mut out, text);
    assert_eq!(out, uri_encode(text, false));
    assert_eq!(percent_decode(&out).as_deref(), Some(text.as_bytes()));
}

// === the inputs ===

/// What both targets' inputs start with: the lines endpoint URL (empty: AWS), bucket,
/// key (either replaced when it does not parse), session token (empty: none), and
/// `SECONDS-AFTER-BASE TTL`; flag bit 0 forces path-style.
struct Setup<'a> {
    signer: Signer,
    endpoint: Endpoint,
    bucket: BucketName,
    key: ObjectKey,
    token: &'a str,
    time: SystemTime,
    ttl: Ttl,
    creds: SigningCredentials,
    /// The lines after these.
    rest: &'a str,
}

impl<'a> Setup<'a> {
    fn new(flags: u8, text: &'a str) -> Setup<'a> {
        let [url, bucket, key, token, timing, rest] = lines::<6>(text);
        let endpoint = endpoint(url, bit(flags, 0));
        let mut numbers = timing.split(' ').map(|n| n.trim().parse::<u64>().ok());
        let offset = numbers.next().flatten().unwrap_or(0) % (1 << 32);
        let ttl = numbers.next().flatten().unwrap_or(900).max(1);
        let time = UNIX_EPOCH + Duration::from_secs(BASE_TIME + offset);
        Setup {
            signer: Signer::new(endpoint.clone(), REGION),
            endpoint,
            bucket: bucket
                .parse()
                .unwrap_or_else(|_| "demo-bucket".parse().expect("a valid bucket")),
            key: key
                .parse()
                .unwrap_or_else(|_| "reports/q3.pdf".parse().expect("a valid key")),
            token,
            time,
            ttl: Ttl::clamp(&[Duration::from_secs(ttl)], time, None).expect("at least 1 s"),
            creds: SigningCredentials {
                access_key_id: ACCESS_KEY_ID.to_owned(),
                secret_access_key: Secret::new(SECRET_KEY.to_owned()),
                session_token: (!token.is_empty()).then(|| Secret::new(token.to_owned())),
                expires_at: None,
            },
            rest,
        }
    }
}

/// The endpoint at `url` (AWS itself when empty or invalid); checks that an endpoint
/// that parses prints back to one that parses the same.
fn endpoint(url: &str, path_style: bool) -> Endpoint {
    match Endpoint::new(Some(url).filter(|u| !u.is_empty()), REGION, path_style) {
        Ok(endpoint) => {
            let again = Endpoint::new(Some(&endpoint.url()), REGION, path_style)
                .expect("an endpoint's URL parses");
            assert_eq!(again, endpoint);
            endpoint
        }
        Err(_) => Endpoint::new(None, REGION, path_style).expect("AWS's endpoint parses"),
    }
}

/// `name=value` lines; the empty set when they do not make valid metadata.
fn metadata_of(lines: &str) -> Metadata {
    let entries = lines.lines().filter_map(|l| l.split_once('=')).take(16);
    Metadata::new(entries).unwrap_or_default()
}

/// Where a request for `key` in `bucket` goes, as the addressing rules say: the host,
/// and the decoded path.
fn host_and_path(endpoint: &Endpoint, bucket: &BucketName, key: &ObjectKey) -> (String, String) {
    let authority = endpoint.authority();
    if endpoint.virtual_hosted(bucket) {
        (format!("{bucket}.{authority}"), format!("/{key}"))
    } else {
        (authority.to_owned(), format!("/{bucket}/{key}"))
    }
}

// === the verifier ===

/// What a presigned URL must carry besides SigV4's own parameters.
struct Expected<'a> {
    /// The host and the decoded path.
    host_and_path: (String, String),
    /// `X-Amz-Date`.
    date_time: String,
    ttl: Ttl,
    token: Option<&'a str>,
    /// Other query parameters, decoded.
    query: BTreeMap<&'static str, String>,
    /// Headers the uploader must send, besides `host`.
    headers: BTreeMap<String, String>,
}

/// Verifies `signed` as the store would, and that it grants exactly `expected`.
fn verify_url(signed: &PresignedRequest, expected: &Expected<'_>) {
    let url = signed.url.expose();
    assert!(
        url.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%/?&=:[]".contains(&b)),
        "the URL needs no further encoding: {url}"
    );
    let uri = url.parse::<http::Uri>().expect("the URL parses");
    let scheme = uri.scheme_str().expect("a scheme");
    assert!(scheme == "http" || scheme == "https");
    let rest = &url[scheme.len() + 3..];
    let (host, rest) = rest.split_at(rest.find('/').expect("a path"));
    let (path, query) = rest.split_once('?').expect("a query");
    assert_eq!(Some(host), uri.authority().map(|a| a.as_str()));
    assert_eq!(uri.path(), path);

    let (want_host, want_path) = &expected.host_and_path;
    assert_eq!(host, want_host);
    let decoded = percent_decode(path).expect("the path is percent-encoded");
    assert_eq!(
        decoded,
        want_path.as_bytes(),
        "the URL addresses the object granted"
    );
    assert_eq!(path, uri_encode(want_path, true), "the path is canonical");

    let (unsigned, signature) = query
        .rsplit_once("&X-Amz-Signature=")
        .expect("the signature comes last");
    assert!(
        signature.len() == 64
            && signature
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "the signature is 64 lowercase hex digits"
    );
    let pairs: Vec<(&str, &str)> = unsigned
        .split('&')
        .map(|p| p.split_once('=').expect("name=value"))
        .collect();
    assert!(
        pairs.windows(2).all(|w| w[0].0 < w[1].0),
        "parameters are sorted and unique"
    );
    let mut params = BTreeMap::new();
    for (name, value) in &pairs {
        let text = String::from_utf8(percent_decode(value).expect("percent-encoded"))
            .expect("values are UTF-8");
        assert_eq!(*value, uri_encode(&text, false), "{name} is canonical");
        params.insert(*name, text);
    }

    let signed_headers: Vec<&str> = std::iter::once("host")
        .chain(expected.headers.keys().map(String::as_str))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut want: BTreeMap<&str, String> = expected
        .query
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    want.insert("X-Amz-Algorithm", "AWS4-HMAC-SHA256".into());
    want.insert("X-Amz-Credential", credential(&expected.date_time));
    want.insert("X-Amz-Date", expected.date_time.clone());
    want.insert("X-Amz-Expires", expected.ttl.as_secs().to_string());
    want.insert("X-Amz-SignedHeaders", signed_headers.join(";"));
    if let Some(token) = expected.token {
        want.insert("X-Amz-Security-Token", token.to_owned());
    }
    assert_eq!(params, want, "the URL grants exactly what was asked");
    let sent: BTreeMap<String, String> = signed.headers.iter().cloned().collect();
    assert_eq!(sent.len(), signed.headers.len(), "each header is sent once");
    assert_eq!(sent, expected.headers, "every pin is a header to send");

    // The store's side: the canonical request from what it received.
    let mut canonical = format!("{}\n{path}\n{unsigned}\n", signed.method);
    for name in &signed_headers {
        let value = if *name == "host" { host } else { &sent[*name] };
        let value = value
            .split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>();
        canonical.push_str(&format!("{name}:{}\n", value.join(" ")));
    }
    canonical.push_str(&format!("\n{}\nUNSIGNED-PAYLOAD", signed_headers.join(";")));
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{}/{REGION}/s3/aws4_request\n{}",
        expected.date_time,
        &expected.date_time[..8],
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut mac = signing_key(&expected.date_time[..8]);
    mac.update(string_to_sign.as_bytes());
    assert_eq!(
        signature,
        hex::encode(mac.finalize().into_bytes()),
        "the signature verifies"
    );
}

/// `{access key id}/{date}/{region}/s3/aws4_request`.
fn credential(date_time: &str) -> String {
    format!(
        "{ACCESS_KEY_ID}/{}/{REGION}/s3/aws4_request",
        &date_time[..8]
    )
}

/// An HMAC keyed with SigV4's signing key for `date` (`YYYYMMDD`), derived here from
/// the secret, as the store derives it.
fn signing_key(date: &str) -> Hmac<Sha256> {
    let mut key = format!("AWS4{SECRET_KEY}").into_bytes();
    for part in [date, REGION, "s3", "aws4_request"] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(part.as_bytes());
        key = mac.finalize().into_bytes().to_vec();
    }
    Hmac::<Sha256>::new_from_slice(&key).expect("any key length")
}

/// The AWS docs' `UriEncode`, byte by byte.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes percent-encoding; `None` for a `%` not followed by two uppercase hex digits.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let digit = |d: Option<u8>| match d? {
            d @ b'0'..=b'9' => Some(d - b'0'),
            d @ b'A'..=b'F' => Some(d - b'A' + 10),
            _ => None,
        };
        out.push(digit(bytes.next())? << 4 | digit(bytes.next())?);
    }
    Some(out)
}

/// Year, month, day, hour, minute and second of `time`, counted a year and a month
/// at a time (slow and plain, unlike the signer's civil-from-days).
fn civil(time: SystemTime) -> [u64; 6] {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (mut days, rem) = (secs / 86_400, secs % 86_400);
    let leap = |y: u64| y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
    let mut year = 1970;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let mut month = 1;
    for len in [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ] {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    [year, month, days + 1, rem / 3600, rem / 60 % 60, rem % 60]
}

/// `YYYYMMDD'T'HHMMSS'Z'`.
fn amz_date(time: SystemTime) -> String {
    let [y, mo, d, h, mi, s] = civil(time);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `YYYY-MM-DD'T'HH:MM:SS.000Z`.
fn iso8601(time: SystemTime) -> String {
    let [y, mo, d, h, mi, s] = civil(time);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000Z")
}
