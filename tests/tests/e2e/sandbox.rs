//! Runs the nepxy-provider-sandbox binary and checks each provider's API, the
//! scripted outcomes, the create request counts behind "never paid twice",
//! and that every callback verifies and parses with the ledger's own
//! webhook adapters.
//!
//! The binary must be built first (`cargo build --workspace --bins`, which
//! scripts/test.sh runs). No database is needed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use nepxy_api::webhooks::momo::callback_token;
use nepxy_api::webhooks::{Delivery, Report, ReportStatus, Secrets, Verified, adapter};
use nepxy_ledger::Provider;
use nepxy_tests::{
    TEST_MOMO_SECRET, TEST_THUNES_KEY, TEST_THUNES_SECRET, TEST_TMONEY_SECRET, binary_path,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use uuid::Uuid;

/// Maximum wait for the sandbox's `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Maximum wait for one expected callback.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum wait for a status to reach an expected value.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two status polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The sandbox's --callback-delay-ms in these tests.
const CALLBACK_DELAY_MS: u64 = 50;
/// Timeout of the tests' own HTTP requests. Longer than the 3 s of `...02`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

const SUBSCRIPTION_KEY: &str = "test-subscription-key";
const MOMO_API_USER: &str = "4f6c2f0e-8f5b-4b4e-9a53-2f3f1f7d5c10";
const MOMO_API_KEY: &str = "test-momo-api-key";
const THUNES_API_KEY: &str = "test-thunes-key";
const THUNES_API_SECRET: &str = "test-thunes-secret";
const TMONEY_API_KEY: &str = "test-tmoney-api-key";

// Callback receiver

/// A request that reached the callback receiver.
#[derive(Debug)]
struct ReceivedCallback {
    method: Method,
    path: String,
    /// Lowercase header names and values, as the ledger's adapters take them.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    received_at: Instant,
}

impl ReceivedCallback {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("callback body is JSON")
    }
}

/// A small axum server on 127.0.0.1:0 that records every request and
/// responds 200.
struct Receiver {
    base_url: String,
    callbacks: mpsc::UnboundedReceiver<ReceivedCallback>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the callback receiver");
        let address = listener.local_addr().expect("receiver address");
        let (sender, callbacks) = mpsc::unbounded_channel();
        let app = Router::new().fallback(record_callback).with_state(sender);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("callback receiver");
        });
        Receiver {
            base_url: format!("http://{address}"),
            callbacks,
            server,
        }
    }

    /// Waits for the next callback. `context` names it in the failure.
    async fn next(&mut self, context: &str) -> ReceivedCallback {
        match tokio::time::timeout(CALLBACK_TIMEOUT, self.callbacks.recv()).await {
            Ok(Some(callback)) => callback,
            Ok(None) => panic!("{context}: the callback receiver stopped"),
            Err(_) => panic!("{context}: no callback within {CALLBACK_TIMEOUT:?}"),
        }
    }

    /// Asserts that no callback arrives within `window`.
    async fn expect_none(&mut self, window: Duration, context: &str) {
        if let Ok(Some(callback)) = tokio::time::timeout(window, self.callbacks.recv()).await {
            panic!(
                "{context}: unexpected callback {} {} {}",
                callback.method,
                callback.path,
                String::from_utf8_lossy(&callback.body)
            );
        }
    }

    /// URL of the ledger's MoMo webhook for the payout, with a callback
    /// token made with the test MoMo secret.
    fn momo_callback_url(&self, payout_id: Uuid) -> String {
        format!(
            "{}/v1/webhooks/momo/{}",
            self.base_url,
            callback_token(TEST_MOMO_SECRET.as_bytes(), payout_id)
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record_callback(
    State(sender): State<mpsc::UnboundedSender<ReceivedCallback>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().expect("callback header is text");
            (name.as_str().to_owned(), value.to_owned())
        })
        .collect();
    let callback = ReceivedCallback {
        method,
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        received_at: Instant::now(),
    };
    // A test that stopped reading does not need later callbacks.
    let _ = sender.send(callback);
    "ok"
}

// Verification with the ledger's adapters

/// Verifies a callback with the ledger's adapter for `provider` and parses
/// its body. Panics with the rejection or parse error.
fn verify_and_parse(provider: Provider, callback: &ReceivedCallback) -> (Verified, Report) {
    let (secret, path_token) = match provider {
        Provider::Tmoney => (TEST_TMONEY_SECRET.as_bytes().to_vec(), None),
        Provider::Thunes => (TEST_THUNES_KEY.to_vec(), None),
        Provider::Momo => (
            TEST_MOMO_SECRET.as_bytes().to_vec(),
            callback.path.strip_prefix("/v1/webhooks/momo/"),
        ),
    };
    let delivery = Delivery {
        headers: &callback.headers,
        body: &callback.body,
        path_token,
    };
    let secrets = Secrets {
        current: Some(secret),
        previous: None,
    };
    let now = chrono::Utc::now().timestamp();
    let body_text = String::from_utf8_lossy(&callback.body);
    let verified = adapter(provider)
        .verify(&delivery, &secrets, now, true)
        .unwrap_or_else(|rejection| {
            panic!("{provider} callback rejected: {rejection}; body {body_text}")
        });
    let report = adapter(provider)
        .parse(&callback.body)
        .unwrap_or_else(|error| {
            panic!("{provider} callback unreadable: {error}; body {body_text}")
        });
    (verified, report)
}

// Sandbox process and provider clients

/// A running nepxy-provider-sandbox. Dropping it kills the process and,
/// when the test is failing, prints the sandbox log.
struct SandboxProcess {
    child: Child,
    base_url: String,
    log: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

impl SandboxProcess {
    /// Starts the sandbox with callbacks to `callback_base_url` and the test
    /// webhook secrets, given through the environment.
    async fn start(callback_base_url: &str) -> SandboxProcess {
        SandboxProcess::start_with_args(callback_base_url, &[]).await
    }

