//! Upload signing as JSON: `POST /v1/uploads` with GrantWrite's fields answers the
//! presigned PUT (`{method, url, headers}`) or POST form (`{method, url, fields}`)
//! for the browser to send the file straight to the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};

use crate::grant::{Presigned, RawSize, RawWrite, Violations, WriteRequest};

use super::caller::{Door, identify};
use super::problem::Problem;
use super::{App, JsonTtl};

/// The body: GrantWrite's fields, by their proto field names or, as protobuf's JSON
/// mapping also accepts, their lowerCamelCase JSON names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadRequest {
    bucket: String,
    key: String,
    #[serde(default, alias = "contentType")]
    content_type: String,
    #[serde(
        default,
        alias = "contentLength",
        deserialize_with = "super::json_u64_optional"
    )]
    content_length: Option<u64>,
    #[serde(alias = "contentLengthRange")]
    content_length_range: Option<Range>,
    #[serde(default, alias = "checksumSha256")]
    checksum_sha256: String,
    #[serde(default, deserialize_with = "super::json_unique_map")]
    metadata: BTreeMap<String, String>,
    #[serde(default, alias = "createOnly")]
    create_only: bool,
    ttl: Option<JsonTtl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    /// 0 when left out, as protobuf's JSON writers leave a 0 out.
    #[serde(alias = "minBytes", default, deserialize_with = "super::json_u64")]
    min_bytes: u64,
    /// Left out, 0, which the range refuses by name.
    #[serde(alias = "maxBytes", default, deserialize_with = "super::json_u64")]
    max_bytes: u64,
}

/// What the uploader sends.
// No `Debug`: it carries a credential (a presigned URL or keys) that must never
// be printed.
#[derive(Serialize)]
pub(crate) struct UploadGrant {
    method: &'static str,
    url: String,
    /// A PUT's, `{}` when nothing is pinned (clients iterate over it); none for a form.
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    fields: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    file_field: &'static str,
    expires_at: String,
    grant_id: String,
}

impl From<Presigned> for UploadGrant {
    fn from(grant: Presigned) -> Self {
        UploadGrant {
            method: grant.method,
            url: grant.url.into_exposed(),
            headers: (grant.file_field.is_empty()).then(|| grant.headers.into_iter().collect()),
            fields: grant.form_fields.into_iter().collect(),
            file_field: grant.file_field,
            expires_at: crate::sign::rfc3339(grant.expires_at),
            grant_id: grant.grant_id,
        }
    }
}

/// The route.
pub(crate) async fn sign(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    body: Result<Json<super::Object<UploadRequest>>, JsonRejection>,
) -> Response {
    let (caller, _) = match identify(&app, &method, &headers, Door::Browser) {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let body = match body {
        Ok(Json(super::Object(body))) => body,
        Err(e) => return Problem::from(e).into_response(),
    };
    let mut v = Violations::default();
    let size = match (body.content_length, &body.content_length_range) {
        (None, None) => RawSize::Any,
        (Some(n), None) => RawSize::Exact(n),
        (None, Some(r)) => RawSize::Range {
            min: r.min_bytes,
            max: r.max_bytes,
        },
        (Some(_), Some(_)) => {
            v.add(
                "content_length_range",
                "send content_length or content_length_range, not both",
            );
            RawSize::Any
        }
    };
    let request = WriteRequest::parse(
        &mut v,
        RawWrite {
            bucket: body.bucket,
            key: body.key,
            content_type: body.content_type,
            checksum_sha256: body.checksum_sha256,
            metadata: body.metadata,
            size,
            create_only: body.create_only,
        },
        |v| super::ttl(v, body.ttl.as_ref()),
    );
    match v
        .finish(request)
        .and_then(|request| app.pipeline.write(&caller, &request))
    {
        Ok(grant) => super::no_store(Json(UploadGrant::from(grant))),
        Err(e) => Problem::from(e).into_response(),
    }
}
