//! Request extractors that turn every malformed input into a problem that
//! names the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// Largest JSON body accepted by the command endpoints.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest Idempotency-Key accepted.
pub const MAX_IDEMPOTENCY_KEY_LENGTH: usize = 255;

/// A JSON body: malformed JSON is a 400, a well-formed body of the wrong
/// shape is a 422 naming the field. `value` keeps the parsed document for the
/// idempotency fingerprint.
pub struct JsonBody<T> {
    pub value: Value,
    pub parsed: T,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                let mime = value
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType {
                detail: "send the body as JSON with 'Content-Type: application/json'".to_owned(),
            });
        }

        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit_bytes: MAX_BODY_BYTES,
                    }
                } else {
                    ApiError::bad_request(format!("could not read the request body: {rejection}"))
                }
            })?;
        parse_json(&bytes)
    }
}

/// Parses a JSON document into `T`, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::bad_request(format!("the body is not valid JSON: {error}")))?;
    let parsed = serde_path_to_error::deserialize::<_, T>(&value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::validation(field, error.into_inner().to_string())
    })?;
    Ok(JsonBody { value, parsed })
}

/// The Idempotency-Key header: required on commands that create something.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get("idempotency-key").ok_or_else(|| {
            ApiError::bad_request("missing Idempotency-Key header; send a unique key per payment request, e.g. a UUID")
        })?;
        let key = value
            .to_str()
            .ok()
            .filter(|key| {
                !key.is_empty()
                    && key.len() <= MAX_IDEMPOTENCY_KEY_LENGTH
                    && key.bytes().all(|byte| byte.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid Idempotency-Key header: use 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters without spaces"
                ))
            })?;
        Ok(IdempotencyKey(key.to_owned()))
    }
}
