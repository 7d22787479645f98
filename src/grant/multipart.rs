//! Multipart uploads through the pipeline: start, grant parts, list, complete, abort.
//!
//! `write` on the key allows all of it. Every step after the start takes the upload
//! token (see `upload`), which must verify for the calling caller before anything
//! else happens, and asks the rules again: a rule removed mid-upload stops the upload
//! at its next step. Part URLs are presigned UploadPart PUTs whose part number and
//! upload id are signed, clamped like every grant and never beyond the token.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::caller::Caller;
use crate::core::Action;
use crate::expiry::Ttl;
use crate::rules::Target;
use crate::scope::{BucketName, ChecksumSha256, HeaderText, Metadata, ObjectKey};
use crate::sign::UploadPart;
use crate::store::{self, Made, PartToComplete, Store, StoredPart};
use crate::upload::{
    self, ABORT_GRACE, Claims, MAX_PART_BYTES, MAX_PARTS_PER_CALL, MIN_PART_BYTES, PartNumber,
    TokenError, TokenKeys,
};

use super::request::describe_metadata;
use super::{Error, FieldViolation, Pipeline, Violations, audit, whole_seconds};

/// What multipart uploads need: the store's own API and the token keys.
#[derive(Debug)]
pub struct Uploads {
    /// Create, list, complete, abort.
    pub store: Store,
    /// Sign and verify upload tokens.
    pub keys: TokenKeys,
    /// Recent ends of uploads, for their retries.
    pub ended: Ended,
    /// The store steps running, which shutdown waits for.
    pub steps: std::sync::Arc<Steps>,
}

/// The store steps running in tasks of their own (a step goes on after its caller was
/// answered, a completion for as long as `storage.complete_timeout`), on a runtime
/// that outlives the connections' (the serving threads end at shutdown, and their
/// tasks with them), so that shutdown can wait for them and name those it abandons.
#[derive(Debug)]
pub struct Steps {
    runtime: tokio::runtime::Handle,
    /// What each running step does, by a number of its own.
    running: tokio::sync::watch::Sender<HashMap<u64, String>>,
    next: std::sync::atomic::AtomicU64,
}

impl Steps {
    /// Steps run on `runtime`.
    pub fn on(runtime: tokio::runtime::Handle) -> Self {
        Self {
            runtime,
            running: tokio::sync::watch::Sender::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Runs `step` (`what` it does, for the log) until it ends, whoever waits for it.
    fn spawn(&self, what: String, step: impl std::future::Future<Output = ()> + Send + 'static) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.running.send_modify(|running| {
            running.insert(id, what);
        });
        let running = self.running.clone();
        self.runtime.spawn(async move {
            // Removed however the step ends (a panic included).
            let _done = OnDrop(Some(move || {
                running.send_modify(|running| {
                    running.remove(&id);
                });
            }));
            step.await;
        });
    }

    /// Completes once no step runs.
    pub async fn finished(&self) {
        let mut running = self.running.subscribe();
        let _ = running.wait_for(HashMap::is_empty).await;
    }

    /// What the steps still running do.
    pub fn running(&self) -> Vec<String> {
        self.running.borrow().values().cloned().collect()
    }
}

/// Runs its function when dropped.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// How long the end of an upload is kept, after it ended, for a retry of its step.
const ENDED_KEPT_FOR: Duration = Duration::from_secs(15 * 60);
/// Most ends kept: past it, the caller's own oldest go first.
const ENDED_KEPT_AT_MOST: usize = 10_000;

/// The ends of recent uploads on this replica, by upload id: a Complete or Abort whose
/// caller was answered before the store was done (its deadline came first) goes on,
/// and its retry gets what it came to, or waits for it, instead of the store's answer
/// for an upload that is no longer there ("no such upload", or no parts). One step
/// at a time ends an upload: a step that finds another running waits for it. A retry
/// that reaches another replica gets the store's answer.
///
/// Bounded by [`ENDED_KEPT_FOR`] and [`ENDED_KEPT_AT_MOST`]: when full, a caller's new
/// entry pushes out that caller's own oldest end (as the STS cache does), and a caller
/// with none there the oldest of the largest share, so that no caller can flush the
/// others' record by ending uploads of its own; a step still running is never pushed
/// out.
#[derive(Debug, Default)]
pub struct Ended(std::sync::Mutex<HashMap<upload::UploadId, Entry>>);

/// One upload's end, or the step that is ending it.
#[derive(Debug)]
struct Entry {
    /// When the step began: the oldest go first.
    at: std::time::Instant,
    /// The caller whose step this is: whose share of the record it takes.
    caller: String,
    end: EndOf,
}

impl Entry {
    /// Ended recently, or still running (a step that failed dropped its sender
    /// without an end: no end, and a retry runs the step again).
    fn is_live(&self, now: std::time::Instant) -> bool {
        if let Some((ended, _)) = &*self.end.borrow() {
            return now.duration_since(*ended) < ENDED_KEPT_FOR;
        }
        self.end.has_changed().is_ok()
    }

    fn has_ended(&self) -> bool {
        self.end.borrow().is_some()
    }
}

/// Where an upload's end stands: `None` while its step runs, then when and how it
/// ended.
type EndOf = tokio::sync::watch::Receiver<Option<(std::time::Instant, End)>>;

/// A step's turn to end an upload: it tells how the upload ended, or is dropped
/// without an end when the step failed.
#[derive(Debug)]
struct Record(tokio::sync::watch::Sender<Option<(std::time::Instant, End)>>);

impl Record {
    fn ended(self, end: End) {
        // Nobody may be waiting: the end is kept in the record for a later retry.
        self.0.send_replace(Some((std::time::Instant::now(), end)));
    }
}

/// How an upload ended.
#[derive(Debug, Clone)]
enum End {
    /// Completed with these parts (their digest) into this object.
    Completed(PartsDigest, Completed),
    /// Aborted (or found gone by an abort).
    Aborted,
}

/// The SHA-256 of the parts a completion named (number and ETag, in order): what a
/// retried complete must name again, kept in 32 bytes whatever the number of parts.
type PartsDigest = [u8; 32];

fn parts_digest(parts: &[PartToComplete]) -> PartsDigest {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    for part in parts {
        digest.update(part.part_number.get().to_be_bytes());
        digest.update((part.etag.len() as u64).to_be_bytes());
        digest.update(part.etag.as_bytes());
    }
    digest.finalize().into()
}

/// Whose turn it is to end an upload.
enum Turn<E> {
    /// Another step's: how it ended the upload (or, while it runs, where to wait).
    Taken(E),
    /// This call's: it sends how the upload ended, or drops the sender when its step
    /// failed.
    Yours(Record),
}

