//! Rate limits per client address and per token subject, with 429 problems
//! and RateLimit headers.
//!
//! Three limits, each a GCRA bucket per key from the `governor` crate:
//!
//! - per client address on every route except /health and the webhook
//!   intake. /health is exempt so that platform health checks never see a
//!   429 and take a healthy machine out of service;
//! - per client address on the webhook intake, with its own budget. A
//!   provider sends from a few addresses, so it gets a higher limit, and a
//!   busy client on the same address cannot delay its deliveries. The
//!   intake stores every delivery, forged ones too, so it is not exempt;
//! - per token subject (the client id), checked by the [`Principal`]
//!   extractor once the token is verified, so a forged or expired token
//!   never spends a client's budget.
//!
//! Responses carry `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` as defined by draft-ietf-httpapi-ratelimit-headers-04:
//! the size of the bucket, the requests it still holds, and the seconds
//! until it is full again. When both the address and the token limit apply,
//! they describe the bucket with fewer requests left. A 429 adds
//! `Retry-After`: whole seconds until one more request is allowed.
//!
//! The buckets live in this process only, so each machine counts its own
//! requests.
//!
//! [`Principal`]: crate::auth::Principal

mod client_ip;
mod config;
mod limiter;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

pub use client_ip::ClientIpSource;
pub use config::{PER_IP, PER_TOKEN, RateLimitConfig, WEBHOOKS_PER_IP};
pub use limiter::{BucketState, Exceeded, KeyedLimit, LimitSpec};

use crate::config::{AppEnv, Config};
use crate::error::ApiError;
use crate::state::AppState;

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Gauge of the number of keys in each limit after a sweep, labelled
/// `limit`.
pub const TRACKED_KEYS_METRIC: &str = "nepxy_rate_limit_tracked_keys";

/// How often the limits drop the keys whose bucket is full again. Between
/// two sweeps a limit contains at most the keys seen since the previous
/// sweep and those still refilling.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Key kind of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client address.
    Ip,
    /// The subject of a verified access token.
    Token,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Token => "token",
        }
    }
}

/// A request rejected by a limit, turned into a 429 by [`ApiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub scope: Scope,
    /// Whether the limit is the webhook intake's.
    pub webhooks: bool,
    pub per_minute: u32,
    pub exceeded: Exceeded,
}

/// The running limits, shared by every request.
pub struct RateLimits {
    per_ip: Option<KeyedLimit<IpAddr>>,
    per_token: Option<KeyedLimit<Uuid>>,
    webhooks_per_ip: Option<KeyedLimit<IpAddr>>,
    client_ip_source: ClientIpSource,
    rejection_log: RejectionLog,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            per_ip: config.per_ip.map(KeyedLimit::new),
            per_token: config.per_token.map(KeyedLimit::new),
            webhooks_per_ip: config.webhooks_per_ip.map(KeyedLimit::new),
            client_ip_source: config.client_ip_source,
            rejection_log: RejectionLog::new(),
        }
    }

    /// Drops stale keys from every limit and records how many remain.
    pub fn sweep(&self) {
        let limits = [
            ("ip", self.per_ip.as_ref().map(KeyedLimit::sweep)),
            ("token", self.per_token.as_ref().map(KeyedLimit::sweep)),
            (
                "webhooks_ip",
                self.webhooks_per_ip.as_ref().map(KeyedLimit::sweep),
            ),
        ];
        for (limit, keys) in limits {
            if let Some(keys) = keys {
                metrics::gauge!(TRACKED_KEYS_METRIC, "limit" => limit).set(keys as f64);
            }
        }
    }

    /// Counts and logs a rejection, and returns its 429 response.
    fn reject(&self, rejected: RateLimited, client_ip: Option<IpAddr>) -> Response {
        self.count_rejection(&rejected, client_ip);
        ApiError::TooManyRequests(rejected).into_response()
    }

    fn count_rejection(&self, rejected: &RateLimited, client_ip: Option<IpAddr>) {
        metrics::counter!(
            crate::prometheus::RATE_LIMITED,
            "scope" => rejected.scope.as_str(),
            "routes" => if rejected.webhooks { "webhooks" } else { "api" }
        )
        .increment(1);
        self.rejection_log.record(rejected, client_ip);
    }
}

