//! Access tokens, roles and the first-admin bootstrap.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use nepxy_tests::{
    Reply, TEST_AUDIENCE, TEST_BOOTSTRAP_SECRET, TEST_ISSUER, TEST_JWT_SECRET, TestApp,
    assert_problem, payout_body, spawn_app, spawn_app_with,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Lifetime of the access tokens the server issues by default, in seconds.
const TOKEN_LIFETIME_SECONDS: i64 = 900;

/// Signs `claims` with HS256 or HS512 and the given secret.
fn sign(algorithm: Algorithm, claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).expect("sign token")
}

/// Builds the claims of a valid client token for `client_id`, issued now.
fn client_claims(client_id: Uuid) -> Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "sub": client_id.to_string(),
        "iat": now,
        "exp": now + TOKEN_LIFETIME_SECONDS,
        "jti": Uuid::new_v4().to_string(),
        "role": "client",
    })
}

/// Returns a copy of `claims` with `name` set to `value`, or removed when
/// `value` is null.
fn with_claim(claims: &Value, name: &str, value: Value) -> Value {
    let mut changed = claims.clone();
    let object = changed.as_object_mut().expect("claims object");
    if value.is_null() {
        object.remove(name);
    } else {
        object.insert(name.to_owned(), value);
    }
    changed
}

/// Builds an unsigned token: header `{"alg":"none"}`, the claims and an
/// empty signature.
fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

async fn request_token(app: &TestApp, client_id: &str, secret: &str) -> Reply {
    app.send(
        Method::POST,
        "/v1/auth/token",
        None,
        &[],
        Some(&json!({
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        })),
    )
    .await
}

async fn bootstrap(app: &TestApp, secret: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = secret
        .map(|secret| vec![("x-bootstrap-secret", secret)])
        .unwrap_or_default();
    app.send(Method::POST, "/v1/admin/bootstrap", None, &headers, None)
        .await
}

#[tokio::test]
async fn token_grant_returns_bearer() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;

    let reply = request_token(&app, &client.client_id.to_string(), &client.secret).await;

    assert_eq!(reply.status, StatusCode::OK, "token: {:?}", reply.body);
    assert_eq!(reply.body["token_type"], "Bearer", "token_type");
    assert_eq!(
        reply.body["expires_in"], TOKEN_LIFETIME_SECONDS,
        "expires_in"
    );
    let token = reply.body["access_token"].as_str().expect("access_token");

    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[TEST_ISSUER]);
    validation.set_audience(&[TEST_AUDIENCE]);
    let key = DecodingKey::from_secret(TEST_JWT_SECRET.as_bytes()).expect("HMAC key");
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("the issued token verifies with the test secret")
        .claims;
    assert_eq!(claims["sub"], client.client_id.to_string(), "sub claim");
    assert_eq!(claims["role"], "client", "role claim");
    assert!(claims["jti"].is_string(), "jti claim is missing");
    let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert_eq!(lifetime, TOKEN_LIFETIME_SECONDS, "exp - iat");

    let balance = app
        .get(&format!("/v1/accounts/{}/balance", client.client_id), token)
        .await;
    assert_eq!(
        balance.status,
        StatusCode::OK,
        "the issued token opens the client's balance: {:?}",
        balance.body
    );
}

#[tokio::test]
async fn token_rejects_bad_credentials() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let client_id = client.client_id.to_string();
    let unknown_id = Uuid::new_v4().to_string();

    let cases = [
        ("wrong secret", client_id.as_str(), "nxs_wrong"),
        (
            "other client's secret",
            client_id.as_str(),
            admin.secret.as_str(),
        ),
        (
            "unknown client",
            unknown_id.as_str(),
            client.secret.as_str(),
        ),
        ("malformed client_id", "not-a-uuid", client.secret.as_str()),
    ];
    for (case, id, secret) in cases {
        let reply = request_token(&app, id, secret).await;
        assert_problem(
            &reply,
            StatusCode::UNAUTHORIZED,
            "/problems/unauthorized",
            case,
        );
        assert!(
            reply.body.get("access_token").is_none(),
            "{case}: the reply must not carry a token"
        );
    }
}

