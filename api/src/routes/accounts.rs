use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::commands::IdempotentRequest;
use crate::commands::deposits;
use crate::error::ApiError;
use crate::extract::{IdempotencyKey, JsonBody};
use crate::history;
use crate::input;
use crate::request_id;
use crate::routes::payouts::AsOfQuery;
use crate::state::AppState;
use crate::store::clients;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositBody {
    /// Amount in the currency's minor unit, a positive integer.
    #[schema(value_type = i64, required = true)]
    amount: Option<Value>,
    /// ISO 4217 code.
    #[schema(required = true)]
    currency: Option<String>,
    /// Reason for the deposit, recorded in the event metadata.
    reason: Option<String>,
}

/// Maximum length of a deposit reason, in characters.
const MAX_REASON_CHARS: usize = 500;

fn parse_client_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("client {raw:?} not found")))
}

/// POST /v1/accounts/{client_id}/deposits: funds a client's wallet.
#[utoipa::path(
    post,
    path = "/v1/accounts/{client_id}/deposits",
    tag = "accounts",
    summary = "Fund a client wallet (admin, operator)",
    params(("client_id" = Uuid, Path, description = "The client whose wallet is funded"), ("Idempotency-Key" = String, Header, description = "Client-chosen key, 1 to 255 visible ASCII characters; a repeat returns the stored response")),
    request_body = DepositBody,
    responses((status = 201, description = "The deposit", body = Object), (status = 200, description = "Replay of a stored answer", body = Object), (status = 422, description = "Invalid field", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 409, description = "The key is in use by a request still running", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 503, description = "Maintenance", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn deposit(
    State(state): State<AppState>,
    principal: Principal,
    Path(client_id): Path<String>,
    key: Result<IdempotencyKey, ApiError>,
    body: Result<JsonBody<DepositBody>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Admin, Role::Operator])?;
    let IdempotencyKey(key) = key?;
    let client_id = parse_client_id(&client_id)?;
    let JsonBody { value, parsed } = body?;
    let currency = input::currency(&input::required(parsed.currency, "currency")?, "currency")?;
    let amount = input::required(parsed.amount, "amount")?;
    let money = input::amount(&amount, currency, state.config.max_amount_minor, "amount")?;
    let reason = input::text(parsed.reason, MAX_REASON_CHARS, "reason")?;
    if clients::find(&state.pool, client_id).await?.is_none() {
        return Err(ApiError::not_found(format!("client {client_id} not found")));
    }

    let path = format!("/v1/accounts/{client_id}/deposits");
    let request = IdempotentRequest {
        principal: &principal,
        key: &key,
        method: "POST",
        path: &path,
        body: &value,
        request_id: request_id::current(),
    };
    Ok(
        deposits::deposit(&state.store, &request, client_id, money, reason)
            .await?
            .into_response(),
    )
}

/// GET /v1/accounts/{client_id}/balance: available and held per currency.
#[utoipa::path(
    get,
    path = "/v1/accounts/{client_id}/balance",
    tag = "accounts",
    summary = "Available and held amounts per currency",
    params(("client_id" = Uuid, Path, description = "The client"), ("as_of" = Option<String>, Query, description = "RFC 3339 time: the state rebuilt from the events recorded up to then")),
    responses((status = 200, description = "Balances per currency", body = Object), (status = 404, description = "Unknown client, or another client's balance", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid as_of", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn balance(
    State(state): State<AppState>,
    principal: Principal,
    Path(client_id): Path<String>,
    query: Result<Query<AsOfQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Client, Role::Auditor, Role::Admin])?;
    let Query(query) =
        query.map_err(|rejection| ApiError::validation("query", rejection.body_text()))?;
    let client_id = parse_client_id(&client_id)?;
    // A client asking for another client's balance learns nothing, not even
    // that the client exists.
    if principal.role == Role::Client && principal.client_id != client_id {
        return Err(ApiError::not_found(format!("client {client_id} not found")));
    }
    if clients::find(&state.pool, client_id).await?.is_none() {
        return Err(ApiError::not_found(format!("client {client_id} not found")));
    }
    // With `as_of` the balances are rebuilt from the wallet events recorded
    // up to that moment; otherwise they come from the read model.
    let rows: Vec<(String, i64, i64)> = match query.as_of.as_deref() {
        Some(raw) => {
            history::balances_as_of(&state.pool, client_id, input::time(raw, "as_of")?).await?
        }
        None => nepxy_projections::queries::balances(&state.pool, client_id)
            .await?
            .into_iter()
            .map(|row| (row.currency, row.available_minor, row.held_minor))
            .collect(),
    };
    let balances: Vec<Value> = rows
        .iter()
        .map(|(currency, available, held)| {
            json!({
                "currency": currency,
                "available": available,
                "held": held,
            })
        })
        .collect();
    Ok(Json(
        json!({ "client_id": client_id, "balances": balances }),
    ))
}
