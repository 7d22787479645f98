//! The one grant pipeline: every front door (gRPC, HTTP) hands it an authenticated
//! [`Caller`] and a validated request, and gets a grant or a typed refusal.
//!
//! Each grant goes through the same steps, in this order, in this module only:
//! authorize (the rules in force) → clamp the lifetime (request, rule, ceiling, SigV4,
//! signing credentials) → sign or assume → audit. A front door never repeats a step
//! and never skips one; adding a door means parsing its wire format into a
//! [`request`] type and mapping [`Error`] to its own status.
//!
//! It leaves authentication to `identity`, the request's wire format and error codes
//! to the doors, and the signature and the STS call to `sign` and `sts`.

pub mod audit;
mod multipart;
mod request;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::caller::Caller;
use crate::core::Action;
use crate::credentials::{self, CredentialSource, SigningCredentials};
use crate::expiry::{self, Ttl};
use crate::policy::{self, KmsKeyArn, Partition};
use crate::rules::reload::RulesHandle;
use crate::rules::{self, Rule, Target};
use crate::scope::{BucketName, HeaderText, ObjectKey, Prefix};
use crate::secret::Secret;
use crate::sign::{GetObject, PostObject, PresignedRequest, PutObject, Signer};
use crate::sts;

pub use multipart::{
    CompleteRequest, OpenUpload, PartsRequest, RawCompletedPart, RawPart, RawStart, StartRequest,
    Steps, UploadStep, Uploads,
};
pub use request::{
    Access, AssumeRequest, FieldViolation, RawRead, RawSize, RawWrite, ReadMethod, ReadRequest,
    Upload, Violations, WriteRequest,
};

/// Why a grant was refused. Each front door maps these to its own status, in one
/// place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fields the caller must change.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// No rule allows it.
    #[error(transparent)]
    Denied(#[from] rules::Denied),
    /// The service's own credentials are unavailable.
    #[error(transparent)]
    Credentials(#[from] credentials::Error),
    /// The signing credentials have too little life left.
    #[error(transparent)]
    Expiry(#[from] expiry::Error),
    /// The grant needs a part of the service that is not configured.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// STS failed.
    #[error(transparent)]
    Sts(#[from] sts::Error),
    /// Response overrides the rule does not allow.
    #[error(
        "response_content_type, and a response_content_disposition other than \
         'attachment', need a rule with allow_response_overrides = true (rule at line \
         {rule_line} does not set it); drop them, or download as an attachment"
    )]
    OverridesNotAllowed {
        /// The rule that allowed the read.
        rule_line: usize,
    },
    /// A write that does not pin one of the content types its rule allows.
    #[error(
        "the rule at line {rule_line} takes uploads pinned to {allowed}; {}",
        match sent {
            Some(sent) => format!(
                "'{}' is not one: pin one of them in content_type",
                crate::core::text::echo(sent)
            ),
            None => "pin one of them in content_type".to_owned(),
        }
    )]
    ContentTypeNotAllowed {
        /// The rule that allowed the write.
        rule_line: usize,
        /// Its content types, as the operator wrote them.
        allowed: String,
        /// The content type the write pinned, if any.
        sent: Option<String>,
    },
    /// An upload token presented by a caller other than the one that started it.
    #[error("this upload was started by another caller")]
    OtherCaller,
    /// The request cannot be carried out in the state things are in (a part not
    /// uploaded, an upload that no longer exists, a size over the rule's limit).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A create-only upload whose key exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The store failed (multipart calls).
    #[error(transparent)]
    Store(crate::store::Error),
    /// The caller used up its budget of grants: `[limits]`'s, or that of the rule on
    /// this line of the rules file.
    #[error(
        "this caller asked for too many grants{}; retry in {}",
        .1.map(|line| format!(" under the rule on line {line} of the rules file (its own budget)"))
            .unwrap_or_default(),
        crate::core::duration::whole_seconds_up(*.0)
    )]
    OverBudget(Duration, Option<usize>),
}

