//! The calls this service makes to the store itself, for multipart uploads: create,
//! list parts, complete, abort. Presigning needs no call; these do, because only the
//! key holder can start and finish an upload for a caller without handing it
//! credentials. Each call has its own timeout (`storage.call_timeout`).
//!
//! IAM permissions the service's own role needs for them: `s3:PutObject` (create,
//! complete), `s3:ListMultipartUploadParts` (list), `s3:AbortMultipartUpload` (abort).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};

use crate::scope::{BucketName, HeaderText, Metadata, ObjectKey};
use crate::upload::{PartNumber, UploadId};

/// Why a store call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The store answered with an error code; `message` is for the operator.
    #[error("the store refused the request ({code})")]
    Refused {
        /// S3's error code (`NoSuchUpload`, `InvalidPart`, `PreconditionFailed`, …).
        code: String,
        /// Status, code and message, without the response body.
        message: String,
    },
    /// The store answered with a server error (5xx, S3's `SlowDown` and
    /// `InternalError` among them): its side failed, and S3 asks for a retry.
    #[error("the store failed (HTTP {status} {code})")]
    Failed {
        /// The HTTP status.
        status: u16,
        /// S3's error code, or `Unknown`.
        code: String,
    },
    /// No answer to act on: connection, timeout, malformed response; the cause of a
    /// failed connection is its `source`.
    #[error("no usable answer from the store: {0}")]
    Unreachable(#[source] crate::aws::Unanswered),
    /// A success without a field it must carry (a body cut short, a proxy's answer):
    /// no answer to act on, as a malformed one.
    #[error("no usable answer from the store: its answer lacked {0}")]
    Incomplete(&'static str),
    /// The store answered a step as done, but does not show it done.
    #[error("the store answered {0} as done, but has not carried it out")]
    NotCarriedOut(&'static str),
    /// The store answered a step as done, and the check that it was failed.
    #[error("the store answered {0} as done, and confirming it failed ({1})")]
    Unconfirmed(&'static str, #[source] Box<Error>),
    /// The call had to answer (its deadline was near) before the store did; the step
    /// goes on in a task of its own (`grant::multipart`).
    #[error(
        "the store had not answered after {}, and this call must answer before its \
         deadline",
        crate::core::duration::display(*.0)
    )]
    Pending(Duration),
}

impl Error {
    /// S3's error code, when the store answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Refused { code, .. } | Error::Failed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether a retry may succeed without anyone changing anything: the store was
    /// unreachable or failed on its side.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unreachable(_)
                | Error::Failed { .. }
                | Error::Pending(_)
                | Error::Incomplete(_)
                | Error::NotCarriedOut(_)
                | Error::Unconfirmed(..)
        )
    }
}

fn classify<E>(error: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match crate::aws::Unanswered::from_sdk(error) {
        Ok(unanswered) => Error::Unreachable(unanswered),
        // After the SDK's own retries: S3 answers a 5xx (`SlowDown` 503,
        // `InternalError` 500) for a failure on its side, which a later retry may not
        // meet. A CompleteMultipartUpload can fail so after its 200 has been sent: the
        // same error codes in a 200's body.
        Err(answer)
            if answer
                .raw_response()
                .is_some_and(|r| r.status().is_server_error())
                || answer.code().is_some_and(is_server_side) =>
        {
            Error::Failed {
                status: answer.raw_response().map_or(500, |r| r.status().as_u16()),
                code: answer.code().unwrap_or("Unknown").to_owned(),
            }
        }
        // S3 names every refusal of the calls made here in an XML body: one without a
        // code (a proxy's 404 page; an empty body, for which the SDK makes up
        // `NotFound`, a code S3 sends for none of these calls) said nothing to act on;
        // but a bare 401 or 403 (a firewall's) is a refusal of this service, for its
        // operator.
        Err(answer)
            if matches!(answer.code().map(str::trim), None | Some("" | "NotFound"))
                && !answer
                    .raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 401 | 403)) =>
        {
            Error::Unreachable(crate::aws::Unanswered::Malformed(
                answer.raw_response().map_or(0, |r| r.status().as_u16()),
            ))
        }
        Err(answer) => Error::Refused {
            code: answer.code().unwrap_or("Unknown").to_owned(),
            message: crate::aws::describe_answer(&answer),
        },
    }
}

