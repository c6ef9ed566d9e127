//! The delivery worker: claims due notifications under a lease, sends each
//! one signed to its endpoint, and records every attempt.
//!
//! A 2xx response delivers the notification. 410 Gone disables the endpoint
//! and its pending notifications. Any other response (3xx, because redirects
//! are not followed, 4xx, 429, 5xx), a timeout, a transport error or a
//! rejected destination is retried with exponential backoff and jitter,
//! honouring Retry-After on 429 and 503. When the retry window ends, the
//! notification is `failed`.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::egress::{CheckedResolver, EgressPolicy, parse_url};
use super::{notification_id_text, payload_body, signature_header};
use crate::config::AppEnv;
use crate::store::StoreError;
use crate::store::notifications::{self, AttemptOutcome, AttemptRecord, ClaimedNotification};
use crate::webhooks::thunes::decode_secret;

/// Time from a notification's event (or its redelivery) after which it is
/// no longer retried: three days, so a receiver that is down over a weekend
/// still gets it.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(3 * 24 * 60 * 60);
/// Maximum time for one delivery, from connecting to the end of the
/// response.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum time for the TCP and TLS connection, within the request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Maximum number of response body bytes read. They are read only so the
/// connection can be reused, and then discarded.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Tuning of the delivery worker. The defaults suit production.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Maximum number of deliveries in flight at once, and so of the rows
    /// that one claim takes.
    pub batch_size: usize,
    /// How long a claimed notification stays with one worker. It must exceed
    /// `request_timeout`, or a slow delivery could be sent twice at once.
    pub lease: Duration,
    /// Wait between claims when nothing was due.
    pub idle_wait: Duration,
    pub request_timeout: Duration,
    /// Delay before the first retry. Each later delay doubles, plus a random
    /// jitter of up to the delay itself, up to `max_retry_delay`.
    pub first_retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// See [`DEFAULT_RETRY_WINDOW`].
    pub retry_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 32,
            lease: Duration::from_secs(60),
            idle_wait: Duration::from_secs(1),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            first_retry_delay: Duration::from_secs(5),
            max_retry_delay: Duration::from_secs(6 * 60 * 60),
            retry_window: DEFAULT_RETRY_WINDOW,
        }
    }
}

/// The notification delivery worker.
#[derive(Clone)]
pub struct Notifier {
    pool: PgPool,
    http: reqwest::Client,
    policy: EgressPolicy,
    settings: Arc<Settings>,
}

/// Result of one delivery attempt.
#[derive(Debug)]
enum AttemptResult {
    Status {
        code: StatusCode,
        retry_after: Option<Duration>,
    },
    /// No response: a timeout, a transport error or a rejected destination.
    NoResponse { error: String },
    /// The stored notification or secret cannot be sent, so retrying would
    /// not help.
    Unsendable { error: String },
}

