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
/// The rate limits are off, because every test client sends from
/// 127.0.0.1 and some tests send hundreds of requests. `rate_limits.rs`
/// switches them on.
pub fn test_config(database_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("RATE_LIMIT_PER_IP_PER_MINUTE".to_owned(), "0".to_owned()),
        ("RATE_LIMIT_PER_TOKEN_PER_MINUTE".to_owned(), "0".to_owned()),
        (
            "RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE".to_owned(),
            "0".to_owned(),
        ),
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
    /// PROVIDER_DISABLED of the running server, switchable by tests.
    pub switches: nepxy_api::dispatch::ProviderSwitches,
    /// The server's state, for tests that run the dispatcher by hand.
    pub state: AppState,
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
    let switches = state.switches.clone();
    tokio::spawn(nepxy_api::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    TestApp {
        switches,
        state,
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

/// Reads a response into a [`Reply`], with the body parsed when it is JSON.
pub async fn read_reply(response: reqwest::Response) -> Reply {
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

    /// Runs SQL on the events table with its append-only trigger paused, as
    /// someone with direct database access could.
    pub async fn rewrite_events(&self, sql: &str) {
        let statements = format!(
            "ALTER TABLE events DISABLE TRIGGER events_append_only; {sql}; \
             ALTER TABLE events ENABLE TRIGGER events_append_only;"
        );
        sqlx::raw_sql(&statements)
            .execute(&self.pool)
            .await
            .expect("rewrite stored events");
    }

    /// Runs a `SELECT count(*)` query on the test database and returns the count.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("count query {sql:?} failed: {error}"))
    }
}

// Provider webhooks: signing, sending, and reading what the server stored.

/// Returns the current Unix time in seconds, the unit of webhook timestamps.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Returns a nonce or Thunes event id that no other delivery uses.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// Computes a TMoney `X-Signature`: the hex HMAC-SHA256 of
/// `{timestamp}.{nonce}.{body}`.
pub fn tmoney_signature(secret: &[u8], timestamp: &str, nonce: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key");
    mac.update(format!("{timestamp}.{nonce}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Computes one Thunes signature: the standard base64 of the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`, without the `v1,` prefix.
pub fn thunes_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Builds the headers of a TMoney delivery, signed now with
/// [`TEST_TMONEY_SECRET`] and a new nonce.
pub fn tmoney_headers(body: &[u8]) -> Vec<(String, String)> {
    let timestamp = unix_now().to_string();
    let nonce = unique_id("nonce");
    let signature = tmoney_signature(TEST_TMONEY_SECRET.as_bytes(), &timestamp, &nonce, body);
    vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-timestamp".to_owned(), timestamp),
        ("x-nonce".to_owned(), nonce),
        ("x-signature".to_owned(), signature),
    ]
}

/// Builds the headers of a Thunes delivery, signed now with
/// [`TEST_THUNES_KEY`] and a new event id.
pub fn thunes_headers(body: &[u8]) -> Vec<(String, String)> {
    let timestamp = unix_now().to_string();
    let id = unique_id("msg");
    let signature = thunes_signature(TEST_THUNES_KEY, &id, &timestamp, body);
    vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("webhook-id".to_owned(), id),
        ("webhook-timestamp".to_owned(), timestamp),
        ("webhook-signature".to_owned(), format!("v1,{signature}")),
    ]
}

/// Builds the path of a payout's MoMo callback, with its token made from
/// [`TEST_MOMO_SECRET`].
pub fn momo_path(payout_id: Uuid) -> String {
    let token = nepxy_api::webhooks::momo::callback_token(TEST_MOMO_SECRET.as_bytes(), payout_id);
    format!("/v1/webhooks/momo/{token}")
}

/// Builds a TMoney report in compact JSON; `amount` is in major units.
pub fn tmoney_report(external_ref: &str, status: &str, amount: i64, currency: &str) -> String {
    json!({
        "external_ref": external_ref,
        "status": status,
        "transaction_id": format!("TM-{}", Uuid::new_v4().simple()),
        "amount": amount,
        "currency": currency,
        "reason": null,
    })
    .to_string()
}

/// Builds a Thunes transaction object in compact JSON. `status` and
/// `status_class` are JSON values, so a test can choose the string or the
/// number form.
pub fn thunes_report(
    external_id: &str,
    status: Value,
    status_class: Value,
    amount: i64,
    currency: &str,
) -> String {
    json!({
        "id": 7_300_915,
        "status": status,
        "status_message": "TEST",
        "status_class": status_class,
        "external_id": external_id,
        "destination": { "currency": currency, "amount": amount },
    })
    .to_string()
}

/// Builds a MoMo transfer body in compact JSON. The amount is a string in
/// major units, as MoMo sends it.
pub fn momo_report(external_id: &str, status: &str, amount: i64, currency: &str) -> String {
    json!({
        "externalId": external_id,
        "financialTransactionId": "1234567890",
        "status": status,
        "amount": amount.to_string(),
        "currency": currency,
    })
    .to_string()
}

/// A delivery as webhook_deliveries stores it.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    pub webhook_id: Uuid,
    pub provider: String,
    pub verdict: String,
    pub reason: Option<String>,
    pub body: Option<Vec<u8>>,
    pub body_size: i64,
    /// `[[name, value], ...]` in arrival order.
    pub headers: Value,
    pub payout_id: Option<Uuid>,
}

const STORED_DELIVERY_COLUMNS: &str =
    "webhook_id, provider, verdict, reason, body, body_size, headers, payout_id";

type StoredDeliveryRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<Vec<u8>>,
    i64,
    Value,
    Option<Uuid>,
);

fn stored_delivery(row: StoredDeliveryRow) -> StoredDelivery {
    let (webhook_id, provider, verdict, reason, body, body_size, headers, payout_id) = row;
    StoredDelivery {
        webhook_id,
        provider,
        verdict,
        reason,
        body,
        body_size,
        headers,
        payout_id,
    }
}

/// A stand-in for MoMo's transfer status endpoint. It returns the status
/// that the test sets, or fails while none is set, and records every
/// payout id it is requested for.
#[derive(Default)]
pub struct MomoStatusStub {
    answer: std::sync::Mutex<Option<nepxy_api::webhooks::ReportStatus>>,
    requested: std::sync::Mutex<Vec<Uuid>>,
}

impl MomoStatusStub {
    pub fn answering(answer: Option<nepxy_api::webhooks::ReportStatus>) -> std::sync::Arc<Self> {
        let stub = Self::default();
        stub.set_answer(answer);
        std::sync::Arc::new(stub)
    }

    /// Sets the status of later lookups; `None` makes them fail.
    pub fn set_answer(&self, answer: Option<nepxy_api::webhooks::ReportStatus>) {
        *self.answer.lock().expect("stub lock") = answer;
    }

    /// Payout ids looked up so far, in order.
    pub fn requested_ids(&self) -> Vec<Uuid> {
        self.requested.lock().expect("stub lock").clone()
    }
}

impl TransferStatusLookup for MomoStatusStub {
    fn transfer_status(&self, payout_id: Uuid) -> nepxy_api::webhooks::confirm::LookupFuture<'_> {
        self.requested.lock().expect("stub lock").push(payout_id);
        let answer = *self.answer.lock().expect("stub lock");
        Box::pin(async move {
            answer.ok_or_else(|| {
                nepxy_api::webhooks::confirm::LookupError(
                    "the test stub has no status to report".to_owned(),
                )
            })
        })
    }
}

