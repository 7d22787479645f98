//! The routes `@uppy/aws-s3` 6.x calls in its `companionEndpoint` mode, so that Uppy
//! uploads straight to the store with only that option pointing at the gateway. Paths
//! and JSON shapes follow `@uppy/aws-s3` 6.3.1 (`src/s3-client/CompanionS3.ts`):
//!
//! - `GET /s3/params?filename=&type=&metadata[…]=`: a single upload, always a
//!   presigned POST form (`{method, url, fields}`; Uppy reads `url` and `fields`);
//! - `POST /s3/multipart` `{filename, type, metadata}` → `{key, uploadId}`;
//! - `GET /s3/multipart/{uploadId}/{partNumber}?key=` → `{url}`;
//! - `GET /s3/multipart/{uploadId}?key=` → `[{PartNumber, ETag, Size}]`;
//! - `POST /s3/multipart/{uploadId}/complete?key=` `{parts: [{PartNumber, ETag}]}` →
//!   `{location, key}`;
//! - `DELETE /s3/multipart/{uploadId}?key=` → 204.
//!
//! The browser never chooses where its file goes: the key is `{the caller's write rule
//! prefix in http.upload_bucket}{random id}/{sanitised file name}`. Uppy's `uploadId`
//! is the multipart upload token, so every later step is bound to the caller that
//! started the upload; `key` must match the token's. Uppy's metadata is not signed
//! into the object (any page could otherwise set arbitrary `x-amz-meta-*`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::caller::Caller;
use crate::grant::{
    CompleteRequest, OpenUpload, PartsRequest, RawCompletedPart, RawPart, RawSize, RawStart,
    RawWrite, StartRequest, UploadStep, Violations, WriteRequest,
};
use crate::scope::{BucketName, MAX_UPLOAD_BYTES};

use super::caller::{Door, identify};
use super::problem::Problem;
use super::{App, no_store};

/// The caller and the upload bucket, or the refusal.
fn caller_and_bucket(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Caller, BucketName), Problem> {
    let bucket = app
        .settings
        .upload_bucket
        .clone()
        .ok_or_else(|| Problem::not_configured("browser uploads need http.upload_bucket"))?;
    let (caller, _) = identify(app, method, headers, Door::BrowserIssuing)?;
    Ok((caller, bucket))
}

/// The type Uppy reports for the file (the browser's `File.type`), or
/// `application/octet-stream`, S3's own default: a browser leaves the type empty for
/// a file it cannot classify, and an upload should not fail over a type the user
/// never chose. A type no browser reports (control characters, over 255 bytes) is
/// refused: it comes from a crafted request, whose sender should hear what is wrong.
fn content_type(text: Option<&str>) -> Result<&str, Problem> {
    match text {
        None | Some("") => Ok("application/octet-stream"),
        Some(t) if t.len() <= 255 && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => Ok(t),
        Some(_) => Err(Problem::bad_request(
            "type must be the file's MIME type, e.g. image/png: printable ASCII, at most 255 \
             bytes (or empty, for application/octet-stream)",
        )),
    }
}

/// `GET /s3/params`.
pub(crate) async fn params(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let (caller, bucket) = match caller_and_bucket(&app, &method, &headers) {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let Ok(Query(pairs)) = query else {
        return Problem::bad_request("query: filename=<name>&type=<content type>").into_response();
    };
    // A parameter sent twice is refused, as on the other routes: which one counts
    // would otherwise be this door's guess.
    let mut query = HashMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if query.contains_key(&name) {
            return Problem::bad_request(format!(
                "query: '{}' was sent more than once; send it once",
                crate::core::text::echo(&name)
            ))
            .into_response();
        }
        query.insert(name, value);
    }
    let filename = query
        .get("filename")
        .map(String::as_str)
        .unwrap_or_default();
    let (key, max_size) = match app.pipeline.browser_upload_key(&caller, &bucket, filename) {
        Ok(found) => found,
        Err(e) => return Problem::from(e).into_response(),
    };
    let content_type = match content_type(query.get("type").map(String::as_str)) {
        Ok(t) => t,
        Err(problem) => return problem.into_response(),
    };
    let mut v = Violations::default();
    let request = WriteRequest::parse(
        &mut v,
        RawWrite {
            bucket: bucket.as_str(),
            key: key.as_str(),
            content_type,
            checksum_sha256: "",
            metadata: std::iter::empty::<(&str, &str)>(),
            size: RawSize::Range {
                min: 0,
                max: max_size.unwrap_or(MAX_UPLOAD_BYTES).min(MAX_UPLOAD_BYTES),
            },
            create_only: false,
        },
        |_| Some(None),
    );
    match v
        .finish(request)
        .and_then(|request| app.pipeline.write(&caller, &request))
    {
        Ok(grant) => no_store(Json(super::uploads::UploadGrant::from(grant))),
        Err(e) => Problem::from(e).into_response(),
    }
}

