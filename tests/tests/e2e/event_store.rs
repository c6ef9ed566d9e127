//! The `events` table: append-only, event metadata, snapshots, and reads
//! through postgres-es.

use cqrs_es::persist::PersistedEventRepository;
use nepxy_ledger::{Payout, Wallet, WalletEvent};
use nepxy_tests::{Caller, TestApp, assert_problem, payout_body, spawn_app};
use postgres_es::PostgresEventRepository;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Wallet events between two snapshots, as the server writes them.
const SNAPSHOT_EVERY: i64 = 20;

fn wallet_id(client: &Caller) -> String {
    format!("{}:XOF", client.client_id)
}

/// Reads the metadata of every event of `aggregate_type` whose aggregate id
/// or payload contains `needle`.
async fn event_metadata(app: &TestApp, aggregate_type: &str, needle: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT metadata::jsonb FROM events WHERE aggregate_type = $1 \
         AND (aggregate_id = $2 OR payload::text LIKE '%' || $2 || '%') ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(needle)
    .fetch_all(&app.pool)
    .await
    .expect("read event metadata")
}

#[tokio::test]
async fn events_reject_changes() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let reply = app
        .post_payout(&client, "immutable", &payout_body(1_000, "tmoney"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "payout: {:?}",
        reply.body
    );
    let before = app.count("SELECT count(*) FROM events").await;

    let statements = [
        ("UPDATE", "UPDATE events SET payload = '{}'::json"),
        ("DELETE", "DELETE FROM events"),
        ("TRUNCATE", "TRUNCATE events"),
    ];
    for (operation, statement) in statements {
        let error = sqlx::query(statement)
            .execute(&app.pool)
            .await
            .expect_err(&format!("{operation} on events must fail"));
        let message = error.to_string();
        assert!(
            message.contains("append-only"),
            "{operation}: the error names the rule, got {message:?}"
        );
    }

    assert_eq!(
        app.count("SELECT count(*) FROM events").await,
        before,
        "events rows after the rejected statements"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE payload::text = '{}'")
            .await,
        0,
        "no payload was overwritten"
    );
}