impl Error {
    /// What a refusal the pipeline did not audit says on the call's span (`decision`),
    /// so that a trace names the caller a refusal was for: a request to change
    /// (`invalid`), a budget used up (`over_budget`). Denials are audited, and their
    /// span says `denied` already.
    pub fn decision(&self) -> Option<&'static str> {
        match self {
            Error::InvalidArgument(_) => Some("invalid"),
            Error::OverBudget(..) | Error::Sts(sts::Error::OverBudget(_)) => Some("over_budget"),
            _ => None,
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Refuses a `min_left` that no session for this scope can have: handing out
/// credentials with less would break the request's promise, and none cached would
/// ever do, so every call would be a new STS session. A session exactly as long as
/// `min_left` is refused too: it has less left by the time it is handed out.
///
/// Role chaining (sessions of at most an hour) is left out: both doors cap
/// `min_left` at an hour, which chaining allows.
fn check_min_left(
    scoped: &Scoped,
    min_left: Duration,
    rule_max: Duration,
    shortest_rule: Option<usize>,
) -> Result<(), Error> {
    let longest = scoped
        .durations
        .session(Duration::MAX, rule_max, false)
        .min(rule_max);
    if min_left < longest {
        return Ok(());
    }
    // Sessions are whole seconds: a rule's `1200500ms` gives 1,200 of them, and is
    // still the rule's bound.
    let bound = if longest < Duration::from_secs(rule_max.as_secs()) {
        "sts.role_max_duration".to_owned()
    } else if let Some(line) = shortest_rule {
        format!("the max_ttl of the rule at line {line}")
    } else {
        "grants.max_ttl".to_owned()
    };
    Err(Error::FailedPrecondition(format!(
        "credentials with {} of life left were asked for (min_remaining; the SDK \
         credential endpoints ask for 20m, beyond the AWS SDKs' refresh windows), but \
         sessions for this scope last at most {} ({bound}), which is less by the time \
         they are handed out; ask for less than that, or raise {bound}",
        crate::core::duration::display(min_left),
        crate::core::duration::display(longest),
    )))
}

/// Lifetimes that apply to every presigned grant (`[grants]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TTL of a grant whose request names none.
    pub default_ttl: Duration,
    /// Ceiling on any grant's TTL, whatever the rules say.
    pub max_ttl: Duration,
    /// Ceiling on a presigned grant's TTL while the signing credentials are temporary
    /// (a session token) but say nothing of when they expire.
    pub max_ttl_without_expiry: Duration,
}

impl Limits {
    /// Until when credentials may sign: their expiry; for temporary credentials of
    /// unknown expiry, `max_ttl_without_expiry` from `now` (they may die at any
    /// moment, and a URL must not claim to outlive them); none for long-lived keys.
    pub fn signing_deadline(
        &self,
        credentials: &SigningCredentials,
        now: SystemTime,
    ) -> Option<SystemTime> {
        match (credentials.expires_at, &credentials.session_token) {
            (Some(at), _) => Some(at),
            (None, Some(_)) => Some(now + self.max_ttl_without_expiry),
            (None, None) => None,
        }
    }
}

/// What AssumeScoped needs; absent when no STS role is configured.
#[derive(Debug)]
pub struct Scoped {
    /// Issues and caches the credentials.
    pub broker: sts::Broker,
    /// Partition of the policy ARNs.
    pub partition: Partition,
    /// KMS key for SSE-KMS buckets, if any.
    pub kms_key: Option<KmsKeyArn>,
    /// Session lengths STS may give.
    pub durations: sts::Durations,
    /// Region handed to clients.
    pub region: String,
    /// Endpoint handed to clients; empty for AWS's default.
    pub endpoint: String,
    /// Whether clients must use path-style addressing.
    pub force_path_style: bool,
    /// The AWS account the credentials belong to (the role's).
    pub account_id: String,
}

/// A presigned request or form: what the uploader or downloader must send.
#[derive(Debug)]
pub struct Presigned {
    /// The URL, signature included: a bearer credential until it expires.
    pub url: Secret<String>,
    /// `GET`, `PUT` or `POST`.
    pub method: &'static str,
    /// Headers the caller must send exactly (PUT, GET).
    pub headers: Vec<(String, String)>,
    /// Form fields to send before the file (POST).
    pub form_fields: Vec<(String, String)>,
    /// Name of the file's form part (POST); empty otherwise.
    pub file_field: &'static str,
    /// When the signature stops working: the true expiry.
    pub expires_at: SystemTime,
    /// Joins the response to the audit event.
    pub grant_id: String,
}

/// Scoped credentials and where to use them.
#[derive(Debug)]
pub struct ScopedGrant {
    /// The credentials (shared with the cache).
    pub credentials: Arc<sts::ScopedCredentials>,
    /// The bucket.
    pub bucket: BucketName,
    /// The prefix they are confined to.
    pub prefix: Prefix,
    /// Region for the client.
    pub region: String,
    /// Endpoint for the client; empty for AWS's default.
    pub endpoint: String,
    /// Whether the client must use path-style addressing.
    pub force_path_style: bool,
    /// The AWS account the credentials belong to.
    pub account_id: String,
    /// Joins the response to the audit event.
    pub grant_id: String,
}

/// The pipeline and what it needs: the rules, the signer and its credentials, the
/// limits, and the STS broker when AssumeScoped is configured.
#[derive(Debug, Clone)]
pub struct Pipeline {
    rules: Arc<RulesHandle>,
    signer: Arc<Signer>,
    credentials: Arc<CredentialSource>,
    limits: Limits,
    scoped: Option<Arc<Scoped>>,
    uploads: Option<Arc<Uploads>>,
    /// Each caller's budget of grants; `None`: unlimited.
    budgets: Option<Arc<crate::budget::Budgets>>,
}

/// Callers whose grant budgets are tracked at once (bounded memory).
const MAX_BUDGETED_CALLERS: usize = 100_000;

impl Pipeline {
    /// A pipeline granting under `rules`, signing with `signer` and `credentials`.
    pub fn new(
        rules: Arc<RulesHandle>,
        signer: Arc<Signer>,
        credentials: Arc<CredentialSource>,
        limits: Limits,
        scoped: Option<Arc<Scoped>>,
    ) -> Self {
        Self {
            rules,
            signer,
            credentials,
            limits,
            scoped,
            uploads: None,
            budgets: None,
        }
    }

