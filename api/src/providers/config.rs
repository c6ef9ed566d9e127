//! Provider settings from MOMO_*, THUNES_* and TMONEY_* variables, and the
//! PROVIDER_DISABLED switch.

use std::collections::BTreeSet;

use nepxy_ledger::Provider;

use crate::config::AppEnv;

#[derive(Clone)]
pub struct MomoConfig {
    pub base_url: String,
    pub api_user: String,
    pub api_key: String,
    pub subscription_key: String,
    /// `sandbox` in dev and staging; a live environment name such as
    /// `mtnghana` in prod.
    pub target_environment: String,
    /// Public base URL of this service; MoMo callbacks go to
    /// `{callback_base_url}/v1/webhooks/momo/{token}`.
    pub callback_base_url: String,
}

#[derive(Clone)]
pub struct ThunesConfig {
    pub base_url: String,
    pub api_key: String,
    pub api_secret: String,
    /// Thunes payer (the receiving wallet network) for Togolese payouts.
    pub payer_id: String,
    /// Where Thunes sends status callbacks: `{public base}/v1/webhooks/thunes`.
    pub callback_url: String,
}

#[derive(Clone)]
pub struct TmoneyConfig {
    pub base_url: String,
    pub api_key: String,
}

// Debug output names the endpoint only: keys and secrets never reach a log.
impl std::fmt::Debug for MomoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MomoConfig")
            .field("base_url", &self.base_url)
            .field("target_environment", &self.target_environment)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ThunesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThunesConfig")
            .field("base_url", &self.base_url)
            .field("payer_id", &self.payer_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TmoneyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TmoneyConfig")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Settings of every configured provider. A provider whose variables are all
/// unset is not configured: its payouts wait in the queue.
#[derive(Clone, Debug)]
pub struct ProvidersConfig {
    pub momo: Option<MomoConfig>,
    pub thunes: Option<ThunesConfig>,
    pub tmoney: Option<TmoneyConfig>,
    /// Providers switched off by PROVIDER_DISABLED at startup.
    pub disabled: BTreeSet<Provider>,
    /// Longest wait for one provider request (PROVIDER_TIMEOUT_MS).
    pub request_timeout: std::time::Duration,
}

/// Default of PROVIDER_TIMEOUT_MS.
const DEFAULT_PROVIDER_TIMEOUT_MS: u64 = 10_000;

const MOMO_VARIABLES: [&str; 6] = [
    "MOMO_BASE_URL",
    "MOMO_API_USER",
    "MOMO_API_KEY",
    "MOMO_SUBSCRIPTION_KEY",
    "MOMO_TARGET_ENVIRONMENT",
    "MOMO_CALLBACK_BASE_URL",
];
const THUNES_VARIABLES: [&str; 5] = [
    "THUNES_BASE_URL",
    "THUNES_API_KEY",
    "THUNES_API_SECRET",
    "THUNES_PAYER_ID",
    "THUNES_CALLBACK_URL",
];
const TMONEY_VARIABLES: [&str; 2] = ["TMONEY_BASE_URL", "TMONEY_API_KEY"];

impl ProvidersConfig {
    /// Reads the provider variables and APP_ENV from the process environment.
    pub fn from_env() -> Result<Self, crate::config::ConfigError> {
        let get = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let mut problems = Vec::new();
        let app_env = AppEnv::from_name(get("APP_ENV").as_deref(), &mut problems);
        let config = ProvidersConfig::from_lookup(&get, app_env, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(crate::config::ConfigError { problems })
        }
    }

    /// Reads the provider variables. Every problem is appended to `problems`
    /// by variable name, never with its value.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        app_env: AppEnv,
        problems: &mut Vec<String>,
    ) -> Self {
        let disabled = parse_disabled(get("PROVIDER_DISABLED").as_deref(), problems);
        let timeout_ms = match get("PROVIDER_TIMEOUT_MS") {
            None => DEFAULT_PROVIDER_TIMEOUT_MS,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(ms) if (100..=120_000).contains(&ms) => ms,
                _ => {
                    problems.push(
                        "PROVIDER_TIMEOUT_MS must be a whole number from 100 to 120000".to_owned(),
                    );
                    DEFAULT_PROVIDER_TIMEOUT_MS
                }
            },
        };

        let momo = read_group(get, &MOMO_VARIABLES, problems).map(|values| MomoConfig {
            base_url: trim_slash(&values[0]),
            api_user: values[1].clone(),
            api_key: values[2].clone(),
            subscription_key: values[3].clone(),
            target_environment: values[4].clone(),
            callback_base_url: trim_slash(&values[5]),
        });
        let thunes = read_group(get, &THUNES_VARIABLES, problems).map(|values| ThunesConfig {
            base_url: trim_slash(&values[0]),
            api_key: values[1].clone(),
            api_secret: values[2].clone(),
            payer_id: values[3].clone(),
            callback_url: values[4].clone(),
        });
        let tmoney = read_group(get, &TMONEY_VARIABLES, problems).map(|values| TmoneyConfig {
            base_url: trim_slash(&values[0]),
            api_key: values[1].clone(),
        });

        // Sandbox endpoints in dev and staging, live ones only in prod.
        let urls = [
            momo.as_ref()
                .map(|config| ("MOMO_BASE_URL", config.base_url.as_str())),
            thunes
                .as_ref()
                .map(|config| ("THUNES_BASE_URL", config.base_url.as_str())),
            tmoney
                .as_ref()
                .map(|config| ("TMONEY_BASE_URL", config.base_url.as_str())),
        ];
        for (name, url) in urls.into_iter().flatten() {
            check_url(name, url, app_env, problems);
        }
        if let Some(config) = &momo {
            let sandbox = config.target_environment == "sandbox";
            if app_env == AppEnv::Prod && sandbox {
                problems.push(
                    "MOMO_TARGET_ENVIRONMENT must name a live environment in prod, not sandbox"
                        .to_owned(),
                );
            }
            if app_env != AppEnv::Prod && !sandbox {
                problems.push(format!(
                    "MOMO_TARGET_ENVIRONMENT must be sandbox in {}; live environments are for prod only",
                    app_env.as_str()
                ));
            }
        }

        ProvidersConfig {
            momo,
            thunes,
            tmoney,
            disabled,
            request_timeout: std::time::Duration::from_millis(timeout_ms),
        }
    }

    pub fn is_configured(&self, provider: Provider) -> bool {
        match provider {
            Provider::Momo => self.momo.is_some(),
            Provider::Thunes => self.thunes.is_some(),
            Provider::Tmoney => self.tmoney.is_some(),
        }
    }
}

