//! Signed status notifications, end to end: the real server and PostgreSQL,
//! the delivery worker, and a local receiver on 127.0.0.1 that records every
//! request and responds with scripted statuses. Payouts reach their final
//! status through signed TMoney webhooks.
//!
//! Signatures are checked here with the Standard Webhooks rules written out
//! in this file, not with the server's code, so a mistake on the server
//! cannot hide in both sides.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use nepxy_ledger::metadata::{EventMetadata, Source};
use nepxy_ledger::{Payout, PayoutCommand, PayoutStatus};
use nepxy_projections::{Projected, Writes};
use nepxy_tests::{
    Caller, Reply, TestApp, fast_notification_settings, spawn_app, spawn_app_on, spawn_app_with,
    tmoney_report, unix_now, webhook_id_of,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore, oneshot};
use uuid::Uuid;

/// Maximum wait for a notification to arrive or reach a status.
const ARRIVAL_WAIT: Duration = Duration::from_secs(20);
/// Payout amount in XOF used by these tests.
const AMOUNT: i64 = 1_000;
/// Maximum clock difference that a Standard Webhooks receiver accepts.
const TIMESTAMP_TOLERANCE_SECONDS: i64 = 300;

// A local receiver of notifications.

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("request has no {name} header: {:?}", self.headers))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("notification body is JSON")
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Statuses to respond with per path, in order, and 200 once a script
    /// runs out.
    scripts: Mutex<HashMap<String, VecDeque<u16>>>,
    /// Paths whose responses wait for a permit of the semaphore.
    response_gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    arrived: Notify,
}

/// An HTTP server on 127.0.0.1 that records every request, stopped when
/// dropped.
struct Receiver {
    base_url: String,
    state: Arc<ReceiverState>,
    _shutdown: oneshot::Sender<()>,
}

async fn record(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let path = uri.path().to_owned();
    let headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let status = state
        .scripts
        .lock()
        .expect("receiver lock")
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    let gate = state
        .response_gates
        .lock()
        .expect("receiver lock")
        .get(&path)
        .cloned();
    state
        .received
        .lock()
        .expect("receiver lock")
        .push(Received {
            path,
            headers,
            body: body.to_vec(),
        });
    state.arrived.notify_waiters();

    if let Some(gate) = gate {
        let _permit = gate.acquire().await.expect("gate stays open");
    }
    AxumStatus::from_u16(status).expect("scripted status is valid")
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .fallback(record)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver on loopback");
        let address = listener.local_addr().expect("receiver address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            base_url: format!("http://{address}"),
            state,
            _shutdown: shutdown,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Makes the next requests to `path` get these statuses, in order.
    fn script(&self, path: &str, statuses: &[u16]) {
        self.state
            .scripts
            .lock()
            .expect("receiver lock")
            .insert(path.to_owned(), statuses.iter().copied().collect());
    }

    /// Makes responses to `path` wait until permits are added to the
    /// returned semaphore. The request is recorded before it waits.
    fn hold(&self, path: &str) -> Arc<Semaphore> {
        let gate = Arc::new(Semaphore::new(0));
        self.state
            .response_gates
            .lock()
            .expect("receiver lock")
            .insert(path.to_owned(), Arc::clone(&gate));
        gate
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("receiver lock").clone()
    }

    /// Waits until at least `count` requests arrived and returns them all.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + ARRIVAL_WAIT;
        loop {
            let arrived = self.state.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "expected {count} notification requests within {ARRIVAL_WAIT:?}, got {}",
                    self.received().len()
                );
            }
        }
    }
}

// Standard Webhooks verification, written out for the tests.

/// Computes one `v1` signature: the base64 of the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` with the key inside a `whsec_` secret.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(
            secret
                .strip_prefix("whsec_")
                .expect("secret starts with whsec_"),
        )
        .expect("secret is base64");
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Returns the base64 values of the `v1` entries of `webhook-signature`.
fn signature_entries(request: &Received) -> Vec<String> {
    request
        .header("webhook-signature")
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .map(str::to_owned)
        .collect()
}

