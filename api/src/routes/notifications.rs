//! Notification endpoints and notifications of the calling client.
//!
//! Every route is for role client and reads or changes only the caller's own
//! endpoints and notifications. Another client's id gets 404, as an unknown
//! id does, so ids cannot be probed.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::cursor;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::input;
use crate::notifications::egress::{EgressPolicy, check_resolved, parse_url};
use crate::notifications::{
    MAX_ENDPOINTS_PER_CLIENT, generate_secret, notification_id_text, parse_notification_id,
};
use crate::state::AppState;
use crate::store::notifications::{
    self as store, AttemptRow, EndpointRow, NewEndpoint, NotificationFilter, NotificationRow,
    PageCursor, Redelivery,
};

/// Page size of the list routes when `limit` is absent, and its maximum.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 200;
/// Maximum length of an endpoint description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 200;
/// Statuses a notification can have, for the list filter.
const STATUSES: [&str; 4] = ["pending", "delivered", "failed", "disabled"];

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    /// https URL in prod; loopback http is allowed in dev and test.
    #[schema(required = true)]
    url: Option<String>,
    description: Option<String>,
}

/// POST /v1/notification-endpoints: registers a URL and returns its signing
/// secret, the only time the secret is shown.
#[utoipa::path(
    post,
    path = "/v1/notification-endpoints",
    tag = "notifications",
    summary = "Register an endpoint; the signing secret is shown once (client)",
    request_body = EndpointBody,
    responses((status = 201, description = "The endpoint with its whsec_ secret", body = Object), (status = 422, description = "Invalid or unsafe URL", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<JsonBody<EndpointBody>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Client])?;
    let JsonBody { parsed, .. } = body?;
    let raw_url = input::required(parsed.url, "url")?;
    let description = input::text(parsed.description, MAX_DESCRIPTION_CHARS, "description")?;

    let policy = EgressPolicy::for_env(state.config.app_env);
    let url = parse_url(raw_url.trim(), policy)
        .map_err(|error| ApiError::validation("url", error.to_string()))?;
    check_resolved(&url, policy)
        .await
        .map_err(|error| ApiError::validation("url", error.to_string()))?;

    let secret = generate_secret();
    let endpoint = NewEndpoint {
        client_id: principal.client_id,
        url: url.as_str(),
        description: description.as_deref(),
        secret: &secret,
    };
    let row = store::create_endpoint(&state.pool, &endpoint, MAX_ENDPOINTS_PER_CLIENT)
        .await?
        .ok_or_else(|| ApiError::Conflict {
            detail: format!(
                "a client can have at most {MAX_ENDPOINTS_PER_CLIENT} notification endpoints; delete one first"
            ),
        })?;
    tracing::info!(endpoint_id = %row.endpoint_id, "notification endpoint registered");

    let mut body = endpoint_json(&row);
    body["secret"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    cursor: Option<String>,
    limit: Option<String>,
}

