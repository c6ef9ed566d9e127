//! Refresh token rotation and reuse detection, revocation, JWT_SECRET_OLD,
//! the maximum access token lifetime, and the audit events of admin actions.

use std::process::{Command, Output};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use nepxy_tests::{
    Caller, Reply, TEST_AUDIENCE, TEST_BOOTSTRAP_SECRET, TEST_ISSUER, TestApp, assert_problem,
    binary_path, spawn_app, spawn_app_on, spawn_app_with,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const OLD_SECRET: &str = "old-jwt-secret-0123456789abcdef-0123456789";
const NEW_SECRET: &str = "new-jwt-secret-0123456789abcdef-0123456789";

/// Runs a client_credentials grant and returns the token response body.
async fn grant(app: &TestApp, caller: &Caller) -> Value {
    let reply = app
        .send(
            Method::POST,
            "/v1/auth/token",
            None,
            &[],
            Some(&json!({
                "grant_type": "client_credentials",
                "client_id": caller.client_id,
                "client_secret": caller.secret,
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "grant: {:?}", reply.body);
    reply.body
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Reply {
    app.send(
        Method::POST,
        "/v1/auth/token",
        None,
        &[],
        Some(&json!({ "grant_type": "refresh_token", "refresh_token": refresh_token })),
    )
    .await
}

async fn revoke(app: &TestApp, token: &str, body: &Value) -> Reply {
    app.send(
        Method::POST,
        "/v1/auth/revoke",
        Some(token),
        &[],
        Some(body),
    )
    .await
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing from {body}"))
}

/// Decodes the claims of a token without checking its signature.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn jti_of(token: &str) -> String {
    claims_of(token)["jti"].as_str().expect("jti").to_owned()
}

/// Status of an authenticated read of the caller's own balance.
async fn status_with(app: &TestApp, client_id: Uuid, token: &str) -> StatusCode {
    app.get(&format!("/v1/accounts/{client_id}/balance"), token)
        .await
        .status
}

#[tokio::test]
async fn refresh_rotates_both_tokens() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;

    let first = grant(&app, &client).await;
    let first_refresh = text(&first, "refresh_token");
    assert!(first_refresh.starts_with("nxr_"), "{first}");
    assert_eq!(first["token_type"], "Bearer");

    let reply = refresh(&app, first_refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "refresh: {:?}", reply.body);
    let second_access = text(&reply.body, "access_token");
    let second_refresh = text(&reply.body, "refresh_token");
    assert_ne!(second_refresh, first_refresh, "a new refresh token");
    assert_ne!(second_access, text(&first, "access_token"));
    assert_eq!(reply.body["expires_in"], 900);
    assert_eq!(
        claims_of(second_access)["fid"],
        claims_of(text(&first, "access_token"))["fid"],
        "the new access token belongs to the same family"
    );
    assert_eq!(
        status_with(&app, client.client_id, second_access).await,
        StatusCode::OK
    );

    // The new refresh token works once more.
    let reply = refresh(&app, second_refresh).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "second refresh: {:?}",
        reply.body
    );

    // Only hashes are stored.
    let hash = Sha256::digest(first_refresh.as_bytes()).to_vec();
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE token_hash = $1")
            .bind(&hash)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(stored, 1, "the refresh token is stored as its SHA-256");
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE position($1::bytea IN token_hash) > 0",
    )
    .bind(first_refresh.as_bytes())
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(plain, 0, "the refresh token itself is not stored");
}

#[tokio::test]
async fn refresh_rejects_unknown_and_mixed_grants() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;

    let reply = refresh(&app, "nxr_not-a-token-this-service-issued").await;
    assert_problem(
        &reply,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "unknown refresh token",
    );

    let reply = app
        .send(
            Method::POST,
            "/v1/auth/token",
            None,
            &[],
            Some(&json!({ "grant_type": "refresh_token" })),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/validation-error",
        "missing refresh_token",
    );

    let body = grant(&app, &client).await;
    let reply = app
        .send(
            Method::POST,
            "/v1/auth/token",
            None,
            &[],
            Some(&json!({
                "grant_type": "refresh_token",
                "refresh_token": text(&body, "refresh_token"),
                "client_id": client.client_id,
                "client_secret": client.secret,
            })),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/validation-error",
        "refresh grant with credentials",
    );
    // The rejected request did not spend the token.
    let reply = refresh(&app, text(&body, "refresh_token")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn reused_refresh_token_revokes_family() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let other_family = grant(&app, &client).await;

    let first = grant(&app, &client).await;
    let spent = text(&first, "refresh_token");
    let reply = refresh(&app, spent).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let second = reply.body;
    let second_access = text(&second, "access_token");
    assert_eq!(
        status_with(&app, client.client_id, second_access).await,
        StatusCode::OK,
        "works before the reuse"
    );

    let reply = refresh(&app, spent).await;
    assert_problem(
        &reply,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "spent refresh token",
    );

    assert_eq!(
        status_with(&app, client.client_id, second_access).await,
        StatusCode::UNAUTHORIZED,
        "the access token issued from the family is revoked"
    );
    assert_eq!(
        status_with(&app, client.client_id, text(&first, "access_token")).await,
        StatusCode::UNAUTHORIZED,
        "the family's first access token is revoked"
    );
    let reply = refresh(&app, text(&second, "refresh_token")).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "the family's live refresh token is revoked: {:?}",
        reply.body
    );
    assert_eq!(
        status_with(&app, client.client_id, text(&other_family, "access_token")).await,
        StatusCode::OK,
        "another family of the same client is untouched"
    );
    assert_eq!(
        refresh(&app, text(&other_family, "refresh_token"))
            .await
            .status,
        StatusCode::OK
    );

    let reused = app
        .count("SELECT count(*) FROM events WHERE event_type = 'RefreshTokenReused'")
        .await;
    assert_eq!(reused, 1, "the reuse is an event");
}

