//! RFC 9457 problem details: the one place the HTTP door turns an error into a status
//! and a JSON body. Each status means what the gRPC code of the same failure means,
//! and the body never carries a secret (no token, URL, signature or key material).

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::grant;
use crate::identity;

/// A refusal, as the HTTP door answers it.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    /// The gRPC code name of the same failure (`INVALID_ARGUMENT`, …).
    code: &'static str,
    title: &'static str,
    detail: String,
    violations: Vec<Violation>,
    retry_after: Option<Duration>,
    /// Add `WWW-Authenticate: Bearer` (a 401).
    challenge: bool,
}

#[derive(Debug, Serialize)]
struct Violation {
    field: &'static str,
    description: String,
}

#[derive(Serialize)]
struct Body<'a> {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    /// The gRPC code name, so a client can treat both doors alike; also what the AWS
    /// SDKs' container-credentials provider reads.
    code: &'static str,
    /// `detail` again, under the name the AWS SDKs read.
    message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    violations: &'a [Violation],
}

/// How long a caller should wait before retrying after STS was unavailable.
const STS_RETRY_AFTER: Duration = Duration::from_secs(2);

impl Problem {
    fn new(status: StatusCode, code: &'static str, title: &'static str, detail: String) -> Self {
        // Bounded as gRPC messages are: a detail may quote what the caller sent.
        let detail = match crate::core::text::bounded(&detail, crate::core::text::MAX_MESSAGE) {
            std::borrow::Cow::Borrowed(_) => detail,
            std::borrow::Cow::Owned(cut) => cut,
        };
        Self {
            status,
            code,
            title,
            detail,
            violations: Vec::new(),
            retry_after: None,
            challenge: false,
        }
    }

    /// 400: a request the door could not read (its own wire format).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid request",
            detail.into(),
        )
    }

    /// 403: a cookie-authenticated change from an origin that is not allowed.
    pub(crate) fn cross_site(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Cross-site request refused",
            detail.into(),
        )
    }

    /// 408: the request's body took longer than `limit` to arrive.
    pub(crate) fn request_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "DEADLINE_EXCEEDED",
            "Request timeout",
            format!(
                "the request was not complete within {} (server.request_timeout); send its \
                 body without pauses",
                crate::core::duration::display(limit)
            ),
        )
    }

    /// 504: the request arrived whole, and its answer was not ready within `limit`.
    /// Calls to STS and the store answer 503 before that: this is the net under the
    /// rest.
    pub(crate) fn answer_timeout(limit: std::time::Duration) -> Self {
        let mut p = Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "UNAVAILABLE",
            "Gateway timeout",
            format!(
                "the answer was not ready within {} (server.request_timeout); retry",
                crate::core::duration::display(limit)
            ),
        );
        p.retry_after = Some(STS_RETRY_AFTER);
        p
    }

    /// 503 UNAVAILABLE, to be retried after `after` (`Retry-After`).
    fn unavailable(detail: String, after: Duration) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "Unavailable",
            detail,
        );
        p.retry_after = Some(after);
        p
    }

    /// 503: the audit log holds grants back ([`crate::grant::audit::BEHIND`]).
    pub(crate) fn audit_behind() -> Self {
        Self::unavailable(
            crate::grant::audit::BEHIND.to_owned(),
            crate::grant::audit::BEHIND_RETRY_AFTER,
        )
    }

    /// 413: the body is past the gateway's limit, `detail` saying how it was found.
    pub(crate) fn too_large(detail: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RESOURCE_EXHAUSTED",
            "Request too large",
            format!(
                "{detail}; send a body of at most {} MiB",
                super::BODY_LIMIT / (1024 * 1024)
            ),
        )
    }

    /// 500: the service failed; `detail` tells the caller where the reason is (the
    /// operator's logs), never the reason's secrets.
    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error",
            detail.into(),
        )
    }

    /// 404: no such route.
    pub(crate) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Not found",
            "no such route; see the service's README for the HTTP routes".into(),
        )
    }

    /// 405: a route that does not answer `method`; the `Allow` header lists the
    /// methods it does (axum's fallback adds it, `get_issuing` writes its own).
    /// `UNIMPLEMENTED`, as gRPC answers a method it does not serve.
    pub(crate) fn method_not_allowed(method: &http::Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNIMPLEMENTED",
            "Method not allowed",
            format!(
                "this route does not answer {method}; its Allow header lists the methods it does"
            ),
        )
    }

    /// 501: a route whose part of the service is not configured.
    pub(crate) fn not_configured(detail: &'static str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "FAILED_PRECONDITION",
            "Not configured",
            detail.into(),
        )
    }

    /// The answer for a gRPC status from the service (the credentials proxy), with
    /// the HTTP status that means the same.
    pub fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code;
        let (http, code, title) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Invalid request",
            ),
            Code::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Unauthenticated",
            ),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED", "Not allowed"),
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", "Not found"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION", "Conflict"),
            Code::ResourceExhausted => (
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Too many requests",
            ),
            Code::Unavailable | Code::DeadlineExceeded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "Unavailable",
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "Internal error",
            ),
        };
        let mut p = Self::new(http, code, title, status.message().to_owned());
        if http == StatusCode::SERVICE_UNAVAILABLE {
            p.retry_after = Some(STS_RETRY_AFTER);
        }
        p.challenge = http == StatusCode::UNAUTHORIZED;
        p
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