/// `POST /s3/multipart` body.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateBody {
    #[serde(default)]
    filename: String,
    #[serde(default, rename = "type")]
    content_type: Option<String>,
    /// Read and ignored: not signed into the object.
    #[serde(default)]
    #[allow(dead_code)]
    metadata: serde_json::Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    key: String,
    upload_id: String,
    bucket: String,
}

/// `POST /s3/multipart`.
pub(crate) async fn create(
    State(app): State<Arc<App>>,
    deadline: Option<Extension<super::Deadline>>,
    method: Method,
    headers: HeaderMap,
    body: Result<Json<super::Object<CreateBody>>, JsonRejection>,
) -> Response {
    let (caller, bucket) = match caller_and_bucket(&app, &method, &headers) {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let body = match body {
        Ok(Json(super::Object(body))) => body,
        Err(e) => return Problem::from(e).into_response(),
    };
    let key = match app
        .pipeline
        .browser_upload_key(&caller, &bucket, &body.filename)
    {
        Ok((key, _)) => key,
        Err(e) => return Problem::from(e).into_response(),
    };
    let content_type = match content_type(body.content_type.as_deref()) {
        Ok(t) => t,
        Err(problem) => return problem.into_response(),
    };
    let mut v = Violations::default();
    let request = StartRequest::parse(
        &mut v,
        RawStart {
            bucket: bucket.as_str(),
            key: key.as_str(),
            content_type,
            metadata: std::iter::empty::<(&str, &str)>(),
            checksum_sha256: false,
            create_only: false,
            expected_size: None,
        },
        |_| Some(Some(app.settings.multipart_ttl)),
    );
    let request = match v.finish(request) {
        Ok(request) => request,
        Err(e) => return Problem::from(e).into_response(),
    };
    match app
        .pipeline
        .start_multipart(&caller, &request, super::Deadline::left_of(deadline, &app))
        .await
    {
        Ok(started) => no_store(Json(Created {
            key: started.key.as_str().to_owned(),
            upload_id: started.upload,
            bucket: started.bucket.to_string(),
        })),
        Err(e) => Problem::from(e).into_response(),
    }
}

/// `?key=`: the key Uppy believes the upload has; it must be the token's.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyQuery {
    key: String,
}

/// The caller continuing upload `token`, and the upload, after checking that `key`
/// (from the query) is the key the token names; or the refusal to answer.
fn continuing(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    token: &str,
    query: Result<Query<KeyQuery>, QueryRejection>,
    step: UploadStep,
) -> Result<(Caller, OpenUpload), Problem> {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            // Missing, or sent more than once: say which.
            let twice = rejection.body_text().contains("duplicate field");
            return Err(Problem::bad_request(if twice {
                "?key= was sent more than once; send the upload's key once"
            } else {
                "?key=<the upload's key> is required (the key POST /s3/multipart answered)"
            }));
        }
    };
    let (caller, _) = identify(app, method, headers, Door::BrowserIssuing)?;
    let upload = app.pipeline.open_upload(&caller, token, step)?;
    if upload.key().as_str() != query.key {
        return Err(Problem::bad_request(
            "key is not the key of this upload; send the key POST /s3/multipart answered",
        ));
    }
    Ok((caller, upload))
}

/// The upload token from the path.
fn token(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(token)| token)
        .map_err(|_| Problem::bad_request("path: /s3/multipart/{uploadId}[/complete]"))
}

// No `Debug`: it carries a credential (a presigned URL or keys) that must never
// be printed.
#[derive(Serialize)]
struct SignedPart {
    url: String,
    headers: std::collections::BTreeMap<String, String>,
    expires: u64,
}

