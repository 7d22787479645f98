//! Each gateway request as the gRPC port's calls are seen: a server span (continuing
//! the caller's W3C trace) that the pipeline fills with caller, bucket, decision and
//! grant id, and a latency histogram by route and status class.
//!
//! Routes are named by their templates (`/v1/objects/{bucket}/{*key}`), never by the
//! path a caller sent: the metric's labels stay a closed set, and no key reaches them.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;

/// `template` as a `'static` label: one of the router's templates, or `other`.
fn route_label(template: Option<&str>) -> &'static str {
    template
        .and_then(|t| crate::gateway::ROUTES.into_iter().find(|r| *r == t))
        .unwrap_or("other")
}

/// The status class a response falls in, as a label.
fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The middleware: around every request the router hands a route or a fallback
/// (`Router::layer` runs after routing, so a matched route's template is known).
pub(super) async fn observe(
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = route_label(matched.as_ref().map(MatchedPath::as_str));
    // The health route is probed every few seconds: counted, not traced.
    if route == crate::gateway::HEALTHZ {
        let response = next.run(request).await;
        crate::metrics::http_request(route, status_class(response.status()), started.elapsed());
        return response;
    }
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = Empty,
        caller = Empty,
        bucket = Empty,
        decision = Empty,
        grant_id = Empty,
    );
    crate::telemetry::continue_trace(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    // OpenTelemetry's convention for servers: a 5xx is the server's failure, a 4xx
    // the caller's.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    crate::metrics::http_request(route, status_class(status), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_by_their_templates_only() {
        assert_eq!(
            route_label(Some("/v1/objects/{bucket}/{*key}")),
            "/v1/objects/{bucket}/{*key}"
        );
        assert_eq!(route_label(Some("/healthz")), "/healthz");
        assert_eq!(route_label(Some("/v1/objects/demo/public/x")), "other");
        assert_eq!(route_label(None), "other");
        assert_eq!(status_class(http::StatusCode::FOUND), "3xx");
        assert_eq!(status_class(http::StatusCode::SERVICE_UNAVAILABLE), "5xx");
    }
}
