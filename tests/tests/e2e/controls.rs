//! Production controls against the real server and PostgreSQL: prod startup
//! checks, debug routes, the staging gate, CORS and maintenance mode.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use nepxy_api::Config;
use nepxy_api::config::ConfigError;
use nepxy_api::webhooks::retry::RetryWorker;
use nepxy_tests::{
    Caller, Reply, TEST_BOOTSTRAP_SECRET, TEST_JWT_SECRET, TEST_MOMO_SECRET, TEST_THUNES_SECRET,
    TEST_TMONEY_SECRET, TestApp, assert_problem, fast_retry_settings, momo_path, momo_report,
    payout_body, spawn_app, spawn_app_with, thunes_report, tmoney_report,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const GATE_KEY: &str = "staging-gate-key-for-tests";
const ALLOWED_ORIGIN: &str = "https://app.nepxy.com";
const ALLOWED_LOCAL_ORIGIN: &str = "http://localhost:5173";
/// Maximum wait for the webhook retry worker.
const RETRY_WAIT: Duration = Duration::from_secs(20);

// Startup checks, through Config::from_lookup.

fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Config::from_lookup(|name| vars.get(name).cloned())
}

fn problems_of(pairs: &[(&str, &str)]) -> String {
    match config_from(pairs) {
        Ok(_) => panic!("configuration {pairs:?} was accepted"),
        Err(error) => error.to_string(),
    }
}

/// Returns a complete prod configuration. Its providers point at
/// live-looking https endpoints that no test contacts.
fn prod_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("APP_ENV", "prod"),
        (
            "DATABASE_URL",
            "postgres://ledger:db-password-9q7@127.0.0.1/ledger",
        ),
        ("JWT_SECRET", TEST_JWT_SECRET),
        ("TMONEY_WEBHOOK_SECRET", TEST_TMONEY_SECRET),
        ("THUNES_WEBHOOK_SECRET", TEST_THUNES_SECRET),
        ("MOMO_CALLBACK_SECRET", TEST_MOMO_SECRET),
        ("MOMO_BASE_URL", "https://api.momo.example"),
        ("MOMO_API_USER", "live-momo-user-4c1d"),
        ("MOMO_API_KEY", "live-momo-api-key-8e2f"),
        ("MOMO_SUBSCRIPTION_KEY", "live-momo-subscription-5a9b"),
        ("MOMO_TARGET_ENVIRONMENT", "mtntogo"),
        ("MOMO_CALLBACK_BASE_URL", "https://api.nepxy.example"),
        ("TMONEY_BASE_URL", "https://api.tmoney.example"),
        ("TMONEY_API_KEY", "live-tmoney-key-3d7c"),
        ("CORS_ALLOWED_ORIGINS", ALLOWED_ORIGIN),
    ]
}

/// `prod_vars()` without `removed`, and with `changed` set.
fn prod_vars_with(
    removed: &[&str],
    changed: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = prod_vars()
        .into_iter()
        .filter(|(name, _)| !removed.contains(name))
        .filter(|(name, _)| !changed.iter().any(|(changed, _)| changed == name))
        .collect();
    vars.extend_from_slice(changed);
    vars
}

#[test]
fn prod_config_complete_is_accepted() {
    let config = config_from(&prod_vars()).unwrap_or_else(|error| panic!("{error}"));
    assert!(
        !config.controls.debug_routes,
        "debug routes are off in prod"
    );
    assert!(!config.controls.maintenance_mode, "maintenance is off");
}

#[test]
fn prod_config_names_missing_secrets() {
    let message = problems_of(&prod_vars_with(
        &[
            "DATABASE_URL",
            "JWT_SECRET",
            "TMONEY_WEBHOOK_SECRET",
            "THUNES_WEBHOOK_SECRET",
            "MOMO_CALLBACK_SECRET",
        ],
        &[],
    ));
    for name in [
        "DATABASE_URL",
        "JWT_SECRET",
        "TMONEY_WEBHOOK_SECRET",
        "THUNES_WEBHOOK_SECRET",
        "MOMO_CALLBACK_SECRET",
    ] {
        assert!(message.contains(name), "{name} is not named in {message}");
    }
    for (name, value) in prod_vars() {
        if name != "APP_ENV" {
            assert!(
                !message.contains(value),
                "the value of {name} leaked into {message}"
            );
        }
    }
}

#[test]
fn prod_config_callback_secret_only_with_momo() {
    let without_momo = prod_vars_with(
        &[
            "MOMO_CALLBACK_SECRET",
            "MOMO_BASE_URL",
            "MOMO_API_USER",
            "MOMO_API_KEY",
            "MOMO_SUBSCRIPTION_KEY",
            "MOMO_TARGET_ENVIRONMENT",
            "MOMO_CALLBACK_BASE_URL",
        ],
        &[],
    );
    assert!(
        config_from(&without_momo).is_ok(),
        "MOMO_CALLBACK_SECRET is not required while MoMo is not configured"
    );

    let disabled = prod_vars_with(&["MOMO_CALLBACK_SECRET"], &[("PROVIDER_DISABLED", "momo")]);
    let message = problems_of(&disabled);
    assert!(
        message.contains("MOMO_CALLBACK_SECRET"),
        "a configured but disabled MoMo still needs its callback secret: {message}"
    );
}