/// `1` disables every provider; a comma list disables those named.
fn parse_disabled(raw: Option<&str>, problems: &mut Vec<String>) -> BTreeSet<Provider> {
    let Some(raw) = raw
        .map(str::trim)
        .filter(|raw| !raw.is_empty() && *raw != "0")
    else {
        return BTreeSet::new();
    };
    if raw == "1" {
        return Provider::ALL.into_iter().collect();
    }
    let mut disabled = BTreeSet::new();
    for name in raw
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        match name.parse::<Provider>() {
            Ok(provider) => {
                disabled.insert(provider);
            }
            Err(_) => problems.push(
                "PROVIDER_DISABLED names an unknown provider; use 1 or a comma list of tmoney, thunes, momo"
                    .to_owned(),
            ),
        }
    }
    disabled
}

/// All variables of a provider, or none: a partial set names each missing
/// variable.
fn read_group(
    get: &impl Fn(&str) -> Option<String>,
    names: &[&str],
    problems: &mut Vec<String>,
) -> Option<Vec<String>> {
    let values: Vec<Option<String>> = names.iter().map(|name| get(name)).collect();
    if values.iter().all(Option::is_none) {
        return None;
    }
    let missing: Vec<&str> = names
        .iter()
        .zip(&values)
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "{} missing: set every variable of the provider or none",
            missing.join(", ")
        ));
        return None;
    }
    Some(values.into_iter().flatten().collect())
}