impl Ended {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<upload::UploadId, Entry>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The end of `upload`, or the step ending it, if one is recent and live here;
    /// else the turn of `caller`'s step, recorded as running. One lock for both, so
    /// that two steps of one upload never both run.
    fn turn(&self, upload: &upload::UploadId, caller: &str) -> Turn<EndOf> {
        let now = std::time::Instant::now();
        let mut ended = self.lock();
        if let Some(entry) = ended.get(upload)
            && entry.is_live(now)
        {
            return Turn::Taken(entry.end.clone());
        }
        if ended.len() >= ENDED_KEPT_AT_MOST && !ended.contains_key(upload) {
            make_room(&mut ended, caller, now);
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        ended.insert(
            upload.clone(),
            Entry {
                at: now,
                caller: caller.to_owned(),
                end: rx,
            },
        );
        Turn::Yours(Record(tx))
    }
}

/// Frees one entry of a full record for `caller`'s: what is dead goes first, then
/// `caller`'s own oldest end, else the oldest end of the caller that holds the most
/// (so that a caller's few ends go only after every larger share has shrunk to theirs).
/// Running steps stay (their number is bounded by the calls in flight), so the record
/// may hold a few more than its bound while many run.
fn make_room(ended: &mut HashMap<upload::UploadId, Entry>, caller: &str, now: std::time::Instant) {
    ended.retain(|_, entry| entry.is_live(now));
    if ended.len() < ENDED_KEPT_AT_MOST {
        return;
    }
    let mut shares: HashMap<&str, usize> = HashMap::new();
    for entry in ended.values().filter(|e| e.has_ended()) {
        *shares.entry(entry.caller.as_str()).or_default() += 1;
    }
    let whose = if shares.contains_key(caller) {
        caller
    } else {
        match shares.iter().max_by_key(|(_, held)| **held) {
            Some((whose, _)) => whose,
            None => return,
        }
    }
    .to_owned();
    let victim = ended
        .iter()
        .filter(|(_, e)| e.has_ended() && e.caller == whose)
        .min_by_key(|(_, e)| e.at)
        .map(|(id, _)| id.clone());
    if let Some(victim) = victim {
        ended.remove(&victim);
    }
}

impl Ended {
    /// Whose turn it is to end `caller`'s upload: waits (within `deadline`) while
    /// another step ends it, and answers how it ended; or this call's turn, once no
    /// step here ended it (or the one that ran failed). Also answers what is left of
    /// `deadline`.
    async fn take_turn(
        &self,
        upload: &Claims,
        caller: &Caller,
        deadline: Duration,
    ) -> Result<(Turn<End>, Duration), Error> {
        let started = tokio::time::Instant::now();
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            let mut end = match self.turn(&upload.upload_id, caller.id()) {
                Turn::Yours(record) => return Ok((Turn::Yours(record), left)),
                Turn::Taken(end) => end,
            };
            let wait = super::wait_before(left);
            match tokio::time::timeout(wait, end.wait_for(Option::is_some)).await {
                Ok(Ok(end)) => {
                    if let Some((_, end)) = end.clone() {
                        return Ok((Turn::Taken(end), left));
                    }
                }
                // The step it waited on failed: this call may take its turn.
                Ok(Err(_)) => {}
                Err(_) => return Err(Error::Store(store::Error::Pending(wait))),
            }
        }
    }
}

// === requests ===

/// `StartMultipartUpload` as a door received it; empty strings mean "not set".
#[derive(Debug, Clone, Copy)]
pub struct RawStart<'a, M> {
    /// Bucket name.
    pub bucket: &'a str,
    /// Object key.
    pub key: &'a str,
    /// Content type the object gets.
    pub content_type: &'a str,
    /// User metadata the object gets.
    pub metadata: M,
    /// Parts must pin a SHA-256 checksum.
    pub checksum_sha256: bool,
    /// Complete with `If-None-Match: *`.
    pub create_only: bool,
    /// The size the completed object must have.
    pub expected_size: Option<u64>,
}

/// A validated start.
#[derive(Debug, Clone)]
pub struct StartRequest {
    bucket: BucketName,
    key: ObjectKey,
    content_type: Option<HeaderText>,
    metadata: Metadata,
    checksum_sha256: bool,
    create_only: bool,
    expected_size: Option<u64>,
    ttl: Option<Duration>,
}

impl StartRequest {
    /// Validates `raw`, adding violations to `v`; `ttl` as in
    /// [`super::ReadRequest::parse`].
    pub fn parse<'a, M>(
        v: &mut Violations,
        raw: RawStart<'a, M>,
        ttl: impl FnOnce(&mut Violations) -> Option<Option<Duration>>,
    ) -> Option<Self>
    where
        M: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let bucket = v.required("bucket", raw.bucket);
        let key = v.required("key", raw.key);
        let content_type = v.media_type("content_type", raw.content_type);
        let metadata = Metadata::new(raw.metadata)
            .map_err(|e| v.add("metadata", describe_metadata(e)))
            .ok();
        match raw.expected_size {
            Some(0) => v.add(
                "expected_size",
                "must be at least 1 byte; omit it when the size is not known",
            ),
            Some(size) if size > crate::upload::MAX_OBJECT_BYTES => v.add(
                "expected_size",
                format!(
                    "{size} bytes is over S3's {}-byte (5 TiB) limit for an object",
                    crate::upload::MAX_OBJECT_BYTES
                ),
            ),
            _ => {}
        }
        let ttl = ttl(v);
        Some(StartRequest {
            bucket: bucket?,
            key: key?,
            content_type: content_type?,
            metadata: metadata?,
            checksum_sha256: raw.checksum_sha256,
            create_only: raw.create_only,
            expected_size: raw.expected_size,
            ttl: ttl?,
        })
    }
}

/// A part's optional checksum pin: `Ok(None)` when empty, `Err` (recorded in `v`)
/// when malformed.
fn part_checksum(
    v: &mut Violations,
    field: &'static str,
    number: PartNumber,
    text: &str,
) -> Result<Option<ChecksumSha256>, ()> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| v.add(field, format!("part {number}: checksum_sha256 {e}")))
}

/// One part a door asks a URL for, with its optional pins.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawPart<'a> {
    /// Part number.
    pub part_number: u64,
    /// `Content-Length` pin.
    pub content_length: Option<u64>,
    /// `x-amz-checksum-sha256` pin; empty for none.
    pub checksum_sha256: &'a str,
}

/// A validated part to sign.
#[derive(Debug, Clone)]
struct PartPin {
    number: PartNumber,
    content_length: Option<u64>,
    checksum_sha256: Option<ChecksumSha256>,
}

/// Validated parts to sign.
#[derive(Debug, Clone)]
pub struct PartsRequest {
    parts: Vec<PartPin>,
    ttl: Option<Duration>,
    /// The request's field that named the parts (`parts`, `part_range`), for a
    /// violation found later.
    field: &'static str,
}