#[test]
fn prod_config_names_missing_momo_keys() {
    let message = problems_of(&prod_vars_with(
        &["MOMO_API_USER", "MOMO_SUBSCRIPTION_KEY"],
        &[],
    ));
    assert!(message.contains("MOMO_API_USER"), "{message}");
    assert!(message.contains("MOMO_SUBSCRIPTION_KEY"), "{message}");
    assert!(
        !message.contains("live-momo-api-key-8e2f"),
        "value leaked: {message}"
    );
    assert!(
        !message.contains("api.momo.example"),
        "value leaked: {message}"
    );
}

#[test]
fn prod_config_rejects_cors_wildcard() {
    let message = problems_of(&prod_vars_with(
        &[],
        &[("CORS_ALLOWED_ORIGINS", "https://app.nepxy.com,*")],
    ));
    assert!(message.contains("CORS_ALLOWED_ORIGINS"), "{message}");
    assert!(
        !message.contains("app.nepxy.com"),
        "value leaked: {message}"
    );

    let dev = config_from(&[
        ("DATABASE_URL", "postgres://127.0.0.1/ledger"),
        ("JWT_SECRET", TEST_JWT_SECRET),
        ("CORS_ALLOWED_ORIGINS", "*"),
    ]);
    assert!(dev.is_ok(), "dev accepts *: {:?}", dev.err());
}

#[test]
fn prod_config_rejects_debug_routes() {
    let message = problems_of(&prod_vars_with(&[], &[("DEBUG_ROUTES", "1")]));
    assert!(message.contains("DEBUG_ROUTES"), "{message}");

    let switched_off = config_from(&prod_vars_with(&[], &[("DEBUG_ROUTES", "0")]));
    assert!(
        switched_off.is_ok(),
        "DEBUG_ROUTES=0 is fine in prod: {:?}",
        switched_off.err()
    );
}

#[test]
fn prod_config_rejects_short_jwt_secret() {
    let message = problems_of(&prod_vars_with(
        &[],
        &[("JWT_SECRET", "short-jwt-secret-77")],
    ));
    assert!(message.contains("JWT_SECRET is too short"), "{message}");
    assert!(
        !message.contains("short-jwt-secret-77"),
        "value leaked: {message}"
    );
}

#[test]
fn prod_config_lists_every_problem() {
    let message = problems_of(&prod_vars_with(
        &["TMONEY_WEBHOOK_SECRET", "THUNES_WEBHOOK_SECRET"],
        &[
            ("CORS_ALLOWED_ORIGINS", "*"),
            ("DEBUG_ROUTES", "1"),
            ("JWT_SECRET", "short-jwt-secret-77"),
        ],
    ));
    for name in [
        "TMONEY_WEBHOOK_SECRET",
        "THUNES_WEBHOOK_SECRET",
        "CORS_ALLOWED_ORIGINS",
        "DEBUG_ROUTES",
        "JWT_SECRET",
    ] {
        assert!(message.contains(name), "{name} is not named in {message}");
    }
}

#[test]
fn staging_config_rejects_live_providers() {
    let message = problems_of(&prod_vars_with(&[], &[("APP_ENV", "staging")]));
    assert!(message.contains("TMONEY_BASE_URL"), "{message}");
    assert!(message.contains("MOMO_BASE_URL"), "{message}");
    assert!(message.contains("MOMO_TARGET_ENVIRONMENT"), "{message}");
    assert!(
        !message.contains("api.tmoney.example"),
        "value leaked: {message}"
    );
}

#[test]
fn control_switches_reject_other_values() {
    let message = problems_of(&[
        ("DATABASE_URL", "postgres://127.0.0.1/ledger"),
        ("JWT_SECRET", TEST_JWT_SECRET),
        ("MAINTENANCE_MODE", "yes-please"),
        ("DEBUG_ROUTES", "on-please"),
        ("CORS_ALLOWED_ORIGINS", "https://app.nepxy.com/path-here"),
    ]);
    assert!(
        message.contains("MAINTENANCE_MODE must be 0 or 1"),
        "{message}"
    );
    assert!(message.contains("DEBUG_ROUTES must be 0 or 1"), "{message}");
    assert!(
        message.contains("CORS_ALLOWED_ORIGINS entry 1"),
        "{message}"
    );
    assert!(!message.contains("please"), "value leaked: {message}");
    assert!(!message.contains("path-here"), "value leaked: {message}");
}

// Debug routes.

