use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Principal, Role, secret_matches};
use crate::commands::tokens::{self, RevokeTarget, TokenGrant};
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::input;
use crate::state::AppState;
use crate::store::clients;

/// Maximum length of a revocation reason, in characters.
const MAX_REASON_CHARS: usize = 500;
/// Maximum length of a token id in a revocation, in characters. Issued ids
/// are 36-character UUIDs.
const MAX_JTI_CHARS: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

/// POST /v1/auth/token: exchanges client credentials
/// (`grant_type=client_credentials`) or a refresh token
/// (`grant_type=refresh_token`) for an access token and a new refresh token.
#[utoipa::path(
    post,
    path = "/v1/auth/token",
    tag = "auth",
    summary = "Exchange client credentials or a refresh token for tokens",
    request_body(content = Object, description = "grant_type client_credentials with client_id and client_secret, or grant_type refresh_token with refresh_token"),
    responses(
        (status = 200, description = "access_token, token_type, expires_in, refresh_token", body = Object),
        (status = 401, description = "Unknown client, wrong secret, or a spent, revoked or expired refresh token", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub async fn token(
    State(state): State<AppState>,
    body: JsonBody<TokenBody>,
) -> Result<Json<Value>, ApiError> {
    let body = body.parsed;
    let grant_type = input::required(body.grant_type, "grant_type")?;
    let grant = match grant_type.as_str() {
        "client_credentials" => {
            if body.refresh_token.is_some() {
                return Err(ApiError::validation(
                    "refresh_token",
                    "refresh_token is only accepted with grant_type refresh_token",
                ));
            }
            let client_id = input::required(body.client_id, "client_id")?;
            let client_secret = input::required(body.client_secret, "client_secret")?;
            client_credentials(&state, &client_id, &client_secret).await?
        }
        "refresh_token" => {
            if body.client_id.is_some() || body.client_secret.is_some() {
                return Err(ApiError::validation(
                    "grant_type",
                    "grant_type refresh_token takes only refresh_token; omit client_id and client_secret",
                ));
            }
            let refresh_token = input::required(body.refresh_token, "refresh_token")?;
            tokens::refresh(
                &state.store,
                &state.tokens,
                &state.revocations,
                &refresh_token,
            )
            .await?
        }
        _ => {
            return Err(ApiError::validation(
                "grant_type",
                "unsupported grant_type; use client_credentials or refresh_token",
            ));
        }
    };
    Ok(Json(json!({
        "access_token": grant.access.access_token,
        "token_type": "Bearer",
        "expires_in": grant.access.expires_in,
        "refresh_token": grant.refresh_token,
    })))
}

async fn client_credentials(
    state: &AppState,
    client_id: &str,
    client_secret: &str,
) -> Result<TokenGrant, ApiError> {
    let invalid = || ApiError::unauthorized("invalid client credentials");
    let client_id = Uuid::parse_str(client_id).map_err(|_| invalid())?;
    let Some(client) = clients::find(&state.pool, client_id).await? else {
        tracing::info!(%client_id, "token refused: unknown client");
        return Err(invalid());
    };
    if !secret_matches(client_secret, &client.secret_hash) {
        tracing::info!(%client_id, "token refused: wrong secret");
        return Err(invalid());
    }
    let role: Role = client
        .role
        .parse()
        .map_err(|()| ApiError::Internal(format!("client {client_id} has an unknown role")))?;

    let grant = tokens::grant(&state.store, &state.tokens, client_id, role).await?;
    tracing::info!(%client_id, role = %role, "access token issued");
    Ok(grant)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    jti: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    reason: Option<String>,
}

/// POST /v1/auth/revoke: revokes one access token (`jti`), a refresh token
/// with its family (`refresh_token`) or every token of a client
/// (`client_id`). Admins may revoke any client's tokens, others only their
/// own.
#[utoipa::path(
    post,
    path = "/v1/auth/revoke",
    tag = "auth",
    summary = "Revoke an access token, a refresh token's family or every token of a client",
    request_body(content = Object, description = "Exactly one of jti, refresh_token or client_id, and an optional reason"),
    responses(
        (status = 200, description = "What was revoked", body = Object),
        (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown token or client, or another client's", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<JsonBody<RevokeBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let body = body?.parsed;
    let reason = input::text(body.reason, MAX_REASON_CHARS, "reason")?;
    let target = match (body.jti, body.refresh_token, body.client_id) {
        (Some(jti), None, None) => {
            let jti = input::required(input::text(Some(jti), MAX_JTI_CHARS, "jti")?, "jti")?;
            RevokeTarget::AccessToken(jti)
        }
        (None, Some(refresh_token), None) => RevokeTarget::RefreshToken(refresh_token),
        (None, None, Some(raw)) => {
            let client_id = Uuid::parse_str(&raw)
                .map_err(|_| ApiError::validation("client_id", "client_id must be a UUID"))?;
            RevokeTarget::Client(client_id)
        }
        _ => {
            return Err(ApiError::validation(
                "body",
                "send exactly one of jti, refresh_token or client_id",
            ));
        }
    };
    let outcome =
        tokens::revoke(&state.store, &state.revocations, &principal, target, reason).await?;
    Ok(Json(json!({
        "client_id": outcome.client_id,
        "scope": tokens::scope_name(outcome.scope),
        "access_tokens_revoked": outcome.access_tokens_revoked,
        "families_revoked": outcome.families_revoked,
    })))
}