impl TestApp {
    /// POSTs a webhook delivery with exactly these headers and body bytes.
    pub async fn send_webhook(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Reply {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        self.send_raw(Method::POST, path, None, &pairs, body).await
    }

    /// Sends `body` to the TMoney intake, signed now with a new nonce.
    pub async fn send_tmoney(&self, body: &str) -> Reply {
        let headers = tmoney_headers(body.as_bytes());
        self.send_webhook("/v1/webhooks/tmoney", &headers, body.as_bytes().to_vec())
            .await
    }

    /// Sends `body` to the Thunes intake, signed now with a new event id.
    pub async fn send_thunes(&self, body: &str) -> Reply {
        let headers = thunes_headers(body.as_bytes());
        self.send_webhook("/v1/webhooks/thunes", &headers, body.as_bytes().to_vec())
            .await
    }

    /// POSTs `body` to the MoMo callback URL of `payout_id`.
    pub async fn send_momo(&self, payout_id: Uuid, body: &str) -> Reply {
        let headers = [("content-type".to_owned(), "application/json".to_owned())];
        self.send_webhook(&momo_path(payout_id), &headers, body.as_bytes().to_vec())
            .await
    }

    /// Creates an XOF payout with the given Idempotency-Key and returns its id,
    /// panicking unless the server responds with 201.
    pub async fn create_payout(
        &self,
        client: &Caller,
        key: &str,
        amount: i64,
        provider: &str,
    ) -> Uuid {
        let reply = self
            .post_payout(client, key, &payout_body(amount, provider))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create payout {key}: {:?}",
            reply.body
        );
        reply.body["id"]
            .as_str()
            .expect("payout id")
            .parse()
            .expect("payout id is a UUID")
    }

