use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::created;
use crate::auth::{Principal, Role, constant_time_eq};
use crate::commands::clients;
use crate::error::ApiError;
use crate::extract::{JsonBody, parse_json};
use crate::input;
use crate::state::AppState;

/// Longest client name accepted.
const MAX_CLIENT_NAME_CHARS: usize = 100;
/// Maximum length of a reason for the audit trail, in characters.
const MAX_REASON_CHARS: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapBody {
    name: Option<String>,
    reason: Option<String>,
}

/// POST /v1/admin/bootstrap: creates the first admin.
#[utoipa::path(
    post,
    path = "/v1/admin/bootstrap",
    tag = "admin",
    summary = "Create the first admin with BOOTSTRAP_ADMIN_SECRET",
    params(("X-Bootstrap-Secret" = String, Header, description = "The value of BOOTSTRAP_ADMIN_SECRET")),
    request_body(content = Object, description = "Optional name"),
    responses(
        (status = 201, description = "The admin client with its secret, shown once", body = Object),
        (status = 401, description = "Wrong secret", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "BOOTSTRAP_ADMIN_SECRET is unset", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin already exists", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub async fn bootstrap(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(expected) = state.config.bootstrap_admin_secret.as_deref() else {
        return Err(ApiError::not_found("no route for this path"));
    };
    let presented = headers
        .get("x-bootstrap-secret")
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(presented, expected.as_bytes()) {
        tracing::warn!("bootstrap rejected: missing or wrong X-Bootstrap-Secret");
        return Err(ApiError::unauthorized(
            "missing or wrong X-Bootstrap-Secret header",
        ));
    }

    // The body is optional: an empty one takes the default name.
    let (name, reason) = if body.is_empty() {
        (None, None)
    } else {
        let body = parse_json::<BootstrapBody>(&body)?.parsed;
        (
            input::text(body.name, MAX_CLIENT_NAME_CHARS, "name")?,
            input::text(body.reason, MAX_REASON_CHARS, "reason")?,
        )
    };
    let name = name.unwrap_or_else(|| "admin".to_owned());
    let Some(client) = clients::bootstrap(&state.store, &name, reason).await? else {
        return Err(ApiError::Conflict {
            detail: "an admin already exists; ask an admin to create clients".to_owned(),
        });
    };
    tracing::info!(client_id = %client.client_id, "first admin created by bootstrap");
    Ok(created(json!({
        "client_id": client.client_id,
        "client_secret": client.secret,
        "name": name,
        "role": Role::Admin,
        "created_at": client.created_at,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    name: Option<String>,
    role: Option<String>,
    reason: Option<String>,
}

/// POST /v1/admin/clients: creates a client; its secret is shown only here.
#[utoipa::path(
    post,
    path = "/v1/admin/clients",
    tag = "admin",
    summary = "Create a client with role client, auditor, operator or admin (admin)",
    request_body(content = Object, description = "name and role"),
    responses(
        (status = 201, description = "The client with its secret, shown once", body = Object),
        (status = 401, description = "Missing, invalid or revoked access token", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = crate::openapi::Problem, content_type = "application/problem+json")
    ),
    security(("bearer" = []))
)]
pub async fn create_client(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<JsonBody<NewClientBody>, ApiError>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Admin])?;
    let body = body?.parsed;
    let name = input::required(
        input::text(body.name, MAX_CLIENT_NAME_CHARS, "name")?,
        "name",
    )?;
    let role_name = input::required(body.role, "role")?;
    let role: Role = role_name.parse().map_err(|()| {
        ApiError::validation(
            "role",
            "role must be one of client, auditor, operator, admin",
        )
    })?;

    let reason = input::text(body.reason, MAX_REASON_CHARS, "reason")?;

    let client = clients::create(&state.store, &principal, &name, role, reason).await?;
    tracing::info!(client_id = %client.client_id, role = %role, created_by = %principal.client_id, "client created");
    Ok(created(json!({
        "client_id": client.client_id,
        "client_secret": client.secret,
        "name": name,
        "role": role,
        "created_at": client.created_at,
    })))
}
