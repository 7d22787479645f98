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

/// `template` as the `route` label: its position among the router's templates and
/// the template, or `other` after them.
fn route_label(template: Option<&str>) -> (usize, &'static str) {
    let routes = crate::gateway::ROUTES;
    template
        .and_then(|t| routes.iter().position(|r| *r == t))
        .map_or((routes.len(), "other"), |i| (i, routes[i]))
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
    if route.1 == crate::gateway::HEALTHZ {
        let response = next.run(request).await;
        crate::metrics::http_request(route, response.status().as_u16(), started.elapsed());
        return response;
    }
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {}", route.1),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = route.1,
        http.response.status_code = Empty,
        caller = Empty,
        bucket = Empty,
        decision = Empty,
        grant_id = Empty,
    );
    crate::telemetry::continue_trace(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    // An integer, as the semantic conventions (and every backend's `>= 500`) have it.
    span.record(
        "http.response.status_code",
        crate::core::span_int(status.as_u16().into()),
    );
    // OpenTelemetry's convention for servers: a 5xx is the server's failure, a 4xx
    // the caller's.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    crate::metrics::http_request(route, status.as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_by_their_templates_only() {
        let label = |t| route_label(t).1;
        assert_eq!(
            label(Some("/v1/objects/{bucket}/{*key}")),
            "/v1/objects/{bucket}/{*key}"
        );
        assert_eq!(label(Some("/healthz")), "/healthz");
        assert_eq!(label(Some("/v1/objects/demo/public/x")), "other");
        assert_eq!(label(None), "other");
        // Each template's position is its own (the metrics' series are kept by it).
        for (i, route) in crate::gateway::ROUTES.iter().enumerate() {
            assert_eq!(route_label(Some(route)), (i, *route));
        }
    }
}