impl PartsRequest {
    /// Validates the parts (numbers 1..=10,000, each once, at most
    /// [`MAX_PARTS_PER_CALL`]; length pins of 1 byte to 5 GiB, and at least 5 MiB but
    /// for the highest part asked), adding violations to `v` under `field`.
    pub fn parse<'a>(
        v: &mut Violations,
        field: &'static str,
        raw: impl ExactSizeIterator<Item = RawPart<'a>>,
        ttl: impl FnOnce(&mut Violations) -> Option<Option<Duration>>,
    ) -> Option<Self> {
        let count = raw.len();
        let mut parts = Vec::with_capacity(count.min(MAX_PARTS_PER_CALL));
        let before = v.len();
        if count == 0 {
            v.add(field, "name at least one part");
        }
        if count > MAX_PARTS_PER_CALL {
            v.add(
                field,
                format!(
                    "asks for {count} parts; at most {MAX_PARTS_PER_CALL} in one call, so ask \
                     in batches"
                ),
            );
        }
        for raw in raw.take(MAX_PARTS_PER_CALL) {
            let Some(number) = v.check(field, PartNumber::try_from(raw.part_number)) else {
                continue;
            };
            if let Some(n) = raw.content_length
                && !(1..=MAX_PART_BYTES).contains(&n)
            {
                v.add(
                    field,
                    format!("part {number}: content_length {n} is outside 1 byte to 5 GiB"),
                );
            }
            let Ok(checksum) = part_checksum(v, field, number, raw.checksum_sha256) else {
                continue;
            };
            parts.push(PartPin {
                number,
                content_length: raw.content_length,
                checksum_sha256: checksum,
            });
        }
        let mut numbers: Vec<PartNumber> = parts.iter().map(|p| p.number).collect();
        numbers.sort_unstable();
        if let Some(w) = numbers.windows(2).find(|w| w[0] == w[1]) {
            v.add(
                field,
                format!("part {} is named twice; list each part once", w[0]),
            );
        }
        let highest = numbers.last().copied();
        for p in &parts {
            if let Some(n) = p.content_length
                && n < MIN_PART_BYTES
                && Some(p.number) != highest
            {
                v.add(
                    field,
                    format!(
                        "part {}: content_length {n} is under S3's 5 MiB minimum, which only \
                         the last part may be",
                        p.number
                    ),
                );
            }
        }
        let ttl = ttl(v);
        (v.len() == before).then_some(())?;
        Some(PartsRequest {
            parts,
            ttl: ttl?,
            field,
        })
    }
}

/// A part as the caller saw it uploaded.
#[derive(Debug, Clone, Copy)]
pub struct RawCompletedPart<'a> {
    /// Part number.
    pub part_number: u64,
    /// The ETag the store answered for it (quotes optional).
    pub etag: &'a str,
    /// Its SHA-256 checksum in base64, when the upload pins checksums.
    pub checksum_sha256: &'a str,
}

/// The parts to complete with, validated.
#[derive(Debug, Clone)]
pub struct CompleteRequest {
    parts: Vec<PartToComplete>,
}

impl CompleteRequest {
    /// Validates the parts (at least one; numbers 1..=10,000 in ascending order,
    /// each once; an ETag each), adding violations to `v` under `field`.
    pub fn parse<'a>(
        v: &mut Violations,
        field: &'static str,
        raw: impl Iterator<Item = RawCompletedPart<'a>>,
    ) -> Option<Self> {
        let mut parts: Vec<PartToComplete> = Vec::new();
        let before = v.len();
        for raw in raw.take(usize::from(upload::MAX_PARTS) + 1) {
            let Some(number) = v.check(field, PartNumber::try_from(raw.part_number)) else {
                continue;
            };
            match parts.last() {
                Some(previous) if previous.part_number == number => {
                    v.add(
                        field,
                        format!("part {number} is named twice; list each part once"),
                    );
                }
                Some(previous) if previous.part_number > number => {
                    v.add(
                        field,
                        format!(
                            "part {number} follows part {}; list the parts in ascending order",
                            previous.part_number
                        ),
                    );
                }
                _ => {}
            }
            let etag = raw.etag.trim().trim_matches('"');
            if !upload::is_store_token(etag) {
                v.add(
                    field,
                    format!("part {number}: etag must be the ETag the store answered for it"),
                );
            }
            let Ok(checksum) = part_checksum(v, field, number, raw.checksum_sha256) else {
                continue;
            };
            parts.push(PartToComplete {
                part_number: number,
                etag: etag.to_owned(),
                checksum_sha256: checksum.map(|c| c.as_str().to_owned()),
            });
        }
        if parts.is_empty() && v.len() == before {
            v.add(field, "name every uploaded part, at least one");
        }
        (v.len() == before).then_some(CompleteRequest { parts })
    }
}

// === answers ===

/// A started upload.
#[derive(Debug)]
pub struct Started {
    /// The upload token for the later steps.
    pub upload: String,
    /// The store's upload id.
    pub upload_id: String,
    /// The bucket.
    pub bucket: BucketName,
    /// The key.
    pub key: ObjectKey,
    /// When the token stops working.
    pub expires_at: SystemTime,
    /// Joins the response to the audit event.
    pub grant_id: String,
}

/// A presigned part.
#[derive(Debug)]
pub struct SignedPart {
    /// Its number.
    pub part_number: u16,
    /// The presigned PUT.
    pub request: crate::sign::PresignedRequest,
}

/// Presigned parts.
#[derive(Debug)]
pub struct SignedParts {
    /// One per part asked, in the order asked.
    pub parts: Vec<SignedPart>,
    /// When every URL stops working.
    pub expires_at: SystemTime,
    /// Joins the response to the audit event.
    pub grant_id: String,
}

/// A completed upload.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The object's ETag.
    pub etag: String,
    /// The object's size in bytes.
    pub size: u64,
    /// The bucket.
    pub bucket: BucketName,
    /// The key.
    pub key: ObjectKey,
    /// Joins the response to the audit event.
    pub grant_id: String,
}

/// What a door is about to do with an upload: an abort takes a token that expired
/// less than [`ABORT_GRACE`] ago, every other step a live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadStep {
    /// Sign parts, list them, complete.
    Continue,
    /// Discard the upload.
    Abort,
}

/// An upload whose token [`Pipeline::open_upload`] verified for one caller: what the
/// steps act on. A call verifies its token once, also at a door that checks the
/// token's key before the step (Uppy's routes).
#[derive(Debug)]
pub struct OpenUpload(Claims);

impl OpenUpload {
    /// The key the upload writes.
    pub fn key(&self) -> &ObjectKey {
        &self.0.key
    }
}

// === the steps ===

impl Pipeline {
    fn uploads(&self) -> Result<&Uploads, Error> {
        self.uploads.as_deref().ok_or(Error::NotConfigured(
            "multipart uploads are not configured on this service",
        ))
    }

    /// The store, for a call made with the service's own credentials: refused, as a
    /// presign is, while they are not loaded or have expired, rather than sent with
    /// credentials the store would refuse.
    fn store(&self) -> Result<&Store, Error> {
        let store = &self.uploads()?.store;
        self.credentials.current()?;
        Ok(store)
    }

