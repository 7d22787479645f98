//! The inline session policy passed to STS `AssumeRole` for `AssumeScoped`: the caller's
//! temporary credentials work under one bucket prefix and nowhere else.
//!
//! This module owns the policy text: which actions, on which resources, under which
//! conditions, and its size. It takes validated [`BucketName`] and [`Prefix`] values
//! (so no caller string reaches the policy unparsed) and leaves to `rules` whether the
//! caller may have this access at all, and to `sts` the call itself.
//!
//! A session policy can only narrow what the assumed role allows; it is the only thing
//! that scopes the credentials to the prefix, so every choice below errs on the side of
//! granting less.
//!
//! # What the policy allows
//!
//! All object actions are on one resource, `arn:{partition}:s3:::{bucket}/{prefix}*`.
//! Because a [`Prefix`] always ends with `/`, `*` can only extend keys *under* the
//! prefix: `tenants/a/*` cannot match `tenants/a-old/x` or `tenants/ab/x`.
//!
//! | asked    | actions                                                                  |
//! |----------|--------------------------------------------------------------------------|
//! | `read`   | `s3:GetObject`, `s3:GetObjectVersion`                                    |
//! | `write`  | `s3:PutObject`, `s3:AbortMultipartUpload`, `s3:ListMultipartUploadParts` |
//! | `delete` | `s3:DeleteObject` (only when asked)                                      |
//! | `list`   | `s3:ListBucket` on `arn:{partition}:s3:::{bucket}`, if `s3:prefix` is    |
//! |          | `StringLike` `{prefix}*` (the only bucket-level action granted)          |
//!
//! Decisions, and the attack or failure each one answers:
//! - **Listing the prefix itself.** `StringLike {prefix}*` allows an `s3:prefix` of
//!   `tenants/a/` (the `*` matches the empty string) and anything longer. It refuses
//!   `tenants/a` (no slash): that listing would also return sibling names such as
//!   `tenants/a-old/…` and `tenants/ab/…`, which belong to someone else. A listing with
//!   no `prefix` parameter is refused too: IAM treats a condition key missing from the
//!   request as not matching. Clients must list with the prefix exactly as granted.
//! - **No `s3:DeleteObjectVersion`.** In a versioned bucket `DeleteObject` only adds a
//!   delete marker, so a mistaken or malicious delete can be undone; deleting a
//!   version destroys history for good. That is more than "delete under this prefix"
//!   and is not granted.
//! - **No `s3:ListBucketMultipartUploads`.** The IAM Service Authorization Reference for
//!   Amazon S3 (<https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html>)
//!   lists `s3:prefix` only for `ListBucket` and `ListBucketVersions`; this action can
//!   only be granted on the whole bucket. It would show every in-progress upload in the
//!   bucket: other tenants' key names and upload ids. Multipart uploads do not need it
//!   (`CreateMultipartUpload`, `UploadPart` and `CompleteMultipartUpload` are authorised
//!   as `s3:PutObject`; `ListParts` as `s3:ListMultipartUploadParts`; a client keeps its
//!   own upload id), so it is left out.
//! - **KMS.** With a key, the policy adds `kms:Decrypt` for read, and for write
//!   `kms:GenerateDataKey` plus `kms:Decrypt`: S3 decrypts the parts of an SSE-KMS
//!   multipart upload to complete it, so a write grant without `kms:Decrypt` fails on
//!   every large upload (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html#mpuAndPermissions>).
//!   The key must be a key ARN: IAM does not resolve an alias ARN in `Resource` to its
//!   key (<https://docs.aws.amazon.com/kms/latest/developerguide/cmks-in-iam-policies.html>),
//!   so an alias would yield a grant that silently does not work.
//!   The KMS statement holds only as S3 uses the key for this prefix:
//!   `kms:ViaService` = `s3.{key's region}.amazonaws.com` (without it the credentials
//!   could call KMS directly and decrypt any data key of the key, whoever's object it
//!   protects), and `kms:EncryptionContext:aws:s3:arn` `StringLike`
//!   `arn:{partition}:s3:::{bucket}/{prefix}*` (without it they could have S3 decrypt
//!   another tenant's objects under the same key). Consequence: buckets with S3
//!   Bucket Keys, whose encryption context is the bucket's ARN, do not work with these
//!   grants. Both conditions count against the 2,048-character limit, as everything.
//!
//! # How the text is built
//!
//! - Every value inserted into a `Resource` or condition is escaped for IAM first:
//!   `*` → `${*}`, `?` → `${?}`, `$` → `${$}`
//!   (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html#policy-vars-specialchars>).
//!   [`Prefix`] already refuses these characters; the escaping is defence in depth so
//!   that a future change there cannot turn a key into a wildcard or a policy variable.
//!   The only wildcard in the policy is the trailing `*` this module appends.
//! - The escapes are policy variables, which need `"Version": "2012-10-17"`; under an
//!   older or missing version they would be literal text and `*` a wildcard again.
//! - Then it is JSON-escaped, and every character outside printable ASCII is written as
//!   `\uXXXX`: STS accepts policy characters only in `\u0020`–`\u00FF` (plus tab, line
//!   feed and carriage return), so a prefix in any script must be escaped to be sent.
//!   The text is therefore ASCII, and its byte length is its character count.
//! - Field order is fixed and there is no whitespace, so the same inputs always give
//!   the same text (tests compare it with what a local STS server received).
//! - STS refuses a session policy over 2,048 characters ([`MAX_PACKED_INPUT_CHARS`]); the
//!   text is checked before the call. STS also packs policy and tags into a binary form
//!   with its own limit, which cannot be computed here; a policy under 2,048 characters
//!   can still be refused by STS as `PackedPolicyTooLarge`.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::scope::{BucketName, Prefix};

