//! Presigned POST: the form of a browser-based upload, whose signed policy states what
//! the upload may be ("Browser-Based Uploads Using POST (AWS Signature Version 4)"
//! and "POST Policy" in the S3 API reference).
//!
//! This module owns the policy document, its JSON escaping, its signature and the
//! form fields. It leaves the signing key to `key_cache` (the very key the URL
//! signer uses: one derivation per day serves both), the time formats to
//! `amz_date`, the bucket URL's addressing to `endpoint`, and the lifetime to
//! `expiry`.
//!
//! Security invariants, enforced by the store because the policy is signed:
//! - the key is pinned exactly (`["eq", "$key", KEY]`), never by prefix, so a form
//!   cannot write anywhere else. S3 substitutes `${filename}` in the key field with
//!   the uploaded file's name *before* checking the policy: a key holding that text
//!   literally can then not match, so such a grant fails closed (refuse it upstream
//!   to give the caller a clear error);
//! - the size is bounded by `content-length-range`; content type, metadata and
//!   checksum by exact conditions;
//! - every field the form carries has a condition (S3 refuses fields the policy
//!   does not mention), and the policy's `expiration` is the grant's true end.

use std::fmt;
use std::time::SystemTime;

use base64::Engine;
use hmac::Mac;

use super::amz_date::AmzDate;
use super::encode::push_hex_lower;
use super::key_cache::{Prepared, SigningKey};
use super::presign::{ALGORITHM, META_PREFIX, Signer, joined_value, metadata_groups};
use crate::credentials::SigningCredentials;
use crate::expiry::Ttl;
use crate::scope::{BucketName, ChecksumSha256, HeaderText, Metadata, ObjectKey, SizeRange};

/// The object a presigned POST form uploads, and what its policy pins.
#[derive(Debug, Clone, Copy)]
pub struct PostObject<'a> {
    /// The bucket.
    pub bucket: &'a BucketName,
    /// The object's key, pinned exactly.
    pub key: &'a ObjectKey,
    /// Pins the `Content-Type` field, which S3 stores with the object.
    pub content_type: Option<&'a HeaderText>,
    /// The sizes the file may have: the policy's `content-length-range`.
    pub size: SizeRange,
    /// Pins `x-amz-checksum-sha256`, a POST form field as it is a PUT header: S3
    /// refuses a file whose SHA-256 differs (`BadDigest`). No
    /// `x-amz-checksum-algorithm` field goes with it: as for a PUT, the value field
    /// alone is what S3 verifies, and every extra field would need a condition.
    pub checksum_sha256: Option<&'a ChecksumSha256>,
    /// User metadata, one `x-amz-meta-<name>` field per name.
    pub metadata: &'a Metadata,
}

/// A presigned POST form: where to send it and every field it must carry.
///
/// The upload is a `multipart/form-data` POST to `url` with `fields`, in order,
/// followed by the file in a part named `file_field` (S3 ignores anything after the
/// file). The policy and signature fields together are a bearer credential until the
/// policy expires, as is the session token field of temporary credentials: `Debug`
/// prints the field names only, and they must never be logged.
pub struct PresignedPost {
    /// The bucket's URL (`{endpoint}/{bucket}` path-style, `{scheme}://{bucket}.{host}/`
    /// virtual-hosted). Not a secret: it grants nothing without the fields.
    pub url: String,
    /// Every form field, in the order to send them; the file, which must come last,
    /// is not among them.
    pub fields: Vec<(String, String)>,
    /// The name of the file's part: `file`.
    pub file_field: &'static str,
}

impl fmt::Debug for PresignedPost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Names<'a>(&'a [(String, String)]);
        impl fmt::Debug for Names<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|(name, _)| name))
                    .finish()
            }
        }
        f.debug_struct("PresignedPost")
            .field("url", &self.url)
            .field("fields", &Names(&self.fields))
            .field("values", &"[redacted]")
            .field("file_field", &self.file_field)
            .finish()
    }
}