#[tokio::test]
async fn concurrent_refresh_has_one_winner() {
    const ATTEMPTS: usize = 8;
    let app = Arc::new(spawn_app().await);
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let body = grant(&app, &client).await;
    let token = text(&body, "refresh_token").to_owned();
    let family_id = text(&claims_of(text(&body, "access_token")), "fid").to_owned();

    let start = Arc::new(tokio::sync::Barrier::new(ATTEMPTS));
    let mut tasks = Vec::new();
    for _ in 0..ATTEMPTS {
        let app = Arc::clone(&app);
        let token = token.clone();
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            refresh(&app, &token).await
        }));
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    for task in tasks {
        let reply = task.await.expect("task");
        match reply.status {
            StatusCode::OK => winners.push(reply.body),
            StatusCode::UNAUTHORIZED => losers += 1,
            other => panic!("unexpected status {other}: {:?}", reply.body),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one exchange wins");
    assert_eq!(losers, ATTEMPTS - 1);

    let family_tokens: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE family_id = $1::uuid")
            .bind(&family_id)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(family_tokens, 2, "the original and the one winner's token");

    // The losers presented a spent token, so the family is revoked, the
    // winner's tokens included.
    let winner = &winners[0];
    assert_eq!(
        status_with(&app, client.client_id, text(winner, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, text(winner, "refresh_token")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn revoke_by_jti() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let other = app.create_client(&admin, "client").await;
    let target = text(&grant(&app, &client).await, "access_token").to_owned();
    let target_jti = jti_of(&target);

    let reply = revoke(&app, &other.token, &json!({ "jti": target_jti })).await;
    assert_problem(
        &reply,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "another client's token",
    );
    assert_eq!(
        status_with(&app, client.client_id, &target).await,
        StatusCode::OK,
        "the failed revocation changed nothing"
    );

    let reply = revoke(
        &app,
        &client.token,
        &json!({ "jti": target_jti, "reason": "laptop lost" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["scope"], "access_token");
    assert_eq!(reply.body["access_tokens_revoked"], 1);

    let reply = app
        .get(
            &format!("/v1/accounts/{}/balance", client.client_id),
            &target,
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "revoked token",
    );
    assert_eq!(
        status_with(&app, client.client_id, &client.token).await,
        StatusCode::OK,
        "the client's other token still works"
    );

    // Admins may revoke any client's token.
    let reply = revoke(&app, &admin.token, &json!({ "jti": jti_of(&other.token) })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        status_with(&app, other.client_id, &other.token).await,
        StatusCode::UNAUTHORIZED
    );

    // Revoking again changes nothing and still returns 200.
    let reply = revoke(&app, &admin.token, &json!({ "jti": jti_of(&other.token) })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["access_tokens_revoked"], 0);
}

#[tokio::test]
async fn revoke_by_refresh_token() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let family = grant(&app, &client).await;
    let refresh_token = text(&family, "refresh_token");

    let reply = revoke(
        &app,
        &admin.token,
        &json!({ "refresh_token": "nxr_unknown" }),
    )
    .await;
    assert_problem(
        &reply,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "unknown refresh token",
    );

    let reply = revoke(
        &app,
        &client.token,
        &json!({ "refresh_token": refresh_token }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["scope"], "family");
    assert_eq!(reply.body["families_revoked"], 1);
    assert_eq!(reply.body["access_tokens_revoked"], 1);

    assert_eq!(
        refresh(&app, refresh_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(&app, client.client_id, text(&family, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(&app, client.client_id, &client.token).await,
        StatusCode::OK,
        "tokens of other families still work"
    );
}

#[tokio::test]
async fn revoke_whole_client() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let alice = app.create_client(&admin, "client").await;
    let bob = app.create_client(&admin, "client").await;
    let bob_family = grant(&app, &bob).await;

    let reply = revoke(&app, &alice.token, &json!({ "client_id": bob.client_id })).await;
    assert_problem(
        &reply,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "a client revoking another client",
    );
    assert_eq!(
        status_with(&app, bob.client_id, &bob.token).await,
        StatusCode::OK
    );

    let reply = revoke(
        &app,
        &admin.token,
        &json!({ "client_id": bob.client_id, "reason": "secret leaked" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["scope"], "client");
    assert_eq!(reply.body["access_tokens_revoked"], 2);
    assert_eq!(reply.body["families_revoked"], 2);
    for token in [bob.token.as_str(), text(&bob_family, "access_token")] {
        assert_eq!(
            status_with(&app, bob.client_id, token).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        refresh(&app, text(&bob_family, "refresh_token"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_with(&app, alice.client_id, &alice.token).await,
        StatusCode::OK,
        "other clients keep their tokens"
    );
    // The client's secret still works, so it can get new tokens.
    let fresh = grant(&app, &bob).await;
    assert_eq!(
        status_with(&app, bob.client_id, text(&fresh, "access_token")).await,
        StatusCode::OK
    );

    // A client may revoke all of its own tokens, the one it calls with too.
    let reply = revoke(&app, &alice.token, &json!({ "client_id": alice.client_id })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        status_with(&app, alice.client_id, &alice.token).await,
        StatusCode::UNAUTHORIZED
    );

    let reply = revoke(&app, &admin.token, &json!({ "client_id": Uuid::new_v4() })).await;
    assert_problem(
        &reply,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "unknown client",
    );
}

#[tokio::test]
async fn revoke_rejects_bad_requests() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;

    let reply = app
        .send(
            Method::POST,
            "/v1/auth/revoke",
            None,
            &[],
            Some(&json!({ "client_id": admin.client_id })),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "no token",
    );

    let cases = [
        ("no target", json!({ "reason": "why" })),
        (
            "two targets",
            json!({ "jti": jti_of(&admin.token), "client_id": admin.client_id }),
        ),
        ("client id not a UUID", json!({ "client_id": "bob" })),
        ("blank jti", json!({ "jti": "  " })),
        ("unknown field", json!({ "token": "x" })),
        (
            "reason too long",
            json!({ "jti": jti_of(&admin.token), "reason": "x".repeat(501) }),
        ),
    ];
    for (case, body) in cases {
        let reply = revoke(&app, &admin.token, &body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {:?}",
            reply.body
        );
    }
    assert_eq!(
        status_with(&app, admin.client_id, &admin.token).await,
        StatusCode::OK,
        "no rejected request revoked anything"
    );
}

#[tokio::test]
async fn old_secret_verifies_until_removed() {
    let before = spawn_app_with(&[("JWT_SECRET", OLD_SECRET)]).await;
    let admin = before.bootstrap_admin().await;
    let old_token = admin.token.clone();
    let path = format!("/v1/accounts/{}/balance", admin.client_id);
    assert_eq!(before.get(&path, &old_token).await.status, StatusCode::OK);

    // Rotation: the new secret signs, the old one still verifies.
    let rotating = spawn_app_on(
        &before.database_url,
        &[("JWT_SECRET", NEW_SECRET), ("JWT_SECRET_OLD", OLD_SECRET)],
    )
    .await;
    drop(before);
    assert_eq!(
        rotating.get(&path, &old_token).await.status,
        StatusCode::OK,
        "a token signed with JWT_SECRET_OLD is accepted during rotation"
    );
    let new_token = rotating.token(admin.client_id, &admin.secret).await;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[TEST_AUDIENCE]);
    validation.set_issuer(&[TEST_ISSUER]);
    let decode = |secret: &str| {
        jsonwebtoken::decode::<Value>(
            &new_token,
            &DecodingKey::from_secret(secret.as_bytes()).expect("HMAC key"),
            &validation,
        )
    };
    assert!(
        decode(NEW_SECRET).is_ok(),
        "new tokens are signed with JWT_SECRET"
    );
    assert!(decode(OLD_SECRET).is_err(), "never with JWT_SECRET_OLD");

    // After the rotation the old secret is removed.
    let after = spawn_app_on(&rotating.database_url, &[("JWT_SECRET", NEW_SECRET)]).await;
    drop(rotating);
    let reply = after.get(&path, &old_token).await;
    assert_problem(
        &reply,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "token signed with the removed secret",
    );
    assert_eq!(after.get(&path, &new_token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn lifetime_above_maximum_is_rejected() {
    const TTL: i64 = 300;
    /// Clock leeway of the server, in seconds.
    const LEEWAY: i64 = 5;
    let ttl = TTL.to_string();
    let app = spawn_app_with(&[("ACCESS_TOKEN_TTL_SECONDS", &ttl)]).await;
    let admin = app.bootstrap_admin().await;
    assert_eq!(
        claims_of(&admin.token)["exp"].as_i64().expect("exp")
            - claims_of(&admin.token)["iat"].as_i64().expect("iat"),
        TTL,
        "issued tokens live exactly the configured lifetime"
    );

    let secret = nepxy_tests::TEST_JWT_SECRET;
    let path = format!("/v1/accounts/{}/balance", admin.client_id);
    let sign = |lifetime: i64| {
        let now = Utc::now().timestamp();
        let claims = json!({
            "iss": TEST_ISSUER,
            "aud": TEST_AUDIENCE,
            "sub": admin.client_id.to_string(),
            "iat": now,
            "exp": now + lifetime,
            "jti": Uuid::new_v4().to_string(),
            "role": "admin",
        });
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key"),
        )
        .expect("sign")
    };

    let reply = app.get(&path, &sign(TTL)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the maximum itself: {:?}",
        reply.body
    );
    let reply = app.get(&path, &sign(TTL + LEEWAY + 1)).await;
    assert_problem(
        &reply,
        StatusCode::UNAUTHORIZED,
        "/problems/unauthorized",
        "lifetime above the maximum",
    );
    assert!(
        text(&reply.body, "detail").contains("invalid lifetime"),
        "{:?}",
        reply.body
    );
}

/// Reads the Client events of one aggregate as an auditor.
async fn client_events(app: &TestApp, auditor: &Caller, client_id: Uuid) -> Vec<Value> {
    let reply = app
        .get(
            &format!("/v1/audit/events?aggregate_type=Client&aggregate_id={client_id}"),
            &auditor.token,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["items"].as_array().expect("items").clone()
}

/// Waits until the event feed shows `count` events of the aggregate; the
/// feed holds back events while older transactions of the server run.
async fn wait_for_client_events(
    app: &TestApp,
    auditor: &Caller,
    client_id: Uuid,
    count: usize,
) -> Vec<Value> {
    for _ in 0..200 {
        let events = client_events(app, auditor, client_id).await;
        if events.len() >= count {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    client_events(app, auditor, client_id).await
}

#[tokio::test]
async fn admin_actions_are_audit_events() {
    let app = spawn_app().await;
    let reply = app
        .send(
            Method::POST,
            "/v1/admin/bootstrap",
            None,
            &[
                ("x-bootstrap-secret", TEST_BOOTSTRAP_SECRET),
                ("x-request-id", "req-bootstrap-1"),
            ],
            Some(&json!({ "name": "ops", "reason": "first deploy" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let admin_id: Uuid = text(&reply.body, "client_id").parse().expect("uuid");
    let admin_secret = text(&reply.body, "client_secret").to_owned();
    let admin_grant = app
        .send(
            Method::POST,
            "/v1/auth/token",
            None,
            &[],
            Some(&json!({
                "grant_type": "client_credentials",
                "client_id": admin_id,
                "client_secret": admin_secret,
            })),
        )
        .await
        .body;
    let admin_token = text(&admin_grant, "access_token").to_owned();

    let reply = app
        .send(
            Method::POST,
            "/v1/admin/clients",
            Some(&admin_token),
            &[("x-request-id", "req-create-1")],
            Some(&json!({ "name": "auditor", "role": "auditor", "reason": "quarterly audit" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let auditor_id: Uuid = text(&reply.body, "client_id").parse().expect("uuid");
    let auditor_secret = text(&reply.body, "client_secret").to_owned();
    let auditor_token = app.token(auditor_id, &auditor_secret).await;
    let auditor = Caller {
        client_id: auditor_id,
        secret: auditor_secret.clone(),
        token: auditor_token.clone(),
    };

    let reply = app
        .send(
            Method::POST,
            "/v1/auth/revoke",
            Some(&admin_token),
            &[("x-request-id", "req-revoke-1")],
            Some(&json!({ "jti": jti_of(&auditor_token), "reason": "token pasted in chat" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let auditor = Caller {
        token: app.token(auditor_id, &auditor_secret).await,
        ..auditor
    };

    // Bootstrap: actor is the holder of the bootstrap secret.
    let events = wait_for_client_events(&app, &auditor, admin_id, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let created = &events[0];
    assert_eq!(created["event_type"], "ClientCreated");
    assert_eq!(created["payload"]["ClientCreated"]["role"], "admin");
    assert_eq!(created["metadata"]["actor"]["subject"], "bootstrap");
    assert_eq!(created["metadata"]["request_id"], "req-bootstrap-1");
    assert_eq!(created["metadata"]["reason"], "first deploy");
    assert_eq!(created["metadata"]["source"], "admin");

    // Client creation and revocation: actor is the admin.
    let events = wait_for_client_events(&app, &auditor, auditor_id, 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let created = &events[0];
    assert_eq!(created["event_type"], "ClientCreated");
    assert_eq!(created["payload"]["ClientCreated"]["role"], "auditor");
    assert_eq!(
        created["payload"]["ClientCreated"]["created_by"],
        admin_id.to_string()
    );
    assert_eq!(
        created["metadata"]["actor"]["subject"],
        admin_id.to_string()
    );
    assert_eq!(created["metadata"]["actor"]["role"], "admin");
    assert_eq!(created["metadata"]["request_id"], "req-create-1");
    assert_eq!(created["metadata"]["reason"], "quarterly audit");

    let revoked = &events[1];
    assert_eq!(revoked["event_type"], "TokensRevoked");
    assert_eq!(revoked["payload"]["TokensRevoked"]["scope"], "access_token");
    assert_eq!(
        revoked["payload"]["TokensRevoked"]["jti"],
        jti_of(&auditor_token)
    );
    assert_eq!(
        revoked["metadata"]["actor"]["subject"],
        admin_id.to_string()
    );
    assert_eq!(revoked["metadata"]["request_id"], "req-revoke-1");
    assert_eq!(revoked["metadata"]["reason"], "token pasted in chat");

    // No secret or token, nor its hash, reaches the event store.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT payload::text || metadata::text FROM events")
            .fetch_all(&app.pool)
            .await
            .expect("events");
    let refresh_token = text(&admin_grant, "refresh_token");
    let forbidden = [
        admin_secret.clone(),
        auditor_secret.clone(),
        admin_token.clone(),
        auditor_token.clone(),
        refresh_token.to_owned(),
        hex::encode(Sha256::digest(refresh_token.as_bytes())),
        hex::encode(Sha256::digest(admin_secret.as_bytes())),
    ];
    for event in &stored {
        for value in &forbidden {
            assert!(
                !event.contains(value.as_str()),
                "event holds a secret: {event}"
            );
        }
    }
}

#[tokio::test]
async fn deposit_reason_in_event_metadata() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let reply = app
        .send(
            Method::POST,
            &format!("/v1/accounts/{}/deposits", client.client_id),
            Some(&admin.token),
            &[
                ("idempotency-key", "deposit-with-reason"),
                ("x-request-id", "req-deposit-1"),
            ],
            Some(&json!({ "amount": 5000, "currency": "XOF", "reason": "wire 2024-118" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let metadata: Value = sqlx::query_scalar(
        "SELECT metadata::jsonb FROM events WHERE event_type = 'FundsDeposited'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("deposit event");
    assert_eq!(metadata["reason"], "wire 2024-118");
    assert_eq!(metadata["request_id"], "req-deposit-1");
    assert_eq!(metadata["actor"]["subject"], admin.client_id.to_string());
}

fn replay_tool(app: &TestApp, args: &[&str]) -> Output {
    Command::new(binary_path("nepxy-replay"))
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("run nepxy-replay")
}

#[tokio::test]
async fn client_events_keep_verify_and_rebuild_clean() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(10_000, "XOF").await;
    let body = grant(&app, &client).await;
    let spent = text(&body, "refresh_token");
    assert_eq!(refresh(&app, spent).await.status, StatusCode::OK);
    assert_eq!(refresh(&app, spent).await.status, StatusCode::UNAUTHORIZED);
    let reply = revoke(
        &app,
        &admin.token,
        &json!({ "client_id": client.client_id }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let client_events = app
        .count("SELECT count(*) FROM events WHERE aggregate_type = 'Client'")
        .await;
    assert_eq!(client_events, 4, "2 created, 1 reuse, 1 revocation");

    let verify = replay_tool(&app, &["verify"]);
    let output = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "verify: {output}");
    assert!(
        output.contains("checked the hash chains of 5 events"),
        "{output}"
    );

    let rebuild = replay_tool(&app, &["rebuild", "--verify"]);
    let output = String::from_utf8_lossy(&rebuild.stdout);
    assert!(rebuild.status.success(), "rebuild: {output}");
    assert!(output.contains("event_history: identical"), "{output}");
    assert!(
        output.contains("from 1 events"),
        "only the deposit is projected: {output}"
    );

    // The catch-up projector reads the Client events too and skips them.
    let projector = nepxy_projections::catchup::CatchUp {
        pool: app.pool.clone(),
        batch_size: 2,
        idle_wait: std::time::Duration::from_millis(10),
        lag_seconds: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
    };
    let mut read = 0;
    for _ in 0..500 {
        let round = projector.round().await.expect("catch-up round");
        read += round;
        if round == 0 && read >= 5 {
            break;
        }
        if round == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    assert_eq!(read, 5, "every event, Client ones included, was read once");
}