    /// Returns a payout as GET /v1/payouts/{id} shows it.
    pub async fn payout(&self, reader: &Caller, payout_id: Uuid) -> Value {
        let reply = self
            .get(&format!("/v1/payouts/{payout_id}"), &reader.token)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "payout {payout_id}: {:?}",
            reply.body
        );
        reply.body
    }

    /// Returns the `status` of a payout as GET /v1/payouts/{id} shows it.
    pub async fn payout_status(&self, reader: &Caller, payout_id: Uuid) -> String {
        self.payout(reader, payout_id).await["status"]
            .as_str()
            .expect("payout status")
            .to_owned()
    }

    /// Returns a stored delivery, panicking when there is none with this id.
    pub async fn stored_delivery(&self, webhook_id: Uuid) -> StoredDelivery {
        let row: StoredDeliveryRow = sqlx::query_as(&format!(
            "SELECT {STORED_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1"
        ))
        .bind(webhook_id)
        .fetch_one(&self.pool)
        .await
        .unwrap_or_else(|error| panic!("read delivery {webhook_id}: {error}"));
        stored_delivery(row)
    }

    /// Returns the most recently received delivery, for requests whose
    /// response does not include the webhook id.
    pub async fn latest_delivery(&self) -> StoredDelivery {
        let row: StoredDeliveryRow = sqlx::query_as(&format!(
            "SELECT {STORED_DELIVERY_COLUMNS} FROM webhook_deliveries \
             ORDER BY received_at DESC, webhook_id DESC LIMIT 1"
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap_or_else(|error| panic!("read the latest delivery: {error}"));
        stored_delivery(row)
    }

    /// Returns the number of rows in the events table.
    pub async fn event_count(&self) -> i64 {
        self.count("SELECT count(*) FROM events").await
    }

    /// Returns the event types of one payout, in sequence order.
    pub async fn payout_event_types(&self, payout_id: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT event_type FROM events WHERE aggregate_type = 'Payout' AND aggregate_id = $1 \
             ORDER BY sequence",
        )
        .bind(payout_id.to_string())
        .fetch_all(&self.pool)
        .await
        .unwrap_or_else(|error| panic!("read events of payout {payout_id}: {error}"))
    }
}

/// Returns the `webhook_id` of an intake response as a UUID.
pub fn webhook_id_of(reply: &Reply) -> Uuid {
    reply.body["webhook_id"]
        .as_str()
        .unwrap_or_else(|| panic!("response has no webhook_id: {:?}", reply.body))
        .parse()
        .expect("webhook_id is a UUID")
}
pub mod faults;
pub mod fuzzing;
pub mod sandbox;

/// Dispatcher settings for tests: short waits so a payout goes from
/// accepted to final within a test's patience.
pub fn fast_dispatch_settings() -> nepxy_api::dispatch::Settings {
    nepxy_api::dispatch::Settings {
        batch_size: 16,
        lease: Duration::from_secs(30),
        idle_wait: Duration::from_millis(50),
        first_poll_wait: Duration::from_millis(300),
        max_poll_wait: Duration::from_secs(2),
        max_calls: 4,
        max_retry_time: Duration::from_secs(10),
        requeue_wait: Duration::from_millis(200),
        max_requeue_wait: Duration::from_secs(2),
    }
}