#[tokio::test]
async fn malformed_authorization_is_401() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let path = format!("/v1/accounts/{}/balance", client.client_id);
    let basic = format!("Basic {}", client.token);

    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        ("no Authorization header", vec![]),
        ("Basic scheme", vec![("authorization", basic.as_str())]),
        ("empty bearer token", vec![("authorization", "Bearer ")]),
    ];
    for (case, headers) in cases {
        let reply = app.send(Method::GET, &path, None, &headers, None).await;
        assert_problem(
            &reply,
            StatusCode::UNAUTHORIZED,
            "/problems/unauthorized",
            case,
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer"),
            "{case}: WWW-Authenticate"
        );
    }
}

#[tokio::test]
async fn forged_tokens_are_rejected() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let path = format!("/v1/accounts/{}/balance", client.client_id);
    let now = Utc::now().timestamp();
    let valid = client_claims(client.client_id);

    // A token built by the same code path with untouched claims must pass,
    // or every rejection below would prove nothing.
    let control = sign(Algorithm::HS256, &valid, TEST_JWT_SECRET);
    let reply = app.get(&path, &control).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a correctly signed hand-made token is accepted: {:?}",
        reply.body
    );

    let expired = with_claim(
        &with_claim(&valid, "iat", json!(now - TOKEN_LIFETIME_SECONDS - 60)),
        "exp",
        json!(now - 60),
    );
    let too_long = with_claim(&valid, "exp", json!(now + 2 * 60 * 60));
    let issued_in_future = with_claim(
        &with_claim(&valid, "iat", json!(now + 120)),
        "exp",
        json!(now + 120 + TOKEN_LIFETIME_SECONDS),
    );
    let other_secret = "another-secret-0123456789abcdef-0123456789";

    let cases = [
        ("expired", sign(Algorithm::HS256, &expired, TEST_JWT_SECRET)),
        (
            "wrong audience",
            sign(
                Algorithm::HS256,
                &with_claim(&valid, "aud", json!("other-api")),
                TEST_JWT_SECRET,
            ),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                &with_claim(&valid, "iss", json!("other-issuer")),
                TEST_JWT_SECRET,
            ),
        ),
        ("alg none", unsigned_token(&valid)),
        (
            "signed with another secret",
            sign(Algorithm::HS256, &valid, other_secret),
        ),
        (
            "HS512 with the right secret",
            sign(Algorithm::HS512, &valid, TEST_JWT_SECRET),
        ),
        (
            "missing jti",
            sign(
                Algorithm::HS256,
                &with_claim(&valid, "jti", Value::Null),
                TEST_JWT_SECRET,
            ),
        ),
        (
            "missing role",
            sign(
                Algorithm::HS256,
                &with_claim(&valid, "role", Value::Null),
                TEST_JWT_SECRET,
            ),
        ),
        (
            "unknown role",
            sign(
                Algorithm::HS256,
                &with_claim(&valid, "role", json!("superuser")),
                TEST_JWT_SECRET,
            ),
        ),
        (
            "subject is not a UUID",
            sign(
                Algorithm::HS256,
                &with_claim(&valid, "sub", json!("client-1")),
                TEST_JWT_SECRET,
            ),
        ),
        (
            "lifetime of two hours",
            sign(Algorithm::HS256, &too_long, TEST_JWT_SECRET),
        ),
        (
            "issued in the future",
            sign(Algorithm::HS256, &issued_in_future, TEST_JWT_SECRET),
        ),
    ];
    for (case, token) in cases {
        let reply = app.get(&path, &token).await;
        assert_problem(
            &reply,
            StatusCode::UNAUTHORIZED,
            "/problems/unauthorized",
            case,
        );
    }
}

#[tokio::test]
async fn wrong_role_is_forbidden() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let auditor = app.create_client(&admin, "auditor").await;
    let operator = app.create_client(&admin, "operator").await;

    let reply = app
        .send(
            Method::POST,
            "/v1/admin/clients",
            Some(&client.token),
            &[],
            Some(&json!({ "name": "intruder", "role": "admin" })),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "client creating a client",
    );

    let reply = app
        .post_payout(&auditor, "auditor-payout", &payout_body(1_000, "tmoney"))
        .await;
    assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "auditor creating a payout",
    );

    let reply = app
        .get(
            &format!("/v1/accounts/{}/balance", client.client_id),
            &operator.token,
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "operator reading a balance",
    );

    let reply = app.deposit(&client, client.client_id, 1_000, "XOF").await;
    assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "client depositing to itself",
    );

    let clients = app.count("SELECT count(*) FROM clients").await;
    assert_eq!(clients, 4, "no client was created by the forbidden call");
    let events = app.count("SELECT count(*) FROM events").await;
    assert_eq!(
        events, 4,
        "only the ClientCreated events of the four clients, none from the forbidden calls"
    );
}