/// `GET /s3/multipart/{uploadId}/{partNumber}`.
pub(crate) async fn sign_part(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<(String, u64)>, PathRejection>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Response {
    let Ok(Path((token, number))) = path else {
        return Problem::bad_request(
            "path: /s3/multipart/{uploadId}/{partNumber}, partNumber a whole number from 1 to \
             10000",
        )
        .into_response();
    };
    let (caller, upload) =
        match continuing(&app, &method, &headers, &token, query, UploadStep::Continue) {
            Ok(found) => found,
            Err(problem) => return problem.into_response(),
        };
    let mut v = Violations::default();
    let request = PartsRequest::parse(
        &mut v,
        "partNumber",
        std::iter::once(RawPart {
            part_number: number,
            ..RawPart::default()
        }),
        |_| Some(None),
    );
    let signed = v
        .finish(request)
        .and_then(|request| app.pipeline.grant_parts(&caller, &upload, &request));
    match signed {
        Ok(mut signed) => {
            let part = signed.parts.remove(0);
            let expires = signed
                .expires_at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
                .as_secs();
            no_store(Json(SignedPart {
                url: part.request.url.into_exposed(),
                headers: part.request.headers.into_iter().collect(),
                expires,
            }))
        }
        Err(e) => Problem::from(e).into_response(),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListedPart {
    part_number: u16,
    size: u64,
    #[serde(rename = "ETag")]
    etag: String,
}

/// `GET /s3/multipart/{uploadId}`.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    deadline: Option<Extension<super::Deadline>>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Response {
    let (caller, upload) = match token(path)
        .and_then(|token| continuing(&app, &method, &headers, &token, query, UploadStep::Continue))
    {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    match app
        .pipeline
        .list_parts(&caller, &upload, super::Deadline::left_of(deadline, &app))
        .await
    {
        Ok(parts) => Json(
            parts
                .into_iter()
                .map(|p| ListedPart {
                    part_number: p.part_number,
                    size: p.size,
                    etag: p.etag,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

/// `POST …/complete` body.
#[derive(Debug, Deserialize)]
pub(crate) struct CompleteBody {
    parts: Vec<CompletePart>,
}

#[derive(Debug, Deserialize)]
struct CompletePart {
    #[serde(rename = "PartNumber")]
    part_number: serde_json::Value,
    #[serde(rename = "ETag")]
    etag: String,
}

#[derive(Debug, Serialize)]
struct Done {
    location: String,
    key: String,
    bucket: String,
}

/// `POST /s3/multipart/{uploadId}/complete`.
pub(crate) async fn complete(
    State(app): State<Arc<App>>,
    deadline: Option<Extension<super::Deadline>>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<KeyQuery>, QueryRejection>,
    body: Result<Json<super::Object<CompleteBody>>, JsonRejection>,
) -> Response {
    let (caller, upload) = match token(path)
        .and_then(|token| continuing(&app, &method, &headers, &token, query, UploadStep::Continue))
    {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let body = match body {
        Ok(Json(super::Object(body))) => body,
        Err(e) => return Problem::from(e).into_response(),
    };
    // Uppy sends numbers; older clients strings of digits.
    let mut numbers = Vec::with_capacity(body.parts.len());
    for (i, part) in body.parts.iter().enumerate() {
        let number = match &part.part_number {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let Some(number) = number else {
            return Problem::bad_request(format!(
                "parts[{i}].PartNumber: {} is not a part number; send a whole number from 1 \
                 to 10000",
                crate::core::text::echo(&part.part_number.to_string())
            ))
            .into_response();
        };
        numbers.push(number);
    }
    let mut v = Violations::default();
    let request = CompleteRequest::parse(
        &mut v,
        "parts",
        body.parts
            .iter()
            .zip(numbers)
            .map(|(p, part_number)| RawCompletedPart {
                part_number,
                etag: &p.etag,
                checksum_sha256: "",
            }),
    );
    let done = match v.finish(request) {
        Ok(request) => {
            app.pipeline
                .complete_multipart(
                    &caller,
                    &upload,
                    &request,
                    super::Deadline::left_of(deadline, &app),
                )
                .await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(done) => Json(Done {
            // The click-time link: a stable address that answers a fresh presigned
            // GET, never a presigned URL that Uppy would keep and show.
            location: format!(
                "/v1/objects/{}/{}",
                done.bucket,
                done.key
                    .as_str()
                    .split('/')
                    .map(super::percent_encode_component)
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            key: done.key.as_str().to_owned(),
            bucket: done.bucket.to_string(),
        })
        .into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}

/// `DELETE /s3/multipart/{uploadId}`.
pub(crate) async fn abort(
    State(app): State<Arc<App>>,
    deadline: Option<Extension<super::Deadline>>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Response {
    let (caller, upload) = match token(path)
        .and_then(|token| continuing(&app, &method, &headers, &token, query, UploadStep::Abort))
    {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    match app
        .pipeline
        .abort_multipart(&caller, &upload, super::Deadline::left_of(deadline, &app))
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}
