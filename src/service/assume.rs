//! `AssumeScoped`: proto ⇄ pipeline.

use crate::caller::Caller;
use crate::grant::{Access, AssumeRequest, Pipeline, Violations};
use crate::proto;

use super::{Error, requested_ttl, timestamp};

/// Longest `min_remaining` a caller may ask: asking more than any session can have
/// would make every call a new STS session.
const MAX_MIN_REMAINING: std::time::Duration = std::time::Duration::from_secs(3600);

/// The validated request, or every bad field at once. It takes the decoded bucket and
/// prefix rather than copying them.
pub(crate) fn parse(request: proto::AssumeScopedRequest) -> Result<AssumeRequest, Error> {
    let mut v = Violations::default();
    let parsed = AssumeRequest::parse(
        &mut v,
        request.bucket,
        request.prefix,
        |v| access(v, request.access, request.list),
        |v| requested_ttl(v, "duration", request.duration.as_ref()),
    );
    let min_left = requested_ttl(&mut v, "min_remaining", request.min_remaining.as_ref())
        .map(Option::unwrap_or_default);
    if min_left.is_some_and(|m| m > MAX_MIN_REMAINING) {
        v.add("min_remaining", "must be at most 1 hour");
    }
    let parsed = parsed
        .zip(min_left)
        .map(|(request, min_left)| AssumeRequest {
            min_left,
            ..request
        });
    Ok(v.finish(parsed)?)
}

/// Parses the request, runs the pipeline within the call's `deadline`, and builds the
/// response.
pub(super) async fn assume_scoped(
    pipeline: &Pipeline,
    caller: &Caller,
    request: proto::AssumeScopedRequest,
    deadline: std::time::Duration,
) -> Result<proto::AssumeScopedResponse, Error> {
    let parsed = parse(request)?;
    let grant = pipeline.assume(caller, parsed, deadline).await?;
    let credentials = &grant.credentials;
    Ok(proto::AssumeScopedResponse {
        credentials: Some(proto::TemporaryCredentials {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.expose().clone(),
            session_token: credentials.session_token.expose().clone(),
            expires_at: Some(timestamp(credentials.expires_at)),
        }),
        bucket: grant.bucket.into(),
        prefix: grant.prefix.into(),
        region: grant.region,
        endpoint: grant.endpoint,
        force_path_style: grant.force_path_style,
        grant_id: grant.grant_id,
        account_id: grant.account_id,
    })
}

/// The access asked for, or a violation when it names neither read nor write.
fn access(v: &mut Violations, access: i32, list: bool) -> Option<Access> {
    let (read, write) = match proto::Access::try_from(access) {
        Ok(proto::Access::Read) => (true, false),
        Ok(proto::Access::Write) => (false, true),
        Ok(proto::Access::ReadWrite) => (true, true),
        Ok(proto::Access::Unspecified) | Err(_) => {
            v.add(
                "access",
                "must be ACCESS_READ, ACCESS_WRITE or ACCESS_READ_WRITE",
            );
            return None;
        }
    };
    Some(Access { read, write, list })
}
