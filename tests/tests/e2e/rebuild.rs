//! `nepxy-replay rebuild`: read models rebuilt from the events, compared row
//! by row with the live tables, and swapped in on request.

use std::process::{Command, Output};

use nepxy_tests::{TestApp, binary_path, payout_body, spawn_app, tmoney_report};
use reqwest::StatusCode;

fn rebuild(app: &TestApp, args: &[&str]) -> Output {
    Command::new(binary_path("nepxy-replay"))
        .arg("rebuild")
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("run nepxy-replay rebuild")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn app_with_history() -> (TestApp, nepxy_tests::Caller) {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(50_000, "XOF").await;
    for (key, provider) in [
        ("rebuild-1", "tmoney"),
        ("rebuild-2", "momo"),
        ("rebuild-3", "thunes"),
    ] {
        let reply = app
            .post_payout(&client, key, &payout_body(1_000, provider))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        if key == "rebuild-1" {
            let payout_id = reply.body["id"].as_str().expect("payout id").to_owned();
            let settled = app
                .send_tmoney(&tmoney_report(&payout_id, "SUCCESS", 1_000, "XOF"))
                .await;
            assert_eq!(settled.status, StatusCode::OK, "{:?}", settled.body);
        }
    }
    (app, client)
}

#[tokio::test]
async fn rebuild_matches_live_tables() {
    let (app, _client) = app_with_history().await;
    let output = rebuild(&app, &["--verify"]);
    let text = stdout(&output);
    assert!(output.status.success(), "rebuild --verify failed: {text}");
    for table in [
        "payouts",
        "wallet_balances",
        "journal_postings",
        "event_history",
        "wallet_holds",
        "wallet_deposits",
    ] {
        assert!(
            text.contains(&format!("{table}: identical")),
            "{table} differs: {text}"
        );
    }
    assert!(
        text.contains("from 9 events"),
        "every event replayed: {text}"
    );
    let shadow: bool = sqlx::query_scalar("SELECT to_regnamespace('rebuild') IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .expect("schema lookup");
    assert!(!shadow, "the shadow tables are dropped afterwards");
}

#[tokio::test]
async fn drift_reported_and_swapped_away() {
    let (app, client) = app_with_history().await;
    sqlx::query("UPDATE wallet_balances SET available_minor = available_minor + 7")
        .execute(&app.pool)
        .await
        .expect("corrupt the read model");

    let output = rebuild(&app, &["--projection", "wallet_balances", "--verify"]);
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "drift must fail the check: {text}"
    );
    assert!(
        text.contains(
            "DIFF wallet_balances: 1 rows only in the live table, 1 only in the rebuilt one"
        ),
        "{text}"
    );
    assert!(
        text.contains("\"available_minor\": 47007") || text.contains("\"available_minor\":47007"),
        "the live row is shown: {text}"
    );

    let swapped = rebuild(&app, &["--projection", "wallet_balances", "--swap"]);
    assert!(
        swapped.status.success(),
        "swap failed: {}",
        stdout(&swapped)
    );
    assert!(
        stdout(&swapped).contains("swapped in the rebuilt wallet_balances"),
        "{}",
        stdout(&swapped)
    );
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!(
        (available, held),
        (47_000, 2_000),
        "the balance is rebuilt from the events"
    );

    let again = rebuild(&app, &["--verify"]);
    assert!(
        again.status.success(),
        "clean after the swap: {}",
        stdout(&again)
    );

    // The service keeps writing to the swapped-in table.
    let reply = app
        .post_payout(&client, "after-swap", &payout_body(500, "tmoney"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let (available, _) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!(
        available, 46_500,
        "writes after the swap land in the new table"
    );
}

#[tokio::test]
async fn unknown_projection_is_rejected() {
    let app = spawn_app().await;
    let output = rebuild(&app, &["--projection", "balances"]);
    assert_eq!(output.status.code(), Some(2), "usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown projection \"balances\""),
        "{stderr}"
    );
}

/// Rewrites the PayoutRequested event of `payout_id` as version 1 stored it,
/// without `country_code`, labelled `version`.
async fn store_as_version_one(app: &TestApp, payout_id: &str, version: &str) {
    app.rewrite_events(&format!(
        "UPDATE events SET payload = (payload::jsonb #- '{{PayoutRequested,country_code}}')::json, \
             event_version = '{version}' \
         WHERE aggregate_type = 'Payout' AND aggregate_id = '{payout_id}' AND sequence = 1"
    ))
    .await;
}

async fn thunes_payout(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT payout_id::text FROM payouts WHERE provider = 'thunes'")
        .fetch_one(&app.pool)
        .await
        .expect("the Thunes payout")
}

#[tokio::test]
async fn version_one_event_is_upcast() {
    let (app, client) = app_with_history().await;
    let payout_id = thunes_payout(&app).await;
    store_as_version_one(&app, &payout_id, "1").await;
    let stored: String = sqlx::query_scalar(
        "SELECT payload::text FROM events \
         WHERE aggregate_type = 'Payout' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(&payout_id)
    .fetch_one(&app.pool)
    .await
    .expect("stored event");
    assert!(!stored.contains("country_code"), "{stored}");

    // The rebuild reads the version 1 event and must derive the same
    // country code that the live row got from the version 2 event.
    let output = rebuild(&app, &["--verify"]);
    let text = stdout(&output);
    assert!(output.status.success(), "rebuild --verify failed: {text}");
    assert!(text.contains("payouts: identical"), "{text}");
    assert!(text.contains("event_history: identical"), "{text}");

    // A point-in-time read decodes the same event.
    let now = chrono::Utc::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    let past = app
        .get(
            &format!("/v1/payouts/{payout_id}?as_of={now}"),
            &client.token,
        )
        .await;
    assert_eq!(past.status, StatusCode::OK, "{:?}", past.body);
    assert_eq!(past.body["recipient"]["country_code"], 228);

    // A command loads the aggregate through the same upcaster.
    let report = nepxy_tests::thunes_report(
        &payout_id,
        serde_json::json!(70000),
        serde_json::json!(7),
        1_000,
        "XOF",
    );
    let applied = app.send_thunes(&report).await;
    assert_eq!(applied.status, StatusCode::OK, "{:?}", applied.body);
    assert_eq!(applied.body["verdict"], "applied");
    let shown = app
        .get(&format!("/v1/payouts/{payout_id}"), &client.token)
        .await;
    assert_eq!(shown.body["status"], "succeeded");
    assert_eq!(shown.body["recipient"]["country_code"], 228);
}

#[tokio::test]
async fn mislabelled_version_is_reported() {
    let (app, _client) = app_with_history().await;
    let payout_id = thunes_payout(&app).await;
    // A version 1 payload labelled 2 skips the upcaster and cannot decode.
    store_as_version_one(&app, &payout_id, "2").await;
    let output = rebuild(&app, &["--verify"]);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "rebuild accepted a mislabelled event"
    );
    assert!(
        errors.contains(&format!("Payout {payout_id} 1")),
        "the event is not named: {errors}"
    );
    assert!(errors.contains("country_code"), "{errors}");
}
