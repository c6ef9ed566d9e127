//! Thunes Money Transfer API v2: quotation, transaction, confirmation and
//! status.
//!
//! A transaction is created with status 10000 (class 1) and confirmed to
//! 20000 (class 2). After the callback delay it ends as 70000 COMPLETED
//! (class 7), or as 90201 (class 9) for `...01`. The sandbox applies an
//! exchange rate of 1 and no fee, so a quotation's source and destination
//! amounts are equal when only one is given. Amounts and the request's
//! sender, beneficiary and credit party objects are echoed byte for byte.

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use nepxy_ledger::Provider;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::input::{
    decimal_amount, has_basic_credentials, is_object, parse_json, validate_currency,
    validate_phone, validate_reference,
};
use super::outcome::{
    INTERNAL_PROCESSING_ERROR, NOT_ENOUGH_FUNDS, Outcome, RETRY_AFTER_SECONDS, SERVICE_UNAVAILABLE,
    TOO_MANY_REQUESTS,
};
use super::store::{Details, Quotation, QuotationInsert, State, Transaction};
use super::{CreateAnswer, Sandbox};

/// Error code and message of a duplicate external_id, as third-party Thunes
/// integrations report them. NOTE: Thunes's public docs do not confirm the
/// code, and HTTP 400 is the sandbox's choice of status.
const EXTERNAL_ID_ALREADY_USED: &str = "1007001";
const EXTERNAL_ID_ALREADY_USED_MESSAGE: &str = "External ID already used";
/// Prefix of the path segments that name an object by its external_id.
const EXTERNAL_ID_PREFIX: &str = "ext-";
/// Validity of quotations and of unconfirmed transactions.
const EXPIRATION: TimeDelta = TimeDelta::days(1);

const MODES: [&str; 2] = ["SOURCE_AMOUNT", "DESTINATION_AMOUNT"];
const TRANSACTION_TYPES: [&str; 4] = ["C2C", "B2C", "B2B", "C2B"];

pub(super) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/v2/money-transfer/quotations", post(create_quotation))
        .route(
            "/v2/money-transfer/quotations/{quotation}",
            get(get_quotation),
        )
        .route(
            "/v2/money-transfer/quotations/{quotation}/transactions",
            post(create_transaction),
        )
        .route(
            "/v2/money-transfer/transactions/{transaction}",
            get(get_transaction),
        )
        .route(
            "/v2/money-transfer/transactions/{transaction}/confirm",
            post(confirm_transaction),
        )
}

/// Status fields of a Thunes transaction.
pub struct ThunesStatus {
    pub code: &'static str,
    pub message: &'static str,
    pub class: &'static str,
    pub class_message: &'static str,
}

/// Returns the Thunes status of a state.
pub fn status_of(state: State) -> ThunesStatus {
    let (code, message, class, class_message) = match state {
        State::Created => ("10000", "CREATED", "1", "CREATED"),
        State::Pending => ("20000", "CONFIRMED", "2", "CONFIRMED"),
        State::Succeeded => ("70000", "COMPLETED", "7", "COMPLETED"),
        State::Failed => ("90201", "DECLINED-BARRED-BENEFICIARY", "9", "DECLINED"),
    };
    ThunesStatus {
        code,
        message,
        class,
        class_message,
    }
}

/// Serializes the transaction object, the body of the transaction
/// endpoints and of the callback.
pub fn transaction_body(transaction: &Transaction) -> Vec<u8> {
    serde_json::to_vec(&TransactionObject::of(transaction))
        .expect("a transaction object serializes")
}

/// Request fields of a quotation that its transactions echo.
#[derive(Debug, Clone)]
pub struct QuotationDetails {
    payer_id: Box<RawValue>,
    mode: String,
    transaction_type: String,
    source: Box<RawValue>,
    source_currency: String,
    destination_amount: Box<RawValue>,
    destination_amount_text: String,
    destination_currency: String,
}

