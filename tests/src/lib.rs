//! Harness for the end-to-end tests: a fresh database per test, cloned from a
//! migrated template, and the real server on a random loopback port.
//!
//! DATABASE_URL must point at a PostgreSQL server where the user may create
//! databases; `scripts/test.sh` starts a private one and sets it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nepxy_api::webhooks::confirm::TransferStatusLookup;
use nepxy_api::{AppState, Config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use uuid::Uuid;

pub const TEST_JWT_SECRET: &str = "test-secret-0123456789abcdef-0123456789abcdef";
pub const TEST_BOOTSTRAP_SECRET: &str = "bootstrap-secret-for-tests";
pub const TEST_ISSUER: &str = "nepxy-ledger";
pub const TEST_TMONEY_SECRET: &str = "tmoney-webhook-secret-for-tests";
/// A Standard Webhooks secret: `whsec_` and the base64 of the key bytes
/// `thunes-webhook-key-for-tests-32b`.
pub const TEST_THUNES_SECRET: &str = "whsec_dGh1bmVzLXdlYmhvb2sta2V5LWZvci10ZXN0cy0zMmI=";
pub const TEST_THUNES_KEY: &[u8] = b"thunes-webhook-key-for-tests-32b";
pub const TEST_MOMO_SECRET: &str = "momo-callback-secret-for-tests";
pub const TEST_AUDIENCE: &str = "nepxy-api";

/// Advisory lock that serializes template creation across test processes.
const TEMPLATE_LOCK_KEY: i64 = 0x6e65_7078_7974_706c;

pub fn server_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set; run the tests through scripts/test.sh, which starts PostgreSQL",
    )
}

/// Replaces the database name of a postgres:// URL.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let prefix_end = base.rfind('/').expect("DATABASE_URL has no database path");
    let mut result = format!("{}/{}", &base[..prefix_end], database);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}

/// Name of the template database for the current migration files.
fn template_name() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(migrations_dir())
        .expect("migrations directory is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.file_name().expect("file name").as_encoded_bytes());
        hasher.update(std::fs::read(&file).expect("migration is readable"));
    }
    let digest = hasher.finalize();
    format!("nepxy_template_{}", hex::encode(&digest[..6]))
}

/// Creates an empty, migrated database and returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url();
    let mut admin = PgConnection::connect(&server)
        .await
        .expect("connect to DATABASE_URL");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .expect("take template lock");

    let template = template_name();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut admin)
            .await
            .expect("look up template");
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {template}"))
            .execute(&mut admin)
            .await
            .expect("create template database");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url_with_database(&server, &template))
            .await
            .expect("connect to template");
        nepxy_api::migrate(&pool).await.expect("migrate template");
        pool.close().await;
    }

    let name = format!("nepxy_test_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .expect("release template lock");
    url_with_database(&server, &name)
}

/// Configuration of a test server; `extra` overrides or adds variables.
pub fn test_config(database_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("JWT_SECRET".to_owned(), TEST_JWT_SECRET.to_owned()),
        (
            "BOOTSTRAP_ADMIN_SECRET".to_owned(),
            TEST_BOOTSTRAP_SECRET.to_owned(),
        ),
        ("DATABASE_MAX_CONNECTIONS".to_owned(), "16".to_owned()),
        (
            "TMONEY_WEBHOOK_SECRET".to_owned(),
            TEST_TMONEY_SECRET.to_owned(),
        ),
        (
            "THUNES_WEBHOOK_SECRET".to_owned(),
            TEST_THUNES_SECRET.to_owned(),
        ),
        (
            "MOMO_CALLBACK_SECRET".to_owned(),
            TEST_MOMO_SECRET.to_owned(),
        ),
    ];
    for (name, value) in extra {
        vars.retain(|(existing, _)| existing != name);
        vars.push(((*name).to_owned(), (*value).to_owned()));
    }
    Config::from_lookup(|name| {
        vars.iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.clone())
    })
    .expect("test configuration is valid")
}

/// A running server with its own database.
pub struct TestApp {
    pub base_url: String,
    pub database_url: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Answer of one request, with the body parsed when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }
}

/// A client with its secret and an access token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client_id: Uuid,
    pub secret: String,
    pub token: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the router on 127.0.0.1:0 against a fresh database.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    spawn_app_with_momo(extra, None).await
}