impl TestApp {
    /// Starts the dispatcher in the background with `settings`; it stops
    /// when the returned sender is dropped.
    pub fn start_dispatcher(&self, settings: nepxy_api::dispatch::Settings) -> oneshot::Sender<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let dispatcher = self.state.dispatcher(settings);
        tokio::spawn(dispatcher.run(async move {
            let _ = stopped.await;
        }));
        stop
    }

    /// Polls the payout until its status is one of `statuses`, for at most
    /// `timeout`; returns the last payout seen.
    pub async fn wait_for_status(
        &self,
        reader: &Caller,
        payout_id: &str,
        statuses: &[&str],
        timeout: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let reply = self
                .get(&format!("/v1/payouts/{payout_id}"), &reader.token)
                .await;
            let status = reply.body["status"].as_str().unwrap_or_default().to_owned();
            if statuses.contains(&status.as_str()) || tokio::time::Instant::now() >= deadline {
                return reply.body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The provider sandbox binary, killed when dropped.
pub struct SandboxProcess {
    pub base_url: String,
    child: tokio::process::Child,
}

impl SandboxProcess {
    /// Starts `nepxy-provider-sandbox` on a free loopback port, sending
    /// TMoney and Thunes callbacks to `callback_base_url`.
    pub async fn start(callback_base_url: &str) -> SandboxProcess {
        use tokio::io::AsyncBufReadExt;

        let mut child = tokio::process::Command::new(binary_path("nepxy-provider-sandbox"))
            .args([
                "--port",
                "0",
                "--callback-base-url",
                callback_base_url,
                "--callback-delay-ms",
                "100",
            ])
            .env("TMONEY_WEBHOOK_SECRET", TEST_TMONEY_SECRET)
            .env("THUNES_WEBHOOK_SECRET", TEST_THUNES_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start nepxy-provider-sandbox");
        let stdout = child.stdout.take().expect("sandbox stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("sandbox prints its address in time")
            .expect("read sandbox stdout")
            .expect("sandbox printed a line");
        let address = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first sandbox line {first:?}"))
            .trim()
            .to_owned();
        // Keep reading stdout so the sandbox never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        SandboxProcess {
            base_url: format!("http://{address}"),
            child,
        }
    }

    /// Every provider transaction the sandbox created, with the number of
    /// create requests it received per reference.
    pub async fn transactions(&self) -> Value {
        reqwest::get(format!("{}/sandbox/transactions", self.base_url))
            .await
            .expect("sandbox answers")
            .json()
            .await
            .expect("sandbox JSON")
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Provider variables that point every provider at `sandbox_url`, with
/// callbacks to `public_base_url`.
pub fn sandbox_provider_env(sandbox_url: &str, public_base_url: &str) -> Vec<(String, String)> {
    [
        ("MOMO_BASE_URL", sandbox_url.to_owned()),
        ("MOMO_API_USER", Uuid::new_v4().to_string()),
        ("MOMO_API_KEY", "sandbox-api-key".to_owned()),
        (
            "MOMO_SUBSCRIPTION_KEY",
            "sandbox-subscription-key".to_owned(),
        ),
        ("MOMO_TARGET_ENVIRONMENT", "sandbox".to_owned()),
        ("MOMO_CALLBACK_BASE_URL", public_base_url.to_owned()),
        ("THUNES_BASE_URL", sandbox_url.to_owned()),
        ("THUNES_API_KEY", "sandbox-thunes-key".to_owned()),
        ("THUNES_API_SECRET", "sandbox-thunes-secret".to_owned()),
        ("THUNES_PAYER_ID", "9999".to_owned()),
        (
            "THUNES_CALLBACK_URL",
            format!("{public_base_url}/v1/webhooks/thunes"),
        ),
        ("TMONEY_BASE_URL", sandbox_url.to_owned()),
        ("TMONEY_API_KEY", "sandbox-tmoney-key".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Starts the server wired to a fresh provider sandbox: the server's port is
/// chosen first so the sandbox knows where to send callbacks.
pub async fn spawn_app_with_sandbox(extra: &[(&str, &str)]) -> (TestApp, SandboxProcess) {
    if std::env::var_os("TEST_LOG").is_some() {
        nepxy_api::telemetry::init(nepxy_api::config::LogFormat::Text);
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let public_base_url = format!("http://{address}");
    let sandbox = SandboxProcess::start(&public_base_url).await;

    let provider_env = sandbox_provider_env(&sandbox.base_url, &public_base_url);
    let mut vars: Vec<(&str, &str)> = provider_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    vars.extend_from_slice(extra);

    let database_url = fresh_database().await;
    let config = test_config(&database_url, &vars);
    let pool = nepxy_api::connect(&config)
        .await
        .expect("connect test database");
    let state = AppState::new(config, pool.clone()).expect("state");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let switches = state.switches.clone();
    tokio::spawn(nepxy_api::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let app = TestApp {
        base_url: public_base_url,
        database_url,
        pool,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        switches,
        state,
        shutdown: Some(shutdown),
    };
    (app, sandbox)
}

/// Webhook retry settings for tests: retries come within milliseconds.
pub fn fast_retry_settings(max_attempts: i32) -> nepxy_api::webhooks::retry::Settings {
    nepxy_api::webhooks::retry::Settings {
        batch_size: 16,
        lease: Duration::from_secs(30),
        idle_wait: Duration::from_millis(50),
        first_wait: Duration::from_millis(100),
        max_wait: Duration::from_millis(400),
        max_attempts,
        max_age: Duration::from_secs(600),
    }
}

impl TestApp {
    /// Makes a stored delivery due for its next automatic retry now.
    pub async fn make_retry_due(&self, webhook_id: Uuid) {
        sqlx::query("UPDATE webhook_deliveries SET next_retry_at = now() WHERE webhook_id = $1")
            .bind(webhook_id)
            .execute(&self.pool)
            .await
            .expect("make the retry due now");
    }

    /// Starts the webhook retry worker; it stops when the sender is dropped.
    pub fn start_webhook_retries(
        &self,
        settings: nepxy_api::webhooks::retry::Settings,
    ) -> oneshot::Sender<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = nepxy_api::webhooks::retry::RetryWorker {
            intake: self.state.intake.clone(),
            settings,
        };
        tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        stop
    }
}

// Status notifications to clients.

/// Notification worker settings for tests: retries come within a few hundred
/// milliseconds, and a notification is retried for at most 30 s.
pub fn fast_notification_settings() -> nepxy_api::notifications::Settings {
    nepxy_api::notifications::Settings {
        batch_size: 16,
        lease: Duration::from_secs(30),
        idle_wait: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        first_retry_delay: Duration::from_millis(100),
        max_retry_delay: Duration::from_millis(400),
        retry_window: Duration::from_secs(30),
    }
}

impl TestApp {
    /// Starts the notification delivery worker in the background with
    /// `settings`; it stops when the returned sender is dropped.
    pub fn start_notifier(
        &self,
        settings: nepxy_api::notifications::Settings,
    ) -> oneshot::Sender<()> {
        let (stop, stopped) = oneshot::channel::<()>();
        let notifier = nepxy_api::notifications::Notifier::new(
            self.pool.clone(),
            self.state.config.app_env,
            settings,
        )
        .expect("notification HTTP client");
        tokio::spawn(notifier.run(async move {
            let _ = stopped.await;
        }));
        stop
    }
}

/// Starts the router on 127.0.0.1:0 against an existing database, as a
/// restarted instance would: nothing is created or migrated.
pub async fn spawn_app_on(database_url: &str, extra: &[(&str, &str)]) -> TestApp {
    let config = test_config(database_url, extra);
    let pool = nepxy_api::connect(&config)
        .await
        .expect("connect existing test database");
    let state = AppState::new(config, pool.clone()).expect("state");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let switches = state.switches.clone();
    tokio::spawn(nepxy_api::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    TestApp {
        switches,
        state,
        base_url: format!("http://{address}"),
        database_url: database_url.to_owned(),
        pool,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client"),
        shutdown: Some(shutdown),
    }
}
