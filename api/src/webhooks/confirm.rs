//! Confirmation of unsigned MTN MoMo callbacks with MoMo's transfer status
//! endpoint, `GET /disbursement/v1_0/transfer/{reference}`.

use std::future::Future;
use std::pin::Pin;

use uuid::Uuid;

use super::ReportStatus;

/// Why the status could not be confirmed; the delivery is kept for a replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ReportStatus, LookupError>> + Send + 'a>>;

/// Asks MoMo for the current status of the transfer whose X-Reference-Id is
/// the payout id.
pub trait TransferStatusLookup: Send + Sync {
    fn transfer_status(&self, payout_id: Uuid) -> LookupFuture<'_>;
}

/// The lookup used until a MoMo client is configured: every confirmation
/// fails, so MoMo callbacks are stored as unconfirmed and applied by a replay.
// TODO: replace with the HTTP client of the MoMo adapter once payouts are
// dispatched to providers.
pub struct NotConfigured;

impl TransferStatusLookup for NotConfigured {
    fn transfer_status(&self, _payout_id: Uuid) -> LookupFuture<'_> {
        Box::pin(async {
            Err(LookupError(
                "the MTN MoMo status endpoint is not configured".to_owned(),
            ))
        })
    }
}

/// Confirms MoMo callbacks with the MoMo payout adapter's status call.
pub struct ProviderLookup(pub std::sync::Arc<dyn crate::providers::PayoutProvider>);

impl TransferStatusLookup for ProviderLookup {
    fn transfer_status(&self, payout_id: Uuid) -> LookupFuture<'_> {
        Box::pin(async move {
            use crate::providers::TransferState;
            match self.0.status(payout_id).await {
                Ok(TransferState::Pending { .. }) => Ok(ReportStatus::Pending),
                Ok(TransferState::Succeeded { .. }) => Ok(ReportStatus::Succeeded),
                Ok(TransferState::Failed { .. }) => Ok(ReportStatus::Failed),
                Ok(TransferState::NotFound) => Err(LookupError(format!(
                    "the provider has no transfer for payout {payout_id}"
                ))),
                Err(error) => Err(LookupError(error.to_string())),
            }
        })
    }
}