/// Sweeps `limits` every [`SWEEP_INTERVAL`] until the task is aborted, so
/// that the keys of addresses that stopped sending do not accumulate.
pub async fn sweep_periodically(limits: Arc<RateLimits>) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        limits.sweep();
    }
}

/// The token bucket's state after the [`Principal`] extractor counted the
/// request, passed back to [`enforce`] for the response headers.
///
/// [`Principal`]: crate::auth::Principal
#[derive(Clone, Default)]
struct TokenBucketSlot(Arc<OnceLock<BucketState>>);

/// Middleware: applies the per-address limits before the request goes on,
/// and writes the RateLimit headers on the response.
pub async fn enforce(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let limits = &state.rate_limits;
    let path = request.uri().path();
    if path == "/health" {
        return next.run(request).await;
    }
    let webhooks = super::is_webhook_intake(request.method(), path);
    let address_limit = if webhooks {
        limits.webhooks_per_ip.as_ref()
    } else {
        limits.per_ip.as_ref()
    };

    let mut tightest: Option<BucketState> = None;
    // The socket address is missing only when the router runs without
    // `into_make_service_with_connect_info`, as in tests that call it
    // directly; such requests skip the per-address limits.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    if let (Some(limit), Some(peer)) = (address_limit, peer) {
        let client_ip = limits.client_ip_source.client_ip(request.headers(), peer);
        match limit.check(&client_ip::limit_key(client_ip)) {
            Ok(bucket) => tightest = Some(bucket),
            Err(exceeded) => {
                let rejected = RateLimited {
                    scope: Scope::Ip,
                    webhooks,
                    per_minute: limit.spec().per_minute.get(),
                    exceeded,
                };
                return limits.reject(rejected, Some(client_ip));
            }
        }
    }

    let token_slot = TokenBucketSlot::default();
    if !webhooks && limits.per_token.is_some() {
        request.extensions_mut().insert(token_slot.clone());
    }
    let mut response = next.run(request).await;

    if let Some(token_bucket) = token_slot.0.get() {
        tightest = Some(match tightest {
            Some(bucket) => bucket.tighter(*token_bucket),
            None => *token_bucket,
        });
    }
    if let Some(bucket) = tightest {
        write_headers(response.headers_mut(), bucket);
    }
    response
}

/// Counts a request of the verified token subject `client_id`; called by
/// the [`Principal`] extractor after the token checks pass.
///
/// [`Principal`]: crate::auth::Principal
pub fn check_token(parts: &Parts, state: &AppState, client_id: Uuid) -> Result<(), ApiError> {
    let limits = &state.rate_limits;
    let Some(limit) = limits.per_token.as_ref() else {
        return Ok(());
    };
    let checked = limit.check(&client_id);
    // The slot also takes the empty bucket of a rejection, so that `enforce`
    // does not replace the 429's headers with the per-address bucket's.
    if let Some(slot) = parts.extensions.get::<TokenBucketSlot>() {
        let bucket = match checked {
            Ok(bucket) => bucket,
            Err(exceeded) => exceeded.bucket,
        };
        let _ = slot.0.set(bucket);
    }
    match checked {
        Ok(_) => Ok(()),
        Err(exceeded) => {
            let rejected = RateLimited {
                scope: Scope::Token,
                webhooks: false,
                per_minute: limit.spec().per_minute.get(),
                exceeded,
            };
            limits.count_rejection(&rejected, None);
            Err(ApiError::TooManyRequests(rejected))
        }
    }
}

/// Writes the three RateLimit headers of `bucket`.
pub fn write_headers(headers: &mut HeaderMap, bucket: BucketState) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(bucket.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(bucket.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(bucket.reset_seconds));
}

