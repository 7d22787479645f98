//! `GrantRead`: proto ⇄ pipeline.

use crate::caller::Caller;
use crate::grant::{Pipeline, RawRead, ReadRequest, Violations};
use crate::proto;

use super::{Error, requested_ttl, timestamp};

/// The validated request, or every bad field at once. It takes the decoded strings
/// rather than copying them.
pub(crate) fn parse(request: proto::GrantReadRequest) -> Result<ReadRequest, Error> {
    let mut v = Violations::default();
    let parsed = ReadRequest::parse(
        &mut v,
        RawRead {
            bucket: request.bucket,
            key: request.key,
            version_id: request.version_id,
            response_content_type: request.response_content_type,
            response_content_disposition: request.response_content_disposition,
        },
        |v| requested_ttl(v, "ttl", request.ttl.as_ref()),
    );
    Ok(v.finish(parsed)?)
}

/// Parses the request, runs the pipeline, and builds the response.
pub(super) fn grant_read(
    pipeline: &Pipeline,
    caller: &Caller,
    request: proto::GrantReadRequest,
) -> Result<proto::GrantReadResponse, Error> {
    let parsed = parse(request)?;
    let grant = pipeline.read(caller, &parsed)?;
    Ok(proto::GrantReadResponse {
        url: grant.url.into_exposed(),
        method: grant.method.to_owned(),
        headers: grant.headers.into_iter().collect(),
        expires_at: Some(timestamp(grant.expires_at)),
        grant_id: grant.grant_id,
    })
}
