//! `request`: a gRPC request, from its bytes to what the pipeline is given.

use std::time::Duration;

use prost::Message;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::core::text::MAX_MESSAGE;
use crate::grant::Upload;
use crate::proto::{self, grant_write_request::Size};
use crate::scope::MAX_UPLOAD_BYTES;
use crate::service::{self, assume, multipart, read, write};

/// What a status may take of the trailers; past 16 KiB in all, common proxies and
/// clients break the stream.
const MAX_TRAILERS: usize = 16 * 1024;

/// Decodes the input as one of the request messages (the first byte picks which:
/// GrantRead, GrantWrite, AssumeScoped, StartMultipartUpload, GrantUploadParts,
/// CompleteMultipartUpload) and validates it as the gRPC service does.
///
/// Invariants: an accepted request carries exactly the values sent (a TTL of at
/// least one second; a PUT length within 5 GiB; a POST range with neither
/// `create_only` nor `${filename}`; access that reads or writes); a refused one
/// becomes an `INVALID_ARGUMENT` whose message is bounded and whose details (a
/// `BadRequest` listing at most 21 violations) fit in the trailers with it.
pub fn request(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let refusal = match selector % 6 {
        0 => decoded(bytes).and_then(|r: proto::GrantReadRequest| {
            read::parse(r.clone()).map(|p| read_ok(&r, &p)).err()
        }),
        1 => decoded(bytes).and_then(|r: proto::GrantWriteRequest| {
            write::parse(r.clone()).map(|p| write_ok(&r, &p)).err()
        }),
        2 => decoded(bytes).and_then(|r: proto::AssumeScopedRequest| {
            assume::parse(r.clone()).map(|p| assume_ok(&r, &p)).err()
        }),
        3 => decoded(bytes).and_then(|r| multipart::parse_start(&r).err()),
        4 => decoded(bytes).and_then(|r| multipart::parse_parts(&r).err()),
        _ => decoded(bytes).and_then(|r| multipart::parse_complete(&r).err()),
    };
    if let Some(error) = refusal {
        refused(error);
    }
}

/// The message in `bytes`, if it decodes.
fn decoded<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

fn read_ok(sent: &proto::GrantReadRequest, got: &crate::grant::ReadRequest) {
    assert_eq!(got.bucket.as_str(), sent.bucket);
    assert_eq!(got.key.as_str(), sent.key);
    assert_eq!(
        got.version_id.as_ref().map_or("", |v| v.as_str()),
        sent.version_id
    );
    let content_type = got.response_content_type.as_ref();
    assert_eq!(
        content_type.map_or("", |t| t.as_str()),
        sent.response_content_type
    );
    let disposition = got.response_content_disposition.as_ref();
    assert_eq!(
        disposition.map_or("", |d| d.as_str()),
        sent.response_content_disposition
    );
    if content_type.is_some() {
        assert!(got.overrides_rendering());
    }
    if content_type.is_none() && disposition.is_none() {
        assert!(!got.overrides_rendering());
    }
    ttl(sent.ttl.as_ref(), got.ttl);
}

fn write_ok(sent: &proto::GrantWriteRequest, got: &crate::grant::WriteRequest) {
    assert_eq!(got.bucket.as_str(), sent.bucket);
    assert_eq!(got.key.as_str(), sent.key);
    assert_eq!(
        got.content_type.as_ref().map_or("", |t| t.as_str()),
        sent.content_type
    );
    assert_eq!(
        got.checksum_sha256.as_ref().map_or("", |c| c.as_str()),
        sent.checksum_sha256
    );
    let metadata = got.metadata.entries();
    assert_eq!(metadata.len(), sent.metadata.len());
    for (name, value) in metadata {
        assert_eq!(sent.metadata.get(name), Some(value));
    }
    assert_eq!(got.create_only, sent.create_only);
    match (&sent.size, got.upload) {
        (None, Upload::Put(None)) => {}
        (Some(Size::ContentLength(n)), Upload::Put(Some(m))) => {
            assert_eq!(*n, m);
            assert!(m <= MAX_UPLOAD_BYTES);
        }
        (Some(Size::ContentLengthRange(r)), Upload::Post(range)) => {
            assert_eq!((r.min_bytes, r.max_bytes), (range.min(), range.max()));
            assert!(range.min() <= range.max() && range.max() <= MAX_UPLOAD_BYTES);
            assert!(!sent.create_only, "a POST form cannot be create-only");
            assert!(!sent.key.contains("${filename}"), "S3 rewrites that key");
        }
        (size, upload) => panic!("{size:?} became {upload:?}"),
    }
    ttl(sent.ttl.as_ref(), got.ttl);
}

fn assume_ok(sent: &proto::AssumeScopedRequest, got: &crate::grant::AssumeRequest) {
    assert_eq!(got.bucket.as_str(), sent.bucket);
    assert_eq!(got.prefix.as_str(), sent.prefix);
    let access = match proto::Access::try_from(sent.access) {
        Ok(proto::Access::Read) => (true, false),
        Ok(proto::Access::Write) => (false, true),
        Ok(proto::Access::ReadWrite) => (true, true),
        other => panic!("access {other:?} was accepted"),
    };
    assert_eq!((got.access.read, got.access.write), access);
    assert_eq!(got.access.list, sent.list);
    assert!(got.min_left <= Duration::from_secs(3600));
    ttl(sent.duration.as_ref(), got.duration);
}

/// A lifetime is taken as sent, and is at least one second.
fn ttl(sent: Option<&prost_types::Duration>, got: Option<Duration>) {
    match (sent, got) {
        (None, None) => {}
        (Some(d), Some(t)) => {
            assert!(t >= Duration::from_secs(1));
            assert_eq!(i64::try_from(t.as_secs()).ok(), Some(d.seconds));
            assert_eq!(i64::from(t.subsec_nanos()), i64::from(d.nanos));
        }
        (sent, got) => panic!("ttl {sent:?} became {got:?}"),
    }
}

/// A refusal as the caller receives it.
fn refused(error: service::Error) {
    let status = Status::from(error);
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    let message = status.message();
    assert!(message.len() <= MAX_MESSAGE + 16, "{} bytes", message.len());
    // `grpc-status-details-bin` carries the details in base64.
    let details = status.details().len().div_ceil(3) * 4;
    assert!(
        message.len() + details < MAX_TRAILERS,
        "a refusal of {} + {details} bytes breaks the trailers",
        message.len()
    );
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a BadRequest")
        .field_violations;
    assert!((1..=21).contains(&violations.len()), "{}", violations.len());
}
