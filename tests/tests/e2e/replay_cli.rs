//! `nepxy-replay webhooks` run as a subprocess against a test database.
//!
//! Build the binary first with `cargo build --workspace --bins`.

use std::process::ExitStatus;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{SecondsFormat, Utc};
use nepxy_tests::{
    Caller, TEST_MOMO_SECRET, TEST_THUNES_SECRET, TEST_TMONEY_SECRET, TestApp, binary_path,
    spawn_app, thunes_report, tmoney_report, webhook_id_of,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const AMOUNT: i64 = 2_500;

struct CliRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl CliRun {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `nepxy-replay` with only the environment it needs: the test
/// database and the test webhook secrets.
async fn run_cli(app: &TestApp, args: &[&str]) -> CliRun {
    let output = tokio::process::Command::new(binary_path("nepxy-replay"))
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &app.database_url)
        .env("TMONEY_WEBHOOK_SECRET", TEST_TMONEY_SECRET)
        .env("THUNES_WEBHOOK_SECRET", TEST_THUNES_SECRET)
        .env("MOMO_CALLBACK_SECRET", TEST_MOMO_SECRET)
        .output()
        .await
        .expect("nepxy-replay starts");
    CliRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Sends a TMoney SUCCESS report for a payout that does not exist yet.
async fn send_tmoney_orphan(app: &TestApp, payout_id: Uuid) -> Uuid {
    let reply = app
        .send_tmoney(&tmoney_report(
            &payout_id.to_string(),
            "SUCCESS",
            AMOUNT,
            "XOF",
        ))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "orphan: {:?}",
        reply.body
    );
    assert_eq!(reply.body["verdict"], "orphan", "orphan: verdict");
    webhook_id_of(&reply)
}

async fn stored_verdict(app: &TestApp, webhook_id: Uuid) -> String {
    app.stored_delivery(webhook_id).await.verdict
}

/// Sends an orphan report for the payout that `key` will create, then
/// creates that payout. Returns the delivery and payout ids.
async fn orphan_then_payout(app: &TestApp, client: &Caller, key: &str) -> (Uuid, Uuid) {
    let payout_id = nepxy_ledger::ids::payout_id(client.client_id, key);
    let webhook_id = send_tmoney_orphan(app, payout_id).await;
    let created = app.create_payout(client, key, AMOUNT, "tmoney").await;
    assert_eq!(created, payout_id, "payout id derives from the key");
    (webhook_id, payout_id)
}

#[tokio::test]
async fn help_lists_options() {
    let app = spawn_app().await;

    let top = run_cli(&app, &["--help"]).await;
    assert!(top.status.success(), "--help: {}", top.describe());
    for word in ["webhooks", "verify", "--database-url"] {
        assert!(
            top.stdout.contains(word),
            "--help mentions {word}: {}",
            top.describe()
        );
    }

    let replay = run_cli(&app, &["webhooks", "replay", "--help"]).await;
    assert!(
        replay.status.success(),
        "webhooks replay --help: {}",
        replay.describe()
    );
    for option in [
        "--id",
        "--provider",
        "--orphans",
        "--from",
        "--to",
        "--reason",
        "--actor",
        "--dry-run",
    ] {
        assert!(
            replay.stdout.contains(option),
            "webhooks replay --help mentions {option}: {}",
            replay.describe()
        );
    }
}

#[tokio::test]
async fn list_prints_deliveries() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let payout_id = app.create_payout(&client, "th", AMOUNT, "thunes").await;
    let orphan = send_tmoney_orphan(&app, Uuid::new_v4()).await;
    let applied = webhook_id_of(
        &app.send_thunes(&thunes_report(
            &payout_id.to_string(),
            json!(70000),
            json!(7),
            AMOUNT,
            "XOF",
        ))
        .await,
    );

    let all = run_cli(&app, &["webhooks", "list"]).await;

    assert!(all.status.success(), "list: {}", all.describe());
    let lines: Vec<&str> = all.stdout.lines().collect();
    let orphan_line = lines
        .iter()
        .find(|line| line.starts_with(&orphan.to_string()))
        .unwrap_or_else(|| panic!("list shows the orphan: {}", all.describe()));
    assert!(
        orphan_line.contains("tmoney"),
        "orphan line names the provider: {orphan_line}"
    );
    assert!(
        orphan_line.contains("orphan"),
        "orphan line shows the verdict: {orphan_line}"
    );
    let applied_line = lines
        .iter()
        .find(|line| line.starts_with(&applied.to_string()))
        .unwrap_or_else(|| panic!("list shows the applied delivery: {}", all.describe()));
    assert!(
        applied_line.contains("thunes"),
        "applied line names the provider: {applied_line}"
    );
    assert!(
        applied_line.contains("applied"),
        "applied line shows the verdict: {applied_line}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("2 deliveries"),
        "summary line: {}",
        all.describe()
    );

    let thunes_only = run_cli(&app, &["webhooks", "list", "--provider", "thunes"]).await;
    assert!(
        thunes_only.status.success(),
        "list --provider: {}",
        thunes_only.describe()
    );
    assert!(
        thunes_only.stdout.contains(&applied.to_string()),
        "list --provider thunes shows the Thunes delivery: {}",
        thunes_only.describe()
    );
    assert!(
        !thunes_only.stdout.contains(&orphan.to_string()),
        "list --provider thunes hides the TMoney delivery: {}",
        thunes_only.describe()
    );

    let orphans = run_cli(&app, &["webhooks", "list", "--verdict", "orphan"]).await;
    assert!(
        orphans.status.success(),
        "list --verdict: {}",
        orphans.describe()
    );
    assert!(
        orphans.stdout.ends_with("1 deliveries\n"),
        "list --verdict orphan finds one: {}",
        orphans.describe()
    );
}