/// GET /v1/notification-endpoints: the caller's endpoints, newest first,
/// without secrets.
#[utoipa::path(
    get,
    path = "/v1/notification-endpoints",
    tag = "notifications",
    summary = "The client's endpoints",
    params(("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "Page size")),
    responses((status = 200, description = "A page of endpoints", body = Object), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Client])?;
    let Query(query) =
        query.map_err(|rejection| ApiError::validation("query", rejection.body_text()))?;
    let limit = cursor::page_size(query.limit.as_deref(), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let after = decode_cursor(query.cursor.as_deref())?;

    let (rows, next) =
        store::list_endpoints(&state.pool, principal.client_id, after, limit).await?;
    let items: Vec<Value> = rows.iter().map(endpoint_json).collect();
    Ok(Json(json!({
        "items": items,
        "next_cursor": next.map(encode_cursor),
    })))
}

/// DELETE /v1/notification-endpoints/{id}: the endpoint gets no new
/// notifications, and its pending ones are disabled.
#[utoipa::path(
    delete,
    path = "/v1/notification-endpoints/{id}",
    tag = "notifications",
    summary = "Remove an endpoint",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 204, description = "Removed"), (status = 404, description = "Unknown endpoint", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(&[Role::Client])?;
    let endpoint_id = parse_endpoint_id(&raw_id)?;
    if !store::delete_endpoint(&state.pool, principal.client_id, endpoint_id).await? {
        return Err(endpoint_not_found(&raw_id));
    }
    tracing::info!(%endpoint_id, "notification endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// POST /v1/notification-endpoints/{id}/rotate-secret: returns a new secret.
/// The old one keeps signing next to it until `previous_secret_expires_at`.
#[utoipa::path(
    post,
    path = "/v1/notification-endpoints/{id}/rotate-secret",
    tag = "notifications",
    summary = "New signing secret; the old one still signs for the overlap window",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses((status = 200, description = "The new secret, shown once", body = Object), (status = 404, description = "Unknown endpoint", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Client])?;
    let endpoint_id = parse_endpoint_id(&raw_id)?;
    let secret = generate_secret();
    let row = store::rotate_secret(
        &state.pool,
        principal.client_id,
        endpoint_id,
        &secret,
        state.config.notification_secret_rotation,
    )
    .await?
    .ok_or_else(|| endpoint_not_found(&raw_id))?;
    tracing::info!(%endpoint_id, "notification endpoint secret rotated");

    let mut body = endpoint_json(&row);
    body["secret"] = Value::String(secret);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationQuery {
    payout_id: Option<String>,
    endpoint_id: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// GET /v1/notifications: the caller's notifications newest first, each
/// with its attempts.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    tag = "notifications",
    summary = "Notifications with their delivery attempts",
    params(("payout_id" = Option<Uuid>, Query, description = "One payout"), ("endpoint_id" = Option<Uuid>, Query, description = "One endpoint"), ("status" = Option<String>, Query, description = "Delivery status"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "Page size")),
    responses((status = 200, description = "A page of notifications", body = Object), (status = 422, description = "Invalid filter", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list_notifications(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<NotificationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Client])?;
    let Query(query) =
        query.map_err(|rejection| ApiError::validation("query", rejection.body_text()))?;
    let filter = NotificationFilter {
        client_id: principal.client_id,
        payout_id: parse_uuid_filter(query.payout_id.as_deref(), "payout_id")?,
        endpoint_id: parse_uuid_filter(query.endpoint_id.as_deref(), "endpoint_id")?,
        status: match query.status {
            Some(status) if STATUSES.contains(&status.as_str()) => Some(status),
            Some(_) => {
                return Err(ApiError::validation(
                    "status",
                    format!("status must be one of {}", STATUSES.join(", ")),
                ));
            }
            None => None,
        },
        after: decode_cursor(query.cursor.as_deref())?,
        limit: cursor::page_size(query.limit.as_deref(), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
    };

    let (rows, next) = store::list_notifications(&state.pool, &filter).await?;
    let ids: Vec<Uuid> = rows.iter().map(|row| row.notification_id).collect();
    let mut attempts: HashMap<Uuid, Vec<Value>> = HashMap::new();
    for attempt in store::attempts_of(&state.pool, &ids).await? {
        attempts
            .entry(attempt.notification_id)
            .or_default()
            .push(attempt_json(&attempt));
    }
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            let row_attempts = attempts.remove(&row.notification_id).unwrap_or_default();
            notification_json(row, row_attempts)
        })
        .collect();
    Ok(Json(json!({
        "items": items,
        "next_cursor": next.map(encode_cursor),
    })))
}

/// POST /v1/notifications/{id}/redeliver: schedules another delivery now,
/// under the same id, with a new retry window.
#[utoipa::path(
    post,
    path = "/v1/notifications/{id}/redeliver",
    tag = "notifications",
    summary = "Send a notification again under the same webhook-id",
    params(("id" = Uuid, Path, description = "Notification id")),
    responses((status = 202, description = "Queued", body = Object), (status = 404, description = "Unknown notification", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw_id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Client])?;
    let not_found = || ApiError::not_found(format!("notification {raw_id:?} not found"));
    let notification_id = parse_notification_id(&raw_id).ok_or_else(not_found)?;
    match store::redeliver(&state.pool, principal.client_id, notification_id).await? {
        Redelivery::Scheduled => {}
        Redelivery::NotFound => return Err(not_found()),
        Redelivery::EndpointInactive => {
            return Err(ApiError::Conflict {
                detail: format!(
                    "notification {raw_id} cannot be redelivered because its endpoint was deleted or disabled after a 410 Gone; register the endpoint again"
                ),
            });
        }
    }
    tracing::info!(notification_id = %raw_id, "notification redelivery scheduled");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": raw_id, "status": "pending" })),
    )
        .into_response())
}

fn parse_endpoint_id(raw_id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw_id).map_err(|_| endpoint_not_found(raw_id))
}

fn endpoint_not_found(raw_id: &str) -> ApiError {
    ApiError::not_found(format!("notification endpoint {raw_id:?} not found"))
}

fn parse_uuid_filter(raw: Option<&str>, field: &str) -> Result<Option<Uuid>, ApiError> {
    raw.map(|raw| {
        Uuid::parse_str(raw)
            .map_err(|_| ApiError::validation(field, format!("{field} must be a UUID")))
    })
    .transpose()
}

fn decode_cursor(raw: Option<&str>) -> Result<Option<PageCursor>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let (created_at, id) = cursor::decode(raw)?;
    Ok(Some(PageCursor { created_at, id }))
}

fn encode_cursor(next: PageCursor) -> String {
    cursor::encode(next.created_at, next.id)
}

fn endpoint_json(row: &EndpointRow) -> Value {
    json!({
        "id": row.endpoint_id,
        "url": row.url,
        "description": row.description,
        "status": if row.disabled_at.is_some() { "disabled" } else { "active" },
        "created_at": row.created_at,
        "disabled_at": row.disabled_at,
        "secret_rotated_at": row.secret_rotated_at,
        "previous_secret_expires_at": row.previous_secret_expires_at,
    })
}

fn notification_json(row: &NotificationRow, attempts: Vec<Value>) -> Value {
    json!({
        "id": notification_id_text(row.notification_id),
        "endpoint_id": row.endpoint_id,
        "payout_id": row.payout_id,
        "type": row.event_type,
        "status": row.status,
        "created_at": row.created_at,
        "delivered_at": row.delivered_at,
        "next_attempt_at": row.next_attempt_at,
        "attempts": attempts,
    })
}

fn attempt_json(row: &AttemptRow) -> Value {
    json!({
        "attempt": row.attempt,
        "started_at": row.started_at,
        "status_code": row.status_code,
        "error": row.error,
        "duration_ms": row.duration_ms,
        "next_attempt_at": row.next_attempt_at,
    })
}
