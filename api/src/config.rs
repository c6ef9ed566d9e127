//! Configuration from environment variables, validated once at startup.

use std::env;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use nepxy_ledger::Provider;

use crate::controls::ControlsConfig;
use crate::controls::rate_limit::RateLimitConfig;
use crate::providers::config::ProvidersConfig;
use crate::webhooks::Secrets;

/// Shortest JWT_SECRET accepted: HS256 needs at least 256 bits of key.
pub const JWT_SECRET_MIN_BYTES: usize = 32;
const DEFAULT_PORT: u16 = 8001;
const DEFAULT_ACCESS_TOKEN_TTL_SECONDS: u64 = 15 * 60;
/// Upper bound of ACCESS_TOKEN_TTL_SECONDS: access tokens must stay short-lived.
const MAX_ACCESS_TOKEN_TTL_SECONDS: u64 = 60 * 60;
/// Default lifetime of one refresh token: 14 days. Each refresh returns a new
/// token with a new lifetime.
const DEFAULT_REFRESH_TOKEN_TTL_SECONDS: u64 = 14 * 24 * 60 * 60;
/// Bounds of REFRESH_TOKEN_TTL_SECONDS: at least one access token lifetime
/// (the maximum one) and at most 90 days.
const MIN_REFRESH_TOKEN_TTL_SECONDS: u64 = 60 * 60;
const MAX_REFRESH_TOKEN_TTL_SECONDS: u64 = 90 * 24 * 60 * 60;
const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 32;
/// Default ceiling of one payout or deposit: 1,000,000,000 minor units
/// (one billion XOF, or ten million EUR).
const DEFAULT_MAX_AMOUNT_MINOR: i64 = 1_000_000_000;
/// Default time during which a rotated notification secret still signs,
/// next to the new one: one day for receivers to switch.
const DEFAULT_NOTIFICATION_SECRET_ROTATION_SECONDS: u64 = 24 * 60 * 60;
/// Upper bound of NOTIFICATION_SECRET_ROTATION_SECONDS: a replaced secret
/// must stop signing within a week.
const MAX_NOTIFICATION_SECRET_ROTATION_SECONDS: u64 = 7 * 24 * 60 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Dev,
    Staging,
    Prod,
}

