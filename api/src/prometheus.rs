//! Prometheus metrics, served as text at GET /metrics.
//!
//! Code anywhere in the service records with the `metrics` macros; this
//! module installs the one process-wide recorder and renders it. The names:
//!
//! - `nepxy_http_requests_total{method,route,status}` and
//!   `nepxy_http_request_duration_seconds{method,route}`: every response. The
//!   route is the matched template (`/v1/payouts/{id}`), or `unmatched` for a
//!   path no route serves, so unknown paths cannot add label values;
//! - `nepxy_rate_limited_total{scope,routes}`: 429 responses, by limit
//!   (`ip` or `token`) and by routes (`api` or `webhooks`);
//! - `nepxy_webhook_deliveries_total{provider,verdict}`: verdicts of intake,
//!   replays and retries;
//! - `nepxy_provider_attempts_total{provider,outcome}`: calls to providers;
//! - `nepxy_projection_lag_seconds`: age of the oldest event the catch-up
//!   projector applied in its last round, read when /metrics is scraped.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

pub const HTTP_REQUESTS: &str = "nepxy_http_requests_total";
pub const HTTP_DURATION: &str = "nepxy_http_request_duration_seconds";
pub const RATE_LIMITED: &str = "nepxy_rate_limited_total";
pub const WEBHOOK_DELIVERIES: &str = "nepxy_webhook_deliveries_total";
pub const PROVIDER_ATTEMPTS: &str = "nepxy_provider_attempts_total";
pub const PROJECTION_LAG: &str = "nepxy_projection_lag_seconds";

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Route label of a response that no route matched.
const UNMATCHED: &str = "unmatched";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns its handle.
/// `None` when another recorder was installed first (only in tests that
/// embed the router); the macros then record into that one.
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), LATENCY_BUCKETS)
                .map(|builder| builder.build_recorder());
            let recorder = match recorder {
                Ok(recorder) => recorder,
                Err(error) => {
                    tracing::error!(error = %error, "failed to build the metrics recorder; /metrics stays empty");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(error = %error, "a metrics recorder was already installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Installs the recorder. [`crate::router`] calls it, so that what is
/// recorded before the first scrape is kept.
pub fn install() {
    let _ = handle();
}

fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP responses by method, route and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by method and route"
    );
    metrics::describe_counter!(RATE_LIMITED, "Requests answered 429, by limit scope");
    metrics::describe_counter!(
        WEBHOOK_DELIVERIES,
        "Provider webhook deliveries by provider and verdict"
    );
    metrics::describe_counter!(PROVIDER_ATTEMPTS, "Provider calls by provider and outcome");
    metrics::describe_gauge!(
        PROJECTION_LAG,
        metrics::Unit::Seconds,
        "Age of the oldest event in the catch-up projector's last round"
    );
}

/// The route template a response was served by.
#[derive(Clone)]
struct RouteTemplate(String);

/// Marks a response with the route template that served it, for
/// [`record`], which runs outside routing and cannot see it.
pub fn tag_route(response: &mut Response, template: &str) {
    response
        .extensions_mut()
        .insert(RouteTemplate(template.to_owned()));
}

/// Counts a finished request and its latency.
pub fn record(method: &str, response: &Response, elapsed: Duration) {
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or(UNMATCHED, |template| template.0.as_str())
        .to_owned();
    let method = method.to_owned();
    metrics::counter!(
        HTTP_REQUESTS,
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
}

/// Counts one provider webhook verdict.
pub fn webhook_verdict(provider: &str, verdict: &str) {
    metrics::counter!(
        WEBHOOK_DELIVERIES,
        "provider" => provider.to_owned(),
        "verdict" => verdict.to_owned()
    )
    .increment(1);
}

/// Counts one call to a provider.
pub fn provider_attempt(provider: &str, outcome: &str) {
    metrics::counter!(
        PROVIDER_ATTEMPTS,
        "provider" => provider.to_owned(),
        "outcome" => outcome.to_owned()
    )
    .increment(1);
}

/// GET /metrics: the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics in text format",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"))
)]
pub async fn render(State(state): State<AppState>) -> Response {
    metrics::gauge!(PROJECTION_LAG)
        .set(state.projection_lag_seconds.load(Ordering::Relaxed) as f64);
    let body = handle().map(PrometheusHandle::render).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_routes_share_one_label() {
        install();
        let response = Response::new(axum::body::Body::empty());
        record("GET", &response, Duration::from_millis(3));
        let text = handle()
            .expect("the recorder installs in this test binary")
            .render();
        assert!(
            text.contains(
                r#"nepxy_http_requests_total{method="GET",route="unmatched",status="200"}"#
            ),
            "{text}"
        );
        assert!(
            text.contains("nepxy_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn matched_template_is_the_route_label() {
        install();
        let mut response = Response::new(axum::body::Body::empty());
        tag_route(&mut response, "/v1/payouts/{id}");
        *response.status_mut() = axum::http::StatusCode::NOT_FOUND;
        record("DELETE", &response, Duration::from_millis(1));
        let text = handle()
            .expect("the recorder installs in this test binary")
            .render();
        assert!(
            text.contains(
                r#"nepxy_http_requests_total{method="DELETE",route="/v1/payouts/{id}",status="404"}"#
            ),
            "{text}"
        );
    }
}