/// STS's limit on the plaintext of an inline session policy, in characters.
pub const MAX_PACKED_INPUT_CHARS: usize = 2048;

/// The policy language version that understands the `${*}`, `${?}` and `${$}` escapes.
const POLICY_VERSION: &str = "2012-10-17";

/// Why no session policy was built. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request asked for none of read, write, list or delete.
    #[error("asks for no access; ask for at least one of read, write, list or delete")]
    NoAccess,
    /// The policy text is longer than STS accepts.
    #[error(
        "the session policy would be {len} characters long, over STS's limit of {max}; \
         use a shorter prefix (it appears up to twice in the policy, and each \
         character outside printable ASCII takes six or twelve)"
    )]
    TooLarge {
        /// Length of the policy text, in characters.
        len: usize,
        /// The limit, [`MAX_PACKED_INPUT_CHARS`].
        max: usize,
    },
    /// A partition name that is not one of AWS's.
    #[error("is not a supported AWS partition; use \"aws\", \"aws-cn\" or \"aws-us-gov\"")]
    UnknownPartition,
    /// A KMS key ARN that does not name exactly one key.
    #[error(
        "is not a KMS key ARN: {reason}; expected \
         arn:PARTITION:kms:REGION:ACCOUNT-ID:key/KEY-ID"
    )]
    InvalidKmsKeyArn {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The KMS key lives in another partition than the bucket, so no grant could work.
    #[error(
        "the KMS key is in partition \"{key}\" but the bucket is in \"{bucket}\"; \
         use a key from the bucket's partition"
    )]
    PartitionMismatch {
        /// The key's partition.
        key: Partition,
        /// The partition the policy is built for.
        bucket: Partition,
    },
}

// === impl Partition ===

/// An AWS partition: the second field of every ARN. S3 and KMS ARNs in China and
/// GovCloud differ from commercial AWS only here, and a policy with the wrong one
/// matches nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    /// `aws`: commercial regions.
    Aws,
    /// `aws-cn`: the China regions.
    AwsCn,
    /// `aws-us-gov`: AWS GovCloud (US).
    AwsUsGov,
}

impl Partition {
    /// The partition as written in an ARN.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        }
    }

    /// Whether `region` (e.g. `us-east-1`, `cn-north-1`, `us-gov-west-1`) belongs to
    /// this partition, by AWS's region naming.
    fn holds_region(self, region: &str) -> bool {
        let china = region.starts_with("cn-");
        let gov = region.starts_with("us-gov-");
        match self {
            Partition::Aws => !china && !gov,
            Partition::AwsCn => china,
            Partition::AwsUsGov => gov,
        }
    }
}