    /// The upload `token` names, when it is `caller`'s and alive for `step`, or why
    /// not; no store call happens before.
    ///
    /// # Errors
    /// `InvalidArgument` for a token that is not this service's or has expired (an
    /// abort's has [`ABORT_GRACE`] more); `OtherCaller`; `NotConfigured`.
    pub fn open_upload(
        &self,
        caller: &Caller,
        token: &str,
        step: UploadStep,
    ) -> Result<OpenUpload, Error> {
        let grace = match step {
            UploadStep::Continue => Duration::ZERO,
            UploadStep::Abort => ABORT_GRACE,
        };
        let claims = self
            .uploads()?
            .keys
            .verify_for_anyone(token, SystemTime::now(), grace)
            .map_err(token_error)?;
        if claims.caller != caller.id() {
            // Another caller's upload: a refusal, spent and audited like any.
            self.spend_refusal(caller, Action::Write, &claims.bucket, claims.key.as_str())?;
            return Err(Error::OtherCaller);
        }
        Ok(OpenUpload(claims))
    }

    /// The claims of `upload` for a step other than its abort by `caller`: the upload
    /// must be `caller`'s and still alive (it may have been opened for an abort, or
    /// before a long wait).
    fn continued<'u>(caller: &Caller, upload: &'u OpenUpload) -> Result<&'u Claims, Error> {
        let claims = Self::owned(caller, upload)?;
        if claims.expires_at <= SystemTime::now() {
            return Err(token_error(TokenError::Expired));
        }
        Ok(claims)
    }

    /// The claims of `upload` when it is `caller`'s: the doors open an upload for the
    /// caller of the same call, and this keeps a step from trusting that.
    fn owned<'u>(caller: &Caller, upload: &'u OpenUpload) -> Result<&'u Claims, Error> {
        if upload.0.caller == caller.id() {
            Ok(&upload.0)
        } else {
            Err(Error::OtherCaller)
        }
    }

    /// Starts a multipart upload of one object: the rule allows `write` on the key;
    /// the service creates the upload at the store with the pinned content type,
    /// metadata and checksum algorithm, and answers a token bound to the caller.
    ///
    /// # Errors
    /// `Denied`; `InvalidArgument` when `expected_size` exceeds the rule's
    /// `max_object_size`; `Store` when the store fails.
    pub async fn start_multipart(
        &self,
        caller: &Caller,
        request: &StartRequest,
        deadline: Duration,
    ) -> Result<Started, Error> {
        let uploads = self.uploads()?;
        let (max_ttl, max_size, rule_line) = {
            let rules = self.rules.current();
            let rule = self.authorize_and_spend(
                &rules,
                caller,
                Action::Write,
                &request.bucket,
                Target::Key(&request.key),
            )?;
            super::check_content_type(
                rule,
                caller,
                &request.bucket,
                &request.key,
                request.content_type.as_ref().map(HeaderText::as_str),
            )?;
            (rule.max_ttl(), rule.max_object_size(), rule.line())
        };
        if let (Some(expected), Some(max)) = (request.expected_size, max_size)
            && expected > max
        {
            return Err(Error::InvalidArgument(vec![FieldViolation {
                field: "expected_size",
                description: format!("is {expected} bytes; the rule allows at most {max}"),
            }]));
        }
        let now = whole_seconds(SystemTime::now());
        let requested = request.ttl.unwrap_or(self.limits.default_ttl);
        let ttl = Ttl::clamp(&[requested, max_ttl, self.limits.max_ttl], now, None)?;
        let store = self.store()?.clone();
        let (bucket, key) = (request.bucket.clone(), request.key.clone());
        let (content_type, metadata) = (request.content_type.clone(), request.metadata.clone());
        let checksum_sha256 = request.checksum_sha256;
        let upload_id = store_step(
            &uploads.steps,
            step_name("a start", &request.bucket, &request.key, caller),
            deadline,
            {
                let store = store.clone();
                let (bucket, key) = (bucket.clone(), key.clone());
                async move {
                    store
                        .create(
                            &bucket,
                            &key,
                            content_type.as_ref(),
                            &metadata,
                            checksum_sha256,
                        )
                        .await
                        .map_err(Error::Store)
                }
            },
            // Created after its caller was answered: nobody holds a token for it, so
            // its parts could never be completed or aborted by anyone.
            // A start that failed may still have created one, if the store acted after
            // `storage.call_timeout`: only the bucket's lifecycle rule finds that.
            move |created: Result<upload::UploadId, Error>| async move {
                let failed = match created {
                    Ok(upload_id) => store
                        .abort(&bucket, &key, &upload_id)
                        .await
                        .err()
                        .map(Error::Store),
                    Err(e) => Some(e),
                };
                if let Some(e) = failed {
                    tracing::warn!(
                        error = %crate::core::text::Chain(&e),
                        bucket = bucket.as_str(),
                        "an upload start whose caller was answered first (its deadline came \
                         before the store's answer) failed, or its upload could not be \
                         aborted; the bucket's lifecycle rule for incomplete uploads removes \
                         what the store may hold"
                    );
                }
            },
        )
        .await?;
        let expires_at = now + ttl.as_duration();
        let token = uploads.keys.mint(&Claims {
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            upload_id: upload_id.clone(),
            caller: caller.id().to_owned(),
            expires_at,
            create_only: request.create_only,
            expected_size: request.expected_size,
            checksum_sha256: request.checksum_sha256,
        });
        let grant_id = audit::new_grant_id();
        audit::issued(&audit::Issued {
            grant_id: &grant_id,
            caller,
            actions: &[Action::Write],
            bucket: request.bucket.as_str(),
            target: request.key.as_str(),
            ttl_secs: ttl.as_duration().as_secs(),
            expires_at,
            rule_line,
            session_grant_id: None,
        });
        Ok(Started {
            upload: token,
            upload_id: upload_id.as_str().to_owned(),
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            expires_at,
            grant_id,
        })
    }

    /// Presigned UploadPart PUTs for the asked parts of the upload `token` names.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad or expired token, or a part without the checksum
    /// the upload pins; `OtherCaller`; `Denied`; `Credentials`/`Expiry`.
    pub fn grant_parts(
        &self,
        caller: &Caller,
        upload: &OpenUpload,
        request: &PartsRequest,
    ) -> Result<SignedParts, Error> {
        let claims = Self::continued(caller, upload)?;
        if claims.checksum_sha256
            && let Some(p) = request.parts.iter().find(|p| p.checksum_sha256.is_none())
        {
            let description = if request.field == "parts" {
                format!(
                    "part {}: this upload was started with checksum_algorithm SHA256, so every \
                     part must pin checksum_sha256",
                    p.number
                )
            } else {
                "this upload was started with checksum_algorithm SHA256, so every part must \
                 pin checksum_sha256: name the parts in parts, each with its checksum"
                    .to_owned()
            };
            return Err(Error::InvalidArgument(vec![FieldViolation {
                field: request.field,
                description,
            }]));
        }
        let rules = self.rules.current();
        let rule = self.authorize_and_spend(
            &rules,
            caller,
            Action::Write,
            &claims.bucket,
            Target::Key(&claims.key),
        )?;
        // A part larger than the whole object may be would be stored until the upload
        // ends (Complete refuses it): not signed.
        if let Some(max) = rule.max_object_size()
            && let Some((number, length)) = request
                .parts
                .iter()
                .find_map(|p| Some((p.number, p.content_length?)).filter(|(_, n)| *n > max))
        {
            return Err(Error::InvalidArgument(vec![FieldViolation {
                field: request.field,
                description: format!(
                    "part {number}: content_length {length} is more than the rule (line {}) \
                     allows a whole object ({max} bytes)",
                    rule.line()
                ),
            }]));
        }
        let credentials = self.credentials.current()?;
        let now = whole_seconds(SystemTime::now());
        let requested = request.ttl.unwrap_or(self.limits.default_ttl);
        let token_left = claims.expires_at.duration_since(now).unwrap_or_default();
        let ttl = Ttl::clamp(
            &[requested, rule.max_ttl(), self.limits.max_ttl, token_left],
            now,
            self.limits.signing_deadline(&credentials, now),
        )?;
        let parts = request
            .parts
            .iter()
            .map(|p| SignedPart {
                part_number: p.number.get(),
                request: self.signer.presign_upload_part(
                    &credentials,
                    &UploadPart {
                        bucket: &claims.bucket,
                        key: &claims.key,
                        upload_id: &claims.upload_id,
                        part_number: p.number,
                        content_length: p.content_length,
                        checksum_sha256: p.checksum_sha256.as_ref(),
                    },
                    now,
                    ttl,
                ),
            })
            .collect();
        let expires_at = now + ttl.as_duration();
        let grant_id = audit::new_grant_id();
        audit::issued(&audit::Issued {
            grant_id: &grant_id,
            caller,
            actions: &[Action::Write],
            bucket: claims.bucket.as_str(),
            target: claims.key.as_str(),
            ttl_secs: ttl.as_duration().as_secs(),
            expires_at,
            rule_line: rule.line(),
            session_grant_id: None,
        });
        Ok(SignedParts {
            parts,
            expires_at,
            grant_id,
        })
    }

    /// The parts uploaded so far, for resuming.
    ///
    /// # Errors
    /// As [`Pipeline::grant_parts`], and `Store`.
    pub async fn list_parts(
        &self,
        caller: &Caller,
        upload: &OpenUpload,
        deadline: Duration,
    ) -> Result<Vec<StoredPart>, Error> {
        let claims = Self::continued(caller, upload)?.clone();
        self.authorize_upload(caller, &claims)?;
        let store = self.store()?.clone();
        store_step(
            &self.uploads()?.steps,
            format!("a listing of {}/{}", claims.bucket, claims.key),
            deadline,
            async move {
                store
                    .list_parts(&claims.bucket, &claims.key, &claims.upload_id)
                    .await
                    .map_err(store_error)
            },
            |_| std::future::ready(()),
        )
        .await
    }

    /// Completes the upload with `request`'s parts, after checking them against what
    /// the store holds: every part uploaded, with the ETag the store lists for it, the total within the rule's
    /// `max_object_size` and equal to `expected_size` when `Start` named one. The
    /// checks come first, so an oversized object never exists.
    ///
    /// # Errors
    /// `FailedPrecondition` for an unknown part or ETag, a size over the limit or off
    /// the expected size, a part under 5 MiB that is not the last, an upload that no
    /// longer exists; `AlreadyExists` for a create-only upload whose key exists; as
    /// [`Pipeline::grant_parts`].
    pub async fn complete_multipart(
        &self,
        caller: &Caller,
        upload: &OpenUpload,
        request: &CompleteRequest,
        deadline: Duration,
    ) -> Result<Completed, Error> {
        let claims = Self::continued(caller, upload)?;
        // S3 refuses such a completion with an error of its own; this says what to send.
        if claims.checksum_sha256
            && let Some(p) = request.parts.iter().find(|p| p.checksum_sha256.is_none())
        {
            return Err(Error::InvalidArgument(vec![FieldViolation {
                field: "parts",
                description: format!(
                    "part {}: this upload was started with checksum_algorithm SHA256, so \
                     completing it names each part's checksum_sha256 (the one its URL pinned, \
                     as ListUploadedParts answers it)",
                    p.part_number
                ),
            }]));
        }
        let (rule_line, max_size) = self.authorize_upload(caller, claims)?;
        let uploads = self.uploads()?;
        // A retry of a completion this replica ran (its caller answered before the
        // store was done): what it came to, without a second audit event.
        let digest = parts_digest(&request.parts);
        let (turn, left) = uploads.ended.take_turn(claims, caller, deadline).await?;
        let record = match turn {
            Turn::Yours(record) => record,
            Turn::Taken(End::Completed(parts, done)) if parts == digest => return Ok(done),
            Turn::Taken(End::Completed(..)) => {
                return Err(Error::FailedPrecondition(
                    "this upload was completed already, with other parts".into(),
                ));
            }
            Turn::Taken(End::Aborted) => {
                return Err(Error::FailedPrecondition(
                    "this upload was aborted; start a new one".into(),
                ));
            }
        };
        let store = self.store()?.clone();
        let (claims, parts, caller) = (claims.clone(), request.parts.clone(), caller.clone());
        // The whole step in its own task: a completion the store carries out after the
        // caller was answered is still audited, and recorded for the retry.
        // What waiting on an earlier step of this upload took is not the store's.
        store_step(
            &uploads.steps,
            step_name("a completion", &claims.bucket, &claims.key, &caller),
            left,
            async move {
                let completed = async {
                    let stored: HashMap<u16, StoredPart> = match store
                        .list_parts(&claims.bucket, &claims.key, &claims.upload_id)
                        .await
                    {
                        Ok(stored) => stored.into_iter().map(|p| (p.part_number, p)).collect(),
                        // Gone: completed (by a try whose answer was lost, on this
                        // replica or another) or aborted.
                        Err(gone) if gone.code() == Some("NoSuchUpload") => {
                            return made_by(&store, &claims, &parts, None, gone).await;
                        }
                        Err(e) => return Err(store_error(e)),
                    };
                    let size = check_parts(&parts, &stored, max_size, claims.expected_size)?;
                    match store
                        .complete(
                            &claims.bucket,
                            &claims.key,
                            &claims.upload_id,
                            &parts,
                            claims.create_only,
                        )
                        .await
                    {
                        Ok(etag) => Ok((etag, size)),
                        // Its answer lost, the completion may have been carried out; so
                        // may a create-only one whose retry met the object it made.
                        Err(lost)
                            if answer_lost(&lost)
                                || (claims.create_only
                                    && lost.code() == Some("PreconditionFailed")) =>
                        {
                            made_by(&store, &claims, &parts, Some(size), lost).await
                        }
                        Err(refused) => Err(store_error(refused)),
                    }
                }
                .await;
                // A failure drops `record` without an end: a retry runs the step again.
                let (etag, size) = completed?;
                let grant_id = audit::new_grant_id();
                audit::issued(&audit::Issued {
                    grant_id: &grant_id,
                    caller: &caller,
                    actions: &[Action::Write],
                    bucket: claims.bucket.as_str(),
                    target: claims.key.as_str(),
                    ttl_secs: 0,
                    expires_at: SystemTime::now(),
                    rule_line,
                    session_grant_id: None,
                });
                let done = Completed {
                    etag,
                    size,
                    bucket: claims.bucket,
                    key: claims.key,
                    grant_id,
                };
                record.ended(End::Completed(digest, done.clone()));
                Ok(done)
            },
            unclaimed_failure("a completion"),
        )
        .await
    }

    /// Aborts the upload; aborting one that is already gone succeeds. Its token may
    /// have expired up to [`ABORT_GRACE`] ago: a client that gives up often does so
    /// after the token's life, and its parts would otherwise stay in the store.
    ///
    /// # Errors
    /// As [`Pipeline::grant_parts`], and `Store`.
    pub async fn abort_multipart(
        &self,
        caller: &Caller,
        upload: &OpenUpload,
        deadline: Duration,
    ) -> Result<(), Error> {
        let claims = Self::owned(caller, upload)?.clone();
        self.authorize_upload(caller, &claims)?;
        let uploads = self.uploads()?;
        // Ended here already: aborted (by a step whose caller was answered first), which
        // an abort takes as done; or completed into an object, which no abort discards.
        let (turn, left) = uploads.ended.take_turn(&claims, caller, deadline).await?;
        let record = match turn {
            Turn::Yours(record) => record,
            Turn::Taken(End::Aborted) => return Ok(()),
            Turn::Taken(End::Completed(_, done)) => {
                return Err(Error::FailedPrecondition(format!(
                    "this upload was completed into {} (ETag {}), so there is nothing to \
                     abort; delete the object if it should not exist",
                    done.key.as_str(),
                    done.etag
                )));
            }
        };
        let store = self.store()?.clone();
        // What waiting on an earlier step of this upload took is not the store's.
        store_step(
            &uploads.steps,
            step_name("an abort", &claims.bucket, &claims.key, caller),
            left,
            async move {
                let aborted = match store
                    .abort(&claims.bucket, &claims.key, &claims.upload_id)
                    .await
                {
                    Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
                    other => other.map_err(store_error),
                };
                if aborted.is_ok() {
                    record.ended(End::Aborted);
                }
                aborted
            },
            unclaimed_failure("an abort"),
        )
        .await
    }

    /// The rules still allow `write` on the upload's key; spends one grant of the
    /// caller's budget (each step calls the store, which bills it and shares its
    /// request rate among every caller); answers the rule's line and
    /// `max_object_size`.
    fn authorize_upload(
        &self,
        caller: &Caller,
        claims: &Claims,
    ) -> Result<(usize, Option<u64>), Error> {
        let rules = self.rules.current();
        let rule = self.authorize_and_spend(
            &rules,
            caller,
            Action::Write,
            &claims.bucket,
            Target::Key(&claims.key),
        )?;
        Ok((rule.line(), rule.max_object_size()))
    }
}

