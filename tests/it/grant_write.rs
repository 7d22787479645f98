//! GrantWrite end to end against s3s-fs, which verifies SigV4 signed headers and POST
//! policies: every upload is made with a plain HTTP client and read back, and every
//! pinned value is shown to be enforced by the store.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha2::{Digest, Sha256};
use storage_grants::proto::grant_write_request::Size;
use storage_grants::proto::{GrantWriteRequest, GrantWriteResponse, SizeRange};
use support::{OTHER_TOKEN, Service, Setup, Store, TOKEN, authed, demo_store};
use tonic::Code;
use tonic_types::StatusExt;

const BODY: &[u8] = b"id,amount\n1,42\n";

fn checksum(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

fn write(key: &str) -> GrantWriteRequest {
    GrantWriteRequest {
        bucket: "demo".into(),
        key: key.into(),
        ..Default::default()
    }
}

/// A request pinning everything a PUT can pin.
fn all_pins(key: &str) -> GrantWriteRequest {
    GrantWriteRequest {
        content_type: "text/csv".into(),
        size: Some(Size::ContentLength(BODY.len() as u64)),
        checksum_sha256: checksum(BODY),
        metadata: BTreeMap::from([
            ("owner".into(), "team-a".into()),
            ("batch".into(), "7".into()),
        ]),
        create_only: true,
        ..write(key)
    }
}

async fn grant(service: &Service, request: GrantWriteRequest) -> GrantWriteResponse {
    service
        .client()
        .await
        .grant_write(authed(request, &TOKEN))
        .await
        .expect("write grant")
        .into_inner()
}

/// PUT `body` with `headers`, as any HTTP client would.
async fn put(url: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> u16 {
    let mut request = reqwest::Client::new().put(url).body(body.to_vec());
    for (name, value) in headers {
        // The client sets Content-Length from the body; the grant pins it.
        if name != "content-length" {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    request.send().await.expect("PUT").status().as_u16()
}

/// A multipart/form-data POST of the grant's form, then `body` as its file.
async fn post(grant: &GrantWriteResponse, fields: &BTreeMap<String, String>, body: &[u8]) -> u16 {
    support::post_form(&grant.url, fields, &grant.file_field, body).await
}

async fn stored(
    store: &Store,
    key: &str,
) -> Option<aws_sdk_s3::operation::get_object::GetObjectOutput> {
    store
        .admin()
        .get_object()
        .bucket("demo")
        .key(key)
        .send()
        .await
        .ok()
}

#[tokio::test]
async fn put_with_exactly_the_pinned_headers_stores_the_pinned_object() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let g = grant(&service, all_pins("public/upload.csv")).await;
    assert_eq!(g.method, "PUT");
    assert!(g.form_fields.is_empty() && g.file_field.is_empty());
    let pinned = [
        "content-length",
        "content-type",
        "if-none-match",
        "x-amz-checksum-sha256",
        "x-amz-meta-batch",
        "x-amz-meta-owner",
    ];
    for name in pinned {
        assert!(
            g.headers.contains_key(name),
            "{name} is not pinned: {:?}",
            g.headers.keys()
        );
    }
    for name in g.headers.keys() {
        assert!(
            pinned.contains(&name.as_str()) || name == "x-amz-sdk-checksum-algorithm",
            "unexpected header {name}"
        );
    }
    assert_eq!(g.headers["content-length"], BODY.len().to_string());
    assert_eq!(g.headers["if-none-match"], "*");
    assert_eq!(put(&g.url, &g.headers, BODY).await, 200);

    let object = stored(&store, "public/upload.csv").await.expect("stored");
    assert_eq!(object.content_type(), Some("text/csv"));
    let metadata = object.metadata().cloned().unwrap_or_default();
    assert_eq!(metadata.get("owner").map(String::as_str), Some("team-a"));
    assert_eq!(metadata.get("batch").map(String::as_str), Some("7"));
    assert_eq!(
        object.body.collect().await.unwrap().into_bytes().as_ref(),
        BODY
    );
}

#[tokio::test]
async fn changing_any_pinned_header_is_refused_by_the_store() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let g = grant(&service, all_pins("public/pinned.csv")).await;
    type Change = Box<dyn Fn(&mut BTreeMap<String, String>)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "another content type",
            Box::new(|h| {
                h.insert("content-type".into(), "text/plain".into());
            }),
        ),
        (
            "another checksum",
            Box::new(|h| {
                h.insert("x-amz-checksum-sha256".into(), checksum(b"x"));
            }),
        ),
        (
            "another metadata value",
            Box::new(|h| {
                h.insert("x-amz-meta-owner".into(), "team-b".into());
            }),
        ),
        (
            "dropped metadata",
            Box::new(|h| {
                h.remove("x-amz-meta-batch");
            }),
        ),
        (
            "dropped create-only",
            Box::new(|h| {
                h.remove("if-none-match");
            }),
        ),
    ];
    for (what, change) in cases {
        let mut headers = g.headers.clone();
        change(&mut headers);
        let status = put(&g.url, &headers, BODY).await;
        assert!(
            matches!(status, 400 | 403),
            "{what}: the store accepted it ({status})"
        );
        assert!(
            stored(&store, "public/pinned.csv").await.is_none(),
            "{what}: something was written"
        );
    }
    // The untouched grant still works: the refusals were the changes' doing.
    assert_eq!(put(&g.url, &g.headers, BODY).await, 200);
}