    /// This pipeline, with each caller's grants limited to `rate`.
    pub fn with_grant_rate(mut self, rate: crate::budget::Rate) -> Self {
        self.budgets = Some(Arc::new(crate::budget::Budgets::new(
            "grants",
            rate,
            MAX_BUDGETED_CALLERS,
        )));
        self
    }

    /// Takes one grant from `caller`'s budget: the allowing `rule`'s own, when it
    /// sets one (a bucket per caller and rule), else `[limits]`'s.
    fn spend(&self, caller: &Caller, rule: Option<&Rule>) -> Result<(), Error> {
        let Some(budgets) = &self.budgets else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        match rule.and_then(|r| Some((r.line(), r.grant_rate()?))) {
            Some((line, rate)) => budgets
                .take_for_rule(caller.id(), line, rate, now)
                .map_err(|after| Error::OverBudget(after, Some(line))),
            None => budgets
                .take(caller.id(), now)
                .map_err(|after| Error::OverBudget(after, None)),
        }
    }

    /// A refusal the rules did not make (no write rule to pick a key under, another
    /// caller's upload): spent from `[limits]`'s budget, then audited, as
    /// [`Pipeline::authorize_and_spend`] does a rule's.
    fn spend_refusal(
        &self,
        caller: &Caller,
        action: Action,
        bucket: &BucketName,
        target: &str,
    ) -> Result<(), Error> {
        self.spend(caller, None)?;
        audit::denied(caller, action, bucket.as_str(), target);
        Ok(())
    }

