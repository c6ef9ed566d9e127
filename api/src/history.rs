//! State as of a past moment, rebuilt from the events recorded up to it.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use nepxy_ledger::payout::PayoutState;
use nepxy_ledger::{Payout, PayoutEvent, Wallet, WalletEvent, upcast};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::audit;

/// The payout as it was at `as_of`, with the time of its last event then;
/// `None` when it did not exist yet.
pub async fn payout_as_of(
    pool: &PgPool,
    payout_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Option<(PayoutState, DateTime<Utc>)>, ApiError> {
    let rows =
        audit::aggregate_events_until(pool, Payout::TYPE, &payout_id.to_string(), as_of).await?;
    let mut payout = Payout::default();
    let mut updated_at = None;
    for (version, payload, recorded_at) in rows {
        let event: PayoutEvent = upcast::decode(&version, &payload).map_err(|error| {
            ApiError::Internal(format!(
                "stored event of payout {payout_id} is invalid: {error}"
            ))
        })?;
        payout.apply(event);
        updated_at = Some(recorded_at);
    }
    Ok(payout.state.zip(updated_at))
}

/// Available and held per currency of a client at `as_of`.
pub async fn balances_as_of(
    pool: &PgPool,
    client_id: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Vec<(String, i64, i64)>, ApiError> {
    let mut balances = Vec::new();
    for wallet_id in audit::wallet_ids(pool, client_id).await? {
        let rows = audit::aggregate_events_until(pool, Wallet::TYPE, &wallet_id, as_of).await?;
        if rows.is_empty() {
            continue;
        }
        let mut wallet = Wallet::default();
        for (version, payload, _) in rows {
            let event: WalletEvent = upcast::decode(&version, &payload).map_err(|error| {
                ApiError::Internal(format!(
                    "stored event of wallet {wallet_id} is invalid: {error}"
                ))
            })?;
            wallet.apply(event);
        }
        if let Some(currency) = wallet.currency {
            balances.push((
                currency.code().to_owned(),
                wallet.available_minor,
                wallet.held_minor,
            ));
        }
    }
    Ok(balances)
}
