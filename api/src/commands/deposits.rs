//! The deposit command: fund a client's wallet from outside.

use axum::http::StatusCode;
use nepxy_ledger::metadata::Source;
use nepxy_ledger::{Money, WalletCommand, ids};
use serde_json::json;
use uuid::Uuid;

use super::{IdempotentRequest, Outcome, run_idempotent};
use crate::error::ApiError;
use crate::store::{LoadPlan, Store};

pub async fn deposit(
    store: &Store,
    request: &IdempotentRequest<'_>,
    client_id: Uuid,
    money: Money,
    reason: Option<String>,
) -> Result<Outcome, ApiError> {
    let deposit_id = ids::deposit_id(request.principal.client_id, request.key);
    let wallet_id = ids::wallet_id(client_id, money.currency);

    let aggregates = [("Wallet", wallet_id.as_str())];
    let plan = LoadPlan::lock_and_load(&aggregates).with_wallet_record(&wallet_id, deposit_id);
    let reason = &reason;
    run_idempotent(
        store,
        request,
        &plan,
        move |mut unit, mut loaded| async move {
            let result = async {
                let mut wallet = loaded.take_wallet(0)?;
                let events = wallet.aggregate.decide(WalletCommand::Deposit {
                    client_id,
                    currency: money.currency,
                    deposit_id,
                    amount_minor: money.amount_minor,
                })?;
                let mut metadata = request.metadata(Source::Admin);
                metadata.reason.clone_from(reason);
                unit.append(&mut wallet, events, &metadata).await?;
                tracing::info!(
                    %deposit_id,
                    %client_id,
                    amount_minor = money.amount_minor,
                    currency = %money.currency,
                    "deposit recorded"
                );
                Ok((
                    StatusCode::CREATED,
                    json!({
                        "deposit_id": deposit_id,
                        "client_id": client_id,
                        "amount": money.amount_minor,
                        "currency": money.currency.code(),
                        "balance": {
                            "currency": money.currency.code(),
                            "available": wallet.aggregate.available_minor,
                            "held": wallet.aggregate.held_minor,
                        },
                    }),
                ))
            }
            .await;
            (unit, result)
        },
    )
    .await
}