    /// Starts the sandbox as [`SandboxProcess::start`] does, with
    /// `extra_args` added to the command line.
    async fn start_with_args(callback_base_url: &str, extra_args: &[&str]) -> SandboxProcess {
        let mut child = Command::new(binary_path("nepxy-provider-sandbox"))
            .args(["--port", "0", "--callback-base-url", callback_base_url])
            .args(["--callback-delay-ms", &CALLBACK_DELAY_MS.to_string()])
            .args(extra_args)
            .env("TMONEY_WEBHOOK_SECRET", TEST_TMONEY_SECRET)
            .env("THUNES_WEBHOOK_SECRET", TEST_THUNES_SECRET)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start nepxy-provider-sandbox");

        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("sandbox stderr");
        let log_writer = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log_writer.lock().expect("log lock").push(line);
            }
        });

        let stdout = child.stdout.take().expect("sandbox stdout");
        let mut stdout_lines = BufReader::new(stdout).lines();
        let first_line = tokio::time::timeout(START_TIMEOUT, stdout_lines.next_line())
            .await
            .expect("the sandbox printed no line in time")
            .expect("read sandbox stdout")
            .expect("the sandbox closed stdout without a line");
        let address = first_line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first stdout line {first_line:?}"));
        assert!(
            address.starts_with("127.0.0.1:"),
            "the sandbox must bind 127.0.0.1, got {address}"
        );

        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()
            .expect("HTTP client");
        SandboxProcess {
            child,
            base_url: format!("http://{address}"),
            log,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Kills the process and waits for it to exit.
    async fn stop(mut self) {
        self.child.kill().await.expect("kill the sandbox");
    }

    async fn momo_token(&self) -> String {
        let reply = self
            .http
            .post(self.url("/disbursement/token/"))
            .basic_auth(MOMO_API_USER, Some(MOMO_API_KEY))
            .header("Ocp-Apim-Subscription-Key", SUBSCRIPTION_KEY)
            .send()
            .await
            .expect("MoMo token request");
        assert_eq!(reply.status(), StatusCode::OK, "MoMo token status");
        let body: Value = reply.json().await.expect("MoMo token body");
        assert_eq!(body["token_type"], "access_token", "{body}");
        assert_eq!(body["expires_in"], 3600, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token is a string")
            .to_owned()
    }

    /// Sends a MoMo transfer of 2500 XOF to `msisdn`.
    async fn momo_transfer(
        &self,
        token: &str,
        reference: Uuid,
        msisdn: &str,
        callback_url: Option<&str>,
    ) -> reqwest::Response {
        self.try_momo_transfer(&self.http, token, reference, msisdn, callback_url)
            .await
            .expect("MoMo transfer request")
    }

    async fn try_momo_transfer(
        &self,
        http: &reqwest::Client,
        token: &str,
        reference: Uuid,
        msisdn: &str,
        callback_url: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        self.momo_transfer_request(http, token, reference, msisdn, callback_url)
            .send()
            .await
    }

    fn momo_transfer_request(
        &self,
        http: &reqwest::Client,
        token: &str,
        reference: Uuid,
        msisdn: &str,
        callback_url: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut request = http
            .post(self.url("/disbursement/v1_0/transfer"))
            .bearer_auth(token)
            .header("X-Reference-Id", reference.to_string())
            .header("X-Target-Environment", "sandbox")
            .header("Ocp-Apim-Subscription-Key", SUBSCRIPTION_KEY)
            .json(&json!({
                "amount": "2500",
                "currency": "XOF",
                "externalId": format!("po-{reference}"),
                "payee": { "partyIdType": "MSISDN", "partyId": msisdn },
                "payerMessage": "Payout",
                "payeeNote": "Remittance payout",
            }));
        if let Some(callback_url) = callback_url {
            request = request.header("X-Callback-Url", callback_url);
        }
        request
    }

    async fn momo_status(&self, token: &str, reference: Uuid) -> (StatusCode, Value) {
        let reply = self
            .http
            .get(self.url(&format!("/disbursement/v1_0/transfer/{reference}")))
            .bearer_auth(token)
            .header("X-Target-Environment", "sandbox")
            .header("Ocp-Apim-Subscription-Key", SUBSCRIPTION_KEY)
            .send()
            .await
            .expect("MoMo status request");
        json_reply(reply).await
    }

    /// Sends a TMoney disbursement of 2500 XOF to `phone_number`.
    async fn tmoney_disburse(&self, reference: &str, phone_number: &str) -> reqwest::Response {
        self.tmoney_disburse_request(reference, phone_number)
            .send()
            .await
            .expect("TMoney disburse request")
    }

    fn tmoney_disburse_request(
        &self,
        reference: &str,
        phone_number: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/tmoney/v1/disburse"))
            .bearer_auth(TMONEY_API_KEY)
            .json(&json!({
                "reference": reference,
                "phone_number": phone_number,
                "amount": 2500,
                "currency": "XOF",
                "reason": format!("Payout {reference}"),
            }))
    }

    async fn tmoney_status(&self, reference: &str) -> (StatusCode, Value) {
        let reply = self
            .http
            .get(self.url(&format!("/tmoney/v1/transactions/{reference}")))
            .bearer_auth(TMONEY_API_KEY)
            .send()
            .await
            .expect("TMoney status request");
        json_reply(reply).await
    }

    /// Creates a Thunes quotation for 20000 XOF.
    async fn thunes_quotation(&self, external_id: &str) -> (StatusCode, Value) {
        let reply = self
            .http
            .post(self.url("/v2/money-transfer/quotations"))
            .basic_auth(THUNES_API_KEY, Some(THUNES_API_SECRET))
            .json(&json!({
                "external_id": external_id,
                "payer_id": 9999,
                "mode": "DESTINATION_AMOUNT",
                "transaction_type": "C2C",
                "source": { "amount": null, "currency": "EUR", "country_iso_code": "FRA" },
                "destination": { "amount": 20000, "currency": "XOF" },
            }))
            .send()
            .await
            .expect("Thunes quotation request");
        json_reply(reply).await
    }

    /// Creates a Thunes transaction on the quotation named by
    /// `quotation_segment` (an id or `ext-{external_id}`).
    async fn thunes_transaction(
        &self,
        quotation_segment: &str,
        external_id: &str,
        msisdn: &str,
        callback_url: Option<&str>,
    ) -> reqwest::Response {
        let mut body = json!({
            "external_id": external_id,
            "credit_party_identifier": { "msisdn": msisdn },
            "sender": { "firstname": "SenderFirst", "lastname": "SenderLast", "country_iso_code": "FRA" },
            "beneficiary": { "firstname": "BenefFirst", "lastname": "BenefLast" },
            "purpose_of_remittance": "FAMILY_SUPPORT",
        });
        if let Some(callback_url) = callback_url {
            body["callback_url"] = json!(callback_url);
        }
        self.http
            .post(self.url(&format!(
                "/v2/money-transfer/quotations/{quotation_segment}/transactions"
            )))
            .basic_auth(THUNES_API_KEY, Some(THUNES_API_SECRET))
            .json(&body)
            .send()
            .await
            .expect("Thunes transaction request")
    }

    async fn thunes_confirm(&self, transaction_segment: &str) -> (StatusCode, Value) {
        let reply = self
            .http
            .post(self.url(&format!(
                "/v2/money-transfer/transactions/{transaction_segment}/confirm"
            )))
            .basic_auth(THUNES_API_KEY, Some(THUNES_API_SECRET))
            .send()
            .await
            .expect("Thunes confirm request");
        json_reply(reply).await
    }

    async fn thunes_status(&self, transaction_segment: &str) -> (StatusCode, Value) {
        let reply = self
            .http
            .get(self.url(&format!(
                "/v2/money-transfer/transactions/{transaction_segment}"
            )))
            .basic_auth(THUNES_API_KEY, Some(THUNES_API_SECRET))
            .send()
            .await
            .expect("Thunes status request");
        json_reply(reply).await
    }

    /// Creates a quotation and a transaction for `external_id`, and returns
    /// the transaction request's response.
    async fn thunes_quote_and_create(
        &self,
        external_id: &str,
        msisdn: &str,
        callback_url: Option<&str>,
    ) -> reqwest::Response {
        let quotation_external_id = format!("{external_id}-q");
        let (status, quotation) = self.thunes_quotation(&quotation_external_id).await;
        assert_eq!(status, StatusCode::CREATED, "quotation: {quotation}");
        self.thunes_transaction(
            &format!("ext-{quotation_external_id}"),
            external_id,
            msisdn,
            callback_url,
        )
        .await
    }

    async fn sandbox_transaction(&self, reference: &str) -> (StatusCode, Value) {
        let reply = self
            .http
            .get(self.url(&format!("/sandbox/transactions/{reference}")))
            .send()
            .await
            .expect("sandbox transaction request");
        json_reply(reply).await
    }

    async fn sandbox_transactions(&self) -> Vec<Value> {
        let reply = self
            .http
            .get(self.url("/sandbox/transactions"))
            .send()
            .await
            .expect("sandbox transactions request");
        let (status, body) = json_reply(reply).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().expect("a JSON list").clone()
    }

    /// Polls `/sandbox/transactions/{reference}` until `field` equals
    /// `expected`, and returns the last body.
    async fn wait_for_field(&self, reference: &str, field: &str, expected: Value) -> Value {
        let deadline = Instant::now() + STATUS_TIMEOUT;
        loop {
            let (status, body) = self.sandbox_transaction(reference).await;
            if status == StatusCode::OK && body[field] == expected {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{reference}: {field} is not {expected} after {STATUS_TIMEOUT:?}: {status} {body}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls the log until a line contains `text`.
    async fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + STATUS_TIMEOUT;
        while !self.log_text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no log line contains {text:?} after {STATUS_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- sandbox log:\n{}", self.log_text());
        }
    }
}

/// Reads a JSON reply, or `Value::Null` for an empty body.
async fn json_reply(reply: reqwest::Response) -> (StatusCode, Value) {
    let status = reply.status();
    let bytes = reply.bytes().await.expect("reply body");
    if bytes.is_empty() {
        return (status, Value::Null);
    }
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("reply is not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

/// Reads the `code` of a MoMo or TMoney error body.
async fn error_code(reply: reqwest::Response) -> (StatusCode, String) {
    let (status, body) = json_reply(reply).await;
    let code = body["code"].as_str().unwrap_or_default().to_owned();
    (status, code)
}

/// Reads the first `errors[].code` of a Thunes error body.
async fn thunes_error_code(reply: reqwest::Response) -> (StatusCode, String) {
    let (status, body) = json_reply(reply).await;
    let code = body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

fn unique_reference(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

// Tests

#[tokio::test]
async fn momo_transfer_duplicate_status_and_callback() {
    let mut receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;

    let without_credentials = sandbox
        .http
        .post(sandbox.url("/disbursement/token/"))
        .header("Ocp-Apim-Subscription-Key", SUBSCRIPTION_KEY)
        .send()
        .await
        .expect("token request");
    assert_eq!(without_credentials.status(), StatusCode::UNAUTHORIZED);
    let token = sandbox.momo_token().await;

    let payout_id = Uuid::new_v4();
    let callback_url = receiver.momo_callback_url(payout_id);
    let unauthorized = sandbox
        .momo_transfer("not-a-token", payout_id, "22890112200", Some(&callback_url))
        .await;
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);

    let first = sandbox
        .momo_transfer(&token, payout_id, "22890112200", Some(&callback_url))
        .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(
        first.bytes().await.expect("body").is_empty(),
        "202 has an empty body"
    );

    let repeated = sandbox
        .momo_transfer(&token, payout_id, "22890112200", Some(&callback_url))
        .await;
    assert_eq!(
        error_code(repeated).await,
        (StatusCode::CONFLICT, "RESOURCE_ALREADY_EXIST".to_owned())
    );

    let (status, unknown) = sandbox.momo_status(&token, Uuid::new_v4()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(unknown["code"], "RESOURCE_NOT_FOUND");

    let callback = receiver.next("MoMo success callback").await;
    assert_eq!(callback.method, Method::POST);
    assert!(
        callback.path.starts_with("/v1/webhooks/momo/"),
        "{}",
        callback.path
    );
    let (verified, report) = verify_and_parse(Provider::Momo, &callback);
    assert_eq!(verified.payout_id, Some(payout_id));
    assert_eq!(report.status, ReportStatus::Succeeded);
    assert_eq!(report.raw_status, "SUCCESSFUL");
    assert_eq!(report.external_ref, format!("po-{payout_id}"));
    assert_eq!(report.amount_minor, Some(2500));
    assert_eq!(report.currency.as_deref(), Some("XOF"));
    assert_eq!(report.failure_code, None);
    let financial_id = report.provider_ref.clone().expect("financialTransactionId");

    let (status, transfer) = sandbox.momo_status(&token, payout_id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(transfer["status"], "SUCCESSFUL");
    assert_eq!(transfer["financialTransactionId"], financial_id.as_str());
    assert_eq!(transfer["payee"]["partyId"], "22890112200");
    assert_eq!(transfer["amount"], "2500");

    let reference = payout_id.to_string();
    let summary = sandbox
        .wait_for_field(&reference, "callbacks_delivered", json!(1))
        .await;
    assert_eq!(summary["provider"], "momo");
    assert_eq!(
        summary["attempts"], 2,
        "the unauthorized request is not counted"
    );
    assert_eq!(summary["status"], "succeeded");
    let transactions = sandbox.sandbox_transactions().await;
    let matching = transactions
        .iter()
        .filter(|transaction| transaction["reference"] == reference.as_str())
        .count();
    assert_eq!(matching, 1, "one transaction for the reference");

    sandbox.stop().await;
}

#[tokio::test]
async fn momo_callback_by_put() {
    let mut receiver = Receiver::start().await;
    let sandbox =
        SandboxProcess::start_with_args(&receiver.base_url, &["--momo-callback-method", "put"])
            .await;
    let token = sandbox.momo_token().await;
    let payout_id = Uuid::new_v4();
    let callback_url = receiver.momo_callback_url(payout_id);

    let accepted = sandbox
        .momo_transfer(&token, payout_id, "22890112200", Some(&callback_url))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let callback = receiver.next("MoMo callback by PUT").await;
    assert_eq!(callback.method, Method::PUT);
    let (verified, report) = verify_and_parse(Provider::Momo, &callback);
    assert_eq!(verified.payout_id, Some(payout_id));
    assert_eq!(report.status, ReportStatus::Succeeded);

    sandbox.stop().await;
}

#[tokio::test]
async fn tmoney_disburse_duplicate_status_and_callback() {
    let mut receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;
    let reference = unique_reference("po");

    let unauthorized = sandbox
        .http
        .post(sandbox.url("/tmoney/v1/disburse"))
        .json(&json!({ "reference": reference }))
        .send()
        .await
        .expect("disburse request");
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);

    let first = sandbox.tmoney_disburse(&reference, "+22890112200").await;
    let (status, accepted) = json_reply(first).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["reference"], reference.as_str());
    assert_eq!(accepted["status"], "PENDING");
    let transaction_id = accepted["transaction_id"]
        .as_str()
        .expect("transaction_id")
        .to_owned();

    let repeated = sandbox.tmoney_disburse(&reference, "+22890112200").await;
    let (status, duplicate) = json_reply(repeated).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(duplicate["code"], "DUPLICATE_REFERENCE");
    assert_eq!(duplicate["transaction_id"], transaction_id.as_str());

    let callback = receiver.next("TMoney success callback").await;
    assert_eq!(callback.method, Method::POST);
    assert_eq!(callback.path, "/v1/webhooks/tmoney");
    let (verified, report) = verify_and_parse(Provider::Tmoney, &callback);
    assert!(verified.replay_key.is_some(), "the nonce is the replay key");
    assert_eq!(report.status, ReportStatus::Succeeded);
    assert_eq!(report.raw_status, "SUCCESS");
    assert_eq!(report.external_ref, reference);
    assert_eq!(
        report.provider_ref.as_deref(),
        Some(transaction_id.as_str())
    );
    assert_eq!(report.amount_minor, Some(2500));
    assert_eq!(report.currency.as_deref(), Some("XOF"));
    assert_eq!(report.failure_code, None);
    assert!(report.occurred_at.is_some(), "occurred_at is sent");

    let (status, shown) = sandbox.tmoney_status(&reference).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["status"], "SUCCESS");
    assert_eq!(shown["transaction_id"], transaction_id.as_str());
    let (status, missing) = sandbox.tmoney_status("po-unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["code"], "NOT_FOUND");

    let summary = sandbox
        .wait_for_field(&reference, "callbacks_delivered", json!(1))
        .await;
    assert_eq!(summary["provider"], "tmoney");
    assert_eq!(summary["attempts"], 2);
    assert_eq!(sandbox.sandbox_transactions().await.len(), 1);

    sandbox.stop().await;
}

#[tokio::test]
async fn thunes_quotation_transaction_confirm_and_callback() {
    let mut receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;
    let external_id = unique_reference("idk");
    let quotation_external_id = format!("{external_id}-q");

    let unauthorized = sandbox
        .http
        .post(sandbox.url("/v2/money-transfer/quotations"))
        .json(&json!({}))
        .send()
        .await
        .expect("quotation request");
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);

    let (status, quotation) = sandbox.thunes_quotation(&quotation_external_id).await;
    assert_eq!(status, StatusCode::CREATED, "{quotation}");
    assert_eq!(quotation["external_id"], quotation_external_id.as_str());
    assert_eq!(
        quotation["destination"],
        json!({ "amount": 20000, "currency": "XOF" })
    );
    assert!(quotation["id"].is_u64(), "{quotation}");

    let (status, repeated_quotation) = sandbox.thunes_quotation(&quotation_external_id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(repeated_quotation["errors"][0]["code"], "1007001");
    assert_eq!(
        repeated_quotation["errors"][0]["message"],
        "External ID already used"
    );

    let quotation_segment = format!("ext-{quotation_external_id}");
    let created = sandbox
        .thunes_transaction(&quotation_segment, &external_id, "+22890112200", None)
        .await;
    let (status, transaction) = json_reply(created).await;
    assert_eq!(status, StatusCode::CREATED, "{transaction}");
    assert_eq!(transaction["status"], "10000");
    assert_eq!(transaction["status_class"], "1");
    assert_eq!(transaction["external_id"], external_id.as_str());
    assert_eq!(
        transaction["credit_party_identifier"]["msisdn"],
        "+22890112200"
    );
    let transaction_id = transaction["id"].as_u64().expect("numeric id");

    let repeated = sandbox
        .thunes_transaction(&quotation_segment, &external_id, "+22890112200", None)
        .await;
    assert_eq!(
        thunes_error_code(repeated).await,
        (StatusCode::BAD_REQUEST, "1007001".to_owned())
    );

    let (status, by_id) = sandbox.thunes_status(&transaction_id.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id["external_id"], external_id.as_str());
    assert_eq!(by_id["status"], "10000");
    receiver
        .expect_none(
            Duration::from_millis(300),
            "no callback before confirmation",
        )
        .await;

    let (status, confirmed) = sandbox.thunes_confirm(&format!("ext-{external_id}")).await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    assert_eq!(confirmed["status"], "20000");
    assert_eq!(confirmed["status_class"], "2");
    let (status, confirmed_again) = sandbox.thunes_confirm(&transaction_id.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{confirmed_again}");
    assert_eq!(confirmed_again["errors"][0]["code"], "INVALID_STATUS");

    let callback = receiver.next("Thunes success callback").await;
    assert_eq!(callback.method, Method::POST);
    assert_eq!(
        callback.path, "/v1/webhooks/thunes",
        "base URL without callback_url"
    );
    let (verified, report) = verify_and_parse(Provider::Thunes, &callback);
    assert_eq!(
        verified.replay_key.as_deref(),
        callback.header("webhook-id")
    );
    assert_eq!(report.status, ReportStatus::Succeeded);
    assert_eq!(report.raw_status, "70000");
    assert_eq!(report.external_ref, external_id);
    assert_eq!(report.provider_ref, Some(transaction_id.to_string()));
    assert_eq!(report.amount_minor, Some(20000));
    assert_eq!(report.currency.as_deref(), Some("XOF"));
    assert!(report.occurred_at.is_some(), "creation_date is readable");
    let body = callback.json();
    assert_eq!(body["status_class"], "7");
    assert_eq!(body["status_message"], "COMPLETED");

    let (status, completed) = sandbox.thunes_status(&format!("ext-{external_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(completed["status"], "70000");

    let summary = sandbox
        .wait_for_field(&external_id, "callbacks_delivered", json!(1))
        .await;
    assert_eq!(summary["provider"], "thunes");
    assert_eq!(summary["attempts"], 2);
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(
        sandbox.sandbox_transactions().await.len(),
        1,
        "quotations are not transactions"
    );

    sandbox.stop().await;
}

#[tokio::test]
async fn payee_not_found_fails_at_every_provider() {
    let mut receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;

    let token = sandbox.momo_token().await;
    let payout_id = Uuid::new_v4();
    let callback_url = receiver.momo_callback_url(payout_id);
    let accepted = sandbox
        .momo_transfer(&token, payout_id, "22890112201", Some(&callback_url))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let callback = receiver.next("MoMo failure callback").await;
    let (_, report) = verify_and_parse(Provider::Momo, &callback);
    assert_eq!(report.status, ReportStatus::Failed);
    assert_eq!(report.raw_status, "FAILED");
    assert_eq!(report.failure_code.as_deref(), Some("PAYEE_NOT_FOUND"));
    let (_, transfer) = sandbox.momo_status(&token, payout_id).await;
    assert_eq!(transfer["status"], "FAILED");
    assert_eq!(transfer["reason"]["code"], "PAYEE_NOT_FOUND");

    let tmoney_reference = unique_reference("po");
    let accepted = sandbox
        .tmoney_disburse(&tmoney_reference, "+22890112201")
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let callback = receiver.next("TMoney failure callback").await;
    let (_, report) = verify_and_parse(Provider::Tmoney, &callback);
    assert_eq!(report.status, ReportStatus::Failed);
    assert_eq!(report.raw_status, "FAILED");
    assert_eq!(report.failure_code.as_deref(), Some("PAYEE_NOT_FOUND"));
    assert_eq!(report.external_ref, tmoney_reference);

    let thunes_reference = unique_reference("idk");
    let thunes_callback_url = format!("{}/thunes-callbacks", receiver.base_url);
    let created = sandbox
        .thunes_quote_and_create(
            &thunes_reference,
            "+22890112201",
            Some(&thunes_callback_url),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let (status, _) = sandbox
        .thunes_confirm(&format!("ext-{thunes_reference}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let callback = receiver.next("Thunes failure callback").await;
    assert_eq!(
        callback.path, "/thunes-callbacks",
        "the transaction's callback_url"
    );
    let (_, report) = verify_and_parse(Provider::Thunes, &callback);
    assert_eq!(report.status, ReportStatus::Failed);
    assert_eq!(report.raw_status, "90201");
    assert_eq!(report.failure_code.as_deref(), Some("90201"));
    assert_eq!(callback.json()["status_class"], "9");

    for reference in [payout_id.to_string(), tmoney_reference, thunes_reference] {
        let (status, summary) = sandbox.sandbox_transaction(&reference).await;
        assert_eq!(status, StatusCode::OK, "{summary}");
        assert_eq!(summary["status"], "failed", "{summary}");
        assert_eq!(summary["attempts"], 1, "{summary}");
    }

    sandbox.stop().await;
}

#[tokio::test]
async fn rate_limit_then_success_at_every_provider() {
    let mut receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;

    let token = sandbox.momo_token().await;
    let payout_id = Uuid::new_v4();
    let callback_url = receiver.momo_callback_url(payout_id);
    let limited = sandbox
        .momo_transfer(&token, payout_id, "22890112204", Some(&callback_url))
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = limited.headers().get("retry-after").cloned();
    assert_eq!(
        retry_after.as_ref().map(|value| value.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(error_code(limited).await.1, "TOO_MANY_REQUESTS");
    let (status, not_created) = sandbox.sandbox_transaction(&payout_id.to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing created by the 429");
    assert_eq!(not_created["attempts"], 1);
    let (status, _) = sandbox.momo_status(&token, payout_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = sandbox
        .momo_transfer(&token, payout_id, "22890112204", Some(&callback_url))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let (_, report) = verify_and_parse(Provider::Momo, &receiver.next("MoMo callback").await);
    assert_eq!(report.status, ReportStatus::Succeeded);

    let tmoney_reference = unique_reference("po");
    let limited = sandbox
        .tmoney_disburse(&tmoney_reference, "+22890112204")
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .map(|value| value.as_bytes()),
        Some(&b"1"[..])
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = sandbox
        .tmoney_disburse(&tmoney_reference, "+22890112204")
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let (_, report) = verify_and_parse(Provider::Tmoney, &receiver.next("TMoney callback").await);
    assert_eq!(report.status, ReportStatus::Succeeded);

    let thunes_reference = unique_reference("idk");
    let quotation_external_id = format!("{thunes_reference}-q");
    let (status, _) = sandbox.thunes_quotation(&quotation_external_id).await;
    assert_eq!(status, StatusCode::CREATED);
    let quotation_segment = format!("ext-{quotation_external_id}");
    let limited = sandbox
        .thunes_transaction(&quotation_segment, &thunes_reference, "+22890112204", None)
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .map(|value| value.as_bytes()),
        Some(&b"1"[..])
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = sandbox
        .thunes_transaction(&quotation_segment, &thunes_reference, "+22890112204", None)
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let (status, _) = sandbox
        .thunes_confirm(&format!("ext-{thunes_reference}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, report) = verify_and_parse(Provider::Thunes, &receiver.next("Thunes callback").await);
    assert_eq!(report.status, ReportStatus::Succeeded);

    for reference in [payout_id.to_string(), tmoney_reference, thunes_reference] {
        let (status, summary) = sandbox.sandbox_transaction(&reference).await;
        assert_eq!(status, StatusCode::OK, "{summary}");
        assert_eq!(summary["attempts"], 2, "{summary}");
        assert_eq!(summary["status"], "succeeded", "{summary}");
    }
    assert_eq!(
        sandbox.sandbox_transactions().await.len(),
        3,
        "one per reference"
    );

    sandbox.stop().await;
}

#[tokio::test]
async fn terminal_error_creates_nothing() {
    let mut receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;

    let token = sandbox.momo_token().await;
    let payout_id = Uuid::new_v4();
    let callback_url = receiver.momo_callback_url(payout_id);
    for _ in 0..2 {
        let rejected = sandbox
            .momo_transfer(&token, payout_id, "22890112206", Some(&callback_url))
            .await;
        assert_eq!(
            error_code(rejected).await,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "NOT_ENOUGH_FUNDS".to_owned()
            )
        );
    }
    let (status, _) = sandbox.momo_status(&token, payout_id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no transfer exists");
    let (status, not_created) = sandbox.sandbox_transaction(&payout_id.to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(not_created["attempts"], 2);

    let tmoney_reference = unique_reference("po");
    let rejected = sandbox
        .tmoney_disburse(&tmoney_reference, "+22890112206")
        .await;
    assert_eq!(
        error_code(rejected).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "NOT_ENOUGH_FUNDS".to_owned()
        )
    );
    let (status, _) = sandbox.tmoney_status(&tmoney_reference).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let thunes_reference = unique_reference("idk");
    let rejected = sandbox
        .thunes_quote_and_create(&thunes_reference, "+22890112206", None)
        .await;
    assert_eq!(
        thunes_error_code(rejected).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "NOT_ENOUGH_FUNDS".to_owned()
        )
    );
    let (status, _) = sandbox
        .thunes_status(&format!("ext-{thunes_reference}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert!(sandbox.sandbox_transactions().await.is_empty());
    receiver
        .expect_none(
            Duration::from_millis(500),
            "no callback for a terminal error",
        )
        .await;

    sandbox.stop().await;
}

#[tokio::test]
async fn ambiguous_error_still_creates_transaction() {
    let mut receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;

    let token = sandbox.momo_token().await;
    let payout_id = Uuid::new_v4();
    let callback_url = receiver.momo_callback_url(payout_id);
    let failed = sandbox
        .momo_transfer(&token, payout_id, "22890112203", Some(&callback_url))
        .await;
    assert_eq!(
        error_code(failed).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_PROCESSING_ERROR".to_owned()
        )
    );
    let (status, transfer) = sandbox.momo_status(&token, payout_id).await;
    assert_eq!(status, StatusCode::OK, "the transfer exists: {transfer}");
    let retried = sandbox
        .momo_transfer(&token, payout_id, "22890112203", Some(&callback_url))
        .await;
    assert_eq!(
        retried.status(),
        StatusCode::CONFLICT,
        "a retry finds the transfer"
    );
    let (_, report) = verify_and_parse(Provider::Momo, &receiver.next("MoMo callback").await);
    assert_eq!(report.status, ReportStatus::Succeeded);

    let tmoney_reference = unique_reference("po");
    let failed = sandbox
        .tmoney_disburse(&tmoney_reference, "+22890112203")
        .await;
    assert_eq!(
        error_code(failed).await,
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_PROCESSING_ERROR".to_owned()
        )
    );
    let (status, _) = sandbox.tmoney_status(&tmoney_reference).await;
    assert_eq!(status, StatusCode::OK);
    let (_, report) = verify_and_parse(Provider::Tmoney, &receiver.next("TMoney callback").await);
    assert_eq!(report.status, ReportStatus::Succeeded);

    let (_, summary) = sandbox.sandbox_transaction(&payout_id.to_string()).await;
    assert_eq!(summary["attempts"], 2);
    assert_eq!(sandbox.sandbox_transactions().await.len(), 2);

    sandbox.stop().await;
}

#[tokio::test]
async fn repeated_late_and_missing_callbacks() {
    let mut receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;
    let token = sandbox.momo_token().await;

    // ...07: the same callback twice.
    let payout_id = Uuid::new_v4();
    let callback_url = receiver.momo_callback_url(payout_id);
    let accepted = sandbox
        .momo_transfer(&token, payout_id, "22890112207", Some(&callback_url))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let first = receiver.next("first MoMo callback").await;
    let second = receiver.next("second MoMo callback").await;
    assert_eq!(first.body, second.body, "MoMo repeats the same body");
    for callback in [&first, &second] {
        let (_, report) = verify_and_parse(Provider::Momo, callback);
        assert_eq!(report.status, ReportStatus::Succeeded);
    }
    sandbox
        .wait_for_field(&payout_id.to_string(), "callbacks_delivered", json!(2))
        .await;

    let tmoney_reference = unique_reference("po");
    let accepted = sandbox
        .tmoney_disburse(&tmoney_reference, "+22890112207")
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let first = receiver.next("first TMoney callback").await;
    let second = receiver.next("second TMoney callback").await;
    let (first_verified, _) = verify_and_parse(Provider::Tmoney, &first);
    let (second_verified, _) = verify_and_parse(Provider::Tmoney, &second);
    assert_ne!(
        first_verified.replay_key, second_verified.replay_key,
        "each TMoney delivery has its own nonce"
    );

    let thunes_reference = unique_reference("idk");
    let created = sandbox
        .thunes_quote_and_create(&thunes_reference, "+22890112207", None)
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let (status, _) = sandbox
        .thunes_confirm(&format!("ext-{thunes_reference}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = receiver.next("first Thunes callback").await;
    let second = receiver.next("second Thunes callback").await;
    let (first_verified, _) = verify_and_parse(Provider::Thunes, &first);
    let (second_verified, _) = verify_and_parse(Provider::Thunes, &second);
    assert_eq!(
        first_verified.replay_key, second_verified.replay_key,
        "a repeated Thunes event keeps its webhook-id"
    );

    // ...09: no callback, but the status endpoint has the outcome.
    let silent_id = Uuid::new_v4();
    let accepted = sandbox
        .momo_transfer(
            &token,
            silent_id,
            "22890112209",
            Some(&receiver.momo_callback_url(silent_id)),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    sandbox
        .wait_for_field(&silent_id.to_string(), "status", json!("succeeded"))
        .await;
    let (_, transfer) = sandbox.momo_status(&token, silent_id).await;
    assert_eq!(transfer["status"], "SUCCESSFUL");
    receiver
        .expect_none(Duration::from_secs(1), "...09 sends no callback")
        .await;

    // ...08: the status is final long before the callback arrives.
    let late_id = Uuid::new_v4();
    let sent_at = Instant::now();
    let accepted = sandbox
        .momo_transfer(
            &token,
            late_id,
            "22890112208",
            Some(&receiver.momo_callback_url(late_id)),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    sandbox
        .wait_for_field(&late_id.to_string(), "status", json!("succeeded"))
        .await;
    let final_at = sent_at.elapsed();
    let late = receiver.next("late MoMo callback").await;
    let callback_at = late.received_at.duration_since(sent_at);
    assert!(
        callback_at >= Duration::from_millis(4500),
        "the callback came after {callback_at:?}"
    );
    assert!(
        final_at < Duration::from_secs(3),
        "the status was final after {final_at:?}"
    );
    let (verified, report) = verify_and_parse(Provider::Momo, &late);
    assert_eq!(verified.payout_id, Some(late_id));
    assert_eq!(report.status, ReportStatus::Succeeded);

    sandbox.stop().await;
}

#[tokio::test]
async fn slow_and_unanswered_create_requests() {
    let receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;

    // ...02: the transaction exists before the slow response, so a duplicate
    // sent meanwhile gets 409 at once.
    let slow_reference = unique_reference("po");
    let started = Instant::now();
    let slow = sandbox.tmoney_disburse(&slow_reference, "+22890112202");
    let duplicate = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reply = sandbox
            .tmoney_disburse(&slow_reference, "+22890112202")
            .await;
        (reply.status(), started.elapsed())
    };
    let (slow_reply, (duplicate_status, duplicate_at)) = tokio::join!(slow, duplicate);
    let slow_at = started.elapsed();
    assert_eq!(slow_reply.status(), StatusCode::ACCEPTED);
    assert!(
        slow_at >= Duration::from_secs(3),
        "answered after {slow_at:?}"
    );
    assert_eq!(duplicate_status, StatusCode::CONFLICT);
    assert!(
        duplicate_at < Duration::from_secs(2),
        "duplicate answered after {duplicate_at:?}"
    );

    // ...05: the request is held until the client gives up.
    let token = sandbox.momo_token().await;
    let held_id = Uuid::new_v4();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .no_proxy()
        .build()
        .expect("HTTP client");
    let result = sandbox
        .try_momo_transfer(&impatient, &token, held_id, "22890112205", None)
        .await;
    let error = result.expect_err("the held request has no answer");
    assert!(error.is_timeout(), "{error}");
    let (status, not_created) = sandbox.sandbox_transaction(&held_id.to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(not_created["attempts"], 1);

    sandbox.stop().await;
}

#[tokio::test]
async fn concurrent_duplicates_create_one_transaction() {
    let receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;
    let requests = 8;

    let tmoney_reference = unique_reference("po");
    let tmoney_requests = (0..requests)
        .map(|_| sandbox.tmoney_disburse_request(&tmoney_reference, "+22890112200"))
        .collect();
    let statuses = send_concurrently(tmoney_requests).await;
    let accepted = statuses
        .iter()
        .filter(|status| **status == StatusCode::ACCEPTED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|status| **status == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        (accepted, conflicts),
        (1, requests - 1),
        "TMoney: {statuses:?}"
    );

    let token = sandbox.momo_token().await;
    let payout_id = Uuid::new_v4();
    let momo_requests = (0..requests)
        .map(|_| {
            sandbox.momo_transfer_request(&sandbox.http, &token, payout_id, "22890112209", None)
        })
        .collect();
    let statuses = send_concurrently(momo_requests).await;
    let accepted = statuses
        .iter()
        .filter(|status| **status == StatusCode::ACCEPTED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|status| **status == StatusCode::CONFLICT)
        .count();
    assert_eq!(
        (accepted, conflicts),
        (1, requests - 1),
        "MoMo: {statuses:?}"
    );

    let transactions = sandbox.sandbox_transactions().await;
    assert_eq!(transactions.len(), 2, "{transactions:?}");
    for transaction in &transactions {
        assert_eq!(transaction["attempts"], requests, "{transaction}");
    }

    sandbox.stop().await;
}

/// Sends the requests concurrently and returns the response statuses.
async fn send_concurrently(requests: Vec<reqwest::RequestBuilder>) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for request in requests {
        tasks.spawn(request.send());
    }
    let mut statuses = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let reply = result.expect("request task").expect("request");
        statuses.push(reply.status());
    }
    statuses
}

#[tokio::test]
async fn non_loopback_callback_url_is_refused() {
    let receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;
    let token = sandbox.momo_token().await;

    // 192.0.2.0/24 is reserved for documentation (RFC 5737).
    let payout_id = Uuid::new_v4();
    let accepted = sandbox
        .momo_transfer(
            &token,
            payout_id,
            "22890112200",
            Some("http://192.0.2.10/v1/webhooks/momo/token"),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let summary = sandbox
        .wait_for_field(&payout_id.to_string(), "status", json!("succeeded"))
        .await;
    sandbox.wait_for_log("callback refused").await;
    assert!(
        sandbox.log_text().contains("192.0.2.10"),
        "the log names the URL"
    );
    assert_eq!(summary["callbacks_delivered"], 0);

    sandbox.stop().await;
}

#[tokio::test]
async fn reset_clears_transactions_and_keeps_tokens() {
    let receiver = Receiver::start().await;
    let sandbox = SandboxProcess::start(&receiver.base_url).await;
    let token = sandbox.momo_token().await;
    let payout_id = Uuid::new_v4();
    let accepted = sandbox
        .momo_transfer(&token, payout_id, "22890112209", None)
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert_eq!(sandbox.sandbox_transactions().await.len(), 1);

    let reply = sandbox
        .http
        .post(sandbox.url("/sandbox/reset"))
        .send()
        .await
        .expect("reset request");
    let (status, body) = json_reply(reply).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["transactions_dropped"], 1);
    assert!(sandbox.sandbox_transactions().await.is_empty());

    let (status, _) = sandbox.momo_status(&token, payout_id).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the token still works after a reset"
    );
    let accepted_again = sandbox
        .momo_transfer(&token, payout_id, "22890112209", None)
        .await;
    assert_eq!(
        accepted_again.status(),
        StatusCode::ACCEPTED,
        "the reference is free again"
    );

    sandbox.stop().await;
}

#[tokio::test]
async fn help_lists_outcome_table() {
    let output = Command::new(binary_path("nepxy-provider-sandbox"))
        .arg("--help")
        .output()
        .await
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for ending in ["00", "01", "02", "03", "04", "05", "06", "07", "08", "09"] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(ending)),
            "--help has no line for ...{ending}:\n{help}"
        );
    }
}

#[tokio::test]
async fn non_loopback_base_url_is_rejected_at_startup() {
    let run = Command::new(binary_path("nepxy-provider-sandbox"))
        .args([
            "--port",
            "0",
            "--callback-base-url",
            "http://192.0.2.10:8001",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(START_TIMEOUT, run)
        .await
        .expect("the sandbox exits at once")
        .expect("run the sandbox");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "no listening line");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--callback-base-url"), "{stderr}");
}
