//! The staging gate: with APP_ENV=staging and STAGING_GATE_KEY set, every
//! request except /health and provider webhook deliveries must carry the key
//! in `X-Staging-Gate-Key`. Dev and prod ignore the variable.

use axum::extract::{Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AppEnv, Config};
use crate::error::ApiError;
use crate::state::AppState;

pub const HEADER: HeaderName = HeaderName::from_static("x-staging-gate-key");

/// Middleware: rejects requests without the right gate key with 401.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let config = &state.config;
    let Some(expected) = config
        .controls
        .staging_gate_key
        .as_deref()
        .filter(|_| config.app_env == AppEnv::Staging)
    else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/health" || super::is_webhook_intake(request.method(), path) {
        return next.run(request).await;
    }

    let presented = request.headers().get(&HEADER).map(|value| value.as_bytes());
    if presented.is_some_and(|presented| key_matches(presented, expected.as_bytes())) {
        return next.run(request).await;
    }
    tracing::info!(
        key_present = presented.is_some(),
        "request rejected by the staging gate"
    );
    ApiError::unauthorized(
        "X-Staging-Gate-Key is missing or wrong; staging requires it on every route except /health and provider webhooks",
    )
    .into_response()
}

/// Compares the SHA-256 digests in constant time, so neither the content
/// nor the length of the key leaks through timing.
fn key_matches(presented: &[u8], expected: &[u8]) -> bool {
    let presented = Sha256::digest(presented);
    let expected = Sha256::digest(expected);
    presented.as_slice().ct_eq(expected.as_slice()).into()
}

/// Logs a warning when STAGING_GATE_KEY is set in prod, where it protects
/// nothing: prod must not rely on it.
pub fn warn_if_ignored(config: &Config) {
    if config.app_env == AppEnv::Prod && config.controls.staging_gate_key.is_some() {
        tracing::warn!("STAGING_GATE_KEY is set but ignored in prod; unset it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_comparison() {
        assert!(key_matches(b"gate-key-1", b"gate-key-1"));
        assert!(!key_matches(b"gate-key-2", b"gate-key-1"));
        assert!(!key_matches(b"gate-key-1 ", b"gate-key-1"));
        assert!(!key_matches(b"", b"gate-key-1"));
    }
}
