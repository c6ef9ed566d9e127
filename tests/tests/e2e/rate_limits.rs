//! Rate limits against the real server: per client address, per token
//! subject and on the webhook intake, with spoofed and trusted proxy
//! headers. The limits are small so that each test sends few requests, and
//! no assertion depends on how long a request takes.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nepxy_tests::{
    Reply, TEST_AUDIENCE, TEST_ISSUER, TEST_JWT_SECRET, TestApp, assert_problem, binary_path,
    read_reply, spawn_app_with, tmoney_report, unix_now,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

/// A second loopback address for a client that is not 127.0.0.1. Linux
/// routes all of 127.0.0.0/8 to the loopback interface.
const OTHER_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A route that needs a token: without one it returns 401 at once.
const PROTECTED: &str = "/v1/payouts";

/// Limits that switch on only the per-IP limit, `per_minute` requests with
/// a bucket of `burst`.
fn per_ip(per_minute: &'static str, burst: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("RATE_LIMIT_PER_IP_PER_MINUTE", per_minute),
        ("RATE_LIMIT_PER_IP_BURST", burst),
    ]
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Reply {
    app.send(Method::GET, path, None, headers, None).await
}

/// Sends GET `path` from `client`, which may use another source address.
async fn get_from(client: &reqwest::Client, app: &TestApp, path: &str) -> Reply {
    let response = client
        .get(format!("{}{path}", app.base_url))
        .send()
        .await
        .expect("request reaches the test server");
    read_reply(response).await
}

fn client_from(address: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

fn header_number(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("{name} missing; headers {:?}", reply.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a whole number: {:?}", reply.header(name)))
}

/// Asserts the RateLimit headers of a response that passed the limit.
fn assert_allowed(reply: &Reply, limit: u64, remaining: u64, case: &str) {
    assert_ne!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{case}: {:?}",
        reply.body
    );
    assert_eq!(
        header_number(reply, "ratelimit-limit"),
        limit,
        "{case}: limit"
    );
    assert_eq!(
        header_number(reply, "ratelimit-remaining"),
        remaining,
        "{case}: remaining"
    );
    assert!(
        header_number(reply, "ratelimit-reset") >= 1,
        "{case}: reset"
    );
    assert!(reply.header("retry-after").is_none(), "{case}: retry-after");
}

/// Asserts a 429 problem with Retry-After and the RateLimit headers.
/// `refill_seconds` is the time one request takes to refill.
fn assert_limited(reply: &Reply, limit: u64, refill_seconds: u64, case: &str) {
    assert_problem(
        reply,
        StatusCode::TOO_MANY_REQUESTS,
        "/problems/rate-limited",
        case,
    );
    assert_eq!(reply.body["title"], "Too many requests", "{case}: title");
    assert_eq!(reply.body["status"], 429, "{case}: status field");
    let retry_after = header_number(reply, "retry-after");
    assert!(
        (1..=refill_seconds).contains(&retry_after),
        "{case}: retry-after {retry_after} outside 1..={refill_seconds}"
    );
    assert_eq!(
        header_number(reply, "ratelimit-limit"),
        limit,
        "{case}: limit"
    );
    assert_eq!(
        header_number(reply, "ratelimit-remaining"),
        0,
        "{case}: remaining"
    );
    let reset = header_number(reply, "ratelimit-reset");
    assert!(
        reset >= retry_after && reset <= refill_seconds * limit,
        "{case}: reset {reset} outside {retry_after}..={}",
        refill_seconds * limit
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("retry after {retry_after} seconds")),
        "{case}: detail {detail:?}"
    );
}

#[tokio::test]
async fn ip_limit_answers_429_with_headers() {
    // 2 per minute: one request refills every 30 s.
    let app = spawn_app_with(&per_ip("2", "2")).await;

    let first = get(&app, PROTECTED, &[]).await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED, "first request");
    assert_allowed(&first, 2, 1, "first request");
    let second = get(&app, PROTECTED, &[]).await;
    assert_allowed(&second, 2, 0, "second request");

    let third = get(&app, PROTECTED, &[]).await;
    assert_limited(&third, 2, 30, "third request");
    let detail = third.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("client address"), "detail {detail:?}");
    assert!(detail.contains("2 per minute"), "detail {detail:?}");

    // Unknown routes and other methods count against the same bucket.
    let unknown = get(&app, "/no/such/route", &[]).await;
    assert_limited(&unknown, 2, 30, "unknown route");
    let token = app
        .send(
            Method::POST,
            "/v1/auth/token",
            None,
            &[],
            Some(&json!({"grant_type": "client_credentials"})),
        )
        .await;
    assert_limited(&token, 2, 30, "token request");
}