/// The checksum pin is enforced on the body itself: the store recomputes it. s3s-fs
/// answers 400 BadDigest but, unlike S3, has already written the bytes by then (it
/// checks while streaming to disk), so this test asserts the refusal, not that
/// nothing was stored.
#[tokio::test]
async fn body_not_matching_the_pinned_checksum_is_refused_though_s3s_fs_keeps_the_bytes() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let g = grant(&service, all_pins("public/digest.csv")).await;
    let same_length_other_body = b"id,amount\n1,43\n";
    assert_eq!(same_length_other_body.len(), BODY.len());
    assert_eq!(put(&g.url, &g.headers, same_length_other_body).await, 400);
}

#[tokio::test]
async fn another_length_than_the_pinned_one_is_refused() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    // Only the length is pinned, so nothing else can be what the store refuses.
    let g = grant(
        &service,
        GrantWriteRequest {
            size: Some(Size::ContentLength(BODY.len() as u64)),
            ..write("public/len.csv")
        },
    )
    .await;
    assert_eq!(g.headers.keys().collect::<Vec<_>>(), ["content-length"]);
    for body in [
        &BODY[..BODY.len() - 1],
        b"id,amount\n1,42\n2,7\n".as_slice(),
    ] {
        assert_eq!(
            put(&g.url, &g.headers, body).await,
            403,
            "{} bytes accepted",
            body.len()
        );
    }
    assert!(stored(&store, "public/len.csv").await.is_none());
    assert_eq!(put(&g.url, &g.headers, BODY).await, 200);
}

#[tokio::test]
async fn create_only_refuses_a_second_upload_and_keeps_the_first() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let first = grant(&service, all_pins("public/once.csv")).await;
    assert_eq!(put(&first.url, &first.headers, BODY).await, 200);
    let second = grant(&service, all_pins("public/once.csv")).await;
    assert_eq!(put(&second.url, &second.headers, BODY).await, 412);
    // Same length and checksum would be needed; a different grant with other content
    // pins is refused the same way.
    let other = b"id,amount\n9,99\n";
    let third = grant(
        &service,
        GrantWriteRequest {
            checksum_sha256: checksum(other),
            ..all_pins("public/once.csv")
        },
    )
    .await;
    assert_eq!(put(&third.url, &third.headers, other).await, 412);
    let object = stored(&store, "public/once.csv").await.unwrap();
    assert_eq!(
        object.body.collect().await.unwrap().into_bytes().as_ref(),
        BODY
    );
}

#[tokio::test]
async fn put_without_pins_needs_no_headers() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let g = grant(&service, write("public/free.bin")).await;
    assert!(g.headers.is_empty(), "{:?}", g.headers.keys());
    assert_eq!(put(&g.url, &BTreeMap::new(), b"anything").await, 200);
    assert!(stored(&store, "public/free.bin").await.is_some());
}

