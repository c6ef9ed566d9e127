use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// Longest wait for the database before /health reports it unavailable.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Database reachability, maintenance, projection lag and version",
    responses((status = 200, description = "The service and its database are up", body = Object), (status = 503, description = "The database is unreachable", body = Object))
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let check = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    let database_ok = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, check).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "health check: database query failed");
            false
        }
        Err(_) => {
            tracing::warn!("health check: database query timed out");
            false
        }
    };
    let status = if database_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if database_ok { "ok" } else { "unavailable" },
        "database": if database_ok { "ok" } else { "unavailable" },
        "maintenance": state.maintenance.is_on(),
        "projection_lag_seconds": state.projection_lag_seconds.load(std::sync::atomic::Ordering::Relaxed),
        "disabled_providers": state.switches.disabled().iter().map(|provider| provider.name()).collect::<Vec<_>>(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    (status, Json(body)).into_response()
}
