//! Tamper evidence: `nepxy-replay verify` recomputes every hash chain and
//! checkpoint and names the first altered event.

use std::process::{Command, Output};

use nepxy_tests::{TestApp, binary_path, payout_body, spawn_app};
use reqwest::StatusCode;

const CHECKPOINT_KEY: &str = "checkpoint-key-for-tests-0123456789abcdef";

fn replay_tool(app: &TestApp, args: &[&str]) -> Output {
    Command::new(binary_path("nepxy-replay"))
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .env("CHECKPOINT_KEY", CHECKPOINT_KEY)
        .output()
        .expect("run nepxy-replay")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds 9 events in 6 aggregates: 2 ClientCreated (the admin and the
/// client), 1 deposit, and 3 payouts with a reserve each.
async fn app_with_history() -> (TestApp, String) {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(50_000, "XOF").await;
    let mut last = String::new();
    for key in ["chain-1", "chain-2", "chain-3"] {
        let reply = app
            .post_payout(&client, key, &payout_body(1_000, "tmoney"))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        last = reply.body["id"].as_str().expect("payout id").to_owned();
    }
    (app, last)
}

#[tokio::test]
async fn clean_history_verifies_with_checkpoint() {
    let (app, _) = app_with_history().await;
    let checkpoint = replay_tool(&app, &["checkpoint"]);
    assert!(
        checkpoint.status.success(),
        "checkpoint: {}",
        stdout(&checkpoint)
    );
    assert!(
        stdout(&checkpoint).contains("signed 6 aggregate heads"),
        "{}",
        stdout(&checkpoint)
    );

    let verify = replay_tool(&app, &["verify"]);
    let text = stdout(&verify);
    assert!(verify.status.success(), "verify failed: {text}");
    assert!(
        text.contains("checked the hash chains of 9 events"),
        "{text}"
    );
    assert!(text.contains("checked 1 checkpoints"), "{text}");
}

#[tokio::test]
async fn altered_payload_is_named() {
    let (app, payout_id) = app_with_history().await;
    app.rewrite_events(
        &format!(
            "UPDATE events SET payload = replace(payload::text, '\"amount_minor\":1000', '\"amount_minor\":10')::json \
             WHERE aggregate_type = 'Payout' AND aggregate_id = '{payout_id}' AND sequence = 1"
        ),
    )
    .await;

    let verify = replay_tool(&app, &["verify"]);
    let text = stdout(&verify);
    assert_eq!(verify.status.code(), Some(1), "verify must fail: {text}");
    assert!(
        text.contains(&format!(
            "first broken link: aggregate Payout {payout_id} sequence 1"
        )),
        "the altered event is named: {text}"
    );
}

#[tokio::test]
async fn rewritten_chain_fails_checkpoint() {
    let (app, payout_id) = app_with_history().await;
    let checkpoint = replay_tool(&app, &["checkpoint"]);
    assert!(checkpoint.status.success(), "{}", stdout(&checkpoint));

    // The attacker alters the event and recomputes its hash, so the chain
    // alone looks intact; the signed checkpoint still remembers the old head.
    app.rewrite_events(
        &format!(
            "UPDATE events SET payload = replace(payload::text, 'invoice 42', 'invoice 43')::json \
             WHERE aggregate_type = 'Payout' AND aggregate_id = '{payout_id}' AND sequence = 1; \
             UPDATE events e SET chain_hash = sha256('\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea || event_canonical(e)) \
             WHERE aggregate_type = 'Payout' AND aggregate_id = '{payout_id}' AND sequence = 1"
        ),
    )
    .await;

    let verify = replay_tool(&app, &["verify"]);
    let text = stdout(&verify);
    assert_eq!(verify.status.code(), Some(1), "verify must fail: {text}");
    assert!(
        text.contains("checked the hash chains of 9 events"),
        "the chain itself was rewritten: {text}"
    );
    assert!(
        text.contains(&format!(
            "aggregate Payout {payout_id} sequence 1 differs from the checkpoint"
        )),
        "the checkpoint names the rewritten head: {text}"
    );
}

#[tokio::test]
async fn deleted_event_breaks_chain() {
    let (app, _) = app_with_history().await;
    let wallet: String = sqlx::query_scalar(
        "SELECT aggregate_id FROM events WHERE aggregate_type = 'Wallet' LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("wallet id");
    app.rewrite_events( &format!("DELETE FROM events WHERE aggregate_type = 'Wallet' AND aggregate_id = '{wallet}' AND sequence = 2")).await;

    let verify = replay_tool(&app, &["verify"]);
    let text = stdout(&verify);
    assert_eq!(verify.status.code(), Some(1), "verify must fail: {text}");
    assert!(
        text.contains(&format!(
            "first broken link: aggregate Wallet {wallet} sequence 3"
        )),
        "the gap is named at the next event: {text}"
    );
}

#[tokio::test]
async fn export_streams_events_with_hashes() {
    let (app, payout_id) = app_with_history().await;
    let all = replay_tool(&app, &["export"]);
    assert!(
        all.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&all.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout(&all)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON event"))
        .collect();
    assert_eq!(lines.len(), 9, "every event exported");

    let stored: String = sqlx::query_scalar(
        "SELECT encode(chain_hash, 'hex') FROM events WHERE aggregate_type = 'Payout' AND aggregate_id = $1",
    )
    .bind(&payout_id)
    .fetch_one(&app.pool)
    .await
    .expect("stored hash");
    let one = replay_tool(
        &app,
        &[
            "export",
            "--aggregate-type",
            "Payout",
            "--aggregate-id",
            &payout_id,
        ],
    );
    let lines: Vec<serde_json::Value> = stdout(&one)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1, "one aggregate's events");
    assert_eq!(lines[0]["chain_hash"], stored, "the chain hash is exported");
    assert_eq!(lines[0]["event_type"], "PayoutRequested");
}