#[tokio::test]
async fn debug_version_in_dev() {
    let app = spawn_app_with(&[("GIT_SHA", "0123abcd")]).await;

    let reply = app
        .send(Method::GET, "/debug/version", None, &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let health = app.send(Method::GET, "/health", None, &[], None).await;
    assert_eq!(reply.body["version"], health.body["version"], "version");
    assert!(reply.body["version"].is_string(), "{:?}", reply.body);
    assert_eq!(reply.body["app_env"], "dev");
    assert_eq!(reply.body["git_sha"], "0123abcd");

    let app = spawn_app().await;
    let reply = app
        .send(Method::GET, "/debug/version", None, &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["git_sha"], Value::Null, "no GIT_SHA");
}

#[tokio::test]
async fn debug_config_redacts_secrets() {
    let app = spawn_app_with(&[
        ("TMONEY_BASE_URL", "http://127.0.0.1:9"),
        ("TMONEY_API_KEY", "sandbox-tmoney-key-6b1e"),
        ("THUNES_WEBHOOK_SECRET_OLD", TEST_THUNES_SECRET),
        ("CORS_ALLOWED_ORIGINS", ALLOWED_ORIGIN),
    ])
    .await;

    let reply = app
        .send(Method::GET, "/debug/config", None, &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let text = reply.body.to_string();
    for (name, secret) in [
        ("JWT_SECRET", TEST_JWT_SECRET),
        ("BOOTSTRAP_ADMIN_SECRET", TEST_BOOTSTRAP_SECRET),
        ("TMONEY_WEBHOOK_SECRET", TEST_TMONEY_SECRET),
        ("THUNES_WEBHOOK_SECRET", TEST_THUNES_SECRET),
        ("MOMO_CALLBACK_SECRET", TEST_MOMO_SECRET),
        ("TMONEY_API_KEY", "sandbox-tmoney-key-6b1e"),
        ("DATABASE_URL", app.database_url.as_str()),
    ] {
        assert!(!text.contains(secret), "the value of {name} is in {text}");
        assert_eq!(
            reply.body["secrets"][name], "set",
            "{name} is reported as set"
        );
    }
    assert_eq!(reply.body["secrets"]["STAGING_GATE_KEY"], "unset");
    assert_eq!(reply.body["secrets"]["TMONEY_WEBHOOK_SECRET_OLD"], "unset");
    assert_eq!(reply.body["secrets"]["THUNES_WEBHOOK_SECRET_OLD"], "set");
    assert_eq!(reply.body["settings"]["APP_ENV"], "dev");
    assert_eq!(
        reply.body["settings"]["TMONEY_BASE_URL"],
        "http://127.0.0.1:9"
    );
    assert_eq!(
        reply.body["settings"]["CORS_ALLOWED_ORIGINS"],
        json!([ALLOWED_ORIGIN])
    );
    assert_eq!(reply.body["maintenance"], false);
}

#[tokio::test]
async fn debug_routes_switched_off_in_dev() {
    let app = spawn_app_with(&[("DEBUG_ROUTES", "0")]).await;
    let reference = app
        .send(Method::GET, "/v1/no-such-route", None, &[], None)
        .await;
    for path in ["/debug/version", "/debug/config"] {
        let reply = app.send(Method::GET, path, None, &[], None).await;
        assert_same_as_unknown_route(&reference, &reply, path);
    }
}

/// Starts a prod server. Its providers point at live-looking URLs, which
/// nothing contacts because the tests start no dispatcher.
async fn spawn_prod_app(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("APP_ENV", "prod"),
        ("TMONEY_BASE_URL", "https://api.tmoney.example"),
        ("TMONEY_API_KEY", "live-tmoney-key-3d7c"),
        ("CORS_ALLOWED_ORIGINS", ALLOWED_ORIGIN),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

/// Asserts that `reply` is the router's response to an unknown route:
/// the same status, header names and body, except for `request_id`.
fn assert_same_as_unknown_route(reference: &Reply, reply: &Reply, case: &str) {
    assert_problem(reply, StatusCode::NOT_FOUND, "/problems/not-found", case);
    assert_eq!(reply.status, reference.status, "{case}: status");
    assert_eq!(
        reply.content_type(),
        reference.content_type(),
        "{case}: content type"
    );
    assert_eq!(
        header_names(reply),
        header_names(reference),
        "{case}: header names"
    );
    assert_eq!(
        without_request_id(&reply.body),
        without_request_id(&reference.body),
        "{case}: body"
    );
}

fn header_names(reply: &Reply) -> BTreeSet<String> {
    reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect()
}

fn without_request_id(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("request_id");
    }
    body
}

/// Sends `GET {target}` over a plain TCP connection, so the path reaches the
/// server exactly as written; reqwest would resolve `..` first.
async fn get_verbatim(app: &TestApp, target: &str, headers: &[(&str, &str)]) -> Reply {
    let address = app.base_url.strip_prefix("http://").expect("http base URL");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the test server");
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");

    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("response has a header section");
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let code: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("invalid status line {status_line:?}"));
    let mut header_map = reqwest::header::HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        header_map.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
            reqwest::header::HeaderValue::from_str(value.trim()).expect("header value"),
        );
    }
    Reply {
        status: StatusCode::from_u16(code).expect("status code"),
        headers: header_map,
        body: serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())),
    }
}

