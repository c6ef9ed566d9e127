//! Opaque cursors of list endpoints: base64url of "{time in micros}:{uuid}",
//! the position of the last item of a page ordered newest first.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::ApiError;

pub fn encode(time: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{id}", time.timestamp_micros()))
}

/// Decodes a cursor; any malformed value is a 422 naming the `cursor` field.
pub fn decode(raw: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || {
        ApiError::validation(
            "cursor",
            "cursor is invalid; pass the next_cursor value of the previous page",
        )
    };
    let decoded = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (micros, id) = text.split_once(':').ok_or_else(invalid)?;
    let micros: i64 = micros.parse().map_err(|_| invalid())?;
    let time = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok((time, id))
}

/// Parses the `limit` query parameter of a list endpoint.
pub fn page_size(raw: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    match raw {
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=max).contains(limit))
            .ok_or_else(|| {
                ApiError::validation(
                    "limit",
                    format!("limit must be a whole number from 1 to {max}"),
                )
            }),
        None => Ok(default),
    }
}