#[tokio::test]
async fn event_metadata_records_request() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(10_000, "XOF").await;

    let reply = app
        .send(
            Method::POST,
            "/v1/payouts",
            Some(&client.token),
            &[
                ("idempotency-key", "traced"),
                ("x-request-id", "trace-payout-1"),
            ],
            Some(&payout_body(1_000, "momo")),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "payout: {:?}",
        reply.body
    );
    assert_eq!(
        reply.header("x-request-id"),
        Some("trace-payout-1"),
        "X-Request-ID"
    );
    let payout_id = reply.body["id"].as_str().expect("id");

    let payout_events = event_metadata(&app, "Payout", payout_id).await;
    let wallet_events = event_metadata(&app, "Wallet", payout_id).await;
    assert_eq!(payout_events.len(), 1, "Payout events of the request");
    assert_eq!(wallet_events.len(), 1, "Wallet events of the request");
    for metadata in payout_events.iter().chain(&wallet_events) {
        assert_eq!(
            metadata["request_id"], "trace-payout-1",
            "request_id: {metadata}"
        );
        assert_eq!(metadata["source"], "api", "source: {metadata}");
        assert_eq!(
            metadata["actor"]["subject"],
            client.client_id.to_string(),
            "actor subject: {metadata}"
        );
        assert_eq!(
            metadata["actor"]["role"], "client",
            "actor role: {metadata}"
        );
        assert_eq!(
            metadata["idempotency_key"], "traced",
            "idempotency_key: {metadata}"
        );
    }

    // A request without X-Request-ID is recorded under the generated id.
    let reply = app
        .post_payout(&client, "untraced", &payout_body(1_000, "momo"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "payout: {:?}",
        reply.body
    );
    let generated = reply.header("x-request-id").expect("X-Request-ID");
    let payout_id = reply.body["id"].as_str().expect("id");
    let metadata = event_metadata(&app, "Payout", payout_id).await;
    assert_eq!(metadata.len(), 1, "Payout events of the second request");
    assert_eq!(metadata[0]["request_id"], generated, "generated request_id");

    let deposits: Vec<Value> = sqlx::query_scalar(
        "SELECT metadata::jsonb FROM events WHERE event_type = 'FundsDeposited'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("read deposit metadata");
    assert_eq!(deposits.len(), 1, "FundsDeposited events");
    assert_eq!(deposits[0]["source"], "admin", "deposit source");
    assert_eq!(
        deposits[0]["actor"]["subject"],
        admin.client_id.to_string(),
        "deposit actor subject"
    );
    assert_eq!(deposits[0]["actor"]["role"], "admin", "deposit actor role");
}

#[tokio::test]
async fn snapshot_keeps_wallet_state() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(1_000_000, "XOF").await;
    // The deposit and these payouts are one event more than a snapshot.
    let payouts = SNAPSHOT_EVERY;
    for index in 0..payouts {
        let reply = app
            .post_payout(
                &client,
                &format!("snap-{index}"),
                &payout_body(1_000, "tmoney"),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "payout {index}: {:?}",
            reply.body
        );
    }

    let snapshot: Option<(i64, Value)> = sqlx::query_as(
        "SELECT last_sequence, payload::jsonb FROM snapshots \
         WHERE aggregate_type = 'Wallet' AND aggregate_id = $1",
    )
    .bind(wallet_id(&client))
    .fetch_optional(&app.pool)
    .await
    .expect("read snapshot");
    let (last_sequence, payload) =
        snapshot.expect("a wallet snapshot exists after SNAPSHOT_EVERY + 1 events");
    assert_eq!(last_sequence, SNAPSHOT_EVERY, "snapshot last_sequence");
    let expected_available = 1_000_000 - (SNAPSHOT_EVERY - 1) * 1_000;
    assert_eq!(
        payload["available_minor"], expected_available,
        "available in the snapshot"
    );

    let repository = PostgresEventRepository::new(app.pool.clone());
    let read = repository
        .get_snapshot::<Wallet>(&wallet_id(&client))
        .await
        .expect("postgres-es reads the snapshot")
        .expect("postgres-es finds the snapshot");
    assert_eq!(
        read.current_sequence as i64, SNAPSHOT_EVERY,
        "current_sequence seen by postgres-es"
    );
    let wallet: Wallet = serde_json::from_value(read.aggregate)
        .unwrap_or_else(|error| panic!("the snapshot parses as a Wallet: {error}"));
    assert_eq!(
        wallet.available_minor, expected_available,
        "available in the parsed snapshot"
    );
    // Per-payout records live in wallet_holds, so the snapshot stays small
    // however many payouts the wallet has made.
    assert!(
        wallet.holds.is_empty(),
        "holds are left out of the snapshot"
    );
    assert!(
        payload.get("holds").is_none(),
        "no holds key in the stored snapshot"
    );

    // The replies below depend on the aggregate loaded from the snapshot plus
    // the events after it, not on the wallet_balances projection.
    let available = 1_000_000 - payouts * 1_000;
    let held = payouts * 1_000;
    let reply = app.deposit(&admin, client.client_id, 500, "XOF").await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "deposit: {:?}",
        reply.body
    );
    assert_eq!(
        reply.body["balance"]["available"],
        available + 500,
        "available after the deposit"
    );
    assert_eq!(
        reply.body["balance"]["held"], held,
        "held after the deposit"
    );

    let reply = app
        .post_payout(
            &client,
            "snap-over",
            &payout_body(available + 501, "tmoney"),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/insufficient-funds",
        "one more than the available balance",
    );
    let reply = app
        .post_payout(&client, "snap-all", &payout_body(available + 500, "tmoney"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "the whole available balance: {:?}",
        reply.body
    );
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (0, held + available + 500),
        "balance (available, held)"
    );
}

#[tokio::test]
async fn postgres_es_reads_our_events() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let mut payout_ids = Vec::new();
    for index in 0..3 {
        let reply = app
            .post_payout(
                &client,
                &format!("compat-{index}"),
                &payout_body(1_000, "thunes"),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "payout {index}: {:?}",
            reply.body
        );
        payout_ids.push(reply.body["id"].as_str().expect("id").to_owned());
    }
    let repository = PostgresEventRepository::new(app.pool.clone());

    let wallet_id = wallet_id(&client);
    let events = repository
        .get_events::<Wallet>(&wallet_id)
        .await
        .expect("postgres-es reads the wallet events");
    let stored = app
        .count(&format!(
            "SELECT count(*) FROM events WHERE aggregate_type = 'Wallet' AND aggregate_id = '{wallet_id}'"
        ))
        .await;
    assert_eq!(
        events.len() as i64,
        stored,
        "wallet events read by postgres-es"
    );
    assert_eq!(events.len(), 4, "one deposit and three reserves");
    let sequences: Vec<usize> = events.iter().map(|event| event.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4], "sequences");
    for event in &events {
        assert_eq!(event.aggregate_type, "Wallet", "aggregate_type");
        let parsed: WalletEvent = serde_json::from_value(event.payload.clone())
            .unwrap_or_else(|error| panic!("payload {} parses: {error}", event.payload));
        assert_eq!(
            cqrs_es::DomainEvent::event_type(&parsed),
            event.event_type,
            "event_type column matches the payload"
        );
        assert!(event.metadata.is_object(), "metadata is a JSON object");
    }

    for payout_id in &payout_ids {
        let events = repository
            .get_events::<Payout>(payout_id)
            .await
            .expect("postgres-es reads the payout events");
        assert_eq!(events.len(), 1, "events of payout {payout_id}");
        assert_eq!(
            events[0].event_type, "PayoutRequested",
            "event of payout {payout_id}"
        );
    }
}

