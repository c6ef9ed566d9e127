//! Startup checks that apply only with APP_ENV=prod. Every environment
//! already requires DATABASE_URL, a JWT_SECRET of at least 32 bytes and, when
//! it is set, a JWT_SECRET_OLD of at least 32 bytes (see `config.rs`), and
//! all or none of a provider's variables. Provider URLs must be live https
//! endpoints in prod and sandbox endpoints in dev and staging.

use crate::controls::ControlsConfig;
use crate::providers::config::ProvidersConfig;

/// Appends a problem, naming the variable and never its value, for each of:
/// a missing webhook secret (MOMO_CALLBACK_SECRET only when MoMo is
/// configured, even while PROVIDER_DISABLED switches it off, because
/// callbacks of earlier payouts still arrive), `*` in CORS_ALLOWED_ORIGINS,
/// and DEBUG_ROUTES=1.
pub fn check(
    get: &impl Fn(&str) -> Option<String>,
    providers: &ProvidersConfig,
    controls: &ControlsConfig,
    problems: &mut Vec<String>,
) {
    let mut required = vec!["TMONEY_WEBHOOK_SECRET", "THUNES_WEBHOOK_SECRET"];
    if providers.momo.is_some() {
        required.push("MOMO_CALLBACK_SECRET");
    }
    for name in required {
        if get(name).is_none() {
            problems.push(format!("{name} is missing; prod requires it"));
        }
    }

    if controls.cors.is_wildcard() {
        problems.push(
            "CORS_ALLOWED_ORIGINS must not contain * in prod; list each allowed origin".to_owned(),
        );
    }
    // Debug routes are off in prod unless DEBUG_ROUTES=1 switched them on.
    if controls.debug_routes {
        problems.push(
            "DEBUG_ROUTES must not be 1 in prod; debug routes exist in dev and staging only"
                .to_owned(),
        );
    }
}