impl Signer {
    /// A presigned POST form for `object`, signed with `creds` at `signing_time`
    /// (truncated to whole seconds) and valid for `ttl` from then: the policy's
    /// `expiration` is that instant plus `ttl`, in the same whole seconds as a URL's
    /// `X-Amz-Date` plus `X-Amz-Expires`.
    ///
    /// Infallible, like [`Signer::presign_get`], and under the same contract on
    /// `ttl` (a form stops working when the credentials that signed it expire).
    ///
    /// The policy carries, in this order: `bucket`, the exact key, the four SigV4
    /// fields (`x-amz-algorithm`, `x-amz-credential`, `x-amz-date`, and
    /// `x-amz-security-token` for temporary credentials), `content-length-range`,
    /// the content type, one condition per metadata name, and the checksum. The
    /// fields are `key`, `Content-Type`, `x-amz-meta-*`, `x-amz-checksum-sha256`,
    /// the SigV4 fields, `policy` and `x-amz-signature`; values are sent exactly as
    /// their conditions state them (a content type without surrounding spaces,
    /// repeated metadata names joined with `,`, as for a PUT).
    pub fn presign_post(
        &self,
        creds: &SigningCredentials,
        object: &PostObject<'_>,
        signing_time: SystemTime,
        ttl: Ttl,
    ) -> PresignedPost {
        let time = AmzDate::new(signing_time);
        // Whole seconds plus whole seconds: the same instant as the truncated
        // signing time plus `ttl`. An overflow (a clock beyond any real date)
        // yields a policy that has already expired: fail closed.
        let expiration = AmzDate::new(
            signing_time
                .checked_add(ttl.as_duration())
                .unwrap_or(signing_time),
        )
        .iso8601_millis();
        self.keys.with(creds, &time, &self.region, |prepared| {
            self.presign_post_prepared(prepared, creds, object, &time, &expiration)
        })
    }

    fn presign_post_prepared(
        &self,
        prepared: &Prepared,
        creds: &SigningCredentials,
        object: &PostObject<'_>,
        time: &AmzDate,
        expiration: &[u8; 24],
    ) -> PresignedPost {
        let content_type = object.content_type.map(|ct| ct.as_str().trim_matches(' '));
        let token = creds.session_token.as_ref().map(|t| t.expose().as_str());
        let mut credential =
            String::with_capacity(creds.access_key_id.len() + 1 + prepared.scope().len());
        credential.push_str(&creds.access_key_id);
        credential.push('/');
        credential.push_str(prepared.scope());
        // Joined values of repeated metadata names, in order; empty as a rule.
        let joined: Vec<String> = metadata_groups(object.metadata)
            .filter(|group| group.len() > 1)
            .map(joined_value)
            .collect();
        let mut joined_values = joined.iter();
        let metadata: Vec<(&str, &str)> = metadata_groups(object.metadata)
            .map(|group| match group {
                [(name, value)] => (name.as_str(), value.as_str()),
                _ => (
                    group[0].0.as_str(),
                    joined_values
                        .next()
                        .expect("one joined value was made per repeated name")
                        .as_str(),
                ),
            })
            .collect();

        let document = Policy {
            expiration: std::str::from_utf8(expiration).expect("ISO 8601 is ASCII"),
            bucket: object.bucket.as_str(),
            key: object.key.as_str(),
            credential: &credential,
            date_time: time.date_time(),
            session_token: token,
            size: object.size,
            content_type,
            metadata: &metadata,
            checksum_sha256: object.checksum_sha256.map(ChecksumSha256::as_str),
        }
        .to_json();
        let policy = base64::engine::general_purpose::STANDARD.encode(document.as_bytes());
        let signature = sign_policy(prepared.key(), &policy);

        // In the order S3's docs show them; only the file must come last.
        let mut fields: Vec<(String, String)> = Vec::with_capacity(10 + metadata.len());
        let push = |fields: &mut Vec<(String, String)>, name: &str, value: &str| {
            fields.push((name.to_owned(), value.to_owned()));
        };
        push(&mut fields, "key", object.key.as_str());
        if let Some(content_type) = content_type {
            push(&mut fields, "Content-Type", content_type);
        }
        for (name, value) in &metadata {
            fields.push(([META_PREFIX, name].concat(), (*value).to_owned()));
        }
        if let Some(checksum) = object.checksum_sha256 {
            push(&mut fields, "x-amz-checksum-sha256", checksum.as_str());
        }
        push(&mut fields, "x-amz-algorithm", ALGORITHM);
        fields.push(("x-amz-credential".to_owned(), credential));
        push(&mut fields, "x-amz-date", time.date_time());
        if let Some(token) = token {
            push(&mut fields, "x-amz-security-token", token);
        }
        fields.push(("policy".to_owned(), policy));
        fields.push(("x-amz-signature".to_owned(), signature));

        PresignedPost {
            url: self.bucket_url(object.bucket),
            fields,
            file_field: "file",
        }
    }