#[tokio::test]
async fn bootstrap_creates_first_admin() {
    let app = spawn_app().await;

    let reply = bootstrap(&app, Some(TEST_BOOTSTRAP_SECRET)).await;

    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "bootstrap: {:?}",
        reply.body
    );
    assert_eq!(reply.body["role"], "admin", "role");
    let client_id = reply.body["client_id"].as_str().expect("client_id");
    let secret = reply.body["client_secret"].as_str().expect("client_secret");
    assert!(secret.starts_with("nxs_"), "secret prefix: {secret}");

    let token = request_token(&app, client_id, secret).await;
    assert_eq!(
        token.status,
        StatusCode::OK,
        "the returned secret grants a token: {:?}",
        token.body
    );
    let admins = app
        .count("SELECT count(*) FROM clients WHERE role = 'admin'")
        .await;
    assert_eq!(admins, 1, "admin rows");
}

#[tokio::test]
async fn second_bootstrap_is_conflict() {
    let app = spawn_app().await;
    app.bootstrap_admin().await;

    let reply = bootstrap(&app, Some(TEST_BOOTSTRAP_SECRET)).await;

    assert_problem(
        &reply,
        StatusCode::CONFLICT,
        "/problems/conflict",
        "second bootstrap",
    );
    let admins = app.count("SELECT count(*) FROM clients").await;
    assert_eq!(admins, 1, "client rows after the second bootstrap");
}

#[tokio::test]
async fn bootstrap_rejects_bad_secret() {
    let app = spawn_app().await;

    let cases = [
        ("wrong secret", Some("bootstrap-secret-for-tests-but-wrong")),
        ("secret prefix", Some("bootstrap-secret")),
        ("empty secret", Some("")),
        ("missing header", None),
    ];
    for (case, secret) in cases {
        let reply = bootstrap(&app, secret).await;
        assert_problem(
            &reply,
            StatusCode::UNAUTHORIZED,
            "/problems/unauthorized",
            case,
        );
    }

    let clients = app.count("SELECT count(*) FROM clients").await;
    assert_eq!(clients, 0, "no client was created");
}

#[tokio::test]
async fn bootstrap_disabled_is_404() {
    // An empty BOOTSTRAP_ADMIN_SECRET counts as unset.
    let app = spawn_app_with(&[("BOOTSTRAP_ADMIN_SECRET", "")]).await;

    let reply = bootstrap(&app, Some(TEST_BOOTSTRAP_SECRET)).await;

    assert_problem(
        &reply,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "bootstrap without a configured secret",
    );
    let clients = app.count("SELECT count(*) FROM clients").await;
    assert_eq!(clients, 0, "no client was created");
}

#[tokio::test]
async fn concurrent_bootstraps_create_one_admin() {
    let app = Arc::new(spawn_app().await);

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let app = Arc::clone(&app);
        requests.spawn(async move { bootstrap(&app, Some(TEST_BOOTSTRAP_SECRET)).await });
    }
    let replies = requests.join_all().await;

    let created = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "bootstraps answered 201");
    for reply in replies
        .iter()
        .filter(|reply| reply.status != StatusCode::CREATED)
    {
        assert_problem(
            reply,
            StatusCode::CONFLICT,
            "/problems/conflict",
            "losing bootstrap",
        );
    }
    let clients = app.count("SELECT count(*) FROM clients").await;
    assert_eq!(clients, 1, "client rows");
    let admins = app
        .count("SELECT count(*) FROM clients WHERE role = 'admin'")
        .await;
    assert_eq!(admins, 1, "admin rows");
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let path = format!("/v1/accounts/{}/balance", admin.client_id);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let header = format!("{scheme} {}", admin.token);
        let reply = app
            .send(
                Method::GET,
                &path,
                None,
                &[("authorization", &header)],
                None,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "scheme {scheme}: {:?}",
            reply.body
        );
    }
}

#[tokio::test]
async fn role_checked_before_request_body() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let auditor = app.create_client(&admin, "auditor").await;
    // No Idempotency-Key and no body: the missing role is reported first.
    let reply = app
        .send(Method::POST, "/v1/payouts", Some(&auditor.token), &[], None)
        .await;
    assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "auditor payout",
    );
}