impl Notifier {
    /// Builds a worker whose destinations follow the egress policy of
    /// `app_env`.
    pub fn new(pool: PgPool, app_env: AppEnv, settings: Settings) -> reqwest::Result<Notifier> {
        let policy = EgressPolicy::for_env(app_env);
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(settings.request_timeout))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on the worker's behalf to addresses that
            // the resolver never checked.
            .no_proxy()
            .https_only(!policy.allow_http)
            .dns_resolver(CheckedResolver { policy })
            .user_agent(concat!("nepxy-notifications/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Notifier {
            pool,
            http,
            policy,
            settings: Arc::new(settings),
        })
    }

    /// Delivers notifications until `shutdown` completes, then waits for the
    /// deliveries in flight, each bounded by the request timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tracing::info!(
            batch_size = self.settings.batch_size,
            "notification worker started"
        );
        tokio::pin!(shutdown);
        let mut in_flight = JoinSet::new();
        loop {
            let free = self.settings.batch_size.saturating_sub(in_flight.len());
            if free > 0 {
                match self.claim(free).await {
                    Ok(rows) => {
                        for row in rows {
                            self.spawn_delivery(&mut in_flight, row);
                        }
                    }
                    Err(error) => {
                        tracing::error!(error = %error, "claiming notifications failed; retrying after a pause");
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => break,
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    log_panic(joined);
                    // Collect every finished delivery, so the next claim
                    // fills all free slots at once.
                    while let Some(joined) = in_flight.try_join_next() {
                        log_panic(joined);
                    }
                }
                () = tokio::time::sleep(self.settings.idle_wait) => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
        tracing::info!("notification worker stopped");
    }

    // NOTE: claims are not limited per endpoint, so a few slow endpoints can
    // take every slot for up to the request timeout and delay the others.
    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedNotification>, StoreError> {
        notifications::claim(
            &self.pool,
            i64::try_from(limit).unwrap_or(i64::MAX),
            self.settings.lease.as_secs_f64(),
        )
        .await
    }

    fn spawn_delivery(&self, in_flight: &mut JoinSet<()>, row: ClaimedNotification) {
        let notifier = self.clone();
        let notification_id = row.notification_id;
        let span = tracing::info_span!(
            "notification",
            notification_id = %notification_id_text(notification_id),
            endpoint_id = %row.endpoint_id,
        );
        in_flight.spawn(
            async move {
                if let Err(error) = notifier.deliver(row).await {
                    tracing::error!(error = %error, "recording a notification attempt failed; its lease will run out and it will be retried");
                }
            }
            .instrument(span),
        );
    }

    /// Makes one attempt and records it.
    async fn deliver(&self, row: ClaimedNotification) -> Result<(), StoreError> {
        if !row.endpoint_active {
            tracing::info!(
                "endpoint deleted or disabled; notification disabled without an attempt"
            );
            return notifications::disable_notification(&self.pool, row.notification_id).await;
        }

        let started_at = Utc::now();
        let clock = tokio::time::Instant::now();
        let result = self.send(&row, started_at).await;
        let duration_ms = i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);

        let outcome = self.outcome(&row, &result, Utc::now());
        let attempt = row.attempts + 1;
        let (status_code, error) = match &result {
            AttemptResult::Status { code, .. } => (Some(code.as_u16() as i16), None),
            AttemptResult::NoResponse { error } | AttemptResult::Unsendable { error } => {
                (None, Some(error.clone()))
            }
        };
        log_attempt(attempt, status_code, error.as_deref(), duration_ms, outcome);

        let record = AttemptRecord {
            notification_id: row.notification_id,
            endpoint_id: row.endpoint_id,
            attempt,
            started_at,
            status_code,
            error,
            duration_ms,
            claimed_window_start: row.retry_window_start,
        };
        let recorded = notifications::record_attempt(&self.pool, &record, outcome).await?;
        if !recorded {
            tracing::warn!(
                attempt,
                "another worker recorded this attempt first after the lease ran out; this result is dropped"
            );
        }
        Ok(())
    }

    /// Signs and POSTs the notification once.
    async fn send(&self, row: &ClaimedNotification, started_at: DateTime<Utc>) -> AttemptResult {
        // The URL was checked at registration, but the policy or the address
        // behind it may have changed since.
        let url: Url = match parse_url(&row.url, self.policy) {
            Ok(url) => url,
            Err(error) => {
                return AttemptResult::NoResponse {
                    error: format!("destination rejected: {error}"),
                };
            }
        };
        let body = match payload_body(
            &row.event_type,
            row.notification_id,
            row.created_at,
            &row.payout,
        ) {
            Ok(body) => body,
            Err(error) => {
                return AttemptResult::Unsendable {
                    error: format!("the stored payout cannot be read: {error}"),
                };
            }
        };
        let keys = match signing_keys(row) {
            Ok(keys) => keys,
            Err(error) => return AttemptResult::Unsendable { error },
        };
        let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();

        let id = notification_id_text(row.notification_id);
        let timestamp = started_at.timestamp();
        let signature = signature_header(&id, timestamp, &body, &key_refs);
        let sent = self
            .http
            .post(url)
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                return AttemptResult::NoResponse {
                    error: self.describe_transport_error(&error),
                };
            }
        };

        let code = response.status();
        let retry_after = retry_after(response.headers());
        // Reading a small body lets the connection be reused. A body that is
        // larger or slower than allowed does not change the outcome.
        let mut read = 0;
        while read < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        AttemptResult::Status { code, retry_after }
    }

    fn describe_transport_error(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            format!(
                "timed out after {} ms",
                self.settings.request_timeout.as_millis()
            )
        } else if error.is_connect() {
            format!("connection failed: {}", error_chain(error))
        } else {
            format!("request failed: {}", error_chain(error))
        }
    }

    /// Decides what an attempt that ended at `now` means for the
    /// notification.
    fn outcome(
        &self,
        row: &ClaimedNotification,
        result: &AttemptResult,
        now: DateTime<Utc>,
    ) -> AttemptOutcome {
        let retry_after = match result {
            AttemptResult::Status { code, .. } if code.is_success() => {
                return AttemptOutcome::Delivered;
            }
            AttemptResult::Status { code, .. } if *code == StatusCode::GONE => {
                return AttemptOutcome::Gone;
            }
            AttemptResult::Unsendable { .. } => return AttemptOutcome::Failed,
            AttemptResult::Status { code, retry_after }
                if *code == StatusCode::TOO_MANY_REQUESTS
                    || *code == StatusCode::SERVICE_UNAVAILABLE =>
            {
                *retry_after
            }
            AttemptResult::Status { .. } | AttemptResult::NoResponse { .. } => None,
        };

        let retry_number = u32::try_from(row.attempts_in_window + 1).unwrap_or(u32::MAX);
        // Retry-After is honoured up to the longest delay the worker waits,
        // so a receiver cannot postpone a notification past its window.
        let delay = retry_after
            .map_or(self.retry_delay(retry_number), |after| {
                after.max(self.retry_delay(retry_number))
            })
            .min(self.settings.max_retry_delay);
        let next = now + delay;
        let window_end = row.retry_window_start + self.settings.retry_window;
        if next > window_end {
            AttemptOutcome::Failed
        } else {
            AttemptOutcome::Retry(next)
        }
    }

    /// Returns the delay before retry `retry_number` (1 for the first retry).
    fn retry_delay(&self, retry_number: u32) -> Duration {
        let skipped = usize::try_from(retry_number.saturating_sub(1)).unwrap_or(usize::MAX);
        ExponentialBuilder::default()
            .with_min_delay(self.settings.first_retry_delay)
            .with_max_delay(self.settings.max_retry_delay)
            .with_factor(2.0)
            .without_max_times()
            .with_jitter()
            .build()
            .nth(skipped)
            .unwrap_or(self.settings.max_retry_delay)
            .min(self.settings.max_retry_delay)
    }
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined {
        tracing::error!(error = %error, "a notification delivery task panicked; its lease will run out and it will be retried");
    }
}