    /// The URL a form for `bucket` is posted to, addressed as a URL for an object in
    /// it would be.
    fn bucket_url(&self, bucket: &BucketName) -> String {
        let (scheme, authority) = (self.endpoint.scheme(), self.endpoint.authority());
        let name = bucket.as_str();
        if self.endpoint.virtual_hosted(bucket) {
            format!("{scheme}://{name}.{authority}/")
        } else {
            format!("{scheme}://{authority}/{name}")
        }
    }
}

/// `hex(HMAC-SHA256(signing key, base64 policy))`: for a POST, the string to sign is
/// the base64 policy itself.
fn sign_policy(key: &SigningKey, policy: &str) -> String {
    let mut mac = key.mac();
    Mac::update(&mut mac, policy.as_bytes());
    let signature: [u8; 32] = mac.finalize().into_bytes().into();
    let mut hex = String::with_capacity(64);
    push_hex_lower(&mut hex, &signature);
    hex
}

// === impl Policy ===

/// What a policy document states, before it is written as JSON.
struct Policy<'a> {
    /// `YYYY-MM-DD'T'HH:MM:SS.000Z`.
    expiration: &'a str,
    bucket: &'a str,
    key: &'a str,
    /// `{access key id}/{date}/{region}/s3/aws4_request`, not percent-encoded.
    credential: &'a str,
    /// `X-Amz-Date`.
    date_time: &'a str,
    session_token: Option<&'a str>,
    size: SizeRange,
    content_type: Option<&'a str>,
    /// `(name without prefix, value)`, one per name, sorted.
    metadata: &'a [(&'a str, &'a str)],
    checksum_sha256: Option<&'a str>,
}

impl Policy<'_> {
    /// The policy as compact JSON, every string escaped and only ASCII written (see
    /// [`push_json_string`]); allocated once.
    fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.json_len_bound());
        let capacity = out.capacity();
        out.push_str("{\"expiration\":");
        push_json_string(&mut out, &[self.expiration]);
        out.push_str(",\"conditions\":[{\"bucket\":");
        push_json_string(&mut out, &[self.bucket]);
        out.push('}');
        // The exact key. Never `starts-with`: the grant is for one object.
        out.push_str(",[\"eq\",\"$key\",");
        push_json_string(&mut out, &[self.key]);
        out.push(']');
        eq_object(&mut out, &["x-amz-algorithm"], ALGORITHM);
        eq_object(&mut out, &["x-amz-credential"], self.credential);
        eq_object(&mut out, &["x-amz-date"], self.date_time);
        if let Some(token) = self.session_token {
            // S3 requires it in the policy whenever the form carries it, which it
            // must for temporary credentials.
            eq_object(&mut out, &["x-amz-security-token"], token);
        }
        let mut min = [0u8; 20];
        let mut max = [0u8; 20];
        out.push_str(",[\"content-length-range\",");
        out.push_str(super::presign::decimal(&mut min, self.size.min()));
        out.push(',');
        out.push_str(super::presign::decimal(&mut max, self.size.max()));
        out.push(']');
        if let Some(content_type) = self.content_type {
            out.push_str(",[\"eq\",\"$Content-Type\",");
            push_json_string(&mut out, &[content_type]);
            out.push(']');
        }
        for (name, value) in self.metadata {
            eq_object(&mut out, &[META_PREFIX, name], value);
        }
        if let Some(checksum) = self.checksum_sha256 {
            eq_object(&mut out, &["x-amz-checksum-sha256"], checksum);
        }
        out.push_str("]}");
        debug_assert_eq!(out.capacity(), capacity, "the policy was allocated once");
        out
    }

    /// An upper bound of the JSON's length.
    fn json_len_bound(&self) -> usize {
        // The fixed text: punctuation, condition names, the algorithm, the
        // expiration, the date and two 20-digit numbers come to about 400.
        const FIXED: usize = 512;
        // `{"x-amz-meta-` and `":"` and `"},` around each entry.
        const PER_METADATA: usize = 24;
        FIXED
            + json_escaped_len(self.bucket)
            + json_escaped_len(self.key)
            + json_escaped_len(self.credential)
            + self.session_token.map_or(0, json_escaped_len)
            + self.content_type.map_or(0, json_escaped_len)
            + self
                .metadata
                .iter()
                .map(|(n, v)| PER_METADATA + json_escaped_len(n) + json_escaped_len(v))
                .sum::<usize>()
            + self.checksum_sha256.map_or(0, json_escaped_len)
    }
}

