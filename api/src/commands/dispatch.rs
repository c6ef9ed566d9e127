//! Recording the dispatcher's calls to providers on the payout.

use nepxy_ledger::metadata::EventMetadata;
use nepxy_ledger::payout::ProviderAttempt;
use nepxy_ledger::{Payout, PayoutCommand};
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::Store;

/// Appends one ProviderAttempted event per call and, when the provider
/// accepted the payout, PayoutSubmitted; all in one transaction.
pub async fn record_attempts(
    store: &Store,
    payout_id: Uuid,
    attempts: Vec<ProviderAttempt>,
    submitted: Option<Option<String>>,
    metadata: &EventMetadata,
) -> Result<(), ApiError> {
    let payout_key = payout_id.to_string();
    let mut unit = store.begin().await?;
    let mut payout = unit.lock_and_load::<Payout>(&payout_key).await?;

    let mut events = Vec::new();
    for attempt in attempts {
        events.extend(
            payout
                .aggregate
                .decide(PayoutCommand::RecordAttempt(attempt))?,
        );
    }
    if let Some(provider_ref) = submitted {
        // Attempts never change the status, so deciding on the loaded state
        // gives the same answer as after them.
        events.extend(
            payout
                .aggregate
                .decide(PayoutCommand::MarkSubmitted { provider_ref })?,
        );
    }
    unit.append(&mut payout, events, metadata).await?;
    unit.commit().await?;
    Ok(())
}