#[tokio::test]
async fn health_is_never_limited() {
    let app = spawn_app_with(&per_ip("1", "1")).await;
    get(&app, PROTECTED, &[]).await;
    assert_limited(
        &get(&app, PROTECTED, &[]).await,
        1,
        60,
        "after the bucket is empty",
    );

    assert_never_limited(&app, "/health", StatusCode::OK, 5).await;
}

/// Sends GET `path` `count` times and asserts that each gets `status`
/// without RateLimit headers.
async fn assert_never_limited(app: &TestApp, path: &str, status: StatusCode, count: usize) {
    for attempt in 0..count {
        let reply = get(app, path, &[]).await;
        assert_eq!(reply.status, status, "{path} attempt {attempt}");
        assert!(
            reply.header("ratelimit-limit").is_none(),
            "{path} attempt {attempt} carries RateLimit headers"
        );
    }
}

#[tokio::test]
async fn address_over_limit_leaves_others_alone() {
    let app = spawn_app_with(&per_ip("1", "1")).await;
    let other = client_from(OTHER_LOOPBACK);

    get(&app, PROTECTED, &[]).await;
    assert_limited(
        &get(&app, PROTECTED, &[]).await,
        1,
        60,
        "127.0.0.1 over limit",
    );

    let reply = get_from(&other, &app, PROTECTED).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "127.0.0.2");
    assert_allowed(&reply, 1, 0, "127.0.0.2 has its own bucket");
    assert_limited(
        &get_from(&other, &app, PROTECTED).await,
        1,
        60,
        "127.0.0.2 over its own limit",
    );
}

#[tokio::test]
async fn untrusted_proxy_headers_do_not_change_key() {
    let app = spawn_app_with(&per_ip("3", "3")).await;

    // Each request claims another address; the socket address still counts.
    let spoofs = [
        ("x-forwarded-for", "203.0.113.1"),
        ("fly-client-ip", "203.0.113.2"),
        ("x-forwarded-for", "127.0.0.2"),
    ];
    for (remaining, (name, value)) in (0..3).rev().zip(spoofs) {
        let reply = get(&app, PROTECTED, &[(name, value)]).await;
        assert_allowed(&reply, 3, remaining, &format!("{name}: {value}"));
    }
    let spoofed = get(
        &app,
        PROTECTED,
        &[
            ("x-forwarded-for", "198.51.100.99"),
            ("fly-client-ip", "198.51.100.98"),
        ],
    )
    .await;
    assert_limited(&spoofed, 3, 20, "new spoofed addresses");

    // The requests that named 127.0.0.2 spent none of its budget.
    let other = client_from(OTHER_LOOPBACK);
    assert_allowed(
        &get_from(&other, &app, PROTECTED).await,
        3,
        2,
        "127.0.0.2 after being named in spoofed headers",
    );
}

/// Whether a request passes a bucket of 1.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Allowed,
    Limited,
}

/// Sends one request per case, in order, with `header` set to the case's
/// value, and checks each outcome against per-IP buckets of 1 request per
/// minute.
async fn check_in_order(app: &TestApp, header: &str, cases: &[(&str, Outcome, &str)]) {
    for (value, outcome, case) in cases {
        let reply = get(app, PROTECTED, &[(header, value)]).await;
        match outcome {
            Outcome::Allowed => assert_allowed(&reply, 1, 0, case),
            Outcome::Limited => assert_limited(&reply, 1, 60, case),
        }
    }
}

/// Starts a server that reads client addresses from `header`, with per-IP
/// buckets of 1 request per minute.
async fn spawn_trusting(header: &'static str) -> TestApp {
    let mut vars = per_ip("1", "1");
    vars.push(("TRUST_PROXY_HEADERS", header));
    spawn_app_with(&vars).await
}

#[tokio::test]
async fn trusted_fly_client_ip_decides() {
    let app = spawn_trusting("Fly-Client-IP").await;

    check_in_order(
        &app,
        "fly-client-ip",
        &[
            ("198.51.100.1", Outcome::Allowed, "first address"),
            ("198.51.100.1", Outcome::Limited, "first address again"),
            ("198.51.100.2", Outcome::Allowed, "second address"),
        ],
    )
    .await;

    // X-Forwarded-For is not the trusted header here.
    let other_header = get(
        &app,
        PROTECTED,
        &[
            ("fly-client-ip", "198.51.100.1"),
            ("x-forwarded-for", "198.51.100.3"),
        ],
    )
    .await;
    assert_limited(&other_header, 1, 60, "X-Forwarded-For beside Fly-Client-IP");

    // Without a valid value the socket address counts, once.
    let missing = get(&app, PROTECTED, &[]).await;
    assert_allowed(&missing, 1, 0, "no header: socket address");
    check_in_order(
        &app,
        "fly-client-ip",
        &[(
            "not-an-address",
            Outcome::Limited,
            "invalid header: socket address again",
        )],
    )
    .await;
}