/// Appends `,{"NAME":"VALUE"}`: S3's short form of an exact-match condition. `name`
/// comes in parts so `x-amz-meta-` and a metadata name need not be joined first.
fn eq_object(out: &mut String, name: &[&str], value: &str) {
    out.push_str(",{");
    push_json_string(out, name);
    out.push(':');
    push_json_string(out, &[value]);
    out.push('}');
}

/// Appends the concatenation of `parts` as one JSON string, quotes included.
///
/// Escapes `"` and `\` (so no value can end its string and add a condition of its
/// own), control characters, and every non-ASCII character as `\uXXXX` (UTF-16,
/// surrogate pairs above U+FFFF): the policy is then plain ASCII, the same bytes for
/// every JSON parser whatever it assumes about encodings.
fn push_json_string(out: &mut String, parts: &[&str]) {
    out.push('"');
    for text in parts {
        let mut run_start = 0;
        for (i, c) in text.char_indices() {
            if is_plain_json(c) {
                continue;
            }
            out.push_str(&text[run_start..i]);
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                _ => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        push_unicode_escape(out, *unit);
                    }
                }
            }
            run_start = i + c.len_utf8();
        }
        out.push_str(&text[run_start..]);
    }
    out.push('"');
}

/// Whether `c` is written into a JSON string as is.
fn is_plain_json(c: char) -> bool {
    c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\'
}

/// Appends `\uXXXX` with lowercase hex.
fn push_unicode_escape(out: &mut String, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((unit >> shift) & 0xf)]));
    }
}