impl FromStr for Partition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "aws" => Ok(Partition::Aws),
            "aws-cn" => Ok(Partition::AwsCn),
            "aws-us-gov" => Ok(Partition::AwsUsGov),
            _ => Err(Error::UnknownPartition),
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Access ===

/// What the credentials may do under the prefix. See the module documentation for the
/// exact actions each flag grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Access {
    /// Download objects and their older versions.
    pub read: bool,
    /// Upload objects, including multipart uploads.
    pub write: bool,
    /// List keys under the prefix.
    pub list: bool,
    /// Delete objects (a delete marker in versioned buckets; never a version).
    pub delete: bool,
}

impl Access {
    fn is_empty(&self) -> bool {
        !(self.read || self.write || self.list || self.delete)
    }
}

// === impl KmsKeyArn ===

/// The ARN of one KMS key, `arn:{partition}:kms:{region}:{account}:key/{key-id}`.
///
/// Only key ARNs are accepted: an alias ARN in a policy's `Resource` grants nothing on
/// the key behind it, and a wildcard would open every key in the account. The field is
/// private, so only a parsed value reaches [`session_policy`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KmsKeyArn {
    arn: String,
    partition: Partition,
}

impl KmsKeyArn {
    /// The ARN as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The partition the key lives in.
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The region the key lives in (the ARN's fourth field, checked when parsed).
    pub fn region(&self) -> &str {
        self.arn.split(':').nth(3).unwrap_or_default()
    }
}

/// Longer than any real key ARN; bounds the work done on hostile input.
const MAX_KMS_ARN_LEN: usize = 256;

impl FromStr for KmsKeyArn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason| Err(Error::InvalidKmsKeyArn { reason });
        if s.len() > MAX_KMS_ARN_LEN {
            return invalid("it is too long");
        }
        // Checked before the fields so the message names the real problem: these are
        // the characters that would widen a policy or break out of its JSON.
        if s.contains(['*', '?']) {
            return invalid("it contains a wildcard; name exactly one key");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) || s.contains(['"', '$', '\\']) {
            return invalid("it contains a space, control character, quote, '$' or '\\'");
        }
        let fields: Vec<&str> = s.split(':').collect();
        let [arn, partition, service, region, account, resource] = fields[..] else {
            return invalid("it does not have six ':'-separated fields");
        };
        if arn != "arn" {
            return invalid("it does not start with \"arn:\"");
        }
        let Ok(partition) = partition.parse::<Partition>() else {
            return invalid("its partition is not aws, aws-cn or aws-us-gov");
        };
        if service != "kms" {
            return invalid("its service is not kms");
        }
        let region_ok = region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && region.starts_with(|c: char| c.is_ascii_lowercase())
            && region.ends_with(|c: char| c.is_ascii_digit());
        if !region_ok {
            return invalid("its region is not a region name such as us-east-1");
        }
        if !partition.holds_region(region) {
            return invalid("its region is not in its partition");
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return invalid("its account id is not 12 digits");
        }
        if resource.starts_with("alias/") {
            return invalid(
                "it is an alias ARN, which IAM does not resolve to a key; give the key ARN",
            );
        }
        let Some(key_id) = resource.strip_prefix("key/") else {
            return invalid("its resource does not start with \"key/\"");
        };
        // Key ids are UUIDs, and multi-Region keys are "mrk-" and 32 hex digits.
        if key_id.is_empty()
            || key_id.len() > 64
            || !key_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return invalid("its key id is not letters, digits and '-'");
        }
        Ok(KmsKeyArn {
            arn: s.to_owned(),
            partition,
        })
    }
}

impl fmt::Display for KmsKeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

// === impl SessionPolicy ===

/// The text of a session policy: compact JSON in printable ASCII, at most
/// [`MAX_PACKED_INPUT_CHARS`] long. Built only by [`session_policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy(String);

