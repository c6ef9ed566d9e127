//! `/sandbox` endpoints for tests: the transactions created at every
//! provider with their create request counts, and a reset.

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use nepxy_ledger::Provider;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Sandbox;
use super::store::{State, Store, Transaction};

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/sandbox/transactions", get(list_transactions))
        .route("/sandbox/transactions/{reference}", get(get_transaction))
        .route("/sandbox/reset", post(reset))
}

/// One provider transaction as the `/sandbox` endpoints show it.
#[derive(Serialize)]
struct TransactionSummary<'a> {
    provider: Provider,
    reference: &'a str,
    /// Create requests received for the reference at this provider,
    /// duplicates and rejected ones included.
    attempts: u32,
    status: State,
    provider_status: &'static str,
    provider_transaction_id: String,
    recipient: &'a str,
    amount: &'a str,
    currency: &'a str,
    /// Callback deliveries that got a 2xx response.
    callbacks_delivered: u32,
    created_at: DateTime<Utc>,
}

impl<'a> TransactionSummary<'a> {
    fn of(store: &Store, transaction: &'a Transaction) -> TransactionSummary<'a> {
        TransactionSummary {
            provider: transaction.provider,
            reference: &transaction.reference,
            attempts: store.attempts(transaction.provider, &transaction.reference),
            status: transaction.state,
            provider_status: transaction.provider_status(),
            provider_transaction_id: transaction.provider_transaction_id(),
            recipient: &transaction.recipient,
            amount: &transaction.amount,
            currency: &transaction.currency,
            callbacks_delivered: transaction.callbacks_delivered,
            created_at: transaction.created_at,
        }
    }
}

/// `GET /sandbox/transactions`: every transaction in creation order.
async fn list_transactions(AxumState(sandbox): AxumState<Sandbox>) -> Response {
    let store = sandbox.store();
    let summaries: Vec<TransactionSummary<'_>> = store
        .transactions()
        .iter()
        .map(|transaction| TransactionSummary::of(&store, transaction))
        .collect();
    (StatusCode::OK, Json(summaries)).into_response()
}

#[derive(Deserialize)]
struct ProviderFilter {
    provider: Option<Provider>,
}

/// `GET /sandbox/transactions/{reference}[?provider=momo|thunes|tmoney]`.
/// Returns 404 with the number of create requests when nothing was created
/// for the reference, and 409 when several providers have it and the query
/// names no provider.
async fn get_transaction(
    AxumState(sandbox): AxumState<Sandbox>,
    Path(reference): Path<String>,
    Query(filter): Query<ProviderFilter>,
) -> Response {
    let store = sandbox.store();
    let matches: Vec<&Transaction> = Provider::ALL
        .into_iter()
        .filter(|provider| filter.provider.is_none_or(|wanted| wanted == *provider))
        .filter_map(|provider| store.transaction(provider, &reference))
        .collect();
    match matches.as_slice() {
        [transaction] => (
            StatusCode::OK,
            Json(TransactionSummary::of(&store, transaction)),
        )
            .into_response(),
        [] => {
            let attempts = match filter.provider {
                Some(provider) => store.attempts(provider, &reference),
                None => store.attempts_at_any_provider(&reference),
            };
            let body = json!({
                "code": "NOT_FOUND",
                "message": format!("no transaction was created for reference {reference}"),
                "attempts": attempts,
            });
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
        several => {
            let providers: Vec<Provider> = several
                .iter()
                .map(|transaction| transaction.provider)
                .collect();
            let body = json!({
                "code": "AMBIGUOUS_REFERENCE",
                "message": format!(
                    "reference {reference} has transactions at several providers; add ?provider="
                ),
                "providers": providers,
            });
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
    }
}

/// `POST /sandbox/reset`: drops every transaction, attempt count and
/// quotation. Issued MoMo tokens stay valid.
async fn reset(AxumState(sandbox): AxumState<Sandbox>) -> Response {
    let dropped = sandbox.store().reset();
    tracing::info!(transactions_dropped = dropped, "sandbox state reset");
    (
        StatusCode::OK,
        Json(json!({ "transactions_dropped": dropped })),
    )
        .into_response()
}
