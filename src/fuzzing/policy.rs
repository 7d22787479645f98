//! `session_policy`: the STS session policy, read back as IAM reads it.

use serde_json::{Map, Value};

use super::{bit, flags_and_text, lines};
use crate::policy::{self, Access, Error, KmsKeyArn, MAX_PACKED_INPUT_CHARS, Partition};
use crate::scope::{BucketName, Prefix};

/// Builds the session policy for the input's bucket, prefix, access and KMS key, and
/// parses the KMS key ARN on its own.
///
/// Flags: bits 0–3 ask for read, write, list and delete; bits 4–5 pick the partition
/// (`aws`, `aws-cn`, `aws-us-gov`); bit 6 adds the KMS key. Lines: bucket, prefix
/// (either replaced when it does not parse), KMS key ARN.
///
/// Invariants: the policy is printable ASCII JSON within STS's 2,048 characters, with
/// `Version` 2012-10-17 (which the wildcard escapes need) and only `Allow`
/// statements; every action is one the access asked for, and everything asked for
/// is there; every resource and condition value names the granted bucket and prefix
/// (or the KMS key), with one wildcard at most, at the very end, and no policy
/// variable but the escapes of `*`, `?` and `$`. A refusal is the one the inputs
/// call for.
pub fn session_policy(data: &[u8]) {
    let (flags, text) = flags_and_text(data);
    let [bucket, prefix, kms] = lines::<3>(&text);
    let kms_key = kms.parse::<KmsKeyArn>().ok();
    if let Some(key) = &kms_key {
        kms_arn(kms, key);
    }
    let partition = match (flags >> 4) & 0b11 {
        1 => Partition::AwsCn,
        2 => Partition::AwsUsGov,
        _ => Partition::Aws,
    };
    let access = Access {
        read: bit(flags, 0),
        write: bit(flags, 1),
        list: bit(flags, 2),
        delete: bit(flags, 3),
    };
    let kms_key = kms_key.filter(|_| bit(flags, 6));
    let bucket: BucketName = bucket
        .parse()
        .unwrap_or_else(|_| "demo-bucket".parse().expect("a valid bucket"));
    let prefix: Prefix = prefix
        .parse()
        .unwrap_or_else(|_| "tenants/a/".parse().expect("a valid prefix"));

    let asks_nothing = !(access.read || access.write || access.list || access.delete);
    match policy::session_policy(partition, &bucket, &prefix, &access, kms_key.as_ref()) {
        Ok(policy) => {
            assert!(!asks_nothing);
            check(
                policy.as_str(),
                partition,
                &bucket,
                &prefix,
                &access,
                kms_key.as_ref(),
            );
        }
        Err(Error::NoAccess) => assert!(asks_nothing),
        Err(Error::PartitionMismatch { key, bucket }) => {
            assert!(key != bucket && bucket == partition);
        }
        Err(Error::TooLarge { len, max }) => assert!(len > max && max == MAX_PACKED_INPUT_CHARS),
        Err(other) => panic!("unexpected refusal: {other}"),
    }
}

/// A parsed KMS key ARN names one key of its partition and region.
fn kms_arn(text: &str, key: &KmsKeyArn) {
    assert_eq!(key.as_str(), text);
    assert_eq!(key.to_string().parse::<KmsKeyArn>().as_ref(), Ok(key));
    assert!(!text.contains(['*', '?', '"', '$', '\\', ' ']), "{text:?}");
    let fields: Vec<&str> = text.split(':').collect();
    assert_eq!(fields.len(), 6);
    assert_eq!(fields[..3], ["arn", key.partition().as_str(), "kms"]);
    assert_eq!(fields[3], key.region());
    assert!(!key.region().is_empty());
    let id = fields[5].strip_prefix("key/").expect("a key, not an alias");
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
}

