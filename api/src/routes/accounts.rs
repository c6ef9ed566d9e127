use axum::Json;
use axum::extract::{Path, State};
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
use crate::input;
use crate::request_id;
use crate::state::AppState;
use crate::store::clients;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositBody {
    amount: Option<Value>,
    currency: Option<String>,
}

fn parse_client_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(format!("client {raw:?} not found")))
}

/// POST /v1/accounts/{client_id}/deposits: funds a client's wallet.
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
    Ok(deposits::deposit(&state.store, &request, client_id, money)
        .await?
        .into_response())
}

/// GET /v1/accounts/{client_id}/balance: available and held per currency.
pub async fn balance(
    State(state): State<AppState>,
    principal: Principal,
    Path(client_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Client, Role::Auditor, Role::Admin])?;
    let client_id = parse_client_id(&client_id)?;
    // A client asking for another client's balance learns nothing, not even
    // that the client exists.
    if principal.role == Role::Client && principal.client_id != client_id {
        return Err(ApiError::not_found(format!("client {client_id} not found")));
    }
    if clients::find(&state.pool, client_id).await?.is_none() {
        return Err(ApiError::not_found(format!("client {client_id} not found")));
    }
    let rows = nepxy_projections::queries::balances(&state.pool, client_id).await?;
    let balances: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "currency": row.currency,
                "available": row.available_minor,
                "held": row.held_minor,
            })
        })
        .collect();
    Ok(Json(
        json!({ "client_id": client_id, "balances": balances }),
    ))
}
