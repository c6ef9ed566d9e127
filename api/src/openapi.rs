//! The OpenAPI document served at GET /openapi.json.
//!
//! Each public handler carries a `#[utoipa::path]` attribute next to its
//! code, and [`ApiDoc`] lists them. The debug routes are left out on purpose.
//! The problem types come from [`ApiError::catalogue`], so a new problem type
//! appears here without a second list.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::ApiError;
use crate::routes::{accounts, admin, audit, auth, health, notifications, payouts, webhooks};

/// An RFC 9457 problem, sent as `application/problem+json` with every error.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// The problem type, relative to the API's base URL.
    #[schema(rename = "type")]
    problem_type: String,
    title: String,
    status: u16,
    /// An explanation of the error and how to fix it.
    detail: String,
    /// The request field or header that failed validation.
    field: Option<String>,
    /// The X-Request-ID of the request, to quote when reporting it.
    request_id: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Nepxy ledger API",
        description = "Idempotent payouts to mobile-money wallets, with an immutable event history."
    ),
    paths(
        health::health,
        crate::prometheus::render,
        openapi_json,
        admin::bootstrap,
        admin::create_client,
        auth::token,
        auth::revoke,
        accounts::deposit,
        accounts::balance,
        payouts::create,
        payouts::get,
        payouts::list,
        audit::events,
        audit::payout_history,
        webhooks::receive,
        webhooks::receive_momo,
        webhooks::list,
        webhooks::show,
        webhooks::replay,
        notifications::create_endpoint,
        notifications::list_endpoints,
        notifications::delete_endpoint,
        notifications::rotate_secret,
        notifications::list_notifications,
        notifications::redeliver,
    ),
    components(schemas(
        Problem,
        accounts::DepositBody,
        payouts::PayoutBody,
        payouts::RecipientBody,
        webhooks::ReplayBody,
        notifications::EndpointBody,
    )),
    modifiers(&BearerAuth, &ProblemTypes)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("Access token from POST /v1/auth/token"))
                    .build(),
            ),
        );
    }
}

/// Lists every problem type, with its title and status, in the Problem
/// schema's description and as the `x-problem-types` extension.
struct ProblemTypes;

impl Modify for ProblemTypes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let types: Vec<serde_json::Value> = ApiError::catalogue()
            .iter()
            .map(|error| {
                let (problem_type, title, status) = error.describe();
                serde_json::json!({ "type": problem_type, "title": title, "status": status })
            })
            .collect();
        let listing = types
            .iter()
            .map(|entry| {
                format!(
                    "`{}` ({}, {})",
                    entry["type"], entry["status"], entry["title"]
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(schema))) =
            components.schemas.get_mut("Problem")
        {
            schema.description = Some(format!(
                "An RFC 9457 problem. Problem types: {}",
                listing.replace('"', "")
            ));
        }
        let mut extensions = utoipa::openapi::extensions::Extensions::default();
        extensions.insert("x-problem-types".to_owned(), serde_json::Value::from(types));
        openapi
            .extensions
            .get_or_insert_with(Default::default)
            .merge(extensions);
    }
}

/// Builds the document. It is small and rarely fetched, so it is not cached.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This OpenAPI document",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects every `.route("...", ...)` path of the router source, with the
    /// methods named on it.
    fn routed_paths() -> Vec<(String, Vec<String>)> {
        let source = include_str!("app.rs");
        let mut routes = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find(".route(") {
            rest = &rest[start + ".route(".len()..];
            let Some(open) = rest.find('"') else { break };
            let after = &rest[open + 1..];
            let Some(close) = after.find('"') else { break };
            let path = after[..close].to_owned();
            let end = rest.find(")\n").unwrap_or(rest.len());
            let call = &rest[..end];
            let methods = ["get", "post", "put", "delete"]
                .iter()
                .filter(|method| call.contains(&format!("{method}(")))
                .map(|method| (*method).to_owned())
                .collect();
            routes.push((path, methods));
        }
        routes
    }

    #[test]
    fn every_route_is_documented() {
        let document = serde_json::to_value(document()).expect("document serializes");
        let routes = routed_paths();
        assert!(routes.len() >= 20, "{routes:?}");
        for (path, methods) in routes {
            for method in methods {
                // The MoMo intake also accepts PUT, served by the same handler.
                if path == "/v1/webhooks/momo/{callback_token}" && method == "put" {
                    continue;
                }
                assert!(
                    document["paths"][&path][&method].is_object(),
                    "{method} {path} is routed but not in the OpenAPI document"
                );
            }
        }
    }

    #[test]
    fn debug_routes_are_absent() {
        let document = serde_json::to_value(document()).expect("document serializes");
        let paths = document["paths"].as_object().expect("paths");
        assert!(
            paths.keys().all(|path| !path.starts_with("/debug")),
            "{paths:?}"
        );
        assert!(paths.contains_key("/v1/payouts"));
    }

    #[test]
    fn every_problem_type_is_listed() {
        let document = serde_json::to_value(document()).expect("document serializes");
        let listed = document["x-problem-types"]
            .as_array()
            .expect("x-problem-types");
        for error in ApiError::catalogue() {
            let (problem_type, _, status) = error.describe();
            assert!(
                listed
                    .iter()
                    .any(|entry| entry["type"] == problem_type && entry["status"] == status),
                "{problem_type} missing"
            );
        }
        let description = document["components"]["schemas"]["Problem"]["description"]
            .as_str()
            .expect("Problem description");
        assert!(
            description.contains("/problems/insufficient-funds"),
            "{description}"
        );
    }
}
