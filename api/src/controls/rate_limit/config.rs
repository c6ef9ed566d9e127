//! Rate limit settings, read with the rest of the configuration.

use std::num::NonZeroU32;

use super::client_ip::ClientIpSource;
use super::limiter::LimitSpec;

// NOTE: the defaults are estimates, not sized from measured traffic. A
// limit's bucket size equals its per-minute number unless its _BURST
// variable is set.
const DEFAULT_PER_IP_PER_MINUTE: u32 = 1_200;
const DEFAULT_PER_TOKEN_PER_MINUTE: u32 = 1_200;
/// Higher than the API's per-IP limit because a provider sends every
/// delivery from a few addresses, and a 429 delays a payout's status.
const DEFAULT_WEBHOOKS_PER_IP_PER_MINUTE: u32 = 6_000;

/// The limits, each `None` when its per-minute variable is 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// RATE_LIMIT_PER_IP_PER_MINUTE and RATE_LIMIT_PER_IP_BURST: every route
    /// except /health and the webhook intake, per client address.
    pub per_ip: Option<LimitSpec>,
    /// RATE_LIMIT_PER_TOKEN_PER_MINUTE and RATE_LIMIT_PER_TOKEN_BURST: routes
    /// that take an access token, per token subject (client id).
    pub per_token: Option<LimitSpec>,
    /// RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE and
    /// RATE_LIMIT_WEBHOOKS_PER_IP_BURST: the provider webhook intake, per
    /// client address.
    pub webhooks_per_ip: Option<LimitSpec>,
    /// TRUST_PROXY_HEADERS.
    pub client_ip_source: ClientIpSource,
}

/// A limit's two variables.
pub struct LimitVariables {
    pub per_minute: &'static str,
    pub burst: &'static str,
    default_per_minute: u32,
}

pub const PER_IP: LimitVariables = LimitVariables {
    per_minute: "RATE_LIMIT_PER_IP_PER_MINUTE",
    burst: "RATE_LIMIT_PER_IP_BURST",
    default_per_minute: DEFAULT_PER_IP_PER_MINUTE,
};
pub const PER_TOKEN: LimitVariables = LimitVariables {
    per_minute: "RATE_LIMIT_PER_TOKEN_PER_MINUTE",
    burst: "RATE_LIMIT_PER_TOKEN_BURST",
    default_per_minute: DEFAULT_PER_TOKEN_PER_MINUTE,
};
pub const WEBHOOKS_PER_IP: LimitVariables = LimitVariables {
    per_minute: "RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE",
    burst: "RATE_LIMIT_WEBHOOKS_PER_IP_BURST",
    default_per_minute: DEFAULT_WEBHOOKS_PER_IP_PER_MINUTE,
};

impl RateLimitConfig {
    /// Reads the limits and TRUST_PROXY_HEADERS. Every problem is appended
    /// to `problems` by variable name.
    pub fn from_lookup(
        get: &impl Fn(&str) -> Option<String>,
        problems: &mut Vec<String>,
    ) -> RateLimitConfig {
        RateLimitConfig {
            per_ip: read_limit(get, &PER_IP, problems),
            per_token: read_limit(get, &PER_TOKEN, problems),
            webhooks_per_ip: read_limit(get, &WEBHOOKS_PER_IP, problems),
            client_ip_source: ClientIpSource::parse(
                get("TRUST_PROXY_HEADERS").as_deref(),
                problems,
            ),
        }
    }
}

fn read_limit(
    get: &impl Fn(&str) -> Option<String>,
    variables: &LimitVariables,
    problems: &mut Vec<String>,
) -> Option<LimitSpec> {
    let per_minute =
        read_count(get, variables.per_minute, problems).unwrap_or(variables.default_per_minute);
    let burst = read_count(get, variables.burst, problems);
    let Some(per_minute) = NonZeroU32::new(per_minute) else {
        if burst.is_some() {
            problems.push(format!(
                "{} is set but {} is 0, which switches the limit off; unset one of them",
                variables.burst, variables.per_minute
            ));
        }
        return None;
    };
    let burst = match burst {
        None => per_minute,
        Some(burst) => NonZeroU32::new(burst).unwrap_or_else(|| {
            problems.push(format!(
                "{} must be at least 1; unset it to use {}",
                variables.burst, variables.per_minute
            ));
            per_minute
        }),
    };
    Some(LimitSpec { per_minute, burst })
}

