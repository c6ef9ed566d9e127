//! The dispatcher: sends accepted payouts to their provider and polls
//! submitted ones until their status is final.
//!
//! A payout goes through recovery points, each recorded before the next
//! starts: funds reserved (when the payout was accepted), submitted to the
//! provider (PayoutSubmitted), finished (succeeded or failed). Work comes
//! from `dispatch_queue`, an outbox written with the payout's first event.
//! A dispatcher that dies mid-payout leaves its lease to run out, and the
//! next one submits again under the same provider reference, which the
//! provider answers with the existing transfer instead of a second one.

pub mod switches;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{SubsecRound, Utc};
use nepxy_ledger::metadata::{Actor, EventMetadata, Source};
use nepxy_ledger::payout::ProviderAttempt;
use nepxy_ledger::{Currency, Msisdn, Provider};
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::commands::dispatch::record_attempts;
use crate::commands::outcomes::apply_report;
use crate::error::ApiError;
use crate::providers::{PayoutOrder, PayoutProvider, ProviderError, TransferState};
use crate::store::Store;
use crate::store::dispatch::{self, QueueRow};
use crate::webhooks::{Report, ReportStatus, momo};
pub use switches::ProviderSwitches;

/// Tuning of the dispatcher; the defaults suit production.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Payouts claimed per round.
    pub batch_size: i64,
    /// How long a claimed payout stays with one dispatcher.
    pub lease: Duration,
    /// Wait between rounds when nothing was due.
    pub idle_wait: Duration,
    /// First status poll of a submitted payout; doubles up to `max_poll_wait`.
    pub first_poll_wait: Duration,
    pub max_poll_wait: Duration,
    /// Calls per submission round: the first and its retries on transient
    /// failures.
    pub max_calls: usize,
    /// Longest time spent retrying within one round.
    pub max_retry_time: Duration,
    /// Wait before a payout whose round failed is tried again; doubles per
    /// failed round up to `max_requeue_wait`.
    pub requeue_wait: Duration,
    pub max_requeue_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 16,
            lease: Duration::from_secs(120),
            idle_wait: Duration::from_millis(500),
            first_poll_wait: Duration::from_secs(30),
            max_poll_wait: Duration::from_secs(600),
            max_calls: 4,
            max_retry_time: Duration::from_secs(30),
            requeue_wait: Duration::from_secs(5),
            max_requeue_wait: Duration::from_secs(300),
        }
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    pub store: Store,
    pub providers: BTreeMap<Provider, Arc<dyn PayoutProvider>>,
    pub switches: ProviderSwitches,
    /// Key of the MoMo callback tokens.
    pub callback_secret: Option<Vec<u8>>,
    pub settings: Settings,
    /// Woken when a payout is accepted, so it is sent without waiting for
    /// the next round.
    pub wake: Arc<Notify>,
}

/// The result of one round of calls for a payout.
struct Round {
    attempts: Vec<ProviderAttempt>,
    result: Result<TransferState, ProviderError>,
}

