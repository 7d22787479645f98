//! `GrantWrite`: proto ⇄ pipeline.

use crate::caller::Caller;
use crate::grant::{Pipeline, RawSize, RawWrite, Violations, WriteRequest};
use crate::proto;
use crate::proto::grant_write_request::Size;

use super::{Error, requested_ttl, timestamp};

/// The validated request, or every bad field at once. It takes the decoded strings
/// rather than copying them: a write with every pin carries eight.
pub(crate) fn parse(request: proto::GrantWriteRequest) -> Result<WriteRequest, Error> {
    let mut v = Violations::default();
    let size = match &request.size {
        None => RawSize::Any,
        Some(Size::ContentLength(n)) => RawSize::Exact(*n),
        Some(Size::ContentLengthRange(range)) => RawSize::Range {
            min: range.min_bytes,
            max: range.max_bytes,
        },
    };
    let parsed = WriteRequest::parse(
        &mut v,
        RawWrite {
            bucket: request.bucket,
            key: request.key,
            content_type: request.content_type,
            checksum_sha256: request.checksum_sha256,
            metadata: request.metadata,
            size,
            create_only: request.create_only,
        },
        |v| requested_ttl(v, "ttl", request.ttl.as_ref()),
    );
    Ok(v.finish(parsed)?)
}

/// Parses the request, runs the pipeline, and builds the response.
pub(super) fn grant_write(
    pipeline: &Pipeline,
    caller: &Caller,
    request: proto::GrantWriteRequest,
) -> Result<proto::GrantWriteResponse, Error> {
    let parsed = parse(request)?;
    let grant = pipeline.write(caller, &parsed)?;
    Ok(proto::GrantWriteResponse {
        url: grant.url.into_exposed(),
        method: grant.method.to_owned(),
        headers: grant.headers.into_iter().collect(),
        form_fields: grant.form_fields.into_iter().collect(),
        file_field: grant.file_field.to_owned(),
        expires_at: Some(timestamp(grant.expires_at)),
        grant_id: grant.grant_id,
    })
}