#[tokio::test]
async fn show_prints_json() {
    let app = spawn_app().await;
    let payout_id = Uuid::new_v4();
    let body = tmoney_report(&payout_id.to_string(), "SUCCESS", AMOUNT, "XOF");
    let webhook_id = webhook_id_of(&app.send_tmoney(&body).await);

    let show_run = run_cli(&app, &["webhooks", "show", &webhook_id.to_string()]).await;

    assert!(show_run.status.success(), "show: {}", show_run.describe());
    let delivery: Value = serde_json::from_str(&show_run.stdout)
        .unwrap_or_else(|error| panic!("show prints JSON ({error}): {}", show_run.describe()));
    assert_eq!(delivery["id"], webhook_id.to_string(), "id");
    assert_eq!(delivery["verdict"], "orphan", "verdict");
    let encoded = delivery["body_base64"]
        .as_str()
        .expect("body_base64 is a string");
    assert_eq!(
        STANDARD.decode(encoded).expect("body_base64 decodes"),
        body.as_bytes(),
        "body_base64 decodes to the body sent"
    );
    assert_eq!(delivery["body_text"], body, "body_text");

    let missing_id = Uuid::new_v4().to_string();
    let missing = run_cli(&app, &["webhooks", "show", &missing_id]).await;
    assert!(
        !missing.status.success(),
        "show of an unknown id fails: {}",
        missing.describe()
    );
    assert!(
        missing.stderr.contains("not found") && missing.stderr.contains(&missing_id),
        "the error names the id: {}",
        missing.describe()
    );
}

#[tokio::test]
async fn orphans_dry_run_then_apply() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let (webhook_id, payout_id) = orphan_then_payout(&app, &client, "late").await;
    let events_before = app.event_count().await;

    let dry = run_cli(
        &app,
        &[
            "webhooks",
            "replay",
            "--orphans",
            "--reason",
            "payout created after the report",
            "--actor",
            "tester",
            "--dry-run",
        ],
    )
    .await;

    assert!(dry.status.success(), "dry run: {}", dry.describe());
    let line = dry
        .stdout
        .lines()
        .find(|line| line.starts_with(&webhook_id.to_string()))
        .unwrap_or_else(|| panic!("dry run names the delivery: {}", dry.describe()));
    assert!(line.contains("would be applied"), "dry run verdict: {line}");
    assert!(
        line.contains("PayoutSucceeded"),
        "dry run lists the events: {line}"
    );
    assert_eq!(
        app.event_count().await,
        events_before + 1,
        "dry run: only the record of the replay"
    );
    assert_eq!(
        stored_verdict(&app, webhook_id).await,
        "orphan",
        "dry run: stored verdict"
    );
    assert_eq!(
        app.payout_status(&client, payout_id).await,
        "pending",
        "dry run: payout"
    );

    let real = run_cli(
        &app,
        &[
            "webhooks",
            "replay",
            "--orphans",
            "--reason",
            "payout created after the report",
            "--actor",
            "tester",
        ],
    )
    .await;

    assert!(real.status.success(), "replay: {}", real.describe());
    assert!(
        real.stdout.contains(&format!("{webhook_id}  applied")),
        "replay reports the delivery applied: {}",
        real.describe()
    );
    assert_eq!(
        app.payout_status(&client, payout_id).await,
        "succeeded",
        "payout status"
    );
    assert_eq!(
        stored_verdict(&app, webhook_id).await,
        "applied",
        "stored verdict"
    );
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (100_000 - AMOUNT, 0),
        "hold settled"
    );

    let replays: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT actor, reason, dry_run FROM webhook_replays WHERE webhook_id = $1 \
         ORDER BY replayed_at",
    )
    .bind(webhook_id)
    .fetch_all(&app.pool)
    .await
    .expect("replay rows");
    let reason = "payout created after the report".to_owned();
    assert_eq!(
        replays,
        vec![
            ("cli:tester".to_owned(), reason.clone(), true),
            ("cli:tester".to_owned(), reason, false),
        ],
        "both runs are recorded with actor and reason"
    );
    let sources: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT metadata->>'source' FROM events WHERE metadata->>'webhook_id' = $1",
    )
    .bind(webhook_id.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("event sources");
    assert_eq!(sources, ["replay"], "events written by the CLI are replays");
}

