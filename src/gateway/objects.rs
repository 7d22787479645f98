//! The click-time download link: `GET /v1/objects/{bucket}/{key…}` answers `302 Found`
//! to a freshly presigned GET that lives for `http.link_ttl` (cut by the rule), and a
//! HEAD to a presigned HEAD (S3 signs the method: a GET URL refuses a HEAD). The link
//! itself is harmless to share: without the caller's identity it leads to the login
//! page; the target URL expires within the minute.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Uri, header};
use serde::Deserialize;

use crate::grant::{RawRead, ReadMethod, ReadRequest, Violations};

use super::caller::{Door, identify};
use super::problem::Problem;
use super::{App, disposition};

/// `?download=<filename>`: answer with an `attachment` disposition (a bare
/// `?download`: under the key's own file name); `?versionId=`: that version of the
/// object. Other parameters are ignored: mail and analytics tools add `utm_*`, apps
/// add cache-busters, and a link in a mail must still work.
#[derive(Debug, Deserialize)]
pub(crate) struct LinkQuery {
    download: Option<String>,
    #[serde(rename = "versionId")]
    version_id: Option<String>,
}

/// The route. The request is taken whole (last) so that its headers are read where
/// they are, not copied.
pub(crate) async fn link(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<LinkQuery>, QueryRejection>,
    request: Request,
) -> Response {
    let (method, uri, headers) = (request.method(), request.uri(), request.headers());
    // The path was percent-decoded once, by the router; the key is validated as is.
    let Ok(Path((bucket, key))) = path else {
        return Problem::bad_request("the path is not valid UTF-8 after percent-decoding")
            .into_response();
    };
    let Ok(Query(query)) = query else {
        return Problem::bad_request(
            "the query must be download=<filename> and versionId=<version>, each at most once",
        )
        .into_response();
    };
    let caller = match identify(&app, method, headers, Door::Browser) {
        Ok((caller, _)) => caller,
        Err(problem) => return unauthenticated(&app, headers, uri, problem),
    };
    let mut v = Violations::default();
    let attachment = query
        .download
        .as_deref()
        .map(|name| match name {
            // The key's own name, which may hold a backslash (a name the caller's
            // `download=` may not): made a file name as the other awkward characters are.
            "" => std::borrow::Cow::Owned(
                key.rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .replace('\\', "_"),
            ),
            name => std::borrow::Cow::Borrowed(name),
        })
        .and_then(|name| v.check("download", disposition::attachment(&name)));
    let request = ReadRequest::parse(
        &mut v,
        RawRead {
            bucket: bucket.as_str(),
            key: key.as_str(),
            version_id: query.version_id.as_deref().unwrap_or_default(),
            response_content_disposition: attachment.as_deref().unwrap_or_default(),
            ..RawRead::default()
        },
        |_| Some(Some(app.settings.link_ttl)),
    );
    let read_method = if method == http::Method::HEAD {
        ReadMethod::Head
    } else {
        ReadMethod::Get
    };
    let grant = match v
        .finish(request)
        .map(|request| ReadRequest {
            method: read_method,
            ..request
        })
        .and_then(|request| app.pipeline.read(&caller, &request))
    {
        Ok(grant) => grant,
        Err(e) => return Problem::from(e).into_response(),
    };
    // The target is a bearer credential: the store must not learn the page the link
    // was on (and `found` keeps caches from keeping it).
    let mut response = found(grant.url.into_exposed());
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `302 Found` to `location`, which no cache may keep: 302 and not `Redirect::to`'s
/// 303, so that a HEAD stays a HEAD. The location moves into the header, not copied;
/// a signed URL or a login URL with a percent-encoded way back is always a valid
/// header value, and anything else is an internal error, not a panic.
fn found(location: String) -> Response {
    let Ok(location) = HeaderValue::try_from(location) else {
        return Problem::internal("the redirect target is not a valid Location header")
            .into_response();
    };
    (
        http::StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

/// A browser navigating without identity goes to the login page, with the way back;
/// any other client gets the 401.
fn unauthenticated(app: &App, headers: &HeaderMap, uri: &Uri, problem: Problem) -> Response {
    let navigating = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    match &app.settings.login_url {
        Some(login) if navigating && problem.status() == http::StatusCode::UNAUTHORIZED => {
            let back = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
            let separator = if login.contains('?') { '&' } else { '?' };
            let target = format!(
                "{login}{separator}return_to={}",
                super::percent_encode_component(back)
            );
            found(target)
        }
        _ => problem.into_response(),
    }
}

/// `GET /v1/objects/{bucket}` or `/v1/objects/{bucket}/`: no key.
pub(crate) async fn no_key() -> Response {
    Problem::bad_request("name an object: /v1/objects/{bucket}/{key}").into_response()
}
