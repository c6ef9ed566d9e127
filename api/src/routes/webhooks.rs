use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use nepxy_ledger::Provider;
use nepxy_ledger::metadata::Actor;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::cursor;
use crate::error::ApiError;
use crate::extract::{JsonBody, MAX_BODY_BYTES};
use crate::input;
use crate::state::AppState;
use crate::store::webhooks::{self, DeliveryCursor, DeliveryFilter, DeliveryRow};
use crate::webhooks::intake::{Arrival, Handled, Refusal, handled_json, storable_headers};

/// Page size of GET /v1/webhooks when `limit` is absent, and its maximum.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 200;
/// Longest replay reason accepted.
const MAX_REASON_CHARS: usize = 500;

use crate::store::webhooks::VERDICTS;

/// POST /v1/webhooks/{provider} for tmoney and thunes.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{target}",
    tag = "webhooks",
    summary = "Provider status report (tmoney, thunes), signed",
    params(("target" = String, Path, description = "tmoney or thunes")),
    responses((status = 200, description = "Stored and processed; the body names the verdict", body = Object), (status = 202, description = "Stored during maintenance, applied after it", body = Object), (status = 401, description = "Signature, timestamp or nonce rejected; the delivery is stored", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, description = "Unknown provider", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "Body over 64 KiB", body = crate::openapi::Problem, content_type = "application/problem+json"))
)]
pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(provider): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let provider = match provider.parse::<Provider>() {
        Ok(provider @ (Provider::Tmoney | Provider::Thunes)) => provider,
        // MoMo callbacks carry their token in the path; see `receive_momo`.
        _ => {
            return Err(ApiError::not_found(format!(
                "no webhook intake for provider {provider:?}"
            )));
        }
    };
    intake(&state, provider, None, peer, &method, &uri, &headers, body).await
}

/// POST or PUT /v1/webhooks/momo/{callback_token}.
#[utoipa::path(
    post,
    path = "/v1/webhooks/momo/{callback_token}",
    tag = "webhooks",
    summary = "MTN MoMo callback, confirmed with MoMo's status endpoint (PUT is accepted too)",
    params(("callback_token" = String, Path, description = "The payout's callback token")),
    responses((status = 200, description = "Stored and processed", body = Object), (status = 202, description = "Stored during maintenance", body = Object), (status = 401, description = "Unknown callback token; the delivery is stored", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 413, description = "Body over 64 KiB", body = crate::openapi::Problem, content_type = "application/problem+json"))
)]
pub async fn receive_momo(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(callback_token): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    intake(
        &state,
        Provider::Momo,
        Some(&callback_token),
        peer,
        &method,
        &uri,
        &headers,
        body,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn intake(
    state: &AppState,
    provider: Provider,
    path_token: Option<&str>,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut arrival = Arrival {
        provider,
        method: method.as_str(),
        path: uri.path(),
        path_token,
        peer_addr: Some(peer.to_string()),
        headers: storable_headers(
            headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes())),
        ),
        body: &[],
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let declared_size = headers
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i64>().ok())
                .unwrap_or(MAX_BODY_BYTES as i64 + 1);
            state
                .intake
                .record_oversized(&arrival, declared_size)
                .await?;
            return Err(ApiError::PayloadTooLarge {
                limit_bytes: MAX_BODY_BYTES,
            });
        }
        Err(rejection) => {
            return Err(ApiError::bad_request(format!(
                "could not read the body: {rejection}"
            )));
        }
    };

    arrival.body = &body;
    match state.intake.receive(arrival).await? {
        Ok(handled) => Ok(handled_response(&handled)),
        Err(refusal) => Err(refusal_error(refusal)),
    }
}