impl Dispatcher {
    /// Runs rounds until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tracing::info!(providers = ?self.providers.keys().collect::<Vec<_>>(), "dispatcher started");
        let unconfigured: Vec<Provider> = self.unconfigured().collect();
        if !unconfigured.is_empty() {
            tracing::warn!(providers = ?unconfigured, "providers not configured, so their payouts wait in the queue until a dispatcher that has them runs");
        }
        tokio::pin!(shutdown);
        loop {
            let claimed = match self.round().await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(error = %error, "dispatcher round failed; retrying after a pause");
                    0
                }
            };
            if claimed > 0 {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.idle_wait) => {}
            }
        }
        tracing::info!("dispatcher stopped");
    }

    /// Returns the providers that have no settings in this process.
    fn unconfigured(&self) -> impl Iterator<Item = Provider> + '_ {
        Provider::ALL
            .into_iter()
            .filter(|provider| !self.providers.contains_key(provider))
    }

    /// Claims the due payouts and handles them concurrently. Returns how
    /// many were claimed.
    pub async fn round(&self) -> Result<usize, ApiError> {
        // Payouts of a provider that is switched off or not configured here
        // stay in the queue unleased, so each round costs them nothing.
        let skipped: Vec<String> = self
            .switches
            .disabled()
            .into_iter()
            .chain(self.unconfigured())
            .map(|provider| provider.name().to_owned())
            .collect();
        let rows = dispatch::claim(
            self.store.pool(),
            self.settings.batch_size,
            self.settings.lease.as_secs() as i64,
            &skipped,
        )
        .await?;
        let claimed = rows.len();
        let mut tasks = tokio::task::JoinSet::new();
        for row in rows {
            let dispatcher = self.clone();
            let payout_id = row.payout_id;
            let span = tracing::info_span!("dispatch", %payout_id, provider = %row.provider);
            tasks.spawn(
                async move {
                    if let Err(error) = dispatcher.handle(row).await {
                        tracing::error!(%payout_id, error = %error, "dispatching a payout failed; its lease will expire and it will be retried");
                    }
                }
                .instrument(span),
            );
        }
        while tasks.join_next().await.is_some() {}
        Ok(claimed)
    }

    async fn handle(&self, row: QueueRow) -> Result<(), ApiError> {
        let provider: Provider = row.provider.parse().map_err(|_| {
            ApiError::Internal(format!(
                "queue row of {} has unknown provider",
                row.payout_id
            ))
        })?;
        // round() claims only rows of configured providers.
        let client = self.providers.get(&provider).cloned().ok_or_else(|| {
            ApiError::Internal(format!(
                "queue row of {} was claimed for provider {provider}, which is not configured",
                row.payout_id
            ))
        })?;
        match row.state.as_str() {
            "ready" => self.submit(&row, provider, client.as_ref()).await,
            "submitted" => self.poll(&row, provider, client.as_ref()).await,
            other => Err(ApiError::Internal(format!(
                "queue row in unexpected state {other}"
            ))),
        }
    }

    fn metadata(&self) -> EventMetadata {
        EventMetadata {
            request_id: None,
            actor: Some(Actor {
                subject: "dispatcher".to_owned(),
                role: "system".to_owned(),
            }),
            source: Source::Dispatcher,
            idempotency_key: None,
            webhook_id: None,
            reason: None,
            recorded_at: Utc::now().trunc_subsecs(6),
        }
    }

    async fn order(&self, payout_id: Uuid) -> Result<Option<PayoutOrder>, ApiError> {
        let Some(row) = nepxy_projections::queries::payout(self.store.pool(), payout_id).await?
        else {
            return Ok(None);
        };
        let currency: Currency = row.currency.parse().map_err(|_| {
            ApiError::Internal(format!("payout {payout_id} has an unknown currency"))
        })?;
        let msisdn = Msisdn::parse(&row.msisdn)
            .map_err(|_| ApiError::Internal(format!("payout {payout_id} has an invalid MSISDN")))?;
        let callback_token = self
            .callback_secret
            .as_deref()
            .map(|secret| momo::callback_token(secret, payout_id))
            .unwrap_or_default();
        Ok(Some(PayoutOrder {
            payout_id,
            amount_minor: row.amount_minor,
            currency,
            msisdn,
            recipient_name: row.recipient_name,
            reference: row.reference,
            callback_token,
        }))
    }

    async fn submit(
        &self,
        row: &QueueRow,
        provider: Provider,
        client: &dyn PayoutProvider,
    ) -> Result<(), ApiError> {
        let payout_id = row.payout_id;
        let Some(order) = self.order(payout_id).await? else {
            return Err(ApiError::Internal(format!(
                "payout {payout_id} is queued but not in the read model"
            )));
        };
        if provider == Provider::Momo && order.callback_token.is_empty() {
            tracing::error!(%payout_id, "MOMO_CALLBACK_SECRET is not set; MoMo payouts wait");
            let next = Utc::now() + self.settings.max_requeue_wait;
            dispatch::reschedule(
                self.store.pool(),
                payout_id,
                row.attempts,
                next,
                Some("MOMO_CALLBACK_SECRET is not set"),
            )
            .await?;
            return Ok(());
        }

        tracing::info!(%payout_id, %provider, msisdn = %order.msisdn.masked(), attempt = row.attempts + 1, "submitting payout");
        let round = self
            .submit_with_retries(row.attempts as u32, client, &order)
            .await;
        let attempts_made = row.attempts + round.attempts.len() as i32;
        let metadata = self.metadata();

        match round.result {
            Ok(TransferState::Pending { provider_ref }) => {
                record_attempts(
                    &self.store,
                    payout_id,
                    round.attempts,
                    Some(provider_ref),
                    &metadata,
                )
                .await?;
                let next = Utc::now() + self.settings.first_poll_wait;
                dispatch::reschedule(self.store.pool(), payout_id, attempts_made, next, None)
                    .await?;
                tracing::info!(%payout_id, "payout submitted");
            }
            Ok(TransferState::Succeeded { provider_ref }) => {
                record_attempts(
                    &self.store,
                    payout_id,
                    round.attempts,
                    Some(provider_ref.clone()),
                    &metadata,
                )
                .await?;
                self.finish(
                    payout_id,
                    provider,
                    ReportStatus::Succeeded,
                    provider_ref,
                    None,
                )
                .await?;
            }
            Ok(TransferState::Failed { code }) => {
                record_attempts(&self.store, payout_id, round.attempts, None, &metadata).await?;
                self.finish(payout_id, provider, ReportStatus::Failed, None, Some(code))
                    .await?;
            }
            Ok(TransferState::NotFound) | Err(_) => {
                let reason = match &round.result {
                    Err(error) => error.to_string(),
                    _ => "the provider has no transfer yet after an ambiguous answer".to_owned(),
                };
                record_attempts(&self.store, payout_id, round.attempts, None, &metadata).await?;
                let wait = self.requeue_wait(attempts_made, &round.result);
                tracing::warn!(%payout_id, reason = %reason, wait_ms = wait.as_millis() as u64, "payout not submitted; trying again later");
                dispatch::reschedule(
                    self.store.pool(),
                    payout_id,
                    attempts_made,
                    Utc::now() + wait,
                    Some(&reason),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Asks the provider for a submitted payout's status.
    async fn poll(
        &self,
        row: &QueueRow,
        provider: Provider,
        client: &dyn PayoutProvider,
    ) -> Result<(), ApiError> {
        let payout_id = row.payout_id;
        let attempts_made = row.attempts + 1;
        match client.status(payout_id).await {
            Ok(TransferState::Succeeded { provider_ref }) => {
                self.finish(
                    payout_id,
                    provider,
                    ReportStatus::Succeeded,
                    provider_ref,
                    None,
                )
                .await
            }
            Ok(TransferState::Failed { code }) => {
                self.finish(payout_id, provider, ReportStatus::Failed, None, Some(code))
                    .await
            }
            Ok(TransferState::NotFound) => {
                tracing::warn!(%payout_id, "provider has no transfer for a submitted payout; submitting it again");
                dispatch::resubmit(self.store.pool(), payout_id).await?;
                Ok(())
            }
            Ok(TransferState::Pending { .. }) | Err(_) => {
                let polls = attempts_made.max(1) as u32;
                let wait = self
                    .settings
                    .first_poll_wait
                    .saturating_mul(2_u32.saturating_pow(polls.min(16)))
                    .min(self.settings.max_poll_wait);
                dispatch::reschedule(
                    self.store.pool(),
                    payout_id,
                    attempts_made,
                    Utc::now() + wait,
                    None,
                )
                .await?;
                Ok(())
            }
        }
    }

    /// Applies a final status the provider gave synchronously or to a poll,
    /// through the same path as a webhook report.
    async fn finish(
        &self,
        payout_id: Uuid,
        provider: Provider,
        status: ReportStatus,
        provider_ref: Option<String>,
        failure_code: Option<String>,
    ) -> Result<(), ApiError> {
        let report = Report {
            provider,
            external_ref: payout_id.to_string(),
            provider_ref,
            status,
            raw_status: "dispatcher".to_owned(),
            failure_code,
            amount_minor: None,
            currency: None,
            occurred_at: None,
        };
        let (applied, _) = apply_report(
            &self.store,
            Some(payout_id),
            &report,
            &self.metadata(),
            false,
        )
        .await?;
        tracing::info!(%payout_id, verdict = applied.verdict(), "payout finished by the dispatcher");
        Ok(())
    }

    /// Submits the payout, retrying transient failures with exponential
    /// backoff and jitter, bounded in calls and time and honouring
    /// Retry-After. Other failures end the round.
    async fn submit_with_retries(
        &self,
        attempts_before: u32,
        client: &dyn PayoutProvider,
        order: &PayoutOrder,
    ) -> Round {
        let payout_id = order.payout_id;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.settings.max_calls.saturating_sub(1))
            .with_total_delay(Some(self.settings.max_retry_time))
            .with_jitter()
            .build();
        let mut attempts = Vec::new();
        let mut delay = Duration::ZERO;
        loop {
            // The adapters resolve an ambiguous answer with a status lookup
            // themselves; Ambiguous here means that lookup failed too.
            let result = client.submit(order).await;
            let outcome = outcome_label(&result);
            crate::prometheus::provider_attempt(client.provider().name(), outcome);
            attempts.push(ProviderAttempt {
                attempt: attempts_before + attempts.len() as u32 + 1,
                outcome: outcome.to_owned(),
                delay_ms: delay.as_millis() as u64,
                detail: result.as_ref().err().map(ToString::to_string),
            });
            let Err(ProviderError::Transient {
                reason,
                retry_after,
            }) = &result
            else {
                return Round { attempts, result };
            };
            let Some(next) = delays.next() else {
                return Round { attempts, result };
            };
            delay = retry_after.map_or(next, |after| after.max(next));
            tracing::warn!(%payout_id, reason = %reason, delay_ms = delay.as_millis() as u64, "provider call failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn requeue_wait(
        &self,
        attempts_made: i32,
        result: &Result<TransferState, ProviderError>,
    ) -> Duration {
        if let Err(ProviderError::Refused { .. }) = result {
            return self.settings.max_requeue_wait;
        }
        let rounds = (attempts_made.max(1) as u32).min(16);
        self.settings
            .requeue_wait
            .saturating_mul(2_u32.saturating_pow(rounds - 1))
            .min(self.settings.max_requeue_wait)
    }
}

fn outcome_label(result: &Result<TransferState, ProviderError>) -> &'static str {
    match result {
        Ok(TransferState::Pending { .. }) => "accepted",
        Ok(TransferState::Succeeded { .. }) => "succeeded",
        Ok(TransferState::Failed { .. }) => "failed",
        Ok(TransferState::NotFound) => "not_found",
        Err(ProviderError::Transient { .. }) => "transient",
        Err(ProviderError::Ambiguous { .. }) => "ambiguous",
        Err(ProviderError::Refused { .. }) => "refused",
    }
}