#[tokio::test]
async fn reserve_before_snapshot_not_repeated() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(1_000_000, "XOF").await;
    for index in 0..SNAPSHOT_EVERY {
        let reply = app
            .post_payout(
                &client,
                &format!("old-{index}"),
                &payout_body(1_000, "momo"),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "payout {index}: {:?}",
            reply.body
        );
    }
    let first = app
        .post_payout(&client, "old-0", &payout_body(1_000, "momo"))
        .await;
    assert_eq!(
        first.header("idempotent-replayed"),
        Some("true"),
        "stored answer replayed"
    );

    // Without the stored answer, only the wallet's per-payout record can tell
    // that payout old-0 already reserved its funds, long before the snapshot.
    sqlx::query("DELETE FROM idempotency_keys WHERE key = 'old-0'")
        .execute(&app.pool)
        .await
        .expect("forget the stored answer");
    let again = app
        .post_payout(&client, "old-0", &payout_body(1_000, "momo"))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(again.body["id"], first.body["id"], "same payout id");

    let reserves = app
        .count(&format!(
            "SELECT count(*) FROM events WHERE event_type = 'FundsReserved' AND payload::text LIKE '%{}%'",
            first.body["id"].as_str().expect("payout id")
        ))
        .await;
    assert_eq!(reserves, 1, "one reserve for the payout");
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!(held, SNAPSHOT_EVERY * 1_000, "held counts each payout once");
    assert_eq!(available, 1_000_000 - SNAPSHOT_EVERY * 1_000, "available");
}

/// A unit of work that waits for a wallet's lock loads the events committed
/// by the holder while it waited. A load that used the snapshot taken before
/// the wait would miss them and write the next event under a taken sequence.
#[tokio::test]
async fn load_after_lock_sees_holder_commit() {
    use nepxy_ledger::metadata::{EventMetadata, Source};
    use nepxy_ledger::{Currency, WalletCommand};
    use std::time::Duration;

    let app = spawn_app().await;
    let client_id = uuid::Uuid::new_v4();
    let wallet_id = format!("{client_id}:XOF");
    let deposit_id = uuid::Uuid::new_v4();

    let mut holder = app.state.store.begin().await.expect("begin holder");
    let mut wallet = holder
        .lock_and_load_wallet(&wallet_id, deposit_id)
        .await
        .expect("holder loads the wallet");
    assert_eq!(wallet.sequence, 0, "a new wallet has no events");
    let events = wallet
        .aggregate
        .decide(WalletCommand::Deposit {
            client_id,
            currency: Currency::XOF,
            deposit_id,
            amount_minor: 2_500,
        })
        .expect("decide the deposit");
    let metadata = EventMetadata {
        request_id: None,
        actor: None,
        source: Source::Admin,
        idempotency_key: None,
        webhook_id: None,
        reason: None,
        recorded_at: chrono::Utc::now(),
    };
    holder
        .append(&mut wallet, events, &metadata)
        .await
        .expect("append the deposit");

    let store = app.state.store.clone();
    let waiter_wallet = wallet_id.clone();
    let waiter = tokio::spawn(async move {
        let mut unit = store.begin().await.expect("begin waiter");
        let loaded = unit
            .lock_and_load_wallet(&waiter_wallet, uuid::Uuid::new_v4())
            .await
            .expect("waiter loads the wallet");
        (loaded.sequence, loaded.aggregate.available_minor)
    });
    // The waiter is now blocked on the wallet's lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiter waits for the lock");
    holder.commit().await.expect("commit the holder");

    let (sequence, available) = waiter.await.expect("waiter task");
    assert_eq!(sequence, 1, "the waiter sees the committed event");
    assert_eq!(available, 2_500, "the waiter sees the deposit");
}
