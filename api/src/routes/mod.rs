//! HTTP handlers, one module per resource. A handler parses and authorizes,
//! runs one command or query, and maps the result.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod health;
pub mod notifications;
pub mod payouts;
pub mod webhooks;

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::commands::Outcome;

/// Header set on a response that repeats the stored answer to an earlier
/// request with the same Idempotency-Key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.replayed {
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

/// Status and JSON body of a created resource.
pub fn created(body: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}