/// Checks a request the way a Standard Webhooks receiver does: a fresh
/// timestamp, and at least one `v1` entry that matches `secret`.
fn verifies(request: &Received, secret: &str) -> bool {
    let timestamp = request.header("webhook-timestamp");
    let age = unix_now() - timestamp.parse::<i64>().expect("timestamp is a number");
    if age.abs() > TIMESTAMP_TOLERANCE_SECONDS {
        return false;
    }
    let expected = expected_signature(
        secret,
        request.header("webhook-id"),
        timestamp,
        &request.body,
    );
    signature_entries(request).contains(&expected)
}

// API helpers.

async fn register(app: &TestApp, client: &Caller, url: &str) -> Reply {
    app.send(
        Method::POST,
        "/v1/notification-endpoints",
        Some(&client.token),
        &[],
        Some(&json!({ "url": url, "description": "test receiver" })),
    )
    .await
}

/// Registers `url` and returns the endpoint id and its secret.
async fn register_ok(app: &TestApp, client: &Caller, url: &str) -> (String, String) {
    let reply = register(app, client, url).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "register {url}: {:?}",
        reply.body
    );
    let id = reply.body["id"].as_str().expect("endpoint id").to_owned();
    let secret = reply.body["secret"].as_str().expect("secret").to_owned();
    (id, secret)
}

/// Creates a payout and reports `status` (SUCCESS, FAILED or REVERSED) for
/// it by a signed TMoney webhook. Returns the payout id.
async fn payout_with_outcome(app: &TestApp, client: &Caller, key: &str, status: &str) -> Uuid {
    let payout_id = app.create_payout(client, key, AMOUNT, "tmoney").await;
    report(app, payout_id, status).await;
    payout_id
}

async fn report(app: &TestApp, payout_id: Uuid, status: &str) {
    let reply = app
        .send_tmoney(&tmoney_report(
            &payout_id.to_string(),
            status,
            AMOUNT,
            "XOF",
        ))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "TMoney {status}: {:?}",
        reply.body
    );
    assert_eq!(reply.body["verdict"], "applied", "TMoney {status}: verdict");
}

async fn notifications(app: &TestApp, client: &Caller, query: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/v1/notifications?{query}"), &client.token)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "notifications: {:?}",
        reply.body
    );
    reply.body["items"].as_array().expect("items").clone()
}

/// Polls the payout's notifications until one has `status`, and returns it.
async fn wait_for_notification(
    app: &TestApp,
    client: &Caller,
    payout_id: Uuid,
    status: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + ARRIVAL_WAIT;
    loop {
        let items = notifications(app, client, &format!("payout_id={payout_id}")).await;
        if let Some(found) = items.iter().find(|item| item["status"] == status) {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification of payout {payout_id} reached {status} within {ARRIVAL_WAIT:?}: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn notification_rows(app: &TestApp, payout_id: Uuid) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM notifications WHERE payout_id = '{payout_id}'"
    ))
    .await
}

async fn redeliver(app: &TestApp, client: &Caller, notification_id: &str) -> Reply {
    app.send(
        Method::POST,
        &format!("/v1/notifications/{notification_id}/redeliver"),
        Some(&client.token),
        &[],
        None,
    )
    .await
}

async fn replay(app: &TestApp, operator: &Caller, webhook_id: Uuid, dry_run: bool) -> Reply {
    let body = json!({ "reason": "payout created after the report", "dry_run": dry_run });
    app.send(
        Method::POST,
        &format!("/v1/webhooks/{webhook_id}/replay"),
        Some(&operator.token),
        &[],
        Some(&body),
    )
    .await
}

fn attempt_codes(notification: &Value) -> Vec<Value> {
    notification["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|attempt| attempt["status_code"].clone())
        .collect()
}

fn assert_url_rejected(reply: &Reply, url: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{url}: {:?}",
        reply.body
    );
    assert_eq!(reply.body["field"], "url", "{url}: field");
}

// Tests.