fn ranged(key: &str, min: u64, max: u64) -> GrantWriteRequest {
    GrantWriteRequest {
        content_type: "text/csv".into(),
        size: Some(Size::ContentLengthRange(SizeRange {
            min_bytes: min,
            max_bytes: max,
        })),
        metadata: BTreeMap::from([("owner".into(), "team-a".into())]),
        ..write(key)
    }
}

#[tokio::test]
async fn post_within_the_range_succeeds() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let g = grant(&service, ranged("public/form.csv", 1, 64)).await;
    assert_eq!(g.method, "POST");
    assert_eq!(g.file_field, "file");
    assert!(g.headers.is_empty());
    for field in [
        "key",
        "policy",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-algorithm",
    ] {
        assert!(g.form_fields.contains_key(field), "no {field} field");
    }
    let policy = base64::engine::general_purpose::STANDARD
        .decode(&g.form_fields["policy"])
        .expect("base64 policy");
    let policy: serde_json::Value = serde_json::from_slice(&policy).expect("JSON policy");
    let conditions = policy["conditions"].to_string();
    assert!(conditions.contains("content-length-range"), "{conditions}");
    assert!(conditions.contains("public/form.csv"), "{conditions}");

    let status = post(&g, &g.form_fields, BODY).await;
    assert!(matches!(status, 200 | 204), "POST refused: {status}");
    let object = stored(&store, "public/form.csv").await.expect("stored");
    assert_eq!(object.content_type(), Some("text/csv"));
    assert_eq!(
        object.metadata().unwrap().get("owner").map(String::as_str),
        Some("team-a")
    );
    assert_eq!(
        object.body.collect().await.unwrap().into_bytes().as_ref(),
        BODY
    );
}

#[tokio::test]
async fn post_over_the_range_to_another_key_or_with_a_tampered_policy_is_refused() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let g = grant(&service, ranged("public/form.csv", 1, 8)).await;

    // Over the range.
    let status = post(&g, &g.form_fields, BODY).await;
    assert!(matches!(status, 400 | 403), "over the range: {status}");

    // Another key than the one granted.
    let mut fields = g.form_fields.clone();
    fields.insert("key".into(), "public/elsewhere.csv".into());
    let status = post(&g, &fields, b"small").await;
    assert!(matches!(status, 400 | 403), "another key: {status}");

    // A policy widened to 1 MB, re-encoded without a valid signature.
    let mut fields = g.form_fields.clone();
    let policy = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&fields["policy"])
            .unwrap(),
    )
    .unwrap()
    .replace(",8]", ",1048576]");
    fields.insert(
        "policy".into(),
        base64::engine::general_purpose::STANDARD.encode(policy),
    );
    let status = post(&g, &fields, BODY).await;
    assert!(matches!(status, 400 | 403), "tampered policy: {status}");

    // Another content type than the pinned one.
    let mut fields = g.form_fields.clone();
    fields.insert("Content-Type".into(), "text/html".into());
    let status = post(&g, &fields, b"small").await;
    assert!(
        matches!(status, 400 | 403),
        "another content type: {status}"
    );

    for key in ["public/form.csv", "public/elsewhere.csv"] {
        assert!(stored(&store, key).await.is_none(), "{key} was written");
    }
    // Within the range, the untouched form works.
    assert!(matches!(
        post(&g, &g.form_fields, b"small").await,
        200 | 204
    ));
}

#[tokio::test]
async fn expired_upload_grants_are_refused() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let ttl = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    let put_grant = grant(
        &service,
        GrantWriteRequest {
            ttl,
            ..all_pins("public/late.csv")
        },
    )
    .await;
    let post_grant = grant(
        &service,
        GrantWriteRequest {
            ttl,
            ..ranged("public/late-form.csv", 1, 64)
        },
    )
    .await;
    let expires = put_grant.expires_at.unwrap().seconds;
    while (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64)
        <= expires + 1
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(put(&put_grant.url, &put_grant.headers, BODY).await, 403);
    let status = post(&post_grant, &post_grant.form_fields, BODY).await;
    assert!(matches!(status, 400 | 403), "expired POST: {status}");
    assert!(stored(&store, "public/late.csv").await.is_none());
    assert!(stored(&store, "public/late-form.csv").await.is_none());
}