/// Request fields of a transaction that its responses echo. Recipient,
/// amount and currency are in the [`Transaction`].
#[derive(Debug, Clone)]
pub struct TransactionDetails {
    quotation: QuotationDetails,
    credit_party_identifier: Box<RawValue>,
    sender: Box<RawValue>,
    beneficiary: Box<RawValue>,
    purpose_of_remittance: Option<String>,
}

#[derive(Deserialize)]
struct QuotationRequest {
    external_id: String,
    payer_id: Box<RawValue>,
    mode: String,
    transaction_type: String,
    source: Box<RawValue>,
    destination: Box<RawValue>,
}

/// The `source` or `destination` of a quotation request.
#[derive(Deserialize)]
struct AmountRequest {
    amount: Option<Box<RawValue>>,
    currency: String,
}

#[derive(Deserialize)]
struct TransactionRequest {
    external_id: String,
    credit_party_identifier: Box<RawValue>,
    sender: Box<RawValue>,
    beneficiary: Box<RawValue>,
    purpose_of_remittance: Option<String>,
    callback_url: Option<String>,
}

#[derive(Deserialize)]
struct CreditPartyIdentifier {
    msisdn: Option<String>,
}

#[derive(Serialize)]
struct Money<'a> {
    amount: &'a RawValue,
    currency: &'a str,
}

#[derive(Serialize)]
struct PayerReference<'a> {
    id: &'a RawValue,
}

#[derive(Serialize)]
struct Fee<'a> {
    amount: u32,
    currency: &'a str,
}

#[derive(Serialize)]
struct QuotationObject<'a> {
    id: u64,
    external_id: &'a str,
    payer: PayerReference<'a>,
    mode: &'a str,
    transaction_type: &'a str,
    source: &'a RawValue,
    destination: Money<'a>,
    fee: Fee<'a>,
    creation_date: String,
    expiration_date: String,
}

impl<'a> QuotationObject<'a> {
    fn of(quotation: &'a Quotation) -> QuotationObject<'a> {
        let details = &quotation.details;
        QuotationObject {
            id: quotation.id,
            external_id: &quotation.external_id,
            payer: PayerReference {
                id: &details.payer_id,
            },
            mode: &details.mode,
            transaction_type: &details.transaction_type,
            source: &details.source,
            destination: Money {
                amount: &details.destination_amount,
                currency: &details.destination_currency,
            },
            fee: Fee {
                amount: 0,
                currency: &details.source_currency,
            },
            creation_date: format_date(quotation.created_at),
            expiration_date: format_date(quotation.created_at + EXPIRATION),
        }
    }
}

#[derive(Serialize)]
struct TransactionObject<'a> {
    id: u64,
    status: &'static str,
    status_message: &'static str,
    status_class: &'static str,
    status_class_message: &'static str,
    external_id: &'a str,
    external_code: Option<&'a str>,
    payer_transaction_reference: Option<String>,
    payer_transaction_code: Option<&'a str>,
    creation_date: String,
    expiration_date: String,
    credit_party_identifier: &'a RawValue,
    source: &'a RawValue,
    destination: Money<'a>,
    payer: PayerReference<'a>,
    sender: &'a RawValue,
    beneficiary: &'a RawValue,
    callback_url: Option<&'a str>,
    purpose_of_remittance: Option<&'a str>,
}