/// Runs a store step (`what` it does, for the log) in a task of its own
/// ([`Steps`]), so that it ends as the store answers whether or not its caller still
/// waits, and answers the caller before `deadline`: past it,
/// [`store::Error::Pending`]. What the step brings when nobody waits for it any more
/// goes to `unclaimed`.
async fn store_step<T, U>(
    steps: &Steps,
    what: String,
    deadline: Duration,
    step: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
    unclaimed: impl FnOnce(Result<T, Error>) -> U + Send + 'static,
) -> Result<T, Error>
where
    T: Send + 'static,
    U: std::future::Future<Output = ()> + Send + 'static,
{
    let wait = super::wait_before(deadline);
    let (tx, rx) = tokio::sync::oneshot::channel();
    steps.spawn(what, async move {
        if let Err(outcome) = tx.send(step.await) {
            unclaimed(outcome).await;
        }
    });
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(answer)) => answer,
        // The step's task ended without an answer (it panicked).
        Ok(Err(_)) => Err(Error::Store(store::Error::Unreachable(
            crate::aws::Unanswered::Unknown,
        ))),
        Err(_) => Err(Error::Store(store::Error::Pending(wait))),
    }
}

/// What a step whose caller was answered already does with its failure: logs it, as
/// the caller's answer could not say it.
fn unclaimed_failure<T: Send>(
    what: &'static str,
) -> impl FnOnce(Result<T, Error>) -> std::future::Ready<()> + Send {
    move |outcome| {
        if let Err(e) = outcome {
            tracing::warn!(
                error = %crate::core::text::Chain(&e),
                "{what} whose caller was answered first (its deadline came before the \
                 store's answer) failed"
            );
        }
        std::future::ready(())
    }
}