impl AppEnv {
    /// Parses APP_ENV; unset means dev.
    pub fn from_name(name: Option<&str>, problems: &mut Vec<String>) -> AppEnv {
        match name {
            None | Some("dev") => AppEnv::Dev,
            Some("staging") => AppEnv::Staging,
            Some("prod") => AppEnv::Prod,
            Some(_) => {
                problems.push("APP_ENV must be one of dev, staging, prod".to_owned());
                AppEnv::Dev
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Dev => "dev",
            AppEnv::Staging => "staging",
            AppEnv::Prod => "prod",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone)]
pub struct JwtConfig {
    /// Signs new access tokens and verifies them.
    pub secret: Vec<u8>,
    /// JWT_SECRET_OLD: still verifies tokens during a rotation, never signs.
    pub previous_secret: Option<Vec<u8>>,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
    /// Clock tolerance when checking `exp` and `iat`.
    pub leeway_seconds: u64,
    pub refresh_token_ttl: Duration,
}

/// Webhook secrets per provider, current and previous.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    pub tmoney: Secrets,
    pub thunes: Secrets,
    /// Key of the MTN MoMo callback tokens.
    pub momo: Secrets,
}

impl WebhookSecrets {
    /// Reads TMONEY_WEBHOOK_SECRET, THUNES_WEBHOOK_SECRET, MOMO_CALLBACK_SECRET
    /// and their `_OLD` twins from the process environment.
    pub fn from_env() -> Result<WebhookSecrets, ConfigError> {
        let mut problems = Vec::new();
        let get = |name: &str| env::var(name).ok().filter(|value| !value.is_empty());
        let secrets = WebhookSecrets::from_lookup(&get, &mut problems);
        if problems.is_empty() {
            Ok(secrets)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> WebhookSecrets {
        WebhookSecrets {
            tmoney: raw_secrets(get, "TMONEY_WEBHOOK_SECRET"),
            thunes: thunes_secrets(get, problems),
            momo: raw_secrets(get, "MOMO_CALLBACK_SECRET"),
        }
    }

    pub fn of(&self, provider: Provider) -> &Secrets {
        match provider {
            Provider::Tmoney => &self.tmoney,
            Provider::Thunes => &self.thunes,
            Provider::Momo => &self.momo,
        }
    }
}

#[derive(Clone)]
pub struct Config {
    pub app_env: AppEnv,
    /// Address the service listens on; `0.0.0.0` unless BIND_ADDRESS is set.
    pub bind_address: IpAddr,
    pub port: u16,
    pub database_url: String,
    pub database_max_connections: u32,
    pub jwt: JwtConfig,
    pub bootstrap_admin_secret: Option<String>,
    pub max_amount_minor: i64,
    pub log_format: LogFormat,
    pub webhook_secrets: WebhookSecrets,
    pub providers: ProvidersConfig,
    /// Whether `serve` also runs the dispatcher (DISPATCHER=off turns it off
    /// for deployments that run `nepxy-api dispatch` as its own process).
    pub dispatcher_in_process: bool,
    /// CORS, debug routes, the staging gate and maintenance mode.
    pub controls: ControlsConfig,
    /// The RATE_LIMIT_* variables and TRUST_PROXY_HEADERS.
    pub rate_limits: RateLimitConfig,
    /// Whether `serve` runs the notification delivery worker
    /// (NOTIFICATIONS=off turns it off).
    pub notifications_in_process: bool,
    /// How long a rotated notification secret still signs deliveries.
    pub notification_secret_rotation: Duration,
}

/// Every problem found in the environment, each naming its variable and
/// never its value.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests can pass variables
    /// without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());

        let app_env = AppEnv::from_name(get("APP_ENV").as_deref(), &mut problems);

        let port = parse_number(&get, "PORT", DEFAULT_PORT, &mut problems);
        let bind_address = match get("BIND_ADDRESS") {
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(raw) => raw.trim().parse().unwrap_or_else(|_| {
                problems.push(
                    "BIND_ADDRESS must be an IP address such as 0.0.0.0 or 127.0.0.1".to_owned(),
                );
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }),
        };
        let database_url = get("DATABASE_URL").unwrap_or_else(|| {
            problems.push("DATABASE_URL is missing; set it to a postgres:// URL".to_owned());
            String::new()
        });
        let database_max_connections = parse_number(
            &get,
            "DATABASE_MAX_CONNECTIONS",
            DEFAULT_DATABASE_MAX_CONNECTIONS,
            &mut problems,
        );
        if database_max_connections == 0 {
            problems.push("DATABASE_MAX_CONNECTIONS must be at least 1".to_owned());
        }

        let secret = get("JWT_SECRET")
            .map(String::into_bytes)
            .unwrap_or_default();
        if secret.is_empty() {
            problems.push(format!(
                "JWT_SECRET is missing; set it to a random value of at least {JWT_SECRET_MIN_BYTES} bytes"
            ));
        } else if secret.len() < JWT_SECRET_MIN_BYTES {
            problems.push(format!(
                "JWT_SECRET is too short: it has {} bytes and needs at least {JWT_SECRET_MIN_BYTES}",
                secret.len()
            ));
        }
        let previous_secret = get("JWT_SECRET_OLD").map(String::into_bytes);
        if let Some(previous) = &previous_secret
            && previous.len() < JWT_SECRET_MIN_BYTES
        {
            problems.push(format!(
                "JWT_SECRET_OLD is too short: it has {} bytes and needs at least {JWT_SECRET_MIN_BYTES}",
                previous.len()
            ));
        }
        let ttl_seconds = parse_number(
            &get,
            "ACCESS_TOKEN_TTL_SECONDS",
            DEFAULT_ACCESS_TOKEN_TTL_SECONDS,
            &mut problems,
        );
        if ttl_seconds == 0 || ttl_seconds > MAX_ACCESS_TOKEN_TTL_SECONDS {
            problems.push(format!(
                "ACCESS_TOKEN_TTL_SECONDS must be between 1 and {MAX_ACCESS_TOKEN_TTL_SECONDS}"
            ));
        }
        let refresh_ttl_seconds = parse_number(
            &get,
            "REFRESH_TOKEN_TTL_SECONDS",
            DEFAULT_REFRESH_TOKEN_TTL_SECONDS,
            &mut problems,
        );
        if !(MIN_REFRESH_TOKEN_TTL_SECONDS..=MAX_REFRESH_TOKEN_TTL_SECONDS)
            .contains(&refresh_ttl_seconds)
        {
            problems.push(format!(
                "REFRESH_TOKEN_TTL_SECONDS must be between {MIN_REFRESH_TOKEN_TTL_SECONDS} and {MAX_REFRESH_TOKEN_TTL_SECONDS}"
            ));
        }
        let jwt = JwtConfig {
            secret,
            previous_secret,
            issuer: get("JWT_ISSUER").unwrap_or_else(|| "nepxy-ledger".to_owned()),
            audience: get("JWT_AUDIENCE").unwrap_or_else(|| "nepxy-api".to_owned()),
            access_token_ttl: Duration::from_secs(ttl_seconds),
            leeway_seconds: 5,
            refresh_token_ttl: Duration::from_secs(refresh_ttl_seconds),
        };

        let max_amount_minor = parse_number(
            &get,
            "MAX_AMOUNT_MINOR",
            DEFAULT_MAX_AMOUNT_MINOR,
            &mut problems,
        );
        if max_amount_minor <= 0 {
            problems.push("MAX_AMOUNT_MINOR must be greater than zero".to_owned());
        }

        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => {
                problems.push("LOG_FORMAT must be text or json".to_owned());
                LogFormat::Text
            }
        };