/// A part as ListParts answered it: with a number within 1 to 10,000 and its size,
/// and an ETag the store makes when it names one (S3 always does; some stores made for
/// development do not). Anything else is an answer cut short or not S3's, which a
/// caller would otherwise complete with or resume from.
fn stored_part(p: &aws_sdk_s3::types::Part) -> Result<StoredPart, Error> {
    let part_number = p
        .part_number()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| (1..=crate::upload::MAX_PARTS).contains(n))
        .ok_or(Error::Incomplete("a part number within 1 to 10,000"))?;
    let etag = p.e_tag().map_or("", |e| e.trim_matches('"'));
    if !etag.is_empty() && !crate::upload::is_store_token(etag) {
        return Err(Error::Incomplete("an ETag the store makes for each part"));
    }
    let size = p
        .size()
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s <= crate::upload::MAX_PART_BYTES)
        .ok_or(Error::Incomplete("each part's size, within 5 GiB"))?;
    Ok(StoredPart {
        part_number,
        size,
        etag: etag.to_owned(),
        checksum_sha256: p.checksum_sha256().map(str::to_owned),
    })
}

/// Whether a completion of certain parts made the object at its key.
#[derive(Debug)]
pub enum Made {
    /// It did: the object's ETag and size.
    Yes {
        /// The object's ETag.
        etag: String,
        /// Its size in bytes.
        size: u64,
    },
    /// It did not: no object there, or another one.
    No,
    /// This service cannot tell, and asking again will not change that (why).
    CannotTell(&'static str),
    /// The store did not answer usably; asking again later may.
    Unknown(Error),
}

/// S3's ETag of an object completed from `parts`: the MD5 of their MD5s, `-`, their
/// number; `None` when a part's ETag is not an MD5 (an encrypted store's).
fn multipart_etag(parts: &[PartToComplete]) -> Option<String> {
    use md5::Digest as _;
    let mut md5 = md5::Md5::new();
    for part in parts {
        let digest = hex::decode(part.etag.trim_matches('"')).ok()?;
        if digest.len() != 16 {
            return None;
        }
        md5.update(digest);
    }
    Some(format!("{}-{}", hex::encode(md5.finalize()), parts.len()))
}

/// `call`, or [`crate::aws::Unanswered::Deadline`] past `timeout`.
async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unreachable(crate::aws::Unanswered::Deadline(
                timeout,
            )))
        })
}

/// S3's error codes for a failure on its side (answered with HTTP 500 or 503, or in a
/// 200's body once a CompleteMultipartUpload's answer has begun).
fn is_server_side(code: &str) -> bool {
    matches!(code, "InternalError" | "SlowDown" | "ServiceUnavailable")
}

/// A part as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// Its number.
    pub part_number: u16,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, without quotes.
    pub etag: String,
    /// Its SHA-256 checksum in base64, when the store keeps one.
    pub checksum_sha256: Option<String>,
}

/// A part to complete the upload with.
#[derive(Debug, Clone)]
pub struct PartToComplete {
    /// Its number.
    pub part_number: PartNumber,
    /// Its ETag, as the store gave it.
    pub etag: String,
    /// Its SHA-256 checksum, when the upload pins checksums.
    pub checksum_sha256: Option<String>,
}

/// The multipart calls, on one S3 client.
#[derive(Debug, Clone)]
pub struct Store {
    client: aws_sdk_s3::Client,
    timeout: Duration,
    complete_timeout: Duration,
}