    /// Authorizes one action and spends one grant of the caller's budget for it. A
    /// refusal is spent from `[limits]`'s budget: refusals are not free to hammer. The
    /// budget is spent before a refusal is audited: a caller past its budget is
    /// answered RESOURCE_EXHAUSTED and nothing is written (a client looping past its
    /// budget would flood the audit log).
    fn authorize_and_spend<'r>(
        &self,
        rules: &'r rules::Rules,
        caller: &Caller,
        action: Action,
        bucket: &BucketName,
        target: Target<'_>,
    ) -> Result<&'r Rule, Error> {
        let allowed = rules.authorize(caller, action, bucket, target);
        self.spend(caller, allowed.as_ref().ok().copied())?;
        allowed.map_err(|denied| refused(caller, action, bucket, target, denied))
    }

    /// This pipeline, with multipart uploads through `uploads`.
    pub fn with_uploads(mut self, uploads: Uploads) -> Self {
        self.uploads = Some(Arc::new(uploads));
        self
    }

    /// The key a browser upload of `file_name` gets in `bucket`: under the prefix of
    /// the caller's first `write` rule there, a random segment (two uploads of one
    /// name never collide), then the sanitised name. The browser never picks the
    /// prefix. Also answers that rule's `max_object_size`.
    ///
    /// # Errors
    /// `Denied` when no rule lets the caller write in `bucket`.
    pub fn browser_upload_key(
        &self,
        caller: &Caller,
        bucket: &BucketName,
        file_name: &str,
    ) -> Result<(ObjectKey, Option<u64>), Error> {
        let rules = self.rules.current();
        let Some(prefix) = rules.write_prefix(caller, bucket) else {
            // Spent like every refusal (the grant that follows spends when allowed).
            self.spend_refusal(caller, Action::Write, bucket, "")?;
            return Err(Error::Denied(rules.denied_write(caller, bucket)));
        };
        let key = format!(
            "{prefix}{}/{}",
            audit::new_grant_id(),
            crate::upload::sanitize_file_name(file_name)
        );
        let key: ObjectKey = key.parse().map_err(|e: crate::scope::Error| {
            Error::InvalidArgument(vec![FieldViolation {
                field: "filename",
                description: e.to_string(),
            }])
        })?;
        let rule = authorize(&rules, caller, Action::Write, bucket, Target::Key(&key))?;
        Ok((key, rule.max_object_size()))
    }

    /// A presigned GET for one object.
    ///
    /// # Errors
    /// `Denied` without a rule; `Credentials`/`Expiry` when the service cannot sign.
    pub fn read(&self, caller: &Caller, request: &ReadRequest) -> Result<Presigned, Error> {
        self.presign(
            caller,
            Action::Read,
            &request.bucket,
            &request.key,
            Ask {
                ttl: request.ttl,
                overrides_rendering: request.overrides_rendering(),
                content_type: None,
                size: None,
            },
            |signer, credentials, at, ttl| {
                let object = GetObject {
                    bucket: &request.bucket,
                    key: &request.key,
                    version_id: request.version_id.as_ref(),
                    response_content_type: request.response_content_type.as_ref(),
                    response_content_disposition: request.response_content_disposition.as_ref(),
                };
                Signed::from(signer.presign_read(request.method, credentials, &object, at, ttl))
            },
        )
    }

    /// A presigned PUT, or a POST form when a size range was asked, for one object.
    ///
    /// # Errors
    /// As [`Pipeline::read`].
    pub fn write(&self, caller: &Caller, request: &WriteRequest) -> Result<Presigned, Error> {
        self.presign(
            caller,
            Action::Write,
            &request.bucket,
            &request.key,
            Ask {
                ttl: request.ttl,
                overrides_rendering: false,
                content_type: request.content_type.as_ref().map(HeaderText::as_str),
                size: Some(&request.upload),
            },
            |signer, credentials, at, ttl| match request.upload {
                Upload::Put(content_length) => {
                    let signed = signer.presign_put(
                        credentials,
                        &PutObject {
                            bucket: &request.bucket,
                            key: &request.key,
                            content_type: request.content_type.as_ref(),
                            content_length,
                            checksum_sha256: request.checksum_sha256.as_ref(),
                            metadata: &request.metadata,
                            create_only: request.create_only,
                        },
                        at,
                        ttl,
                    );
                    Signed::from(signed)
                }
                Upload::Post(size) => {
                    let signed = signer.presign_post(
                        credentials,
                        &PostObject {
                            bucket: &request.bucket,
                            key: &request.key,
                            content_type: request.content_type.as_ref(),
                            size,
                            checksum_sha256: request.checksum_sha256.as_ref(),
                            metadata: &request.metadata,
                        },
                        at,
                        ttl,
                    );
                    Signed {
                        // The form's URL is the bucket's; the policy in the fields is
                        // the credential.
                        url: Secret::new(signed.url),
                        method: "POST",
                        headers: Vec::new(),
                        form_fields: signed.fields,
                        file_field: signed.file_field,
                    }
                }
            },
        )
    }

    /// authorize → clamp → sign → audit, for one object.
    fn presign(
        &self,
        caller: &Caller,
        action: Action,
        bucket: &BucketName,
        key: &ObjectKey,
        ask: Ask<'_>,
        sign: impl FnOnce(&Signer, &SigningCredentials, SystemTime, Ttl) -> Signed,
    ) -> Result<Presigned, Error> {
        let rules = self.rules.current();
        let rule = self.authorize_and_spend(&rules, caller, action, bucket, Target::Key(key))?;
        if ask.overrides_rendering && !rule.allow_response_overrides() {
            audit::denied(caller, action, bucket.as_str(), key.as_str());
            return Err(Error::OverridesNotAllowed {
                rule_line: rule.line(),
            });
        }
        if action == Action::Write {
            check_content_type(rule, caller, bucket, key, ask.content_type)?;
        }
        if let Some(upload) = ask.size {
            check_object_size(rule, upload)?;
        }
        let credentials = self.credentials.current()?;
        let signing_time = whole_seconds(SystemTime::now());
        let requested = ask.ttl.unwrap_or(self.limits.default_ttl);
        let ttl = Ttl::clamp(
            &[requested, rule.max_ttl(), self.limits.max_ttl],
            signing_time,
            self.limits.signing_deadline(&credentials, signing_time),
        )?;
        let signed = sign(&self.signer, &credentials, signing_time, ttl);
        let expires_at = signing_time + ttl.as_duration();
        let grant_id = audit::new_grant_id();
        audit::issued(&audit::Issued {
            grant_id: &grant_id,
            caller,
            actions: &[action],
            bucket: bucket.as_str(),
            target: key.as_str(),
            ttl_secs: ttl.as_duration().as_secs(),
            expires_at,
            rule_line: rule.line(),
            session_grant_id: None,
        });
        Ok(Presigned {
            url: signed.url,
            method: signed.method,
            headers: signed.headers,
            form_fields: signed.form_fields,
            file_field: signed.file_field,
            expires_at,
            grant_id,
        })
    }

    /// STS credentials confined to one prefix: every asked action must be allowed,
    /// the shortest max TTL among the rules applies, and cached credentials for the
    /// same scope are reused while they have enough life left.
    ///
    /// `deadline` is how long the caller's door lets the call take: a session STS has
    /// not made by just before it is answered [`sts::Error::Pending`], whichever door
    /// the call came through, while the STS call goes on and fills the cache.
    ///
    /// # Errors
    /// `NotConfigured` without `sts.role_arn`; `Denied`; `InvalidArgument` when the
    /// session policy would not fit STS's limit; `Sts` when STS fails or is pending.
    pub async fn assume(
        &self,
        caller: &Caller,
        request: AssumeRequest,
        deadline: Duration,
    ) -> Result<ScopedGrant, Error> {
        let scoped = self.scoped.as_ref().ok_or(Error::NotConfigured(
            "AssumeScoped is not configured on this service (no sts.role_arn)",
        ))?;
        let asked = request.access;
        let actions: Vec<Action> = [
            (asked.read, Action::AssumeRead),
            (asked.write, Action::AssumeWrite),
            (asked.list, Action::List),
        ]
        .into_iter()
        .filter_map(|(wanted, action)| wanted.then_some(action))
        .collect();
        // The service-wide ceiling bounds scoped credentials as it bounds URLs (settings
        // refuse a ceiling under STS's 15 minutes while AssumeScoped is on).
        let mut rule_max = self.limits.max_ttl;
        // The rule whose max_ttl is `rule_max`; none while it is the service's.
        let mut shortest_rule = None;
        let mut delete = false;
        let mut rule_line = 0;
        let rules = self.rules.current();
        for (i, &action) in actions.iter().enumerate() {
            let target = Target::Prefix(&request.prefix);
            // One grant spent per call, under the rule of its first action.
            let rule = if i == 0 {
                self.authorize_and_spend(&rules, caller, action, &request.bucket, target)?
            } else {
                authorize(&rules, caller, action, &request.bucket, target)?
            };
            if rule.max_ttl() < rule_max {
                rule_max = rule.max_ttl();
                shortest_rule = Some(rule.line());
            }
            rule_line = rule.line();
            if action == Action::AssumeWrite {
                delete = rule.allow_delete();
            }
        }
        // The rules snapshot is a borrowed read, not held across the call to STS.
        drop(rules);
        check_min_left(scoped, request.min_left, rule_max, shortest_rule)?;
        let access = policy::Access {
            read: asked.read,
            write: asked.write,
            list: asked.list,
            delete,
        };
        let grant_id = audit::new_grant_id();
        let requested = match request.duration {
            Some(asked) => asked,
            // No length asked, but more life left than the default session has (the
            // SDK endpoints ask for 20 minutes): the longest session the rule allows.
            None if request.min_left >= scoped.durations.default => Duration::MAX,
            None => scoped.durations.default,
        };
        // The length asked for, without role chaining's cap: that depends on the
        // service's own credentials, which a cache hit needs not.
        let session = scoped.durations.session(requested, rule_max, false);
        if request.duration.is_some() && request.min_left >= session {
            // A fresh session has its whole length left and no more: the call could
            // never be served from the cache, and would make an STS session each time.
            return Err(Error::FailedPrecondition(format!(
                "credentials with {} of life left were asked for (min_remaining), but the \
                 session asked for lasts {} (duration, cut to the rule's and the role's \
                 limits): ask for a longer duration or less min_remaining",
                crate::core::duration::display(request.min_left),
                crate::core::duration::display(session),
            )));
        }
        let key = sts::ScopeRef {
            caller: caller.id(),
            bucket: &request.bucket,
            prefix: &request.prefix,
            access,
            session,
        };
        let credentials = match scoped.broker.cached(key, rule_max, request.min_left) {
            Some(hit) => hit,
            None => {
                let scope = key.to_scope();
                let policy = policy::session_policy(
                    scoped.partition,
                    &request.bucket,
                    &request.prefix,
                    &access,
                    scoped.kms_key.as_ref(),
                )
                .map_err(|e| {
                    Error::InvalidArgument(vec![FieldViolation {
                        field: "prefix",
                        description: e.to_string(),
                    }])
                })?;
                let role_chaining = match scoped.durations.role_chaining {
                    Some(chaining) => chaining,
                    None => self.credentials.current()?.session_token.is_some(),
                };
                let asked = sts::Request {
                    scope: &scope,
                    policy: &policy,
                    duration: scoped.durations.session(requested, rule_max, role_chaining),
                    max_life: rule_max,
                    min_left: request.min_left,
                    grant_id: &grant_id,
                };
                // From here: what came before (the rules, the policy) takes microseconds,
                // and a hit, which waits on nothing, reads no clock.
                let sts_wait = wait_before(deadline);
                tokio::time::timeout(sts_wait, scoped.broker.credentials(&asked))
                    .await
                    .map_err(|_| sts::Error::Pending(sts_wait))??
            }
        };
        let left = credentials
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        audit::issued(&audit::Issued {
            grant_id: &grant_id,
            caller,
            actions: &actions,
            bucket: request.bucket.as_str(),
            target: request.prefix.as_str(),
            ttl_secs: left.as_secs(),
            expires_at: credentials.expires_at,
            rule_line,
            session_grant_id: Some(&credentials.session_grant_id),
        });
        Ok(ScopedGrant {
            credentials,
            bucket: request.bucket,
            prefix: request.prefix,
            region: scoped.region.clone(),
            endpoint: scoped.endpoint.clone(),
            force_path_style: scoped.force_path_style,
            account_id: scoped.account_id.clone(),
            grant_id,
        })
    }
}