#[tokio::test]
async fn prod_debug_paths_are_unknown_routes() {
    let app = spawn_prod_app(&[("STAGING_GATE_KEY", GATE_KEY)]).await;
    let admin = app.bootstrap_admin().await;
    let reference = app
        .send(Method::GET, "/v1/no-such-route", None, &[], None)
        .await;
    assert_problem(
        &reference,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "unknown route",
    );

    let bearer = format!("Bearer {}", admin.token);
    let header_sets: [(&str, Vec<(&str, &str)>); 4] = [
        ("no headers", vec![]),
        ("admin token", vec![("authorization", bearer.as_str())]),
        ("gate key", vec![("x-staging-gate-key", GATE_KEY)]),
        (
            "admin token and gate key",
            vec![
                ("authorization", bearer.as_str()),
                ("x-staging-gate-key", GATE_KEY),
            ],
        ),
    ];
    let paths = [
        "/debug/version",
        "/debug/config",
        "/debug",
        "/debug/",
        "/DEBUG/version",
        "/debug/version?x=1",
    ];
    // Plain TCP requests close the connection, so their reference is another
    // plain TCP request.
    let reference_verbatim = get_verbatim(&app, "/v1/no-such-route", &[]).await;
    for (headers_case, headers) in &header_sets {
        for path in paths {
            let case = format!("GET {path} with {headers_case}");
            let reply = app.send(Method::GET, path, None, headers, None).await;
            assert_same_as_unknown_route(&reference, &reply, &case);
        }
        let case = format!("GET /debug/../debug/version verbatim with {headers_case}");
        let reply = get_verbatim(&app, "/debug/../debug/version", headers).await;
        assert_same_as_unknown_route(&reference_verbatim, &reply, &case);
    }
    let reply = get_verbatim(&app, "/debug/version", &[]).await;
    assert_same_as_unknown_route(&reference_verbatim, &reply, "GET /debug/version verbatim");
}

#[tokio::test]
async fn prod_openapi_lists_no_debug_route() {
    let app = spawn_prod_app(&[]).await;
    let reply = app
        .send(Method::GET, "/openapi.json", None, &[], None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let paths = reply.body["paths"].as_object().expect("paths object");
    assert!(paths.contains_key("/v1/payouts"), "{paths:?}");
    assert!(paths.contains_key("/v1/webhooks/momo/{callback_token}"));
    for path in paths.keys() {
        assert!(
            !path.to_ascii_lowercase().contains("debug"),
            "{path} is in the prod OpenAPI document"
        );
    }
    let text = reply.body.to_string();
    assert!(!text.contains("/debug/"), "a debug route is mentioned");
}

#[tokio::test]
async fn prod_ignores_staging_gate_key() {
    let app = spawn_prod_app(&[("STAGING_GATE_KEY", GATE_KEY)]).await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;

    let reply = app.get("/v1/payouts", &client.token).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "no gate key in prod: {:?}",
        reply.body
    );
    let reply = app
        .send(
            Method::GET,
            "/v1/payouts",
            Some(&client.token),
            &[("x-staging-gate-key", "wrong-key")],
            None,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a wrong gate key in prod: {:?}",
        reply.body
    );
}

// Staging gate.

/// Sends a request to a gated staging server, with the gate key when
/// `with_key` is set.
async fn send_gated(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    with_key: bool,
    body: Option<&Value>,
) -> Reply {
    let headers: &[(&str, &str)] = if with_key {
        &[("x-staging-gate-key", GATE_KEY)]
    } else {
        &[]
    };
    app.send(method, path, token, headers, body).await
}

/// Bootstraps an admin and creates a client through the gate.
async fn gated_admin_and_client(app: &TestApp) -> (Caller, Caller) {
    let reply = app
        .send(
            Method::POST,
            "/v1/admin/bootstrap",
            None,
            &[
                ("x-bootstrap-secret", TEST_BOOTSTRAP_SECRET),
                ("x-staging-gate-key", GATE_KEY),
            ],
            None,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "bootstrap: {:?}",
        reply.body
    );
    let admin = gated_caller(app, &reply.body).await;
    let reply = send_gated(
        app,
        Method::POST,
        "/v1/admin/clients",
        Some(&admin.token),
        true,
        Some(&json!({ "name": "gated client", "role": "client" })),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "create client: {:?}",
        reply.body
    );
    let client = gated_caller(app, &reply.body).await;
    (admin, client)
}