fn handled_response(handled: &Handled) -> Response {
    let status = match handled.verdict.as_str() {
        "applied" | "duplicate" | "pending" => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    (status, Json(handled_json(handled))).into_response()
}

fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Rejected { webhook_id, reason } => {
            ApiError::unauthorized(format!("webhook {webhook_id} rejected: {reason}"))
        }
        Refusal::Malformed { webhook_id, reason } => ApiError::bad_request(format!(
            "webhook {webhook_id} has a malformed body: {reason}"
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    provider: Option<String>,
    verdict: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// GET /v1/webhooks: stored deliveries, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    summary = "Stored deliveries (operator, auditor)",
    params(("verdict" = Option<String>, Query, description = "e.g. applied, rejected, dead"), ("provider" = Option<String>, Query, description = "tmoney, thunes or momo"), ("from" = Option<String>, Query, description = "RFC 3339, inclusive"), ("to" = Option<String>, Query, description = "RFC 3339, exclusive"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "Page size")),
    responses((status = 200, description = "A page of deliveries", body = Object), (status = 422, description = "Invalid filter", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Operator, Role::Auditor, Role::Admin])?;
    let Query(query) =
        query.map_err(|rejection| ApiError::validation("query", rejection.body_text()))?;

    let provider = query
        .provider
        .map(|name| {
            name.parse::<Provider>()
                .map(|provider| provider.name().to_owned())
                .map_err(|error| ApiError::validation("provider", error.to_string()))
        })
        .transpose()?;
    let verdict = match query.verdict {
        Some(verdict) if VERDICTS.contains(&verdict.as_str()) => Some(verdict),
        Some(_) => {
            return Err(ApiError::validation(
                "verdict",
                format!("verdict must be one of {}", VERDICTS.join(", ")),
            ));
        }
        None => None,
    };
    let limit = cursor::page_size(query.limit.as_deref(), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let filter = DeliveryFilter {
        provider,
        verdict,
        received_from: query
            .from
            .as_deref()
            .map(|raw| input::time(raw, "from"))
            .transpose()?,
        received_before: query
            .to
            .as_deref()
            .map(|raw| input::time(raw, "to"))
            .transpose()?,
        after: query
            .cursor
            .as_deref()
            .map(cursor::decode)
            .transpose()?
            .map(|(received_at, webhook_id)| DeliveryCursor {
                received_at,
                webhook_id,
            }),
        limit,
    };
    let (rows, next) = webhooks::list(&state.pool, &filter).await?;
    Ok(Json(json!({
        "items": rows.iter().map(delivery_json).collect::<Vec<_>>(),
        "next_cursor": next.map(|next| cursor::encode(next.received_at, next.webhook_id)),
    })))
}

/// GET /v1/webhooks/{id}: one stored delivery with its raw body.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{target}",
    tag = "webhooks",
    summary = "One stored delivery with its raw body and headers",
    params(("target" = Uuid, Path, description = "Delivery id")),
    responses((status = 200, description = "The delivery", body = Object), (status = 404, description = "Unknown delivery", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Operator, Role::Auditor, Role::Admin])?;
    let not_found = || ApiError::not_found(format!("webhook {raw_id:?} not found"));
    let webhook_id = Uuid::parse_str(&raw_id).map_err(|_| not_found())?;
    let row = webhooks::find(&state.pool, webhook_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(delivery_json(&row)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// Reason for the replay, recorded with the events.
    #[schema(required = true)]
    reason: Option<String>,
    dry_run: Option<bool>,
}

/// POST /v1/webhooks/{id}/replay: re-applies one stored delivery.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{target}/replay",
    tag = "webhooks",
    summary = "Re-apply a stored delivery (operator, admin)",
    params(("target" = Uuid, Path, description = "Delivery id")),
    request_body = ReplayBody,
    responses((status = 200, description = "The replay's verdict", body = Object), (status = 404, description = "Unknown delivery", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 422, description = "Missing reason", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw_id): Path<String>,
    body: Result<JsonBody<ReplayBody>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Operator, Role::Admin])?;
    let body = body?.parsed;
    let reason = input::required(
        input::text(body.reason, MAX_REASON_CHARS, "reason")?,
        "reason",
    )?;
    let not_found = || ApiError::not_found(format!("webhook {raw_id:?} not found"));
    let webhook_id = Uuid::parse_str(&raw_id).map_err(|_| not_found())?;

    let actor = Actor {
        subject: principal.client_id.to_string(),
        role: principal.role.to_string(),
    };
    let outcome = state
        .intake
        .replay(webhook_id, actor, &reason, body.dry_run.unwrap_or(false))
        .await?
        .ok_or_else(not_found)?;
    match outcome {
        Ok(handled) => Ok((StatusCode::OK, Json(handled_json(&handled))).into_response()),
        Err(Refusal::Rejected { reason, .. }) => Err(ApiError::Conflict {
            detail: format!("the stored delivery no longer verifies: {reason}"),
        }),
        Err(Refusal::Malformed { reason, .. }) => Err(ApiError::Conflict {
            detail: format!("the stored delivery cannot be parsed: {reason}"),
        }),
    }
}

/// The stored delivery as operators see it.
pub fn delivery_json(row: &DeliveryRow) -> Value {
    let body_text = row
        .body
        .as_deref()
        .and_then(|bytes| std::str::from_utf8(bytes).ok());
    json!({
        "id": row.webhook_id,
        "provider": row.provider,
        "received_at": row.received_at,
        "peer_addr": row.peer_addr,
        "method": row.method,
        "path": row.path,
        "headers": row.headers,
        "body_base64": row.body.as_deref().map(|bytes| STANDARD.encode(bytes)),
        "body_text": body_text,
        "body_size": row.body_size,
        "verdict": row.verdict,
        "reason": row.reason,
        "payout_id": row.payout_id,
        "report": row.report,
        "updated_at": row.updated_at,
    })
}
