//! The `storagegrants.v1.GrantService` implementation, and the one place where errors
//! become gRPC statuses.
//!
//! A handler parses every field into a validated type (collecting every bad field
//! into one `google.rpc.BadRequest`), asks the rules, clamps the lifetime, signs, and
//! writes one audit event. Authentication happened before (the interceptor in
//! `server` puts a [`Caller`] in the request extensions); transport concerns live in
//! `server`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::audit;
use crate::config::{GrantsConfig, StsConfig};
use crate::credentials::{self, CredentialSource};
use crate::expiry::{self, Ttl};
use crate::identity::{self, Caller};
use crate::policy::{self, Access, KmsKeyArn, Partition};
use crate::proto;
use crate::rules::{self, Action, Target};
use crate::rules_reload::RulesHandle;
use crate::scope::{
    self, BucketName, ChecksumSha256, HeaderText, Metadata, MetadataError, ObjectKey, Prefix,
    VersionId,
};
use crate::sign::{GetObject, PostObject, PutObject, Signer};
use crate::sts;

/// Everything that can go wrong in a call, each mapped to its gRPC code once, in
/// `From<Error> for Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Unauthenticated(#[from] identity::Error),
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error(transparent)]
    Denied(#[from] rules::Denied),
    #[error(transparent)]
    Credentials(#[from] credentials::Error),
    #[error(transparent)]
    Expiry(#[from] expiry::Error),
    #[error("{0}")]
    NotConfigured(&'static str),
    #[error(transparent)]
    Sts(#[from] sts::Error),
}

/// One bad field and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's name in the request message.
    pub field: &'static str,
    /// What is wrong with it and what to send instead.
    pub description: String,
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match &error {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
            }
            Error::Unauthenticated(_) => Status::unauthenticated(error.to_string()),
            Error::Denied(_) => Status::permission_denied(error.to_string()),
            Error::Credentials(_) | Error::Expiry(_) => {
                tracing::error!(error = %error, "cannot sign: service credentials unavailable");
                Status::unavailable(format!("{error}; retry later"))
            }
            Error::NotConfigured(_) => Status::failed_precondition(error.to_string()),
            Error::Sts(e) if e.is_transient() => {
                tracing::warn!(error = %e, "STS unavailable");
                let details = ErrorDetails::with_retry_info(Some(STS_RETRY_AFTER));
                Status::with_error_details(
                    Code::Unavailable,
                    format!("{e}; retry in a few seconds"),
                    details,
                )
            }
            Error::Sts(e) => {
                // The code and message from STS are for the operator (a trust policy,
                // a missing permission), not for the caller.
                tracing::error!(error = %e, "STS refused AssumeRole");
                Status::internal(
                    "the service could not obtain scoped credentials; its operator's logs say why",
                )
            }
        }
    }
}

/// How long a caller should wait before retrying after STS was unavailable.
const STS_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Collects field violations while a request is parsed, so that a caller learns
/// about every bad field at once.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Parses a required field.
    fn required<T: std::str::FromStr<Err = scope::Error>>(
        &mut self,
        field: &'static str,
        value: &str,
    ) -> Option<T> {
        match value.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    /// Parses an optional field: empty means not set.
    fn optional<T: std::str::FromStr<Err = scope::Error>>(
        &mut self,
        field: &'static str,
        value: &str,
    ) -> Option<T> {
        if value.is_empty() {
            None
        } else {
            self.required(field, value)
        }
    }

    fn add(&mut self, field: &'static str, description: String) {
        self.0.push(FieldViolation { field, description });
    }

    fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

/// Reads a requested TTL: unset means `default`; it must be a valid, positive
/// duration of at least one second.
fn requested_ttl(
    ttl: Option<&prost_types::Duration>,
    default: Duration,
) -> Result<Duration, String> {
    let Some(d) = ttl else { return Ok(default) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err("must be positive, e.g. 300 seconds".into());
    }
    if d.nanos >= 1_000_000_000 {
        return Err("nanos must be below 1e9".into());
    }
    if d.seconds == 0 {
        return Err("must be at least 1 second; omit it to get the default".into());
    }
    Ok(Duration::new(
        d.seconds.unsigned_abs(),
        d.nanos.unsigned_abs(),
    ))
}

/// The grant service.
#[derive(Debug, Clone)]
pub struct GrantService {
    rules: Arc<RulesHandle>,
    signer: Arc<Signer>,
    credentials: Arc<CredentialSource>,
    limits: GrantsConfig,
    scoped: Option<Arc<ScopedGrants>>,
}

/// What AssumeScoped needs; absent when no STS role is configured.
#[derive(Debug)]
pub struct ScopedGrants {
    /// Issues and caches the credentials.
    pub broker: sts::Broker,
    /// Partition of the policy ARNs.
    pub partition: Partition,
    /// KMS key for SSE-KMS buckets, if any.
    pub kms_key: Option<KmsKeyArn>,
    /// The STS settings.
    pub config: StsConfig,
    /// Region handed to clients.
    pub region: String,
    /// Endpoint handed to clients; empty for AWS's default.
    pub endpoint: String,
    /// Whether clients must use path-style addressing.
    pub force_path_style: bool,
}

impl GrantService {
    /// A service granting under `rules`, signing with `signer` and `credentials`.
    pub fn new(
        rules: Arc<RulesHandle>,
        signer: Arc<Signer>,
        credentials: Arc<CredentialSource>,
        limits: GrantsConfig,
        scoped: Option<Arc<ScopedGrants>>,
    ) -> Self {
        Self {
            rules,
            signer,
            credentials,
            limits,
            scoped,
        }
    }

    /// GrantRead, with the caller already identified.
    ///
    /// # Errors
    /// Every [`Error`] but `Unauthenticated`.
    pub fn grant_read(
        &self,
        caller: &Caller,
        request: &proto::GrantReadRequest,
    ) -> Result<proto::GrantReadResponse, Error> {
        let mut v = Violations::default();
        let bucket: Option<BucketName> = v.required("bucket", &request.bucket);
        let key: Option<ObjectKey> = v.required("key", &request.key);
        let version_id: Option<VersionId> = v.optional("version_id", &request.version_id);
        let content_type: Option<HeaderText> =
            v.optional("response_content_type", &request.response_content_type);
        let disposition: Option<HeaderText> = v.optional(
            "response_content_disposition",
            &request.response_content_disposition,
        );
        let requested = requested_ttl(request.ttl.as_ref(), self.limits.default_ttl)
            .map_err(|e| v.add("ttl", e))
            .ok();
        v.finish()?;
        let (Some(bucket), Some(key), Some(requested)) = (bucket, key, requested) else {
            unreachable!("every missing value recorded a violation");
        };

        let rules = self.rules.current();
        let rule = rules
            .authorize(caller, Action::Read, &bucket, Target::Key(&key))
            .inspect_err(|_| audit::denied(caller, Action::Read, bucket.as_str(), key.as_str()))?;
        let credentials = self.credentials.current()?;
        let signing_time = whole_seconds(SystemTime::now());
        let ttl = Ttl::clamp(
            &[requested, rule.max_ttl(), self.limits.max_ttl],
            signing_time,
            credentials.expires_at,
        )?;
        let presigned = self.signer.presign_get(
            &credentials,
            &GetObject {
                bucket: &bucket,
                key: &key,
                version_id: version_id.as_ref(),
                response_content_type: content_type.as_ref(),
                response_content_disposition: disposition.as_ref(),
            },
            signing_time,
            ttl,
        );
        let expires_at = signing_time + ttl.as_duration();
        let grant_id = audit::new_grant_id();
        audit::issued(&audit::Issued {
            grant_id: &grant_id,
            caller,
            actions: &[Action::Read],
            bucket: bucket.as_str(),
            target: key.as_str(),
            ttl_secs: ttl.as_duration().as_secs(),
            expires_at,
            rule_line: rule.line(),
            session_grant_id: None,
        });
        Ok(proto::GrantReadResponse {
            url: presigned.url.expose().clone(),
            method: presigned.method.to_owned(),
            headers: presigned.headers.into_iter().collect(),
            expires_at: Some(timestamp(expires_at)),
            grant_id,
        })
    }
}

/// What kind of upload a GrantWrite asked for.
enum Upload {
    /// Presigned PUT, optionally with an exact length.
    Put(Option<u64>),
    /// Presigned POST whose policy carries the size range.
    Post(scope::SizeRange),
}

impl GrantService {
    /// GrantWrite, with the caller already identified.
    ///
    /// # Errors
    /// Every [`Error`] but `Unauthenticated`.
    pub fn grant_write(
        &self,
        caller: &Caller,
        request: &proto::GrantWriteRequest,
    ) -> Result<proto::GrantWriteResponse, Error> {
        use proto::grant_write_request::Size;

        let mut v = Violations::default();
        let bucket: Option<BucketName> = v.required("bucket", &request.bucket);
        let key: Option<ObjectKey> = v.required("key", &request.key);
        let content_type: Option<HeaderText> = v.optional("content_type", &request.content_type);
        let checksum: Option<ChecksumSha256> =
            v.optional("checksum_sha256", &request.checksum_sha256);
        let metadata = Metadata::new(
            request
                .metadata
                .iter()
                .map(|(k, value)| (k.as_str(), value.as_str())),
        )
        .map_err(|e| {
            let description = match e {
                MetadataError::Name { name, error } => format!("name '{name}' {error}"),
                MetadataError::Value { name, error } => format!("value of '{name}' {error}"),
                MetadataError::Total(error) => error.to_string(),
            };
            v.add("metadata", description);
        })
        .ok();
        let upload = match &request.size {
            None => Some(Upload::Put(None)),
            Some(Size::ContentLength(n)) => scope::upload_length(*n)
                .map(|n| Upload::Put(Some(n)))
                .map_err(|e| v.add("content_length", e.to_string()))
                .ok(),
            Some(Size::ContentLengthRange(range)) => {
                scope::SizeRange::new(range.min_bytes, range.max_bytes)
                    .map(Upload::Post)
                    .map_err(|e| v.add("content_length_range", e.to_string()))
                    .ok()
            }
        };
        // S3 replaces `${filename}` in a POST form's key with the uploaded file's name
        // before it checks the policy, so such a grant could never be used.
        if matches!(upload, Some(Upload::Post(_))) && request.key.contains("${filename}") {
            v.add(
                "key",
                "contains '${filename}', which S3 replaces in POST uploads, so the signed \
                 key could never match; name the object's final key"
                    .into(),
            );
        }
        if request.create_only && matches!(upload, Some(Upload::Post(_))) {
            v.add(
                "create_only",
                "applies to presigned PUT only: S3's POST form has no If-None-Match; \
                 send content_length (or no size) instead of content_length_range"
                    .into(),
            );
        }
        let requested = requested_ttl(request.ttl.as_ref(), self.limits.default_ttl)
            .map_err(|e| v.add("ttl", e))
            .ok();
        v.finish()?;
        let (Some(bucket), Some(key), Some(metadata), Some(upload), Some(requested)) =
            (bucket, key, metadata, upload, requested)
        else {
            unreachable!("every missing value recorded a violation");
        };

        let rules = self.rules.current();
        let rule = rules
            .authorize(caller, Action::Write, &bucket, Target::Key(&key))
            .inspect_err(|_| audit::denied(caller, Action::Write, bucket.as_str(), key.as_str()))?;
        let credentials = self.credentials.current()?;
        let signing_time = whole_seconds(SystemTime::now());
        let ttl = Ttl::clamp(
            &[requested, rule.max_ttl(), self.limits.max_ttl],
            signing_time,
            credentials.expires_at,
        )?;
        let mut response = proto::GrantWriteResponse::default();
        match upload {
            Upload::Put(content_length) => {
                let presigned = self.signer.presign_put(
                    &credentials,
                    &PutObject {
                        bucket: &bucket,
                        key: &key,
                        content_type: content_type.as_ref(),
                        content_length,
                        checksum_sha256: checksum.as_ref(),
                        metadata: &metadata,
                        create_only: request.create_only,
                    },
                    signing_time,
                    ttl,
                );
                response.url = presigned.url.expose().clone();
                response.method = presigned.method.to_owned();
                response.headers = presigned.headers.into_iter().collect();
            }
            Upload::Post(size) => {
                let presigned = self.signer.presign_post(
                    &credentials,
                    &PostObject {
                        bucket: &bucket,
                        key: &key,
                        content_type: content_type.as_ref(),
                        size,
                        checksum_sha256: checksum.as_ref(),
                        metadata: &metadata,
                    },
                    signing_time,
                    ttl,
                );
                response.url = presigned.url;
                response.method = "POST".to_owned();
                response.form_fields = presigned.fields.into_iter().collect();
                response.file_field = presigned.file_field.to_owned();
            }
        }
        let expires_at = signing_time + ttl.as_duration();
        let grant_id = audit::new_grant_id();
        audit::issued(&audit::Issued {
            grant_id: &grant_id,
            caller,
            actions: &[Action::Write],
            bucket: bucket.as_str(),
            target: key.as_str(),
            ttl_secs: ttl.as_duration().as_secs(),
            expires_at,
            rule_line: rule.line(),
            session_grant_id: None,
        });
        response.expires_at = Some(timestamp(expires_at));
        response.grant_id = grant_id;
        Ok(response)
    }

    /// AssumeScoped, with the caller already identified.
    ///
    /// # Errors
    /// Every [`Error`] but `Unauthenticated`.
    pub async fn assume_scoped(
        &self,
        caller: &Caller,
        request: &proto::AssumeScopedRequest,
    ) -> Result<proto::AssumeScopedResponse, Error> {
        let scoped = self.scoped.as_ref().ok_or(Error::NotConfigured(
            "AssumeScoped is not configured on this service (no sts.role_arn)",
        ))?;
        let mut v = Violations::default();
        let bucket: Option<BucketName> = v.required("bucket", &request.bucket);
        let prefix: Option<Prefix> = v.required("prefix", &request.prefix);
        let (read, write) = match proto::Access::try_from(request.access) {
            Ok(proto::Access::Read) => (true, false),
            Ok(proto::Access::Write) => (false, true),
            Ok(proto::Access::ReadWrite) => (true, true),
            Ok(proto::Access::Unspecified) | Err(_) => {
                v.add(
                    "access",
                    "must be ACCESS_READ, ACCESS_WRITE or ACCESS_READ_WRITE".into(),
                );
                (false, false)
            }
        };
        let requested = requested_ttl(request.duration.as_ref(), scoped.config.default_duration)
            .map_err(|e| v.add("duration", e))
            .ok();
        v.finish()?;
        let (Some(bucket), Some(prefix), Some(requested)) = (bucket, prefix, requested) else {
            unreachable!("every missing value recorded a violation");
        };

        let mut actions = Vec::with_capacity(3);
        if read {
            actions.push(Action::AssumeRead);
        }
        if write {
            actions.push(Action::AssumeWrite);
        }
        if request.list {
            actions.push(Action::List);
        }
        // Every action must be allowed; the shortest max TTL among the rules applies.
        let mut rule_max = Duration::MAX;
        let mut delete = false;
        let mut rule_line = 0;
        let rules = self.rules.current();
        for &action in &actions {
            let rule = rules
                .authorize(caller, action, &bucket, Target::Prefix(&prefix))
                .inspect_err(|_| audit::denied(caller, action, bucket.as_str(), prefix.as_str()))?;
            rule_max = rule_max.min(rule.max_ttl());
            rule_line = rule.line();
            if action == Action::AssumeWrite {
                delete = rule.allow_delete();
            }
        }
        let access = Access {
            read,
            write,
            list: request.list,
            delete,
        };
        let policy = policy::session_policy(
            scoped.partition,
            &bucket,
            &prefix,
            &access,
            scoped.kms_key.as_ref(),
        )
        .map_err(|e| {
            Error::InvalidArgument(vec![FieldViolation {
                field: "prefix",
                description: e.to_string(),
            }])
        })?;

        let role_chaining = match scoped.config.role_chaining {
            Some(chaining) => chaining,
            None => self.credentials.current()?.session_token.is_some(),
        };
        let duration = sts::session_duration(requested, rule_max, &scoped.config, role_chaining);
        let grant_id = audit::new_grant_id();
        let scope = sts::Scope {
            caller: caller.id().to_owned(),
            bucket,
            prefix,
            access,
        };
        let credentials = scoped
            .broker
            .credentials(&sts::Request {
                scope: &scope,
                policy: &policy,
                duration,
                max_life: rule_max,
                grant_id: &grant_id,
            })
            .await?;
        let left = credentials
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        audit::issued(&audit::Issued {
            grant_id: &grant_id,
            caller,
            actions: &actions,
            bucket: scope.bucket.as_str(),
            target: scope.prefix.as_str(),
            ttl_secs: left.as_secs(),
            expires_at: credentials.expires_at,
            rule_line,
            session_grant_id: Some(&credentials.session_grant_id),
        });
        Ok(proto::AssumeScopedResponse {
            credentials: Some(proto::TemporaryCredentials {
                access_key_id: credentials.access_key_id.clone(),
                secret_access_key: credentials.secret_access_key.expose().clone(),
                session_token: credentials.session_token.expose().clone(),
                expires_at: Some(timestamp(credentials.expires_at)),
            }),
            bucket: scope.bucket.to_string(),
            prefix: scope.prefix.to_string(),
            region: scoped.region.clone(),
            endpoint: scoped.endpoint.clone(),
            force_path_style: scoped.force_path_style,
            grant_id,
        })
    }
}

/// Truncates to whole seconds: X-Amz-Date has second precision, and `expires_at` must
/// be computed from the same instant the signature uses.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// The caller the interceptor identified, also recorded on the RPC's span.
fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::from(Error::Unauthenticated(identity::Error::Missing)))?;
    tracing::Span::current().record("caller", caller.id());
    Ok(caller)
}

