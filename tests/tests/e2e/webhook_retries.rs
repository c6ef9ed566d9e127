//! Automatic retries of stored webhook deliveries that could not be applied.

use std::sync::Arc;
use std::time::Duration;

use nepxy_ledger::ids;
use nepxy_tests::{
    Caller, TestApp, fast_retry_settings, payout_body, spawn_app, tmoney_headers, tmoney_report,
    webhook_id_of,
};
use reqwest::StatusCode;
use uuid::Uuid;

const TMONEY_PATH: &str = "/v1/webhooks/tmoney";

/// Longest wait for the retry worker in these tests.
const RETRY_WAIT: Duration = Duration::from_secs(20);

async fn verdict(app: &TestApp, webhook_id: Uuid) -> String {
    sqlx::query_scalar("SELECT verdict FROM webhook_deliveries WHERE webhook_id = $1")
        .bind(webhook_id)
        .fetch_one(&app.pool)
        .await
        .expect("stored delivery")
}

async fn wait_for_verdict(app: &TestApp, webhook_id: Uuid, expected: &str) -> String {
    let deadline = tokio::time::Instant::now() + RETRY_WAIT;
    loop {
        let current = verdict(app, webhook_id).await;
        if current == expected || tokio::time::Instant::now() >= deadline {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn succeeded_events(app: &TestApp, payout_id: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM events WHERE aggregate_id = '{payout_id}' AND event_type = 'PayoutSucceeded'"
    ))
    .await
}

/// Starts the service with a funded client and one TMoney payout of 1,000
/// XOF under `key`. Returns the payout id.
async fn app_with_payout(key: &str) -> (TestApp, Caller, String) {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let payout_id = app
        .post_payout(&client, key, &payout_body(1_000, "tmoney"))
        .await
        .body["id"]
        .as_str()
        .expect("payout id")
        .to_owned();
    (app, client, payout_id)
}

/// Makes every event insert fail, as a database fault would.
async fn fail_event_inserts(app: &TestApp) {
    sqlx::raw_sql(
        "CREATE FUNCTION fail_event_insert() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'simulated database failure'; END; $$; \
         CREATE TRIGGER fail_event_insert BEFORE INSERT ON events \
         FOR EACH ROW EXECUTE FUNCTION fail_event_insert();",
    )
    .execute(&app.pool)
    .await
    .expect("install the failing trigger");
}

async fn allow_event_inserts(app: &TestApp) {
    sqlx::raw_sql("DROP TRIGGER fail_event_insert ON events; DROP FUNCTION fail_event_insert();")
        .execute(&app.pool)
        .await
        .expect("remove the failing trigger");
}

/// Lets event inserts succeed again, makes the delivery's retry due now and
/// runs the retry worker until the delivery is applied.
async fn heal_and_retry(app: &TestApp, webhook_id: Uuid) {
    allow_event_inserts(app).await;
    app.make_retry_due(webhook_id).await;
    let _retries = app.start_webhook_retries(fast_retry_settings(5));
    assert_eq!(
        wait_for_verdict(app, webhook_id, "applied").await,
        "applied"
    );
}

#[tokio::test]
async fn orphan_applied_when_payout_appears() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let payout_id = ids::payout_id(client.client_id, "late-payout").to_string();

    let reply = app
        .send_tmoney(&tmoney_report(&payout_id, "SUCCESS", 1_000, "XOF"))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    assert_eq!(reply.body["verdict"], "orphan");
    let webhook_id = webhook_id_of(&reply);
    app.make_retry_due(webhook_id).await;

    let created = app
        .post_payout(&client, "late-payout", &payout_body(1_000, "tmoney"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let _retries = app.start_webhook_retries(fast_retry_settings(5));

    assert_eq!(
        wait_for_verdict(&app, webhook_id, "applied").await,
        "applied"
    );
    let payout = app
        .get(&format!("/v1/payouts/{payout_id}"), &client.token)
        .await;
    assert_eq!(payout.body["status"], "succeeded", "{:?}", payout.body);
    assert_eq!(succeeded_events(&app, &payout_id).await, 1, "applied once");
    let attempts = app
        .count(&format!(
            "SELECT count(*) FROM webhook_retry_attempts WHERE webhook_id = '{webhook_id}'"
        ))
        .await;
    assert!(attempts >= 1, "the retry is recorded");
}

#[tokio::test]
async fn database_failure_retried_and_applied_once() {
    let (app, client, payout_id) = app_with_payout("db-failure").await;

    fail_event_inserts(&app).await;

    let reply = app
        .send_tmoney(&tmoney_report(&payout_id, "SUCCESS", 1_000, "XOF"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::ACCEPTED,
        "stored and left for a retry: {:?}",
        reply.body
    );
    assert_eq!(reply.body["verdict"], "received");
    let webhook_id = webhook_id_of(&reply);
    assert_eq!(
        succeeded_events(&app, &payout_id).await,
        0,
        "nothing applied while failing"
    );

    heal_and_retry(&app, webhook_id).await;
    assert_eq!(
        succeeded_events(&app, &payout_id).await,
        1,
        "applied exactly once"
    );
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!((available, held), (9_000, 0), "settled once");
}

/// Counts the claims of `nonce` as a TMoney replay key: all of them, and
/// those of delivery `webhook_id`.
async fn nonce_claims(app: &TestApp, nonce: &str, webhook_id: Uuid) -> (i64, i64) {
    let all = app
        .count(&format!(
            "SELECT count(*) FROM webhook_replay_keys WHERE provider = 'tmoney' AND replay_key = '{nonce}'"
        ))
        .await;
    let own = app
        .count(&format!(
            "SELECT count(*) FROM webhook_replay_keys WHERE provider = 'tmoney' \
             AND replay_key = '{nonce}' AND webhook_id = '{webhook_id}'"
        ))
        .await;
    (all, own)
}

#[tokio::test]
async fn failed_application_frees_nonce_until_retry() {
    let (app, _client, payout_id) = app_with_payout("nonce-retry").await;
    fail_event_inserts(&app).await;

    let body = tmoney_report(&payout_id, "SUCCESS", 1_000, "XOF");
    let headers = tmoney_headers(body.as_bytes());
    let nonce = headers
        .iter()
        .find(|(name, _)| name == "x-nonce")
        .map(|(_, value)| value.clone())
        .expect("nonce header");
    let reply = app
        .send_webhook(TMONEY_PATH, &headers, body.clone().into_bytes())
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    assert_eq!(reply.body["verdict"], "received");
    let webhook_id = webhook_id_of(&reply);
    // The claim rolled back with the failed application.
    assert_eq!(
        nonce_claims(&app, &nonce, webhook_id).await,
        (0, 0),
        "nonce claimed by a delivery that was not applied"
    );

    heal_and_retry(&app, webhook_id).await;
    assert_eq!(
        nonce_claims(&app, &nonce, webhook_id).await,
        (1, 1),
        "the retry claims the nonce for its delivery"
    );

    let resent = app
        .send_webhook(TMONEY_PATH, &headers, body.into_bytes())
        .await;
    assert_eq!(
        resent.status,
        StatusCode::UNAUTHORIZED,
        "the same nonce after the retry: {:?}",
        resent.body
    );
    assert_eq!(succeeded_events(&app, &payout_id).await, 1, "applied once");
}

#[tokio::test]
async fn same_nonce_at_once_applies_once() {
    const SENDERS: usize = 12;
    let (app, client, payout_id) = app_with_payout("nonce-storm").await;
    let app = Arc::new(app);
    let body = tmoney_report(&payout_id, "SUCCESS", 1_000, "XOF");
    let headers = tmoney_headers(body.as_bytes());

    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (app, headers, body) = (Arc::clone(&app), headers.clone(), body.clone());
        sends.spawn(async move {
            app.send_webhook(TMONEY_PATH, &headers, body.into_bytes())
                .await
        });
    }
    let replies = sends.join_all().await;

    let applied = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::OK)
        .count();
    let rejected = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(applied, 1, "one delivery applied: {replies:?}");
    assert_eq!(rejected, SENDERS - 1, "the others rejected: {replies:?}");
    assert_eq!(succeeded_events(&app, &payout_id).await, 1, "applied once");
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!((available, held), (9_000, 0), "settled once");
    let stored = app
        .count("SELECT count(*) FROM webhook_deliveries WHERE verdict = 'rejected'")
        .await;
    assert_eq!(stored, (SENDERS - 1) as i64, "every rejection is stored");
}

#[tokio::test]
async fn delivery_past_cap_is_dead_and_replayable() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(10_000, "XOF").await;
    let operator = app.create_client(&admin, "operator").await;
    let payout_id = ids::payout_id(client.client_id, "never-in-time").to_string();

    let reply = app
        .send_tmoney(&tmoney_report(&payout_id, "SUCCESS", 1_000, "XOF"))
        .await;
    assert_eq!(reply.body["verdict"], "orphan", "{:?}", reply.body);
    let webhook_id = webhook_id_of(&reply);
    app.make_retry_due(webhook_id).await;

    let retries = app.start_webhook_retries(fast_retry_settings(2));
    assert_eq!(wait_for_verdict(&app, webhook_id, "dead").await, "dead");
    drop(retries);
    let attempts = app
        .count(&format!(
            "SELECT count(*) FROM webhook_retry_attempts WHERE webhook_id = '{webhook_id}'"
        ))
        .await;
    assert_eq!(attempts, 2, "two retries before giving up");

    let dead = app.get("/v1/webhooks?verdict=dead", &operator.token).await;
    assert_eq!(dead.status, StatusCode::OK, "{:?}", dead.body);
    let listed: Vec<&str> = dead.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["id"].as_str())
        .collect();
    assert_eq!(
        listed,
        vec![webhook_id.to_string()],
        "the dead delivery is listed"
    );

    let created = app
        .post_payout(&client, "never-in-time", &payout_body(1_000, "tmoney"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let replayed = app
        .send(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{webhook_id}/replay"),
            Some(&operator.token),
            &[],
            Some(&serde_json::json!({ "reason": "payout created after the retries ran out" })),
        )
        .await;
    assert_eq!(replayed.status, StatusCode::OK, "{:?}", replayed.body);
    assert_eq!(replayed.body["verdict"], "applied");
    assert_eq!(
        succeeded_events(&app, &payout_id).await,
        1,
        "applied once by the replay"
    );
}

#[tokio::test]
async fn rejected_signature_never_retried() {
    let (app, _client, payout_id) = app_with_payout("forged").await;
    let body = tmoney_report(&payout_id, "SUCCESS", 1_000, "XOF");
    let mut headers = nepxy_tests::tmoney_headers(body.as_bytes());
    for (name, value) in &mut headers {
        if name == "x-signature" {
            *value = "0".repeat(64);
        }
    }
    let reply = app
        .send_webhook("/v1/webhooks/tmoney", &headers, body.into_bytes())
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);

    let due: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT next_retry_at FROM webhook_deliveries WHERE verdict = 'rejected'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("rejected delivery stored");
    assert!(due.is_none(), "a rejected delivery has no retry scheduled");
}
