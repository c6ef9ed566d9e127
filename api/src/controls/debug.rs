//! Debug routes, registered in dev and staging only: in prod they do not
//! exist, so every `/debug` path gets the router's ordinary 404.
//!
//! - GET /debug/version: `{"version","app_env","git_sha"}`;
//! - GET /debug/config: the effective settings, with each secret shown only
//!   as `"set"` or `"unset"`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::rate_limit::LimitSpec;
use crate::config::{AppEnv, Config, LogFormat};
use crate::state::AppState;

/// Returns the debug routes for `config`, or an empty router when they are
/// off.
pub fn routes(config: &Config) -> Router<AppState> {
    // DEBUG_ROUTES=1 in prod fails at startup; the second check keeps the
    // routes out of prod even if that validation changes.
    if !config.controls.debug_routes || config.app_env == AppEnv::Prod {
        return Router::new();
    }
    Router::new()
        .route("/debug/version", get(version))
        .route("/debug/config", get(show_config))
}

/// GET /debug/version.
async fn version(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "app_env": state.config.app_env.as_str(),
        "git_sha": state.config.controls.git_sha,
    }))
}

/// GET /debug/config.
async fn show_config(State(state): State<AppState>) -> Json<Value> {
    Json(redacted_config(&state.config, state.maintenance.is_on()))
}

/// Builds the configuration view, keyed by variable name. Secrets, and
/// DATABASE_URL because it may contain a password, appear only as `"set"` or
/// `"unset"`. Other settings show their effective value, defaults included.
pub fn redacted_config(config: &Config, maintenance_on: bool) -> Value {
    let providers = &config.providers;
    let webhooks = &config.webhook_secrets;
    let momo = providers.momo.as_ref();
    let thunes = providers.thunes.as_ref();
    let tmoney = providers.tmoney.as_ref();
    let limits = &config.rate_limits;

    let secrets = json!({
        "DATABASE_URL": presence(!config.database_url.is_empty()),
        "JWT_SECRET": presence(!config.jwt.secret.is_empty()),
        "BOOTSTRAP_ADMIN_SECRET": presence(config.bootstrap_admin_secret.is_some()),
        "STAGING_GATE_KEY": presence(config.controls.staging_gate_key.is_some()),
        "TMONEY_WEBHOOK_SECRET": presence(webhooks.tmoney.current.is_some()),
        "TMONEY_WEBHOOK_SECRET_OLD": presence(webhooks.tmoney.previous.is_some()),
        "THUNES_WEBHOOK_SECRET": presence(webhooks.thunes.current.is_some()),
        "THUNES_WEBHOOK_SECRET_OLD": presence(webhooks.thunes.previous.is_some()),
        "MOMO_CALLBACK_SECRET": presence(webhooks.momo.current.is_some()),
        "MOMO_CALLBACK_SECRET_OLD": presence(webhooks.momo.previous.is_some()),
        "MOMO_API_USER": presence(momo.is_some()),
        "MOMO_API_KEY": presence(momo.is_some()),
        "MOMO_SUBSCRIPTION_KEY": presence(momo.is_some()),
        "THUNES_API_KEY": presence(thunes.is_some()),
        "THUNES_API_SECRET": presence(thunes.is_some()),
        "TMONEY_API_KEY": presence(tmoney.is_some()),
    });

    let disabled: Vec<&str> = providers
        .disabled
        .iter()
        .map(|provider| provider.name())
        .collect();
    let cors = match &config.controls.cors {
        super::cors::AllowedOrigins::None => json!([]),
        super::cors::AllowedOrigins::Any => json!(["*"]),
        super::cors::AllowedOrigins::List(origins) => json!(origins),
    };
    let settings = json!({
        "APP_ENV": config.app_env.as_str(),
        "BIND_ADDRESS": config.bind_address.to_string(),
        "PORT": config.port,
        "DATABASE_MAX_CONNECTIONS": config.database_max_connections,
        "JWT_ISSUER": config.jwt.issuer,
        "JWT_AUDIENCE": config.jwt.audience,
        "ACCESS_TOKEN_TTL_SECONDS": config.jwt.access_token_ttl.as_secs(),
        "MAX_AMOUNT_MINOR": config.max_amount_minor,
        "LOG_FORMAT": match config.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
        "DISPATCHER": if config.dispatcher_in_process { "on" } else { "off" },
        "MOMO_BASE_URL": momo.map(|momo| &momo.base_url),
        "MOMO_TARGET_ENVIRONMENT": momo.map(|momo| &momo.target_environment),
        "MOMO_CALLBACK_BASE_URL": momo.map(|momo| &momo.callback_base_url),
        "THUNES_BASE_URL": thunes.map(|thunes| &thunes.base_url),
        "THUNES_PAYER_ID": thunes.map(|thunes| &thunes.payer_id),
        "THUNES_CALLBACK_URL": thunes.map(|thunes| &thunes.callback_url),
        "TMONEY_BASE_URL": tmoney.map(|tmoney| &tmoney.base_url),
        "PROVIDER_DISABLED": disabled,
        "PROVIDER_TIMEOUT_MS": providers.request_timeout.as_millis() as u64,
        "CORS_ALLOWED_ORIGINS": cors,
        "DEBUG_ROUTES": config.controls.debug_routes,
        "MAINTENANCE_MODE": config.controls.maintenance_mode,
        "GIT_SHA": config.controls.git_sha,
        "RATE_LIMIT_PER_IP_PER_MINUTE": per_minute(limits.per_ip),
        "RATE_LIMIT_PER_IP_BURST": burst(limits.per_ip),
        "RATE_LIMIT_PER_TOKEN_PER_MINUTE": per_minute(limits.per_token),
        "RATE_LIMIT_PER_TOKEN_BURST": burst(limits.per_token),
        "RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE": per_minute(limits.webhooks_per_ip),
        "RATE_LIMIT_WEBHOOKS_PER_IP_BURST": burst(limits.webhooks_per_ip),
        "TRUST_PROXY_HEADERS": limits.client_ip_source.as_str(),
    });

    json!({
        "secrets": secrets,
        "settings": settings,
        "maintenance": maintenance_on,
    })
}

/// Returns a limit's per-minute number, 0 when it is off.
fn per_minute(limit: Option<LimitSpec>) -> u32 {
    limit.map_or(0, |limit| limit.per_minute.get())
}

/// Returns a limit's bucket size, `None` (JSON `null`) when it is off.
fn burst(limit: Option<LimitSpec>) -> Option<u32> {
    limit.map(|limit| limit.burst.get())
}

fn presence(set: bool) -> &'static str {
    if set { "set" } else { "unset" }
}
