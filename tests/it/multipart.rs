//! Multipart uploads end to end against s3s-fs: the service starts and completes the
//! upload, the parts go straight to the store with the presigned URLs over plain HTTP,
//! and every refusal is proven by the store or by the service before any store call.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};
use storage_grants::proto::grant_service_client::GrantServiceClient;
use storage_grants::proto::{
    AbortMultipartUploadRequest, ChecksumAlgorithm, CompleteMultipartUploadRequest, CompletedPart,
    GrantReadRequest, GrantUploadPartsRequest, ListUploadedPartsRequest, PartRange,
    StartMultipartUploadRequest, UploadPartGrant, UploadPartRequest,
};
use support::faults::{Fault, FaultProxy, Upstream};
use support::{OTHER_TOKEN, Service, Setup, Store, TOKEN, authed, demo_store, http_get};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const MIB: usize = 1024 * 1024;
/// A part small enough to be sent whole before any answer.
const SMALL: usize = 4096;

struct Harness {
    client: GrantServiceClient<Channel>,
    store: Store,
    _service: Service,
}

async fn harness() -> Harness {
    let store = demo_store().await;
    // A caller that may write everywhere under public/, and objects of at most 6 MiB
    // under public/small/; dev:other may also write under public/ (to show that a
    // rule is not enough to use another caller's upload).
    let setup = Setup::with_more_rules(
        r#"
[[rules]]
callers = ["dev:demo"]
bucket = "demo"
prefix = "public/small/"
actions = ["read", "write"]
max_object_size = 6291456

[[rules]]
callers = ["dev:other"]
bucket = "demo"
prefix = "public/"
actions = ["write"]
"#,
    );
    let service = Service::start(&store, setup).await;
    Harness {
        client: service.client().await,
        store,
        _service: service,
    }
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sha256_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

async fn start(h: &mut Harness, key: &str, create_only: bool) -> String {
    h.client
        .start_multipart_upload(authed(
            StartMultipartUploadRequest {
                bucket: "demo".into(),
                key: key.into(),
                content_type: "application/octet-stream".into(),
                create_only,
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .expect("start")
        .into_inner()
        .upload
}

async fn grant(h: &mut Harness, upload: &str, parts: &[(u32, usize)]) -> Vec<UploadPartGrant> {
    h.client
        .grant_upload_parts(authed(
            GrantUploadPartsRequest {
                upload: upload.into(),
                parts: parts
                    .iter()
                    .map(|&(n, len)| UploadPartRequest {
                        part_number: n,
                        content_length: Some(len as u64),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .expect("grant parts")
        .into_inner()
        .parts
}

/// PUTs `data` with a granted part; answers the status and the ETag.
async fn put_part(part: &UploadPartGrant, data: Vec<u8>) -> (u16, String) {
    put(&part.url, &part.headers, data).await
}

async fn put(url: &str, headers: &BTreeMap<String, String>, data: Vec<u8>) -> (u16, String) {
    let mut request = reqwest::Client::new().put(url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let response = request.body(data).send().await.expect("store answers");
    let etag = response
        .headers()
        .get("etag")
        .map(|e| e.to_str().unwrap().trim_matches('"').to_owned())
        .unwrap_or_default();
    (response.status().as_u16(), etag)
}

fn completed(parts: &[(u32, &str)]) -> Vec<CompletedPart> {
    parts
        .iter()
        .map(|&(n, etag)| CompletedPart {
            part_number: n,
            etag: etag.into(),
            ..Default::default()
        })
        .collect()
}

async fn complete(
    h: &mut Harness,
    token: &str,
    upload: &str,
    parts: &[(u32, &str)],
) -> Result<storage_grants::proto::CompleteMultipartUploadResponse, tonic::Status> {
    h.client
        .complete_multipart_upload(authed(
            CompleteMultipartUploadRequest {
                upload: upload.into(),
                parts: completed(parts),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn abort(h: &mut Harness, upload: &str) -> Result<(), tonic::Status> {
    h.client
        .abort_multipart_upload(authed(
            AbortMultipartUploadRequest {
                upload: upload.into(),
            },
            &TOKEN,
        ))
        .await
        .map(|_| ())
}

async fn download(h: &mut Harness, key: &str) -> reqwest::Response {
    let url = h
        .client
        .grant_read(authed(
            GrantReadRequest {
                bucket: "demo".into(),
                key: key.into(),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .expect("grant read")
        .into_inner()
        .url;
    http_get(&url).await
}

#[tokio::test]
async fn three_5_mib_parts_and_a_1_mib_part_upload_list_complete_and_download() {
    let mut h = harness().await;
    let upload = start(&mut h, "public/big.bin", false).await;
    let sizes = [5 * MIB, 5 * MIB, 5 * MIB, MIB];
    let parts = grant(
        &mut h,
        &upload,
        &[(1, sizes[0]), (2, sizes[1]), (3, sizes[2]), (4, sizes[3])],
    )
    .await;
    assert_eq!(parts.len(), 4);
    let mut whole = Vec::new();
    let mut etags = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part.method, "PUT");
        assert_eq!(part.part_number, i as u32 + 1);
        let data = body(sizes[i], i as u8);
        whole.extend_from_slice(&data);
        let (status, etag) = put_part(part, data).await;
        assert_eq!(status, 200, "part {}", i + 1);
        etags.push(etag);
    }
    let listed = h
        .client
        .list_uploaded_parts(authed(
            ListUploadedPartsRequest {
                upload: upload.clone(),
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .parts;
    // s3s-fs lists no ETags (moto does: see the test on unknown ETags).
    let seen: Vec<(u32, u64)> = listed.iter().map(|p| (p.part_number, p.size)).collect();
    let expected: Vec<(u32, u64)> = (0..4).map(|i| (i as u32 + 1, sizes[i] as u64)).collect();
    assert_eq!(seen, expected);
    let named: Vec<(u32, &str)> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u32 + 1, e.as_str()))
        .collect();
    let done = complete(&mut h, &TOKEN, &upload, &named).await.unwrap();
    assert_eq!(done.size, 16 * MIB as u64);
    assert_eq!(done.key, "public/big.bin");
    assert!(!done.etag.is_empty());
    let object = download(&mut h, "public/big.bin").await;
    assert_eq!(object.status(), 200);
    let got = object.bytes().await.unwrap();
    assert_eq!(sha256_b64(&got), sha256_b64(&whole));
}

#[tokio::test]
async fn a_part_url_works_for_its_part_and_upload_only() {
    let mut h = harness().await;
    let first = start(&mut h, "public/a.bin", false).await;
    let second = start(&mut h, "public/b.bin", false).await;
    // Small parts: a refused body is sent whole before the store answers (a large one
    // could be cut off by the store's early answer, which the client reports as a
    // broken pipe instead of the 403).
    let part = grant(&mut h, &first, &[(1, SMALL)]).await.remove(0);
    let other_upload = grant(&mut h, &second, &[(1, SMALL)]).await.remove(0);
    // Another part number, with the signature of part 1.
    let renumbered = part.url.replace("partNumber=1&", "partNumber=2&");
    assert_ne!(renumbered, part.url);
    assert_eq!(put(&renumbered, &part.headers, body(SMALL, 1)).await.0, 403);
    // Another upload id, with the signature made for the first upload.
    let id = |url: &str| {
        url.split(['?', '&'])
            .find_map(|p| p.strip_prefix("uploadId="))
            .unwrap()
            .to_owned()
    };
    let moved = part.url.replace(&id(&part.url), &id(&other_upload.url));
    assert_ne!(moved, part.url);
    assert_eq!(put(&moved, &part.headers, body(SMALL, 1)).await.0, 403);
    // Its own part and upload: accepted.
    assert_eq!(put_part(&part, body(SMALL, 1)).await.0, 200);
}

#[tokio::test]
async fn a_checksum_pin_is_signed_so_the_part_must_carry_it() {
    let mut h = harness().await;
    let upload = h
        .client
        .start_multipart_upload(authed(
            StartMultipartUploadRequest {
                bucket: "demo".into(),
                key: "public/summed.bin".into(),
                checksum_algorithm: ChecksumAlgorithm::Sha256.into(),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .upload;
    // Without the pin: refused before signing.
    let status = h
        .client
        .grant_upload_parts(authed(
            GrantUploadPartsRequest {
                upload: upload.clone(),
                part_range: Some(PartRange { first: 1, last: 1 }),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("checksum_sha256"),
        "{}",
        status.message()
    );
    // Under the field the caller used, saying what to send instead.
    let details = status.get_error_details();
    let violation = &details.bad_request().unwrap().field_violations[0];
    assert_eq!(violation.field, "part_range");
    assert!(
        violation.description.contains("name the parts in parts"),
        "{violation:?}"
    );
    let data = body(SMALL, 7);
    let part = h
        .client
        .grant_upload_parts(authed(
            GrantUploadPartsRequest {
                upload: upload.clone(),
                parts: vec![UploadPartRequest {
                    part_number: 1,
                    checksum_sha256: sha256_b64(&data),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .parts
        .remove(0);
    assert_eq!(part.headers["x-amz-checksum-sha256"], sha256_b64(&data));
    // Another checksum, or none: the signature no longer matches.
    let mut other = part.headers.clone();
    other.insert("x-amz-checksum-sha256".into(), sha256_b64(b"other"));
    assert_eq!(put(&part.url, &other, data.clone()).await.0, 403);
    assert_eq!(put(&part.url, &BTreeMap::new(), data.clone()).await.0, 403);
    let (status, etag) = put_part(&part, data.clone()).await;
    assert_eq!(status, 200);
    // Completing names each part's checksum too (S3 refuses it otherwise), and is told
    // so before the store is asked.
    let refused = complete(&mut h, &TOKEN, &upload, &[(1, &etag)])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let details = refused.get_error_details();
    let violation = &details.bad_request().unwrap().field_violations[0];
    assert_eq!(violation.field, "parts");
    assert!(
        violation.description.contains("part 1")
            && violation.description.contains("checksum_sha256"),
        "{violation:?}"
    );
    let done = h
        .client
        .complete_multipart_upload(authed(
            CompleteMultipartUploadRequest {
                upload: upload.clone(),
                parts: vec![CompletedPart {
                    part_number: 1,
                    etag,
                    checksum_sha256: sha256_b64(&data),
                }],
            },
            &TOKEN,
        ))
        .await
        .expect("completed with the part's checksum")
        .into_inner();
    assert_eq!(done.size, data.len() as u64);
    let object = download(&mut h, "public/summed.bin").await;
    assert_eq!(object.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn another_caller_cannot_continue_list_complete_or_abort_an_upload() {
    let audit = support::capture_audit();
    let mut h = harness().await;
    let upload = start(&mut h, "public/mine.bin", false).await;
    let part = grant(&mut h, &upload, &[(1, MIB)]).await.remove(0);
    let (_, etag) = put_part(&part, body(MIB, 3)).await;
    let other = |upload: &str| upload.to_owned();
    let denied = [
        h.client
            .grant_upload_parts(authed(
                GrantUploadPartsRequest {
                    upload: other(&upload),
                    part_range: Some(PartRange { first: 2, last: 2 }),
                    ..Default::default()
                },
                &OTHER_TOKEN,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        h.client
            .list_uploaded_parts(authed(
                ListUploadedPartsRequest {
                    upload: other(&upload),
                },
                &OTHER_TOKEN,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
        complete(&mut h, &OTHER_TOKEN, &upload, &[(1, &etag)])
            .await
            .map(|_| ())
            .unwrap_err(),
        h.client
            .abort_multipart_upload(authed(
                AbortMultipartUploadRequest {
                    upload: other(&upload),
                },
                &OTHER_TOKEN,
            ))
            .await
            .map(|_| ())
            .unwrap_err(),
    ];
    for status in denied {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // Each attempt on another's upload is a refusal, audited with the upload's key.
    let denials = audit()
        .iter()
        .filter(|l| {
            l.contains("grant denied")
                && l.contains("\"caller\":\"dev:other\"")
                && l.contains("\"scope\":\"public/mine.bin\"")
        })
        .count();
    assert_eq!(denials, 4);
    // The upload is untouched: its owner completes it.
    let done = complete(&mut h, &TOKEN, &upload, &[(1, &etag)])
        .await
        .unwrap();
    assert_eq!(done.size, MIB as u64);
}

#[tokio::test]
async fn a_tampered_or_expired_token_is_invalid_argument() {
    let mut h = harness().await;
    let upload = start(&mut h, "public/t.bin", false).await;
    let mut tampered = upload.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for token in [tampered.as_str(), "", "v1.not.a-token"] {
        let status = h
            .client
            .list_uploaded_parts(authed(
                ListUploadedPartsRequest {
                    upload: token.into(),
                },
                &TOKEN,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{token}");
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "upload"
        );
    }
    let short = h
        .client
        .start_multipart_upload(authed(
            StartMultipartUploadRequest {
                bucket: "demo".into(),
                key: "public/short.bin".into(),
                ttl: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .upload;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let status = h
        .client
        .list_uploaded_parts(authed(
            ListUploadedPartsRequest {
                upload: short.clone(),
            },
            &TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("expired"), "{}", status.message());

    // An expired upload can still be aborted by its caller (a client that gives up
    // late), so that its parts do not stay in the store.
    let upload_id = upload_id_of(&short);
    let part = |n: i32| {
        h.store
            .admin()
            .upload_part()
            .bucket("demo")
            .key("public/short.bin")
            .upload_id(&upload_id)
            .part_number(n)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"part"))
            .send()
    };
    part(1).await.expect("the upload is open at the store");
    let refused = h
        .client
        .abort_multipart_upload(authed(
            AbortMultipartUploadRequest {
                upload: short.clone(),
            },
            &OTHER_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    h.client
        .abort_multipart_upload(authed(
            AbortMultipartUploadRequest { upload: short },
            &TOKEN,
        ))
        .await
        .expect("an expired upload is aborted");
    assert!(
        part(2).await.is_err(),
        "the upload is still open at the store"
    );
}

/// The upload id in a token's claims.
fn upload_id_of(token: &str) -> String {
    support::upload_claims(token)["u"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn after_an_abort_the_store_refuses_parts() {
    let mut h = harness().await;
    let upload = start(&mut h, "public/gone.bin", false).await;
    let part = grant(&mut h, &upload, &[(1, SMALL)]).await.remove(0);
    abort(&mut h, &upload).await.unwrap();
    let (status, _) = put_part(&part, body(SMALL, 1)).await;
    assert!((400..500).contains(&status), "{status}");
    // Completing names an upload that is gone.
    let status = complete(&mut h, &TOKEN, &upload, &[(1, "abc")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

#[tokio::test]
async fn a_create_only_complete_over_an_existing_object_is_refused_and_keeps_it() {
    let mut h = harness().await;
    let upload = start(&mut h, "public/hello.txt", true).await;
    let part = grant(&mut h, &upload, &[(1, MIB)]).await.remove(0);
    let (_, etag) = put_part(&part, body(MIB, 9)).await;
    let status = complete(&mut h, &TOKEN, &upload, &[(1, &etag)])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let object = download(&mut h, "public/hello.txt").await;
    assert_eq!(object.text().await.unwrap(), "hello, storage-grants\n");
}

/// A part that was never uploaded is refused by the service, naming it. (The ETag
/// comparison itself needs a store that lists part ETags, which s3s-fs does not; it is
/// unit-tested in `grant::multipart`.)
#[tokio::test]
async fn a_part_never_uploaded_is_failed_precondition_naming_it() {
    let mut h = harness().await;
    let upload = start(&mut h, "public/etag.bin", false).await;
    let part = grant(&mut h, &upload, &[(1, MIB)]).await.remove(0);
    let (_, etag) = put_part(&part, body(MIB, 2)).await;
    let status = complete(&mut h, &TOKEN, &upload, &[(1, &etag), (2, "abc")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("part 2 was not uploaded"),
        "{}",
        status.message()
    );
    let done = complete(&mut h, &TOKEN, &upload, &[(1, &etag)])
        .await
        .unwrap();
    assert_eq!(done.size, MIB as u64);
}

#[tokio::test]
async fn an_object_over_the_rules_max_size_is_refused_before_it_exists() {
    let mut h = harness().await;
    let upload = start(&mut h, "public/small/big.bin", false).await;
    let parts = grant(&mut h, &upload, &[(1, 5 * MIB), (2, 2 * MIB)]).await;
    let mut named = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let (status, etag) = put_part(part, body([5 * MIB, 2 * MIB][i], 4)).await;
        assert_eq!(status, 200);
        named.push((i as u32 + 1, etag));
    }
    let refs: Vec<(u32, &str)> = named.iter().map(|(n, e)| (*n, e.as_str())).collect();
    let status = complete(&mut h, &TOKEN, &upload, &refs).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("at most 6291456"),
        "{}",
        status.message()
    );
    let object = download(&mut h, "public/small/big.bin").await;
    assert_eq!(object.status(), 404);
    // One part larger than the whole object may be is not signed at all.
    let status = h
        .client
        .grant_upload_parts(authed(
            GrantUploadPartsRequest {
                upload: upload.clone(),
                parts: vec![UploadPartRequest {
                    part_number: 3,
                    content_length: Some(7 * MIB as u64),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("part 3") && status.message().contains("6291456"),
        "{}",
        status.message()
    );
    // A declared size over the limit is refused at the start.
    let status = h
        .client
        .start_multipart_upload(authed(
            StartMultipartUploadRequest {
                bucket: "demo".into(),
                key: "public/small/declared.bin".into(),
                expected_size: Some(7 * MIB as u64),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_part_requests_name_the_field() {
    let mut h = harness().await;
    let upload = start(&mut h, "public/bad.bin", false).await;
    let ask = |parts: Vec<UploadPartRequest>, range: Option<PartRange>| GrantUploadPartsRequest {
        upload: upload.clone(),
        parts,
        part_range: range,
        ..Default::default()
    };
    let pin = |n: u32, len: Option<u64>| UploadPartRequest {
        part_number: n,
        content_length: len,
        ..Default::default()
    };
    let cases = vec![
        (ask(vec![pin(0, None)], None), "parts"),
        (ask(vec![pin(10_001, None)], None), "parts"),
        (ask(vec![pin(1, None), pin(1, None)], None), "parts"),
        (
            ask(vec![pin(1, Some(MIB as u64)), pin(2, None)], None),
            "parts",
        ),
        (
            ask((1..=1001).map(|n| pin(n, None)).collect(), None),
            "parts",
        ),
        (
            ask(
                Vec::new(),
                Some(PartRange {
                    first: 1,
                    last: 1001,
                }),
            ),
            "part_range",
        ),
        (
            ask(Vec::new(), Some(PartRange { first: 0, last: 3 })),
            "part_range",
        ),
        (
            ask(vec![pin(1, None)], Some(PartRange { first: 1, last: 1 })),
            "parts",
        ),
        (ask(Vec::new(), None), "parts"),
    ];
    for (request, field) in cases {
        let status = h
            .client
            .grant_upload_parts(authed(request, &TOKEN))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            field,
            "{}",
            status.message()
        );
    }
    // A range within the limit signs every part.
    let parts = h
        .client
        .grant_upload_parts(authed(
            ask(
                Vec::new(),
                Some(PartRange {
                    first: 1,
                    last: 1000,
                }),
            ),
            &TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .parts;
    assert_eq!(parts.len(), 1000);
    assert_eq!(parts[999].part_number, 1000);
    // Completing with parts out of order, or twice, is refused before the store.
    for parts in [vec![(2, "a"), (1, "b")], vec![(1, "a"), (1, "a")], vec![]] {
        let status = complete(&mut h, &TOKEN, &upload, &parts).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{parts:?}");
    }
}

#[tokio::test]
async fn a_thousand_bad_parts_make_a_bounded_status() {
    // One violation per bad part would make a status of ~100 KB: over the 16 KiB
    // trailers many proxies and clients accept. The first few are listed, then a count.
    let mut h = harness().await;
    let upload = start(&mut h, "public/many.bin", false).await;
    let request = GrantUploadPartsRequest {
        upload: upload.clone(),
        parts: (1..=1000)
            .map(|n| UploadPartRequest {
                part_number: n,
                checksum_sha256: "not-a-checksum".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let status = h
        .client
        .grant_upload_parts(authed(request, &TOKEN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let violations = &details.bad_request().unwrap().field_violations;
    let size: usize = status.message().len()
        + violations
            .iter()
            .map(|v| v.field.len() + v.description.len())
            .sum::<usize>();
    assert!(size < 8 * 1024, "status of {size} bytes");
    assert!(violations.len() < 1000);
    let last = &violations.last().unwrap().description;
    assert!(last.contains("more"), "{last}");
}

/// The demo store behind a fault proxy, and the service with `setup` in front of it.
async fn behind_a_proxy(setup: Setup) -> (Harness, FaultProxy) {
    let store = demo_store().await;
    let proxy = FaultProxy::start(Upstream::Url(store.endpoint.clone())).await;
    let service = Service::start_at(&proxy.endpoint, setup).await;
    let h = Harness {
        client: service.client().await,
        store,
        _service: service,
    };
    (h, proxy)
}

/// An upload of `key` with one part of `SMALL` bytes made of `seed` uploaded: its
/// token, the part's ETag and the data.
async fn one_part_uploaded(h: &mut Harness, key: &str, seed: u8) -> (String, String, Vec<u8>) {
    let upload = start(h, key, false).await;
    let data = body(SMALL, seed);
    let parts = grant(h, &upload, &[(1, SMALL)]).await;
    let (status, etag) = put_part(&parts[0], data.clone()).await;
    assert_eq!(status, 200);
    (upload, etag, data)
}

/// S3 may take minutes to carry out a large completion: its call has
/// `storage.complete_timeout`, not the `storage.call_timeout` of every other call, so a
/// completion slower than that is answered with the object, audited once.
#[tokio::test]
async fn a_completion_slower_than_call_timeout_is_waited_for() {
    let audit = support::capture_audit();
    let mut setup = Setup::new();
    setup.storage_config = "call_timeout = \"1s\"".into();
    let (mut h, proxy) = behind_a_proxy(setup).await;
    let (upload, etag, data) = one_part_uploaded(&mut h, "public/slow/large.bin", 3).await;
    // The completion (a POST) takes 2 s; listing the parts before it does not wait.
    proxy.set(Fault::DelayPosts(Duration::from_secs(2)));
    let started = Instant::now();
    let done = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect("the completion is waited for");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(done.size, SMALL as u64);
    proxy.set(Fault::None);
    let completions = audit()
        .iter()
        .filter(|l| l.contains("public/slow/large.bin") && l.contains("\"ttl_secs\":0"))
        .count();
    assert_eq!(completions, 1);
    let object = download(&mut h, "public/slow/large.bin").await;
    assert_eq!(object.bytes().await.unwrap().as_ref(), data.as_slice());
}

/// Shutdown waits, within `server.shutdown_grace`, for a completion that goes on after
/// its caller was answered: the object is made and audited before the service stops.
#[tokio::test]
async fn shutdown_waits_for_a_completion_its_caller_no_longer_waits_for() {
    let audit = support::capture_audit();
    let (mut h, proxy) =
        behind_a_proxy(Setup::with_config("[server]\nrequest_timeout = \"1s\"\n")).await;
    let (upload, etag, data) = one_part_uploaded(&mut h, "public/slow/drained.bin", 9).await;
    proxy.set(Fault::DelayPosts(Duration::from_millis(2500)));
    let status = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect_err("answered before the store is done");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let Harness {
        _service: service,
        store,
        ..
    } = h;
    service.stop().await.expect("a clean shutdown");
    let completions = audit()
        .iter()
        .filter(|l| l.contains("public/slow/drained.bin") && l.contains("\"ttl_secs\":0"))
        .count();
    assert_eq!(completions, 1, "the completion was carried out and audited");
    let object = std::fs::read(store.root.path().join("demo/public/slow/drained.bin"))
        .expect("the object was made");
    assert_eq!(object, data);
}

/// A completion the store carried out whose answer was lost on the way back (cut
/// short here) is recognised by the object its parts made (S3's multipart ETag and
/// their size): answered with the object and audited once, not "retry" into "the
/// upload no longer exists".
#[tokio::test]
async fn a_completion_whose_answer_was_lost_is_recognised_by_its_object() {
    let audit = support::capture_audit();
    let (mut h, proxy) = behind_a_proxy(Setup::new()).await;
    let (upload, etag, data) = one_part_uploaded(&mut h, "public/lost/answer.bin", 6).await;
    proxy.set(Fault::ForwardThenAnswer(
        "POST",
        200,
        "<CompleteMultipartUploadResult></CompleteMultipartUploadResult>",
    ));
    let done = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect("the completion the store carried out");
    proxy.set(Fault::None);
    assert!(done.etag.trim_matches('"').ends_with("-1"), "{}", done.etag);
    assert_eq!(done.size, SMALL as u64);
    let completions = audit()
        .iter()
        .filter(|l| l.contains("public/lost/answer.bin") && l.contains("\"ttl_secs\":0"))
        .count();
    assert_eq!(completions, 1);
    let object = download(&mut h, "public/lost/answer.bin").await;
    assert_eq!(object.bytes().await.unwrap().as_ref(), data.as_slice());
    // Another upload's parts at another key do not pass for it: the lost answer of a
    // completion the store refused stays a failure.
    let (other, other_etag, _) = one_part_uploaded(&mut h, "public/lost/refused.bin", 7).await;
    proxy.set(Fault::AnswerTo(
        "POST",
        200,
        "<CompleteMultipartUploadResult></CompleteMultipartUploadResult>",
    ));
    let status = complete(&mut h, &TOKEN, &other, &[(1, other_etag.as_str())])
        .await
        .expect_err("the store did not complete it");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// A service whose completion of an upload at `key` waits 30 s on the store (behind the
/// proxy returned), with `server.shutdown_grace` of `grace`, its caller answered
/// already.
async fn a_step_left_running(grace: &str, key: &str) -> (Harness, FaultProxy) {
    let (mut h, proxy) = behind_a_proxy(Setup::with_config(format!(
        "[server]\nrequest_timeout = \"1s\"\nshutdown_grace = \"{grace}\"\n"
    )))
    .await;
    let (upload, etag, _) = one_part_uploaded(&mut h, key, 4).await;
    proxy.set(Fault::DelayPosts(Duration::from_secs(30)));
    let status = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect_err("answered before the store is done");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    (h, proxy)
}

/// A completion whose answer was lost and whose object cannot be looked at now (the
/// store failing) is UNAVAILABLE, and its retry, the upload gone by then, recognises
/// the object (audited once); one whose object this service may not read (no
/// s3:GetObject) says so rather than "start a new one"; and a create-only completion
/// whose retry met the object it made (412) is that completion, not ALREADY_EXISTS.
#[tokio::test]
async fn a_lost_completion_is_recognised_on_retry_or_said_to_be_unknowable() {
    let audit = support::capture_audit();
    let (mut h, proxy) = behind_a_proxy(Setup::new()).await;
    let completions = |key: &str| {
        audit()
            .iter()
            .filter(|l| l.contains(key) && l.contains("\"ttl_secs\":0"))
            .count()
    };
    const CUT: &str = "<CompleteMultipartUploadResult></CompleteMultipartUploadResult>";
    let (upload, etag, data) = one_part_uploaded(&mut h, "public/lost/retried.bin", 8).await;
    proxy.set(Fault::ForwardThenAnswerHeadWith("POST", 200, CUT, 503));
    let status = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect_err("the object could not be looked at");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(completions("public/lost/retried.bin"), 0);
    // The retry's listing gets what S3 answers for a completed upload (s3s-fs lists
    // none, as for an upload without parts, which no object may pass for).
    proxy.set(Fault::AnswerTo(
        "GET",
        404,
        "<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.\
         </Message></Error>",
    ));
    let done = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect("the retry recognises the object");
    proxy.set(Fault::None);
    assert!(done.etag.trim_matches('"').ends_with("-1"), "{}", done.etag);
    assert_eq!(done.size, SMALL as u64);
    assert_eq!(completions("public/lost/retried.bin"), 1);
    let object = download(&mut h, "public/lost/retried.bin").await;
    assert_eq!(object.bytes().await.unwrap().as_ref(), data.as_slice());

    let (upload, etag, _) = one_part_uploaded(&mut h, "public/lost/unseen.bin", 9).await;
    proxy.set(Fault::ForwardThenAnswerHeadWith("POST", 200, CUT, 403));
    let status = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect_err("the object may not be looked at");
    proxy.set(Fault::None);
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("cannot tell which")
            && status.message().contains("s3:GetObject")
            && status.message().contains("public/lost/unseen.bin"),
        "{status:?}"
    );

    let upload = start(&mut h, "public/lost/create-only.bin", true).await;
    let data = body(SMALL, 10);
    let parts = grant(&mut h, &upload, &[(1, SMALL)]).await;
    let (_, etag) = put_part(&parts[0], data.clone()).await;
    proxy.set(Fault::ForwardThenAnswer(
        "POST",
        412,
        "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions \
         you specified did not hold</Message></Error>",
    ));
    let done = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect("the completion whose retry met its own object");
    proxy.set(Fault::None);
    assert_eq!(done.size, SMALL as u64);
    assert_eq!(completions("public/lost/create-only.bin"), 1);
}

/// A step still running when `server.shutdown_grace` is over is abandoned then, not a
/// second grace later: the steps get what is left of the one grace after the calls'
/// drain.
#[tokio::test]
async fn shutdown_abandons_a_step_at_the_end_of_its_one_grace() {
    let (h, _proxy) = a_step_left_running("2s", "public/slow/abandoned.bin").await;
    let started = Instant::now();
    h._service.stop().await.expect("a clean shutdown");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "stopped after {took:?}, with a 2 s grace"
    );
}

/// A second stop signal ends the drain at once, whatever is left of
/// `server.shutdown_grace`: a step still running is abandoned then.
#[tokio::test]
async fn a_second_stop_signal_cuts_the_drain_short() {
    let (h, _proxy) = a_step_left_running("60s", "public/slow/cut.bin").await;
    let started = Instant::now();
    h._service
        .stop_twice(Duration::from_millis(500))
        .await
        .expect("a clean shutdown");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "stopped after {took:?}, the second signal 0.5 s after the first, with a 60 s grace"
    );
}

/// A success from the store that is not a whole answer (a body cut short, a proxy's)
/// is UNAVAILABLE with a retry hint: a completion without the object's ETag is not
/// taken for one (nothing audited, nothing recorded), nor a listing that does not name
/// its upload for an upload without parts, nor an abort after which the upload still
/// lists its parts for done; the retry, once the store answers, works.
#[tokio::test]
async fn a_store_answer_cut_short_is_unavailable_never_a_completion() {
    let audit = support::capture_audit();
    let (mut h, proxy) = behind_a_proxy(Setup::new()).await;
    let (upload, etag, data) = one_part_uploaded(&mut h, "public/cut/short.bin", 5).await;
    let unavailable = |status: tonic::Status| {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.get_details_retry_info().is_some(), "{status:?}");
        assert!(
            status.message().contains("no usable answer from the store"),
            "{status:?}"
        );
    };
    for cut in [
        "<?xml version=\"1.0\"?>\n<CompleteMultipartUploadResult><Location>http://x/demo/k</Location><Bucket>demo</Bu",
        "<CompleteMultipartUploadResult></CompleteMultipartUploadResult>",
        // Whole documents that do not name this completion: a blank ETag, another key.
        "<CompleteMultipartUploadResult><Bucket>demo</Bucket><Key>public/cut/short.bin</Key>\
         <ETag>   </ETag></CompleteMultipartUploadResult>",
        "<CompleteMultipartUploadResult><Bucket>demo</Bucket><Key>public/other.bin</Key>\
         <ETag>\"0123456789abcdef0123456789abcdef-1\"</ETag></CompleteMultipartUploadResult>",
    ] {
        proxy.set(Fault::AnswerTo("POST", 200, cut));
        unavailable(
            complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
                .await
                .expect_err("no completion in that answer"),
        );
    }
    // A listing cut short, and one whose next page would begin where it began.
    let upload_id = support::upload_claims(&upload)["u"]
        .as_str()
        .unwrap()
        .to_owned();
    let stuck: &'static str = Box::leak(
        format!(
            "<ListPartsResult><Bucket>demo</Bucket><Key>public/cut/short.bin</Key>\
             <UploadId>{upload_id}</UploadId><IsTruncated>true</IsTruncated>\
             <NextPartNumberMarker>0</NextPartNumberMarker></ListPartsResult>"
        )
        .into_boxed_str(),
    );
    // Parts a caller would resume from or complete with wrongly: one listed twice, one
    // out of range, a negative size.
    let listing_of = |parts: &str| -> &'static str {
        Box::leak(
            format!(
                "<ListPartsResult><Bucket>demo</Bucket><Key>public/cut/short.bin</Key>\
                 <UploadId>{upload_id}</UploadId><IsTruncated>false</IsTruncated>{parts}\
                 </ListPartsResult>"
            )
            .into_boxed_str(),
        )
    };
    let part = |n: i64, size: i64| {
        format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>\"{n:032x}\"</ETag><Size>{size}</Size></Part>"
        )
    };
    for listing in [
        "<ListPartsResult><Bucket>demo</Bucket><Key>public/cut/short.bin</Key>",
        stuck,
        listing_of(&format!("{}{}{}", part(1, 5), part(2, 5), part(1, 5))),
        listing_of(&part(10_001, 5)),
        listing_of(&part(1, -1000)),
    ] {
        proxy.set(Fault::Answer(200, listing));
        unavailable(
            h.client
                .list_uploaded_parts(authed(
                    ListUploadedPartsRequest {
                        upload: upload.clone(),
                    },
                    &TOKEN,
                ))
                .await
                .expect_err("no listing in that answer"),
        );
    }
    // An abort answered by a proxy's page is not taken for done: the upload still
    // lists its part.
    proxy.set(Fault::AnswerTo(
        "DELETE",
        200,
        "<html><body>Sign in to continue</body></html>",
    ));
    let status = abort(&mut h, &upload)
        .await
        .expect_err("the upload was not aborted");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("has not carried it out"),
        "{status:?}"
    );
    proxy.set(Fault::None);
    assert!(
        !audit()
            .iter()
            .any(|l| l.contains("public/cut/short.bin") && l.contains("\"ttl_secs\":0")),
        "nothing completed was audited"
    );
    let done = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect("the retry completes");
    assert!(!done.etag.is_empty());
    let object = download(&mut h, "public/cut/short.bin").await;
    assert_eq!(object.bytes().await.unwrap().as_ref(), data.as_slice());
    // An abort the store carried out whose confirming listing fails says so.
    let (other, _, _) = one_part_uploaded(&mut h, "public/cut/unconfirmed.bin", 6).await;
    proxy.set(Fault::AnswerTo("GET", 503, ""));
    let status = abort(&mut h, &other)
        .await
        .expect_err("the abort was not confirmed");
    proxy.set(Fault::None);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
    assert!(
        status
            .message()
            .contains("answered the abort as done, and confirming it failed"),
        "{status:?}"
    );
}

/// A store slower than the call's deadline (`server.request_timeout` 1 s): each step is
/// answered UNAVAILABLE with a retry hint before the deadline and goes on at the store.
/// A start nobody waits for any more is aborted (no upload is left that no token can
/// reach); a completion is carried out, and the complete retried after it answers the
/// completed object, which downloads whole.
#[tokio::test]
async fn steps_on_a_store_slower_than_the_deadline_answer_in_time_and_go_on() {
    // This test's process's audit events, to see the late completion's.
    let audit = support::capture_audit();
    let completions = || {
        audit()
            .iter()
            .filter(|l| l.contains("public/slow/done.bin") && l.contains("\"ttl_secs\":0"))
            .count()
    };
    let (mut h, proxy) =
        behind_a_proxy(Setup::with_config("[server]\nrequest_timeout = \"1s\"\n")).await;
    let in_progress = |h: &Harness| {
        std::fs::read_dir(h.store.root.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().contains(".upload-")
            })
            .count()
    };
    let unavailable_in_time = |status: tonic::Status, took: Duration| {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.get_details_retry_info().is_some(), "{status:?}");
        assert!(
            status.message().contains("the store had not answered"),
            "{status:?}"
        );
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
    };

    proxy.set(Fault::Delay(Duration::from_millis(1500)));
    let started = Instant::now();
    let status = h
        .client
        .start_multipart_upload(authed(
            StartMultipartUploadRequest {
                bucket: "demo".into(),
                key: "public/slow/orphan.bin".into(),
                ..Default::default()
            },
            &TOKEN,
        ))
        .await
        .expect_err("the store is slower than the deadline");
    unavailable_in_time(status, started.elapsed());
    proxy.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        in_progress(&h),
        0,
        "the upload nobody holds a token for was left"
    );

    let upload = start(&mut h, "public/slow/done.bin", false).await;
    // The count above sees an upload in progress (s3s-fs keeps `.upload-<id>` files).
    assert!(in_progress(&h) > 0);
    let data = body(SMALL, 7);
    let parts = grant(&mut h, &upload, &[(1, SMALL)]).await;
    let (status, etag) = put_part(&parts[0], data.clone()).await;
    assert_eq!(status, 200);
    proxy.set(Fault::Delay(Duration::from_millis(1500)));
    let started = Instant::now();
    let status = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect_err("the store is slower than the deadline");
    unavailable_in_time(status, started.elapsed());
    assert_eq!(completions(), 0);
    proxy.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        completions(),
        1,
        "the completion carried out after the answer"
    );
    let done = complete(&mut h, &TOKEN, &upload, &[(1, etag.as_str())])
        .await
        .expect("the retried complete gets what the completion came to");
    assert_eq!(done.size, SMALL as u64);
    assert!(done.etag.trim_matches('"').ends_with("-1"), "{}", done.etag);
    assert_eq!(completions(), 1, "one completion, one audit event");
    let object = download(&mut h, "public/slow/done.bin").await;
    assert_eq!(object.status(), 200);
    assert_eq!(object.bytes().await.unwrap().as_ref(), data.as_slice());
    // Other parts than the completed ones do not pass for it.
    let other = complete(
        &mut h,
        &TOKEN,
        &upload,
        &[(1, "0123456789abcdef0123456789abcdef")],
    )
    .await
    .expect_err("not this completion");
    assert_eq!(other.code(), Code::FailedPrecondition, "{other:?}");
    assert!(other.message().contains("with other parts"), "{other:?}");
    // Nor does another upload that holds no part, naming the object's parts.
    let empty = start(&mut h, "public/slow/done.bin", true).await;
    let status = complete(&mut h, &TOKEN, &empty, &[(1, etag.as_str())])
        .await
        .expect_err("this upload made nothing");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // An abort after the completion: the object stays, and the answer says so (an
    // abort would not discard it).
    let status = abort(&mut h, &upload)
        .await
        .expect_err("aborting an upload that was completed");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("was completed into public/slow/done.bin"),
        "{status:?}"
    );
    assert_eq!(download(&mut h, "public/slow/done.bin").await.status(), 200);
    // The empty upload's abort is its own: done.
    abort(&mut h, &empty)
        .await
        .expect("aborting the empty upload");
}
