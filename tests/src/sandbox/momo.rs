//! MTN MoMo Disbursement API: access token, transfer and transfer status.
//!
//! A transfer request gets 202 with an empty body, and its outcome comes
//! by an unsigned callback to the X-Callback-Url of the request (when given)
//! and by `GET /disbursement/v1_0/transfer/{reference}`. Unlike MTN's own
//! sandbox, any currency and any X-Target-Environment value is accepted,
//! and the X-Reference-Id may be a UUID of any version.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use nepxy_ledger::Provider;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::input::{
    bearer_token, has_basic_credentials, header_text, parse_json, validate_currency,
    validate_decimal, validate_phone,
};
use super::outcome::{
    INTERNAL_PROCESSING_ERROR, NOT_ENOUGH_FUNDS, Outcome, PAYEE_NOT_FOUND, RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE, TOO_MANY_REQUESTS,
};
use super::store::{Details, State, Transaction};
use super::{CreateAnswer, Sandbox};

const SUBSCRIPTION_KEY_HEADER: &str = "ocp-apim-subscription-key";
const REFERENCE_ID_HEADER: &str = "x-reference-id";
const TARGET_ENVIRONMENT_HEADER: &str = "x-target-environment";
const CALLBACK_URL_HEADER: &str = "x-callback-url";

/// Lifetime of an access token, as MoMo issues them.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Added to the serial to give financialTransactionId ten digits.
const FINANCIAL_TRANSACTION_ID_BASE: u64 = 1_000_000_000;

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/disbursement/token/", post(create_token))
        .route("/disbursement/token", post(create_token))
        .route("/disbursement/v1_0/transfer", post(create_transfer))
        .route("/disbursement/v1_0/transfer/{reference}", get(get_transfer))
}

/// Request fields of a transfer that its status echoes. Amount, currency
/// and payee number are in the [`Transaction`].
#[derive(Debug, Clone)]
pub struct TransferDetails {
    pub external_id: String,
    pub party_id_type: String,
    pub payer_message: Option<String>,
    pub payee_note: Option<String>,
}

/// Returns the financialTransactionId of the transaction with `serial`.
pub fn financial_transaction_id(serial: u64) -> String {
    (FINANCIAL_TRANSACTION_ID_BASE + serial).to_string()
}

/// Returns the MoMo status value of a state.
pub fn status_name(state: State) -> &'static str {
    match state {
        State::Created | State::Pending => "PENDING",
        State::Succeeded => "SUCCESSFUL",
        State::Failed => "FAILED",
    }
}

/// Serializes the transfer object, the body of the status response and of
/// the callback.
pub fn transfer_body(transaction: &Transaction) -> Vec<u8> {
    serde_json::to_vec(&TransferObject::of(transaction)).expect("a transfer object serializes")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferRequest {
    amount: String,
    currency: String,
    external_id: String,
    payee: Party,
    payer_message: Option<String>,
    payee_note: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Party {
    party_id_type: String,
    party_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransferObject<'a> {
    amount: &'a str,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    financial_transaction_id: Option<String>,
    external_id: &'a str,
    payee: PartyView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payer_message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payee_note: Option<&'a str>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<ErrorReason>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PartyView<'a> {
    party_id_type: &'a str,
    party_id: &'a str,
}

#[derive(Serialize)]
struct ErrorReason {
    code: &'static str,
    message: &'static str,
}

impl<'a> TransferObject<'a> {
    fn of(transaction: &'a Transaction) -> TransferObject<'a> {
        let Details::Momo(details) = &transaction.details else {
            panic!("transaction {} is not a MoMo transfer", transaction.serial);
        };
        let financial_transaction_id = (transaction.state == State::Succeeded)
            .then(|| financial_transaction_id(transaction.serial));
        let reason = (transaction.state == State::Failed).then_some(ErrorReason {
            code: PAYEE_NOT_FOUND,
            message: "the payee account was not found",
        });
        TransferObject {
            amount: &transaction.amount,
            currency: &transaction.currency,
            financial_transaction_id,
            external_id: &details.external_id,
            payee: PartyView {
                party_id_type: &details.party_id_type,
                party_id: &transaction.recipient,
            },
            payer_message: details.payer_message.as_deref(),
            payee_note: details.payee_note.as_deref(),
            status: status_name(transaction.state),
            reason,
        }
    }
}

/// Builds a MoMo error response: `{"code", "message"}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "code": code, "message": message.into() });
    (status, Json(body)).into_response()
}

fn validation_error(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

/// `POST /disbursement/token/`: Basic auth with the API user and key, plus
/// the subscription key.
async fn create_token(AxumState(sandbox): AxumState<Sandbox>, headers: HeaderMap) -> Response {
    if header_text(&headers, SUBSCRIPTION_KEY_HEADER).is_none() {
        return missing_subscription_key();
    }
    if !has_basic_credentials(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Authorization must be Basic with the API user and API key",
        );
    }
    let token = format!("sandbox-{}", Uuid::new_v4().simple());
    sandbox
        .store()
        .insert_token(token.clone(), Instant::now() + TOKEN_LIFETIME);
    let body = json!({
        "access_token": token,
        "token_type": "access_token",
        "expires_in": TOKEN_LIFETIME.as_secs(),
    });
    (StatusCode::OK, Json(body)).into_response()
}

fn missing_subscription_key() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "the Ocp-Apim-Subscription-Key header is missing",
    )
}

/// Checks the subscription key and the Bearer token of a transfer request.
/// Returns the 401 response when either is missing or invalid.
fn reject_unauthorized(sandbox: &Sandbox, headers: &HeaderMap) -> Option<Response> {
    if header_text(headers, SUBSCRIPTION_KEY_HEADER).is_none() {
        return Some(missing_subscription_key());
    }
    let Some(token) = bearer_token(headers) else {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Authorization must be Bearer with a token from POST /disbursement/token/",
        ));
    };
    if !sandbox.store().token_is_valid(token) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the access token is unknown or expired; request a new one from POST /disbursement/token/",
        ));
    }
    None
}