/// Reads `text` back and checks it grants exactly `access` on `prefix` in `bucket`.
fn check(
    text: &str,
    partition: Partition,
    bucket: &BucketName,
    prefix: &Prefix,
    access: &Access,
    kms_key: Option<&KmsKeyArn>,
) {
    assert!(text.len() <= MAX_PACKED_INPUT_CHARS);
    assert!(
        text.bytes().all(|b| (b' '..=b'~').contains(&b)),
        "STS takes printable characters"
    );
    let doc: Value = serde_json::from_str(text).expect("the policy is JSON");
    assert_eq!(doc["Version"], "2012-10-17");
    let p = partition.as_str();
    let objects = (format!("arn:{p}:s3:::{bucket}/{prefix}"), true);
    let mut granted = Vec::new();
    for statement in doc["Statement"].as_array().expect("statements") {
        assert_eq!(
            statement["Effect"], "Allow",
            "a session policy only narrows"
        );
        let actions: Vec<&str> = strings(&statement["Action"]);
        let resources: Vec<Pattern> = strings(&statement["Resource"])
            .into_iter()
            .map(iam_pattern)
            .collect();
        let conditions = conditions(statement);
        let kind = actions
            .first()
            .map(|a| a.split(':').next().unwrap_or_default());
        match actions.as_slice() {
            ["s3:ListBucket"] => {
                assert_eq!(resources, [(format!("arn:{p}:s3:::{bucket}"), false)]);
                assert_eq!(
                    conditions,
                    [(
                        "StringLike".to_owned(),
                        "s3:prefix".to_owned(),
                        vec![(prefix.to_string(), true)]
                    )]
                );
            }
            _ if kind == Some("s3") => {
                assert_eq!(resources, std::slice::from_ref(&objects));
                assert!(conditions.is_empty());
            }
            _ => {
                let key = kms_key.expect("KMS actions only with a key");
                assert!(actions.iter().all(|a| a.starts_with("kms:")));
                assert_eq!(resources, [(key.as_str().to_owned(), false)]);
                let via = match partition {
                    Partition::AwsCn => "amazonaws.com.cn",
                    _ => "amazonaws.com",
                };
                let mut want = vec![
                    (
                        "StringEquals".to_owned(),
                        "kms:ViaService".to_owned(),
                        vec![(format!("s3.{}.{via}", key.region()), false)],
                    ),
                    (
                        "StringLike".to_owned(),
                        "kms:EncryptionContext:aws:s3:arn".to_owned(),
                        vec![objects.clone()],
                    ),
                ];
                want.sort();
                assert_eq!(conditions, want);
            }
        }
        granted.extend(actions);
    }
    // The module documentation's table, as a list.
    let kms = kms_key.is_some();
    let mut want: Vec<&str> = [
        (access.read, &["s3:GetObject", "s3:GetObjectVersion"][..]),
        (
            access.write,
            &[
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
        ),
        (access.delete, &["s3:DeleteObject"]),
        (access.list, &["s3:ListBucket"]),
        (kms && (access.read || access.write), &["kms:Decrypt"]),
        (kms && access.write, &["kms:GenerateDataKey"]),
    ]
    .into_iter()
    .filter(|(asked, _)| *asked)
    .flat_map(|(_, actions)| actions.iter().copied())
    .collect();
    granted.sort_unstable();
    want.sort_unstable();
    assert_eq!(granted, want, "exactly the actions asked for");
}

/// A value as IAM matches it: the literal text, and whether a `*` wildcard ends it.
type Pattern = (String, bool);

/// One condition: operator, key, values.
type Condition = (String, String, Vec<Pattern>);

/// A JSON array of strings.
fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect()
}

/// `(operator, key, values)` of a statement's conditions, sorted.
fn conditions(statement: &Value) -> Vec<Condition> {
    let Some(by_operator) = statement.get("Condition") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let empty = Map::new();
    for (operator, keys) in by_operator.as_object().unwrap_or(&empty) {
        for (key, values) in keys.as_object().expect("keys by operator") {
            let values = strings(values).into_iter().map(iam_pattern).collect();
            out.push((operator.clone(), key.clone(), values));
        }
    }
    out.sort();
    out
}

/// What IAM matches a resource or `StringLike` value as (see [`Pattern`]). Panics on any other wildcard, on text after the
/// wildcard, and on a policy variable other than the escapes `${*}`, `${?}`, `${$}`.
fn iam_pattern(value: &str) -> Pattern {
    let mut literal = String::new();
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        match c {
            '$' => {
                let (escape, after) = rest
                    .split_at_checked(4)
                    .expect("a complete escape after '$'");
                literal.push(match escape {
                    "${*}" => '*',
                    "${?}" => '?',
                    "${$}" => '$',
                    other => panic!("policy variable {other:?} in {value:?}"),
                });
                rest = after;
            }
            '*' => {
                assert_eq!(rest, "*", "one wildcard, at the end: {value:?}");
                return (literal, true);
            }
            '?' => panic!("a '?' wildcard in {value:?}"),
            c => {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    (literal, false)
}