#[tokio::test]
async fn provider_range_replay() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let (before, before_payout) = orphan_then_payout(&app, &client, "before").await;
    let start = Utc::now();
    let (first, first_payout) = orphan_then_payout(&app, &client, "first").await;
    let (second, second_payout) = orphan_then_payout(&app, &client, "second").await;
    let thunes_payout_id = nepxy_ledger::ids::payout_id(client.client_id, "thunes");
    let thunes = webhook_id_of(
        &app.send_thunes(&thunes_report(
            &thunes_payout_id.to_string(),
            json!(70000),
            json!(7),
            AMOUNT,
            "XOF",
        ))
        .await,
    );
    app.create_payout(&client, "thunes", AMOUNT, "thunes").await;
    let from = start.to_rfc3339_opts(SecondsFormat::Micros, true);

    let run = run_cli(
        &app,
        &[
            "webhooks",
            "replay",
            "--provider",
            "tmoney",
            "--from",
            &from,
            "--reason",
            "TMoney outage recovery",
        ],
    )
    .await;

    assert!(run.status.success(), "replay range: {}", run.describe());
    for (name, webhook_id, payout_id) in [
        ("first", first, first_payout),
        ("second", second, second_payout),
    ] {
        assert_eq!(
            stored_verdict(&app, webhook_id).await,
            "applied",
            "{name}: stored verdict"
        );
        assert_eq!(
            app.payout_status(&client, payout_id).await,
            "succeeded",
            "{name}: payout status"
        );
    }
    assert_eq!(
        stored_verdict(&app, before).await,
        "orphan",
        "a delivery before --from is not replayed"
    );
    assert_eq!(
        app.payout_status(&client, before_payout).await,
        "pending",
        "payout of the delivery before --from"
    );
    assert_eq!(
        stored_verdict(&app, thunes).await,
        "orphan",
        "a Thunes delivery is not replayed with --provider tmoney"
    );
    let positions: Vec<usize> = [first, second]
        .iter()
        .map(|id| {
            run.stdout
                .find(&id.to_string())
                .unwrap_or_else(|| panic!("output names {id}: {}", run.describe()))
        })
        .collect();
    assert!(
        positions[0] < positions[1],
        "oldest delivery first: {}",
        run.describe()
    );
}

#[tokio::test]
async fn reason_required() {
    let app = spawn_app().await;
    send_tmoney_orphan(&app, Uuid::new_v4()).await;
    let replays_before = app.count("SELECT count(*) FROM webhook_replays").await;

    let missing = run_cli(&app, &["webhooks", "replay", "--orphans"]).await;
    assert!(
        !missing.status.success(),
        "no --reason: {}",
        missing.describe()
    );
    assert!(
        missing.stderr.contains("--reason"),
        "the error names --reason: {}",
        missing.describe()
    );

    let blank = run_cli(&app, &["webhooks", "replay", "--orphans", "--reason", "  "]).await;
    assert!(
        !blank.status.success(),
        "blank --reason: {}",
        blank.describe()
    );
    assert!(
        blank.stderr.contains("--reason must not be empty"),
        "the error says the reason is empty: {}",
        blank.describe()
    );

    let nothing = run_cli(&app, &["webhooks", "replay", "--reason", "why"]).await;
    assert!(
        !nothing.status.success(),
        "no selection: {}",
        nothing.describe()
    );
    assert!(
        nothing.stderr.contains("--orphans"),
        "the error lists what to choose: {}",
        nothing.describe()
    );

    let no_from = run_cli(
        &app,
        &[
            "webhooks",
            "replay",
            "--provider",
            "tmoney",
            "--reason",
            "why",
        ],
    )
    .await;
    assert!(
        !no_from.status.success(),
        "--provider without --from: {}",
        no_from.describe()
    );
    assert!(
        no_from.stderr.contains("--from"),
        "the error names --from: {}",
        no_from.describe()
    );

    assert_eq!(
        app.count("SELECT count(*) FROM webhook_replays").await,
        replays_before,
        "failed invocations replay nothing"
    );
}

#[tokio::test]
async fn unknown_verdict_is_rejected() {
    let app = spawn_app().await;
    let run = run_cli(&app, &["webhooks", "list", "--verdict", "orphans"]).await;
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("'orphans'"), "{}", run.stderr);
    assert!(
        run.stderr.contains("orphan"),
        "the valid verdicts are named: {}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "nothing listed: {}", run.stdout);
}
