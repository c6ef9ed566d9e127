use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use nepxy_ledger::PayoutStatus;
use nepxy_ledger::payout::Recipient;
use nepxy_projections::queries::{self, PayoutCursor, PayoutFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::commands::IdempotentRequest;
use crate::commands::payouts::{self, NewPayout, payout_row_json};
use crate::cursor;
use crate::error::ApiError;
use crate::extract::{IdempotencyKey, JsonBody};
use crate::history;
use crate::input;
use crate::request_id;
use crate::state::AppState;

/// Page size of GET /v1/payouts when `limit` is absent, and its maximum.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 200;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutBody {
    /// Amount in the currency's minor unit, a positive integer.
    #[schema(value_type = i64, required = true)]
    amount: Option<Value>,
    /// ISO 4217 code: XOF, XAF, GHS, NGN, EUR or USD.
    #[schema(required = true)]
    currency: Option<String>,
    /// tmoney, thunes or momo.
    #[schema(required = true)]
    provider: Option<String>,
    #[schema(required = true)]
    recipient: Option<RecipientBody>,
    reference: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    /// E.164 number, e.g. +22890123456. tmoney takes only Togolese numbers:
    /// +228 followed by 8 digits.
    #[schema(required = true)]
    msisdn: Option<String>,
    name: Option<String>,
}

impl PayoutBody {
    fn validate(self, max_amount_minor: i64) -> Result<NewPayout, ApiError> {
        let currency = input::currency(&input::required(self.currency, "currency")?, "currency")?;
        let amount = input::required(self.amount, "amount")?;
        let money = input::amount(&amount, currency, max_amount_minor, "amount")?;
        let provider = input::provider(&input::required(self.provider, "provider")?, "provider")?;
        let recipient = input::required(self.recipient, "recipient")?;
        let msisdn = input::msisdn(
            &input::required(recipient.msisdn, "recipient.msisdn")?,
            "recipient.msisdn",
        )?;
        input::payable_by(provider, &msisdn, "recipient.msisdn")?;
        Ok(NewPayout {
            money,
            provider,
            recipient: Recipient {
                msisdn,
                name: input::recipient_name(recipient.name)?,
            },
            reference: input::reference(self.reference)?,
        })
    }
}

/// Parses and validates a POST /v1/payouts body as the route does, without
/// the idempotency fingerprint. Exposed for the fuzz targets.
pub fn parse_payout_body(bytes: &[u8], max_amount_minor: i64) -> Result<NewPayout, ApiError> {
    let JsonBody { parsed, .. } = crate::extract::parse_json::<PayoutBody>(bytes)?;
    parsed.validate(max_amount_minor)
}

