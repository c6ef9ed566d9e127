//! The router and the server loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::controls::{cors, debug, maintenance, rate_limit, staging_gate};
use crate::error::ApiError;
use crate::extract::MAX_BODY_BYTES;
use crate::routes::{accounts, admin, audit, auth, health, notifications, payouts, webhooks};
use crate::state::AppState;
use crate::{openapi, prometheus, request_id};

/// Longest wait for a pooled database connection before a request fails
/// with 503.
const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the router; tests call it without a socket.
pub fn router(state: AppState) -> Router {
    staging_gate::warn_if_ignored(&state.config);
    prometheus::install();
    rate_limit::log_settings(&state.config);
    Router::new()
        .route("/health", get(health::health))
        .route("/metrics", get(prometheus::render))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/admin/bootstrap", post(admin::bootstrap))
        .route("/v1/admin/clients", post(admin::create_client))
        .route("/v1/auth/token", post(auth::token))
        .route("/v1/auth/revoke", post(auth::revoke))
        .route("/v1/accounts/{client_id}/deposits", post(accounts::deposit))
        .route("/v1/accounts/{client_id}/balance", get(accounts::balance))
        .route("/v1/payouts", post(payouts::create).get(payouts::list))
        .route("/v1/payouts/{id}", get(payouts::get))
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/audit/payouts/{id}/history", get(audit::payout_history))
        .route("/v1/webhooks", get(webhooks::list))
        // POST takes a provider name, GET a stored delivery's id.
        .route(
            "/v1/webhooks/{target}",
            post(webhooks::receive).get(webhooks::show),
        )
        .route("/v1/webhooks/{target}/replay", post(webhooks::replay))
        .route(
            "/v1/webhooks/momo/{callback_token}",
            post(webhooks::receive_momo).put(webhooks::receive_momo),
        )
        .route(
            "/v1/notification-endpoints",
            post(notifications::create_endpoint).get(notifications::list_endpoints),
        )
        .route(
            "/v1/notification-endpoints/{id}",
            delete(notifications::delete_endpoint),
        )
        .route(
            "/v1/notification-endpoints/{id}/rotate-secret",
            post(notifications::rotate_secret),
        )
        .route("/v1/notifications", get(notifications::list_notifications))
        .route(
            "/v1/notifications/{id}/redeliver",
            post(notifications::redeliver),
        )
        .merge(debug::routes(&state.config))
        .route_layer(axum::middleware::from_fn(request_id::record_route))
        .fallback(|| async { ApiError::not_found("no route for this path") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Each layer wraps those above it, so requests pass them bottom up:
        // request id, CORS, rate limit, staging gate, maintenance mode. CORS
        // responds to preflights before the later layers see them, and adds
        // its headers to every response from the layers below it, 429s
        // included, so that browsers can read them. The per-address limit runs before the
        // staging gate, so that a caller guessing the gate key is limited
        // too. The per-token limit runs later, in the `Principal` extractor,
        // once the token is verified.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            maintenance::reject_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            staging_gate::require_key,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::enforce,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::apply,
        ))
        .layer(axum::middleware::from_fn(request_id::layer))
        .with_state(state)
}

/// Opens the connection pool.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
        .connect(&config.database_url)
        .await
}

/// Applies the migrations that the database does not have yet.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("../migrations");
    // A rolled-back release runs the previous binary against a database that
    // already has the newer migrations; it must start, not refuse them.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = tokio::spawn(rate_limit::sweep_periodically(Arc::clone(
        &state.rate_limits,
    )));
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    served
}