impl<'a> TransactionObject<'a> {
    fn of(transaction: &'a Transaction) -> TransactionObject<'a> {
        let Details::Thunes(details) = &transaction.details else {
            panic!(
                "transaction {} is not a Thunes transaction",
                transaction.serial
            );
        };
        let status = status_of(transaction.state);
        let payer_transaction_reference =
            (transaction.state == State::Succeeded).then(|| format!("PTR-{}", transaction.serial));
        TransactionObject {
            id: transaction.serial,
            status: status.code,
            status_message: status.message,
            status_class: status.class,
            status_class_message: status.class_message,
            external_id: &transaction.reference,
            external_code: None,
            payer_transaction_reference,
            payer_transaction_code: None,
            creation_date: format_date(transaction.created_at),
            expiration_date: format_date(transaction.created_at + EXPIRATION),
            credit_party_identifier: &details.credit_party_identifier,
            source: &details.quotation.source,
            destination: Money {
                amount: &details.quotation.destination_amount,
                currency: &details.quotation.destination_currency,
            },
            payer: PayerReference {
                id: &details.quotation.payer_id,
            },
            sender: &details.sender,
            beneficiary: &details.beneficiary,
            callback_url: transaction.callback_url.as_deref(),
            purpose_of_remittance: details.purpose_of_remittance.as_deref(),
        }
    }
}

fn format_date(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Builds a Thunes error response: `{"errors": [{"code", "message"}]}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message.into() }] });
    (status, Json(body)).into_response()
}

fn invalid_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

fn not_found(kind: &str, segment: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("{kind} {segment} not found"),
    )
}

/// Returns the 401 response when the credentials are missing.
fn reject_unauthorized(headers: &HeaderMap) -> Option<Response> {
    if has_basic_credentials(headers) {
        return None;
    }
    Some(error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "Authorization must be Basic with the API key and secret",
    ))
}

/// A path segment naming an object by id or by `ext-{external_id}`.
enum Locator<'a> {
    Id(u64),
    ExternalId(&'a str),
}

fn parse_locator(segment: &str) -> Option<Locator<'_>> {
    match segment.strip_prefix(EXTERNAL_ID_PREFIX) {
        Some(external_id) if !external_id.is_empty() => Some(Locator::ExternalId(external_id)),
        Some(_) => None,
        None => segment.parse().ok().map(Locator::Id),
    }
}

fn find_quotation(sandbox: &Sandbox, segment: &str) -> Option<Quotation> {
    let store = sandbox.store();
    let quotation = match parse_locator(segment)? {
        Locator::Id(id) => store.quotation_by_id(id),
        Locator::ExternalId(external_id) => store.quotation_by_external_id(external_id),
    };
    quotation.cloned()
}

fn find_transaction(sandbox: &Sandbox, segment: &str) -> Option<Transaction> {
    let store = sandbox.store();
    let transaction = match parse_locator(segment)? {
        Locator::Id(id) => store
            .transaction_by_serial(id)
            .filter(|transaction| transaction.provider == Provider::Thunes),
        Locator::ExternalId(external_id) => store.transaction(Provider::Thunes, external_id),
    };
    transaction.cloned()
}

fn read_quotation(body: &[u8]) -> Result<(String, QuotationDetails), String> {
    let request: QuotationRequest = parse_json(body)?;
    validate_reference("external_id", &request.external_id)?;
    let payer_id_is_scalar = request
        .payer_id
        .get()
        .starts_with(|first: char| first == '"' || first.is_ascii_digit());
    if !payer_id_is_scalar {
        return Err("payer_id must be a number or a string".to_owned());
    }
    if !MODES.contains(&request.mode.as_str()) {
        return Err(format!(
            "mode {:?} is invalid; expected one of {MODES:?}",
            request.mode
        ));
    }
    if !TRANSACTION_TYPES.contains(&request.transaction_type.as_str()) {
        return Err(format!(
            "transaction_type {:?} is invalid; expected one of {TRANSACTION_TYPES:?}",
            request.transaction_type
        ));
    }

    let source: AmountRequest = serde_json::from_str(request.source.get())
        .map_err(|error| format!("source is invalid: {error}"))?;
    let destination: AmountRequest = serde_json::from_str(request.destination.get())
        .map_err(|error| format!("destination is invalid: {error}"))?;
    validate_currency(&source.currency)?;
    validate_currency(&destination.currency)?;

    // With an exchange rate of 1, the destination amount is the given one,
    // or the source amount in SOURCE_AMOUNT mode when no destination amount
    // is given.
    let destination_amount = match (request.mode.as_str(), destination.amount, source.amount) {
        (_, Some(amount), _) => amount,
        ("SOURCE_AMOUNT", None, Some(amount)) => amount,
        _ => {
            return Err(format!(
                "destination.amount is missing for mode {}",
                request.mode
            ));
        }
    };
    let destination_amount_text = decimal_amount(&destination_amount)?;

    let details = QuotationDetails {
        payer_id: request.payer_id,
        mode: request.mode,
        transaction_type: request.transaction_type,
        source: request.source,
        source_currency: source.currency,
        destination_amount,
        destination_amount_text,
        destination_currency: destination.currency,
    };
    Ok((request.external_id, details))
}

/// `POST /v2/money-transfer/quotations`.
async fn create_quotation(
    AxumState(sandbox): AxumState<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = reject_unauthorized(&headers) {
        return response;
    }
    let (external_id, details) = match read_quotation(&body) {
        Ok(parsed) => parsed,
        Err(message) => return invalid_request(message),
    };
    let inserted = sandbox.store().insert_quotation(&external_id, details);
    match inserted {
        QuotationInsert::Created(quotation) => {
            tracing::info!(
                provider = %Provider::Thunes,
                external_id,
                quotation_id = quotation.id,
                "quotation created"
            );
            (StatusCode::CREATED, Json(QuotationObject::of(&quotation))).into_response()
        }
        QuotationInsert::Duplicate => {
            tracing::info!(provider = %Provider::Thunes, external_id, "quotation external_id already used");
            error(
                StatusCode::BAD_REQUEST,
                EXTERNAL_ID_ALREADY_USED,
                EXTERNAL_ID_ALREADY_USED_MESSAGE,
            )
        }
        QuotationInsert::Full => {
            tracing::warn!(
                provider = %Provider::Thunes,
                max = super::store::MAX_QUOTATIONS,
                "quotation limit reached; POST /sandbox/reset clears the state"
            );
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVICE_UNAVAILABLE,
                "the service is unavailable",
            )
        }
    }
}

/// `GET /v2/money-transfer/quotations/{id}` and `.../ext-{external_id}`.
async fn get_quotation(
    AxumState(sandbox): AxumState<Sandbox>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = reject_unauthorized(&headers) {
        return response;
    }
    match find_quotation(&sandbox, &segment) {
        Some(quotation) => (StatusCode::OK, Json(QuotationObject::of(&quotation))).into_response(),
        None => not_found("quotation", &segment),
    }
}

/// The validated parts of a transaction request.
struct TransactionOrder {
    external_id: String,
    msisdn: String,
    callback_url: Option<String>,
    credit_party_identifier: Box<RawValue>,
    sender: Box<RawValue>,
    beneficiary: Box<RawValue>,
    purpose_of_remittance: Option<String>,
}

fn read_transaction(body: &[u8]) -> Result<TransactionOrder, String> {
    let request: TransactionRequest = parse_json(body)?;
    validate_reference("external_id", &request.external_id)?;
    let credit_party: CreditPartyIdentifier =
        serde_json::from_str(request.credit_party_identifier.get())
            .map_err(|error| format!("credit_party_identifier is invalid: {error}"))?;
    let msisdn = credit_party.msisdn.ok_or(
        "credit_party_identifier.msisdn is missing; the sandbox pays to mobile wallets only",
    )?;
    validate_phone("credit_party_identifier.msisdn", &msisdn, true)?;
    for (field, value) in [
        ("sender", &request.sender),
        ("beneficiary", &request.beneficiary),
    ] {
        if !is_object(value) {
            return Err(format!("{field} must be an object"));
        }
    }
    if let Some(url) = &request.callback_url {
        Url::parse(url)
            .map_err(|error| format!("callback_url {url:?} is not an absolute URL: {error}"))?;
    }
    Ok(TransactionOrder {
        external_id: request.external_id,
        msisdn,
        callback_url: request.callback_url,
        credit_party_identifier: request.credit_party_identifier,
        sender: request.sender,
        beneficiary: request.beneficiary,
        purpose_of_remittance: request.purpose_of_remittance,
    })
}

/// `POST /v2/money-transfer/quotations/{id}/transactions` and
/// `.../quotations/ext-{external_id}/transactions`.
async fn create_transaction(
    AxumState(sandbox): AxumState<Sandbox>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = reject_unauthorized(&headers) {
        return response;
    }
    let Some(quotation) = find_quotation(&sandbox, &segment) else {
        return not_found("quotation", &segment);
    };
    let order = match read_transaction(&body) {
        Ok(order) => order,
        Err(message) => return invalid_request(message),
    };
    let outcome = Outcome::for_recipient(&order.msisdn);

    let reference = order.external_id.clone();
    let build = |serial| Transaction {
        serial,
        provider: Provider::Thunes,
        reference: order.external_id,
        outcome,
        state: State::Created,
        recipient: order.msisdn,
        amount: quotation.details.destination_amount_text.clone(),
        currency: quotation.details.destination_currency.clone(),
        created_at: Utc::now(),
        callback_url: order.callback_url,
        callbacks_delivered: 0,
        details: Details::Thunes(TransactionDetails {
            quotation: quotation.details.clone(),
            credit_party_identifier: order.credit_party_identifier,
            sender: order.sender,
            beneficiary: order.beneficiary,
            purpose_of_remittance: order.purpose_of_remittance,
        }),
    };
    match sandbox
        .create(Provider::Thunes, &reference, outcome, false, build)
        .await
    {
        CreateAnswer::Accepted(transaction) => (
            StatusCode::CREATED,
            Json(TransactionObject::of(&transaction)),
        )
            .into_response(),
        CreateAnswer::Duplicate(_) => error(
            StatusCode::BAD_REQUEST,
            EXTERNAL_ID_ALREADY_USED,
            EXTERNAL_ID_ALREADY_USED_MESSAGE,
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
            "an internal error occurred; the transaction status is unknown",
        ),
        CreateAnswer::NotEnoughFunds => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            NOT_ENOUGH_FUNDS,
            "the account balance is insufficient",
        ),
        CreateAnswer::HoldExpired | CreateAnswer::Full => error(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVICE_UNAVAILABLE,
            "the service is unavailable",
        ),
    }
}

/// `POST /v2/money-transfer/transactions/{id}/confirm` and
/// `.../transactions/ext-{external_id}/confirm`. Only a transaction with
/// status 10000 can be confirmed, and any other gets 400 INVALID_STATUS.
async fn confirm_transaction(
    AxumState(sandbox): AxumState<Sandbox>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = reject_unauthorized(&headers) {
        return response;
    }
    let Some(found) = find_transaction(&sandbox, &segment) else {
        return not_found("transaction", &segment);
    };

    let confirmed = {
        let mut store = sandbox.store();
        let Some(transaction) = store.transaction_by_serial_mut(found.serial) else {
            return not_found("transaction", &segment);
        };
        if transaction.state != State::Created {
            let status = status_of(transaction.state);
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_STATUS",
                format!(
                    "transaction {} has status {} {}; only status 10000 CREATED can be confirmed",
                    transaction.serial, status.code, status.message
                ),
            );
        }
        transaction.state = State::Pending;
        transaction.clone()
    };
    tracing::info!(
        provider = %Provider::Thunes,
        reference = confirmed.reference,
        outcome = %confirmed.outcome,
        "transaction confirmed"
    );
    sandbox.start_settlement(confirmed.serial);
    (StatusCode::OK, Json(TransactionObject::of(&confirmed))).into_response()
}

/// `GET /v2/money-transfer/transactions/{id}` and `.../ext-{external_id}`.
async fn get_transaction(
    AxumState(sandbox): AxumState<Sandbox>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = reject_unauthorized(&headers) {
        return response;
    }
    match find_transaction(&sandbox, &segment) {
        Some(transaction) => {
            (StatusCode::OK, Json(TransactionObject::of(&transaction))).into_response()
        }
        None => not_found("transaction", &segment),
    }
}
