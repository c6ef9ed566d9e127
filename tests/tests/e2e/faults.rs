//! Fault proofs against the real binaries: `nepxy-api` killed with SIGKILL
//! and started again on the same port and database, a provider acceptance
//! lost in that crash, events committed without their read-model update,
//! and PostgreSQL stopped and started under load.
//!
//! They run at a small scale in `cargo test`. FAULT_SCALE=n multiplies the
//! keys, clients and requests of each test, for example
//! `FAULT_SCALE=10 cargo test -p nepxy-tests --test e2e faults::`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nepxy_ledger::metadata::{Actor, EventMetadata, Source};
use nepxy_ledger::{Currency, PayoutEvent, WalletEvent, ids};
use nepxy_tests::faults::{ApiProcess, PrivatePostgres, fault_scale, free_port, replay_verify};
use nepxy_tests::{
    Caller, SandboxProcess, TestApp, fresh_database, payout_body, sandbox_provider_env,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// Amount of every payout in these tests, in XOF.
const PAYOUT_AMOUNT: i64 = 1_000;
/// Maximum time one storm or load client keeps retrying before the test
/// fails.
const CLIENT_DEADLINE: Duration = Duration::from_secs(90);
/// Request timeout of the load clients. The service responds within its pool
/// acquire timeout (5 s) when the database is down, so a request that takes
/// this long hangs.
const HANG_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment of a service without dispatcher or notification worker, for
/// the tests that only look at the ledger.
fn ledger_only_env() -> Vec<(String, String)> {
    vec![
        ("DISPATCHER".to_owned(), "off".to_owned()),
        ("NOTIFICATIONS".to_owned(), "off".to_owned()),
    ]
}

/// One response that a storm or load client received.
#[derive(Debug, Clone)]
struct Received {
    key: String,
    status: StatusCode,
    content_type: Option<String>,
    body: Value,
}

impl Received {
    fn payout_id(&self) -> Uuid {
        self.body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} response without a payout id: {:?}",
                    self.status, self.body
                )
            })
    }
}

/// Sends one payout request, returning `None` when no response came (the
/// server was down or died during the request).
async fn send_payout(
    http: &reqwest::Client,
    base_url: &str,
    client: &Caller,
    key: &str,
    body: &Value,
) -> Option<Received> {
    let response = http
        .post(format!("{base_url}/v1/payouts"))
        .bearer_auth(&client.token)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = response.bytes().await.ok()?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Some(Received {
        key: key.to_owned(),
        status,
        content_type,
        body,
    })
}

/// Counts the events of `event_type` whose payload names `payout_id`.
async fn events_naming_payout(app: &TestApp, event_type: &str, payout_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = $1 \
         AND (payload -> $1 ->> 'payout_id' = $2 \
              OR (aggregate_type = 'Payout' AND aggregate_id = $2))",
    )
    .bind(event_type)
    .bind(payout_id.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("count events of a payout")
}

/// Counts the events of one type.
async fn events_of_type(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.pool)
        .await
        .expect("count events by type")
}

async fn assert_verify_clean(database_url: &str) {
    let (clean, output) = replay_verify(database_url).await;
    assert!(clean, "nepxy-replay verify reported problems: {output}");
}