#[tokio::test]
async fn succeeded_payout_notifies_signed() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    let (endpoint_id, secret) = register_ok(&app, &client, &receiver.url("/hooks")).await;
    let _notifier = app.start_notifier(fast_notification_settings());

    let payout_id = payout_with_outcome(&app, &client, "notify-ok", "SUCCESS").await;
    let request = receiver.wait_for(1).await.remove(0);

    assert_eq!(request.path, "/hooks");
    assert_eq!(request.header("content-type"), "application/json");
    let webhook_id = request.header("webhook-id").to_owned();
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    assert_eq!(
        signature_entries(&request).len(),
        1,
        "one secret, one entry"
    );
    assert!(
        verifies(&request, &secret),
        "signature verifies with the secret"
    );
    assert!(
        !verifies(
            &request,
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        ),
        "another secret does not verify"
    );

    let body = request.json();
    assert_eq!(body["type"], "payout.succeeded");
    assert_eq!(body["id"], webhook_id, "body id is the webhook-id");
    assert!(body["created_at"].is_string(), "created_at: {body}");
    assert_eq!(
        body["data"],
        app.payout(&client, payout_id).await,
        "data is the payout as GET /v1/payouts/{{id}} shows it"
    );

    let delivered = wait_for_notification(&app, &client, payout_id, "delivered").await;
    assert_eq!(delivered["id"], webhook_id);
    assert_eq!(delivered["endpoint_id"], endpoint_id);
    assert_eq!(delivered["type"], "payout.succeeded");
    assert_eq!(attempt_codes(&delivered), vec![json!(200)]);
    assert!(delivered["delivered_at"].is_string());
}

#[tokio::test]
async fn failed_and_reversed_notify() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    let (_, secret) = register_ok(&app, &client, &receiver.url("/hooks")).await;
    let _notifier = app.start_notifier(fast_notification_settings());

    let failed = payout_with_outcome(&app, &client, "notify-failed", "FAILED").await;
    let reversed = payout_with_outcome(&app, &client, "notify-reversed", "SUCCESS").await;
    report(&app, reversed, "REVERSED").await;

    let requests = receiver.wait_for(3).await;
    let mut seen: Vec<(String, String)> = requests
        .iter()
        .map(|request| {
            assert!(verifies(request, &secret), "signature verifies");
            let body = request.json();
            (
                body["data"]["id"].as_str().expect("payout id").to_owned(),
                body["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (failed.to_string(), "payout.failed".to_owned()),
        (reversed.to_string(), "payout.succeeded".to_owned()),
        (reversed.to_string(), "payout.reversed".to_owned()),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    let reversed_body = requests
        .iter()
        .map(Received::json)
        .find(|body| body["type"] == "payout.reversed")
        .expect("reversed notification");
    assert_eq!(reversed_body["data"]["status"], "reversed");
    let succeeded_body = requests
        .iter()
        .map(Received::json)
        .find(|body| body["type"] == "payout.succeeded")
        .expect("succeeded notification");
    assert_eq!(
        succeeded_body["data"]["status"], "succeeded",
        "each notification keeps the payout as it was at its event"
    );
}

#[tokio::test]
async fn server_error_then_success_retries() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    receiver.script("/flaky", &[500]);
    let (_, secret) = register_ok(&app, &client, &receiver.url("/flaky")).await;
    let _notifier = app.start_notifier(fast_notification_settings());

    let payout_id = payout_with_outcome(&app, &client, "notify-retry", "SUCCESS").await;
    let requests = receiver.wait_for(2).await;

    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id"),
        "a retry keeps the webhook-id"
    );
    assert_eq!(
        requests[0].body, requests[1].body,
        "a retry sends the same body"
    );
    assert!(verifies(&requests[1], &secret));

    let delivered = wait_for_notification(&app, &client, payout_id, "delivered").await;
    assert_eq!(attempt_codes(&delivered), vec![json!(500), json!(200)]);
    let attempts = delivered["attempts"].as_array().expect("attempts");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[1]["attempt"], 2);
    assert!(
        attempts[0]["next_attempt_at"].is_string(),
        "the failed attempt names the next one"
    );
    assert!(
        attempts[1]["next_attempt_at"].is_null(),
        "the last attempt has no next"
    );
    assert!(attempts[0]["started_at"].is_string());
    assert!(attempts[0]["duration_ms"].is_number());
}

#[tokio::test]
async fn retries_end_in_failed() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    receiver.script("/down", &[503; 100]);
    register_ok(&app, &client, &receiver.url("/down")).await;
    let mut settings = fast_notification_settings();
    settings.retry_window = Duration::from_millis(600);
    let _notifier = app.start_notifier(settings);

    let payout_id = payout_with_outcome(&app, &client, "notify-down", "SUCCESS").await;
    let failed = wait_for_notification(&app, &client, payout_id, "failed").await;

    let attempts = failed["attempts"].as_array().expect("attempts");
    assert!(
        attempts.len() >= 2,
        "retried before giving up: {attempts:?}"
    );
    assert!(attempts.iter().all(|attempt| attempt["status_code"] == 503));
    assert!(
        attempts.last().expect("an attempt")["next_attempt_at"].is_null(),
        "no attempt follows the last"
    );
    assert!(failed["next_attempt_at"].is_null());
}

