//! The catch-up projector heals read models that missed an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use nepxy_projections::catchup::CatchUp;
use nepxy_tests::{TestApp, spawn_app};
use uuid::Uuid;

fn projector(app: &TestApp) -> CatchUp {
    CatchUp {
        pool: app.pool.clone(),
        batch_size: 3,
        idle_wait: Duration::from_millis(20),
        lag_seconds: Arc::new(AtomicI64::new(-1)),
    }
}

/// Appends a deposit event as a writer that skips the read models would,
/// like a crash between an event's commit and its view update.
async fn deposit_without_views(pool: &sqlx::PgPool, client_id: Uuid, amount_minor: i64) {
    let payload = serde_json::json!({
        "FundsDeposited": {
            "client_id": client_id,
            "currency": "XOF",
            "deposit_id": Uuid::new_v4(),
            "amount_minor": amount_minor,
        }
    });
    let metadata = serde_json::json!({
        "request_id": null,
        "actor": null,
        "source": "admin",
        "idempotency_key": null,
        "webhook_id": null,
        "recorded_at": chrono::Utc::now(),
    });
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Wallet', $1, 1, 'FundsDeposited', '1', $2::text::json, $3::text::json)",
    )
    .bind(format!("{client_id}:XOF"))
    .bind(payload.to_string())
    .bind(metadata.to_string())
    .execute(pool)
    .await
    .expect("insert event");
}

async fn available(pool: &sqlx::PgPool, client_id: Uuid) -> Option<i64> {
    sqlx::query_scalar("SELECT available_minor FROM wallet_balances WHERE client_id = $1")
        .bind(client_id)
        .fetch_optional(pool)
        .await
        .expect("read balance")
}

#[tokio::test]
async fn missed_event_is_applied() {
    let app = spawn_app().await;
    let client_id = Uuid::new_v4();
    deposit_without_views(&app.pool, client_id, 12_345).await;
    assert_eq!(
        available(&app.pool, client_id).await,
        None,
        "the read model missed the event"
    );

    let projector = projector(&app);
    let _lock = projector
        .try_lock()
        .await
        .expect("lock")
        .expect("the only projector");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while available(&app.pool, client_id).await.is_none() && tokio::time::Instant::now() < deadline
    {
        projector.round().await.expect("catch-up round");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        available(&app.pool, client_id).await,
        Some(12_345),
        "healed by the projector"
    );

    // Applying the feed again changes nothing.
    sqlx::query("DELETE FROM projection_checkpoints")
        .execute(&app.pool)
        .await
        .expect("reset the checkpoint");
    while projector.round().await.expect("replay round") > 0 {}
    assert_eq!(
        available(&app.pool, client_id).await,
        Some(12_345),
        "idempotent per event"
    );
    assert_eq!(
        projector.lag_seconds.load(Ordering::Relaxed),
        0,
        "caught up"
    );
}

#[tokio::test]
async fn one_projector_active_at_a_time() {
    let app = spawn_app().await;
    let first = projector(&app).try_lock().await.expect("lock");
    assert!(first.is_some(), "the first projector takes the lock");
    let second = projector(&app).try_lock().await.expect("lock");
    assert!(second.is_none(), "a second projector waits");
    drop(first);

    // Dropping the holder closes its connection, which releases the lock.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut third = None;
    while third.is_none() && tokio::time::Instant::now() < deadline {
        third = projector(&app).try_lock().await.expect("lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        third.is_some(),
        "the lock is free once the first projector stops"
    );
}

#[tokio::test]
async fn binary_heals_missed_event() {
    use std::process::Stdio;

    let database_url = nepxy_tests::fresh_database().await;
    let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("address")
        .port();
    let mut server = tokio::process::Command::new(nepxy_tests::binary_path("nepxy-api"))
        .env("DATABASE_URL", &database_url)
        .env("JWT_SECRET", nepxy_tests::TEST_JWT_SECRET)
        .env("PORT", port.to_string())
        .env("DISPATCHER", "off")
        .env("NOTIFICATIONS", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nepxy-api");

    let client_id = Uuid::new_v4();
    deposit_without_views(&pool, client_id, 777).await;

    // The projector inside the running service applies the missed event.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while available(&pool, client_id).await.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        available(&pool, client_id).await,
        Some(777),
        "healed by the service's projector"
    );

    let health: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .expect("health answers")
        .json()
        .await
        .expect("health JSON");
    assert!(
        health["projection_lag_seconds"].is_number(),
        "lag is reported: {health}"
    );
    let _ = server.kill().await;
}
