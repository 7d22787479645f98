//! The multipart RPCs: proto ⇄ pipeline.

use crate::caller::Caller;
use crate::grant::{
    CompleteRequest, PartsRequest, Pipeline, RawCompletedPart, RawPart, RawStart, StartRequest,
    UploadStep, Violations,
};
use crate::proto;

use super::{Error, requested_ttl, timestamp};

/// `StartMultipartUpload`, validated, or every bad field at once.
pub(crate) fn parse_start(
    request: &proto::StartMultipartUploadRequest,
) -> Result<StartRequest, Error> {
    let mut v = Violations::default();
    let checksum_sha256 = match proto::ChecksumAlgorithm::try_from(request.checksum_algorithm) {
        Ok(proto::ChecksumAlgorithm::Unspecified) => false,
        Ok(proto::ChecksumAlgorithm::Sha256) => true,
        Err(_) => {
            v.add(
                "checksum_algorithm",
                "must be CHECKSUM_ALGORITHM_SHA256 or unset",
            );
            false
        }
    };
    let parsed = StartRequest::parse(
        &mut v,
        RawStart {
            bucket: &request.bucket,
            key: &request.key,
            content_type: &request.content_type,
            metadata: request
                .metadata
                .iter()
                .map(|(k, value)| (k.as_str(), value.as_str())),
            checksum_sha256,
            create_only: request.create_only,
            expected_size: request.expected_size,
        },
        |v| requested_ttl(v, "ttl", request.ttl.as_ref()),
    );
    Ok(v.finish(parsed)?)
}

/// `StartMultipartUpload`.
pub(super) async fn start(
    pipeline: &Pipeline,
    caller: &Caller,
    request: &proto::StartMultipartUploadRequest,
    deadline: std::time::Duration,
) -> Result<proto::StartMultipartUploadResponse, Error> {
    let parsed = parse_start(request)?;
    let started = pipeline.start_multipart(caller, &parsed, deadline).await?;
    Ok(proto::StartMultipartUploadResponse {
        upload: started.upload,
        upload_id: started.upload_id,
        expires_at: Some(timestamp(started.expires_at)),
        grant_id: started.grant_id,
    })
}

/// `GrantUploadParts`, validated, or every bad field at once.
pub(crate) fn parse_parts(request: &proto::GrantUploadPartsRequest) -> Result<PartsRequest, Error> {
    let mut v = Violations::default();
    let range: Vec<RawPart<'_>>;
    let parts: Vec<RawPart<'_>> = match (&request.part_range, request.parts.is_empty()) {
        (Some(r), true) => {
            // Bounded before it is expanded: a range of 4 billion parts is one violation,
            // not 4 billion values.
            let count = u64::from(r.last).saturating_sub(u64::from(r.first)) + 1;
            if r.first == 0 || r.first > r.last || count > crate::upload::MAX_PARTS_PER_CALL as u64
            {
                v.add(
                    "part_range",
                    format!(
                        "must be first..=last within 1..=10000, first <= last, at most {} parts",
                        crate::upload::MAX_PARTS_PER_CALL
                    ),
                );
                Vec::new()
            } else {
                range = (r.first..=r.last)
                    .map(|n| RawPart {
                        part_number: u64::from(n),
                        ..RawPart::default()
                    })
                    .collect();
                range
            }
        }
        (None, false) => request
            .parts
            .iter()
            .map(|p| RawPart {
                part_number: u64::from(p.part_number),
                content_length: p.content_length,
                checksum_sha256: &p.checksum_sha256,
            })
            .collect(),
        _ => {
            v.add("parts", "send exactly one of parts and part_range");
            Vec::new()
        }
    };
    let field = if request.part_range.is_some() {
        "part_range"
    } else {
        "parts"
    };
    let parsed = if parts.is_empty() {
        let _ = requested_ttl(&mut v, "ttl", request.ttl.as_ref());
        None
    } else {
        PartsRequest::parse(&mut v, field, parts.into_iter(), |v| {
            requested_ttl(v, "ttl", request.ttl.as_ref())
        })
    };
    Ok(v.finish(parsed)?)
}

/// `GrantUploadParts`.
pub(super) fn grant_parts(
    pipeline: &Pipeline,
    caller: &Caller,
    request: &proto::GrantUploadPartsRequest,
) -> Result<proto::GrantUploadPartsResponse, Error> {
    let parsed = parse_parts(request)?;
    let upload = pipeline.open_upload(caller, &request.upload, UploadStep::Continue)?;
    let signed = pipeline.grant_parts(caller, &upload, &parsed)?;
    Ok(proto::GrantUploadPartsResponse {
        parts: signed
            .parts
            .into_iter()
            .map(|p| proto::UploadPartGrant {
                part_number: u32::from(p.part_number),
                url: p.request.url.into_exposed(),
                method: p.request.method.to_owned(),
                headers: p.request.headers.into_iter().collect(),
            })
            .collect(),
        expires_at: Some(timestamp(signed.expires_at)),
        grant_id: signed.grant_id,
    })
}

/// `ListUploadedParts`.
pub(super) async fn list(
    pipeline: &Pipeline,
    caller: &Caller,
    request: &proto::ListUploadedPartsRequest,
    deadline: std::time::Duration,
) -> Result<proto::ListUploadedPartsResponse, Error> {
    let upload = pipeline.open_upload(caller, &request.upload, UploadStep::Continue)?;
    let parts = pipeline.list_parts(caller, &upload, deadline).await?;
    Ok(proto::ListUploadedPartsResponse {
        parts: parts
            .into_iter()
            .map(|p| proto::UploadedPart {
                part_number: u32::from(p.part_number),
                size: p.size,
                etag: p.etag,
                checksum_sha256: p.checksum_sha256.unwrap_or_default(),
            })
            .collect(),
    })
}

/// `CompleteMultipartUpload`, validated, or every bad field at once.
pub(crate) fn parse_complete(
    request: &proto::CompleteMultipartUploadRequest,
) -> Result<CompleteRequest, Error> {
    let mut v = Violations::default();
    let parsed = CompleteRequest::parse(
        &mut v,
        "parts",
        request.parts.iter().map(|p| RawCompletedPart {
            part_number: u64::from(p.part_number),
            etag: &p.etag,
            checksum_sha256: &p.checksum_sha256,
        }),
    );
    Ok(v.finish(parsed)?)
}

/// `CompleteMultipartUpload`.
pub(super) async fn complete(
    pipeline: &Pipeline,
    caller: &Caller,
    request: &proto::CompleteMultipartUploadRequest,
    deadline: std::time::Duration,
) -> Result<proto::CompleteMultipartUploadResponse, Error> {
    let parsed = parse_complete(request)?;
    let upload = pipeline.open_upload(caller, &request.upload, UploadStep::Continue)?;
    let done = pipeline
        .complete_multipart(caller, &upload, &parsed, deadline)
        .await?;
    Ok(proto::CompleteMultipartUploadResponse {
        etag: done.etag,
        size: done.size,
        bucket: done.bucket.into(),
        key: done.key.as_str().to_owned(),
        grant_id: done.grant_id,
    })
}

/// `AbortMultipartUpload`.
pub(super) async fn abort(
    pipeline: &Pipeline,
    caller: &Caller,
    request: &proto::AbortMultipartUploadRequest,
    deadline: std::time::Duration,
) -> Result<proto::AbortMultipartUploadResponse, Error> {
    let upload = pipeline.open_upload(caller, &request.upload, UploadStep::Abort)?;
    pipeline.abort_multipart(caller, &upload, deadline).await?;
    Ok(proto::AbortMultipartUploadResponse {})
}