#[tokio::test]
async fn gone_disables_endpoint() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    receiver.script("/gone", &[410]);
    let (endpoint_id, _) = register_ok(&app, &client, &receiver.url("/gone")).await;
    let _notifier = app.start_notifier(fast_notification_settings());

    let first = payout_with_outcome(&app, &client, "notify-gone-1", "SUCCESS").await;
    let disabled = wait_for_notification(&app, &client, first, "disabled").await;
    assert_eq!(attempt_codes(&disabled), vec![json!(410)]);

    let endpoints = app.get("/v1/notification-endpoints", &client.token).await;
    let endpoint = &endpoints.body["items"][0];
    assert_eq!(endpoint["id"], endpoint_id);
    assert_eq!(endpoint["status"], "disabled");
    assert!(endpoint["disabled_at"].is_string());

    let second = payout_with_outcome(&app, &client, "notify-gone-2", "SUCCESS").await;
    assert_eq!(
        notification_rows(&app, second).await,
        0,
        "a disabled endpoint gets no new notifications"
    );
    assert_eq!(
        receiver.received().len(),
        1,
        "only the first request arrived"
    );

    let reply = redeliver(&app, &client, disabled["id"].as_str().expect("id")).await;
    assert_eq!(
        reply.status,
        StatusCode::CONFLICT,
        "redeliver: {:?}",
        reply.body
    );
}

#[tokio::test]
async fn redeliver_sends_same_id() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    let (_, secret) = register_ok(&app, &client, &receiver.url("/hooks")).await;
    let _notifier = app.start_notifier(fast_notification_settings());

    let payout_id = payout_with_outcome(&app, &client, "notify-again", "SUCCESS").await;
    let delivered = wait_for_notification(&app, &client, payout_id, "delivered").await;
    let notification_id = delivered["id"].as_str().expect("id").to_owned();

    let reply = redeliver(&app, &client, &notification_id).await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "redeliver: {:?}",
        reply.body
    );
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[1].header("webhook-id"), notification_id);
    assert!(verifies(&requests[1], &secret));

    let deadline = tokio::time::Instant::now() + ARRIVAL_WAIT;
    let again = loop {
        let items = notifications(&app, &client, &format!("payout_id={payout_id}")).await;
        let item = items[0].clone();
        if item["status"] == "delivered" && item["attempts"].as_array().map(Vec::len) == Some(2) {
            break item;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redelivery not recorded: {item}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(attempt_codes(&again), vec![json!(200), json!(200)]);
    assert_eq!(
        again["attempts"][1]["attempt"], 2,
        "attempt numbers continue"
    );

    for unknown in ["msg_00000000000000000000000000000000", "nope"] {
        let reply = redeliver(&app, &client, unknown).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{unknown}: {:?}",
            reply.body
        );
    }
}