#[tokio::test]
async fn bad_pins_are_invalid_argument_naming_the_field() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = service.client().await;
    let big = "v".repeat(1500);
    let cases = [
        (ranged("public/x", 10, 9), "content_length_range"),
        (
            GrantWriteRequest {
                checksum_sha256: "not-base64!".into(),
                ..write("public/x")
            },
            "checksum_sha256",
        ),
        (
            GrantWriteRequest {
                checksum_sha256: "AAAA".into(),
                ..write("public/x")
            },
            "checksum_sha256",
        ),
        (
            GrantWriteRequest {
                metadata: BTreeMap::from([("Bad Key".into(), "v".into())]),
                ..write("public/x")
            },
            "metadata",
        ),
        (
            GrantWriteRequest {
                metadata: BTreeMap::from([("a".into(), big.clone()), ("b".into(), big.clone())]),
                ..write("public/x")
            },
            "metadata",
        ),
        (
            GrantWriteRequest {
                content_type: "text/plain\r\nx-evil: 1".into(),
                ..write("public/x")
            },
            "content_type",
        ),
        (
            GrantWriteRequest {
                size: Some(Size::ContentLength(6 * 1024 * 1024 * 1024)),
                ..write("public/x")
            },
            "content_length",
        ),
        (
            GrantWriteRequest {
                create_only: true,
                ..ranged("public/x", 1, 9)
            },
            "create_only",
        ),
        (write("public/../private/x"), "key"),
        (ranged("public/${filename}", 1, 9), "key"),
    ];
    for (request, field) in cases {
        let status = client
            .grant_write(authed(request, &TOKEN))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{field}: {}",
            status.message()
        );
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("BadRequest").field_violations;
        assert_eq!(violations[0].field, field, "{}", status.message());
        assert!(!violations[0].description.is_empty());
    }
}

