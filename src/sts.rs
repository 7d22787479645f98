//! Scoped temporary credentials from STS: AssumeRole with an inline session policy,
//! a bounded cache, and one STS call per scope however many callers miss at once.
//!
//! - The cache key is the whole scope (caller, bucket, prefix, access); credentials
//!   are reused while more than `reuse_fraction` of their life (and at least
//!   `reuse_min_remaining`) is left, and never when they would outlive the rule that
//!   allows them.
//! - Single flight: the first miss starts the AssumeRole in its own task and every
//!   concurrent caller of that scope waits for the same result. Because the call runs
//!   in its own task, a caller that gives up (deadline, cancellation) leaves the others
//!   waiting on a call that still completes.
//! - Errors are handed to the callers waiting at the time and then forgotten: the next
//!   call tries again.
//! - Throttling and transient errors are retried by the SDK's standard retry strategy
//!   (exponential backoff with jitter, `max_attempts`), the whole call bounded by
//!   `call_timeout`; what is left is UNAVAILABLE with a retry hint.
//!
//! The session policy itself is built by `policy`; this module only carries it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::arn::RoleArn;
use crate::aws::Unanswered;
use crate::core::limits::{STS_MIN_DURATION, STS_ROLE_CHAINING_MAX};
use crate::policy::{Access, SessionPolicy};
use crate::scope::{BucketName, Prefix};
use crate::secret::Secret;

/// How the broker calls STS and caches what it gets: `[sts]`, validated by `config`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// STS endpoint URL, validated; `None` for the regional AWS endpoint.
    pub endpoint: Option<String>,
    /// Most cached credential sets kept.
    pub cache_max_entries: usize,
    /// Cached credentials are reused while more than this fraction of their life is
    /// left (and at least `reuse_min_remaining`).
    pub reuse_fraction: f64,
    /// Cached credentials are never handed out with less than this left.
    pub reuse_min_remaining: Duration,
    /// Bound on one AssumeRole, retries included.
    pub call_timeout: Duration,
    /// Attempts per AssumeRole.
    pub max_attempts: u32,
    /// Sets SourceIdentity to the caller id.
    pub source_identity: bool,
    /// Adds session tags `caller` and `grant`.
    pub session_tags: bool,
    /// Each caller's budget of cache misses (new STS sessions).
    pub miss_rate: crate::budget::Rate,
    /// Most AssumeRole calls in flight at once, for all callers.
    pub max_pending: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            endpoint: None,
            cache_max_entries: 10_000,
            reuse_fraction: 0.5,
            reuse_min_remaining: Duration::from_secs(300),
            call_timeout: Duration::from_secs(5),
            max_attempts: 3,
            source_identity: true,
            session_tags: false,
            miss_rate: crate::budget::Rate {
                per_second: 1.0,
                burst: 60.0,
            },
            max_pending: 64,
        }
    }
}

/// The session lengths STS may give: `sts.default_duration`,
/// `sts.role_max_duration`, `sts.role_chaining`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durations {
    /// Session length when a request names none.
    pub default: Duration,
    /// The role's `MaxSessionDuration`.
    pub role_max: Duration,
    /// Whether this service's own credentials are an assumed role; `None`: decided
    /// per call from whether they carry a session token.
    pub role_chaining: Option<bool>,
}

impl Default for Durations {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(3600),
            role_max: Duration::from_secs(3600),
            role_chaining: None,
        }
    }
}

impl Durations {
    /// The session length to ask STS for: `requested` cut to the rule's max, the
    /// role's max, and 1 hour under role chaining, and at least STS's 15 minutes.
    pub fn session(
        &self,
        requested: Duration,
        rule_max: Duration,
        role_chaining: bool,
    ) -> Duration {
        let mut d = requested.min(rule_max).min(self.role_max);
        if role_chaining {
            d = d.min(STS_ROLE_CHAINING_MAX);
        }
        Duration::from_secs(d.as_secs()).max(STS_MIN_DURATION)
    }
}

/// How far the expiry STS answers may sit from the one asked for (clocks differ).
const EXPIRY_SKEW: Duration = Duration::from_secs(60);