impl SessionPolicy {
    /// The JSON text, as passed to STS's `Policy` parameter.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in characters (equal to bytes: the text is ASCII).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a policy has at least one statement.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for SessionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === the builder ===

/// Builds the session policy that confines credentials to `prefix` in `bucket`.
///
/// See the module documentation for the actions each [`Access`] flag grants and why.
///
/// # Errors
/// - [`Error::NoAccess`] when `access` asks for nothing: a policy without statements
///   would be refused by STS, and empty credentials are no use to anyone.
/// - [`Error::PartitionMismatch`] when `kms_key` is in another partition.
/// - [`Error::TooLarge`] when the text exceeds [`MAX_PACKED_INPUT_CHARS`]; a shorter
///   prefix fixes it.
pub fn session_policy(
    partition: Partition,
    bucket: &BucketName,
    prefix: &Prefix,
    access: &Access,
    kms_key: Option<&KmsKeyArn>,
) -> Result<SessionPolicy, Error> {
    if access.is_empty() {
        return Err(Error::NoAccess);
    }
    if let Some(key) = kms_key
        && key.partition() != partition
    {
        return Err(Error::PartitionMismatch {
            key: key.partition(),
            bucket: partition,
        });
    }

    let mut statements = Vec::with_capacity(3);
    // arn:{partition}:s3:::{bucket}/{prefix}*: every object under the prefix.
    let objects = || {
        Pattern::literal(&[
            "arn:",
            partition.as_str(),
            ":s3:::",
            bucket.as_str(),
            "/",
            prefix.as_str(),
        ])
        .then_anything()
    };

    let mut object_actions = Vec::new();
    if access.read {
        object_actions.extend(["s3:GetObject", "s3:GetObjectVersion"]);
    }
    if access.write {
        object_actions.extend([
            "s3:PutObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
        ]);
    }
    if access.delete {
        object_actions.push("s3:DeleteObject");
    }
    if !object_actions.is_empty() {
        // arn:{partition}:s3:::{bucket}/{prefix}* — the prefix ends with '/', so the
        // trailing wildcard reaches only keys under it.
        let objects = objects();
        statements.push(Statement {
            sid: "ObjectAccess",
            actions: object_actions,
            resources: vec![objects],
            conditions: Vec::new(),
        });
    }

    if access.list {
        // The bucket ARN exactly, and only listings whose `prefix` parameter starts with
        // the whole granted prefix, slash included (see the module docs for why
        // "tenants/a" without the slash is refused).
        let bucket_arn = Pattern::literal(&["arn:", partition.as_str(), ":s3:::", bucket.as_str()]);
        statements.push(Statement {
            sid: "ListUnderPrefix",
            actions: vec!["s3:ListBucket"],
            resources: vec![bucket_arn],
            conditions: vec![Condition {
                operator: "StringLike",
                key: "s3:prefix",
                values: vec![Pattern::literal(&[prefix.as_str()]).then_anything()],
            }],
        });
    }

    if let Some(key) = kms_key {
        let mut kms_actions = Vec::new();
        if access.read || access.write {
            kms_actions.push("kms:Decrypt");
        }
        if access.write {
            kms_actions.push("kms:GenerateDataKey");
        }
        if !kms_actions.is_empty() {
            // Only as S3 uses the key, in its region, for objects under the prefix:
            // S3 sets the encryption context `aws:s3:arn` to the object's ARN.
            let via = match partition {
                Partition::AwsCn => "amazonaws.com.cn",
                _ => "amazonaws.com",
            };
            statements.push(Statement {
                sid: "KmsForObjects",
                actions: kms_actions,
                resources: vec![Pattern::literal(&[key.as_str()])],
                conditions: vec![
                    Condition {
                        operator: "StringEquals",
                        key: "kms:ViaService",
                        values: vec![Pattern::literal(&["s3.", key.region(), ".", via])],
                    },
                    Condition {
                        operator: "StringLike",
                        key: "kms:EncryptionContext:aws:s3:arn",
                        values: vec![objects()],
                    },
                ],
            });
        }
    }

    let text = render(&statements);
    debug_assert!(text.is_ascii(), "render escapes everything outside ASCII");
    // The text is ASCII, so its byte length is its character count, which is what STS
    // counts.
    if text.len() > MAX_PACKED_INPUT_CHARS {
        return Err(Error::TooLarge {
            len: text.len(),
            max: MAX_PACKED_INPUT_CHARS,
        });
    }
    Ok(SessionPolicy(text))
}

/// One `Allow` statement. Session policies only narrow, so there is never a `Deny`.
struct Statement {
    sid: &'static str,
    actions: Vec<&'static str>,
    resources: Vec<Pattern>,
    /// All must hold; each names one operator and one key.
    conditions: Vec<Condition>,
}

/// A single-operator, single-key condition, e.g. `{"StringLike":{"s3:prefix":[…]}}`;
/// several in one statement are rendered grouped by operator.
struct Condition {
    operator: &'static str,
    key: &'static str,
    values: Vec<Pattern>,
}

/// A value for `Resource` or a `StringLike` condition. Text enters only through
/// [`Pattern::literal`], which escapes IAM's metacharacters; the only way to add a
/// wildcard is [`Pattern::then_anything`]. So no caller-controlled character can ever
/// act as a wildcard or a policy variable.
struct Pattern(String);

impl Pattern {
    /// The concatenation of `parts`, each matching only itself.
    fn literal(parts: &[&str]) -> Pattern {
        let mut out = String::new();
        for part in parts {
            escape_iam(part, &mut out);
        }
        Pattern(out)
    }