#[tokio::test]
async fn write_outside_the_callers_rules_is_not_signed() {
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let mut client = service.client().await;
    // dev:demo writes only under public/; dev:other may only read under other/.
    for (key, token) in [
        ("private/x.csv", &TOKEN),
        ("public2/x.csv", &TOKEN),
        ("other/x.csv", &OTHER_TOKEN),
    ] {
        let status = client
            .grant_write(authed(write(key), token))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{key}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn a_huge_bad_field_is_not_echoed_in_full() {
    // Trailers over 16 KiB break the stream in common proxies and clients: what the
    // caller sent is quoted only in part, in the message and in the details.
    let store = demo_store().await;
    let service = Service::start(&store, Setup::new()).await;
    let huge = "N".repeat(1 << 20);
    let request = GrantWriteRequest {
        metadata: BTreeMap::from([(huge.clone(), "v".to_owned())]),
        ..write("public/echo.csv")
    };
    let status = service
        .client()
        .await
        .grant_write(authed(request, &TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().len() < 1024,
        "message of {} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains("metadata"),
        "{}",
        status.message()
    );
    let details = status.get_error_details();
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations.len(), 1);
    assert!(
        violations[0].description.len() < 512,
        "{} bytes",
        violations[0].description.len()
    );
    assert!(violations[0].description.contains("NNNN"));
}

/// A rule's `content_types` holds its writes to the types it names: an upload must pin
/// one, so a writer cannot have the store serve, say, HTML from its origin; the store
/// keeps the pinned type. Rules without it take any type, or none.
#[tokio::test]
async fn a_rule_with_content_types_takes_only_uploads_pinned_to_them() {
    use storage_grants::proto::StartMultipartUploadRequest;
    let store = demo_store().await;
    let setup = Setup::with_more_rules(
        r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/images/"
actions = ["write"]
content_types = ["image/*", "application/pdf"]
"#,
    );
    let service = Service::start(&store, setup).await;
    let typed = |key: &str, content_type: &str| GrantWriteRequest {
        content_type: content_type.into(),
        ..write(key)
    };
    let g = grant(&service, typed("public/images/a.png", "image/png")).await;
    assert_eq!(put(&g.url, &g.headers, b"\x89PNG").await, 200);
    let object = stored(&store, "public/images/a.png").await.expect("stored");
    assert_eq!(object.content_type(), Some("image/png"));
    let form = grant(
        &service,
        GrantWriteRequest {
            content_type: "application/pdf".into(),
            ..ranged("public/images/b.pdf", 1, 100)
        },
    )
    .await;
    assert_eq!(post(&form, &form.form_fields, b"%PDF").await, 204);

    let mut client = service.client().await;
    for (content_type, says) in [
        ("text/html", "'text/html' is not one"),
        ("application/pdfx", "'application/pdfx' is not one"),
        // A list: Chromium renders the last member.
        ("image/png,text/html", "'image/png,text/html' is not one"),
        ("", "pin one of them in content_type"),
    ] {
        let refused = client
            .grant_write(authed(typed("public/images/x", content_type), &TOKEN))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{content_type}");
        let message = refused.message();
        assert!(
            message.contains(says) && message.contains("image/*, application/pdf"),
            "{message}"
        );
        let multipart = client
            .start_multipart_upload(authed(
                StartMultipartUploadRequest {
                    bucket: "demo".into(),
                    key: "public/images/big".into(),
                    content_type: content_type.into(),
                    ..Default::default()
                },
                &TOKEN,
            ))
            .await
            .unwrap_err();
        assert_eq!(multipart.code(), Code::PermissionDenied, "{content_type}");
    }
    // A type followed by a no-break space passed as `image/png` to the rule and was
    // pinned as sent, which a browser cannot parse (and then sniffs): refused as input,
    // under any rule, before a grant is made.
    for content_type in ["image/png\u{a0}", "image/png\u{3000}", "\u{2003}image/png"] {
        for key in ["public/images/x.png", "public/anything.png"] {
            let refused = client
                .grant_write(authed(typed(key, content_type), &TOKEN))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{content_type:?}");
            assert!(
                refused.message().contains("content_type")
                    && refused.message().contains("a media type is ASCII"),
                "{}",
                refused.message()
            );
        }
    }
    // Outside that prefix, the other rule takes any type.
    let g = grant(&service, typed("public/page.html", "text/html")).await;
    assert_eq!(put(&g.url, &g.headers, b"<p>").await, 200);
}

/// A rule's `max_object_size` bounds every form of upload, not only multipart: a PUT
/// must pin a length within it, a form's range must end within it (the store then
/// holds the upload to the range), and a PUT without a length is refused, since it
/// would take any size the store accepts.
#[tokio::test]
async fn a_rule_with_max_object_size_bounds_puts_and_forms() {
    let store = demo_store().await;
    let setup = Setup::with_more_rules(
        r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/small/"
actions = ["write"]
max_object_size = 1000
"#,
    );
    let service = Service::start(&store, setup).await;
    let sized = |key: &str, n: u64| GrantWriteRequest {
        size: Some(Size::ContentLength(n)),
        ..write(key)
    };
    let g = grant(&service, sized("public/small/a.bin", 1000)).await;
    assert_eq!(put(&g.url, &g.headers, &[b'a'; 1000]).await, 200);
    let form = grant(&service, ranged("public/small/b.bin", 1, 1000)).await;
    assert_eq!(post(&form, &form.form_fields, &[b'b'; 1000]).await, 204);
    assert_ne!(
        post(&form, &form.form_fields, &[b'b'; 1001]).await,
        204,
        "the store took more than the form's range"
    );

    let mut client = service.client().await;
    for (request, field, says) in [
        (
            sized("public/small/c.bin", 1001),
            "content_length",
            "is 1001 bytes",
        ),
        (write("public/small/d.bin"), "content_length", "required"),
        (
            ranged("public/small/e.bin", 1, 1001),
            "content_length_range.max_bytes",
            "is 1001",
        ),
    ] {
        let refused = client
            .grant_write(authed(request, &TOKEN))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{field}");
        let message = refused.message();
        assert!(
            message.contains(field) && message.contains(says) && message.contains("at most 1000"),
            "{message}"
        );
    }
    // Outside that prefix, the other rule takes a PUT of any size.
    let g = grant(&service, write("public/large.bin")).await;
    assert_eq!(put(&g.url, &g.headers, &[b'c'; 2000]).await, 200);
}
