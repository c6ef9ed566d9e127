//! TMoney disbursement, in the aggregator-style contract of this project
//! (no public operator API exists): `POST /tmoney/v1/disburse` with a Bearer
//! API key, `GET /tmoney/v1/transactions/{reference}`, and signed callbacks
//! to `{callback base URL}/v1/webhooks/tmoney`.
//!
//! Callback body: `external_ref` (the request's reference), `status`
//! (SUCCESS or FAILED), `transaction_id`, `amount` and `currency` as
//! requested, `reason` (the failure code, or null) and `occurred_at`.

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use nepxy_ledger::Provider;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::input::{
    bearer_token, decimal_amount, parse_json, validate_currency, validate_phone, validate_reference,
};
use super::outcome::{
    INTERNAL_PROCESSING_ERROR, NOT_ENOUGH_FUNDS, Outcome, PAYEE_NOT_FOUND, RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE, TOO_MANY_REQUESTS,
};
use super::store::{Details, State, Transaction};
use super::{CreateAnswer, Sandbox};

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/tmoney/v1/disburse", post(disburse))
        .route("/tmoney/v1/transactions/{reference}", get(get_transaction))
}

/// Request fields that the responses and the callback echo.
#[derive(Debug, Clone)]
pub struct DisburseDetails {
    /// The amount exactly as requested, a JSON number or string.
    amount: Box<RawValue>,
    /// The request's payout description.
    description: Option<String>,
}

/// Returns the transaction_id of the transaction with `serial`.
pub fn transaction_id(serial: u64) -> String {
    format!("TM{serial:010}")
}

/// Returns the TMoney status value of a state.
pub fn status_name(state: State) -> &'static str {
    match state {
        State::Created | State::Pending => "PENDING",
        State::Succeeded => "SUCCESS",
        State::Failed => "FAILED",
    }
}

/// Serializes the callback body for the transaction's current state.
pub fn callback_body(transaction: &Transaction) -> Vec<u8> {
    let view = TransactionView::of(transaction);
    let body = CallbackBody {
        external_ref: view.reference,
        status: view.status,
        transaction_id: view.transaction_id,
        amount: view.amount,
        currency: view.currency,
        reason: view.reason,
        occurred_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    serde_json::to_vec(&body).expect("a TMoney callback serializes")
}

#[derive(Deserialize)]
struct DisburseRequest {
    reference: String,
    phone_number: String,
    amount: Box<RawValue>,
    currency: String,
    reason: Option<String>,
}

/// The status response.
#[derive(Serialize)]
struct TransactionView<'a> {
    transaction_id: String,
    reference: &'a str,
    status: &'static str,
    phone_number: &'a str,
    amount: &'a RawValue,
    currency: &'a str,
    /// Failure code, or null.
    reason: Option<&'static str>,
    description: Option<&'a str>,
}

impl<'a> TransactionView<'a> {
    fn of(transaction: &'a Transaction) -> TransactionView<'a> {
        let Details::Tmoney(details) = &transaction.details else {
            panic!(
                "transaction {} is not a TMoney transaction",
                transaction.serial
            );
        };
        TransactionView {
            transaction_id: transaction_id(transaction.serial),
            reference: &transaction.reference,
            status: status_name(transaction.state),
            phone_number: &transaction.recipient,
            amount: &details.amount,
            currency: &transaction.currency,
            reason: (transaction.state == State::Failed).then_some(PAYEE_NOT_FOUND),
            description: details.description.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct CallbackBody<'a> {
    external_ref: &'a str,
    status: &'static str,
    transaction_id: String,
    amount: &'a RawValue,
    currency: &'a str,
    reason: Option<&'static str>,
    occurred_at: String,
}

/// Builds a TMoney error response: `{"code", "message"}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "code": code, "message": message.into() });
    (status, Json(body)).into_response()
}

/// Returns the 401 response when the credentials are missing.
fn reject_unauthorized(headers: &HeaderMap) -> Option<Response> {
    if bearer_token(headers).is_some() {
        return None;
    }
    Some(error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "Authorization must be Bearer with the API key",
    ))
}

/// The validated request with the amount's decimal text.
struct DisburseOrder {
    request: DisburseRequest,
    amount_text: String,
}

fn read_disburse(body: &[u8]) -> Result<DisburseOrder, String> {
    let request: DisburseRequest = parse_json(body)?;
    validate_reference("reference", &request.reference)?;
    validate_phone("phone_number", &request.phone_number, true)?;
    let amount_text = decimal_amount(&request.amount)?;
    validate_currency(&request.currency)?;
    Ok(DisburseOrder {
        request,
        amount_text,
    })
}

/// `POST /tmoney/v1/disburse`. A repeated reference gets 409
/// DUPLICATE_REFERENCE and never a second transaction.
async fn disburse(
    AxumState(sandbox): AxumState<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = reject_unauthorized(&headers) {
        return response;
    }
    let DisburseOrder {
        request,
        amount_text,
    } = match read_disburse(&body) {
        Ok(order) => order,
        Err(message) => return error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message),
    };
    let outcome = Outcome::for_recipient(&request.phone_number);

    let reference = request.reference.clone();
    let build = |serial| Transaction {
        serial,
        provider: Provider::Tmoney,
        reference: request.reference,
        outcome,
        state: State::Pending,
        recipient: request.phone_number,
        amount: amount_text,
        currency: request.currency,
        created_at: Utc::now(),
        callback_url: None,
        callbacks_delivered: 0,
        details: Details::Tmoney(DisburseDetails {
            amount: request.amount,
            description: request.reason,
        }),
    };
    match sandbox
        .create(Provider::Tmoney, &reference, outcome, true, build)
        .await
    {
        CreateAnswer::Accepted(transaction) => {
            let body = json!({
                "transaction_id": transaction_id(transaction.serial),
                "reference": transaction.reference,
                "status": status_name(transaction.state),
            });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        CreateAnswer::Duplicate(existing) => {
            let body = json!({
                "code": "DUPLICATE_REFERENCE",
                "message": format!("reference {reference} already has a transaction"),
                "transaction_id": transaction_id(existing.serial),
            });
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        CreateAnswer::RateLimited => {
            let response = error(
                StatusCode::TOO_MANY_REQUESTS,
                TOO_MANY_REQUESTS,
                format!("rate limit exceeded; retry after {RETRY_AFTER_SECONDS} s"),
            );
            ([(RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())], response).into_response()
        }
        CreateAnswer::AmbiguousError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            INTERNAL_PROCESSING_ERROR,
            "an internal error occurred; the transaction status is unknown",
        ),
        CreateAnswer::NotEnoughFunds => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            NOT_ENOUGH_FUNDS,
            "the disbursement account has insufficient funds",
        ),
        CreateAnswer::HoldExpired | CreateAnswer::Full => error(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVICE_UNAVAILABLE,
            "the service is unavailable",
        ),
    }
}

/// `GET /tmoney/v1/transactions/{reference}`.
async fn get_transaction(
    AxumState(sandbox): AxumState<Sandbox>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = reject_unauthorized(&headers) {
        return response;
    }
    let store = sandbox.store();
    match store.transaction(Provider::Tmoney, &reference) {
        Some(transaction) => {
            (StatusCode::OK, Json(TransactionView::of(transaction))).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no transaction has reference {reference}"),
        ),
    }
}
