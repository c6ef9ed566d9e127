//! Maintenance mode (MAINTENANCE_MODE=1): writes get 503 with Retry-After
//! before any handler runs, so no idempotency record is created and the
//! same Idempotency-Key works once maintenance ends. Reads, /health and
//! token requests keep working. Webhook deliveries are still stored and get
//! 202, and the retry worker applies them after maintenance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The running server's maintenance flag, shared by the HTTP layer, the
/// webhook intake and its retry worker. It starts from MAINTENANCE_MODE;
/// tests switch it while the server runs.
#[derive(Clone, Debug, Default)]
pub struct MaintenanceSwitch(Arc<AtomicBool>);

impl MaintenanceSwitch {
    pub fn new(on: bool) -> MaintenanceSwitch {
        MaintenanceSwitch(Arc::new(AtomicBool::new(on)))
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, on: bool) {
        let was_on = self.0.swap(on, Ordering::Relaxed);
        if was_on != on {
            tracing::warn!(maintenance = on, "maintenance mode switched");
        }
    }
}

/// Middleware: rejects writes with 503 while maintenance is on.
pub async fn reject_writes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if state.maintenance.is_on() && is_paused(request.method(), request.uri().path()) {
        tracing::info!(path = %request.uri().path(), "write rejected: maintenance mode");
        return ApiError::Maintenance.into_response();
    }
    next.run(request).await
}

/// Returns whether maintenance pauses this request: every POST, PUT, PATCH
/// and DELETE except webhook deliveries, POST /v1/auth/token and POST
/// /v1/auth/revoke. Those two write only token records, and callers need
/// them during maintenance to read data and to cut off a leaked token.
fn is_paused(method: &Method, path: &str) -> bool {
    let write = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    write
        && !super::is_webhook_intake(method, path)
        && path != "/v1/auth/token"
        && path != "/v1/auth/revoke"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_paused_and_reads_are_not() {
        assert!(is_paused(&Method::POST, "/v1/payouts"));
        assert!(is_paused(&Method::DELETE, "/v1/payouts"));
        assert!(is_paused(&Method::PATCH, "/v1/payouts"));
        assert!(is_paused(&Method::POST, "/v1/admin/clients"));
        assert!(!is_paused(&Method::GET, "/v1/payouts"));
        assert!(!is_paused(&Method::HEAD, "/health"));
        assert!(!is_paused(&Method::OPTIONS, "/v1/payouts"));
        assert!(!is_paused(&Method::POST, "/v1/webhooks/tmoney"));
        assert!(!is_paused(&Method::PUT, "/v1/webhooks/momo/token"));
        assert!(!is_paused(&Method::POST, "/v1/auth/token"));
        assert!(!is_paused(&Method::POST, "/v1/auth/revoke"));
    }

    #[test]
    fn switch_is_shared_between_clones() {
        let switch = MaintenanceSwitch::new(false);
        let clone = switch.clone();
        clone.set(true);
        assert!(switch.is_on());
    }
}
