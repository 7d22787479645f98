//! What the session policies built by `storage_grants::policy` mean, proven with an
//! evaluator of IAM's documented matching rules (`iam_eval`) over generated prefixes
//! and keys.
//!
//! The local STS server used in integration tests does not evaluate session policies,
//! so these properties are the evidence that the credentials reach the granted prefix
//! and nothing else.

use crate::iam_eval;

use std::collections::HashMap;

use iam_eval::allows;
use proptest::prelude::*;
use serde_json::Value;
use storage_grants::policy::{
    Access, Error, KmsKeyArn, MAX_PACKED_INPUT_CHARS, Partition, session_policy,
};
use storage_grants::scope::{BucketName, Prefix};

const BUCKET: &str = "demo";
const KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OTHER_KEY_ARN: &str =
    "arn:aws:kms:eu-west-1:111122223333:key/99999999-12ab-34cd-56ef-1234567890ab";

/// Object-level actions: the granted ones and a sample of those never granted.
const OBJECT_ACTIONS: &[&str] = &[
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:GetObjectAcl",
    "s3:PutObjectAcl",
    "s3:PutObjectTagging",
    "s3:PutObjectRetention",
    "s3:BypassGovernanceRetention",
    "s3:RestoreObject",
];

/// Bucket-level actions, none of which may be allowed without a prefix condition.
const BUCKET_ACTIONS: &[&str] = &[
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:ListBucketMultipartUploads",
    "s3:GetBucketPolicy",
    "s3:PutBucketPolicy",
    "s3:DeleteBucket",
];

/// Whether `access` should allow `action` on an object under the prefix.
fn expected(action: &str, access: Access) -> bool {
    match action {
        "s3:GetObject" | "s3:GetObjectVersion" => access.read,
        "s3:PutObject" | "s3:AbortMultipartUpload" | "s3:ListMultipartUploadParts" => access.write,
        "s3:DeleteObject" => access.delete,
        _ => false,
    }
}

fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

fn no_context() -> HashMap<&'static str, &'static str> {
    HashMap::new()
}

fn listing(prefix: &str) -> HashMap<&'static str, &str> {
    HashMap::from([("s3:prefix", prefix)])
}

/// Whether `policy` allows `action` on the object `key` in [`BUCKET`].
fn on_object(policy: &str, action: &str, key: &str) -> bool {
    allows(policy, action, &object_arn(BUCKET, key), &no_context())
}

/// Whether `policy` allows listing [`BUCKET`] with the `prefix` parameter `s3_prefix`.
fn lists(policy: &str, s3_prefix: &str) -> bool {
    allows(
        policy,
        "s3:ListBucket",
        &bucket_arn(BUCKET),
        &listing(s3_prefix),
    )
}

fn build(prefix: &Prefix, access: Access, kms: Option<&KmsKeyArn>) -> String {
    let bucket: BucketName = BUCKET.parse().unwrap();
    session_policy(Partition::Aws, &bucket, prefix, &access, kms)
        .expect("generated prefixes fit in a policy")
        .as_str()
        .to_owned()
}

const ALL: Access = Access {
    read: true,
    write: true,
    list: true,
    delete: true,
};

/// `tenants/a/` → `tenants/a`.
fn without_slash(prefix: &Prefix) -> &str {
    prefix.as_str().strip_suffix('/').unwrap()
}

/// `tenants/a/` → (`tenants/`, `a`); `a/` → (``, `a`).
fn parent_and_last(prefix: &Prefix) -> (&str, &str) {
    let body = without_slash(prefix);
    match body.rfind('/') {
        Some(i) => (&body[..=i], &body[i + 1..]),
        None => ("", body),
    }
}

// === strategies ===

/// One path segment of mixed characters: letters, digits, '-', '_', '.', spaces and
/// non-ASCII (two-byte, three-byte, and astral characters that JSON writes as a
/// surrogate pair).
fn segment() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[-a-zA-Z0-9._ éßЖ日本😀]{1,8}").unwrap()
}