        let bootstrap_admin_secret = get("BOOTSTRAP_ADMIN_SECRET");
        if let Some(secret) = &bootstrap_admin_secret
            && secret.len() < 16
        {
            problems.push("BOOTSTRAP_ADMIN_SECRET must be at least 16 bytes long".to_owned());
        }

        let webhook_secrets = WebhookSecrets::from_lookup(&get, &mut problems);
        let providers = ProvidersConfig::from_lookup(&get, app_env, &mut problems);
        let controls = ControlsConfig::from_lookup(&get, app_env, &mut problems);
        let rate_limits = RateLimitConfig::from_lookup(&get, &mut problems);
        if app_env == AppEnv::Prod {
            crate::controls::prod_config::check(&get, &providers, &controls, &mut problems);
        }
        let dispatcher_in_process = match get("DISPATCHER").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(_) => {
                problems.push("DISPATCHER must be on or off".to_owned());
                true
            }
        };

        let notifications_in_process = match get("NOTIFICATIONS").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(_) => {
                problems.push("NOTIFICATIONS must be on or off".to_owned());
                true
            }
        };
        let rotation_seconds = parse_number(
            &get,
            "NOTIFICATION_SECRET_ROTATION_SECONDS",
            DEFAULT_NOTIFICATION_SECRET_ROTATION_SECONDS,
            &mut problems,
        );
        if rotation_seconds > MAX_NOTIFICATION_SECRET_ROTATION_SECONDS {
            problems.push(format!(
                "NOTIFICATION_SECRET_ROTATION_SECONDS must be between 0 and {MAX_NOTIFICATION_SECRET_ROTATION_SECONDS}"
            ));
        }

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Config {
            app_env,
            bind_address,
            port,
            database_url,
            database_max_connections,
            jwt,
            bootstrap_admin_secret,
            max_amount_minor,
            log_format,
            webhook_secrets,
            providers,
            dispatcher_in_process,
            controls,
            rate_limits,
            notifications_in_process,
            notification_secret_rotation: Duration::from_secs(rotation_seconds),
        })
    }
}

/// `NAME` and `NAME_OLD` as key bytes, used as given.
fn raw_secrets(get: &impl Fn(&str) -> Option<String>, name: &str) -> Secrets {
    Secrets {
        current: get(name).map(String::into_bytes),
        previous: get(&format!("{name}_OLD")).map(String::into_bytes),
    }
}