    /// This pattern followed by `*`: any run of characters, `/` included.
    fn then_anything(mut self) -> Pattern {
        self.0.push('*');
        self
    }
}

/// Appends `text` with IAM's wildcard and variable characters replaced by the
/// predefined variables that stand for them literally. Without this, a `*` or `?` in a
/// name would match other names, and `${aws:username}` would be substituted.
fn escape_iam(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '*' => out.push_str("${*}"),
            '?' => out.push_str("${?}"),
            '$' => out.push_str("${$}"),
            c => out.push(c),
        }
    }
}

/// Writes the policy: fixed field order, no whitespace, arrays even for one element.
fn render(statements: &[Statement]) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("{\"Version\":");
    push_json_string(&mut out, POLICY_VERSION);
    out.push_str(",\"Statement\":[");
    for (i, statement) in statements.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"Sid\":");
        push_json_string(&mut out, statement.sid);
        out.push_str(",\"Effect\":\"Allow\",\"Action\":");
        push_json_array(&mut out, statement.actions.iter().copied());
        out.push_str(",\"Resource\":");
        push_json_array(&mut out, statement.resources.iter().map(|p| p.0.as_str()));
        if !statement.conditions.is_empty() {
            out.push_str(",\"Condition\":{");
            // Grouped by operator, in order of first appearance: JSON objects must
            // not repeat a key.
            let mut operators: Vec<&str> = Vec::new();
            for c in &statement.conditions {
                if !operators.contains(&c.operator) {
                    operators.push(c.operator);
                }
            }
            for (i, operator) in operators.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(&mut out, operator);
                out.push_str(":{");
                let keys = statement
                    .conditions
                    .iter()
                    .filter(|c| c.operator == *operator);
                for (j, condition) in keys.enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    push_json_string(&mut out, condition.key);
                    out.push(':');
                    push_json_array(&mut out, condition.values.iter().map(|p| p.0.as_str()));
                }
                out.push('}');
            }
            out.push('}');
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

fn push_json_array<'a>(out: &mut String, items: impl Iterator<Item = &'a str>) {
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, item);
    }
    out.push(']');
}