/// How long a call whose door gives it `deadline` may wait on STS or the store: until
/// just before it, so that a slow upstream is answered UNAVAILABLE (gRPC) or 503
/// (HTTP) with a retry hint rather than a bare deadline error: retry policies retry
/// those, and the retry gets what the upstream call goes on to make. The room left is
/// for encoding and sending the answer, and for the time the request spent reaching
/// the pipeline, which the caller's clock already counts: on a busy host a tenth of the
/// deadline proved too little.
fn wait_before(deadline: Duration) -> Duration {
    deadline.saturating_sub((deadline / 5).min(Duration::from_millis(250)))
}

/// What a presigned grant asks beyond its object.
struct Ask<'a> {
    /// Requested lifetime; `None`: the default.
    ttl: Option<Duration>,
    /// Whether it changes how a browser treats the object (see
    /// [`ReadRequest::overrides_rendering`]).
    overrides_rendering: bool,
    /// A write's pinned content type, which its rule may restrict.
    content_type: Option<&'a str>,
    /// A write's size pin, which its rule's `max_object_size` may bound.
    size: Option<&'a Upload>,
}

/// A write's size pin, held to its rule's `max_object_size`: the largest object the
/// grant lets through must be within it, so a PUT must pin its length and a POST
/// form's range must end within it (multipart uploads are held to it at their start
/// and at their completion). Refused as a request to change, naming the field.
fn check_object_size(rule: &Rule, upload: &Upload) -> Result<(), Error> {
    let Some(max) = rule.max_object_size() else {
        return Ok(());
    };
    let line = rule.line();
    let violation = match *upload {
        Upload::Put(Some(length)) if length > max => FieldViolation {
            field: "content_length",
            description: format!(
                "is {length} bytes; the rule (line {line}) allows objects of at most {max}"
            ),
        },
        Upload::Put(None) => FieldViolation {
            field: "content_length",
            description: format!(
                "required: the rule (line {line}) allows objects of at most {max} bytes; pin \
                 the upload's length, or ask for a form with a content_length_range up to {max}"
            ),
        },
        Upload::Post(range) if range.max() > max => FieldViolation {
            field: "content_length_range.max_bytes",
            description: format!(
                "is {}; the rule (line {line}) allows objects of at most {max} bytes",
                range.max()
            ),
        },
        Upload::Put(Some(_)) | Upload::Post(_) => return Ok(()),
    };
    Err(Error::InvalidArgument(vec![violation]))
}