fn prefix() -> impl Strategy<Value = Prefix> {
    prop::collection::vec(segment(), 1..=4)
        .prop_filter_map("dot segments are not prefixes", |segments| {
            format!("{}/", segments.join("/")).parse().ok()
        })
}

/// The rest of a key after a prefix: 1 to 3 segments.
fn rest() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..=3).prop_map(|s| s.join("/"))
}

fn access() -> impl Strategy<Value = Access> {
    any::<(bool, bool, bool, bool)>()
        .prop_map(|(read, write, list, delete)| Access {
            read,
            write,
            list,
            delete,
        })
        .prop_filter("some access", |a| a.read || a.write || a.list || a.delete)
}

/// Prefixes up to S3's 1024-byte limit, to reach the policy size limit.
fn long_prefix() -> impl Strategy<Value = Prefix> {
    let long_segment = proptest::string::string_regex("[-a-z0-9._ é日😀]{1,60}").unwrap();
    prop::collection::vec(long_segment, 1..=24).prop_filter_map("valid prefixes", |segments| {
        format!("{}/", segments.join("/")).parse().ok()
    })
}

proptest! {
    /// Every key under the prefix gets exactly the granted object actions.
    #[test]
    fn granted_object_actions_hold_exactly_under_the_prefix(
        prefix in prefix(), rest in rest(), access in access(),
    ) {
        let policy = build(&prefix, access, None);
        let inside = [format!("{prefix}{rest}"), prefix.as_str().to_owned()];
        for key in &inside {
            for &action in OBJECT_ACTIONS {
                prop_assert_eq!(
                    on_object(&policy, action, key),
                    expected(action, access),
                    "{} on {:?} with {:?}\n{}", action, key, access, policy
                );
            }
        }
    }

    /// No key outside the prefix is reachable with any action, even with every kind
    /// of access granted.
    #[test]
    fn nothing_outside_the_prefix_is_allowed(
        prefix in prefix(), rest in rest(), other in segment(),
    ) {
        let key: KmsKeyArn = KEY_ARN.parse().unwrap();
        let policy = build(&prefix, ALL, Some(&key));
        let trimmed = without_slash(&prefix);
        let (parent, last) = parent_and_last(&prefix);
        let upper = format!("{prefix}{rest}").to_uppercase();
        let lower = format!("{prefix}{rest}").to_lowercase();

        // Keys in the same bucket that must stay out of reach.
        let mut outside = vec![
            // Siblings that share the prefix's text but not its last segment: the
            // hole a prefix without its trailing '/' would open.
            format!("{trimmed}2/{rest}"),
            format!("{trimmed}-old/{rest}"),
            format!("{trimmed}{rest}"),
            // The prefix without its slash, as an object of its own.
            trimmed.to_owned(),
            // Keys directly in the parent.
            format!("{parent}{rest}"),
        ];
        // The parent's other children.
        if other != last {
            outside.push(format!("{parent}{other}/{rest}"));
        }
        // IAM resource matching is case-sensitive, as S3 keys are.
        outside.extend([upper, lower]);
        for k in &outside {
            // Some constructions can land back under the prefix (e.g. when `rest`
            // starts with the last segment); only test the ones truly outside.
            if k.starts_with(prefix.as_str()) {
                continue;
            }
            for &action in OBJECT_ACTIONS.iter().chain(BUCKET_ACTIONS) {
                prop_assert!(
                    !on_object(&policy, action, k),
                    "{} allowed on {:?} for prefix {:?}\n{}", action, k, prefix.as_str(), policy
                );
            }
        }

        // The same key in other buckets, including one whose name extends ours, and
        // in another partition.
        let same_key = format!("{prefix}{rest}");
        let elsewhere = [
            object_arn("demo2", &same_key),
            object_arn("other", &same_key),
            object_arn("demo.old", &same_key),
            format!("arn:aws-cn:s3:::{BUCKET}/{same_key}"),
            format!("arn:aws-us-gov:s3:::{BUCKET}/{same_key}"),
        ];
        for resource in &elsewhere {
            for &action in OBJECT_ACTIONS {
                prop_assert!(
                    !allows(&policy, action, resource, &no_context()),
                    "{} allowed on {}\n{}", action, resource, policy
                );
            }
        }
        // No bucket-level action on the bucket itself without a prefix condition.
        for &action in BUCKET_ACTIONS {
            let bucket = bucket_arn(BUCKET);
            prop_assert!(!allows(&policy, action, &bucket, &no_context()), "{}", action);
        }
    }

    /// Keys holding literal wildcard characters are just keys: a request for
    /// `tenants/a*` is not a pattern, and only keys under the prefix match.
    #[test]
    fn literal_wildcards_in_requests_reach_nothing_extra(
        prefix in prefix(), rest in rest(),
    ) {
        let policy = build(&prefix, ALL, None);
        let trimmed = without_slash(&prefix);
        let (parent, _) = parent_and_last(&prefix);
        for k in [
            format!("{trimmed}*"),
            format!("{trimmed}*/{rest}"),
            format!("{trimmed}?/{rest}"),
            format!("{trimmed}${{*}}/{rest}"),
            format!("{parent}*/{rest}"),
            format!("{parent}*"),
            "*".to_owned(),
        ] {
            prop_assert!(!on_object(&policy, "s3:GetObject", &k), "{:?}", k);
            prop_assert!(!on_object(&policy, "s3:PutObject", &k), "{:?}", k);
        }
        // A key under the prefix that happens to contain wildcard characters is a key
        // under the prefix, and is allowed.
        for k in [format!("{prefix}*"), format!("{prefix}?/{rest}"), format!("{prefix}${{*}}")] {
            prop_assert!(on_object(&policy, "s3:GetObject", &k), "{:?}", k);
        }
        // Listing with a wildcard in `prefix` is a listing of that literal text.
        let wild_listings = [
            format!("{trimmed}*"),
            format!("{parent}*"),
            "*".to_owned(),
            format!("{trimmed}?"),
        ];
        for p in wild_listings {
            prop_assert!(!lists(&policy, &p), "{:?}", p);
        }
    }

    /// Why the builder escapes: had a prefix like `tenants/a*/` reached the policy
    /// unescaped, its `*` would open sibling names; escaped as `${*}`, it matches only
    /// the literal character.
    #[test]
    fn an_unescaped_wildcard_would_have_been_too_wide(
        prefix in prefix(), rest in rest(),
    ) {
        let trimmed = without_slash(&prefix);
        let wild = format!("{trimmed}*/");
        // The first line of defence: such a prefix is never parsed.
        prop_assert!(wild.parse::<Prefix>().is_err());

        let policy_for = |resource_prefix: &str, list_prefix: &str| {
            serde_json::json!({
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ObjectAccess",
                        "Effect": "Allow",
                        "Action": ["s3:GetObject"],
                        "Resource": [format!("arn:aws:s3:::{BUCKET}/{resource_prefix}*")],
                    },
                    {
                        "Sid": "ListUnderPrefix",
                        "Effect": "Allow",
                        "Action": ["s3:ListBucket"],
                        "Resource": [bucket_arn(BUCKET)],
                        "Condition": {"StringLike": {"s3:prefix": [format!("{list_prefix}*")]}},
                    },
                ],
            })
            .to_string()
        };
        let unescaped = policy_for(&wild, &wild);
        let escaped = {
            let e = format!("{trimmed}${{*}}/");
            policy_for(&e, &e)
        };
        let sibling = format!("{trimmed}-old/{rest}");
        let sibling_dir = format!("{trimmed}-old/");
        let literal = format!("{trimmed}*/{rest}");

        prop_assert!(on_object(&unescaped, "s3:GetObject", &sibling));
        prop_assert!(lists(&unescaped, &sibling_dir));

        prop_assert!(!on_object(&escaped, "s3:GetObject", &sibling));
        prop_assert!(!lists(&escaped, &sibling_dir));
        prop_assert!(on_object(&escaped, "s3:GetObject", &literal));
    }

    /// `prefix/../x`. IAM does not normalise paths, and S3 keys are literal strings: an
    /// object whose key is `tenants/a/../x` is stored under `tenants/a/`, so allowing
    /// it is right. The danger is the form a client, proxy or SDK might normalise the
    /// path to before sending (`tenants/x`): that is another key, outside the prefix,
    /// and it is denied. (Our presigner refuses `..` keys altogether, because some
    /// stores and proxies do normalise; STS credentials leave the request to the
    /// client, so the policy itself must hold either way.)
    #[test]
    fn dot_dot_keys_are_literal_and_their_normal_forms_are_outside(
        prefix in prefix(), rest in rest(),
    ) {
        let policy = build(&prefix, ALL, None);
        let (parent, _) = parent_and_last(&prefix);
        let literal = format!("{prefix}../{rest}");
        prop_assert!(on_object(&policy, "s3:GetObject", &literal));
        prop_assert!(on_object(&policy, "s3:PutObject", &literal));

        let normalised = format!("{parent}{rest}");
        prop_assume!(!normalised.starts_with(prefix.as_str()));
        prop_assert!(!on_object(&policy, "s3:GetObject", &normalised));
        prop_assert!(!on_object(&policy, "s3:PutObject", &normalised));
        // And listing the parent through `..` is a listing of literal text under the
        // prefix, which shows only keys that really are under it.
        let dotted_listing = format!("{prefix}../");
        prop_assert!(lists(&policy, &dotted_listing));
        prop_assert!(!lists(&policy, parent));
    }

    /// ListBucket only with an `s3:prefix` that starts with the whole prefix, slash
    /// included.
    #[test]
    fn listing_is_allowed_only_under_the_prefix(
        prefix in prefix(), rest in rest(), other in segment(),
    ) {
        let policy = build(&prefix, ALL, None);
        let trimmed = without_slash(&prefix);
        let (parent, last) = parent_and_last(&prefix);
        let bucket = bucket_arn(BUCKET);

        // The prefix itself (with '/') and anything longer.
        let allowed = [
            prefix.as_str().to_owned(),
            format!("{prefix}{rest}"),
            format!("{prefix}{rest}/"),
        ];
        for p in allowed {
            prop_assert!(allows(&policy, "s3:ListBucket", &bucket, &listing(&p)), "{:?}", p);
        }

        // No prefix at all: the key is absent and StringLike fails.
        prop_assert!(!allows(&policy, "s3:ListBucket", &bucket, &no_context()));
        let mut refused = vec![
            String::new(),
            // The prefix minus '/': would also list `{trimmed}-old/…`.
            trimmed.to_owned(),
            parent.to_owned(),
            format!("{trimmed}-old/"),
            format!("{trimmed}2"),
            prefix.as_str().to_uppercase(),
            prefix.as_str().to_lowercase(),
        ];
        if other != last {
            refused.push(format!("{parent}{other}/"));
        }
        for p in &refused {
            if p.starts_with(prefix.as_str()) {
                continue;
            }
            prop_assert!(!lists(&policy, p), "{:?}\n{}", p, policy);
        }

        // Only on this bucket, and never on an object ARN.
        let own = listing(prefix.as_str());
        prop_assert!(!allows(&policy, "s3:ListBucket", &bucket_arn("demo2"), &own));
        prop_assert!(!allows(&policy, "s3:ListBucket", &object_arn(BUCKET, prefix.as_str()), &own));
        // Other listings on the bucket stay closed even with the right prefix.
        for action in ["s3:ListBucketVersions", "s3:ListBucketMultipartUploads"] {
            prop_assert!(!allows(&policy, action, &bucket, &own), "{}", action);
        }
    }

    /// Without `list`, no listing at all.
    #[test]
    fn no_listing_unless_asked(prefix in prefix(), access in access()) {
        let access = Access { list: false, ..access };
        prop_assume!(access.read || access.write || access.delete);
        let policy = build(&prefix, access, None);
        prop_assert!(!lists(&policy, prefix.as_str()));
    }

    /// Delete only when asked, and never a version delete.
    #[test]
    fn delete_only_when_asked(prefix in prefix(), rest in rest(), access in access()) {
        let policy = build(&prefix, access, None);
        let arn = object_arn(BUCKET, &format!("{prefix}{rest}"));
        prop_assert_eq!(allows(&policy, "s3:DeleteObject", &arn, &no_context()), access.delete);
        prop_assert!(!allows(&policy, "s3:DeleteObjectVersion", &arn, &no_context()));
    }

    /// A KMS statement only when a key is given (and there is something to encrypt or
    /// decrypt), for that key only, and only as S3 uses it for objects under the
    /// prefix: through S3 in the key's region (`kms:ViaService`), with the encryption
    /// context S3 sets to the object's ARN. The credentials cannot call KMS directly
    /// to decrypt data keys, nor decrypt another tenant's objects through S3.
    #[test]
    fn kms_only_when_a_key_is_given(
        prefix in prefix(), rest in rest(), access in access(), with_key in any::<bool>(),
    ) {
        let key: KmsKeyArn = KEY_ARN.parse().unwrap();
        let policy = build(&prefix, access, with_key.then_some(&key));
        let uses_data = access.read || access.write;
        prop_assert_eq!(policy.contains("kms:"), with_key && uses_data);
        let inside = object_arn(BUCKET, &format!("{prefix}{rest}"));
        let (parent, last) = parent_and_last(&prefix);
        let sibling = object_arn(BUCKET, &format!("{parent}{last}x/{rest}"));
        let via_s3 = |object: &str| -> HashMap<&'static str, String> {
            HashMap::from([
                ("kms:ViaService", "s3.eu-west-1.amazonaws.com".to_owned()),
                ("kms:EncryptionContext:aws:s3:arn", object.to_owned()),
            ])
        };
        let kms = |action: &str, context: &HashMap<&'static str, String>| {
            let context: HashMap<&str, &str> =
                context.iter().map(|(k, v)| (*k, v.as_str())).collect();
            allows(&policy, action, KEY_ARN, &context)
        };
        prop_assert_eq!(kms("kms:Decrypt", &via_s3(&inside)), with_key && uses_data);
        prop_assert_eq!(
            kms("kms:GenerateDataKey", &via_s3(&inside)),
            with_key && access.write
        );
        // Not for an object outside the prefix, not outside S3, not through another
        // region's S3, and not without the context.
        prop_assert!(!kms("kms:Decrypt", &via_s3(&sibling)));
        let mut direct = via_s3(&inside);
        direct.remove("kms:ViaService");
        prop_assert!(!kms("kms:Decrypt", &direct));
        let mut elsewhere = via_s3(&inside);
        elsewhere.insert("kms:ViaService", "s3.us-east-1.amazonaws.com".to_owned());
        prop_assert!(!kms("kms:Decrypt", &elsewhere));
        let mut no_context = via_s3(&inside);
        no_context.remove("kms:EncryptionContext:aws:s3:arn");
        prop_assert!(!kms("kms:Decrypt", &no_context));
        let never = [
            "kms:Encrypt",
            "kms:ReEncryptFrom",
            "kms:CreateGrant",
            "kms:ScheduleKeyDeletion",
        ];
        for action in never {
            prop_assert!(!kms(action, &via_s3(&inside)), "{}", action);
        }
        for resource in [OTHER_KEY_ARN, "arn:aws:kms:eu-west-1:111122223333:alias/x", "*"] {
            let context: HashMap<&str, &str> = [
                ("kms:ViaService", "s3.eu-west-1.amazonaws.com"),
                ("kms:EncryptionContext:aws:s3:arn", inside.as_str()),
            ]
            .into();
            prop_assert!(!allows(&policy, "kms:Decrypt", resource, &context), "{}", resource);
        }
    }

    /// Every policy for generated inputs is valid JSON in printable ASCII, within the
    /// size limit (or refused as TooLarge), and its only wildcard is the trailing `*`
    /// the builder appends after a '/'.
    #[test]
    fn every_policy_is_valid_json_within_the_limit_without_stray_wildcards(
        prefix in prop_oneof![prefix(), long_prefix()],
        access in access(),
        with_key in any::<bool>(),
    ) {
        let key: KmsKeyArn = KEY_ARN.parse().unwrap();
        let bucket: BucketName = BUCKET.parse().unwrap();
        let result = session_policy(
            Partition::Aws, &bucket, &prefix, &access, with_key.then_some(&key),
        );
        let policy = match result {
            Ok(policy) => policy,
            Err(Error::TooLarge { len, max }) => {
                prop_assert_eq!(max, MAX_PACKED_INPUT_CHARS);
                prop_assert!(len > max);
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        };
        let text = policy.as_str();
        prop_assert!(policy.len() <= MAX_PACKED_INPUT_CHARS);
        prop_assert_eq!(policy.len(), text.chars().count());
        // STS accepts \u0020-\u00FF; the builder keeps to printable ASCII.
        prop_assert!(text.bytes().all(|b| (b' '..=b'~').contains(&b)), "{}", text);

        let json: Value = serde_json::from_str(text).expect("valid JSON");
        prop_assert_eq!(&json["Version"], "2012-10-17");
        let statements = json["Statement"].as_array().expect("Statement array");
        for statement in statements {
            prop_assert_eq!(&statement["Effect"], "Allow");
            prop_assert!(statement["Sid"].as_str().is_some_and(|s| !s.is_empty()));
            let mut patterns: Vec<&str> = statement["Resource"]
                .as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            if let Some(condition) = statement.get("Condition") {
                for keys in condition.as_object().unwrap().values() {
                    for values in keys.as_object().unwrap().values() {
                        let values = values.as_array().unwrap();
                        patterns.extend(values.iter().map(|v| v.as_str().unwrap()));
                    }
                }
            }
            for pattern in patterns {
                let bare = pattern.replace("${*}", "").replace("${?}", "").replace("${$}", "");
                prop_assert!(!bare.contains(['?', '$']), "{:?}", pattern);
                let stars = bare.matches('*').count();
                prop_assert!(
                    stars == 0 || (stars == 1 && bare.ends_with("/*")),
                    "stray wildcard in {:?}", pattern
                );
            }
        }
        // The decoded object resource is exactly the granted prefix plus '*'.
        if access.read || access.write || access.delete {
            prop_assert_eq!(
                &statements[0]["Resource"][0],
                &format!("arn:aws:s3:::{BUCKET}/{prefix}*")
            );
        }
    }
}

/// The prefix listing decision in concrete terms, for the reader.
#[test]
fn listing_example_tenants_a() {
    let prefix: Prefix = "tenants/a/".parse().unwrap();
    let policy = build(
        &prefix,
        Access {
            list: true,
            ..Access::default()
        },
        None,
    );
    let bucket = bucket_arn(BUCKET);
    assert!(lists(&policy, "tenants/a/"));
    assert!(lists(&policy, "tenants/a/jobs/"));
    assert!(!lists(&policy, "tenants/a"));
    assert!(!lists(&policy, "tenants/"));
    assert!(!lists(&policy, "tenants/a-old/"));
    assert!(!allows(&policy, "s3:ListBucket", &bucket, &no_context()));
}
