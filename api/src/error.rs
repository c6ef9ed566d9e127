//! The API's error type and its one mapping to RFC 9457 problem details.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::controls::rate_limit::{self, RateLimited, Scope};
use crate::request_id;
use crate::store::StoreError;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_UNAVAILABLE_SECONDS: u32 = 5;
/// Seconds a client should wait before retrying a write during maintenance.
const RETRY_AFTER_MAINTENANCE_SECONDS: u32 = 120;
/// Seconds a client should wait before retrying a payout to a disabled
/// provider; switching a provider back on takes an operator.
const RETRY_AFTER_PROVIDER_DISABLED_SECONDS: u32 = 300;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest { detail: String },
    /// Invalid input; `field` names the offending field or header.
    #[error("{field}: {detail}")]
    Validation { field: String, detail: String },
    #[error("{detail}")]
    InsufficientFunds { detail: String },
    #[error(
        "Idempotency-Key was already used with a different request; send this request under a new key, or resend the original request unchanged"
    )]
    IdempotencyKeyReused,
    #[error("{detail}")]
    Conflict { detail: String },
    /// Another writer appended to the same aggregate first; the command may
    /// be retried.
    #[error("{detail}")]
    WriteConflict { detail: String },
    #[error("{detail}")]
    Unauthorized { detail: String },
    #[error("{detail}")]
    Forbidden { detail: String },
    #[error("{detail}")]
    NotFound { detail: String },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("{detail}")]
    UnsupportedMediaType { detail: String },
    #[error("{detail}")]
    Unavailable { detail: String },
    #[error("payouts through {provider} are switched off; retry later or use another provider")]
    ProviderDisabled { provider: nepxy_ledger::Provider },
    /// MAINTENANCE_MODE is on and the request would write.
    #[error("the service is in maintenance and writes are paused; retry later")]
    Maintenance,
    /// A rate limit's bucket is empty.
    #[error("{}", rate_limited_detail(.0))]
    TooManyRequests(RateLimited),
    /// An unexpected failure; the detail goes to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::NotFound {
            detail: detail.into(),
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError::Unauthorized {
            detail: detail.into(),
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::Forbidden {
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            detail: detail.into(),
        }
    }

    /// Returns one error of each problem type, for the OpenAPI document. A
    /// new variant stops the test below from compiling until it is listed.
    pub fn catalogue() -> Vec<ApiError> {
        let detail = String::new;
        vec![
            ApiError::BadRequest { detail: detail() },
            ApiError::validation("", ""),
            ApiError::InsufficientFunds { detail: detail() },
            ApiError::IdempotencyKeyReused,
            ApiError::Conflict { detail: detail() },
            ApiError::Unauthorized { detail: detail() },
            ApiError::Forbidden { detail: detail() },
            ApiError::NotFound { detail: detail() },
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge { limit_bytes: 0 },
            ApiError::UnsupportedMediaType { detail: detail() },
            ApiError::Unavailable { detail: detail() },
            ApiError::ProviderDisabled {
                provider: nepxy_ledger::Provider::Tmoney,
            },
            ApiError::Maintenance,
            ApiError::TooManyRequests(crate::controls::rate_limit::RateLimited {
                scope: crate::controls::rate_limit::Scope::Ip,
                webhooks: false,
                per_minute: 0,
                exceeded: crate::controls::rate_limit::Exceeded {
                    bucket: crate::controls::rate_limit::BucketState {
                        limit: 0,
                        remaining: 0,
                        reset_seconds: 0,
                    },
                    retry_after_seconds: 0,
                },
            }),
            ApiError::Internal(detail()),
        ]
    }

    /// Returns the problem type, title and HTTP status of this error.
    pub fn describe(&self) -> (&'static str, &'static str, u16) {
        (self.problem_type(), self.title(), self.status().as_u16())
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. }
            | ApiError::InsufficientFunds { .. }
            | ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } | ApiError::WriteConflict { .. } => StatusCode::CONFLICT,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. }
            | ApiError::ProviderDisabled { .. }
            | ApiError::Maintenance => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem type, a URI reference relative to the API's base URL.
    fn problem_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "/problems/bad-request",
            ApiError::Validation { .. } => "/problems/validation-error",
            ApiError::InsufficientFunds { .. } => "/problems/insufficient-funds",
            ApiError::IdempotencyKeyReused => "/problems/idempotency-key-reused",
            ApiError::Conflict { .. } | ApiError::WriteConflict { .. } => "/problems/conflict",
            ApiError::Unauthorized { .. } => "/problems/unauthorized",
            ApiError::Forbidden { .. } => "/problems/forbidden",
            ApiError::NotFound { .. } => "/problems/not-found",
            ApiError::MethodNotAllowed => "/problems/method-not-allowed",
            ApiError::PayloadTooLarge { .. } => "/problems/payload-too-large",
            ApiError::UnsupportedMediaType { .. } => "/problems/unsupported-media-type",
            ApiError::Unavailable { .. } => "/problems/service-unavailable",
            ApiError::ProviderDisabled { .. } => "/problems/provider-disabled",
            ApiError::Maintenance => "/problems/maintenance",
            ApiError::TooManyRequests(_) => "/problems/rate-limited",
            ApiError::Internal(_) => "/problems/internal-error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "Bad request",
            ApiError::Validation { .. } => "Invalid request field",
            ApiError::InsufficientFunds { .. } => "Insufficient funds",
            ApiError::IdempotencyKeyReused => "Idempotency key reused",
            ApiError::Conflict { .. } | ApiError::WriteConflict { .. } => "Conflict",
            ApiError::Unauthorized { .. } => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::UnsupportedMediaType { .. } => "Unsupported media type",
            ApiError::Unavailable { .. } => "Service unavailable",
            ApiError::ProviderDisabled { .. } => "Provider disabled",
            ApiError::Maintenance => "Maintenance",
            ApiError::TooManyRequests(_) => "Too many requests",
            ApiError::Internal(_) => "Internal server error",
        }
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    problem_type: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    request_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "request failed with an internal error");
                "an internal error occurred; quote the request_id when reporting it".to_owned()
            }
            ApiError::Unavailable { detail } => {
                tracing::warn!(detail = %detail, "request failed because a dependency is unavailable");
                detail.clone()
            }
            ApiError::Validation { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        let field = match &self {
            ApiError::Validation { field, .. } => Some(field.as_str()),
            _ => None,
        };
        let problem = Problem {
            problem_type: self.problem_type(),
            title: self.title(),
            status: status.as_u16(),
            detail,
            field,
            request_id: request_id::current(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Unavailable { .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER_UNAVAILABLE_SECONDS),
                );
            }
            ApiError::ProviderDisabled { .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER_PROVIDER_DISABLED_SECONDS),
                );
            }
            ApiError::Maintenance => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(RETRY_AFTER_MAINTENANCE_SECONDS),
                );
            }
            ApiError::TooManyRequests(rejected) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(rejected.exceeded.retry_after_seconds),
                );
                rate_limit::write_headers(headers, rejected.exceeded.bucket);
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Database(error) if is_unavailable(&error) => ApiError::Unavailable {
                detail: "the database is unavailable; retry later".to_owned(),
            },
            StoreError::Conflict { .. } => ApiError::WriteConflict {
                detail: "a concurrent request changed the same account; retry the request"
                    .to_owned(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<nepxy_projections::ProjectionError> for ApiError {
    fn from(error: nepxy_projections::ProjectionError) -> Self {
        StoreError::from(error).into()
    }
}

fn rate_limited_detail(rejected: &RateLimited) -> String {
    let whose = match (rejected.scope, rejected.webhooks) {
        (Scope::Ip, false) => "requests from this client address",
        (Scope::Ip, true) => "webhook deliveries from this address",
        (Scope::Token, _) => "requests with this client's access tokens",
    };
    let bucket = rejected.exceeded.bucket;
    format!(
        "too many {whose}: the limit is {} at once, refilled at {} per minute; retry after {} seconds",
        bucket.limit, rejected.per_minute, rejected.exceeded.retry_after_seconds
    )
}

/// Whether a database error means the database cannot be reached, as opposed
/// to a failed statement. A server that is shutting down or starting ends
/// or refuses sessions with SQLSTATE class 08 (connection exception) or
/// 57P01 to 57P03 (admin shutdown, crash shutdown, cannot connect now).
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Position of each problem type; the match is exhaustive, so a new
    /// variant does not compile until it has a position and a catalogue entry.
    fn position(error: &ApiError) -> usize {
        match error {
            ApiError::BadRequest { .. } => 0,
            ApiError::Validation { .. } => 1,
            ApiError::InsufficientFunds { .. } => 2,
            ApiError::IdempotencyKeyReused => 3,
            ApiError::Conflict { .. } | ApiError::WriteConflict { .. } => 4,
            ApiError::Unauthorized { .. } => 5,
            ApiError::Forbidden { .. } => 6,
            ApiError::NotFound { .. } => 7,
            ApiError::MethodNotAllowed => 8,
            ApiError::PayloadTooLarge { .. } => 9,
            ApiError::UnsupportedMediaType { .. } => 10,
            ApiError::Unavailable { .. } => 11,
            ApiError::ProviderDisabled { .. } => 12,
            ApiError::Maintenance => 13,
            ApiError::Internal(_) => 14,
            ApiError::TooManyRequests(_) => 15,
        }
    }

    #[test]
    fn catalogue_covers_every_problem_type() {
        let mut positions: Vec<usize> = ApiError::catalogue().iter().map(position).collect();
        positions.sort_unstable();
        assert_eq!(positions, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn catalogue_types_are_distinct() {
        let mut types: Vec<&str> = ApiError::catalogue()
            .iter()
            .map(|error| error.describe().0)
            .collect();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), ApiError::catalogue().len());
    }
}