/// Appends `s` as a JSON string. Printable ASCII is written as is (but for `"` and
/// `\`); everything else as `\uXXXX` UTF-16 escapes, which JSON defines and which keep
/// the text inside the characters STS accepts.
fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for &unit in c.encode_utf16(&mut units).iter() {
                    out.push_str("\\u");
                    for shift in [12, 8, 4, 0] {
                        out.push(char::from(HEX[usize::from((unit >> shift) & 0xf)]));
                    }
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(s: &str) -> BucketName {
        s.parse().unwrap()
    }

    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn build(access: Access, kms: Option<&KmsKeyArn>) -> Result<SessionPolicy, Error> {
        session_policy(
            Partition::Aws,
            &bucket("demo"),
            &prefix("tenants/a/"),
            &access,
            kms,
        )
    }

    #[test]
    fn read_only_policy_is_exactly_this() {
        let access = Access {
            read: true,
            ..Access::default()
        };
        assert_eq!(
            build(access, None).unwrap().as_str(),
            concat!(
                r#"{"Version":"2012-10-17","Statement":["#,
                r#"{"Sid":"ObjectAccess","Effect":"Allow","#,
                r#""Action":["s3:GetObject","s3:GetObjectVersion"],"#,
                r#""Resource":["arn:aws:s3:::demo/tenants/a/*"]}"#,
                r#"]}"#,
            )
        );
    }

    #[test]
    fn write_and_list_policy_is_exactly_this() {
        let access = Access {
            write: true,
            list: true,
            ..Access::default()
        };
        assert_eq!(
            build(access, None).unwrap().as_str(),
            concat!(
                r#"{"Version":"2012-10-17","Statement":["#,
                r#"{"Sid":"ObjectAccess","Effect":"Allow","#,
                r#""Action":["s3:PutObject","s3:AbortMultipartUpload","s3:ListMultipartUploadParts"],"#,
                r#""Resource":["arn:aws:s3:::demo/tenants/a/*"]},"#,
                r#"{"Sid":"ListUnderPrefix","Effect":"Allow","#,
                r#""Action":["s3:ListBucket"],"#,
                r#""Resource":["arn:aws:s3:::demo"],"#,
                r#""Condition":{"StringLike":{"s3:prefix":["tenants/a/*"]}}}"#,
                r#"]}"#,
            )
        );
    }

    #[test]
    fn read_write_delete_with_kms_policy_is_exactly_this() {
        let key: KmsKeyArn = KEY.parse().unwrap();
        let access = Access {
            read: true,
            write: true,
            list: false,
            delete: true,
        };
        assert_eq!(
            build(access, Some(&key)).unwrap().as_str(),
            concat!(
                r#"{"Version":"2012-10-17","Statement":["#,
                r#"{"Sid":"ObjectAccess","Effect":"Allow","#,
                r#""Action":["s3:GetObject","s3:GetObjectVersion","s3:PutObject","#,
                r#""s3:AbortMultipartUpload","s3:ListMultipartUploadParts","s3:DeleteObject"],"#,
                r#""Resource":["arn:aws:s3:::demo/tenants/a/*"]},"#,
                r#"{"Sid":"KmsForObjects","Effect":"Allow","#,
                r#""Action":["kms:Decrypt","kms:GenerateDataKey"],"#,
                r#""Resource":["arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"],"#,
                r#""Condition":{"StringEquals":{"kms:ViaService":["s3.eu-west-1.amazonaws.com"]},"#,
                r#""StringLike":{"kms:EncryptionContext:aws:s3:arn":["arn:aws:s3:::demo/tenants/a/*"]}}}"#,
                r#"]}"#,
            )
        );
    }

    #[test]
    fn read_write_list_policy_is_exactly_this() {
        let access = Access {
            read: true,
            write: true,
            list: true,
            delete: false,
        };
        assert_eq!(
            build(access, None).unwrap().as_str(),
            concat!(
                r#"{"Version":"2012-10-17","Statement":["#,
                r#"{"Sid":"ObjectAccess","Effect":"Allow","#,
                r#""Action":["s3:GetObject","s3:GetObjectVersion","s3:PutObject","#,
                r#""s3:AbortMultipartUpload","s3:ListMultipartUploadParts"],"#,
                r#""Resource":["arn:aws:s3:::demo/tenants/a/*"]},"#,
                r#"{"Sid":"ListUnderPrefix","Effect":"Allow","#,
                r#""Action":["s3:ListBucket"],"#,
                r#""Resource":["arn:aws:s3:::demo"],"#,
                r#""Condition":{"StringLike":{"s3:prefix":["tenants/a/*"]}}}"#,
                r#"]}"#,
            )
        );
    }

    #[test]
    fn list_only_policy_has_no_object_statement() {
        let access = Access {
            list: true,
            ..Access::default()
        };
        let text = build(access, None).unwrap();
        assert!(!text.as_str().contains("ObjectAccess"));
        assert!(text.as_str().contains("\"s3:ListBucket\""));
    }

    #[test]
    fn same_inputs_give_the_same_text() {
        let access = Access {
            read: true,
            write: true,
            list: true,
            delete: true,
        };
        let key: KmsKeyArn = KEY.parse().unwrap();
        assert_eq!(build(access, Some(&key)), build(access, Some(&key)));
    }

    #[test]
    fn no_access_is_refused() {
        assert_eq!(build(Access::default(), None), Err(Error::NoAccess));
    }

    #[test]
    fn kms_key_without_read_or_write_adds_no_statement() {
        let key: KmsKeyArn = KEY.parse().unwrap();
        let access = Access {
            list: true,
            delete: true,
            ..Access::default()
        };
        assert!(!build(access, Some(&key)).unwrap().as_str().contains("kms:"));
    }

    #[test]
    fn read_only_kms_grant_is_decrypt_only() {
        let key: KmsKeyArn = KEY.parse().unwrap();
        let access = Access {
            read: true,
            ..Access::default()
        };
        let text = build(access, Some(&key)).unwrap();
        assert!(text.as_str().contains(r#""Action":["kms:Decrypt"]"#));
        assert!(!text.as_str().contains("GenerateDataKey"));
    }

    #[test]
    fn partitions_appear_in_every_arn() {
        let access = Access {
            read: true,
            list: true,
            ..Access::default()
        };
        for (partition, name) in [
            (Partition::Aws, "aws"),
            (Partition::AwsCn, "aws-cn"),
            (Partition::AwsUsGov, "aws-us-gov"),
        ] {
            let text =
                session_policy(partition, &bucket("demo"), &prefix("p/"), &access, None).unwrap();
            assert!(
                text.as_str()
                    .contains(&format!(r#""arn:{name}:s3:::demo/p/*""#)),
                "{text}"
            );
            assert!(
                text.as_str()
                    .contains(&format!(r#""arn:{name}:s3:::demo""#)),
                "{text}"
            );
        }
    }

    #[test]
    fn partition_parses_and_prints_back() {
        for name in ["aws", "aws-cn", "aws-us-gov"] {
            assert_eq!(name.parse::<Partition>().unwrap().to_string(), name);
        }
        for bad in ["", "AWS", "aws-iso", "aws ", "aws-cn-"] {
            assert_eq!(
                bad.parse::<Partition>(),
                Err(Error::UnknownPartition),
                "{bad}"
            );
        }
    }

    #[test]
    fn partition_deserializes_from_kebab_case() {
        #[derive(Deserialize)]
        struct Config {
            partition: Partition,
        }
        let parse = |s: &str| toml::from_str::<Config>(s).map(|c| c.partition);
        assert_eq!(parse(r#"partition = "aws""#).unwrap(), Partition::Aws);
        assert_eq!(parse(r#"partition = "aws-cn""#).unwrap(), Partition::AwsCn);
        assert_eq!(
            parse(r#"partition = "aws-us-gov""#).unwrap(),
            Partition::AwsUsGov
        );
        assert!(parse(r#"partition = "AwsCn""#).is_err());
    }

    #[test]
    fn kms_key_in_another_partition_is_refused() {
        let key: KmsKeyArn = "arn:aws-cn:kms:cn-north-1:111122223333:key/abc"
            .parse()
            .unwrap();
        let access = Access {
            read: true,
            ..Access::default()
        };
        assert_eq!(
            build(access, Some(&key)),
            Err(Error::PartitionMismatch {
                key: Partition::AwsCn,
                bucket: Partition::Aws
            })
        );
    }

    #[test]
    fn a_1000_byte_prefix_is_too_large() {
        let long = format!("{}/", "x".repeat(999));
        let access = Access {
            read: true,
            list: true,
            ..Access::default()
        };
        let err = session_policy(
            Partition::Aws,
            &bucket("demo"),
            &prefix(&long),
            &access,
            None,
        )
        .unwrap_err();
        let Error::TooLarge { len, max } = err else {
            panic!("expected TooLarge, got {err:?}");
        };
        assert_eq!(max, MAX_PACKED_INPUT_CHARS);
        assert!(len > max, "{len}");
        let message = err.to_string();
        assert!(message.contains("shorter prefix"), "{message}");
        assert!(message.contains(&len.to_string()), "{message}");
    }

    #[test]
    fn a_policy_at_the_limit_is_accepted_and_one_over_is_not() {
        let access = Access {
            read: true,
            list: true,
            ..Access::default()
        };
        let at = |n: usize| {
            let p = format!("{}/", "x".repeat(n));
            session_policy(Partition::Aws, &bucket("demo"), &prefix(&p), &access, None)
        };
        // Each extra prefix character adds two policy characters (it appears twice), so
        // find the longest accepted prefix and check its neighbour.
        let longest = (1..1024).take_while(|&n| at(n).is_ok()).last().unwrap();
        assert!(at(longest).unwrap().len() <= MAX_PACKED_INPUT_CHARS);
        assert!(at(longest).unwrap().len() > MAX_PACKED_INPUT_CHARS - 2);
        assert!(matches!(at(longest + 1), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn non_ascii_prefixes_are_written_as_unicode_escapes() {
        let access = Access {
            read: true,
            ..Access::default()
        };
        let text = session_policy(
            Partition::Aws,
            &bucket("demo"),
            &prefix("données/日本/😀 x/"),
            &access,
            None,
        )
        .unwrap();
        assert!(text.as_str().is_ascii());
        assert!(
            text.as_str()
                .contains(r#""arn:aws:s3:::demo/donn\u00e9es/\u65e5\u672c/\ud83d\ude00 x/*""#),
            "{text}"
        );
    }

    #[test]
    fn iam_metacharacters_are_escaped() {
        let mut out = String::new();
        escape_iam("a*b?c$d${aws:username}", &mut out);
        assert_eq!(out, "a${*}b${?}c${$}d${$}{aws:username}");
        // The builder's own wildcard is the only raw '*'.
        assert_eq!(Pattern::literal(&["p*/"]).then_anything().0, "p${*}/*");
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\n\u{7f}é");
        assert_eq!(out, r#""a\"b\\c\u000a\u007f\u00e9""#);
    }

    #[test]
    fn kms_key_arns_parse() {
        for ok in [
            KEY,
            "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        ] {
            let key: KmsKeyArn = ok.parse().unwrap();
            assert_eq!(key.as_str(), ok);
        }
        assert_eq!(
            "arn:aws-cn:kms:cn-north-1:111122223333:key/k"
                .parse::<KmsKeyArn>()
                .unwrap()
                .partition(),
            Partition::AwsCn
        );
    }

    #[test]
    fn bad_kms_key_arns_are_refused_with_a_reason() {
        let cases = [
            ("", "six"),
            ("arn:aws:kms:eu-west-1:111122223333:key/*", "wildcard"),
            ("arn:aws:kms:eu-west-1:111122223333:key/a?c", "wildcard"),
            ("arn:aws:kms:*:111122223333:key/abc", "wildcard"),
            ("arn:aws:kms:eu-west-1:111122223333:key/a\"b", "quote"),
            ("arn:aws:kms:eu-west-1:111122223333:key/a\nb", "control"),
            ("arn:aws:kms:eu-west-1:111122223333:key/a b", "space"),
            (
                "arn:aws:kms:eu-west-1:111122223333:key/${aws:username}",
                "'$'",
            ),
            ("arn:aws:kms:eu-west-1:111122223333:alias/my-key", "alias"),
            ("arn:aws:kms:eu-west-1:111122223333:key/", "key id"),
            ("arn:aws:kms:eu-west-1:111122223333:key/a/b", "key id"),
            ("arn:aws:kms:eu-west-1:111122223333:abc", "key/"),
            ("arn:aws:kms:eu-west-1:1111222233:key/abc", "12 digits"),
            ("arn:aws:s3:eu-west-1:111122223333:key/abc", "kms"),
            (
                "arn:aws-iso:kms:eu-west-1:111122223333:key/abc",
                "partition",
            ),
            ("arn:aws:kms:EU-west-1:111122223333:key/abc", "region"),
            ("arn:aws:kms::111122223333:key/abc", "region"),
            (
                "arn:aws:kms:cn-north-1:111122223333:key/abc",
                "not in its partition",
            ),
            (
                "arn:aws-us-gov:kms:us-east-1:111122223333:key/abc",
                "not in its partition",
            ),
            ("nra:aws:kms:eu-west-1:111122223333:key/abc", "arn:"),
            ("arn:aws:kms:eu-west-1:111122223333:key/abc:extra", "six"),
        ];
        for (arn, reason) in cases {
            let err = arn.parse::<KmsKeyArn>().unwrap_err();
            assert!(
                matches!(err, Error::InvalidKmsKeyArn { .. }),
                "{arn:?}: {err:?}"
            );
            assert!(err.to_string().contains(reason), "{arn:?}: {err}");
        }
        let long = format!(
            "{}{}",
            "arn:aws:kms:eu-west-1:111122223333:key/",
            "a".repeat(300)
        );
        assert!(long.parse::<KmsKeyArn>().is_err());
    }
}