async fn gated_caller(app: &TestApp, created: &Value) -> Caller {
    let client_id: Uuid = created["client_id"]
        .as_str()
        .expect("client_id")
        .parse()
        .expect("uuid");
    let secret = created["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_owned();
    let body = json!({
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
    });
    let reply = send_gated(app, Method::POST, "/v1/auth/token", None, true, Some(&body)).await;
    assert_eq!(reply.status, StatusCode::OK, "token: {:?}", reply.body);
    let token = reply.body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    Caller {
        client_id,
        secret,
        token,
    }
}

fn assert_gate_rejected(reply: &Reply, case: &str) {
    assert_problem(
        reply,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        case,
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("X-Staging-Gate-Key"),
        "{case}: detail {detail:?}"
    );
}

#[tokio::test]
async fn staging_gate_requires_key() {
    let app = spawn_app_with(&[("APP_ENV", "staging"), ("STAGING_GATE_KEY", GATE_KEY)]).await;
    let (admin, client) = gated_admin_and_client(&app).await;
    let new_client = json!({ "name": "another", "role": "auditor" });

    let wrong_keys = [
        ("no key", None),
        ("wrong key", Some("staging-gate-key-for-tests-but-wrong")),
        ("key prefix", Some("staging-gate-key")),
        ("key in other case", Some("STAGING-GATE-KEY-FOR-TESTS")),
        (
            "key with a space inside",
            Some("staging-gate-key for-tests"),
        ),
    ];
    for (case, key) in wrong_keys {
        let headers: Vec<(&str, &str)> = key
            .map(|key| ("x-staging-gate-key", key))
            .into_iter()
            .collect();
        let reply = app
            .send(
                Method::GET,
                "/v1/payouts",
                Some(&client.token),
                &headers,
                None,
            )
            .await;
        assert_gate_rejected(&reply, &format!("GET /v1/payouts, {case}"));
        let reply = app
            .send(
                Method::POST,
                "/v1/admin/clients",
                Some(&admin.token),
                &headers,
                Some(&new_client),
            )
            .await;
        assert_gate_rejected(&reply, &format!("POST /v1/admin/clients, {case}"));
    }
    assert_eq!(
        app.count("SELECT count(*) FROM clients").await,
        2,
        "no client was created without the key"
    );

    let reply = send_gated(
        &app,
        Method::GET,
        "/v1/payouts",
        Some(&client.token),
        true,
        None,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "GET /v1/payouts with the key: {:?}",
        reply.body
    );
    let reply = send_gated(
        &app,
        Method::POST,
        "/v1/admin/clients",
        Some(&admin.token),
        true,
        Some(&new_client),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "POST /v1/admin/clients with the key: {:?}",
        reply.body
    );

    // Routes that do not exist and debug routes are behind the gate too.
    let reply = send_gated(&app, Method::GET, "/v1/no-such-route", None, false, None).await;
    assert_gate_rejected(&reply, "unknown route without the key");
    let reply = send_gated(&app, Method::GET, "/v1/no-such-route", None, true, None).await;
    assert_problem(
        &reply,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "unknown route with the key",
    );
    let reply = send_gated(&app, Method::GET, "/debug/version", None, false, None).await;
    assert_gate_rejected(&reply, "/debug/version without the key");
    let reply = send_gated(&app, Method::GET, "/debug/version", None, true, None).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "/debug/version with the key: {:?}",
        reply.body
    );
    assert_eq!(reply.body["app_env"], "staging");

    // A stored delivery is read with GET /v1/webhooks/{id}, which is gated.
    let reply = send_gated(
        &app,
        Method::GET,
        "/v1/webhooks/tmoney",
        Some(&admin.token),
        false,
        None,
    )
    .await;
    assert_gate_rejected(&reply, "GET /v1/webhooks/tmoney without the key");

    // The gate's response keeps a valid request id and replaces an invalid one.
    let reply = app
        .send(
            Method::GET,
            "/v1/payouts",
            None,
            &[("x-request-id", "gate-check-1")],
            None,
        )
        .await;
    assert_eq!(
        reply.header("x-request-id"),
        Some("gate-check-1"),
        "request id echoed"
    );
    assert_eq!(
        reply.body["request_id"], "gate-check-1",
        "problem request_id"
    );
    let too_long = "g".repeat(129);
    for (case, id) in [
        ("129 characters", too_long.as_str()),
        ("a slash", "gate/1"),
        ("a space", "gate 1"),
    ] {
        let reply = app
            .send(
                Method::GET,
                "/v1/payouts",
                None,
                &[("x-request-id", id)],
                None,
            )
            .await;
        let replaced = reply.header("x-request-id").expect("X-Request-ID");
        assert!(
            Uuid::parse_str(replaced).is_ok(),
            "{case}: {replaced:?} is a UUID"
        );
        assert_eq!(
            reply.body["request_id"], replaced,
            "{case}: problem request_id"
        );
    }
}

#[tokio::test]
async fn staging_gate_lets_health_and_webhooks_through() {
    let app = spawn_app_with(&[("APP_ENV", "staging"), ("STAGING_GATE_KEY", GATE_KEY)]).await;

    let reply = app.send(Method::GET, "/health", None, &[], None).await;
    assert_eq!(reply.status, StatusCode::OK, "/health: {:?}", reply.body);

    // Reports for payouts that do not exist are stored as orphans.
    let unknown = Uuid::new_v4();
    let reply = app
        .send_tmoney(&tmoney_report(
            &unknown.to_string(),
            "SUCCESS",
            1_000,
            "XOF",
        ))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "TMoney: {:?}",
        reply.body
    );
    assert_eq!(reply.body["verdict"], "orphan", "TMoney verdict");

    let reply = app
        .send_thunes(&thunes_report(
            &unknown.to_string(),
            json!("COMPLETED"),
            json!(7),
            1_000,
            "XOF",
        ))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "Thunes: {:?}",
        reply.body
    );
    assert_eq!(reply.body["verdict"], "orphan", "Thunes verdict");

    // A PENDING callback needs no confirmation from MoMo and returns 200.
    let body = momo_report(&unknown.to_string(), "PENDING", 1_000, "XOF");
    for method in [Method::POST, Method::PUT] {
        let reply = app
            .send_raw(
                method.clone(),
                &momo_path(unknown),
                None,
                &[("content-type", "application/json")],
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "MoMo {method}: {:?}",
            reply.body
        );
        assert_eq!(reply.body["verdict"], "pending", "MoMo {method} verdict");
    }
}

