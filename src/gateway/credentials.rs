//! The AWS container-credentials endpoint: `GET /v1/credentials/{bucket}/{prefix…}`
//! answers the JSON every AWS SDK's container provider reads
//! (`AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`),
//! so a program gets prefix-scoped credentials, and new ones before they expire, by
//! configuration alone. The credentials are AssumeScoped's: same rules, same cache.
//!
//! # Refresh
//! The SDKs fetch again when the credentials they hold are close to expiry:
//! botocore 15 minutes before (`RefreshableCredentials`' advisory window; 10 minutes
//! is mandatory; `botocore/credentials.py`), the JavaScript SDK v3 5 minutes before
//! (`@smithy/core`'s `EXPIRATION_MS`), the Rust SDK's identity cache 5 to 10 seconds
//! before (a 10 s buffer less up to half of it as jitter; `aws-smithy-runtime`'s
//! `identity/cache/lazy.rs`). Cached credentials are therefore handed out
//! here only with more than [`MIN_LEFT`] to live, so a refresh always gets credentials
//! that sit outside every SDK's window, never the ones it is replacing.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};

use crate::grant::{Access, AssumeRequest, Violations};

use super::App;
use super::caller::{Door, identify};
use super::problem::Problem;

/// Least life left on credentials handed out again: botocore's 15-minute advisory
/// window, the widest of the SDKs', plus 5 minutes of margin.
pub const MIN_LEFT: Duration = Duration::from_secs(20 * 60);

/// `?access=read|write|read-write&list=true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialsQuery {
    access: Option<String>,
    #[serde(default)]
    list: bool,
}

/// The container provider's JSON.
// No `Debug`: it carries a credential (a presigned URL or keys) that must never
// be printed.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    account_id: String,
}

impl ContainerCredentials {
    /// The JSON for an `AssumeScoped` answer; `None` when it has no credentials or
    /// expiry.
    pub fn from_proto(answer: crate::proto::AssumeScopedResponse) -> Option<Self> {
        let c = answer.credentials?;
        Some(Self {
            expiration: expiration(c.expires_at.as_ref()?)?,
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            token: c.session_token,
            account_id: answer.account_id,
        })
    }
}

/// An `expires_at` as the SDKs read `Expiration` (RFC 3339, UTC); `None` before 1970.
pub fn expiration(expires_at: &prost_types::Timestamp) -> Option<String> {
    let secs = u64::try_from(expires_at.seconds).ok()?;
    Some(crate::sign::rfc3339(
        std::time::UNIX_EPOCH + Duration::from_secs(secs),
    ))
}

/// `GET /v1/credentials/{bucket}` or `/v1/credentials/{bucket}/`: no prefix.
pub(crate) async fn no_prefix() -> Response {
    Problem::bad_request(
        "name a prefix: /v1/credentials/{bucket}/{prefix}/ (credentials are never for a \
         whole bucket)",
    )
    .into_response()
}

/// The route.
pub(crate) async fn credentials(
    State(app): State<Arc<App>>,
    deadline: Option<Extension<super::Deadline>>,
    method: Method,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<CredentialsQuery>, QueryRejection>,
) -> Response {
    let (caller, _) = match identify(&app, &method, &headers, Door::Sdk) {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let Ok(Path((bucket, prefix))) = path else {
        return Problem::bad_request("the path is not valid UTF-8 after percent-decoding")
            .into_response();
    };
    let query = match query {
        Ok(Query(query)) => query,
        // Names the parameter at fault (an unknown name, a list that is not a bool);
        // never echoes a value.
        Err(rejection) => {
            return Problem::bad_request(format!(
                "{}; the query is access=read|write|read-write (required) and list=true|false",
                super::problem::in_our_words(&rejection.body_text())
            ))
            .into_response();
        }
    };
    let mut v = Violations::default();
    let request = AssumeRequest::parse(
        &mut v,
        bucket,
        prefix,
        |v| access(v, query.access.as_deref(), query.list),
        |_| Some(None),
    )
    .map(|request| AssumeRequest {
        min_left: MIN_LEFT,
        ..request
    });
    let request = match v.finish(request) {
        Ok(request) => request,
        Err(e) => return Problem::from(e).into_response(),
    };
    // A slow STS is answered 503 with Retry-After before the request's deadline.
    match app
        .pipeline
        .assume(&caller, request, super::Deadline::left_of(deadline, &app))
        .await
    {
        Ok(grant) => {
            let c = &grant.credentials;
            super::no_store(Json(ContainerCredentials {
                access_key_id: c.access_key_id.clone(),
                secret_access_key: c.secret_access_key.expose().clone(),
                token: c.session_token.expose().clone(),
                expiration: crate::sign::rfc3339(c.expires_at),
                account_id: grant.account_id,
            }))
        }
        Err(e) => Problem::from(e).into_response(),
    }
}

fn access(v: &mut Violations, access: Option<&str>, list: bool) -> Option<Access> {
    let (read, write) = match access {
        Some("read") => (true, false),
        Some("write") => (false, true),
        Some("read-write") => (true, true),
        _ => {
            v.add("access", "must be read, write or read-write");
            return None;
        }
    };
    Some(Access { read, write, list })
}