impl Store {
    /// Calls through `client`, each bounded by `timeout`, a completion by
    /// `complete_timeout` (S3 may take minutes to carry one out, answering with
    /// whitespace while it works).
    pub fn new(client: aws_sdk_s3::Client, timeout: Duration, complete_timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            complete_timeout,
        }
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        within(self.timeout, call).await
    }

    /// CreateMultipartUpload with the pinned content type, metadata and checksum
    /// algorithm.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn create(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        content_type: Option<&HeaderText>,
        metadata: &Metadata,
        checksum_sha256: bool,
    ) -> Result<UploadId, Error> {
        // Repeated names become one header with the values joined by `,`, as a
        // presigned PUT sends them.
        let mut joined: HashMap<String, String> = HashMap::new();
        for (name, value) in metadata.entries() {
            joined
                .entry(name.clone())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(value);
                })
                .or_insert_with(|| value.clone());
        }
        let metadata = joined;
        let call = self
            .client
            .create_multipart_upload()
            .bucket(bucket.as_str())
            .key(key.as_str())
            .set_content_type(content_type.map(|c| c.as_str().to_owned()))
            .set_metadata((!metadata.is_empty()).then_some(metadata))
            .set_checksum_algorithm(checksum_sha256.then_some(ChecksumAlgorithm::Sha256));
        self.bounded(async {
            let out = call.send().await.map_err(classify)?;
            out.upload_id()
                .ok_or(Error::Incomplete("an upload id"))?
                .parse()
                .map_err(|_| Error::Incomplete("a well-formed upload id"))
        })
        .await
    }

    /// Every part uploaded so far, in part-number order (all pages).
    ///
    /// # Errors
    /// [`Error`].
    pub async fn list_parts(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        upload_id: &UploadId,
    ) -> Result<Vec<StoredPart>, Error> {
        self.bounded(async {
            let mut parts = Vec::new();
            let mut marker: Option<String> = None;
            // Whatever the store's page size: every page must move past the last, so
            // at most one page a part (and the call is bounded by its timeout).
            let mut after = 0u16;
            loop {
                let out = self
                    .client
                    .list_parts()
                    .bucket(bucket.as_str())
                    .key(key.as_str())
                    .upload_id(upload_id.as_str())
                    .max_parts(1000)
                    .set_part_number_marker(marker.take())
                    .send()
                    .await
                    .map_err(classify)?;
                // S3 names the upload it lists: an answer that does not (cut short, or
                // not S3's) would pass for an upload holding no parts.
                if out.upload_id() != Some(upload_id.as_str()) {
                    return Err(Error::Incomplete("the upload id it lists"));
                }
                if out.key() != Some(key.as_str()) {
                    return Err(Error::Incomplete("the key of the upload it lists"));
                }
                let mut page_highest = 0;
                for p in out.parts() {
                    let part = stored_part(p)?;
                    page_highest = page_highest.max(part.part_number);
                    parts.push(part);
                }
                if parts.len() > usize::from(crate::upload::MAX_PARTS) {
                    return Err(Error::Incomplete("an end within 10,000 parts"));
                }
                if out.is_truncated() != Some(true) {
                    break;
                }
                // The next page begins after the highest part of this one, which S3
                // names: a marker past it would skip parts, one short of it list them
                // again.
                match out
                    .next_part_number_marker()
                    .and_then(|next| next.parse::<u16>().ok())
                {
                    Some(next) if next > after && next == page_highest => {
                        after = next;
                        marker = Some(next.to_string());
                    }
                    _ => {
                        return Err(Error::Incomplete(
                            "a next page of parts after the one it answered",
                        ));
                    }
                }
            }
            parts.sort_by_key(|p| p.part_number);
            // Pages that moved past each other cannot list a part twice; one page can.
            if parts
                .windows(2)
                .any(|w| w[0].part_number == w[1].part_number)
            {
                return Err(Error::Incomplete("each part once"));
            }
            Ok(parts)
        })
        .await
    }

    /// CompleteMultipartUpload with `parts`, `If-None-Match: *` when `create_only`;
    /// answers the object's ETag.
    ///
    /// # Errors
    /// [`Error`]; a create-only complete over an existing object is `Refused` with
    /// `PreconditionFailed`.
    pub async fn complete(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        upload_id: &UploadId,
        parts: &[PartToComplete],
        create_only: bool,
    ) -> Result<String, Error> {
        let parts = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(i32::from(p.part_number.get()))
                    .e_tag(format!("\"{}\"", p.etag))
                    .set_checksum_sha256(p.checksum_sha256.clone())
                    .build()
            })
            .collect();
        let call = self
            .client
            .complete_multipart_upload()
            .bucket(bucket.as_str())
            .key(key.as_str())
            .upload_id(upload_id.as_str())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_if_none_match(create_only.then(|| "*".to_owned()));
        within(self.complete_timeout, async {
            let out = call.send().await.map_err(classify)?;
            // A completion is known by the object's ETag, under the key and bucket it
            // was asked for: an answer without them (cut short, or not S3's) says
            // nothing of whether this object exists.
            let etag = out.e_tag().unwrap_or_default().trim_matches('"');
            let names_it = out.key() == Some(key.as_str())
                && out.bucket().is_none_or(|b| b == bucket.as_str());
            if !crate::upload::is_store_token(etag) || !names_it {
                return Err(Error::Incomplete(
                    "the completed object's ETag, under the key and bucket asked for",
                ));
            }
            Ok(etag.to_owned())
        })
        .await
    }

    /// Whether the object at `key` is the completion of `parts`: its ETag is S3's
    /// multipart ETag of those parts (the MD5 of their MD5s, then `-` and their number)
    /// and, when known, its size `size`. For a completion whose answer was lost (cut
    /// short, or a dropped connection whose retry the store answered "no such upload")
    /// or whose upload is gone when it is retried: only these parts' bytes make that
    /// object.
    pub async fn completed_as(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        parts: &[PartToComplete],
        size: Option<u64>,
    ) -> Made {
        let Some(expected) = multipart_etag(parts) else {
            return Made::CannotTell("its parts' ETags are not MD5s (an encrypted store's)");
        };
        let call = self
            .client
            .head_object()
            .bucket(bucket.as_str())
            .key(key.as_str());
        // HeadObject answers with no body: its status is all there is to read.
        let made = self.bounded(async {
            let head = match call.send().await {
                Ok(head) => head,
                Err(e) => {
                    return match e.raw_response().map(|r| r.status().as_u16()) {
                        Some(404) => Ok(Made::No),
                        Some(403) => Ok(Made::CannotTell(
                            "its role may not read the object (s3:GetObject)",
                        )),
                        _ => Err(classify(e)),
                    };
                }
            };
            let etag = head.e_tag().unwrap_or_default().trim_matches('"');
            Ok(
                match head.content_length().and_then(|n| u64::try_from(n).ok()) {
                    Some(length) if etag == expected && size.is_none_or(|size| length == size) => {
                        Made::Yes {
                            etag: etag.to_owned(),
                            size: length,
                        }
                    }
                    _ => Made::No,
                },
            )
        });
        made.await.unwrap_or_else(Made::Unknown)
    }

    /// AbortMultipartUpload, confirmed as S3 asks: the upload must list no parts any
    /// more. An abort's answer has no body to check (S3 answers 204), so a proxy's
    /// page or a store that did not carry it out would pass for one, and the parts
    /// would stay, billed, while the caller is told they are gone.
    ///
    /// # Errors
    /// [`Error`]; [`Error::NotCarriedOut`] when the upload still lists its parts.
    pub async fn abort(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        upload_id: &UploadId,
    ) -> Result<(), Error> {
        let call = self
            .client
            .abort_multipart_upload()
            .bucket(bucket.as_str())
            .key(key.as_str())
            .upload_id(upload_id.as_str());
        self.bounded(async {
            call.send().await.map_err(classify)?;
            Ok(())
        })
        .await?;
        match self.upload_gone(bucket, key, upload_id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::NotCarriedOut("the abort")),
            Err(other) => Err(Error::Unconfirmed("the abort", Box::new(other))),
        }
    }

    /// Whether the upload is gone (completed or aborted): ListParts answers
    /// NoSuchUpload, or no parts, as some stores made for development answer for a
    /// gone upload.
    ///
    /// # Errors
    /// [`Error`] when the listing fails.
    pub async fn upload_gone(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        upload_id: &UploadId,
    ) -> Result<bool, Error> {
        match self.list_parts(bucket, key, upload_id).await {
            Ok(parts) => Ok(parts.is_empty()),
            Err(gone) if gone.code() == Some("NoSuchUpload") => Ok(true),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError;
    use aws_smithy_types::body::SdkBody;

    /// The store's answer `status` carrying error `code` (none: a body the SDK could
    /// not read as the operation's answer).
    fn answered(
        status: u16,
        code: Option<&str>,
    ) -> SdkError<CompleteMultipartUploadError, HttpResponse> {
        let mut metadata = ErrorMetadata::builder();
        if let Some(code) = code {
            metadata = metadata.code(code);
        }
        let raw = http::Response::builder()
            .status(status)
            .body(SdkBody::empty())
            .unwrap();
        SdkError::service_error(
            CompleteMultipartUploadError::generic(metadata.build()),
            HttpResponse::try_from(raw).unwrap(),
        )
    }

    #[test]
    fn a_failure_on_the_stores_side_is_transient_whatever_the_status_it_came_with() {
        for (status, code) in [
            (503, Some("SlowDown")),
            (500, None),
            // A CompleteMultipartUpload failing after its 200 began.
            (200, Some("InternalError")),
            (200, Some("SlowDown")),
        ] {
            let error = classify(answered(status, code));
            assert!(
                matches!(error, Error::Failed { .. }) && error.is_transient(),
                "{status} {code:?}: {error:?}"
            );
        }
        // A 200 that is no answer at all: malformed, not a refusal.
        let error = classify(answered(200, None));
        assert!(
            matches!(
                error,
                Error::Unreachable(crate::aws::Unanswered::Malformed(200))
            ),
            "{error:?}"
        );
        assert!(error.is_transient());
        // A refusal without S3's code (a proxy's 404 page, an empty one) is no answer to
        // act on.
        for code in [None, Some(""), Some(" "), Some("NotFound")] {
            let error = classify(answered(404, code));
            assert!(
                matches!(
                    error,
                    Error::Unreachable(crate::aws::Unanswered::Malformed(404))
                ),
                "{code:?}: {error:?}"
            );
            assert!(error.is_transient());
        }
        // The store refusing the request stays a refusal, with its code.
        for (status, code) in [
            (404, "NoSuchUpload"),
            (400, "InvalidPart"),
            (403, "AccessDenied"),
        ] {
            let error = classify(answered(status, Some(code)));
            assert_eq!(error.code(), Some(code));
            assert!(!error.is_transient(), "{error:?}");
        }
    }

    #[test]
    fn a_listed_part_needs_a_number_within_range_a_size_and_a_store_etag_if_any() {
        use aws_sdk_s3::types::Part;
        let part = |n: i32, size: Option<i64>, etag: Option<&str>| {
            Part::builder()
                .part_number(n)
                .set_size(size)
                .set_e_tag(etag.map(str::to_owned))
                .build()
        };
        let good = stored_part(&part(7, Some(5), Some("\"0123abcd\""))).unwrap();
        assert_eq!((good.part_number, good.size), (7, 5));
        assert_eq!(good.etag, "0123abcd");
        // A store that names no ETag (one made for development) lists parts all the same.
        assert_eq!(stored_part(&part(10_000, Some(0), None)).unwrap().etag, "");
        for (bad, why) in [
            (part(0, Some(5), None), "part 0"),
            (part(10_001, Some(5), None), "part 10,001"),
            (part(-1, Some(5), None), "a negative part"),
            (part(1, None, None), "no size"),
            (part(1, Some(-5), None), "a negative size"),
            (part(1, Some(5 << 30 | 1), None), "a part over 5 GiB"),
            (part(1, Some(5), Some("\"a b\"")), "an ETag with a space"),
            (
                part(1, Some(5), Some(&"e".repeat(1025))),
                "an ETag over 1 KiB",
            ),
        ] {
            let error = stored_part(&bad).expect_err(why);
            assert!(matches!(error, Error::Incomplete(_)), "{why}: {error:?}");
            assert!(error.is_transient(), "{why}");
        }
    }
}
