//! The gRPC front door: `storagegrants.v1.GrantService`, one file per RPC, and the one
//! place where errors become gRPC statuses.
//!
//! A handler turns its protobuf request into the pipeline's validated request
//! (collecting every bad field into one `google.rpc.BadRequest`), calls the one grant
//! pipeline (`grant`), and turns the grant into its response. Authentication happened
//! before (the interceptor in `server` puts a [`Caller`] in the request extensions);
//! transport concerns live in `server`.

pub(crate) mod assume;
pub(crate) mod multipart;
pub(crate) mod read;
pub(crate) mod write;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::caller::Caller;
use crate::core::text;
use crate::grant::{self, Pipeline, Violations};
use crate::identity;
use crate::proto;

/// Everything that can go wrong in a call, each mapped to its gRPC code once, in
/// `From<Error> for Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No verifiable identity.
    #[error(transparent)]
    Unauthenticated(#[from] identity::Error),
    /// The pipeline refused the grant.
    #[error(transparent)]
    Grant(#[from] grant::Error),
}

impl From<Error> for Status {
    /// Every message is bounded ([`text::MAX_MESSAGE`]): a status travels in trailers,
    /// which break the stream past 16 KiB.
    fn from(error: Error) -> Status {
        let status = status_of(error);
        let message = text::bounded(status.message(), text::MAX_MESSAGE);
        if message.len() == status.message().len() {
            return status;
        }
        Status::with_details(
            status.code(),
            message.into_owned(),
            status.details().to_vec().into(),
        )
    }
}

/// The status for `error`, before its message is bounded.
fn status_of(error: Error) -> Status {
    let grant = match error {
        Error::Unauthenticated(e) => return Status::unauthenticated(e.to_string()),
        Error::Grant(e) => e,
    };
    if let Some(decision) = grant.decision() {
        tracing::Span::current().record("decision", decision);
    }
    match &grant {
        grant::Error::InvalidArgument(violations) => {
            let mut details = ErrorDetails::new();
            for v in violations {
                details.add_bad_request_violation(v.field, v.description.clone());
            }
            Status::with_error_details(Code::InvalidArgument, grant.to_string(), details)
        }
        grant::Error::Denied(_) => Status::permission_denied(grant.to_string()),
        grant::Error::Credentials(_) | grant::Error::Expiry(_) => {
            tracing::error!(error = %grant, "cannot sign: service credentials unavailable");
            Status::unavailable(format!("{grant}; retry later"))
        }
        grant::Error::NotConfigured(_) | grant::Error::FailedPrecondition(_) => {
            Status::failed_precondition(grant.to_string())
        }
        grant::Error::OtherCaller
        | grant::Error::OverridesNotAllowed { .. }
        | grant::Error::ContentTypeNotAllowed { .. } => {
            Status::permission_denied(grant.to_string())
        }
        grant::Error::AlreadyExists(_) => Status::already_exists(grant.to_string()),
        grant::Error::Store(e) if e.is_transient() => {
            tracing::warn!(error = %crate::core::text::Chain(e), "store unavailable");
            Status::with_error_details(
                Code::Unavailable,
                format!("{e}; retry later"),
                ErrorDetails::with_retry_info(Some(STS_RETRY_AFTER)),
            )
        }
        grant::Error::Store(e) => {
            tracing::error!(error = ?e, "the store refused a multipart call");
            Status::internal("the store refused the request; the service's operator's logs say why")
        }
        grant::Error::OverBudget(after, _)
        | grant::Error::Sts(crate::sts::Error::OverBudget(after)) => {
            crate::metrics::over_budget();
            Status::with_error_details(
                Code::ResourceExhausted,
                grant.to_string(),
                ErrorDetails::with_retry_info(Some(*after)),
            )
        }
        grant::Error::Sts(crate::sts::Error::Busy) => Status::with_error_details(
            Code::ResourceExhausted,
            grant.to_string(),
            ErrorDetails::with_retry_info(Some(STS_RETRY_AFTER)),
        ),
        // STS's failures are logged by the STS call, once (`sts::Broker`).
        grant::Error::Sts(e) if e.is_transient() => {
            let details = ErrorDetails::with_retry_info(Some(STS_RETRY_AFTER));
            Status::with_error_details(
                Code::Unavailable,
                format!("{e}; retry in a few seconds"),
                details,
            )
        }
        grant::Error::Sts(_) => {
            // The code and message from STS are for the operator (a trust policy,
            // a missing permission), in the log; not for the caller.
            Status::internal(
                "the service could not obtain scoped credentials; its operator's logs say why",
            )
        }
    }
}

impl From<grant::Error> for Status {
    fn from(error: grant::Error) -> Status {
        Status::from(Error::Grant(error))
    }
}

/// How long a caller should wait before retrying after STS was unavailable.
const STS_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Reads a requested lifetime into `v`: `Some(None)` when unset (the pipeline's
/// default applies), `None` when bad; it must be a valid, positive duration of at
/// least one second.
fn requested_ttl(
    v: &mut Violations,
    field: &'static str,
    ttl: Option<&prost_types::Duration>,
) -> Option<Option<Duration>> {
    v.check(field, parse_ttl(ttl))
}

fn parse_ttl(ttl: Option<&prost_types::Duration>) -> Result<Option<Duration>, &'static str> {
    let Some(d) = ttl else { return Ok(None) };
    // protobuf's Duration gives seconds and nanos the same sign.
    if (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(
            "seconds and nanos have opposite signs; give both the same sign, e.g. 300 seconds",
        );
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err("must be positive, e.g. 300 seconds");
    }
    if d.nanos >= 1_000_000_000 {
        return Err("nanos must be below 1e9");
    }
    if d.seconds == 0 {
        return Err("must be at least 1 second; omit it to get the default");
    }
    Ok(Some(Duration::new(
        d.seconds.unsigned_abs(),
        d.nanos.unsigned_abs(),
    )))
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// The caller the interceptor identified, also recorded on the call's span (made by
/// `server`'s trace layer, current while the handler runs).
fn caller_of<T>(request: &mut Request<T>) -> Result<Caller, Status> {
    // Taken, not cloned: the handler is its only reader.
    let caller = request
        .extensions_mut()
        .remove::<Caller>()
        .ok_or_else(|| Status::from(Error::Unauthenticated(identity::Error::Missing)))?;
    tracing::Span::current().record("caller", caller.id());
    Ok(caller)
}

/// The gRPC service: a front door over the grant pipeline.
#[derive(Debug, Clone)]
pub struct GrantService {
    pipeline: Pipeline,
    /// `server.request_timeout`: the deadline of a call that names none.
    request_timeout: Duration,
}

impl GrantService {
    /// The service over `pipeline`, whose calls last at most `request_timeout`.
    pub fn new(pipeline: Pipeline, request_timeout: Duration) -> Self {
        Self {
            pipeline,
            request_timeout,
        }
    }

    /// How long the call with `metadata` may take (see [`call_deadline`]).
    fn deadline_of(&self, metadata: &tonic::metadata::MetadataMap) -> Duration {
        call_deadline(metadata, self.request_timeout)
    }
}

/// How long a call may take: the caller's `grpc-timeout`, or `request_timeout` when
/// that is shorter or the caller set none.
fn call_deadline(metadata: &tonic::metadata::MetadataMap, request_timeout: Duration) -> Duration {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(request_timeout, |t| t.min(request_timeout))
}

/// A `grpc-timeout` header: at most 8 digits and a unit (H, M, S, m, u, n), as the
/// gRPC over HTTP/2 protocol defines it; `None` when malformed.
pub(crate) fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl proto::grant_service_server::GrantService for GrantService {
    async fn grant_read(
        &self,
        mut request: Request<proto::GrantReadRequest>,
    ) -> Result<Response<proto::GrantReadResponse>, Status> {
        let caller = caller_of(&mut request)?;
        let response = read::grant_read(&self.pipeline, &caller, request.into_inner())?;
        Ok(Response::new(response))
    }

    async fn grant_write(
        &self,
        mut request: Request<proto::GrantWriteRequest>,
    ) -> Result<Response<proto::GrantWriteResponse>, Status> {
        let caller = caller_of(&mut request)?;
        let response = write::grant_write(&self.pipeline, &caller, request.into_inner())?;
        Ok(Response::new(response))
    }

    async fn assume_scoped(
        &self,
        mut request: Request<proto::AssumeScopedRequest>,
    ) -> Result<Response<proto::AssumeScopedResponse>, Status> {
        let caller = caller_of(&mut request)?;
        let deadline = self.deadline_of(request.metadata());
        let response =
            assume::assume_scoped(&self.pipeline, &caller, request.into_inner(), deadline).await?;
        Ok(Response::new(response))
    }

    async fn start_multipart_upload(
        &self,
        mut request: Request<proto::StartMultipartUploadRequest>,
    ) -> Result<Response<proto::StartMultipartUploadResponse>, Status> {
        let caller = caller_of(&mut request)?;
        let deadline = self.deadline_of(request.metadata());
        let response =
            multipart::start(&self.pipeline, &caller, request.get_ref(), deadline).await?;
        Ok(Response::new(response))
    }

    async fn grant_upload_parts(
        &self,
        mut request: Request<proto::GrantUploadPartsRequest>,
    ) -> Result<Response<proto::GrantUploadPartsResponse>, Status> {
        let caller = caller_of(&mut request)?;
        let response = multipart::grant_parts(&self.pipeline, &caller, request.get_ref())?;
        Ok(Response::new(response))
    }

    async fn list_uploaded_parts(
        &self,
        mut request: Request<proto::ListUploadedPartsRequest>,
    ) -> Result<Response<proto::ListUploadedPartsResponse>, Status> {
        let caller = caller_of(&mut request)?;
        let deadline = self.deadline_of(request.metadata());
        let response =
            multipart::list(&self.pipeline, &caller, request.get_ref(), deadline).await?;
        Ok(Response::new(response))
    }

    async fn complete_multipart_upload(
        &self,
        mut request: Request<proto::CompleteMultipartUploadRequest>,
    ) -> Result<Response<proto::CompleteMultipartUploadResponse>, Status> {
        let caller = caller_of(&mut request)?;
        let deadline = self.deadline_of(request.metadata());
        let response =
            multipart::complete(&self.pipeline, &caller, request.get_ref(), deadline).await?;
        Ok(Response::new(response))
    }

    async fn abort_multipart_upload(
        &self,
        mut request: Request<proto::AbortMultipartUploadRequest>,
    ) -> Result<Response<proto::AbortMultipartUploadResponse>, Status> {
        let caller = caller_of(&mut request)?;
        let deadline = self.deadline_of(request.metadata());
        let response =
            multipart::abort(&self.pipeline, &caller, request.get_ref(), deadline).await?;
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_in_every_unit() {
        for (header, want) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("30S", Duration::from_secs(30)),
            ("700m", Duration::from_millis(700)),
            ("250u", Duration::from_micros(250)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            assert_eq!(parse_grpc_timeout(header), Some(want), "{header}");
        }
        for bad in ["", "S", "5", "123456789S", "-1S", "1.5S", "5s", "5 S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_calls_deadline_is_the_callers_within_the_servers() {
        let deadline = |request_timeout: u64, header: Option<&str>| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Some(t) = header {
                metadata.insert("grpc-timeout", t.parse().unwrap());
            }
            call_deadline(&metadata, Duration::from_secs(request_timeout))
        };
        assert_eq!(deadline(30, Some("900m")), Duration::from_millis(900));
        assert_eq!(deadline(30, Some("5S")), Duration::from_secs(5));
        // No deadline, or a longer one than the server allows: the server's.
        assert_eq!(deadline(10, None), Duration::from_secs(10));
        assert_eq!(deadline(10, Some("1H")), Duration::from_secs(10));
        assert_eq!(deadline(10, Some("garbage")), Duration::from_secs(10));
    }

    #[test]
    fn ttl_unset_takes_the_default() {
        assert_eq!(parse_ttl(None), Ok(None));
    }

    #[test]
    fn negative_or_zero_ttl_is_rejected() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert!(parse_ttl(Some(&d(-5, 0))).is_err());
        assert!(parse_ttl(Some(&d(0, 500_000_000))).is_err());
        assert!(
            parse_ttl(Some(&d(5, -5)))
                .unwrap_err()
                .contains("opposite signs")
        );
        assert!(
            parse_ttl(Some(&d(-5, 5)))
                .unwrap_err()
                .contains("opposite signs")
        );
        assert!(parse_ttl(Some(&d(1, 1_000_000_000))).is_err());
        assert_eq!(
            parse_ttl(Some(&d(90, 0))),
            Ok(Some(Duration::from_secs(90)))
        );
    }

    #[test]
    fn invalid_argument_carries_every_field_violation() {
        let status = Status::from(grant::Error::InvalidArgument(vec![
            grant::FieldViolation {
                field: "key",
                description: "must not be empty".into(),
            },
            grant::FieldViolation {
                field: "ttl",
                description: "must be positive".into(),
            },
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .expect("BadRequest details")
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["key", "ttl"]);
        assert!(
            status.message().contains("key: must not be empty"),
            "{}",
            status.message()
        );
    }

    /// The doors hand the decoded strings to the validated request: each is kept where
    /// prost put it, not copied (a write with every pin carries eight).
    #[test]
    fn a_requests_decoded_strings_are_kept_not_copied() {
        let request = proto::GrantWriteRequest {
            bucket: "demo".into(),
            key: "public/a.bin".into(),
            content_type: "image/png".into(),
            checksum_sha256: "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=".into(),
            metadata: [("owner".into(), "team-a".into())].into(),
            ..Default::default()
        };
        let sent = [
            request.bucket.as_ptr(),
            request.key.as_ptr(),
            request.content_type.as_ptr(),
            request.checksum_sha256.as_ptr(),
        ];
        let (name, value) = request.metadata.iter().next().unwrap();
        let sent_entry = (name.as_ptr(), value.as_ptr());
        let parsed = write::parse(request).unwrap();
        let kept = [
            parsed.bucket.as_str().as_ptr(),
            parsed.key.as_str().as_ptr(),
            parsed.content_type.as_ref().unwrap().as_str().as_ptr(),
            parsed.checksum_sha256.as_ref().unwrap().as_str().as_ptr(),
        ];
        assert_eq!(kept, sent);
        let (name, value) = &parsed.metadata.entries()[0];
        assert_eq!((name.as_ptr(), value.as_ptr()), sent_entry);

        let request = proto::GrantReadRequest {
            bucket: "demo".into(),
            key: "public/a.bin".into(),
            version_id: "v1".into(),
            ..Default::default()
        };
        let sent = [
            request.bucket.as_ptr(),
            request.key.as_ptr(),
            request.version_id.as_ptr(),
        ];
        let parsed = read::parse(request).unwrap();
        let kept = [
            parsed.bucket.as_str().as_ptr(),
            parsed.key.as_str().as_ptr(),
            parsed.version_id.as_ref().unwrap().as_str().as_ptr(),
        ];
        assert_eq!(kept, sent);

        let request = proto::AssumeScopedRequest {
            bucket: "demo".into(),
            prefix: "public/".into(),
            access: proto::Access::Read.into(),
            ..Default::default()
        };
        let sent = [request.bucket.as_ptr(), request.prefix.as_ptr()];
        let parsed = assume::parse(request).unwrap();
        let kept = [
            parsed.bucket.as_str().as_ptr(),
            parsed.prefix.as_str().as_ptr(),
        ];
        assert_eq!(kept, sent);
    }
}