/// A write's pinned `content_type`, held to its rule's `content_types`: a type that
/// renders as a page (`text/html`, `image/svg+xml`) served from the store's origin is
/// the uploader's to choose otherwise. Refused and audited as a denial.
fn check_content_type(
    rule: &Rule,
    caller: &Caller,
    bucket: &BucketName,
    key: &ObjectKey,
    content_type: Option<&str>,
) -> Result<(), Error> {
    if rule.allows_content_type(content_type) {
        return Ok(());
    }
    audit::denied(caller, Action::Write, bucket.as_str(), key.as_str());
    Err(Error::ContentTypeNotAllowed {
        rule_line: rule.line(),
        allowed: rule.content_types().join(", "),
        sent: content_type.map(str::to_owned),
    })
}

/// What a signer produced, before the pipeline adds expiry and grant id.
struct Signed {
    url: Secret<String>,
    method: &'static str,
    headers: Vec<(String, String)>,
    form_fields: Vec<(String, String)>,
    file_field: &'static str,
}

impl From<PresignedRequest> for Signed {
    fn from(signed: PresignedRequest) -> Self {
        Signed {
            url: signed.url,
            method: signed.method,
            headers: signed.headers,
            form_fields: Vec::new(),
            file_field: "",
        }
    }
}

/// The rule that allows `action`, or a refusal that is audited; spends nothing (for
/// a call that spent under its first action already).
fn authorize<'r>(
    rules: &'r rules::Rules,
    caller: &Caller,
    action: Action,
    bucket: &BucketName,
    target: Target<'_>,
) -> Result<&'r Rule, Error> {
    rules
        .authorize(caller, action, bucket, target)
        .map_err(|denied| refused(caller, action, bucket, target, denied))
}

