//! The payout command: reserve funds on the wallet and create the payout, in
//! one transaction.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use nepxy_ledger::metadata::Source;
use nepxy_ledger::payout::{PayoutState, Recipient};
use nepxy_ledger::{Money, Payout, PayoutCommand, Provider, WalletCommand, ids};
use serde_json::{Value, json};

use super::{IdempotentRequest, Outcome, run_idempotent};
use crate::dispatch::ProviderSwitches;
use crate::error::ApiError;
use crate::store::{LoadPlan, Store};

/// A validated payout request.
pub struct NewPayout {
    pub money: Money,
    pub provider: Provider,
    pub recipient: Recipient,
    pub reference: Option<String>,
}

pub async fn request_payout(
    store: &Store,
    switches: &ProviderSwitches,
    request: &IdempotentRequest<'_>,
    payout: NewPayout,
) -> Result<Outcome, ApiError> {
    let client_id = request.principal.client_id;
    let payout_id = ids::payout_id(client_id, request.key);
    let wallet_id = ids::wallet_id(client_id, payout.money.currency);
    let payout_key = payout_id.to_string();
    tracing::Span::current().record("payout_id", tracing::field::display(payout_id));

    let aggregates = [
        ("Payout", payout_key.as_str()),
        ("Wallet", wallet_id.as_str()),
    ];
    let plan = LoadPlan::lock_and_load(&aggregates).with_wallet_record(&wallet_id, payout_id);
    let payout = &payout;
    run_idempotent(
        store,
        request,
        &plan,
        move |mut unit, mut loaded| async move {
            let result = async {
                // Checked after the stored-answer lookup, so an earlier accepted
                // request still replays while its provider is off.
                if switches.is_disabled(payout.provider) {
                    return Err(ApiError::ProviderDisabled {
                        provider: payout.provider,
                    });
                }
                let mut payout_aggregate = loaded.take::<Payout>(0)?;
                let mut wallet = loaded.take_wallet(1)?;
                let metadata = request.metadata(Source::Api);

                let reserve = wallet.aggregate.decide(WalletCommand::Reserve {
                    client_id,
                    currency: payout.money.currency,
                    payout_id,
                    amount_minor: payout.money.amount_minor,
                })?;
                let requested = payout_aggregate.aggregate.decide(PayoutCommand::Request {
                    payout_id,
                    client_id,
                    money: payout.money,
                    provider: payout.provider,
                    recipient: payout.recipient.clone(),
                    reference: payout.reference.clone(),
                    requested_at: metadata.recorded_at,
                })?;

                unit.append(&mut wallet, reserve, &metadata).await?;
                let records = unit
                    .append(&mut payout_aggregate, requested, &metadata)
                    .await?;
                let updated_at = records.last().map(|record| record.recorded_at);

                let state = payout_aggregate.aggregate.state.as_ref().ok_or_else(|| {
                    ApiError::Internal(format!("payout {payout_id} has no state after its request"))
                })?;
                tracing::info!(
                    amount_minor = payout.money.amount_minor,
                    currency = %payout.money.currency,
                    provider = %payout.provider,
                    msisdn = %payout.recipient.msisdn.masked(),
                    "payout accepted"
                );
                let body = payout_json(state, updated_at.unwrap_or(state.requested_at));
                Ok((StatusCode::CREATED, body))
            }
            .await;
            (unit, result)
        },
    )
    .await
}

/// The payout as the API shows it; the read model gives the same shape.
pub fn payout_json(state: &PayoutState, updated_at: DateTime<Utc>) -> Value {
    json!({
        "id": state.payout_id,
        "client_id": state.client_id,
        "status": state.status.as_str(),
        "amount": state.money.amount_minor,
        "currency": state.money.currency.code(),
        "provider": state.provider.name(),
        "recipient": {
            "msisdn": state.recipient.msisdn.as_str(),
            "name": state.recipient.name,
            "country_code": state.recipient.msisdn.country_code(),
        },
        "reference": state.reference,
        "provider_ref": state.provider_ref,
        "failure_code": state.failure_code,
        "created_at": state.requested_at,
        "updated_at": updated_at,
    })
}

/// The read-model row in the same shape as [`payout_json`].
pub fn payout_row_json(row: &nepxy_projections::queries::PayoutRow) -> Value {
    json!({
        "id": row.payout_id,
        "client_id": row.client_id,
        "status": row.status,
        "amount": row.amount_minor,
        "currency": row.currency,
        "provider": row.provider,
        "recipient": {
            "msisdn": row.msisdn,
            "name": row.recipient_name,
            "country_code": row.country_code,
        },
        "reference": row.reference,
        "provider_ref": row.provider_ref,
        "failure_code": row.failure_code,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}