/// The validated parts of a transfer request.
struct TransferOrder {
    reference: String,
    callback_url: Option<String>,
    request: TransferRequest,
}

fn read_transfer(headers: &HeaderMap, body: &[u8]) -> Result<TransferOrder, String> {
    let reference =
        header_text(headers, REFERENCE_ID_HEADER).ok_or("the X-Reference-Id header is missing")?;
    let reference = Uuid::parse_str(reference)
        .map_err(|_| format!("X-Reference-Id {reference:?} is not a UUID"))?
        .to_string();
    if header_text(headers, TARGET_ENVIRONMENT_HEADER).is_none() {
        return Err("the X-Target-Environment header is missing".to_owned());
    }
    let callback_url = match header_text(headers, CALLBACK_URL_HEADER) {
        None => None,
        Some(text) => {
            Url::parse(text).map_err(|parse_error| {
                format!("X-Callback-Url {text:?} is not an absolute URL: {parse_error}")
            })?;
            Some(text.to_owned())
        }
    };

    let request: TransferRequest = parse_json(body)?;
    validate_decimal(&request.amount)?;
    validate_currency(&request.currency)?;
    if request.external_id.is_empty() {
        return Err("externalId is empty".to_owned());
    }
    if request.payee.party_id_type != "MSISDN" {
        return Err(format!(
            "payee.partyIdType {:?} is not supported; the sandbox accepts MSISDN only",
            request.payee.party_id_type
        ));
    }
    validate_phone("payee.partyId", &request.payee.party_id, false)?;
    // NOTE: the length of payerMessage and payeeNote is not checked, because
    // public sources disagree on MTN's limit (128 or 160 characters).
    Ok(TransferOrder {
        reference,
        callback_url,
        request,
    })
}

/// `POST /disbursement/v1_0/transfer`.
async fn create_transfer(
    AxumState(sandbox): AxumState<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = reject_unauthorized(&sandbox, &headers) {
        return response;
    }
    let order = match read_transfer(&headers, &body) {
        Ok(order) => order,
        Err(message) => return validation_error(message),
    };
    let TransferOrder {
        reference,
        callback_url,
        request,
    } = order;
    let outcome = Outcome::for_recipient(&request.payee.party_id);

    let build = |serial| Transaction {
        serial,
        provider: Provider::Momo,
        reference: reference.clone(),
        outcome,
        state: State::Pending,
        recipient: request.payee.party_id.clone(),
        amount: request.amount.clone(),
        currency: request.currency.clone(),
        created_at: Utc::now(),
        callback_url: callback_url.clone(),
        callbacks_delivered: 0,
        details: Details::Momo(TransferDetails {
            external_id: request.external_id.clone(),
            party_id_type: request.payee.party_id_type.clone(),
            payer_message: request.payer_message.clone(),
            payee_note: request.payee_note.clone(),
        }),
    };
    match sandbox
        .create(Provider::Momo, &reference, outcome, true, build)
        .await
    {
        CreateAnswer::Accepted(_) => StatusCode::ACCEPTED.into_response(),
        CreateAnswer::Duplicate(_) => error(
            StatusCode::CONFLICT,
            "RESOURCE_ALREADY_EXIST",
            format!("a transfer with X-Reference-Id {reference} already exists"),
        ),
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
            "an internal error occurred; the transfer status is unknown",
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

/// `GET /disbursement/v1_0/transfer/{reference}`.
async fn get_transfer(
    AxumState(sandbox): AxumState<Sandbox>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = reject_unauthorized(&sandbox, &headers) {
        return response;
    }
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            format!("no transfer has X-Reference-Id {reference}"),
        )
    };
    let Ok(reference_id) = Uuid::parse_str(&reference) else {
        return not_found();
    };
    let store = sandbox.store();
    match store.transaction(Provider::Momo, &reference_id.to_string()) {
        Some(transaction) => {
            (StatusCode::OK, Json(TransferObject::of(transaction))).into_response()
        }
        None => not_found(),
    }
}