/// Logs the limits in effect, and warns about settings that weaken them: a
/// limit switched off, or, in prod, client addresses taken from the socket,
/// which behind Fly's proxy puts every client in one bucket.
pub fn log_settings(config: &Config) {
    let limits = &config.rate_limits;
    let per_minute = |limit: Option<LimitSpec>| limit.map_or(0, |limit| limit.per_minute.get());
    let burst = |limit: Option<LimitSpec>| limit.map_or(0, |limit| limit.burst.get());
    tracing::info!(
        per_ip_per_minute = per_minute(limits.per_ip),
        per_ip_burst = burst(limits.per_ip),
        per_token_per_minute = per_minute(limits.per_token),
        per_token_burst = burst(limits.per_token),
        webhooks_per_ip_per_minute = per_minute(limits.webhooks_per_ip),
        webhooks_per_ip_burst = burst(limits.webhooks_per_ip),
        trust_proxy_headers = limits.client_ip_source.as_str().unwrap_or("unset"),
        "rate limits"
    );
    let switched_off = [
        (PER_IP.per_minute, limits.per_ip.is_none()),
        (PER_TOKEN.per_minute, limits.per_token.is_none()),
        (WEBHOOKS_PER_IP.per_minute, limits.webhooks_per_ip.is_none()),
    ];
    for (variable, off) in switched_off {
        if off {
            tracing::warn!(
                variable,
                "rate limit switched off because the variable is 0"
            );
        }
    }
    if config.app_env == AppEnv::Prod && limits.client_ip_source == ClientIpSource::Socket {
        tracing::warn!(
            "TRUST_PROXY_HEADERS is unset, so the per-IP limits count the TCP peer; behind a proxy every client shares the proxy's bucket"
        );
    }
}

/// Logs rejected requests at most once a second per process, with the
/// number left out since the previous line, so that a flood does not flood
/// the log as well. The metric counts every rejection.
struct RejectionLog {
    started: Instant,
    /// Second, counted from `started`, of the last line written.
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl RejectionLog {
    fn new() -> RejectionLog {
        RejectionLog {
            started: Instant::now(),
            last_second: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    fn record(&self, rejected: &RateLimited, client_ip: Option<IpAddr>) {
        let second = self.started.elapsed().as_secs();
        let previous = self.last_second.swap(second, Ordering::Relaxed);
        if previous == second {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::info!(
            scope = rejected.scope.as_str(),
            webhooks = rejected.webhooks,
            client_ip = client_ip.map(tracing::field::display),
            retry_after_seconds = rejected.exceeded.retry_after_seconds,
            suppressed_since_last_line = suppressed,
            "request rejected by a rate limit"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    fn spec(per_minute: u32) -> LimitSpec {
        let per_minute = NonZeroU32::new(per_minute).expect("nonzero");
        LimitSpec {
            per_minute,
            burst: per_minute,
        }
    }

    fn rejected(scope: Scope, webhooks: bool) -> RateLimited {
        RateLimited {
            scope,
            webhooks,
            per_minute: 60,
            exceeded: Exceeded {
                bucket: BucketState {
                    limit: 60,
                    remaining: 0,
                    reset_seconds: 60,
                },
                retry_after_seconds: 1,
            },
        }
    }

    #[test]
    fn rejections_and_keys_are_recorded() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let limits = RateLimits::new(&RateLimitConfig {
            per_ip: Some(spec(1)),
            webhooks_per_ip: Some(spec(600)),
            ..RateLimitConfig::default()
        });
        metrics::with_local_recorder(&recorder, || {
            limits.count_rejection(&rejected(Scope::Ip, false), None);
            limits.count_rejection(&rejected(Scope::Ip, true), None);
            limits.count_rejection(&rejected(Scope::Token, false), None);
            limits.count_rejection(&rejected(Scope::Token, false), None);

            let per_ip = limits.per_ip.as_ref().expect("per-IP limit");
            for last_octet in 0..3 {
                let address = IpAddr::from([192, 0, 2, last_octet]);
                per_ip.check(&address).expect("first request");
            }
            limits.sweep();
        });

        let text = handle.render();
        for expected in [
            r#"nepxy_rate_limited_total{scope="ip",routes="api"} 1"#,
            r#"nepxy_rate_limited_total{scope="ip",routes="webhooks"} 1"#,
            r#"nepxy_rate_limited_total{scope="token",routes="api"} 2"#,
            // One request refills per minute, so the three buckets are
            // still refilling and the sweep keeps them.
            r#"nepxy_rate_limit_tracked_keys{limit="ip"} 3"#,
            r#"nepxy_rate_limit_tracked_keys{limit="webhooks_ip"} 0"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        assert!(
            !text.contains(r#"limit="token""#),
            "a switched-off limit has no gauge:\n{text}"
        );
    }
}