#[tonic::async_trait]
impl proto::grant_service_server::GrantService for GrantService {
    #[tracing::instrument(name = "GrantRead", skip_all, fields(caller, bucket = ?request.get_ref().bucket))]
    async fn grant_read(
        &self,
        request: Request<proto::GrantReadRequest>,
    ) -> Result<Response<proto::GrantReadResponse>, Status> {
        let caller = caller_of(&request)?;
        let response = GrantService::grant_read(self, &caller, request.get_ref())?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(name = "GrantWrite", skip_all, fields(caller, bucket = ?request.get_ref().bucket))]
    async fn grant_write(
        &self,
        request: Request<proto::GrantWriteRequest>,
    ) -> Result<Response<proto::GrantWriteResponse>, Status> {
        let caller = caller_of(&request)?;
        let response = GrantService::grant_write(self, &caller, request.get_ref())?;
        Ok(Response::new(response))
    }

    #[tracing::instrument(name = "AssumeScoped", skip_all, fields(caller, bucket = ?request.get_ref().bucket))]
    async fn assume_scoped(
        &self,
        request: Request<proto::AssumeScopedRequest>,
    ) -> Result<Response<proto::AssumeScopedResponse>, Status> {
        let caller = caller_of(&request)?;
        let response = GrantService::assume_scoped(self, &caller, request.get_ref()).await?;
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_defaults_when_unset() {
        assert_eq!(
            requested_ttl(None, Duration::from_secs(300)),
            Ok(Duration::from_secs(300))
        );
    }

    #[test]
    fn negative_or_zero_ttl_is_rejected() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert!(requested_ttl(Some(&d(-5, 0)), Duration::ZERO).is_err());
        assert!(requested_ttl(Some(&d(0, 500_000_000)), Duration::ZERO).is_err());
        assert!(requested_ttl(Some(&d(1, -1)), Duration::ZERO).is_err());
        assert!(requested_ttl(Some(&d(1, 1_000_000_000)), Duration::ZERO).is_err());
        assert_eq!(
            requested_ttl(Some(&d(90, 0)), Duration::ZERO),
            Ok(Duration::from_secs(90))
        );
    }

    #[test]
    fn invalid_argument_carries_every_field_violation() {
        let status = Status::from(Error::InvalidArgument(vec![
            FieldViolation {
                field: "key",
                description: "must not be empty".into(),
            },
            FieldViolation {
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

    #[test]
    fn whole_seconds_drops_the_fraction() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(
            whole_seconds(t),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }
}