#[tokio::test]
async fn trusted_forwarded_for_uses_rightmost_entry() {
    let app = spawn_trusting("X-Forwarded-For").await;

    check_in_order(
        &app,
        "x-forwarded-for",
        &[
            ("198.51.100.1", Outcome::Allowed, "proxy wrote 198.51.100.1"),
            // A client that prepends other addresses keeps the proxy's entry.
            (
                "203.0.113.7, 198.51.100.1",
                Outcome::Limited,
                "forged entries left of the proxy's",
            ),
            // A client that names 198.51.100.1 is counted as itself.
            (
                "198.51.100.1, 203.0.113.8",
                Outcome::Allowed,
                "198.51.100.1 named by 203.0.113.8",
            ),
            (
                "198.51.100.1, garbage",
                Outcome::Allowed,
                "invalid entry: socket address",
            ),
            ("", Outcome::Limited, "empty header: socket address again"),
        ],
    )
    .await;
}

/// Signs claims with `secret` as the service would.
fn sign(claims: &serde_json::Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("sign token")
}

fn claims_for(client_id: Uuid, expires_at: i64) -> serde_json::Value {
    let now = unix_now();
    json!({
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "sub": client_id.to_string(),
        "iat": now - 60,
        "exp": expires_at,
        "jti": Uuid::new_v4().to_string(),
        "role": "auditor",
    })
}

#[tokio::test]
async fn token_limit_applies_per_subject() {
    // The per-IP limit is far away; each token subject gets 2.
    let app = spawn_app_with(&[
        ("RATE_LIMIT_PER_IP_PER_MINUTE", "1000"),
        ("RATE_LIMIT_PER_TOKEN_PER_MINUTE", "2"),
        ("RATE_LIMIT_PER_TOKEN_BURST", "2"),
    ])
    .await;
    let admin = app.bootstrap_admin().await;
    let first = app.create_client(&admin, "auditor").await;
    let second = app.create_client(&admin, "auditor").await;

    // Tokens that fail verification spend nothing of the subject's budget.
    let forged = [
        sign(
            &claims_for(first.client_id, unix_now() + 600),
            "another-key-0123456789abcdef-0123456789",
        ),
        sign(
            &claims_for(first.client_id, unix_now() - 600),
            TEST_JWT_SECRET,
        ),
    ];
    for (index, token) in forged.iter().enumerate() {
        for _ in 0..3 {
            let reply = app.get(PROTECTED, token).await;
            assert_problem(
                &reply,
                StatusCode::UNAUTHORIZED,
                "/problems/unauthorized",
                &format!("forged token {index}"),
            );
        }
    }

    // The headers describe the token's bucket, the tighter of the two.
    let reply = app.get(PROTECTED, &first.token).await;
    assert_eq!(reply.status, StatusCode::OK, "first: {:?}", reply.body);
    assert_allowed(&reply, 2, 1, "first subject, first request");
    assert_allowed(
        &app.get(PROTECTED, &first.token).await,
        2,
        0,
        "first subject, second request",
    );

    let limited = app.get(PROTECTED, &first.token).await;
    assert_limited(&limited, 2, 30, "first subject over its limit");
    let detail = limited.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("access tokens"), "detail {detail:?}");

    // A new token of the same subject shares the bucket.
    let new_token = app.token(first.client_id, &first.secret).await;
    assert_limited(
        &app.get(PROTECTED, &new_token).await,
        2,
        30,
        "new token, same subject",
    );

    // The address is still fine: other subjects and unauthenticated requests pass.
    assert_allowed(
        &app.get(PROTECTED, &second.token).await,
        2,
        1,
        "second subject",
    );
    let anonymous = get(&app, PROTECTED, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "no token");
    assert_eq!(
        header_number(&anonymous, "ratelimit-limit"),
        1000,
        "no token: per-IP bucket"
    );
}