fn trim_slash(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// Whether a URL points at a provider's sandbox: this machine, or a host
/// whose name says sandbox or pre-production.
pub fn is_sandbox_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
    host == "localhost"
        || host == "127.0.0.1"
        || host == "[::1]"
        || host.contains("sandbox")
        || host.starts_with("pre.")
        || host.contains(".pre.")
}

fn check_url(name: &str, url: &str, app_env: AppEnv, problems: &mut Vec<String>) {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        problems.push(format!("{name} is not a valid URL"));
        return;
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        problems.push(format!("{name} must be an http or https URL"));
        return;
    }
    let sandbox = is_sandbox_url(url);
    if app_env == AppEnv::Prod && (sandbox || parsed.scheme() != "https") {
        problems.push(format!(
            "{name} must be a live https endpoint in prod, not a sandbox"
        ));
    }
    if app_env != AppEnv::Prod && !sandbox {
        problems.push(format!(
            "{name} must be a sandbox endpoint in {}; live endpoints are for prod only",
            app_env.as_str()
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(pairs: &[(&str, &str)], app_env: AppEnv) -> (ProvidersConfig, Vec<String>) {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut problems = Vec::new();
        let config =
            ProvidersConfig::from_lookup(&|name| vars.get(name).cloned(), app_env, &mut problems);
        (config, problems)
    }

    #[test]
    fn partial_group_names_missing_variables_only() {
        let (_, problems) = read(&[("TMONEY_BASE_URL", "http://127.0.0.1:9000")], AppEnv::Dev);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("TMONEY_API_KEY"), "{problems:?}");
        assert!(
            !problems[0].contains("127.0.0.1"),
            "values are never printed: {problems:?}"
        );
    }

    #[test]
    fn prod_rejects_sandbox_and_dev_rejects_live() {
        let tmoney = [
            ("TMONEY_BASE_URL", "http://127.0.0.1:9000"),
            ("TMONEY_API_KEY", "k"),
        ];
        let (_, problems) = read(&tmoney, AppEnv::Prod);
        assert!(
            problems.iter().any(|p| p.contains("TMONEY_BASE_URL")),
            "{problems:?}"
        );
        let live = [
            ("TMONEY_BASE_URL", "https://api.tmoney.example"),
            ("TMONEY_API_KEY", "k"),
        ];
        let (_, problems) = read(&live, AppEnv::Staging);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("sandbox endpoint in staging")),
            "{problems:?}"
        );
        let (config, problems) = read(&live, AppEnv::Prod);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(config.tmoney.is_some());
    }

    #[test]
    fn debug_output_hides_keys() {
        let vars = [
            ("TMONEY_BASE_URL", "http://127.0.0.1:9000"),
            ("TMONEY_API_KEY", "very-secret-key"),
        ];
        let (config, _) = read(&vars, AppEnv::Dev);
        let printed = format!("{config:?}");
        assert!(printed.contains("127.0.0.1:9000"), "{printed}");
        assert!(!printed.contains("very-secret-key"), "{printed}");
    }

    #[test]
    fn provider_disabled_forms() {
        let (config, _) = read(&[("PROVIDER_DISABLED", "1")], AppEnv::Dev);
        assert_eq!(config.disabled.len(), 3);
        let (config, _) = read(&[("PROVIDER_DISABLED", "momo, thunes")], AppEnv::Dev);
        assert!(config.disabled.contains(&Provider::Momo));
        assert!(config.disabled.contains(&Provider::Thunes));
        assert!(!config.disabled.contains(&Provider::Tmoney));
        let (_, problems) = read(&[("PROVIDER_DISABLED", "paypal")], AppEnv::Dev);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