/// How many bytes `push_json_string` writes for `text`, quotes excluded.
fn json_escaped_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => 2,
            c if is_plain_json(c) => 1,
            c => 6 * c.len_utf16(),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sign::key_cache::derive_key_bytes;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use std::time::{Duration, UNIX_EPOCH};

    use crate::sign::test_fixtures::{SECRET, at, creds, signer, ttl};
    const T: u64 = 1_451_347_200; // 2015-12-29T00:00:00Z, the AWS POST example's date
    const CHECKSUM: &str = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";

    fn post<'a>(
        bucket: &'a BucketName,
        key: &'a ObjectKey,
        metadata: &'a Metadata,
    ) -> PostObject<'a> {
        PostObject {
            bucket,
            key,
            content_type: None,
            size: SizeRange::new(0, 1024).unwrap(),
            checksum_sha256: None,
            metadata,
        }
    }

    fn field<'a>(form: &'a PresignedPost, name: &str) -> Option<&'a str> {
        form.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn policy_json(form: &PresignedPost) -> String {
        let b64 = field(form, "policy").expect("a policy field");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn policy(form: &PresignedPost) -> Value {
        serde_json::from_str(&policy_json(form)).unwrap()
    }

    /// A strict store's checks, as S3 documents them and s3s-fs implements them:
    /// the signature is HMAC(signing key, policy field); every `eq` condition
    /// matches its field (bucket: the URL's); the size is within the range; and
    /// every field but `policy`, `x-amz-signature` and the file has a condition.
    fn store_accepts(form: &PresignedPost, bucket: &str, secret: &str, size: u64) -> bool {
        let lower = |s: &str| s.to_ascii_lowercase();
        let Some(b64) = field(form, "policy") else {
            return false;
        };
        let date = &field(form, "x-amz-date").unwrap_or_default()[..8];
        let key = derive_key_bytes(secret, date, "us-east-1", "s3");
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        Mac::update(&mut mac, b64.as_bytes());
        if hex::encode(mac.finalize().into_bytes())
            != field(form, "x-amz-signature").unwrap_or_default()
        {
            return false;
        }
        let value_of = |name: &str| -> Option<&str> {
            if name == "bucket" {
                return Some(bucket);
            }
            form.fields
                .iter()
                .find(|(n, _)| lower(n) == name)
                .map(|(_, v)| v.as_str())
        };
        let policy = policy(form);
        let mut covered = Vec::new();
        for condition in policy["conditions"].as_array().unwrap() {
            let (name, expected) = match condition {
                Value::Object(map) => {
                    let (name, value) = map.iter().next().unwrap();
                    (lower(name), value.as_str().unwrap().to_owned())
                }
                Value::Array(items) if items[0] == "content-length-range" => {
                    let (min, max) = (items[1].as_u64().unwrap(), items[2].as_u64().unwrap());
                    if !(min..=max).contains(&size) {
                        return false;
                    }
                    continue;
                }
                Value::Array(items) => {
                    assert_eq!(items[0], "eq", "only exact conditions are ever written");
                    let name = items[1].as_str().unwrap().strip_prefix('$').unwrap();
                    (lower(name), items[2].as_str().unwrap().to_owned())
                }
                other => panic!("unexpected condition {other}"),
            };
            if value_of(&name) != Some(expected.as_str()) {
                return false;
            }
            covered.push(name);
        }
        form.fields.iter().all(|(name, _)| {
            matches!(name.as_str(), "policy" | "x-amz-signature") || covered.contains(&lower(name))
        })
    }

    #[test]
    fn matches_the_aws_docs_post_example_signature() {
        // S3 API reference, "Example: Browser-Based Upload using HTTP POST (Using AWS
        // Signature Version 4)": this base64 policy (expiring 2015-12-30T12:00:00Z),
        // signed with the example credentials for 20151229/us-east-1/s3.
        const POLICY: &str = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        // It is the page's policy: the expiration and credential it states.
        let decoded = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(POLICY)
                .unwrap(),
        )
        .unwrap();
        assert!(decoded.starts_with("{ \"expiration\": \"2015-12-30T12:00:00.000Z\""));
        assert!(decoded.contains(
            "{\"x-amz-credential\": \"AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request\"}"
        ));
        // Signed with the key the URL signer caches, through the same function.
        let signer = signer(None, false);
        let signature = signer.keys.with(
            &creds(None),
            &AmzDate::new(at(T)),
            "us-east-1",
            |prepared| sign_policy(prepared.key(), POLICY),
        );
        assert_eq!(
            signature,
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    #[test]
    fn policy_states_every_pin_in_order() {
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "uploads/photo 1.jpg".parse().unwrap();
        let content_type: HeaderText = "image/jpeg".parse().unwrap();
        let checksum: ChecksumSha256 = CHECKSUM.parse().unwrap();
        let metadata = Metadata::new([("uuid", "14365123651274"), ("owner", "team-a")]).unwrap();
        let object = PostObject {
            content_type: Some(&content_type),
            size: SizeRange::new(1, 10_485_760).unwrap(),
            checksum_sha256: Some(&checksum),
            ..post(&bucket, &key, &metadata)
        };
        let form = signer.presign_post(&creds(None), &object, at(T), ttl(3600));
        assert_eq!(
            policy(&form),
            json!({
                "expiration": "2015-12-29T01:00:00.000Z",
                "conditions": [
                    {"bucket": "demo"},
                    ["eq", "$key", "uploads/photo 1.jpg"],
                    {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
                    {"x-amz-credential": "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"},
                    {"x-amz-date": "20151229T000000Z"},
                    ["content-length-range", 1, 10_485_760],
                    ["eq", "$Content-Type", "image/jpeg"],
                    {"x-amz-meta-owner": "team-a"},
                    {"x-amz-meta-uuid": "14365123651274"},
                    {"x-amz-checksum-sha256": CHECKSUM},
                ]
            })
        );
        let names: Vec<&str> = form.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "key",
                "Content-Type",
                "x-amz-meta-owner",
                "x-amz-meta-uuid",
                "x-amz-checksum-sha256",
                "x-amz-algorithm",
                "x-amz-credential",
                "x-amz-date",
                "policy",
                "x-amz-signature",
            ]
        );
        assert_eq!(field(&form, "key"), Some("uploads/photo 1.jpg"));
        assert_eq!(field(&form, "x-amz-checksum-sha256"), Some(CHECKSUM));
        assert_eq!(form.url, "http://127.0.0.1:9000/demo");
        assert_eq!(form.file_field, "file");
        assert!(store_accepts(&form, "demo", SECRET, 1));
        assert!(store_accepts(&form, "demo", SECRET, 10_485_760));
    }

    #[test]
    fn a_strict_store_refuses_any_change() {
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let key: ObjectKey = "a/b.txt".parse().unwrap();
        let content_type: HeaderText = "text/plain".parse().unwrap();
        let metadata = Metadata::new([("owner", "a")]).unwrap();
        let object = PostObject {
            content_type: Some(&content_type),
            size: SizeRange::new(10, 20).unwrap(),
            ..post(&bucket, &key, &metadata)
        };
        let form = signer.presign_post(&creds(Some("token")), &object, at(T), ttl(60));
        assert!(store_accepts(&form, "demo", SECRET, 15));
        assert!(!store_accepts(&form, "demo", SECRET, 9), "too small");
        assert!(!store_accepts(&form, "demo", SECRET, 21), "too large");
        assert!(!store_accepts(&form, "other", SECRET, 15), "another bucket");
        assert!(
            !store_accepts(&form, "demo", "another secret", 15),
            "another key"
        );
        for (i, (name, _)) in form.fields.iter().enumerate() {
            let mut tampered = PresignedPost {
                url: form.url.clone(),
                fields: form.fields.clone(),
                file_field: form.file_field,
            };
            tampered.fields[i].1.push('x');
            assert!(
                !store_accepts(&tampered, "demo", SECRET, 15),
                "changed {name}"
            );
        }
        let mut extra = PresignedPost {
            url: form.url.clone(),
            fields: form.fields.clone(),
            file_field: form.file_field,
        };
        extra.fields.insert(0, ("acl".into(), "public-read".into()));
        assert!(
            !store_accepts(&extra, "demo", SECRET, 15),
            "a field the policy does not name"
        );
    }

    #[test]
    fn quotes_backslashes_and_unicode_in_a_key_are_escaped() {
        let signer = signer(Some("http://127.0.0.1:9000"), true);
        let bucket: BucketName = "demo".parse().unwrap();
        let raw = "a\"],[\"starts-with\",\"$key\",\"/b\\\\c/é/日/😀";
        let key: ObjectKey = raw.parse().unwrap();
        let metadata = Metadata::default();
        let form = signer.presign_post(
            &creds(None),
            &post(&bucket, &key, &metadata),
            at(T),
            ttl(60),
        );
        let json = policy_json(&form);
        assert!(json.is_ascii(), "{json}");
        assert!(
            json.contains(
                r#"["eq","$key","a\"],[\"starts-with\",\"$key\",\"/b\\\\c/\u00e9/\u65e5/\ud83d\ude00"]"#
            ),
            "{json}"
        );
        // Parsed back, the key is itself, the only key condition is exact, and the
        // field carries the key as is.
        let parsed = policy(&form);
        let key_conditions: Vec<&Value> = parsed["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.to_string().contains("$key"))
            .collect();
        assert_eq!(key_conditions, [&json!(["eq", "$key", raw])]);
        assert_eq!(field(&form, "key"), Some(raw));
        assert!(store_accepts(&form, "demo", SECRET, 1));
    }

    #[test]
    fn json_strings_escape_controls_and_astral_characters() {
        let mut out = String::new();
        push_json_string(&mut out, &["a\u{0}\u{1f}\u{7f}\n\"\\", "é€😀"]);
        assert_eq!(
            out,
            r#""a\u0000\u001f\u007f\u000a\"\\\u00e9\u20ac\ud83d\ude00""#
        );
        assert_eq!(
            json_escaped_len("a\u{0}\u{1f}\u{7f}\n\"\\é€😀"),
            out.len() - 2
        );
    }

    #[test]
    fn security_token_is_a_field_and_a_condition_only_for_temporary_credentials() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let metadata = Metadata::default();
        let object = post(&bucket, &key, &metadata);
        let token = "IQoJb3JpZ2luX2Vj/+token==";

        let long_lived = signer.presign_post(&creds(None), &object, at(T), ttl(60));
        assert_eq!(field(&long_lived, "x-amz-security-token"), None);
        assert!(!policy_json(&long_lived).contains("x-amz-security-token"));

        let temporary = signer.presign_post(&creds(Some(token)), &object, at(T), ttl(60));
        assert_eq!(field(&temporary, "x-amz-security-token"), Some(token));
        let conditions = policy(&temporary)["conditions"].clone();
        assert!(
            conditions
                .as_array()
                .unwrap()
                .contains(&json!({"x-amz-security-token": token}))
        );
        assert!(store_accepts(&temporary, "reports", SECRET, 0));
    }

    #[test]
    fn expiration_is_the_truncated_signing_time_plus_ttl() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let metadata = Metadata::default();
        let object = post(&bucket, &key, &metadata);
        let expiration = |time: SystemTime, secs: u64| {
            let form = signer.presign_post(&creds(None), &object, time, ttl(secs));
            policy(&form)["expiration"].as_str().unwrap().to_owned()
        };
        // 2024-02-29T23:59:59.750Z + 1 s: the fraction is dropped, as from X-Amz-Date.
        assert_eq!(
            expiration(UNIX_EPOCH + Duration::from_millis(1_709_251_199_750), 1),
            "2024-03-01T00:00:00.000Z"
        );
        assert_eq!(expiration(at(T), 604_800), "2016-01-05T00:00:00.000Z");
        let form = signer.presign_post(&creds(None), &object, at(T + 59), ttl(60));
        assert_eq!(field(&form, "x-amz-date"), Some("20151229T000059Z"));
    }

    #[test]
    fn url_follows_the_endpoint_addressing() {
        let bucket: BucketName = "reports".parse().unwrap();
        let dotted: BucketName = "logs.example.org".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let metadata = Metadata::default();
        let url = |signer: &Signer, bucket: &BucketName| {
            signer
                .presign_post(&creds(None), &post(bucket, &key, &metadata), at(T), ttl(60))
                .url
        };
        let aws = signer(None, false);
        assert_eq!(
            url(&aws, &bucket),
            "https://reports.s3.us-east-1.amazonaws.com/"
        );
        assert_eq!(
            url(&aws, &dotted),
            "https://s3.us-east-1.amazonaws.com/logs.example.org"
        );
        let forced = signer(None, true);
        assert_eq!(
            url(&forced, &bucket),
            "https://s3.us-east-1.amazonaws.com/reports"
        );
        let local = signer(Some("http://127.0.0.1:9000"), false);
        assert_eq!(url(&local, &bucket), "http://127.0.0.1:9000/reports");
        let named = signer(Some("http://localhost:9000"), false);
        assert_eq!(url(&named, &bucket), "http://reports.localhost:9000/");
    }

    #[test]
    fn unpinned_content_type_and_checksum_are_absent() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let metadata = Metadata::default();
        let form = signer.presign_post(
            &creds(None),
            &post(&bucket, &key, &metadata),
            at(T),
            ttl(60),
        );
        let json = policy_json(&form);
        assert!(
            !json.contains("Content-Type") && !json.contains("checksum"),
            "{json}"
        );
        assert_eq!(field(&form, "Content-Type"), None);
        assert_eq!(field(&form, "x-amz-checksum-sha256"), None);
        assert!(
            json.contains(r#"["content-length-range",0,1024]"#),
            "{json}"
        );
    }

    #[test]
    fn content_type_and_repeated_metadata_are_sent_as_their_conditions_state() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let content_type: HeaderText = " text/plain;  charset=utf-8 ".parse().unwrap();
        let metadata = Metadata::new([("tag", "b"), ("tag", "a")]).unwrap();
        let object = PostObject {
            content_type: Some(&content_type),
            ..post(&bucket, &key, &metadata)
        };
        let form = signer.presign_post(&creds(None), &object, at(T), ttl(60));
        assert_eq!(
            field(&form, "Content-Type"),
            Some("text/plain;  charset=utf-8")
        );
        assert_eq!(field(&form, "x-amz-meta-tag"), Some("a,b"));
        assert_eq!(
            form.fields
                .iter()
                .filter(|(n, _)| n == "x-amz-meta-tag")
                .count(),
            1
        );
        assert!(store_accepts(&form, "reports", SECRET, 1));
    }

    #[test]
    fn post_uses_the_url_signers_cached_key() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let metadata = Metadata::default();
        let creds = creds(None);
        let get = crate::sign::GetObject {
            bucket: &bucket,
            key: &key,
            version_id: None,
            response_content_type: None,
            response_content_disposition: None,
        };
        signer.presign_get(&creds, &get, at(T), ttl(60));
        let form =
            signer.presign_post(&creds, &post(&bucket, &key, &metadata), at(T + 60), ttl(60));
        assert_eq!(
            signer.keys.derivations(),
            1,
            "one key for the day serves both"
        );
        assert!(store_accepts(&form, "reports", SECRET, 1));
    }

    #[test]
    fn debug_output_hides_policy_signature_and_token() {
        let signer = signer(None, false);
        let bucket: BucketName = "reports".parse().unwrap();
        let key: ObjectKey = "a.txt".parse().unwrap();
        let metadata = Metadata::default();
        let form = signer.presign_post(
            &creds(Some("session-token")),
            &post(&bucket, &key, &metadata),
            at(T),
            ttl(60),
        );
        let printed = format!("{form:?}");
        let signature = field(&form, "x-amz-signature").unwrap();
        let policy = field(&form, "policy").unwrap();
        assert!(printed.contains("x-amz-signature"), "{printed}");
        assert!(
            !printed.contains(signature)
                && !printed.contains(policy)
                && !printed.contains("session-token"),
            "{printed}"
        );
    }

    #[test]
    fn policy_is_allocated_once_for_worst_case_inputs() {
        // The debug assertion in `to_json` checks the capacity never grew.
        let signer = signer(None, false);
        let bucket: BucketName = "a-bucket-name-that-is-rather-long-for-a-bucket-0123456789"
            .parse()
            .unwrap();
        let key: ObjectKey = "😀".repeat(256).parse().unwrap();
        let text: HeaderText = "\"".repeat(1024).parse().unwrap();
        let names: Vec<String> = (0..100).map(|i| format!("n{i:02}")).collect();
        let metadata = Metadata::new(
            names
                .iter()
                .map(|n| (n.as_str(), "\\\\\\\\\\\\\\\\\\\\\\\\")),
        )
        .unwrap();
        let checksum: ChecksumSha256 = CHECKSUM.parse().unwrap();
        let object = PostObject {
            content_type: Some(&text),
            size: SizeRange::new(5 * 1024 * 1024 * 1024, 5 * 1024 * 1024 * 1024).unwrap(),
            checksum_sha256: Some(&checksum),
            ..post(&bucket, &key, &metadata)
        };
        let form = signer.presign_post(&creds(Some(&"\"".repeat(2000))), &object, at(T), ttl(60));
        assert!(store_accepts(
            &form,
            bucket.as_str(),
            SECRET,
            5 * 1024 * 1024 * 1024
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn every_generated_form_passes_a_strict_store(
            key in "[a-zA-Z0-9 \"\\\\/$\\[\\]{},:é€😀._-]{1,40}",
            content_type in prop::option::of("[ -~é]{1,40}"),
            metadata in prop::collection::vec(("[a-z0-9_-]{1,8}", "[!-~]([ -~]{0,10}[!-~])?"), 0..4),
            with_token in any::<bool>(),
            (min, max) in (0u64..1000, 0u64..1000).prop_map(|(a, b)| (a.min(b), a.max(b))),
        ) {
            prop_assume!(key.parse::<ObjectKey>().is_ok());
            prop_assume!(content_type.as_deref().is_none_or(|v| v.parse::<HeaderText>().is_ok()));
            let key: ObjectKey = key.parse().unwrap();
            let content_type: Option<HeaderText> = content_type.map(|v| v.parse().unwrap());
            let metadata = Metadata::new(metadata.iter().map(|(n, v)| (n.as_str(), v.as_str()))).unwrap();
            let bucket: BucketName = "demo".parse().unwrap();
            let signer = signer(Some("http://127.0.0.1:9000"), true);
            let object = PostObject {
                content_type: content_type.as_ref(),
                size: SizeRange::new(min, max).unwrap(),
                ..post(&bucket, &key, &metadata)
            };
            let token = with_token.then_some("tok/en+=");
            let form = signer.presign_post(&creds(token), &object, at(T), ttl(60));
            prop_assert!(policy_json(&form).is_ascii());
            prop_assert_eq!(field(&form, "key"), Some(key.as_str()));
            prop_assert!(store_accepts(&form, "demo", SECRET, min));
            prop_assert!(store_accepts(&form, "demo", SECRET, max));
            prop_assert!(!store_accepts(&form, "demo", SECRET, max + 1));
        }
    }
}