#[tokio::test]
async fn webhooks_have_their_own_limit() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_PER_IP_PER_MINUTE", "1"),
        ("RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE", "2"),
        ("RATE_LIMIT_WEBHOOKS_PER_IP_BURST", "2"),
    ])
    .await;
    get(&app, PROTECTED, &[]).await;
    assert_limited(&get(&app, PROTECTED, &[]).await, 1, 60, "API bucket empty");

    // Reports for unknown payouts are stored as orphans and get 202.
    for remaining in [1, 0] {
        let report = tmoney_report(&Uuid::new_v4().to_string(), "SUCCESS", 1_000, "XOF");
        let reply = app.send_tmoney(&report).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "delivery: {:?}",
            reply.body
        );
        assert_allowed(&reply, 2, remaining, "webhook delivery");
    }
    let report = tmoney_report(&Uuid::new_v4().to_string(), "SUCCESS", 1_000, "XOF");
    let limited = app.send_tmoney(&report).await;
    assert_limited(&limited, 2, 30, "third delivery");
    let detail = limited.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("webhook deliveries"), "detail {detail:?}");
    let stored = app.count("SELECT count(*) FROM webhook_deliveries").await;
    assert_eq!(stored, 2, "the rejected delivery is not stored");

    // Reading deliveries is an API route, under the API bucket.
    assert_limited(
        &get(&app, "/v1/webhooks", &[]).await,
        1,
        60,
        "GET /v1/webhooks",
    );
}

#[tokio::test]
async fn staging_gate_guessers_are_limited() {
    let mut vars = per_ip("2", "2");
    vars.extend([
        ("APP_ENV", "staging"),
        ("STAGING_GATE_KEY", "staging-gate-key-for-tests"),
    ]);
    let app = spawn_app_with(&vars).await;

    for (remaining, guess) in [(1, "guess-1"), (0, "guess-2")] {
        let reply = get(&app, PROTECTED, &[("x-staging-gate-key", guess)]).await;
        assert_problem(
            &reply,
            StatusCode::UNAUTHORIZED,
            "/problems/unauthorized",
            guess,
        );
        assert_allowed(&reply, 2, remaining, guess);
    }
    let third = get(
        &app,
        PROTECTED,
        &[("x-staging-gate-key", "staging-gate-key-for-tests")],
    )
    .await;
    assert_limited(&third, 2, 30, "third attempt, even with the right key");
}

#[tokio::test]
async fn limits_switched_off_send_no_headers() {
    let app = spawn_app_with(&[]).await;
    assert_never_limited(&app, PROTECTED, StatusCode::UNAUTHORIZED, 20).await;
}

#[tokio::test]
async fn concurrent_requests_never_exceed_burst() {
    let app = spawn_app_with(&per_ip("5", "5")).await;
    let replies = send_at_once(&app, 40).await;
    let allowed = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::UNAUTHORIZED)
        .count();
    let limited = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // 5 per minute refills one request every 12 s; a refill during the test
    // could let one more through.
    assert!((5..=6).contains(&allowed), "{allowed} requests passed");
    assert_eq!(allowed + limited, 40, "other statuses among {replies:?}");
}

/// Sends `count` requests at once from 127.0.0.1.
async fn send_at_once(app: &TestApp, count: usize) -> Vec<Reply> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let client = app.http.clone();
        let url = format!("{}{PROTECTED}", app.base_url);
        tasks.spawn(async move {
            let response = client
                .get(url)
                .send()
                .await
                .expect("request reaches the test server");
            read_reply(response).await
        });
    }
    let mut replies = Vec::with_capacity(count);
    while let Some(reply) = tasks.join_next().await {
        replies.push(reply.expect("request task"));
    }
    replies
}

#[test]
fn invalid_limits_stop_startup() {
    let output = Command::new(binary_path("nepxy-api"))
        .env_clear()
        .env("DATABASE_URL", "postgres://nepxy@127.0.0.1:1/none")
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .env("RATE_LIMIT_PER_IP_PER_MINUTE", "many")
        .env("RATE_LIMIT_PER_TOKEN_BURST", "0")
        .env("RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE", "-5")
        .env("TRUST_PROXY_HEADERS", "X-Real-IP")
        .output()
        .expect("run nepxy-api");
    assert_eq!(output.status.code(), Some(2), "exit status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "RATE_LIMIT_PER_IP_PER_MINUTE",
        "RATE_LIMIT_PER_TOKEN_BURST",
        "RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE",
        "TRUST_PROXY_HEADERS",
    ] {
        assert!(stderr.contains(name), "{name} missing from:\n{stderr}");
    }
}