/// Parses a request count; `None` when the variable is unset or invalid.
fn read_count(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<u32> {
    let raw = get(name)?;
    match raw.trim().parse::<u32>() {
        Ok(count) => Some(count),
        Err(_) => {
            problems.push(format!(
                "{name} must be a whole number of requests from 0 to {}",
                u32::MAX
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> (RateLimitConfig, Vec<String>) {
        let vars: HashMap<&str, &str> = pairs.iter().copied().collect();
        let get = |name: &str| vars.get(name).map(|value| (*value).to_owned());
        let mut problems = Vec::new();
        let config = RateLimitConfig::from_lookup(&get, &mut problems);
        (config, problems)
    }

    fn spec(per_minute: u32, burst: u32) -> Option<LimitSpec> {
        Some(LimitSpec {
            per_minute: NonZeroU32::new(per_minute)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    #[test]
    fn defaults_limit_every_scope() {
        let (config, problems) = read(&[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.per_ip, spec(1_200, 1_200));
        assert_eq!(config.per_token, spec(1_200, 1_200));
        assert_eq!(config.webhooks_per_ip, spec(6_000, 6_000));
        assert_eq!(config.client_ip_source, ClientIpSource::Socket);
    }

    #[test]
    fn burst_and_zero_are_read() {
        let (config, problems) = read(&[
            ("RATE_LIMIT_PER_IP_PER_MINUTE", "30"),
            ("RATE_LIMIT_PER_IP_BURST", "5"),
            ("RATE_LIMIT_PER_TOKEN_PER_MINUTE", "0"),
            ("RATE_LIMIT_WEBHOOKS_PER_IP_BURST", "50"),
            ("TRUST_PROXY_HEADERS", "Fly-Client-IP"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.per_ip, spec(30, 5));
        assert_eq!(config.per_token, None);
        assert_eq!(config.webhooks_per_ip, spec(6_000, 50));
        assert_eq!(config.client_ip_source, ClientIpSource::FlyClientIp);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let cases = [
            ("RATE_LIMIT_PER_IP_PER_MINUTE", "-1"),
            ("RATE_LIMIT_PER_IP_PER_MINUTE", "ten"),
            ("RATE_LIMIT_PER_IP_PER_MINUTE", "4294967296"),
            ("RATE_LIMIT_PER_TOKEN_PER_MINUTE", "1.5"),
            ("RATE_LIMIT_PER_TOKEN_BURST", "0"),
            ("RATE_LIMIT_WEBHOOKS_PER_IP_BURST", "lots"),
            ("TRUST_PROXY_HEADERS", "X-Real-IP"),
        ];
        for (name, value) in cases {
            let (_, problems) = read(&[(name, value)]);
            assert_eq!(problems.len(), 1, "{name}={value}: {problems:?}");
            assert!(
                problems[0].starts_with(name),
                "{name}={value}: {problems:?}"
            );
            assert!(
                !problems[0].contains(value),
                "{name}={value}: the message repeats the value"
            );
        }
    }

    #[test]
    fn burst_of_switched_off_limit_is_rejected() {
        let (config, problems) = read(&[
            ("RATE_LIMIT_PER_TOKEN_PER_MINUTE", "0"),
            ("RATE_LIMIT_PER_TOKEN_BURST", "10"),
        ]);
        assert_eq!(config.per_token, None);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("RATE_LIMIT_PER_TOKEN_BURST"));
        assert!(problems[0].contains("RATE_LIMIT_PER_TOKEN_PER_MINUTE"));
    }
}
