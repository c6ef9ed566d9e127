//! Applying a provider's report to a payout and its wallet.

use nepxy_ledger::metadata::EventMetadata;
use nepxy_ledger::payout::ReportedAmount;
use nepxy_ledger::{Payout, PayoutCommand, PayoutEvent, PayoutStatus, WalletCommand, ids};
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::Store;
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
    let Some(payout_id) = payout_id.or_else(|| Uuid::parse_str(&report.external_ref).ok()) else {
        return Ok((Applied::Orphan, Vec::new()));
    };
    let status = match report.status {
        ReportStatus::Pending => return Ok((Applied::StillPending, Vec::new())),
        ReportStatus::Succeeded => PayoutStatus::Succeeded,
        ReportStatus::Failed => PayoutStatus::Failed,
        ReportStatus::Reversed => PayoutStatus::Reversed,
    };

    let mut attempt = 0;
    loop {
        attempt += 1;
        match apply_once(store, payout_id, status, report, metadata, dry_run).await {
            Err(ApiError::WriteConflict { .. }) if attempt < MAX_CONFLICT_ATTEMPTS => {
                tracing::warn!(%payout_id, attempt, "concurrent write while applying a report; retrying");
            }
            result => return result,
        }
    }
}

async fn apply_once(
    store: &Store,
    payout_id: Uuid,
    status: PayoutStatus,
    report: &Report,
    metadata: &EventMetadata,
    dry_run: bool,
) -> Result<(Applied, Vec<String>), ApiError> {
    let payout_key = payout_id.to_string();
    let mut unit = store.begin().await?;
    let mut payout = unit.lock_and_load::<Payout>(&payout_key).await?;
    let Some(state) = payout.aggregate.state.clone() else {
        // Rolled back now, so the payout's lock is free before the response.
        super::release(unit).await;
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
    if dry_run {
        super::release(unit).await;
        return Ok((applied, event_types));
    }

    unit.append(&mut payout, payout_events, metadata).await?;
    unit.append(&mut wallet, wallet_events, metadata).await?;
    unit.commit().await?;
    Ok((applied, event_types))
}