#[tokio::test]
async fn dev_ignores_staging_gate_key() {
    let app = spawn_app_with(&[("STAGING_GATE_KEY", GATE_KEY)]).await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let reply = app.get("/v1/payouts", &client.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

// CORS.

fn cors_headers(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

fn varies_on_origin(reply: &Reply) -> bool {
    reply
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|name| name.trim().eq_ignore_ascii_case("origin"))
}

async fn preflight(app: &TestApp, origin: &str) -> Reply {
    app.send(
        Method::OPTIONS,
        "/v1/payouts",
        None,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            ),
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn cors_echoes_allowed_origins() {
    let origins = format!("{ALLOWED_ORIGIN}, {ALLOWED_LOCAL_ORIGIN}");
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", &origins)]).await;

    for origin in [ALLOWED_ORIGIN, ALLOWED_LOCAL_ORIGIN] {
        let reply = app
            .send(Method::GET, "/health", None, &[("origin", origin)], None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{origin}");
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some(origin),
            "{origin}: allow-origin"
        );
        assert_eq!(
            reply.header("access-control-allow-credentials"),
            Some("true"),
            "{origin}: credentials"
        );
        assert!(varies_on_origin(&reply), "{origin}: Vary: Origin");
        let exposed = reply
            .header("access-control-expose-headers")
            .unwrap_or_default();
        assert!(
            exposed.contains("x-request-id"),
            "{origin}: X-Request-ID is readable"
        );
    }

    // Errors carry the headers too, so the page can read the problem.
    let reply = app
        .send(
            Method::GET,
            "/v1/payouts",
            None,
            &[("origin", ALLOWED_ORIGIN)],
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN),
        "on a 401"
    );
}

#[tokio::test]
async fn cors_ignores_other_origins() {
    let origins = format!("{ALLOWED_ORIGIN}, {ALLOWED_LOCAL_ORIGIN}");
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", &origins)]).await;

    let denied = [
        ("null origin", "null"),
        ("look-alike suffix", "https://app.nepxy.com.evil.test"),
        ("look-alike prefix", "https://evil-app.nepxy.com"),
        ("prefix of an allowed origin", "https://app.nepxy.co"),
        ("allowed origin as a prefix", "https://app.nepxy.comm"),
        ("http instead of https", "http://app.nepxy.com"),
        ("another port", "https://app.nepxy.com:8443"),
        ("another local port", "http://localhost:5174"),
        ("trailing slash", "https://app.nepxy.com/"),
        ("upper case", "https://APP.NEPXY.COM"),
        ("two origins", "https://app.nepxy.com https://evil.test"),
        ("unrelated origin", "https://evil.test"),
    ];
    for (case, origin) in denied {
        let reply = app
            .send(Method::GET, "/health", None, &[("origin", origin)], None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{case}");
        assert_eq!(
            cors_headers(&reply),
            Vec::<String>::new(),
            "{case}: CORS headers on GET"
        );

        let reply = preflight(&app, origin).await;
        assert!(
            !reply.status.is_success(),
            "{case}: preflight status {}",
            reply.status
        );
        assert_eq!(
            cors_headers(&reply),
            Vec::<String>::new(),
            "{case}: CORS headers on the preflight"
        );
    }

    let reply = app.send(Method::GET, "/health", None, &[], None).await;
    assert_eq!(
        cors_headers(&reply),
        Vec::<String>::new(),
        "no Origin header"
    );
}

#[tokio::test]
async fn cors_preflight_for_allowed_origin() {
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", ALLOWED_ORIGIN)]).await;

    let reply = preflight(&app, ALLOWED_ORIGIN).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(varies_on_origin(&reply), "Vary: Origin");
    assert!(
        reply.header("x-request-id").is_some(),
        "X-Request-ID on the preflight"
    );
    let methods = reply
        .header("access-control-allow-methods")
        .unwrap_or_default();
    for method in ["GET", "POST", "PUT", "DELETE"] {
        assert!(
            methods.split(", ").any(|m| m == method),
            "{method} in {methods:?}"
        );
    }
    let headers = reply
        .header("access-control-allow-headers")
        .unwrap_or_default();
    for header in [
        "authorization",
        "content-type",
        "idempotency-key",
        "x-request-id",
    ] {
        assert!(
            headers.split(", ").any(|h| h == header),
            "{header} in {headers:?}"
        );
    }
    assert!(
        reply.header("access-control-max-age").is_some(),
        "preflight max age"
    );
}

#[tokio::test]
async fn cors_wildcard_in_dev_without_credentials() {
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", "*")]).await;
    let reply = app
        .send(
            Method::GET,
            "/health",
            None,
            &[("origin", "https://any.test")],
            None,
        )
        .await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        None,
        "no credentials with *"
    );
}

#[tokio::test]
async fn cors_unset_sends_no_headers() {
    let app = spawn_app().await;
    let reply = app
        .send(
            Method::GET,
            "/health",
            None,
            &[("origin", ALLOWED_ORIGIN)],
            None,
        )
        .await;
    assert_eq!(cors_headers(&reply), Vec::<String>::new(), "GET");
    let reply = preflight(&app, ALLOWED_ORIGIN).await;
    assert_eq!(cors_headers(&reply), Vec::<String>::new(), "preflight");
}

#[tokio::test]
async fn staging_preflight_needs_no_gate_key() {
    let app = spawn_app_with(&[
        ("APP_ENV", "staging"),
        ("STAGING_GATE_KEY", GATE_KEY),
        ("CORS_ALLOWED_ORIGINS", ALLOWED_ORIGIN),
    ])
    .await;
    // Browsers send preflights without custom headers.
    let reply = preflight(&app, ALLOWED_ORIGIN).await;
    assert_eq!(
        reply.status,
        StatusCode::NO_CONTENT,
        "allowed origin: {:?}",
        reply.body
    );
    let reply = preflight(&app, "https://evil.test").await;
    assert_gate_rejected(&reply, "preflight of another origin");
    assert_eq!(cors_headers(&reply), Vec::<String>::new(), "another origin");
}

// Maintenance mode.

fn assert_maintenance(reply: &Reply, case: &str) {
    assert_problem(
        reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "/problems/maintenance",
        case,
    );
    let retry_after = reply.header("retry-after").unwrap_or_default();
    let seconds: u64 = retry_after.parse().unwrap_or_else(|_| {
        panic!("{case}: Retry-After {retry_after:?} is not a number of seconds")
    });
    assert!(seconds > 0, "{case}: Retry-After is positive");
}

async fn idempotency_rows(app: &TestApp, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = $1")
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .expect("count idempotency rows")
}

#[tokio::test]
async fn maintenance_pauses_writes_and_keeps_keys_usable() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(10_000, "XOF").await;
    let existing = app
        .create_payout(&client, "before-maintenance", 1_000, "tmoney")
        .await;

    app.state.maintenance.set(true);
    let events = app.event_count().await;
    let payouts = app.count("SELECT count(*) FROM payouts").await;

    let reply = app
        .post_payout(&client, "during-maintenance", &payout_body(2_000, "tmoney"))
        .await;
    assert_maintenance(&reply, "POST /v1/payouts");
    let reply = app
        .send(
            Method::POST,
            &format!("/v1/accounts/{}/deposits", client.client_id),
            Some(&admin.token),
            &[("idempotency-key", "deposit-during-maintenance")],
            Some(&json!({ "amount": 500, "currency": "XOF" })),
        )
        .await;
    assert_maintenance(&reply, "POST deposits");
    let reply = app
        .send(
            Method::POST,
            "/v1/admin/clients",
            Some(&admin.token),
            &[],
            Some(&json!({ "name": "late", "role": "client" })),
        )
        .await;
    assert_maintenance(&reply, "POST /v1/admin/clients");

    assert_eq!(app.event_count().await, events, "no event was stored");
    assert_eq!(
        app.count("SELECT count(*) FROM payouts").await,
        payouts,
        "no payout row"
    );
    assert_eq!(
        idempotency_rows(&app, "during-maintenance").await,
        0,
        "payout key unused"
    );
    assert_eq!(
        idempotency_rows(&app, "deposit-during-maintenance").await,
        0,
        "deposit key unused"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM clients").await,
        2,
        "no client created"
    );

    // Reads, tokens and /health keep working.
    let reply = app
        .get(&format!("/v1/payouts/{existing}"), &client.token)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "GET payout: {:?}", reply.body);
    let reply = app
        .get(
            &format!("/v1/accounts/{}/balance", client.client_id),
            &client.token,
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "GET balance: {:?}",
        reply.body
    );
    let reply = app.get("/v1/payouts", &client.token).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "GET payouts: {:?}",
        reply.body
    );
    let token = app.token(client.client_id, &client.secret).await;
    assert!(!token.is_empty(), "a token is issued during maintenance");
    let reply = app.send(Method::GET, "/health", None, &[], None).await;
    assert_eq!(reply.status, StatusCode::OK, "/health: {:?}", reply.body);
    assert_eq!(
        reply.body["maintenance"], true,
        "/health reports maintenance"
    );

    app.state.maintenance.set(false);
    let reply = app.send(Method::GET, "/health", None, &[], None).await;
    assert_eq!(
        reply.body["maintenance"], false,
        "/health after maintenance"
    );
    let reply = app
        .post_payout(&client, "during-maintenance", &payout_body(2_000, "tmoney"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "same key after maintenance: {:?}",
        reply.body
    );
    assert_eq!(
        reply.header("idempotent-replayed"),
        None,
        "a new payout, not a replay"
    );
    assert_eq!(reply.body["amount"], 2_000);
    assert_eq!(
        idempotency_rows(&app, "during-maintenance").await,
        1,
        "key used once"
    );
}