/// A refused upload token as the caller is told: another caller's is its own error
/// (PERMISSION_DENIED), the rest are the `upload` field's.
fn token_error(e: TokenError) -> Error {
    match e {
        TokenError::OtherCaller => Error::OtherCaller,
        e @ (TokenError::Empty | TokenError::Invalid | TokenError::Expired) => {
            Error::InvalidArgument(vec![FieldViolation {
                field: "upload",
                description: e.to_string(),
            }])
        }
    }
}

/// The parts to complete with, checked against what the store holds: each uploaded,
/// with the ETag the store lists for it (stores that list none, such as s3s-fs, leave
/// that to their Complete), the total within `max_size` and equal to `expected`.
/// Answers the total.
fn check_parts(
    parts: &[PartToComplete],
    stored: &HashMap<u16, StoredPart>,
    max_size: Option<u64>,
    expected: Option<u64>,
) -> Result<u64, Error> {
    let mut size: u64 = 0;
    for part in parts {
        let n = part.part_number.get();
        let Some(held) = stored.get(&n) else {
            return Err(Error::FailedPrecondition(format!(
                "part {n} was not uploaded; upload it, or complete without it"
            )));
        };
        if !held.etag.is_empty() && held.etag != part.etag {
            return Err(Error::FailedPrecondition(format!(
                "part {n}: the store holds another ETag for it; list the uploaded parts and \
                 complete with their ETags"
            )));
        }
        size = size.saturating_add(held.size);
    }
    if let Some(max) = max_size
        && size > max
    {
        return Err(Error::FailedPrecondition(format!(
            "the parts add up to {size} bytes; the rule allows objects of at most {max} \
             (abort the upload, or complete with fewer parts)"
        )));
    }
    if let Some(expected) = expected
        && size != expected
    {
        return Err(Error::FailedPrecondition(format!(
            "the parts add up to {size} bytes; the upload was started for {expected}"
        )));
    }
    Ok(size)
}