/// A JSON body that could not be read, with the status that says why: 415 without
/// `Content-Type: application/json`, 413 past the body limit (`RESOURCE_EXHAUSTED`,
/// as gRPC answers an oversized message), else 400.
impl From<axum::extract::rejection::JsonRejection> for Problem {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        let mut detail = in_our_words(&rejection.body_text());
        // For a body that is not an object, serde quotes what it got (a string body may
        // be anything, a token pasted in the wrong place) and, for a nested field, names
        // the Rust type it wanted ("expected struct Part"); say what to send instead.
        if detail.contains(super::OBJECT_EXPECTED) || detail.contains("expected struct ") {
            detail = "the body must be a JSON object with the route's fields (README, \
                      \"Web apps: the HTTP gateway\")"
                .to_owned();
        }
        match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_ARGUMENT",
                "Unsupported media type",
                detail,
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::too_large(&detail),
            _ => Self::bad_request(detail),
        }
    }
}

/// An extractor's refusal in the gateway's own words: axum's prefixes name its types
/// ("the target type"), serde's message after them says what was wrong.
pub(crate) fn in_our_words(text: &str) -> String {
    const REWORDED: [(&str, &str); 4] = [
        (
            "Failed to deserialize the JSON body into the target type: ",
            "the JSON body: ",
        ),
        (
            "Failed to parse the request body as JSON: ",
            "the body is not valid JSON: ",
        ),
        ("Failed to deserialize query string: ", "the query string: "),
        (
            "Expected request with `Content-Type: application/json`",
            "send the body as JSON, with Content-Type: application/json",
        ),
    ];
    // serde quotes field names (and values) whole, as the caller wrote them.
    let text = crate::core::text::escape_breaks(text);
    REWORDED
        .iter()
        .find_map(|(theirs, ours)| {
            text.strip_prefix(theirs)
                .map(|rest| format!("{ours}{rest}"))
        })
        .unwrap_or_else(|| text.into_owned())
}

impl Problem {
    /// 401 for a session cookie whose token was refused, naming the cookie (the
    /// browser sent no bearer token) and saying to sign in again.
    pub(crate) fn session_refused(cookie: &str, e: &identity::Error) -> Self {
        let why = match e {
            identity::Error::UnknownToken => "holds no token this service recognises".to_owned(),
            identity::Error::Jwt(refused) => format!("holds a JWT that was refused ({refused})"),
            other => format!("was refused ({other})"),
        };
        Self::unauthenticated(format!(
            "the session cookie '{cookie}' {why}; sign in again"
        ))
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    fn unauthenticated(detail: String) -> Self {
        let mut p = Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Unauthenticated",
            detail,
        );
        p.challenge = true;
        p
    }
}