/// POST /v1/payouts: reserves the amount and creates a pending payout.
#[utoipa::path(
    post,
    path = "/v1/payouts",
    tag = "payouts",
    summary = "Reserve funds and create a pending payout (client)",
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key, 1 to 255 visible ASCII characters; a repeat returns the stored response")),
    request_body = PayoutBody,
    responses((status = 201, description = "The payout; a repeat with the same key returns the stored answer with Idempotent-Replayed: true", body = Object), (status = 400, description = "Missing Idempotency-Key", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 409, description = "The key is in use by a request still running", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field, insufficient funds, or a key reused with another body", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 503, description = "Maintenance, or the provider is switched off", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    key: Result<IdempotencyKey, ApiError>,
    body: Result<JsonBody<PayoutBody>, ApiError>,
) -> Result<Response, ApiError> {
    // The role is checked before the request itself, so a caller without the
    // role learns nothing from validation errors.
    principal.require(&[Role::Client])?;
    let IdempotencyKey(key) = key?;
    let JsonBody { value, parsed } = body?;
    let payout = parsed.validate(state.config.max_amount_minor)?;
    let request = IdempotentRequest {
        principal: &principal,
        key: &key,
        method: "POST",
        path: "/v1/payouts",
        body: &value,
        request_id: request_id::current(),
    };
    let outcome = payouts::request_payout(&state.payouts, &request, payout).await?;
    if !outcome.replayed {
        state.dispatch_wake.notify_one();
    }
    Ok(outcome.into_response())
}

/// GET /v1/payouts/{id}
/// GET /v1/payouts/{id}; with `?as_of=` (RFC 3339) the payout as it was then,
/// rebuilt from its events.
#[utoipa::path(
    get,
    path = "/v1/payouts/{id}",
    tag = "payouts",
    summary = "One payout, now or as of a past moment",
    params(("id" = Uuid, Path, description = "Payout id"), ("as_of" = Option<String>, Query, description = "RFC 3339 time: the state rebuilt from the events recorded up to then")),
    responses((status = 200, description = "The payout", body = Object), (status = 404, description = "Unknown payout, or another client's", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid as_of", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw_id): Path<String>,
    query: Result<Query<AsOfQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Client, Role::Auditor, Role::Admin])?;
    let Query(query) =
        query.map_err(|rejection| ApiError::validation("query", rejection.body_text()))?;
    let not_found = || ApiError::not_found(format!("payout {raw_id:?} not found"));
    let payout_id = Uuid::parse_str(&raw_id).map_err(|_| not_found())?;
    let row = queries::payout(&state.pool, payout_id)
        .await?
        .ok_or_else(not_found)?;
    // Another client's payout is reported as missing, not forbidden, so ids
    // cannot be probed.
    if principal.role == Role::Client && row.client_id != principal.client_id {
        return Err(not_found());
    }
    let Some(as_of) = query
        .as_of
        .as_deref()
        .map(|raw| input::time(raw, "as_of"))
        .transpose()?
    else {
        return Ok(Json(payout_row_json(&row)));
    };
    let (past, updated_at) = history::payout_as_of(&state.pool, payout_id, as_of)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "payout {payout_id} did not exist at {}",
                as_of.to_rfc3339()
            ))
        })?;
    Ok(Json(payouts::payout_json(&past, updated_at)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    pub as_of: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    client_id: Option<String>,
}

/// GET /v1/payouts: newest first, with a status filter and cursor pages.
#[utoipa::path(
    get,
    path = "/v1/payouts",
    tag = "payouts",
    summary = "Payouts newest first, with cursor pages",
    params(("status" = Option<String>, Query, description = "pending, submitted, succeeded, failed or reversed"), ("client_id" = Option<Uuid>, Query, description = "Auditors and admins: one client's payouts"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "Page size")),
    responses((status = 200, description = "{\"items\": [...], \"next_cursor\": ...}", body = Object), (status = 422, description = "Invalid filter", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Client, Role::Auditor, Role::Admin])?;
    let Query(query) =
        query.map_err(|rejection| ApiError::validation("query", rejection.body_text()))?;

    let status = match query.status {
        Some(name) => Some(
            PayoutStatus::parse(&name)
                .ok_or_else(|| {
                    ApiError::validation(
                        "status",
                        "status must be one of pending, submitted, succeeded, failed, reversed",
                    )
                })?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let limit = cursor::page_size(query.limit.as_deref(), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let after = query
        .cursor
        .as_deref()
        .map(cursor::decode)
        .transpose()?
        .map(|(created_at, payout_id)| PayoutCursor {
            created_at,
            payout_id,
        });
    let client_id = if principal.role == Role::Client {
        if query.client_id.is_some() {
            return Err(ApiError::validation(
                "client_id",
                "clients can only list their own payouts; omit client_id",
            ));
        }
        Some(principal.client_id)
    } else {
        query
            .client_id
            .map(|raw| {
                Uuid::parse_str(&raw)
                    .map_err(|_| ApiError::validation("client_id", "client_id must be a UUID"))
            })
            .transpose()?
    };

    let filter = PayoutFilter {
        client_id,
        status,
        after,
        limit,
    };
    let (rows, next) = queries::payouts(&state.pool, &filter).await?;
    let items: Vec<Value> = rows.iter().map(payout_row_json).collect();
    Ok(Json(json!({
        "items": items,
        "next_cursor": next.map(|next| cursor::encode(next.created_at, next.payout_id)),
    })))
}