#[tokio::test]
async fn redeliver_during_attempt_sends_again() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    let gate = receiver.hold("/slow");
    register_ok(&app, &client, &receiver.url("/slow")).await;
    let _notifier = app.start_notifier(fast_notification_settings());

    let payout_id = payout_with_outcome(&app, &client, "notify-in-flight", "SUCCESS").await;
    let first = receiver.wait_for(1).await.remove(0);
    let notification_id = first.header("webhook-id").to_owned();

    // The first attempt is still waiting for its response.
    let reply = redeliver(&app, &client, &notification_id).await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "redeliver: {:?}",
        reply.body
    );
    gate.add_permits(10);

    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[1].header("webhook-id"), notification_id);
    let deadline = tokio::time::Instant::now() + ARRIVAL_WAIT;
    loop {
        let items = notifications(&app, &client, &format!("payout_id={payout_id}")).await;
        let item = &items[0];
        if item["status"] == "delivered" && item["attempts"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "second attempt not recorded: {item}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rotation_signs_with_both_secrets() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    let (endpoint_id, old_secret) = register_ok(&app, &client, &receiver.url("/hooks")).await;

    let rotated = app
        .send(
            Method::POST,
            &format!("/v1/notification-endpoints/{endpoint_id}/rotate-secret"),
            Some(&client.token),
            &[],
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "rotate: {:?}", rotated.body);
    let new_secret = rotated.body["secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    assert_ne!(new_secret, old_secret);
    assert!(rotated.body["previous_secret_expires_at"].is_string());

    let _notifier = app.start_notifier(fast_notification_settings());
    payout_with_outcome(&app, &client, "notify-rotated", "SUCCESS").await;
    let request = receiver.wait_for(1).await.remove(0);

    let entries = signature_entries(&request);
    assert_eq!(
        entries.len(),
        2,
        "two signatures during rotation: {entries:?}"
    );
    let id = request.header("webhook-id");
    let timestamp = request.header("webhook-timestamp");
    assert_eq!(
        entries[0],
        expected_signature(&new_secret, id, timestamp, &request.body),
        "the first entry is signed with the new secret"
    );
    assert_eq!(
        entries[1],
        expected_signature(&old_secret, id, timestamp, &request.body),
        "the second entry is signed with the old secret"
    );
}

#[tokio::test]
async fn rotation_without_overlap_signs_once() {
    let app = spawn_app_with(&[("NOTIFICATION_SECRET_ROTATION_SECONDS", "0")]).await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    let (endpoint_id, old_secret) = register_ok(&app, &client, &receiver.url("/hooks")).await;
    let rotated = app
        .send(
            Method::POST,
            &format!("/v1/notification-endpoints/{endpoint_id}/rotate-secret"),
            Some(&client.token),
            &[],
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "rotate: {:?}", rotated.body);
    let new_secret = rotated.body["secret"]
        .as_str()
        .expect("new secret")
        .to_owned();

    let _notifier = app.start_notifier(fast_notification_settings());
    payout_with_outcome(&app, &client, "notify-rotated-now", "SUCCESS").await;
    let request = receiver.wait_for(1).await.remove(0);

    assert_eq!(signature_entries(&request).len(), 1);
    assert!(verifies(&request, &new_secret));
    assert!(!verifies(&request, &old_secret));
}

#[tokio::test]
async fn restart_delivers_pending() {
    let receiver = Receiver::start().await;
    let first = spawn_app().await;
    let (_admin, client) = first.funded_client(100_000, "XOF").await;
    let (_, secret) = register_ok(&first, &client, &receiver.url("/hooks")).await;

    // No worker runs: the outcome commits with its outbox row, and the
    // instance stops before anything is sent.
    let payout_id = payout_with_outcome(&first, &client, "notify-restart", "SUCCESS").await;
    assert_eq!(notification_rows(&first, payout_id).await, 1);
    let database_url = first.database_url.clone();
    drop(first);

    let second = spawn_app_on(&database_url, &[]).await;
    let _notifier = second.start_notifier(fast_notification_settings());
    let request = receiver.wait_for(1).await.remove(0);

    assert!(verifies(&request, &secret));
    assert_eq!(request.json()["data"]["id"], payout_id.to_string());
    wait_for_notification(&second, &client, payout_id, "delivered").await;
}

#[tokio::test]
async fn dry_run_replay_adds_nothing() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let operator = app.create_client(&admin, "operator").await;
    let receiver = Receiver::start().await;
    register_ok(&app, &client, &receiver.url("/hooks")).await;

    // The report arrives before the payout exists, so it is kept as an
    // orphan and applied later by a replay.
    let key = "notify-dry-run";
    let payout_id = nepxy_ledger::ids::payout_id(client.client_id, key);
    let orphan = app
        .send_tmoney(&tmoney_report(
            &payout_id.to_string(),
            "SUCCESS",
            AMOUNT,
            "XOF",
        ))
        .await;
    assert_eq!(orphan.body["verdict"], "orphan", "{:?}", orphan.body);
    let webhook_id = webhook_id_of(&orphan);
    app.create_payout(&client, key, AMOUNT, "tmoney").await;

    let dry = replay(&app, &operator, webhook_id, true).await;
    assert_eq!(dry.status, StatusCode::OK, "dry run: {:?}", dry.body);
    assert_eq!(
        notification_rows(&app, payout_id).await,
        0,
        "a dry run adds no notification"
    );

    let real = replay(&app, &operator, webhook_id, false).await;
    assert_eq!(real.status, StatusCode::OK, "replay: {:?}", real.body);
    assert_eq!(
        notification_rows(&app, payout_id).await,
        1,
        "the applied replay adds one"
    );
}

#[tokio::test]
async fn rolled_back_outcome_adds_nothing() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    register_ok(&app, &client, &receiver.url("/hooks")).await;
    let payout_id = app
        .create_payout(&client, "notify-rollback", AMOUNT, "tmoney")
        .await;

    let payout_key = payout_id.to_string();
    let mut unit = app.state.store.begin().await.expect("begin");
    let mut payout = unit
        .lock_and_load::<Payout>(&payout_key)
        .await
        .expect("lock and load payout");
    let events = payout
        .aggregate
        .decide(PayoutCommand::RecordOutcome {
            status: PayoutStatus::Succeeded,
            provider_ref: Some("TM-rollback".to_owned()),
            failure_code: None,
            webhook_id: None,
            reported: None,
        })
        .expect("decide");
    let metadata = EventMetadata {
        request_id: None,
        actor: None,
        source: Source::Webhook,
        idempotency_key: None,
        webhook_id: None,
        reason: None,
        recorded_at: chrono::Utc::now(),
    };
    let records = unit
        .append(&mut payout, events, &metadata)
        .await
        .expect("append");

    // Projecting the event again inside the transaction adds nothing.
    let mut writes = Writes::default();
    Payout::project(&mut writes, &records[0]).expect("project again");
    writes
        .apply(unit.connection().await.expect("connection"))
        .await
        .expect("apply again");
    let inside: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE payout_id = $1")
        .bind(payout_id)
        .fetch_one(unit.connection().await.expect("connection"))
        .await
        .expect("count inside the transaction");
    assert_eq!(
        inside, 1,
        "the outbox row is written inside the transaction"
    );

    drop(unit);
    assert_eq!(
        notification_rows(&app, payout_id).await,
        0,
        "a rolled-back transaction leaves no notification"
    );
}