#[tokio::test]
async fn maintenance_mode_from_startup() {
    let app = spawn_app_with(&[("MAINTENANCE_MODE", "1")]).await;
    let reply = app.send(Method::GET, "/health", None, &[], None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["maintenance"], true);
    let reply = app
        .send(
            Method::POST,
            "/v1/admin/bootstrap",
            None,
            &[
                ("x-bootstrap-secret", TEST_BOOTSTRAP_SECRET),
                ("x-request-id", "maintenance-1"),
            ],
            None,
        )
        .await;
    assert_maintenance(&reply, "POST /v1/admin/bootstrap");
    assert_eq!(reply.body["request_id"], "maintenance-1", "request id kept");
    assert_eq!(
        app.count("SELECT count(*) FROM clients").await,
        0,
        "no admin created"
    );
}

async fn delivery_verdict(app: &TestApp, webhook_id: Uuid) -> String {
    app.stored_delivery(webhook_id).await.verdict
}

async fn wait_for_verdict(app: &TestApp, webhook_id: Uuid, expected: &str) -> String {
    let deadline = tokio::time::Instant::now() + RETRY_WAIT;
    loop {
        let verdict = delivery_verdict(app, webhook_id).await;
        if verdict == expected || tokio::time::Instant::now() >= deadline {
            return verdict;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn maintenance_stores_webhooks_and_applies_later() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let payout_id = app
        .create_payout(&client, "webhook-in-maintenance", 1_000, "tmoney")
        .await;

    app.state.maintenance.set(true);
    let report = tmoney_report(&payout_id.to_string(), "SUCCESS", 1_000, "XOF");
    let reply = app.send_tmoney(&report).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    assert_eq!(reply.body["verdict"], "received");
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("maintenance"), "detail {detail:?}");
    let webhook_id = nepxy_tests::webhook_id_of(&reply);

    let stored = app.stored_delivery(webhook_id).await;
    assert_eq!(stored.verdict, "received", "stored as received");
    assert_eq!(
        stored.body.as_deref(),
        Some(report.as_bytes()),
        "raw body stored"
    );
    assert_eq!(
        app.payout_status(&client, payout_id).await,
        "pending",
        "payout unchanged"
    );
    assert!(
        !app.payout_event_types(payout_id)
            .await
            .contains(&"PayoutSucceeded".to_owned()),
        "no outcome event during maintenance"
    );

    // The retry worker skips its rounds while maintenance is on.
    app.make_retry_due(webhook_id).await;
    let worker = RetryWorker {
        intake: app.state.intake.clone(),
        settings: fast_retry_settings(5),
    };
    let retried = worker.round().await.expect("retry round");
    assert_eq!(retried, 0, "nothing retried during maintenance");
    let attempts = app
        .count(&format!(
            "SELECT count(*) FROM webhook_retry_attempts WHERE webhook_id = '{webhook_id}'"
        ))
        .await;
    assert_eq!(attempts, 0, "no retry attempt spent during maintenance");

    app.state.maintenance.set(false);
    app.make_retry_due(webhook_id).await;
    let _retries = app.start_webhook_retries(fast_retry_settings(5));
    assert_eq!(
        wait_for_verdict(&app, webhook_id, "applied").await,
        "applied"
    );
    assert_eq!(app.payout_status(&client, payout_id).await, "succeeded");
    let succeeded = app
        .payout_event_types(payout_id)
        .await
        .into_iter()
        .filter(|event| event == "PayoutSucceeded")
        .count();
    assert_eq!(succeeded, 1, "applied once");
}

#[tokio::test]
async fn maintenance_forged_webhook_rejected_at_once() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let payout_id = app
        .create_payout(&client, "forged-in-maintenance", 1_000, "tmoney")
        .await;

    app.state.maintenance.set(true);
    let report = tmoney_report(&payout_id.to_string(), "SUCCESS", 1_000, "XOF");
    let headers = [
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "x-timestamp".to_owned(),
            nepxy_tests::unix_now().to_string(),
        ),
        ("x-nonce".to_owned(), "forged-nonce".to_owned()),
        ("x-signature".to_owned(), "00".repeat(32)),
    ];
    let reply = app
        .send_webhook("/v1/webhooks/tmoney", &headers, report.into_bytes())
        .await;
    // Maintenance defers applying, not verifying: a forgery is refused now.
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
    let verdict: String = sqlx::query_scalar("SELECT verdict FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .expect("stored delivery");
    assert_eq!(verdict, "rejected", "stored as rejected");

    app.state.maintenance.set(false);
    let _retries = app.start_webhook_retries(fast_retry_settings(5));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.payout_status(&client, payout_id).await,
        "pending",
        "payout unchanged"
    );
}