#[tokio::test]
async fn duplicate_storm_survives_sigkill() {
    let scale = fault_scale() as usize;
    let key_count = 6 * scale;
    let clients_per_key = 8 * scale;
    let sends_per_client = 3;
    let deposit = 10_000_000 * scale as i64;

    let database_url = fresh_database().await;
    let mut api = ApiProcess::start(&database_url, free_port(), &ledger_only_env()).await;
    let app = api.test_app().await;
    let (_admin, client) = app.funded_client(deposit, "XOF").await;
    let client = Arc::new(client);
    let keys: Vec<String> = (0..key_count)
        .map(|index| format!("storm-{index}-{}", Uuid::new_v4().simple()))
        .collect();

    // Every client sends its key `sends_per_client` times and retries after
    // a 409 (the same key in progress), a 503 or no response at all, which
    // is what the clients see around the kill.
    let received = Arc::new(Mutex::new(Vec::<Received>::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .timeout(HANG_TIMEOUT)
        .build()
        .expect("http client");
    let mut clients = tokio::task::JoinSet::new();
    for key in &keys {
        for _ in 0..clients_per_key {
            let (http, client, key) = (http.clone(), Arc::clone(&client), key.clone());
            let (received, answered) = (Arc::clone(&received), Arc::clone(&answered));
            let base_url = api.base_url.clone();
            clients.spawn(async move {
                let body = payout_body(PAYOUT_AMOUNT, "tmoney");
                let deadline = tokio::time::Instant::now() + CLIENT_DEADLINE;
                let mut successes = 0;
                while successes < sends_per_client {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "key {key} got no 2xx within {CLIENT_DEADLINE:?}"
                    );
                    let reply = send_payout(&http, &base_url, &client, &key, &body).await;
                    if let Some(reply) = reply {
                        let retry = matches!(
                            reply.status,
                            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE
                        );
                        if reply.status.is_success() {
                            successes += 1;
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        received.lock().expect("results lock").push(reply);
                        if !retry {
                            continue;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    }

    // Kill once a quarter of the clients got a response, so requests of
    // every kind are in flight: first requests, replays and waiting ones.
    let total_clients = key_count * clients_per_key;
    let wait_deadline = tokio::time::Instant::now() + CLIENT_DEADLINE;
    while answered.load(Ordering::Relaxed) < total_clients / 4 {
        assert!(
            tokio::time::Instant::now() < wait_deadline,
            "the storm got no responses; log:\n{}",
            api.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    api.kill().await;
    let answered_before_kill = answered.load(Ordering::Relaxed);
    api.restart().await;
    while let Some(result) = clients.join_next().await {
        result.expect("storm client finished");
    }
    assert!(
        answered_before_kill < total_clients * sends_per_client,
        "the kill came after the storm ended"
    );

    let received = received.lock().expect("results lock").clone();
    let mut accepted: BTreeMap<String, BTreeSet<Uuid>> = BTreeMap::new();
    for reply in &received {
        match reply.status {
            StatusCode::CREATED => {
                accepted
                    .entry(reply.key.clone())
                    .or_default()
                    .insert(reply.payout_id());
            }
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    reply.content_type.as_deref(),
                    Some("application/problem+json"),
                    "key {}: {} is a problem document",
                    reply.key,
                    reply.status
                );
            }
            other => panic!(
                "key {}: unexpected status {other}: {:?}",
                reply.key, reply.body
            ),
        }
    }

    for key in &keys {
        let expected_id = ids::payout_id(client.client_id, key);
        let ids = accepted.get(key).cloned().unwrap_or_default();
        assert_eq!(
            ids,
            BTreeSet::from([expected_id]),
            "every 2xx of key {key} names the one payout"
        );
        assert_eq!(
            events_naming_payout(&app, "PayoutRequested", expected_id).await,
            1,
            "one PayoutRequested for key {key}"
        );
        assert_eq!(
            events_naming_payout(&app, "FundsReserved", expected_id).await,
            1,
            "one FundsReserved for key {key}"
        );
        let payout = app.payout(&client, expected_id).await;
        assert_eq!(payout["id"], expected_id.to_string(), "GET finds key {key}");
        assert_eq!(payout["amount"], PAYOUT_AMOUNT, "amount of key {key}");
    }
    assert_eq!(
        events_of_type(&app, "PayoutRequested").await,
        key_count as i64,
        "no payout beyond one per key"
    );
    assert_eq!(
        events_of_type(&app, "FundsReserved").await,
        key_count as i64,
        "no reserve beyond one per key"
    );
    let held = PAYOUT_AMOUNT * key_count as i64;
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (deposit - held, held),
        "the balance read model matches the events"
    );
    assert_verify_clean(&database_url).await;
}

/// Waits until the sandbox has a transaction for each of `references`.
async fn wait_for_sandbox_transactions(sandbox: &SandboxProcess, references: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let transactions = sandbox.transactions().await;
        let created: BTreeSet<String> = transactions
            .as_array()
            .expect("sandbox transaction list")
            .iter()
            .filter_map(|transaction| transaction["reference"].as_str().map(str::to_owned))
            .collect();
        if references
            .iter()
            .all(|reference| created.contains(reference))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sandbox did not receive every payout: {transactions}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn provider_acceptance_lost_in_crash_heals() {
    // The dispatcher claims up to 16 payouts per round, and all of them must
    // be held by the sandbox at once, so at most 5 per provider.
    let per_provider = fault_scale().min(5) as usize;
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let sandbox = SandboxProcess::start(&public_url).await;
    let database_url = fresh_database().await;
    // The payouts are created with the dispatcher off, so that one
    // dispatcher round claims them all once it runs.
    let mut env = sandbox_provider_env(&sandbox.base_url, &public_url);
    env.extend(ledger_only_env());
    let mut api = ApiProcess::start(&database_url, port, &env).await;
    let app = api.test_app().await;
    let deposit = 1_000_000;
    let (_admin, client) = app.funded_client(deposit, "XOF").await;

    // A number ending in 02 makes the sandbox create the transaction and
    // respond only 3 s later, so the service dies between the provider's
    // acceptance and the event that would record it.
    let mut payouts = Vec::new();
    for provider in ["tmoney", "thunes", "momo"] {
        for index in 0..per_provider {
            let mut body = payout_body(PAYOUT_AMOUNT, provider);
            body["recipient"]["msisdn"] = json!("+22890123402");
            let key = format!("crash-{provider}-{index}");
            let reply = app.post_payout(&client, &key, &body).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{key}: {:?}", reply.body);
            payouts.push(ids::payout_id(client.client_id, &key));
        }
    }
    api.kill().await;
    api.set_env("DISPATCHER", "on");
    api.restart().await;
    let references: Vec<String> = payouts.iter().map(Uuid::to_string).collect();
    wait_for_sandbox_transactions(&sandbox, &references).await;
    api.kill().await;

    for payout_id in &payouts {
        assert_eq!(
            app.payout_event_types(*payout_id).await,
            ["PayoutRequested"],
            "payout {payout_id}: the kill came before the acceptance was recorded"
        );
    }
    // Another dispatcher takes the payouts over only when the killed one's
    // lease (120 s in the binary) runs out, so the test ends the lease now.
    sqlx::query("UPDATE dispatch_queue SET lease_until = now() WHERE lease_until IS NOT NULL")
        .execute(&app.pool)
        .await
        .expect("end the leases");
    api.restart().await;

    for payout_id in &payouts {
        let payout = app
            .wait_for_status(
                &client,
                &payout_id.to_string(),
                &["succeeded", "failed"],
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(
            payout["status"],
            "succeeded",
            "payout {payout_id} after the restart: {payout}; log:\n{}",
            api.log_tail()
        );
        let final_events = events_naming_payout(&app, "PayoutSucceeded", *payout_id).await
            + events_naming_payout(&app, "PayoutFailed", *payout_id).await;
        assert_eq!(final_events, 1, "payout {payout_id} ends once");
        assert_eq!(
            events_naming_payout(&app, "FundsSettled", *payout_id).await,
            1,
            "payout {payout_id} is settled once"
        );
    }

    let transactions = sandbox.transactions().await;
    let transactions = transactions.as_array().expect("sandbox transaction list");
    for reference in &references {
        let matching = transactions
            .iter()
            .filter(|transaction| transaction["reference"] == reference.as_str())
            .count();
        assert_eq!(matching, 1, "one provider transaction for {reference}");
    }
    assert_eq!(
        transactions.len(),
        payouts.len(),
        "no provider transaction beyond the payouts: {transactions:?}"
    );
    let spent = PAYOUT_AMOUNT * payouts.len() as i64;
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (deposit - spent, 0),
        "each payout is debited once"
    );
    assert_verify_clean(&database_url).await;
}

/// Appends `event` to an aggregate with a raw INSERT, as a writer that
/// committed its events and died before updating the read models leaves
/// them. The chain hash comes from the database trigger, as for any writer.
async fn append_without_views<E>(
    pool: &sqlx::PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    event: &E,
) where
    E: cqrs_es::DomainEvent,
{
    let metadata = EventMetadata {
        request_id: None,
        actor: Some(Actor {
            subject: "fault-test".to_owned(),
            role: "system".to_owned(),
        }),
        source: Source::Admin,
        idempotency_key: None,
        webhook_id: None,
        reason: Some("written without its read-model update".to_owned()),
        recorded_at: chrono::Utc::now(),
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT $1, $2, coalesce(max(sequence), 0) + 1, $3, $4, $5::text::json, $6::text::json \
         FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(event.event_type())
    .bind(event.event_version())
    .bind(serde_json::to_string(event).expect("event JSON"))
    .bind(serde_json::to_string(&metadata).expect("metadata JSON"))
    .execute(pool)
    .await
    .expect("append an event without its views");
}

#[tokio::test]
async fn projection_gap_heals_after_restart() {
    let deposit = 50_000;
    let late_deposit = 7_000;
    let database_url = fresh_database().await;
    let mut api = ApiProcess::start(&database_url, free_port(), &ledger_only_env()).await;
    let app = api.test_app().await;
    let (_admin, client) = app.funded_client(deposit, "XOF").await;
    let payout_id = app
        .create_payout(&client, "gap-payout", PAYOUT_AMOUNT, "tmoney")
        .await;
    api.kill().await;

    // While the service is down, another writer's events are committed
    // without their read-model update: a deposit, and the payout's failure
    // with the release of its hold.
    let wallet_id = ids::wallet_id(client.client_id, Currency::XOF);
    append_without_views(
        &app.pool,
        "Wallet",
        &wallet_id,
        &WalletEvent::FundsDeposited {
            client_id: client.client_id,
            currency: Currency::XOF,
            deposit_id: Uuid::new_v4(),
            amount_minor: late_deposit,
        },
    )
    .await;
    append_without_views(
        &app.pool,
        "Payout",
        &payout_id.to_string(),
        &PayoutEvent::PayoutFailed {
            failure_code: Some("PAYEE_NOT_FOUND".to_owned()),
            webhook_id: None,
        },
    )
    .await;
    append_without_views(
        &app.pool,
        "Wallet",
        &wallet_id,
        &WalletEvent::FundsReleased {
            client_id: client.client_id,
            currency: Currency::XOF,
            payout_id,
            amount_minor: PAYOUT_AMOUNT,
        },
    )
    .await;
    let stale_status: String =
        sqlx::query_scalar("SELECT status FROM payouts WHERE payout_id = $1")
            .bind(payout_id)
            .fetch_one(&app.pool)
            .await
            .expect("read the payout row");
    assert_eq!(stale_status, "pending", "the read model missed the failure");
    let events_before_restart = app.event_count().await;

    api.restart().await;
    let payout = app
        .wait_for_status(
            &client,
            &payout_id.to_string(),
            &["failed"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(payout["status"], "failed", "healed payout: {payout}");
    assert_eq!(payout["failure_code"], "PAYEE_NOT_FOUND");

    let expected = (deposit + late_deposit, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut balance = app.balance_of(&client, client.client_id, "XOF").await;
    while balance != expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        balance = app.balance_of(&client, client.client_id, "XOF").await;
    }
    assert_eq!(
        balance, expected,
        "healed balance: deposit added, hold released"
    );

    let queue_state: String =
        sqlx::query_scalar("SELECT state FROM dispatch_queue WHERE payout_id = $1")
            .bind(payout_id)
            .fetch_one(&app.pool)
            .await
            .expect("read the dispatch row");
    assert_eq!(
        queue_state, "done",
        "a failed payout is never sent to the provider"
    );
    assert_eq!(
        app.event_count().await,
        events_before_restart,
        "healing writes read models only, never events"
    );
    assert_verify_clean(&database_url).await;
}

/// What the load clients of the PostgreSQL test saw.
#[derive(Default)]
struct LoadLog {
    received: Vec<Received>,
    /// Keys whose request got no response at all.
    unanswered: Vec<String>,
}

#[tokio::test]
async fn postgres_restart_under_load() {
    let scale = fault_scale() as usize;
    let workers = 4 * scale;
    let postgres = PrivatePostgres::start().await;
    let database_url = postgres.database_url();
    let mut env = ledger_only_env();
    env.push(("DATABASE_MAX_CONNECTIONS".to_owned(), "8".to_owned()));
    let api = ApiProcess::start(&database_url, free_port(), &env).await;
    let app = api.test_app().await;
    let deposit = 100_000_000;
    let (_admin, client) = app.funded_client(deposit, "XOF").await;
    let client = Arc::new(client);

    // Phases: 0 before the stop, 1 while PostgreSQL is down, 2 after it is
    // back. Workers send payouts with new keys until the stop signal.
    let phase = Arc::new(AtomicUsize::new(0));
    let unavailable_while_down = Arc::new(AtomicUsize::new(0));
    let created_after_restart = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(LoadLog::default()));
    let http = reqwest::Client::builder()
        .timeout(HANG_TIMEOUT)
        .build()
        .expect("http client");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let (http, client, log) = (http.clone(), Arc::clone(&client), Arc::clone(&log));
        let (phase, stopped) = (Arc::clone(&phase), stopped.clone());
        let unavailable_while_down = Arc::clone(&unavailable_while_down);
        let created_after_restart = Arc::clone(&created_after_restart);
        let base_url = api.base_url.clone();
        tasks.spawn(async move {
            let body = payout_body(PAYOUT_AMOUNT, "thunes");
            for request in 0.. {
                if *stopped.borrow() {
                    return;
                }
                let key = format!("load-{worker}-{request}");
                let phase_at_send = phase.load(Ordering::SeqCst);
                // A request in flight when the test stops the load still
                // completes and is recorded, since it may have committed.
                let reply = send_payout(&http, &base_url, &client, &key, &body).await;
                let Some(reply) = reply else {
                    log.lock().expect("load log lock").unanswered.push(key);
                    continue;
                };
                let phase_now = phase.load(Ordering::SeqCst);
                if reply.status == StatusCode::SERVICE_UNAVAILABLE
                    && phase_at_send == 1
                    && phase_now == 1
                {
                    unavailable_while_down.fetch_add(1, Ordering::SeqCst);
                }
                if reply.status == StatusCode::CREATED && phase_at_send == 2 {
                    created_after_restart.fetch_add(1, Ordering::SeqCst);
                }
                let failed = reply.status.is_server_error();
                log.lock().expect("load log lock").received.push(reply);
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }

    let wait_until = |counter: Arc<AtomicUsize>, target: usize, what: &'static str| async move {
        let deadline = tokio::time::Instant::now() + CLIENT_DEADLINE;
        while counter.load(Ordering::SeqCst) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let created = |log: &Mutex<LoadLog>| {
        log.lock()
            .expect("load log lock")
            .received
            .iter()
            .filter(|reply| reply.status == StatusCode::CREATED)
            .count()
    };
    let deadline = tokio::time::Instant::now() + CLIENT_DEADLINE;
    while created(&log) < 4 * workers {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no load before the stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    postgres.stop_server();
    phase.store(1, Ordering::SeqCst);
    wait_until(
        Arc::clone(&unavailable_while_down),
        workers,
        "503 responses while PostgreSQL is down",
    )
    .await;
    let health = app
        .send(reqwest::Method::GET, "/health", None, &[], None)
        .await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "/health: {:?}",
        health.body
    );
    assert_eq!(health.body["database"], "unavailable");

    postgres.start_server();
    phase.store(2, Ordering::SeqCst);
    wait_until(
        Arc::clone(&created_after_restart),
        4 * workers,
        "payouts accepted after PostgreSQL came back",
    )
    .await;
    stop.send(true).expect("workers listen");
    while let Some(result) = tasks.join_next().await {
        result.expect("load worker finished");
    }

    let log = Arc::try_unwrap(log)
        .ok()
        .expect("workers ended")
        .into_inner()
        .expect("load log lock");
    for reply in &log.received {
        match reply.status {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    reply.content_type.as_deref(),
                    Some("application/problem+json"),
                    "key {}: 503 is a problem document: {:?}",
                    reply.key,
                    reply.body
                );
                assert_eq!(
                    reply.body["type"], "/problems/service-unavailable",
                    "key {}: {:?}",
                    reply.key, reply.body
                );
            }
            other => panic!(
                "key {}: unexpected status {other}: {:?}",
                reply.key, reply.body
            ),
        }
    }
    assert!(
        log.unanswered.is_empty(),
        "requests without a response (hung or dropped): {:?}",
        log.unanswered
    );

    // Every 201 is still there, and retrying each 503 with its key gives one
    // payout, whether or not its first attempt had committed.
    let app = api.test_app().await;
    let mut expected_payouts = BTreeSet::new();
    for reply in &log.received {
        let payout_id = ids::payout_id(client.client_id, &reply.key);
        if reply.status == StatusCode::CREATED {
            assert_eq!(reply.payout_id(), payout_id, "key {}", reply.key);
        } else {
            let retry = app
                .post_payout(&client, &reply.key, &payout_body(PAYOUT_AMOUNT, "thunes"))
                .await;
            assert_eq!(
                retry.status,
                StatusCode::CREATED,
                "retry of {}: {:?}",
                reply.key,
                retry.body
            );
        }
        let payout = app.payout(&client, payout_id).await;
        assert_eq!(payout["amount"], PAYOUT_AMOUNT, "key {}", reply.key);
        expected_payouts.insert(payout_id);
    }
    assert_eq!(
        events_of_type(&app, "PayoutRequested").await,
        expected_payouts.len() as i64,
        "one payout per key, none lost and none doubled"
    );
    let held = PAYOUT_AMOUNT * expected_payouts.len() as i64;
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (deposit - held, held),
        "the balance matches the accepted payouts"
    );
    let problem_reply = log
        .received
        .iter()
        .find(|reply| reply.status == StatusCode::SERVICE_UNAVAILABLE)
        .expect("at least one 503 was received");
    assert!(
        problem_reply.body["detail"].is_string() && problem_reply.body["request_id"].is_string(),
        "503 problem has detail and request_id: {:?}",
        problem_reply.body
    );
    assert_verify_clean(&database_url).await;
}