/// Like [`spawn_app_with`], with a stand-in for MoMo's transfer status
/// endpoint (by default every MoMo status lookup fails).
pub async fn spawn_app_with_momo(
    extra: &[(&str, &str)],
    momo_status: Option<std::sync::Arc<dyn TransferStatusLookup>>,
) -> TestApp {
    // TEST_LOG=1 shows the server's log lines in the test output.
    if std::env::var_os("TEST_LOG").is_some() {
        nepxy_api::telemetry::init(nepxy_api::config::LogFormat::Text);
    }
    let database_url = fresh_database().await;
    let config = test_config(&database_url, extra);
    let pool = nepxy_api::connect(&config)
        .await
        .expect("connect test database");
    let mut state = AppState::new(config, pool.clone()).expect("state");
    if let Some(lookup) = momo_status {
        state = state.with_momo_status(lookup);
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(nepxy_api::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    TestApp {
        base_url: format!("http://{address}"),
        database_url,
        pool,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        shutdown: Some(shutdown),
    }
}

impl TestApp {
    /// Sends a request; `body` is sent as JSON when present.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .expect("request reaches the test server");
        read_reply(response).await
    }

    /// Sends raw bytes with the given content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .expect("request reaches the test server");
        read_reply(response).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), &[], None).await
    }

    pub async fn bootstrap_admin(&self) -> Caller {
        let reply = self
            .send(
                Method::POST,
                "/v1/admin/bootstrap",
                None,
                &[("x-bootstrap-secret", TEST_BOOTSTRAP_SECRET)],
                None,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "bootstrap: {:?}",
            reply.body
        );
        self.caller_from(&reply.body).await
    }

    pub async fn create_client(&self, admin: &Caller, role: &str) -> Caller {
        let reply = self
            .send(
                Method::POST,
                "/v1/admin/clients",
                Some(&admin.token),
                &[],
                Some(&json!({ "name": format!("test {role}"), "role": role })),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create client: {:?}",
            reply.body
        );
        self.caller_from(&reply.body).await
    }

    async fn caller_from(&self, created: &Value) -> Caller {
        let client_id: Uuid = created["client_id"]
            .as_str()
            .expect("client_id")
            .parse()
            .expect("uuid");
        let secret = created["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_owned();
        let token = self.token(client_id, &secret).await;
        Caller {
            client_id,
            secret,
            token,
        }
    }

    pub async fn token(&self, client_id: Uuid, secret: &str) -> String {
        let reply = self
            .send(
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
            .await;
        assert_eq!(reply.status, StatusCode::OK, "token: {:?}", reply.body);
        reply.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    pub async fn deposit(
        &self,
        operator: &Caller,
        client_id: Uuid,
        amount: i64,
        currency: &str,
    ) -> Reply {
        let key = Uuid::new_v4().to_string();
        self.send(
            Method::POST,
            &format!("/v1/accounts/{client_id}/deposits"),
            Some(&operator.token),
            &[("idempotency-key", &key)],
            Some(&json!({ "amount": amount, "currency": currency })),
        )
        .await
    }

    pub async fn post_payout(&self, client: &Caller, key: &str, body: &Value) -> Reply {
        self.send(
            Method::POST,
            "/v1/payouts",
            Some(&client.token),
            &[("idempotency-key", key)],
            Some(body),
        )
        .await
    }

    /// An admin and a funded client, the start of most payout tests.
    pub async fn funded_client(&self, amount: i64, currency: &str) -> (Caller, Caller) {
        let admin = self.bootstrap_admin().await;
        let client = self.create_client(&admin, "client").await;
        let reply = self
            .deposit(&admin, client.client_id, amount, currency)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "deposit: {:?}",
            reply.body
        );
        (admin, client)
    }
}

async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("read body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// A valid payout body to a Togolese number.
pub fn payout_body(amount: i64, provider: &str) -> Value {
    json!({
        "amount": amount,
        "currency": "XOF",
        "provider": provider,
        "recipient": { "msisdn": "+22890123456", "name": "Kossi Mensah" },
        "reference": "invoice 42",
    })
}

/// Directory of the workspace's build output, where `cargo build` puts the
/// binaries that the end-to-end tests start.
pub fn binary_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing; build it first with `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Asserts that `reply` is an RFC 9457 problem with the given status and
/// type, and that its `request_id` equals the X-Request-ID header.
/// `context` names the request in failure messages.
pub fn assert_problem(reply: &Reply, status: StatusCode, problem_type: &str, context: &str) {
    assert_eq!(
        reply.status, status,
        "{context}: status, body {:?}",
        reply.body
    );
    assert_eq!(
        reply.content_type(),
        Some("application/problem+json"),
        "{context}: content type"
    );
    assert_eq!(
        reply.body["type"], problem_type,
        "{context}: problem type, body {:?}",
        reply.body
    );
    assert_eq!(
        reply.body["status"],
        status.as_u16(),
        "{context}: problem status"
    );
    assert!(
        reply.body["title"].is_string(),
        "{context}: problem title is missing"
    );
    assert!(
        reply.body["detail"].is_string(),
        "{context}: problem detail is missing"
    );
    let header = reply.header("x-request-id");
    assert!(
        header.is_some(),
        "{context}: X-Request-ID header is missing"
    );
    assert_eq!(
        reply.body["request_id"].as_str(),
        header,
        "{context}: problem request_id differs from X-Request-ID"
    );
}

impl TestApp {
    /// Returns `(available, held)` of a client's wallet in `currency` as
    /// GET /v1/accounts/{client_id}/balance reports it, or `(0, 0)` when the
    /// client has no wallet in that currency.
    pub async fn balance_of(&self, reader: &Caller, client_id: Uuid, currency: &str) -> (i64, i64) {
        let reply = self
            .get(&format!("/v1/accounts/{client_id}/balance"), &reader.token)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "balance: {:?}", reply.body);
        let balances = reply.body["balances"].as_array().expect("balances array");
        balances
            .iter()
            .find(|balance| balance["currency"] == currency)
            .map(|balance| {
                (
                    balance["available"]
                        .as_i64()
                        .expect("available is an integer"),
                    balance["held"].as_i64().expect("held is an integer"),
                )
            })
            .unwrap_or((0, 0))
    }

    /// Runs a `SELECT count(*)` query on the test database and returns the count.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("count query {sql:?} failed: {error}"))
    }
}