impl From<identity::Error> for Problem {
    fn from(e: identity::Error) -> Self {
        let detail = match e {
            // The identity module speaks of gRPC metadata; here it is a header.
            identity::Error::Malformed => {
                "malformed Authorization header: expected one 'Bearer <token>'".to_owned()
            }
            e => e.to_string(),
        };
        Self::unauthenticated(detail)
    }
}

impl From<grant::Error> for Problem {
    fn from(e: grant::Error) -> Self {
        if let Some(decision) = e.decision() {
            tracing::Span::current().record("decision", decision);
        }
        match e {
            grant::Error::InvalidArgument(violations) => {
                let detail = grant::Error::InvalidArgument(violations.clone()).to_string();
                let mut p = Self::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Invalid request",
                    detail,
                );
                p.violations = violations
                    .into_iter()
                    .map(|v| Violation {
                        field: v.field,
                        description: v.description,
                    })
                    .collect();
                p
            }
            grant::Error::Denied(_)
            | grant::Error::OverridesNotAllowed { .. }
            | grant::Error::ContentTypeNotAllowed { .. } => Self::new(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Not allowed",
                e.to_string(),
            ),
            grant::Error::Credentials(_) | grant::Error::Expiry(_) => {
                tracing::error!(error = %e, "cannot sign: service credentials unavailable");
                Self::unavailable(format!("{e}; retry later"), STS_RETRY_AFTER)
            }
            grant::Error::NotConfigured(what) => Self::not_configured(what),
            grant::Error::FailedPrecondition(_) => Self::new(
                StatusCode::CONFLICT,
                "FAILED_PRECONDITION",
                "Conflict",
                e.to_string(),
            ),
            grant::Error::AlreadyExists(_) => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "ALREADY_EXISTS",
                "Already exists",
                e.to_string(),
            ),
            grant::Error::OtherCaller => Self::new(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Not allowed",
                e.to_string(),
            ),
            grant::Error::Store(ref store) if store.is_transient() => {
                tracing::warn!(error = %crate::core::text::Chain(&e), "store unavailable");
                Self::unavailable(format!("{e}; retry later"), STS_RETRY_AFTER)
            }
            grant::Error::Store(_) => {
                tracing::error!(error = ?e, "the store refused a multipart call");
                Self::internal(
                    "the store refused the request; the service's operator's logs say why",
                )
            }
            grant::Error::OverBudget(after, _)
            | grant::Error::Sts(crate::sts::Error::OverBudget(after)) => {
                crate::metrics::over_budget();
                let mut p = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RESOURCE_EXHAUSTED",
                    "Too many requests",
                    e.to_string(),
                );
                p.retry_after = Some(after.max(Duration::from_secs(1)));
                p
            }
            grant::Error::Sts(crate::sts::Error::Busy) => {
                let mut p = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RESOURCE_EXHAUSTED",
                    "Too many requests",
                    e.to_string(),
                );
                p.retry_after = Some(STS_RETRY_AFTER);
                p
            }
            // STS's failures are logged by the STS call, once (`sts::Broker`).
            grant::Error::Sts(sts) if sts.is_transient() => {
                Self::unavailable(format!("{sts}; retry in a few seconds"), STS_RETRY_AFTER)
            }
            grant::Error::Sts(_) => {
                // STS's code and message are for the operator, in the log; not for
                // the caller.
                Self::internal(
                    "the service could not obtain scoped credentials; its operator's logs say why",
                )
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            r#type: "about:blank",
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            message: &self.detail,
            violations: &self.violations,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after {
            // Rounded up: a client that waits exactly this long must find the budget
            // refilled (the message says the same number).
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::core::duration::secs_up(after)),
            );
        }
        if self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