#[tokio::test]
async fn prod_rejects_internal_urls() {
    let app = spawn_app_with(&[("APP_ENV", "prod")]).await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;

    let cases = [
        ("http://10.0.0.1/x", "private"),
        ("http://169.254.169.254/", "cloud metadata"),
        ("http://[::1]/", "loopback"),
        ("https://10.0.0.1/x", "private"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "cloud metadata",
        ),
        ("https://[::1]/", "loopback"),
        ("https://127.0.0.1/", "loopback"),
        ("https://[fd00:ec2::254]/", "cloud metadata"),
        ("https://100.64.0.1/", "CGNAT"),
        ("https://8.8.8.8/", "DNS name"),
        ("http://hooks.example.com/nepxy", "https"),
    ];
    for (url, reason) in cases {
        let reply = register(&app, &client, url).await;
        assert_url_rejected(&reply, url);
        let detail = reply.body["detail"].as_str().expect("detail");
        assert!(detail.contains(reason), "{url}: {detail}");
    }
}

#[tokio::test]
async fn delivery_rechecks_destination() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    register_ok(&app, &client, &receiver.url("/hooks")).await;

    // A worker under the prod policy gets the loopback http URL that dev
    // accepted, as after a configuration change, and must not send to it.
    let notifier = nepxy_api::notifications::Notifier::new(
        app.pool.clone(),
        nepxy_api::config::AppEnv::Prod,
        fast_notification_settings(),
    )
    .expect("notification HTTP client");
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(notifier.run(async move {
        let _ = stopped.await;
    }));

    let payout_id = payout_with_outcome(&app, &client, "notify-recheck", "SUCCESS").await;
    let deadline = tokio::time::Instant::now() + ARRIVAL_WAIT;
    let attempt = loop {
        let items = notifications(&app, &client, &format!("payout_id={payout_id}")).await;
        if let Some(attempt) = items
            .first()
            .and_then(|item| item["attempts"].as_array())
            .and_then(|attempts| attempts.first())
        {
            break attempt.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt recorded: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert!(attempt["status_code"].is_null(), "{attempt}");
    let error = attempt["error"].as_str().expect("error");
    assert!(error.starts_with("destination rejected"), "{error}");
    assert!(error.contains("loopback"), "{error}");
    assert!(receiver.received().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn dev_allows_loopback_only() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;

    let url = receiver.url("/");
    let reply = register(&app, &client, &url).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{url}: {:?}", reply.body);
    assert_eq!(reply.body["url"], url);
    assert_eq!(reply.body["description"], "test receiver");
    assert_eq!(reply.body["status"], "active");
    let secret = reply.body["secret"].as_str().expect("secret");
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64");
    assert_eq!(key.len(), 32, "secret holds 32 random bytes");

    for url in [
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://192.168.1.10:8080/hook",
        "http://[fe80::1]/",
        "http://0.0.0.0:8080/",
        "not a url",
        "ftp://127.0.0.1/",
    ] {
        assert_url_rejected(&register(&app, &client, url).await, url);
    }
    let missing = app
        .send(
            Method::POST,
            "/v1/notification-endpoints",
            Some(&client.token),
            &[],
            Some(&json!({ "description": "no url" })),
        )
        .await;
    assert_url_rejected(&missing, "missing url");
}

#[tokio::test]
async fn endpoints_list_pages_without_secrets() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    let mut registered = Vec::new();
    for path in ["/a", "/b", "/c"] {
        registered.push(register_ok(&app, &client, &receiver.url(path)).await.0);
    }

    let first = app
        .get("/v1/notification-endpoints?limit=2", &client.token)
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let cursor = first.body["next_cursor"].as_str().expect("next_cursor");
    let second = app
        .get(
            &format!("/v1/notification-endpoints?limit=2&cursor={cursor}"),
            &client.token,
        )
        .await;
    assert!(second.body["next_cursor"].is_null(), "{:?}", second.body);

    let mut listed = Vec::new();
    for page in [&first, &second] {
        for item in page.body["items"].as_array().expect("items") {
            assert!(item.get("secret").is_none(), "list shows no secret: {item}");
            listed.push(item["id"].as_str().expect("id").to_owned());
        }
    }
    registered.reverse();
    assert_eq!(listed, registered, "newest first, each once");
}

#[tokio::test]
async fn delete_stops_notifications() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = register_ok(&app, &client, &receiver.url("/hooks")).await;

    let path = format!("/v1/notification-endpoints/{endpoint_id}");
    let deleted = app
        .send(Method::DELETE, &path, Some(&client.token), &[], None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    let again = app
        .send(Method::DELETE, &path, Some(&client.token), &[], None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "second delete");

    let listed = app.get("/v1/notification-endpoints", &client.token).await;
    assert_eq!(listed.body["items"], json!([]));

    let payout_id = payout_with_outcome(&app, &client, "notify-deleted", "SUCCESS").await;
    assert_eq!(
        notification_rows(&app, payout_id).await,
        0,
        "a deleted endpoint gets no notifications"
    );
}

#[tokio::test]
async fn other_clients_endpoints_hidden() {
    let app = spawn_app().await;
    let (admin, owner) = app.funded_client(100_000, "XOF").await;
    let stranger = app.create_client(&admin, "client").await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = register_ok(&app, &owner, &receiver.url("/hooks")).await;
    let _notifier = app.start_notifier(fast_notification_settings());
    let payout_id = payout_with_outcome(&app, &owner, "notify-owner", "SUCCESS").await;
    let notification = wait_for_notification(&app, &owner, payout_id, "delivered").await;
    let notification_id = notification["id"].as_str().expect("id");

    let listed = app.get("/v1/notification-endpoints", &stranger.token).await;
    assert_eq!(
        listed.body["items"],
        json!([]),
        "another client's endpoints are not listed"
    );
    assert!(
        notifications(&app, &stranger, "").await.is_empty(),
        "another client's notifications are not listed"
    );

    let path = format!("/v1/notification-endpoints/{endpoint_id}");
    let deleted = app
        .send(Method::DELETE, &path, Some(&stranger.token), &[], None)
        .await;
    assert_eq!(
        deleted.status,
        StatusCode::NOT_FOUND,
        "delete: {:?}",
        deleted.body
    );
    let rotated = app
        .send(
            Method::POST,
            &format!("{path}/rotate-secret"),
            Some(&stranger.token),
            &[],
            None,
        )
        .await;
    assert_eq!(
        rotated.status,
        StatusCode::NOT_FOUND,
        "rotate: {:?}",
        rotated.body
    );
    let redelivered = redeliver(&app, &stranger, notification_id).await;
    assert_eq!(
        redelivered.status,
        StatusCode::NOT_FOUND,
        "redeliver: {:?}",
        redelivered.body
    );

    let owner_view = app.get("/v1/notification-endpoints", &owner.token).await;
    assert_eq!(
        owner_view.body["items"][0]["id"], endpoint_id,
        "the endpoint is still there"
    );

    let by_admin = register(&app, &admin, &receiver.url("/admin")).await;
    assert_eq!(
        by_admin.status,
        StatusCode::FORBIDDEN,
        "only clients register endpoints"
    );
}

/// Measures delivery throughput to the local receiver, end to end: 16 tasks
/// move payouts to succeeded at once while the worker runs, and the time
/// from the first report to the last arrival gives notifications per
/// second. Run it with `cargo test -p nepxy-tests --test notifications --
/// --ignored --nocapture`. It prints the figure and asserts no timing.
#[tokio::test]
#[ignore = "a measurement, not a check; run it by hand"]
async fn measure_delivery_throughput() {
    const TASKS: usize = 16;
    const PAYOUTS_PER_TASK: usize = 25;
    let total = TASKS * PAYOUTS_PER_TASK;

    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000_000, "XOF").await;
    let receiver = Receiver::start().await;
    register_ok(&app, &client, &receiver.url("/hooks")).await;

    // Payouts are created first, so the timed part is outcome and delivery.
    let mut payout_ids = Vec::with_capacity(total);
    for index in 0..total {
        payout_ids.push(
            app.create_payout(&client, &format!("throughput-{index}"), AMOUNT, "tmoney")
                .await,
        );
    }
    let app = Arc::new(app);
    let _notifier = app.start_notifier(nepxy_api::notifications::Settings {
        idle_wait: Duration::from_millis(50),
        ..nepxy_api::notifications::Settings::default()
    });

    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in payout_ids.chunks(PAYOUTS_PER_TASK) {
        let app = Arc::clone(&app);
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            for payout_id in chunk {
                report(&app, payout_id, "SUCCESS").await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("report task");
    }
    let reported = started.elapsed();
    receiver.wait_for(total).await;
    let delivered = started.elapsed();

    println!(
        "{total} payouts from {TASKS} concurrent tasks: outcomes applied in {:.2} s, \
         all notifications received after {:.2} s, {:.0} notifications/s end to end",
        reported.as_secs_f64(),
        delivered.as_secs_f64(),
        total as f64 / delivered.as_secs_f64()
    );
}

/// Measures delivery alone: outcomes of 400 payouts are applied while no
/// worker runs, then one worker with the production settings sends the
/// backlog to the local receiver. Run it like the measurement above. It
/// prints the figure and asserts no timing.
#[tokio::test]
#[ignore = "a measurement, not a check; run it by hand"]
async fn measure_backlog_drain() {
    const TASKS: usize = 16;
    const PAYOUTS_PER_TASK: usize = 25;
    let total = TASKS * PAYOUTS_PER_TASK;

    let app = Arc::new(spawn_app().await);
    let (_admin, client) = app.funded_client(10_000_000, "XOF").await;
    let receiver = Receiver::start().await;
    register_ok(&app, &client, &receiver.url("/hooks")).await;

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let app = Arc::clone(&app);
        let client = client.clone();
        tasks.spawn(async move {
            for index in 0..PAYOUTS_PER_TASK {
                let key = format!("drain-{task}-{index}");
                payout_with_outcome(&app, &client, &key, "SUCCESS").await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("payout task");
    }
    let backlog = app
        .count("SELECT count(*) FROM notifications WHERE status = 'pending'")
        .await;
    assert_eq!(backlog, total as i64, "every outcome left one notification");

    let started = tokio::time::Instant::now();
    let _notifier = app.start_notifier(nepxy_api::notifications::Settings::default());
    receiver.wait_for(total).await;
    let elapsed = started.elapsed();

    println!(
        "backlog of {total} notifications sent by one worker (batch size {}) in {:.2} s: {:.0} notifications/s",
        nepxy_api::notifications::Settings::default().batch_size,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}
