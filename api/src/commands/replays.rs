//! Records a webhook replay: the `webhook_replays` row and a
//! `DeliveryReplayed` event, in one transaction.

use nepxy_ledger::metadata::EventMetadata;
use nepxy_ledger::webhook_delivery::{
    Replay, WebhookDelivery, WebhookDeliveryCommand, WebhookDeliveryError,
};

use crate::error::ApiError;
use crate::store::Store;
use crate::store::webhooks::{self, NewReplay};

/// Stores who replayed a delivery, why and with what verdict, as a row for
/// the operator listings and as an event for auditors.
pub async fn record(
    store: &Store,
    provider: &str,
    replay: &NewReplay<'_>,
    metadata: &EventMetadata,
) -> Result<(), ApiError> {
    let mut unit = store.begin().await?;
    let replay_id = webhooks::record_replay(unit.connection().await?, replay).await?;
    let id = replay.webhook_id.to_string();
    let mut delivery = unit.lock_and_load::<WebhookDelivery>(&id).await?;
    let events = delivery
        .aggregate
        .decide(WebhookDeliveryCommand::RecordReplay(Replay {
            webhook_id: replay.webhook_id,
            replay_id,
            provider: provider.to_owned(),
            dry_run: replay.dry_run,
            verdict: replay.verdict.to_owned(),
            detail: replay.detail.map(str::to_owned),
        }))?;
    unit.append(&mut delivery, events, metadata).await?;
    unit.commit().await?;
    Ok(())
}

impl From<WebhookDeliveryError> for ApiError {
    fn from(error: WebhookDeliveryError) -> Self {
        ApiError::Internal(error.to_string())
    }
}
