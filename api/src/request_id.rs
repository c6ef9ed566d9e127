//! X-Request-ID: kept from the client when valid, generated otherwise, echoed
//! on every response and attached to every log line of the request.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id that is kept.
const MAX_LENGTH: usize = 128;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, when called inside one.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Whether an incoming id is kept: 1 to 128 letters, digits, `.`, `_` or `-`.
pub fn is_valid(candidate: &str) -> bool {
    !candidate.is_empty()
        && candidate.len() <= MAX_LENGTH
        && candidate
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// Middleware: assigns the id, opens the request span, logs the outcome.
pub async fn layer(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_valid(value))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string());

    let method = request.method().clone();
    // The route template is only known after routing; `record_route` fills it in.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        route = tracing::field::Empty,
        client_id = tracing::field::Empty,
        payout_id = tracing::field::Empty,
        webhook_id = tracing::field::Empty
    );

    let started = std::time::Instant::now();
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span.clone()))
        .await;
    let elapsed = started.elapsed();
    crate::prometheus::record(method.as_str(), &response, elapsed);
    let latency_ms = elapsed.as_millis() as u64;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms,
            "request finished"
        );
    });

    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// Route middleware: records the matched route template on the request span
/// and hands it to the metrics, which are counted outside routing.
pub async fn record_route(request: Request, next: Next) -> Response {
    let Some(path) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    tracing::Span::current().record("route", path.as_str());
    let mut response = next.run(request).await;
    crate::prometheus::tag_route(&mut response, path.as_str());
    response
}
