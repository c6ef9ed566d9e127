//! Read models: applying an event twice changes nothing, and
//! `nepxy-replay verify` checks the books built from them.

use std::process::Command;

use chrono::Utc;
use nepxy_ledger::metadata::{EventMetadata, Source};
use nepxy_ledger::{Currency, Wallet, WalletEvent};
use nepxy_projections::{EventRecord, Projected, Writes};
use nepxy_tests::{binary_path, fresh_database, payout_body, spawn_app};
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

fn metadata() -> EventMetadata {
    EventMetadata {
        request_id: Some("projection-test".to_owned()),
        actor: None,
        source: Source::Replay,
        idempotency_key: None,
        webhook_id: None,
        reason: None,
        recorded_at: Utc::now(),
    }
}

fn wallet_record(client_id: Uuid, sequence: i64, event: WalletEvent) -> EventRecord<WalletEvent> {
    EventRecord {
        aggregate_type: "Wallet",
        aggregate_id: format!("{client_id}:XOF"),
        sequence,
        event,
        metadata: metadata(),
        recorded_at: Utc::now(),
    }
}

async fn balance(pool: &PgPool, client_id: Uuid) -> (i64, i64, i64) {
    sqlx::query_as("SELECT available_minor, held_minor, last_sequence FROM wallet_balances WHERE client_id = $1")
        .bind(client_id)
        .fetch_one(pool)
        .await
        .expect("balance row")
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count rows")
}

#[tokio::test]
async fn wallet_event_applied_twice_counts_once() {
    let pool = PgPool::connect(&fresh_database().await)
        .await
        .expect("connect");
    let client_id = Uuid::new_v4();
    let deposit = wallet_record(
        client_id,
        1,
        WalletEvent::FundsDeposited {
            client_id,
            currency: Currency::XOF,
            deposit_id: Uuid::new_v4(),
            amount_minor: 10_000,
        },
    );
    let reserve = wallet_record(
        client_id,
        2,
        WalletEvent::FundsReserved {
            client_id,
            currency: Currency::XOF,
            payout_id: Uuid::new_v4(),
            amount_minor: 4_000,
        },
    );

    // One round trip with every repeat in it. Each write reads the effects
    // of the ones before it, as separate statements would.
    let mut writes = Writes::default();
    for record in [&deposit, &deposit, &reserve, &reserve, &deposit] {
        Wallet::project(&mut writes, record).expect("project");
    }
    let mut conn = pool.acquire().await.expect("connection");
    writes.apply(&mut conn).await.expect("apply");

    assert_eq!(balance(&pool, client_id).await, (6_000, 4_000, 2));
    assert_eq!(
        count(&pool, "journal_postings").await,
        4,
        "two postings per event"
    );
    assert_eq!(
        count(&pool, "event_history").await,
        2,
        "one history row per event"
    );
}

#[tokio::test]
async fn verify_passes_on_clean_books() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(50_000, "XOF").await;
    for key in ["verify-1", "verify-2", "verify-3"] {
        let reply = app
            .post_payout(&client, key, &payout_body(1_000, "momo"))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }

    let output = Command::new(binary_path("nepxy-replay"))
        .arg("verify")
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("run nepxy-replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "verify failed: {stdout}");
    assert!(stdout.contains("verify: ok"), "{stdout}");
    // 2 ClientCreated, 1 deposit, and 3 payouts with a reserve each.
    assert!(stdout.contains("checked 9 events"), "{stdout}");
}

#[tokio::test]
async fn verify_reports_unbalanced_postings() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(50_000, "XOF").await;
    let reply = app
        .post_payout(&client, "verify-bad", &payout_body(1_000, "thunes"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);

    // A posting without its other side, as a broken projection would write.
    sqlx::query(
        "INSERT INTO journal_postings (aggregate_type, aggregate_id, sequence, account, currency, \
             debit_minor, credit_minor, recorded_at) \
         VALUES ('Wallet', 'forged', 1, 'world:funding', 'XOF', 0, 777, now())",
    )
    .execute(&app.pool)
    .await
    .expect("insert forged posting");

    let output = Command::new(binary_path("nepxy-replay"))
        .arg("verify")
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("run nepxy-replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("journal postings in XOF sum to -777"),
        "{stdout}"
    );
    assert!(stdout.contains("verify: FAILED"), "{stdout}");
}