/// The object a completion of `parts` made, when the store's answer (`cause`) did not
/// say: the upload must be gone (a completion ends it), and the object at its key be
/// the one exactly these parts make (S3's multipart ETag; `size`, when known). An
/// upload that still lists parts was not completed, whatever object the key holds; a
/// gone one whose object this service cannot check is said so, not "start a new one".
async fn made_by(
    store: &Store,
    claims: &Claims,
    parts: &[PartToComplete],
    size: Option<u64>,
    cause: store::Error,
) -> Result<(String, u64), Error> {
    if cause.code() != Some("NoSuchUpload") {
        // A completion needs the parts the check found: an upload still holding some
        // was not completed.
        match store
            .upload_gone(&claims.bucket, &claims.key, &claims.upload_id)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(store_error(cause)),
            Err(e) => return Err(store_error(e)),
        }
    }
    match store
        .completed_as(&claims.bucket, &claims.key, parts, size)
        .await
    {
        Made::Yes { etag, size } => Ok((etag, size)),
        Made::No => Err(Error::FailedPrecondition(GONE.into())),
        Made::CannotTell(why) => Err(Error::FailedPrecondition(format!(
            "the store no longer holds this upload: it was completed or aborted, and this \
             service cannot tell which ({why}); see whether {} exists before uploading again",
            claims.key
        ))),
        Made::Unknown(e) => Err(store_error(e)),
    }
}

/// Whether a completion that failed so may have been carried out all the same: no
/// whole answer came back (cut short, no answer in time, a dropped connection), or the
/// store says the upload is gone (what it answers the SDK's retry of a completion it
/// carried out).
fn answer_lost(e: &store::Error) -> bool {
    matches!(
        e,
        store::Error::Unreachable(_) | store::Error::Incomplete(_)
    ) || e.code() == Some("NoSuchUpload")
}

/// How the log names a store step of `caller`'s on `key`: never a token or URL.
fn step_name(what: &str, bucket: &BucketName, key: &ObjectKey, caller: &Caller) -> String {
    format!("{what} of {bucket}/{key} for {}", caller.id())
}

/// An upload the store no longer holds, and no object of its parts at its key.
const GONE: &str = "the upload no longer exists (it was completed or aborted); start a new one";

