use axum::Json;
use axum::extract::{Path, Query, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::cursor;
use crate::error::ApiError;
use crate::input;
use crate::routes::webhooks::delivery_json;
use crate::state::AppState;
use crate::store::audit::{self, AuditEvent, EventFilter, EventPosition};
use crate::store::webhooks;

/// Page size of GET /v1/audit/events when `limit` is absent, and its maximum.
const DEFAULT_PAGE_SIZE: i64 = 100;
const MAX_PAGE_SIZE: i64 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// GET /v1/audit/events: every event in a global order that never skips or
/// repeats one, even while writes continue.
#[utoipa::path(
    get,
    path = "/v1/audit/events",
    tag = "audit",
    summary = "Every event in global order with metadata (auditor, admin)",
    params(("aggregate_type" = Option<String>, Query, description = "Wallet or Payout"), ("aggregate_id" = Option<String>, Query, description = "One aggregate"), ("event_type" = Option<String>, Query, description = "One event type"), ("from" = Option<String>, Query, description = "RFC 3339, inclusive"), ("to" = Option<String>, Query, description = "RFC 3339, exclusive"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"), ("limit" = Option<u32>, Query, description = "Page size")),
    responses((status = 200, description = "A page of events and next_cursor", body = Object), (status = 422, description = "Invalid filter", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Auditor, Role::Admin])?;
    let Query(query) =
        query.map_err(|rejection| ApiError::validation("query", rejection.body_text()))?;
    let limit = cursor::page_size(query.limit.as_deref(), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let filter = EventFilter {
        aggregate_type: query.aggregate_type,
        aggregate_id: query.aggregate_id,
        event_type: query.event_type,
        recorded_from: query
            .from
            .as_deref()
            .map(|raw| input::time(raw, "from"))
            .transpose()?,
        recorded_before: query
            .to
            .as_deref()
            .map(|raw| input::time(raw, "to"))
            .transpose()?,
        after: query.cursor.as_deref().map(decode_position).transpose()?,
        limit,
    };
    let page = audit::events(&state.pool, &filter).await?;

    // `next_cursor` is set while more events are known to follow; a feed
    // reader that reached the end polls again from `last_cursor`.
    let last = page.last().map(|event| event.position).or(filter.after);
    let next = (page.len() as i64 == limit).then_some(last).flatten();
    Ok(Json(json!({
        "items": page.iter().map(event_json).collect::<Vec<_>>(),
        "next_cursor": next.map(encode_position),
        "last_cursor": last.map(encode_position),
    })))
}

/// GET /v1/audit/payouts/{id}/history: one payout's events with the webhook
/// deliveries that caused them.
#[utoipa::path(
    get,
    path = "/v1/audit/payouts/{id}/history",
    tag = "audit",
    summary = "One payout's events with the webhooks that caused them",
    params(("id" = Uuid, Path, description = "Payout id")),
    responses((status = 200, description = "The events and deliveries", body = Object), (status = 404, description = "Unknown payout", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 403, description = "The token's role may not use this route", body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn payout_history(
    State(state): State<AppState>,
    principal: Principal,
    Path(raw_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(&[Role::Auditor, Role::Admin])?;
    let not_found = || ApiError::not_found(format!("payout {raw_id:?} not found"));
    let payout_id = Uuid::parse_str(&raw_id).map_err(|_| not_found())?;

    let events = audit::payout_events(&state.pool, payout_id).await?;
    if events.is_empty() {
        return Err(not_found());
    }

    let mut delivery_ids: Vec<Uuid> = events
        .iter()
        .filter_map(|event| event.metadata["webhook_id"].as_str())
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect();
    delivery_ids.sort();
    delivery_ids.dedup();
    let mut deliveries = Vec::with_capacity(delivery_ids.len());
    for id in delivery_ids {
        if let Some(row) = webhooks::find(&state.pool, id).await? {
            deliveries.push(delivery_json(&row));
        }
    }
    Ok(Json(json!({
        "payout_id": payout_id,
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
        "webhooks": deliveries,
    })))
}

pub fn event_json(event: &AuditEvent) -> Value {
    json!({
        "position": encode_position(event.position),
        "global_position": event.position.global_position,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "event_version": event.event_version,
        "payload": event.payload,
        "metadata": event.metadata,
        "recorded_at": event.recorded_at,
        "chain_hash": hex::encode(&event.chain_hash),
    })
}

/// Cursors are opaque: base64url of "{transaction id}:{global position}".
fn encode_position(position: EventPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}:{}",
        position.transaction_id, position.global_position
    ))
}

fn decode_position(raw: &str) -> Result<EventPosition, ApiError> {
    let invalid = || {
        ApiError::validation(
            "cursor",
            "cursor is invalid; pass a cursor from a previous page",
        )
    };
    let decoded = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (transaction_id, global_position) = text.split_once(':').ok_or_else(invalid)?;
    Ok(EventPosition {
        transaction_id: transaction_id.parse().map_err(|_| invalid())?,
        global_position: global_position.parse().map_err(|_| invalid())?,
    })
}