/// Why no credentials could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("STS is throttling requests")]
    Throttled,
    /// No answer to act on; the cause of a failed connection is its `source`.
    #[error("no usable answer from STS: {0}")]
    Unreachable(#[source] crate::aws::Unanswered),
    /// STS answered with a server error (5xx): its side failed, a retry may not.
    #[error("STS failed (HTTP {0})")]
    Failed(u16),
    #[error("STS refused the request ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("the STS call ended without a result")]
    Abandoned,
    /// The call had to answer (its deadline was near) before STS did. The STS call
    /// goes on in its own task and fills the cache for the retry; whether STS then
    /// fails is its own event, logged once, not once per caller that gave up.
    #[error(
        "STS had not answered after {}, and this call must answer before its \
         deadline; the credentials are still being made",
        crate::core::duration::display(*.0)
    )]
    Pending(Duration),
    /// The caller used up its budget of new STS sessions.
    #[error(
        "this caller asked for too many new credential sets; retry in {}",
        crate::core::duration::whole_seconds_up(*.0)
    )]
    OverBudget(Duration),
    /// Too many STS calls are already in flight.
    #[error("too many STS calls are in flight; retry shortly")]
    Busy,
}

impl Error {
    /// Whether retrying later may help (throttling, unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Throttled
                | Error::Unreachable(_)
                | Error::Failed(_)
                | Error::Abandoned
                | Error::Pending(_)
        )
    }
}

/// What a set of scoped credentials is for: the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Caller id the credentials were issued to.
    pub caller: String,
    /// The bucket.
    pub bucket: BucketName,
    /// The prefix.
    pub prefix: Prefix,
    /// The access granted.
    pub access: Access,
    /// The session length asked for, cut to the rule's, the role's and STS's limits
    /// (not to role chaining's, which applies to every session alike). Credentials of
    /// another length are another entry: a caller that asks for a short session never
    /// gets a longer one made for another request, nor one made shorter for another.
    pub session: Duration,
}

impl Scope {
    /// The scope as [`ScopeRef`], to look it up by.
    pub fn as_scope_ref(&self) -> ScopeRef<'_> {
        ScopeRef {
            caller: &self.caller,
            bucket: &self.bucket,
            prefix: &self.prefix,
            access: self.access,
            session: self.session,
        }
    }
}

/// Hashed as its [`ScopeRef`] is, by construction, so that either finds the entry.
impl std::hash::Hash for Scope {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_scope_ref().hash(state);
    }
}

/// A [`Scope`] as a request names it, borrowed: a cache hit is looked up with it and
/// copies nothing; the owned [`Scope`] is made on a miss, for the entry it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeRef<'a> {
    /// Caller id the credentials are for.
    pub caller: &'a str,
    /// The bucket.
    pub bucket: &'a BucketName,
    /// The prefix.
    pub prefix: &'a Prefix,
    /// The access asked for.
    pub access: Access,
    /// The session length, as in [`Scope::session`].
    pub session: Duration,
}

impl ScopeRef<'_> {
    /// The owned scope, for a new cache entry.
    pub fn to_scope(self) -> Scope {
        Scope {
            caller: self.caller.to_owned(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            access: self.access,
            session: self.session,
        }
    }
}

impl hashbrown::Equivalent<Scope> for ScopeRef<'_> {
    fn equivalent(&self, key: &Scope) -> bool {
        *self == key.as_scope_ref()
    }
}

/// The cache of scoped credentials: SipHash with a random key (`RandomState`), as
/// `std`'s map, since callers choose the prefixes it is keyed by.
type Cache = hashbrown::HashMap<Scope, Entry, std::hash::RandomState>;

/// Temporary credentials for one scope.
#[derive(Debug)]
pub struct ScopedCredentials {
    /// Access key id (not secret).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret<String>,
    /// Session token.
    pub session_token: Secret<String>,
    /// When STS says they expire.
    pub expires_at: SystemTime,
    /// When they were issued (for the reuse fraction).
    pub issued_at: SystemTime,
    /// Grant id of the call that obtained them, also in the STS session name.
    pub session_grant_id: String,
}

/// One request for scoped credentials.
#[derive(Debug)]
pub struct Request<'a> {
    /// The scope.
    pub scope: &'a Scope,
    /// The session policy for the scope.
    pub policy: &'a SessionPolicy,
    /// Session length to ask STS for, already clamped to what STS allows.
    pub duration: Duration,
    /// Longest life a reused credential may have left (the rule's max TTL).
    pub max_life: Duration,
    /// Least life a reused credential must have left, beyond `sts.reuse_min_remaining`
    /// (a front door whose clients refresh early asks for more).
    pub min_left: Duration,
    /// Grant id of this call, put in the session name when a new session is made.
    pub grant_id: &'a str,
}

type Outcome = Option<Result<Arc<ScopedCredentials>, Error>>;

enum Entry {
    Ready(Arc<ScopedCredentials>),
    Pending(watch::Receiver<Outcome>),
}

struct Inner {
    client: aws_sdk_sts::Client,
    role_arn: RoleArn,
    config: Settings,
    /// Each caller's budget of cache misses.
    misses: crate::budget::Budgets,
    cache: Mutex<Cache>,
    /// Where STS calls run.
    runtime: tokio::runtime::Handle,
}

