//! Production controls, one file each:
//!
//! - [`prod_config`] rejects a prod configuration that lacks a secret or
//!   switches on something meant for dev;
//! - [`debug`] serves `/debug/version` and `/debug/config` in dev and staging;
//! - [`staging_gate`] requires `X-Staging-Gate-Key` in staging;
//! - [`cors`] adds CORS headers for an exact allow-list of origins;
//! - [`maintenance`] pauses writes while webhooks are still stored;
//! - [`rate_limit`] limits requests per client address and per token.

pub mod cors;
pub mod debug;
pub mod maintenance;
pub mod prod_config;
pub mod rate_limit;
pub mod staging_gate;

use axum::http::Method;

use crate::config::AppEnv;

/// Settings of the controls, read with the rest of the configuration.
#[derive(Clone, Default)]
pub struct ControlsConfig {
    /// CORS_ALLOWED_ORIGINS.
    pub cors: cors::AllowedOrigins,
    /// Whether `/debug/*` is served: on in dev and staging unless
    /// DEBUG_ROUTES=0, and never in prod.
    pub debug_routes: bool,
    /// STAGING_GATE_KEY as set; only staging enforces it.
    pub staging_gate_key: Option<String>,
    /// MAINTENANCE_MODE at startup; the running value is
    /// [`maintenance::MaintenanceSwitch`].
    pub maintenance_mode: bool,
    /// GIT_SHA, the commit the binary was built from, shown by /debug/version.
    pub git_sha: Option<String>,
}

// The gate key never reaches a log.
impl std::fmt::Debug for ControlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlsConfig")
            .field("cors", &self.cors)
            .field("debug_routes", &self.debug_routes)
            .field("staging_gate_key_set", &self.staging_gate_key.is_some())
            .field("maintenance_mode", &self.maintenance_mode)
            .field("git_sha", &self.git_sha)
            .finish()
    }
}

impl ControlsConfig {
    /// Reads CORS_ALLOWED_ORIGINS, DEBUG_ROUTES, STAGING_GATE_KEY,
    /// MAINTENANCE_MODE and GIT_SHA. Every problem is appended to `problems`
    /// by variable name, never with its value.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        app_env: AppEnv,
        problems: &mut Vec<String>,
    ) -> ControlsConfig {
        let cors = cors::AllowedOrigins::parse(get("CORS_ALLOWED_ORIGINS").as_deref(), problems);

        let debug_routes = match parse_switch(get, "DEBUG_ROUTES", problems) {
            Some(on) => on,
            None => app_env != AppEnv::Prod,
        };
        let maintenance_mode = parse_switch(get, "MAINTENANCE_MODE", problems).unwrap_or(false);

        ControlsConfig {
            cors,
            debug_routes,
            staging_gate_key: get("STAGING_GATE_KEY"),
            maintenance_mode,
            git_sha: get("GIT_SHA"),
        }
    }
}

/// Parses a `0` or `1` variable; `None` when it is unset.
fn parse_switch(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<bool> {
    match get(name).as_deref().map(str::trim) {
        None => None,
        Some("1") => Some(true),
        Some("0") => Some(false),
        Some(_) => {
            problems.push(format!("{name} must be 0 or 1"));
            None
        }
    }
}

/// Returns whether a request is a provider webhook delivery: POST to
/// `/v1/webhooks/tmoney` or `/v1/webhooks/thunes`, or POST or PUT to
/// `/v1/webhooks/momo/{callback_token}`. Providers cannot send the staging
/// gate key, and their deliveries are stored even during maintenance.
pub fn is_webhook_intake(method: &Method, path: &str) -> bool {
    match path {
        "/v1/webhooks/tmoney" | "/v1/webhooks/thunes" => method == Method::POST,
        _ => {
            crate::webhooks::intake::momo_token_from_path(path).is_some()
                && (method == Method::POST || method == Method::PUT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_intake_paths() {
        assert!(is_webhook_intake(&Method::POST, "/v1/webhooks/tmoney"));
        assert!(is_webhook_intake(&Method::POST, "/v1/webhooks/thunes"));
        assert!(is_webhook_intake(&Method::PUT, "/v1/webhooks/momo/abc"));
        assert!(is_webhook_intake(&Method::POST, "/v1/webhooks/momo/abc"));
        assert!(!is_webhook_intake(&Method::GET, "/v1/webhooks/tmoney"));
        assert!(!is_webhook_intake(&Method::PUT, "/v1/webhooks/tmoney"));
        assert!(!is_webhook_intake(&Method::POST, "/v1/webhooks/momo/"));
        assert!(!is_webhook_intake(&Method::POST, "/v1/webhooks/momo/a/b"));
        assert!(!is_webhook_intake(&Method::POST, "/v1/webhooks/tmoney/"));
        assert!(!is_webhook_intake(
            &Method::POST,
            "/v1/webhooks/1b4e28ba-2fa1-11d2-883f-0016d3cca427/replay"
        ));
        assert!(!is_webhook_intake(&Method::POST, "/v1/payouts"));
    }
}