/// THUNES_WEBHOOK_SECRET and its _OLD twin, Standard Webhooks secrets
/// (`whsec_` and base64) decoded to key bytes.
fn thunes_secrets(get: &impl Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Secrets {
    let mut decode = |name: &str| {
        get(name).and_then(
            |value| match crate::webhooks::thunes::decode_secret(&value) {
                Ok(key) => Some(key),
                Err(reason) => {
                    problems.push(format!("{name} is invalid: {reason}"));
                    None
                }
            },
        )
    };
    Secrets {
        current: decode("THUNES_WEBHOOK_SECRET"),
        previous: decode("THUNES_WEBHOOK_SECRET_OLD"),
    }
}

fn parse_number<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
    problems: &mut Vec<String>,
) -> T {
    match get(name) {
        None => default,
        Some(raw) => raw.trim().parse().unwrap_or_else(|_| {
            problems.push(format!("{name} must be a whole number"));
            default
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn short_jwt_secret_is_rejected_without_echoing_it() {
        let error = config_from(&[
            ("DATABASE_URL", "postgres://x"),
            ("JWT_SECRET", "hunter2-secret"),
        ])
        .err()
        .expect("short secret must fail");
        let message = error.to_string();
        assert!(message.contains("JWT_SECRET is too short"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn short_old_jwt_secret_is_rejected_without_echoing_it() {
        for app_env in ["dev", "staging", "prod"] {
            let error = config_from(&[
                ("APP_ENV", app_env),
                ("DATABASE_URL", "postgres://x"),
                ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("JWT_SECRET_OLD", "hunter2-old-secret"),
            ])
            .err()
            .expect("short old secret must fail");
            let message = error.to_string();
            assert!(
                message.contains("JWT_SECRET_OLD is too short"),
                "{app_env}: {message}"
            );
            assert!(!message.contains("hunter2"), "{app_env}: {message}");
        }
    }

    #[test]
    fn old_jwt_secret_of_32_bytes_is_accepted() {
        let config = config_from(&[
            ("DATABASE_URL", "postgres://x"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("JWT_SECRET_OLD", "fedcba9876543210fedcba9876543210"),
        ])
        .expect("valid");
        assert_eq!(
            config.jwt.previous_secret.as_deref(),
            Some(&b"fedcba9876543210fedcba9876543210"[..])
        );
    }

    #[test]
    fn refresh_token_ttl_out_of_range_is_rejected() {
        for value in ["0", "59", "7776001"] {
            let error = config_from(&[
                ("DATABASE_URL", "postgres://x"),
                ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("REFRESH_TOKEN_TTL_SECONDS", value),
            ])
            .err()
            .unwrap_or_else(|| panic!("REFRESH_TOKEN_TTL_SECONDS={value} must fail"));
            assert!(
                error.to_string().contains("REFRESH_TOKEN_TTL_SECONDS"),
                "{value}: {error}"
            );
        }
    }

    #[test]
    fn every_problem_is_listed() {
        let error = config_from(&[("APP_ENV", "production"), ("PORT", "eighty")])
            .err()
            .expect("must fail");
        let message = error.to_string();
        for name in ["APP_ENV", "PORT", "DATABASE_URL", "JWT_SECRET"] {
            assert!(message.contains(name), "{name} missing from {message}");
        }
    }

    #[test]
    fn defaults_apply() {
        let config = config_from(&[
            ("DATABASE_URL", "postgres://x"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ])
        .expect("valid");
        assert_eq!(config.port, 8001);
        assert_eq!(config.bind_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(config.app_env, AppEnv::Dev);
        assert_eq!(config.jwt.access_token_ttl, Duration::from_secs(900));
        assert_eq!(
            config.jwt.refresh_token_ttl,
            Duration::from_secs(14 * 24 * 60 * 60)
        );
        assert!(config.jwt.previous_secret.is_none());
    }

    #[test]
    fn bind_address_is_parsed() {
        let valid = [
            ("DATABASE_URL", "postgres://x"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ];
        let mut loopback = valid.to_vec();
        loopback.push(("BIND_ADDRESS", "127.0.0.1"));
        let config = config_from(&loopback).expect("valid");
        assert_eq!(config.bind_address, IpAddr::V4(Ipv4Addr::LOCALHOST));

        let mut invalid = valid.to_vec();
        invalid.push(("BIND_ADDRESS", "localhost:80"));
        let message = config_from(&invalid).err().expect("must fail").to_string();
        assert!(
            message.contains("BIND_ADDRESS must be an IP address"),
            "{message}"
        );
    }
}