/// Callers whose miss budgets are tracked at once (bounded memory).
const MAX_BUDGETED_CALLERS: usize = 100_000;

/// Issues and caches scoped credentials.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("role_arn", &self.inner.role_arn.as_str())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker assuming `role_arn` through `client`, its STS calls on `runtime`
    /// (one that outlives the serving threads).
    pub fn new(
        client: aws_sdk_sts::Client,
        role_arn: RoleArn,
        config: Settings,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                role_arn,
                misses: crate::budget::Budgets::new(
                    "new STS sessions",
                    config.miss_rate,
                    MAX_BUDGETED_CALLERS,
                ),
                config,
                cache: Mutex::new(Cache::default()),
                runtime,
            }),
        }
    }

    /// Builds the STS client for `config` from the service's SDK config: the same
    /// credentials chain, `sts.endpoint` if set, the standard retry strategy with
    /// `max_attempts`, and `call_timeout` on the whole operation.
    pub fn client(
        aws: &aws_config::SdkConfig,
        config: &Settings,
        region: &str,
    ) -> aws_sdk_sts::Client {
        let mut builder = aws_sdk_sts::config::Builder::from(aws)
            .region(aws_sdk_sts::config::Region::new(region.to_owned()))
            .retry_config(
                aws_sdk_sts::config::retry::RetryConfig::standard()
                    .with_max_attempts(config.max_attempts),
            )
            .timeout_config(
                aws_sdk_sts::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(config.call_timeout)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        aws_sdk_sts::Client::from_conf(builder.build())
    }

    /// Credentials for `scope` from the cache, when they have the life a call asks for
    /// left: what [`Broker::credentials`] answers first, asked without its request, so
    /// that a hit (the common call) builds no session policy. A scope is cached only
    /// after its policy was built and accepted, and the policy depends on nothing
    /// else that can change, so a hit needs none.
    pub fn cached(
        &self,
        scope: ScopeRef<'_>,
        max_life: Duration,
        min_left: Duration,
    ) -> Option<Arc<ScopedCredentials>> {
        self.ready(self.lock().get(&scope), max_life, min_left)
    }

    /// The credentials of a cache entry that are ready and have the life asked for
    /// left, counted as a hit.
    fn ready(
        &self,
        entry: Option<&Entry>,
        max_life: Duration,
        min_left: Duration,
    ) -> Option<Arc<ScopedCredentials>> {
        match entry {
            Some(Entry::Ready(c)) if self.reusable(c, max_life, min_left, SystemTime::now()) => {
                crate::metrics::sts_cache(crate::metrics::CacheOutcome::Hit);
                Some(c.clone())
            }
            _ => None,
        }
    }

    /// Credentials for `request.scope`: from the cache while they have enough life
    /// left, else from one AssumeRole shared by every concurrent caller of the scope.
    ///
    /// # Errors
    /// [`Error`] from STS; transient ones ([`Error::is_transient`]) may be retried.
    pub async fn credentials(
        &self,
        request: &Request<'_>,
    ) -> Result<Arc<ScopedCredentials>, Error> {
        let mut rx = {
            let mut cache = self.lock();
            let entry = cache.get(request.scope);
            if let Some(c) = self.ready(entry, request.max_life, request.min_left) {
                return Ok(c);
            }
            match entry {
                // A call whose task died without an answer (its sender is gone) is
                // not joined: it would fail every caller of the scope for good.
                Some(Entry::Pending(rx)) if rx.has_changed().is_ok() => {
                    crate::metrics::sts_cache(crate::metrics::CacheOutcome::Joined);
                    rx.clone()
                }
                _ => {
                    crate::metrics::sts_cache(crate::metrics::CacheOutcome::Miss);
                    // A miss costs an AssumeRole from the account's shared quota:
                    // bounded in flight for everyone, and budgeted per caller, so that
                    // one caller asking for ever new prefixes cannot use it up.
                    let pending = cache
                        .values()
                        .filter(|e| matches!(e, Entry::Pending(_)))
                        .count();
                    if pending >= self.inner.config.max_pending {
                        return Err(Error::Busy);
                    }
                    self.inner
                        .misses
                        .take(&request.scope.caller, std::time::Instant::now())
                        .map_err(Error::OverBudget)?;
                    self.make_room(&mut cache, &request.scope.caller);
                    let (tx, rx) = watch::channel(None);
                    cache.insert(request.scope.clone(), Entry::Pending(rx.clone()));
                    let fetch = self.clone().fetch(
                        request.scope.clone(),
                        request.policy.as_str().to_owned(),
                        request.duration,
                        request.grant_id.to_owned(),
                        tx,
                    );
                    // A child of the call that caused it, though it runs in its own
                    // task. Its fields: what was asked and how it ended, never the
                    // policy's credentials or the response's.
                    let span = tracing::info_span!(
                        "sts.AssumeRole",
                        otel.kind = "client",
                        rpc.system = "aws-api",
                        rpc.service = "STS",
                        rpc.method = "AssumeRole",
                        grant_id = request.grant_id,
                        duration_secs = crate::core::span_int(request.duration.as_secs()),
                        result = tracing::field::Empty,
                    );
                    // On the runtime the broker was made on, which outlives the
                    // serving threads: the SDK's first call does blocking work (its
                    // TLS roots), which on a serving thread would hold up every call
                    // of that thread, their deadline answers included.
                    self.inner.runtime.spawn(fetch.instrument(span));
                    rx
                }
            }
        };
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::Abandoned)?;
        outcome.clone().unwrap_or(Err(Error::Abandoned))
    }

    /// The AssumeRole behind a miss, run in its own task so that no caller's
    /// cancellation cuts it short; publishes the result to the cache and the waiters.
    async fn fetch(
        self,
        scope: Scope,
        policy: String,
        duration: Duration,
        grant_id: String,
        tx: watch::Sender<Outcome>,
    ) {
        let started = std::time::Instant::now();
        let result = self
            .assume_role(&scope, policy, duration, &grant_id)
            .await
            .map(Arc::new);
        let outcome = match &result {
            Ok(_) => crate::metrics::StsResult::Issued,
            Err(Error::Throttled) => crate::metrics::StsResult::Throttled,
            Err(Error::Unreachable(_) | Error::Failed(_) | Error::Abandoned) => {
                crate::metrics::StsResult::Unreachable
            }
            Err(Error::Refused { .. }) => crate::metrics::StsResult::Refused,
            // Refused before any call, or a caller's wait; a fetch never ends this way.
            Err(Error::OverBudget(_) | Error::Busy | Error::Pending(_)) => {
                crate::metrics::StsResult::Refused
            }
        };
        tracing::Span::current().record("result", outcome.as_str());
        crate::metrics::sts_call(outcome, started.elapsed());
        // Logged here, once per STS call, whether or not any caller still waits for it
        // (callers whose deadline came first have been answered already).
        match &result {
            Ok(_) => {}
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %crate::core::text::Chain(e), "STS unavailable");
            }
            // STS's code and message are for the operator (a trust policy, a missing
            // permission).
            Err(e) => tracing::error!(error = %e, "STS refused AssumeRole"),
        }
        {
            let mut cache = self.lock();
            match &result {
                Ok(c) => {
                    cache.insert(scope, Entry::Ready(c.clone()));
                }
                Err(_) => {
                    cache.remove(&scope);
                }
            }
        }
        // No receiver left is fine: every caller gave up, the cache still has it.
        let _ = tx.send(Some(result));
    }

    async fn assume_role(
        &self,
        scope: &Scope,
        policy: String,
        duration: Duration,
        grant_id: &str,
    ) -> Result<ScopedCredentials, Error> {
        let config = &self.inner.config;
        let issued_at = SystemTime::now();
        let mut call = self
            .inner
            .client
            .assume_role()
            .role_arn(self.inner.role_arn.as_str())
            .role_session_name(session_name(&scope.caller, grant_id))
            .policy(policy)
            .duration_seconds(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX));
        if config.source_identity {
            call = call.source_identity(sanitize(&scope.caller, 64));
        }
        if config.session_tags {
            for (key, value) in [
                ("caller", sanitize(&scope.caller, 256)),
                ("grant", grant_id.to_owned()),
            ] {
                call = call.tags(
                    aws_sdk_sts::types::Tag::builder()
                        .key(key)
                        .value(value)
                        .build()
                        .map_err(|e| Error::Refused {
                            code: "InvalidTag".into(),
                            message: e.to_string(),
                        })?,
                );
            }
        }
        // The SDK's operation timeout bounds the call; this outer bound also covers
        // credential resolution for signing the call.
        let response = tokio::time::timeout(
            config.call_timeout + Duration::from_millis(250),
            call.send(),
        )
        .await
        .map_err(|_| Error::Unreachable(Unanswered::Deadline(config.call_timeout)))?
        .map_err(classify)?;
        // A success without all three secrets and a future expiry (a body cut short, a
        // proxy's answer) is no answer: nothing is cached, granted or audited.
        let malformed = || Error::Unreachable(Unanswered::Malformed(200));
        let secret = |value: &str| !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic());
        let credentials = response
            .credentials()
            .filter(|c| {
                secret(c.access_key_id())
                    && secret(c.secret_access_key())
                    && secret(c.session_token())
            })
            .ok_or_else(malformed)?;
        // The expiry of the session asked for, give or take the clocks' skew: STS
        // makes the session asked for or refuses it, so one much shorter (which would
        // miss the life a caller asked to have left, and have SDKs refresh in a loop)
        // or far longer is not STS's answer to this call.
        let now = SystemTime::now();
        let answered = SystemTime::try_from(*credentials.expiration()).ok();
        let expires_at = answered
            .filter(|at| {
                *at > now + EXPIRY_SKEW
                    && *at >= now + duration.saturating_sub(EXPIRY_SKEW * 5)
                    && *at <= now + duration + EXPIRY_SKEW * 5
            })
            .ok_or_else(|| {
                // The operator of an STS-compatible service learns why, the caller that
                // it may retry.
                tracing::warn!(
                    // Negative for an expiry already past.
                    expires_in_secs = answered.map(|at| match at.duration_since(now) {
                        Ok(left) => crate::core::span_int(left.as_secs()),
                        Err(past) => -crate::core::span_int(past.duration().as_secs()),
                    }),
                    asked_secs = crate::core::span_int(duration.as_secs()),
                    "STS answered credentials whose expiry is not that of the session asked \
                     for (give or take 5 minutes): not handed out"
                );
                malformed()
            })?;
        let packed_policy_percent = response.packed_policy_size();
        if let Some(percent) = packed_policy_percent {
            crate::metrics::packed_policy_percent(percent);
        }
        if let Some(percent) = packed_policy_percent.filter(|p| *p > 80) {
            tracing::warn!(
                packed_policy_percent = percent,
                bucket = %scope.bucket,
                prefix = %scope.prefix,
                "session policy is close to STS's packed size limit; shorten the prefix"
            );
        }
        tracing::info!(
            caller = %scope.caller,
            bucket = %scope.bucket,
            prefix = %scope.prefix,
            grant_id,
            duration_secs = crate::core::span_int(duration.as_secs()),
            packed_policy_percent,
            "AssumeRole issued scoped credentials"
        );
        Ok(ScopedCredentials {
            access_key_id: credentials.access_key_id().to_owned(),
            secret_access_key: Secret::new(credentials.secret_access_key().to_owned()),
            session_token: Secret::new(credentials.session_token().to_owned()),
            expires_at,
            issued_at,
            session_grant_id: grant_id.to_owned(),
        })
    }

    /// Whether cached credentials may be handed out at `now`.
    fn reusable(
        &self,
        c: &ScopedCredentials,
        max_life: Duration,
        min_left: Duration,
        now: SystemTime,
    ) -> bool {
        let config = &self.inner.config;
        let Ok(left) = c.expires_at.duration_since(now) else {
            return false;
        };
        let life = c.expires_at.duration_since(c.issued_at).unwrap_or_default();
        left > config.reuse_min_remaining.max(min_left)
            && left > life.mul_f64(config.reuse_fraction)
            && left <= max_life
    }

    /// Keeps the cache within `cache_max_entries`: drops expired entries, then the
    /// ready entries that expire first. Entries in flight are never dropped (their
    /// waiters hold the only way to their result).
    fn make_room(&self, cache: &mut Cache, caller: &str) {
        let max = self.inner.config.cache_max_entries;
        if cache.len() < max {
            return;
        }
        let now = SystemTime::now();
        let before = cache.len();
        cache.retain(|_, e| match e {
            Entry::Ready(c) => c.expires_at > now,
            Entry::Pending(_) => true,
        });
        let mut evicted = before - cache.len();
        while cache.len() >= max {
            // Fair eviction: the caller that needs room gives up its own oldest entry
            // first; only a caller with none in the cache displaces another's.
            let oldest = |own: bool| {
                cache
                    .iter()
                    .filter(|(k, _)| !own || k.caller == caller)
                    .filter_map(|(k, e)| match e {
                        Entry::Ready(c) => Some((k, c.expires_at)),
                        Entry::Pending(_) => None,
                    })
                    .min_by_key(|(_, at)| *at)
                    .map(|(k, _)| k.clone())
            };
            let oldest = oldest(true).or_else(|| oldest(false));
            match oldest {
                Some(k) => {
                    cache.remove(&k);
                    evicted += 1;
                }
                None => break,
            }
        }
        crate::metrics::sts_cache_evictions(u64::try_from(evicted).unwrap_or(u64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner
            .cache
            .lock()
            .expect("the cache lock is never held across a panic")
    }
}

/// Maps an SDK failure to what the caller can do about it.
fn classify(
    error: SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError, HttpResponse>,
) -> Error {
    let answer = match Unanswered::from_sdk(error) {
        // Not sent at all: no retry will build it either.
        Ok(unsent @ (Unanswered::Construction | Unanswered::Unknown)) => {
            return Error::Refused {
                code: "Unknown".into(),
                message: unsent.to_string(),
            };
        }
        Ok(unanswered) => return Error::Unreachable(unanswered),
        Err(answer) => answer,
    };
    match answer.code() {
        Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => Error::Throttled,
        // A server error is STS's failure, whatever its body says (often nothing
        // parseable): transient, never reported as a refusal of our request.
        _ if let Some(status) = answer
            .raw_response()
            .map(|r| r.status())
            .filter(|s| s.is_server_error()) =>
        {
            Error::Failed(status.as_u16())
        }
        code => Error::Refused {
            code: code.unwrap_or("Unknown").to_owned(),
            message: crate::aws::describe_answer(&answer),
        },
    }
}

/// Keeps the characters STS allows in session names and source identities
/// (`[\w+=,.@-]`), replacing others with `-`, and cuts to `max` characters.
pub fn sanitize(value: &str, max: usize) -> String {
    let mut out: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    while out.len() < 2 {
        out.push('-');
    }
    out
}

/// `sg-<grant id>-<caller>`, at most 64 characters: the grant id first, so it
/// survives the cut and joins the store's trail (CloudTrail) to our audit log.
pub fn session_name(caller: &str, grant_id: &str) -> String {
    let head = format!("sg-{}", sanitize(grant_id, 32));
    let room = 64 - head.len() - 1;
    format!("{head}-{}", sanitize(caller, room))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher as _;

    /// A broker whose client is never called: these tests work on the cache alone.
    fn broker(config: Settings) -> Broker {
        let client = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::new()
                .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
                .region(aws_sdk_sts::config::Region::new("us-east-1"))
                .build(),
        );
        // Its STS calls' runtime, for the tests that are not async themselves.
        static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> =
            std::sync::LazyLock::new(|| tokio::runtime::Runtime::new().unwrap());
        Broker::new(
            client,
            "arn:aws:iam::123456789012:role/r".parse().unwrap(),
            config,
            tokio::runtime::Handle::try_current().unwrap_or_else(|_| RUNTIME.handle().clone()),
        )
    }

    fn credentials(issued_at: SystemTime, life: Duration) -> Arc<ScopedCredentials> {
        Arc::new(ScopedCredentials {
            access_key_id: "ASIA".into(),
            secret_access_key: Secret::new("s".into()),
            session_token: Secret::new("t".into()),
            expires_at: issued_at + life,
            issued_at,
            session_grant_id: "g".into(),
        })
    }

    fn scope(prefix: &str) -> Scope {
        Scope {
            caller: "dev:demo".into(),
            bucket: "demo".parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            access: Access {
                read: true,
                ..Access::default()
            },
            session: HOUR,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Read access to `prefix` in bucket `demo`, asked of `b`.
    async fn ask_read(b: &Broker, prefix: &str) -> Result<Arc<ScopedCredentials>, Error> {
        let policy = crate::policy::session_policy(
            crate::policy::Partition::Aws,
            &"demo".parse().unwrap(),
            &prefix.parse().unwrap(),
            &Access {
                read: true,
                ..Access::default()
            },
            None,
        )
        .unwrap();
        b.credentials(&Request {
            scope: &scope(prefix),
            policy: &policy,
            duration: STS_MIN_DURATION,
            max_life: HOUR,
            min_left: Duration::ZERO,
            grant_id: "g",
        })
        .await
    }

    #[test]
    fn credentials_are_reused_while_more_than_half_their_life_is_left() {
        let b = broker(Settings::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = credentials(t0, HOUR);
        assert!(b.reusable(&c, HOUR, Duration::ZERO, t0 + Duration::from_secs(60)));
        assert!(b.reusable(&c, HOUR, Duration::ZERO, t0 + Duration::from_secs(1799)));
        assert!(!b.reusable(&c, HOUR, Duration::ZERO, t0 + Duration::from_secs(1801)));
        assert!(!b.reusable(&c, HOUR, Duration::ZERO, t0 + HOUR));
    }

    #[test]
    fn credentials_are_never_reused_with_less_than_the_minimum_left() {
        let b = broker(Settings {
            reuse_fraction: 0.0,
            ..Settings::default()
        });
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = credentials(t0, Duration::from_secs(900));
        assert!(b.reusable(&c, HOUR, Duration::ZERO, t0 + Duration::from_secs(500)));
        // 5 minutes or less left: a new session, even though the fraction allows it.
        assert!(!b.reusable(&c, HOUR, Duration::ZERO, t0 + Duration::from_secs(600)));
    }

    #[test]
    fn credentials_outliving_the_rule_are_not_reused() {
        let b = broker(Settings::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = credentials(t0, HOUR);
        // The rule was cut to 30 minutes (a reload): 50 minutes left is too much.
        assert!(!b.reusable(
            &c,
            Duration::from_secs(1800),
            Duration::ZERO,
            t0 + Duration::from_secs(600)
        ));
    }

    #[test]
    fn a_door_can_ask_for_more_life_left_than_the_default() {
        let b = broker(Settings::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = credentials(t0, HOUR);
        let now = t0 + Duration::from_secs(1500); // 35 minutes left
        assert!(b.reusable(&c, HOUR, Duration::ZERO, now));
        assert!(!b.reusable(&c, HOUR, Duration::from_secs(40 * 60), now));
    }

    /// A hit is looked up by the request's borrowed scope: it must find the entry its
    /// owned scope made, and no entry that differs in any part.
    #[test]
    fn a_borrowed_scope_finds_the_entry_of_its_owned_scope_and_no_other() {
        let now = SystemTime::now();
        let mut cache = Cache::default();
        let stored = scope("a/");
        cache.insert(stored.clone(), Entry::Ready(credentials(now, HOUR)));
        let other_bucket: BucketName = "other".parse().unwrap();
        let other_prefix: Prefix = "a/b/".parse().unwrap();
        let key = stored.as_scope_ref();
        assert!(cache.get(&key).is_some());
        assert!(
            cache.get(&key.to_scope()).is_some(),
            "to_scope is the same scope"
        );
        let differing = [
            ScopeRef {
                caller: "dev:other",
                ..key
            },
            ScopeRef {
                bucket: &other_bucket,
                ..key
            },
            ScopeRef {
                prefix: &other_prefix,
                ..key
            },
            ScopeRef {
                access: Access {
                    write: true,
                    ..key.access
                },
                ..key
            },
            ScopeRef {
                session: HOUR * 2,
                ..key
            },
        ];
        // Told apart by the comparison itself, not only by a different hash: entries
        // whose hashes share a group and a tag are compared.
        assert!(hashbrown::Equivalent::equivalent(&key, &stored));
        let hasher = std::hash::RandomState::new();
        assert_eq!(hasher.hash_one(key), hasher.hash_one(&stored));
        for other in differing {
            assert!(
                !hashbrown::Equivalent::equivalent(&other, &stored),
                "{other:?}"
            );
            assert!(cache.get(&other).is_none(), "{other:?}");
            // Each is a scope of its own: added, both are found apart.
            cache.insert(other.to_scope(), Entry::Ready(credentials(now, HOUR)));
            assert!(cache.get(&other).is_some(), "{other:?}");
        }
        assert_eq!(cache.len(), 6);
        assert!(cache.get(&key).is_some());
    }

    #[test]
    fn a_caller_making_room_gives_up_its_own_entries_first() {
        let b = broker(Settings {
            cache_max_entries: 2,
            ..Settings::default()
        });
        let now = SystemTime::now();
        let mut cache = Cache::default();
        let other = Scope {
            caller: "dev:other".into(),
            ..scope("b/")
        };
        // The other caller's entry expires first, but the greedy caller pays.
        cache.insert(
            other.clone(),
            Entry::Ready(credentials(now, Duration::from_secs(600))),
        );
        cache.insert(scope("a1/"), Entry::Ready(credentials(now, HOUR)));
        b.make_room(&mut cache, "dev:demo");
        assert!(
            cache.contains_key(&other),
            "another caller's entry was evicted"
        );
        assert!(!cache.contains_key(&scope("a1/")));
    }

    #[tokio::test]
    async fn a_call_that_died_without_an_answer_is_not_joined() {
        let b = broker(Settings::default());
        let (tx, rx) = watch::channel(None);
        drop(tx);
        b.lock().insert(scope("dead/"), Entry::Pending(rx));
        // A new call is made (this client has no HTTP client or credentials, so it
        // fails on its own terms) instead of failing at once as abandoned.
        let err = ask_read(&b, "dead/").await.unwrap_err();
        assert!(!matches!(err, Error::Abandoned), "{err:?}");
    }

    #[tokio::test]
    async fn a_call_that_waits_on_anothers_sts_call_is_counted_joined_not_hit() {
        // The metrics are the process's: other tests of this process count too, so
        // only what this call adds is compared.
        let count = |outcome: &str| {
            let series = format!("storage_grants_sts_cache_total{{outcome=\"{outcome}\"}} ");
            crate::metrics::render()
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = ["joined", "hit", "miss"].map(count);
        let b = broker(Settings::default());
        let (tx, rx) = watch::channel(None);
        b.lock().insert(scope("shared/"), Entry::Pending(rx));
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { ask_read(&b, "shared/").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let [joined, hit, miss] = ["joined", "hit", "miss"].map(count);
        assert_eq!(joined - before[0], 1);
        assert_eq!(hit - before[1], 0, "no credentials were at hand");
        assert_eq!(miss - before[2], 0, "no STS call was made for it");
        tx.send(Some(Ok(credentials(SystemTime::now(), HOUR))))
            .unwrap();
        assert!(waiting.await.unwrap().is_ok());
    }

    fn service_error(status: u16, code: &str) -> Error {
        let meta = aws_sdk_sts::error::ErrorMetadata::builder()
            .code(code)
            .message("from STS")
            .build();
        let error = aws_sdk_sts::operation::assume_role::AssumeRoleError::generic(meta);
        let raw = HttpResponse::new(
            status.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        );
        classify(SdkError::service_error(error, raw))
    }

    #[test]
    fn throttling_is_transient_and_refusals_are_not() {
        for code in ["Throttling", "ThrottlingException", "RequestLimitExceeded"] {
            let e = service_error(400, code);
            assert!(matches!(e, Error::Throttled), "{code}: {e:?}");
            assert!(e.is_transient());
        }
        let e = service_error(403, "AccessDenied");
        assert!(
            matches!(&e, Error::Refused { code, .. } if code == "AccessDenied"),
            "{e:?}"
        );
        assert!(!e.is_transient());
        assert!(e.to_string().contains("HTTP 403"), "{e}");
    }

    #[test]
    fn server_errors_are_transient_whatever_their_body_says() {
        for (status, code) in [(500, "InternalFailure"), (503, "Unknown"), (502, "")] {
            let e = service_error(status, code);
            assert!(matches!(e, Error::Failed(s) if s == status), "{e:?}");
            assert!(e.is_transient(), "{status}");
        }
    }

    #[test]
    fn a_full_cache_drops_expired_then_soonest_expiring_entries_never_in_flight_ones() {
        let b = broker(Settings {
            cache_max_entries: 3,
            ..Settings::default()
        });
        let now = SystemTime::now();
        let (_tx, rx) = watch::channel(None);
        let mut cache = Cache::default();
        cache.insert(
            scope("expired/"),
            Entry::Ready(credentials(now - HOUR * 2, HOUR)),
        );
        cache.insert(
            scope("soon/"),
            Entry::Ready(credentials(now, Duration::from_secs(60))),
        );
        cache.insert(scope("pending/"), Entry::Pending(rx));
        b.make_room(&mut cache, "dev:demo");
        assert_eq!(cache.len(), 2, "the expired entry makes room");
        assert!(!cache.contains_key(&scope("expired/")));

        cache.insert(scope("later/"), Entry::Ready(credentials(now, HOUR)));
        b.make_room(&mut cache, "dev:demo");
        assert_eq!(cache.len(), 2);
        assert!(
            !cache.contains_key(&scope("soon/")),
            "the soonest to expire goes first"
        );
        assert!(
            cache.contains_key(&scope("pending/")),
            "in-flight entries stay"
        );
        assert!(cache.contains_key(&scope("later/")));
    }

    #[test]
    fn session_name_keeps_the_grant_id_and_allowed_characters() {
        let name = session_name(
            "spiffe://prod/ns/a/sa/b",
            "0123456789abcdef0123456789abcdef",
        );
        assert!(name.starts_with("sg-0123456789abcdef0123456789abcdef-spiffe---prod-ns-a-sa-b"));
        assert!(name.len() <= 64);
        let long = session_name(&"x".repeat(200), "0123456789abcdef0123456789abcdef");
        assert_eq!(long.len(), 64);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
        );
    }

    #[test]
    fn sanitize_pads_to_the_minimum_length() {
        assert_eq!(sanitize("a", 64), "a-");
        assert_eq!(sanitize("dev:demo", 64), "dev-demo");
    }

    #[test]
    fn duration_respects_every_limit() {
        let durations = Durations {
            role_max: Duration::from_secs(4 * 3600),
            ..Durations::default()
        };
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(durations.session(h(12), h(8), false), h(4));
        assert_eq!(durations.session(h(3), h(8), true), h(1));
        assert_eq!(durations.session(h(3), h(2), false), h(2));
        assert_eq!(
            durations.session(Duration::from_secs(60), h(2), false),
            STS_MIN_DURATION
        );
    }
}
