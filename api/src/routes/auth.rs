use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Role, secret_matches};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::input;
use crate::state::AppState;
use crate::store::clients;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// POST /v1/auth/token: exchanges client credentials for an access token.
#[utoipa::path(
    post,
    path = "/v1/auth/token",
    tag = "auth",
    summary = "Exchange client credentials for an access token",
    request_body(content = Object, description = "grant_type, client_id, client_secret"),
    responses(
        (status = 200, description = "access_token, token_type, expires_in", body = Object),
        (status = 401, description = "Unknown client or wrong secret", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub async fn token(
    State(state): State<AppState>,
    body: JsonBody<TokenBody>,
) -> Result<Json<Value>, ApiError> {
    let body = body.parsed;
    let grant_type = input::required(body.grant_type, "grant_type")?;
    if grant_type != "client_credentials" {
        return Err(ApiError::validation(
            "grant_type",
            "unsupported grant_type; use client_credentials",
        ));
    }
    let client_id = input::required(body.client_id, "client_id")?;
    let client_secret = input::required(body.client_secret, "client_secret")?;

    let invalid = || ApiError::unauthorized("invalid client credentials");
    let client_id = Uuid::parse_str(&client_id).map_err(|_| invalid())?;
    let Some(client) = clients::find(&state.pool, client_id).await? else {
        tracing::info!(%client_id, "token refused: unknown client");
        return Err(invalid());
    };
    if !secret_matches(&client_secret, &client.secret_hash) {
        tracing::info!(%client_id, "token refused: wrong secret");
        return Err(invalid());
    }
    let role: Role = client
        .role
        .parse()
        .map_err(|()| ApiError::Internal(format!("client {client_id} has an unknown role")))?;

    let issued = state.tokens.issue(client_id, role)?;
    tracing::info!(%client_id, role = %role, "access token issued");
    Ok(Json(json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
    })))
}