/// What the store's refusals mean to the caller.
fn store_error(e: store::Error) -> Error {
    match e.code() {
        Some("PreconditionFailed") => Error::AlreadyExists(
            "an object with this key exists, and the upload was started create_only".into(),
        ),
        Some("NoSuchUpload") => Error::FailedPrecondition(GONE.into()),
        Some("EntityTooSmall") => Error::FailedPrecondition(
            "a part other than the last is under 5 MiB; re-upload it larger".into(),
        ),
        Some("InvalidPart" | "InvalidPartOrder") => Error::FailedPrecondition(
            "the store does not hold these parts as named; list the uploaded parts and \
             complete with their numbers and ETags"
                .into(),
        ),
        _ => Error::Store(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> upload::UploadId {
        format!("upload-{n}").parse().unwrap()
    }

    /// Ends `upload` as `caller`'s step, aborted.
    fn abort(ended: &Ended, upload: &upload::UploadId, caller: &str) {
        let Turn::Yours(record) = ended.turn(upload, caller) else {
            panic!("{upload:?} ended already");
        };
        record.ended(End::Aborted);
    }

    #[tokio::test]
    async fn steps_are_named_while_they_run_and_finished_once_none_does() {
        let steps = Steps::on(tokio::runtime::Handle::current());
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        steps.spawn("a completion of demo/a.bin".into(), async {
            let _ = held.await;
        });
        steps.spawn("a panicking step".into(), async {
            panic!("a step that fails")
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The panicked step is gone; the held one is named, and holds `finished`.
        assert_eq!(steps.running(), ["a completion of demo/a.bin"]);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), steps.finished())
                .await
                .is_err()
        );
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), steps.finished())
            .await
            .expect("finished once no step runs");
        assert!(steps.running().is_empty());
    }

    #[test]
    fn one_step_at_a_time_ends_an_upload_and_a_failed_one_hands_over() {
        let ended = Ended::default();
        let Turn::Yours(first) = ended.turn(&id(1), "dev:a") else {
            panic!("the first step's turn");
        };
        // While it runs, and once it ended, the next step waits for it.
        assert!(matches!(ended.turn(&id(1), "dev:a"), Turn::Taken(_)));
        drop(first);
        // It failed without an end: the next step takes its turn.
        let Turn::Yours(second) = ended.turn(&id(1), "dev:a") else {
            panic!("a failed step hands over");
        };
        second.ended(End::Aborted);
        let Turn::Taken(end) = ended.turn(&id(1), "dev:a") else {
            panic!("ended");
        };
        assert!(matches!(*end.borrow(), Some((_, End::Aborted))));
    }

    #[test]
    fn a_full_record_pushes_out_the_callers_own_oldest_end_never_a_running_step() {
        let ended = Ended::default();
        // Another caller's end, and a step of the busy caller that still runs.
        abort(&ended, &id(0), "dev:other");
        let Turn::Yours(_running) = ended.turn(&id(1), "dev:busy") else {
            panic!("its turn");
        };
        // The busy caller ends enough uploads to fill the record, and more.
        for n in 2..ENDED_KEPT_AT_MOST + 100 {
            abort(&ended, &id(n), "dev:busy");
        }
        let held = ended.lock().len();
        assert_eq!(held, ENDED_KEPT_AT_MOST);
        // Its own oldest ends went; the other caller's end and the running step stay.
        assert!(matches!(ended.turn(&id(0), "dev:other"), Turn::Taken(_)));
        assert!(matches!(ended.turn(&id(1), "dev:busy"), Turn::Taken(_)));
        assert!(!ended.lock().contains_key(&id(2)));
        assert!(ended.lock().contains_key(&id(ENDED_KEPT_AT_MOST + 99)));
        // A caller with no end of its own pushes out the oldest end of the largest
        // share, not the oldest of all (the other caller's).
        for n in 0..3 {
            abort(&ended, &id(usize::MAX - n), &format!("dev:new{n}"));
        }
        assert_eq!(ended.lock().len(), ENDED_KEPT_AT_MOST);
        assert!(ended.lock().contains_key(&id(1)), "the running step stays");
        assert!(
            ended.lock().contains_key(&id(0)),
            "the other caller's end stays"
        );
        assert!(ended.lock().contains_key(&id(usize::MAX - 2)));
        // The busy caller's own oldest went first (2 to 101), then, for the three new
        // callers, the oldest three it had left.
        let held = |n: usize| ended.lock().contains_key(&id(n));
        assert!(!held(101) && !held(102) && !held(103) && !held(104));
        assert!(held(105));
    }

    #[test]
    fn a_part_named_twice_or_out_of_order_is_told_which() {
        let refusal = |numbers: &[u64]| {
            let mut v = Violations::default();
            let request = CompleteRequest::parse(
                &mut v,
                "parts",
                numbers.iter().map(|&part_number| RawCompletedPart {
                    part_number,
                    etag: "0123456789abcdef0123456789abcdef",
                    checksum_sha256: "",
                }),
            );
            let Err(Error::InvalidArgument(violations)) = v.finish(request) else {
                panic!("{numbers:?} must be refused");
            };
            violations[0].description.clone()
        };
        assert_eq!(
            refusal(&[1, 2, 2]),
            "part 2 is named twice; list each part once"
        );
        assert_eq!(
            refusal(&[1, 3, 2]),
            "part 2 follows part 3; list the parts in ascending order"
        );
    }

    #[test]
    fn a_parts_digest_tells_every_list_apart() {
        let parts = |list: &[(u32, &str)]| {
            parts_digest(
                &list
                    .iter()
                    .map(|(n, e)| PartToComplete {
                        part_number: PartNumber::try_from(u64::from(*n)).unwrap(),
                        etag: (*e).to_owned(),
                        checksum_sha256: None,
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let one = parts(&[(1, "aa"), (2, "bb")]);
        assert_eq!(one, parts(&[(1, "aa"), (2, "bb")]));
        for other in [
            parts(&[(1, "aa")]),
            parts(&[(1, "aab"), (2, "b")]),
            parts(&[(1, "aa"), (3, "bb")]),
            parts(&[(2, "bb"), (1, "aa")]),
            parts(&[]),
        ] {
            assert_ne!(one, other);
        }
    }

    #[test]
    fn an_opened_upload_is_continued_only_by_its_caller_and_while_alive() {
        let upload = |expires_at| {
            OpenUpload(Claims {
                bucket: "demo".parse().unwrap(),
                key: "public/big.bin".parse().unwrap(),
                upload_id: "abc-123".parse().unwrap(),
                caller: "dev:demo".into(),
                expires_at,
                create_only: false,
                expected_size: None,
                checksum_sha256: false,
            })
        };
        let owner = Caller::new("dev:demo", crate::caller::Source::DevToken);
        let other = Caller::new("dev:other", crate::caller::Source::DevToken);
        let alive = upload(SystemTime::now() + Duration::from_secs(60));
        assert_eq!(
            Pipeline::continued(&owner, &alive).unwrap().key,
            *alive.key()
        );
        assert!(matches!(
            Pipeline::continued(&other, &alive),
            Err(Error::OtherCaller)
        ));
        // Opened for its abort within the grace, or alive when opened and expired
        // since: no part is signed, listed or completed for it.
        let expired = upload(SystemTime::now() - Duration::from_secs(1));
        match Pipeline::continued(&owner, &expired) {
            Err(Error::InvalidArgument(v)) => {
                assert_eq!(v[0].field, "upload");
                assert!(v[0].description.contains("expired"), "{}", v[0].description);
            }
            other => panic!("an expired upload was continued: {other:?}"),
        }
    }

    #[test]
    fn an_expected_size_is_one_byte_to_s3s_largest_object() {
        let parse = |expected_size| {
            let mut v = Violations::default();
            let parsed = StartRequest::parse(
                &mut v,
                RawStart {
                    bucket: "demo",
                    key: "public/big.bin",
                    content_type: "",
                    metadata: std::iter::empty(),
                    checksum_sha256: false,
                    create_only: false,
                    expected_size,
                },
                |_| Some(None),
            );
            v.finish(parsed)
        };
        for fine in [None, Some(1), Some(crate::upload::MAX_OBJECT_BYTES)] {
            assert!(parse(fine).is_ok(), "{fine:?}");
        }
        for (refused, says) in [
            (0, "at least 1 byte"),
            (crate::upload::MAX_OBJECT_BYTES + 1, "5 TiB"),
            (u64::MAX, "5 TiB"),
        ] {
            let error = parse(Some(refused)).expect_err("refused").to_string();
            assert!(
                error.contains("expected_size") && error.contains(says),
                "{refused}: {error}"
            );
        }
    }

    fn stored(parts: &[(u16, u64, &str)]) -> HashMap<u16, StoredPart> {
        parts
            .iter()
            .map(|&(n, size, etag)| {
                (
                    n,
                    StoredPart {
                        part_number: n,
                        size,
                        etag: etag.into(),
                        checksum_sha256: None,
                    },
                )
            })
            .collect()
    }

    fn asked(parts: &[(u64, &str)]) -> Vec<PartToComplete> {
        parts
            .iter()
            .map(|&(n, etag)| PartToComplete {
                part_number: PartNumber::try_from(n).unwrap(),
                etag: etag.into(),
                checksum_sha256: None,
            })
            .collect()
    }

    fn refusal(result: Result<u64, Error>) -> String {
        match result {
            Err(Error::FailedPrecondition(message)) => message,
            other => panic!("expected FailedPrecondition, got {other:?}"),
        }
    }

    #[test]
    fn known_parts_add_up() {
        let held = stored(&[(1, 10, "a"), (2, 5, "b"), (3, 1, "c")]);
        assert_eq!(
            check_parts(&asked(&[(1, "a"), (2, "b")]), &held, None, None).ok(),
            Some(15)
        );
        assert_eq!(
            check_parts(&asked(&[(1, "a"), (3, "c")]), &held, Some(11), Some(11)).ok(),
            Some(11)
        );
    }

    #[test]
    fn an_unknown_etag_names_its_part() {
        let held = stored(&[(1, 10, "a"), (2, 5, "b")]);
        let message = refusal(check_parts(
            &asked(&[(1, "a"), (2, "zzz")]),
            &held,
            None,
            None,
        ));
        assert!(
            message.starts_with("part 2: the store holds another ETag"),
            "{message}"
        );
        let message = refusal(check_parts(&asked(&[(3, "c")]), &held, None, None));
        assert!(message.starts_with("part 3 was not uploaded"), "{message}");
    }

    #[test]
    fn a_store_that_lists_no_etag_leaves_the_check_to_its_complete() {
        let held = stored(&[(1, 10, "")]);
        assert_eq!(
            check_parts(&asked(&[(1, "anything")]), &held, None, None).ok(),
            Some(10)
        );
    }

    #[test]
    fn sizes_over_the_limit_or_off_the_expected_size_are_refused() {
        let held = stored(&[(1, 10, "a"), (2, 5, "b")]);
        let both = asked(&[(1, "a"), (2, "b")]);
        assert!(refusal(check_parts(&both, &held, Some(14), None)).contains("at most 14"));
        assert!(refusal(check_parts(&both, &held, None, Some(16))).contains("started for 16"));
    }
}