/// Decodes the endpoint's secrets into HMAC keys: the current one first,
/// then the previous one while it still signs.
fn signing_keys(row: &ClaimedNotification) -> Result<Vec<Vec<u8>>, String> {
    let mut keys = Vec::with_capacity(2);
    for secret in std::iter::once(&row.secret).chain(row.previous_secret.as_ref()) {
        // The reason names the problem, never the secret.
        let key = decode_secret(secret)
            .map_err(|reason| format!("the endpoint's stored secret is invalid: {reason}"))?;
        keys.push(key);
    }
    Ok(keys)
}

/// Reads Retry-After in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?.to_utc();
    (date - Utc::now()).to_std().ok()
}

/// Joins an error and its sources, which carry the reason (such as a
/// rejected address) that reqwest's own message leaves out.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn log_attempt(
    attempt: i32,
    status_code: Option<i16>,
    error: Option<&str>,
    duration_ms: i32,
    outcome: AttemptOutcome,
) {
    match outcome {
        AttemptOutcome::Delivered => {
            tracing::info!(attempt, status_code, duration_ms, "notification delivered");
        }
        AttemptOutcome::Retry(next_attempt_at) => {
            tracing::warn!(attempt, status_code, error, duration_ms, %next_attempt_at, "notification not delivered; retrying later");
        }
        AttemptOutcome::Failed => {
            tracing::error!(
                attempt,
                status_code,
                error,
                duration_ms,
                "notification not delivered and not retried any more"
            );
        }
        AttemptOutcome::Gone => {
            tracing::warn!(
                attempt,
                duration_ms,
                "endpoint answered 410 Gone; endpoint and its pending notifications disabled"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(settings: Settings) -> Notifier {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://unused@127.0.0.1:1/unused")
            .expect("lazy pool");
        Notifier::new(pool, AppEnv::Dev, settings).expect("client")
    }

    fn row(attempts_in_window: i32, window_start: DateTime<Utc>) -> ClaimedNotification {
        ClaimedNotification {
            notification_id: uuid::Uuid::new_v4(),
            endpoint_id: uuid::Uuid::new_v4(),
            event_type: "payout.succeeded".to_owned(),
            payout: serde_json::Value::Null,
            created_at: window_start,
            attempts: attempts_in_window,
            attempts_in_window,
            retry_window_start: window_start,
            url: "http://127.0.0.1:9/".to_owned(),
            secret: super::super::generate_secret(),
            previous_secret: None,
            endpoint_active: true,
        }
    }

    fn status(code: u16, retry_after: Option<Duration>) -> AttemptResult {
        AttemptResult::Status {
            code: StatusCode::from_u16(code).expect("valid code"),
            retry_after,
        }
    }

    #[tokio::test]
    async fn retry_delays_grow_and_stay_capped() {
        let settings = Settings::default();
        let notifier = notifier(settings.clone());
        for retry in 1..=40 {
            let base = settings
                .first_retry_delay
                .saturating_mul(2_u32.saturating_pow(retry - 1))
                .min(settings.max_retry_delay);
            let delay = notifier.retry_delay(retry);
            assert!(delay >= base, "retry {retry}: {delay:?} < {base:?}");
            assert!(
                delay <= (base * 2).min(settings.max_retry_delay),
                "retry {retry}: {delay:?}"
            );
        }
    }

    #[tokio::test]
    async fn default_schedule_gives_up_after_about_three_days() {
        let notifier = notifier(Settings::default());
        let start = Utc::now();
        let mut now = start;
        let mut attempts = 0;
        loop {
            let row = row(attempts, start);
            attempts += 1;
            match notifier.outcome(&row, &status(500, None), now) {
                AttemptOutcome::Retry(next) => now = next,
                AttemptOutcome::Failed => break,
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        let elapsed = now - start;
        assert!(
            elapsed <= chrono::Duration::days(3),
            "last retry after {elapsed}"
        );
        assert!(
            elapsed >= chrono::Duration::days(3) - chrono::Duration::hours(6),
            "last retry after {elapsed}"
        );
        assert!((15..=40).contains(&attempts), "{attempts} attempts");
    }

    #[tokio::test]
    async fn outcome_by_status() {
        let notifier = notifier(Settings::default());
        let now = Utc::now();
        let row = row(0, now);
        assert_eq!(
            notifier.outcome(&row, &status(200, None), now),
            AttemptOutcome::Delivered
        );
        assert_eq!(
            notifier.outcome(&row, &status(204, None), now),
            AttemptOutcome::Delivered
        );
        assert_eq!(
            notifier.outcome(&row, &status(410, None), now),
            AttemptOutcome::Gone
        );
        for code in [301, 400, 404, 429, 500, 503] {
            assert!(
                matches!(
                    notifier.outcome(&row, &status(code, None), now),
                    AttemptOutcome::Retry(_)
                ),
                "{code}"
            );
        }
        let unsendable = AttemptResult::Unsendable {
            error: "bad".to_owned(),
        };
        assert_eq!(
            notifier.outcome(&row, &unsendable, now),
            AttemptOutcome::Failed
        );
    }

    #[tokio::test]
    async fn retry_after_capped_at_max_delay() {
        let notifier = notifier(Settings::default());
        let now = Utc::now();
        let row = row(0, now);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            notifier.outcome(&row, &status(429, Some(hour)), now),
            AttemptOutcome::Retry(now + hour)
        );
        assert_eq!(
            notifier.outcome(&row, &status(503, Some(Duration::from_secs(86_400))), now),
            AttemptOutcome::Retry(now + Settings::default().max_retry_delay)
        );
        // Retry-After only matters on 429 and 503.
        match notifier.outcome(&row, &status(500, Some(hour)), now) {
            AttemptOutcome::Retry(next) => assert!(next < now + hour),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "120".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));

        let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        headers.insert(RETRY_AFTER, later.parse().expect("header"));
        let parsed = retry_after(&headers).expect("date parses");
        assert!(parsed <= Duration::from_secs(90), "{parsed:?}");
        assert!(parsed >= Duration::from_secs(80), "{parsed:?}");

        headers.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
    }
}