/// `denied`, audited.
fn refused(
    caller: &Caller,
    action: Action,
    bucket: &BucketName,
    target: Target<'_>,
    denied: rules::Denied,
) -> Error {
    let target = match target {
        Target::Key(key) => key.as_str(),
        Target::Prefix(prefix) => prefix.as_str(),
    };
    audit::denied(caller, action, bucket.as_str(), target);
    Error::Denied(denied)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_waited_for_until_just_before_the_calls_deadline() {
        // A fifth of the deadline, at most 250 ms, is left to send the answer.
        assert_eq!(
            wait_before(Duration::from_millis(900)),
            Duration::from_millis(720)
        );
        assert_eq!(
            wait_before(Duration::from_secs(5)),
            Duration::from_millis(4750)
        );
        assert_eq!(
            wait_before(Duration::from_secs(10)),
            Duration::from_millis(9750)
        );
        assert_eq!(wait_before(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn whole_seconds_drops_the_fraction() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(
            whole_seconds(t),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }

    #[test]
    fn violations_report_every_field() {
        let mut v = Violations::default();
        let request = ReadRequest::parse(
            &mut v,
            RawRead {
                bucket: "",
                key: "a/../b",
                ..RawRead::default()
            },
            |_| Some(None),
        );
        let Err(Error::InvalidArgument(violations)) = v.finish(request) else {
            panic!("two bad fields must be refused");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field).collect();
        assert_eq!(fields, ["bucket", "key"]);
    }

    #[test]
    fn post_upload_refuses_create_only_and_filename_with_the_rest() {
        let mut v = Violations::default();
        let request = WriteRequest::parse(
            &mut v,
            RawWrite {
                bucket: "demo",
                key: "up/${filename}",
                content_type: "",
                checksum_sha256: "",
                metadata: std::iter::empty::<(&str, &str)>(),
                size: RawSize::Range { min: 1, max: 10 },
                create_only: true,
            },
            |_| Some(None),
        );
        let Err(Error::InvalidArgument(violations)) = v.finish(request) else {
            panic!("a POST with create_only and ${{filename}} must be refused");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field).collect();
        assert_eq!(fields, ["key", "create_only"]);
    }
}
