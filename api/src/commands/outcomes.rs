//! Applying a provider's report to a payout and its wallet.

use nepxy_ledger::metadata::EventMetadata;
use nepxy_ledger::payout::ReportedAmount;
use nepxy_ledger::{Payout, PayoutCommand, PayoutEvent, PayoutStatus, WalletCommand, ids};
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::{Store, UnitOfWork};
use crate::webhooks::{Report, ReportStatus};

/// Attempts of one report after a concurrent write to the same aggregate.
const MAX_CONFLICT_ATTEMPTS: u32 = 5;

/// Result of applying a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The payout moved to this status.
    Changed(PayoutStatus),
    /// The payout already had the reported status.
    Unchanged(PayoutStatus),
    /// The report states the payout is still in progress, so nothing applies.
    StillPending,
    /// No payout has this id (yet).
    Orphan,
    /// Amount or currency differ from the payout's; recorded, not applied.
    Conflict,
    /// The report requests an illegal transition. It is recorded, not applied.
    TransitionRejected {
        from: PayoutStatus,
        to: PayoutStatus,
    },
}

impl Applied {
    /// The verdict stored on the delivery.
    pub fn verdict(&self) -> &'static str {
        match self {
            Applied::Changed(_) => "applied",
            Applied::Unchanged(_) => "duplicate",
            Applied::StillPending => "pending",
            Applied::Orphan => "orphan",
            Applied::Conflict => "conflict",
            Applied::TransitionRejected { .. } => "transition_rejected",
        }
    }

    /// Whether the report's content took effect (or already had).
    pub fn took_effect(&self) -> bool {
        matches!(
            self,
            Applied::Changed(_) | Applied::Unchanged(_) | Applied::StillPending
        )
    }
}

/// Returns the payout a report is about and the status it reports, or the
/// outcome when there is nothing to apply. A report without a payout id is
/// an orphan, and one that reports the payout in progress changes nothing.
pub fn target(payout_id: Option<Uuid>, report: &Report) -> Result<(Uuid, PayoutStatus), Applied> {
    let Some(payout_id) = payout_id.or_else(|| Uuid::parse_str(&report.external_ref).ok()) else {
        return Err(Applied::Orphan);
    };
    let status = match report.status {
        ReportStatus::Pending => return Err(Applied::StillPending),
        ReportStatus::Succeeded => PayoutStatus::Succeeded,
        ReportStatus::Failed => PayoutStatus::Failed,
        ReportStatus::Reversed => PayoutStatus::Reversed,
    };
    Ok((payout_id, status))
}

/// Runs `attempt` again, up to [`MAX_CONFLICT_ATTEMPTS`] times in all, while
/// it fails because a concurrent writer took one of its event sequences.
pub async fn retry_on_conflict<T, F, Fut>(payout_id: Uuid, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt().await {
            Err(ApiError::WriteConflict { .. }) if attempts < MAX_CONFLICT_ATTEMPTS => {
                tracing::warn!(%payout_id, attempt = attempts, "concurrent write while applying a report; retrying");
            }
            result => return result,
        }
    }
}

/// Applies `report` to payout `payout_id` in one transaction: the payout's
/// new status and the matching wallet settlement, release or refund. With
/// `dry_run` the transaction is rolled back, so nothing changes.
pub async fn apply_report(
    store: &Store,
    payout_id: Option<Uuid>,
    report: &Report,
    metadata: &EventMetadata,
    dry_run: bool,
) -> Result<(Applied, Vec<String>), ApiError> {
    let (payout_id, status) = match target(payout_id, report) {
        Ok(target) => target,
        Err(applied) => return Ok((applied, Vec::new())),
    };
    retry_on_conflict(payout_id, || async {
        let mut unit = store.begin().await?;
        let result = apply_in(&mut unit, payout_id, status, report, metadata).await;
        match result {
            Ok(outcome) if !dry_run && outcome.0 != Applied::Orphan => {
                unit.commit().await?;
                Ok(outcome)
            }
            // Rolled back now, so the payout's lock is free before the
            // response.
            other => {
                super::release(unit).await;
                other
            }
        }
    })
    .await
}

/// Decides the report on the payout and its wallet in `unit`, locking both,
/// and appends the events. The caller commits. Returns the outcome and the
/// types of the events appended.
pub async fn apply_in(
    unit: &mut UnitOfWork,
    payout_id: Uuid,
    status: PayoutStatus,
    report: &Report,
    metadata: &EventMetadata,
) -> Result<(Applied, Vec<String>), ApiError> {
    let payout_key = payout_id.to_string();
    let mut payout = unit.lock_and_load::<Payout>(&payout_key).await?;
    let Some(state) = payout.aggregate.state.clone() else {
        return Ok((Applied::Orphan, Vec::new()));
    };

    let wallet_id = ids::wallet_id(state.client_id, state.money.currency);
    let mut wallet = unit.lock_and_load_wallet(&wallet_id, payout_id).await?;

    let reported = report.currency.as_ref().map(|currency| ReportedAmount {
        amount_minor: report.amount_minor,
        currency: currency.clone(),
    });
    let payout_events = payout.aggregate.decide(PayoutCommand::RecordOutcome {
        status,
        provider_ref: report.provider_ref.clone(),
        failure_code: report.failure_code.clone(),
        webhook_id: metadata.webhook_id.clone(),
        reported,
    })?;

    let (applied, wallet_command) = match payout_events.first() {
        None => (Applied::Unchanged(state.status), None),
        Some(PayoutEvent::ReportConflict { .. }) => (Applied::Conflict, None),
        Some(PayoutEvent::TransitionRejected { from, to, .. }) => (
            Applied::TransitionRejected {
                from: *from,
                to: *to,
            },
            None,
        ),
        Some(PayoutEvent::PayoutSucceeded { .. }) => (
            Applied::Changed(status),
            Some(WalletCommand::Settle {
                payout_id,
                provider: state.provider,
            }),
        ),
        Some(PayoutEvent::PayoutFailed { .. }) => (
            Applied::Changed(status),
            Some(WalletCommand::Release { payout_id }),
        ),
        Some(PayoutEvent::PayoutReversed { .. }) => (
            Applied::Changed(status),
            Some(WalletCommand::Refund {
                payout_id,
                provider: state.provider,
            }),
        ),
        Some(other) => {
            return Err(ApiError::Internal(format!(
                "a report produced the unexpected event {other:?} on payout {payout_id}"
            )));
        }
    };
    let wallet_events = match wallet_command {
        Some(command) => wallet.aggregate.decide(command)?,
        None => Vec::new(),
    };

    let mut event_types: Vec<String> = payout_events
        .iter()
        .map(cqrs_es::DomainEvent::event_type)
        .collect();
    event_types.extend(wallet_events.iter().map(cqrs_es::DomainEvent::event_type));
    unit.append(&mut payout, payout_events, metadata).await?;
    unit.append(&mut wallet, wallet_events, metadata).await?;
    Ok((applied, event_types))
}
