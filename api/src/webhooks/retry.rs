//! Automatic retries of stored deliveries that could not be applied for a
//! transient reason. A delivery rejected for its signature or body is never
//! retried; one that still cannot be applied after the last attempt becomes
//! `dead`, listed with `GET /v1/webhooks?verdict=dead` and replayable.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;

use super::intake::Intake;
use crate::error::ApiError;
use crate::store::webhooks::{self, RETRYABLE_VERDICTS};

#[derive(Clone, Debug)]
pub struct Settings {
    pub batch_size: i64,
    pub lease: Duration,
    /// Wait between rounds when nothing was due.
    pub idle_wait: Duration,
    /// Wait before the second retry; later waits grow exponentially with
    /// jitter up to `max_wait`.
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// Retries before a delivery is declared dead.
    pub max_attempts: i32,
    /// Age after which a delivery is declared dead whatever its attempts.
    pub max_age: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 32,
            lease: Duration::from_secs(60),
            idle_wait: Duration::from_secs(5),
            first_wait: Duration::from_secs(30),
            max_wait: Duration::from_secs(3600),
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone)]
pub struct RetryWorker {
    pub intake: Intake,
    pub settings: Settings,
}

impl RetryWorker {
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tracing::info!("webhook retry worker started");
        tokio::pin!(shutdown);
        loop {
            let claimed = match self.round().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(error = %error, "webhook retry round failed; trying again after a pause");
                    0
                }
            };
            if claimed > 0 {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.settings.idle_wait) => {}
            }
        }
        tracing::info!("webhook retry worker stopped");
    }

    /// Retries the due deliveries one after another; returns how many.
    pub async fn round(&self) -> Result<usize, ApiError> {
        // Nothing is applied during maintenance, and no retry attempt is
        // spent on it.
        if self.intake.maintenance.is_on() {
            return Ok(0);
        }
        let pool = self.intake.store.pool();
        let due = webhooks::claim_retries(
            pool,
            self.settings.batch_size,
            self.settings.lease.as_secs() as i64,
        )
        .await?;
        for delivery in &due {
            let webhook_id = delivery.webhook_id;
            let attempt = delivery.retry_attempts + 1;
            let (verdict, detail) = match self.intake.retry(webhook_id, attempt).await {
                Ok(result) => result,
                Err(error) => {
                    tracing::warn!(%webhook_id, attempt, error = %error, "webhook retry failed");
                    ("received".to_owned(), Some(error.to_string()))
                }
            };
            let still_due = RETRYABLE_VERDICTS.contains(&verdict.as_str());
            let age = (Utc::now() - delivery.received_at)
                .to_std()
                .unwrap_or_default();
            if still_due && (attempt >= self.settings.max_attempts || age >= self.settings.max_age)
            {
                webhooks::record_retry(
                    pool,
                    webhook_id,
                    attempt,
                    &verdict,
                    detail.as_deref(),
                    None,
                )
                .await?;
                let reason = format!(
                    "gave up after {attempt} retries over {} s; last verdict {verdict}: {}",
                    age.as_secs(),
                    detail.unwrap_or_default()
                );
                tracing::error!(%webhook_id, reason = %reason, "webhook delivery is dead; an operator can replay it");
                webhooks::mark_dead(pool, webhook_id, &reason).await?;
                continue;
            }
            let next = still_due.then(|| Utc::now() + self.wait_before(attempt));
            tracing::info!(%webhook_id, attempt, verdict = %verdict, next_retry_at = ?next, "webhook retried");
            webhooks::record_retry(pool, webhook_id, attempt, &verdict, detail.as_deref(), next)
                .await?;
        }
        Ok(due.len())
    }

    /// Exponential wait with jitter before retry `attempt + 1`.
    fn wait_before(&self, attempt: i32) -> Duration {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.settings.first_wait)
            .with_max_delay(self.settings.max_wait)
            .with_max_times(attempt.max(1) as usize)
            .with_jitter()
            .build();
        delays
            .nth(attempt.max(1) as usize - 1)
            .unwrap_or(self.settings.max_wait)
    }
}
