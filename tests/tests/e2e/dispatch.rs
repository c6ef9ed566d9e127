//! The dispatcher with the real server and the provider sandbox: payouts go
//! from the API to a provider and back by webhook or status poll.

use std::time::Duration;

use nepxy_ledger::Provider;
use nepxy_tests::{
    Caller, TestApp, assert_problem, fast_dispatch_settings, spawn_app_with_sandbox,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Longest wait for a payout to reach its final status in these tests.
const FINAL_STATUS_WAIT: Duration = Duration::from_secs(30);
const FINAL: [&str; 2] = ["succeeded", "failed"];

fn body(amount: i64, provider: &str, msisdn: &str) -> Value {
    json!({
        "amount": amount,
        "currency": "XOF",
        "provider": provider,
        "recipient": { "msisdn": msisdn, "name": "Ama Koffi" },
        "reference": "dispatch test",
    })
}

async fn pay(app: &TestApp, client: &Caller, key: &str, provider: &str, msisdn: &str) -> String {
    let reply = app
        .post_payout(client, key, &body(1_000, provider, msisdn))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{key}: {:?}", reply.body);
    reply.body["id"].as_str().expect("payout id").to_owned()
}

/// Create requests the sandbox received for a reference, and how many
/// transactions it holds for it.
fn sandbox_counts(transactions: &Value, payout_id: &str) -> (u64, usize) {
    let matching: Vec<&Value> = transactions
        .as_array()
        .or_else(|| transactions["items"].as_array())
        .expect("sandbox transaction list")
        .iter()
        .filter(|transaction| {
            transaction["reference"]
                .as_str()
                .is_some_and(|reference| reference.starts_with(payout_id))
        })
        .collect();
    let attempts = matching
        .iter()
        .map(|transaction| transaction["attempts"].as_u64().unwrap_or(0))
        .sum();
    (attempts, matching.len())
}

async fn event_count(app: &TestApp, payout_id: &str, event_type: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Payout' AND aggregate_id = '{payout_id}' \
         AND event_type = '{event_type}'"
    ))
    .await
}

#[tokio::test]
async fn each_provider_succeeds_and_fails() {
    let (app, sandbox) = spawn_app_with_sandbox(&[]).await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let _dispatcher = app.start_dispatcher(fast_dispatch_settings());

    let mut expected = Vec::new();
    for provider in ["tmoney", "thunes", "momo"] {
        let ok = pay(
            &app,
            &client,
            &format!("{provider}-ok"),
            provider,
            "+22890000000",
        )
        .await;
        let failed = pay(
            &app,
            &client,
            &format!("{provider}-fail"),
            provider,
            "+22890000001",
        )
        .await;
        expected.push((provider, ok, "succeeded"));
        expected.push((provider, failed, "failed"));
    }
    for (provider, payout_id, status) in &expected {
        let payout = app
            .wait_for_status(&client, payout_id, &FINAL, FINAL_STATUS_WAIT)
            .await;
        assert_eq!(
            payout["status"], *status,
            "{provider} payout {payout_id}: {payout}"
        );
    }

    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!(held, 0, "nothing stays held once every payout is final");
    assert_eq!(
        available,
        100_000 - 3 * 1_000,
        "failed payouts are released, succeeded ones settled"
    );

    let transactions = sandbox.transactions().await;
    for (provider, payout_id, _) in &expected {
        let (_, created) = sandbox_counts(&transactions, payout_id);
        assert!(
            created <= 1,
            "{provider} payout {payout_id} created {created} provider transactions"
        );
        assert!(
            event_count(&app, payout_id, "ProviderAttempted").await >= 1,
            "attempts are events"
        );
    }
    sandbox.stop().await;
}

#[tokio::test]
async fn terminal_error_fails_and_releases() {
    let (app, sandbox) = spawn_app_with_sandbox(&[]).await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let _dispatcher = app.start_dispatcher(fast_dispatch_settings());

    // ...06: MoMo answers HTTP 500 NOT_ENOUGH_FUNDS and creates nothing.
    let payout_id = pay(&app, &client, "momo-no-funds", "momo", "+22890000006").await;
    let payout = app
        .wait_for_status(&client, &payout_id, &FINAL, FINAL_STATUS_WAIT)
        .await;
    assert_eq!(payout["status"], "failed", "{payout}");
    assert_eq!(payout["failure_code"], "NOT_ENOUGH_FUNDS", "{payout}");
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!((available, held), (10_000, 0), "the reserve is released");
    sandbox.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (app, sandbox) = spawn_app_with_sandbox(&[]).await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let _dispatcher = app.start_dispatcher(fast_dispatch_settings());

    // ...04: 429 with Retry-After: 1 on the first request, then success.
    let payout_id = pay(&app, &client, "tmoney-429", "tmoney", "+22890000004").await;
    let payout = app
        .wait_for_status(&client, &payout_id, &FINAL, FINAL_STATUS_WAIT)
        .await;
    assert_eq!(payout["status"], "succeeded", "{payout}");

    let delays: Vec<i64> = sqlx::query_scalar(
        "SELECT (payload::jsonb -> 'ProviderAttempted' ->> 'delay_ms')::bigint FROM events \
         WHERE aggregate_id = $1 AND event_type = 'ProviderAttempted' ORDER BY sequence",
    )
    .bind(&payout_id)
    .fetch_all(&app.pool)
    .await
    .expect("attempt events");
    assert!(delays.len() >= 2, "a retry after the 429: {delays:?}");
    assert!(
        delays[1] >= 1_000,
        "the retry waited at least Retry-After: {delays:?}"
    );
    let (_, created) = sandbox_counts(&sandbox.transactions().await, &payout_id);
    assert_eq!(created, 1, "one provider transaction");
    sandbox.stop().await;
}

#[tokio::test]
async fn ambiguous_error_never_pays_twice() {
    let (app, sandbox) = spawn_app_with_sandbox(&[]).await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let _dispatcher = app.start_dispatcher(fast_dispatch_settings());

    // ...03: HTTP 500 INTERNAL_PROCESSING_ERROR although the transfer was
    // created; ...02: a slow answer.
    let ambiguous = pay(&app, &client, "momo-ambiguous", "momo", "+22890000003").await;
    let slow = pay(&app, &client, "tmoney-slow", "tmoney", "+22890000002").await;
    for payout_id in [&ambiguous, &slow] {
        let payout = app
            .wait_for_status(&client, payout_id, &FINAL, FINAL_STATUS_WAIT)
            .await;
        assert_eq!(payout["status"], "succeeded", "{payout}");
    }
    let transactions = sandbox.transactions().await;
    for payout_id in [&ambiguous, &slow] {
        let (_, created) = sandbox_counts(&transactions, payout_id);
        assert_eq!(
            created, 1,
            "payout {payout_id} has exactly one provider transaction"
        );
    }
    sandbox.stop().await;
}

#[tokio::test]
async fn resumed_dispatch_submits_once() {
    let (app, sandbox) = spawn_app_with_sandbox(&[]).await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;

    // The provider accepts, but the dispatcher dies before recording it: the
    // sandbox has the transfer while the payout is still pending with a
    // lease that has run out.
    let payout_id = pay(&app, &client, "crash-after-accept", "momo", "+22890000009").await;
    let order_token = nepxy_api::webhooks::momo::callback_token(
        nepxy_tests::TEST_MOMO_SECRET.as_bytes(),
        payout_id.parse().expect("uuid"),
    );
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/disbursement/token/", sandbox.base_url))
        .basic_auth("user", Some("key"))
        .header("ocp-apim-subscription-key", "sandbox-subscription-key")
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let accepted = http
        .post(format!("{}/disbursement/v1_0/transfer", sandbox.base_url))
        .bearer_auth(token["access_token"].as_str().expect("access token"))
        .header("x-reference-id", &payout_id)
        .header("x-target-environment", "sandbox")
        .header(
            "x-callback-url",
            format!("{}/v1/webhooks/momo/{order_token}", app.base_url),
        )
        .header("ocp-apim-subscription-key", "sandbox-subscription-key")
        .json(&json!({
            "amount": "1000", "currency": "XOF", "externalId": payout_id,
            "payee": { "partyIdType": "MSISDN", "partyId": "22890000009" },
            "payerMessage": "x", "payeeNote": "x",
        }))
        .send()
        .await
        .expect("transfer");
    assert_eq!(
        accepted.status(),
        reqwest::StatusCode::ACCEPTED,
        "the first submission is accepted"
    );
    sqlx::query("UPDATE dispatch_queue SET lease_until = now() - interval '1 s', attempts = 1 WHERE payout_id = $1::uuid")
        .bind(&payout_id)
        .execute(&app.pool)
        .await
        .expect("expire the crashed dispatcher's lease");

    let _dispatcher = app.start_dispatcher(fast_dispatch_settings());
    let payout = app
        .wait_for_status(&client, &payout_id, &FINAL, FINAL_STATUS_WAIT)
        .await;
    assert_eq!(payout["status"], "succeeded", "{payout}");
    let (requests, created) = sandbox_counts(&sandbox.transactions().await, &payout_id);
    assert_eq!(created, 1, "one provider transaction");
    assert!(
        requests >= 2,
        "the resumed dispatcher submitted again under the same reference: {requests}"
    );
    sandbox.stop().await;
}

#[tokio::test]
async fn disabled_provider_rejects_then_resumes() {
    let (app, sandbox) = spawn_app_with_sandbox(&[("PROVIDER_DISABLED", "thunes")]).await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;

    let reply = app
        .post_payout(
            &client,
            "thunes-off",
            &body(1_000, "thunes", "+22890000000"),
        )
        .await;
    assert_problem(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "/problems/provider-disabled",
        "disabled provider",
    );
    assert!(
        reply.header("retry-after").is_some(),
        "503 carries Retry-After"
    );
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!((available, held), (10_000, 0), "nothing reserved");
    let health = app
        .send(reqwest::Method::GET, "/health", None, &[], None)
        .await;
    assert_eq!(
        health.body["disabled_providers"],
        json!(["thunes"]),
        "{:?}",
        health.body
    );

    // A payout queued before the switch waits, then goes out once enabled.
    app.switches.set(Default::default());
    let queued = pay(&app, &client, "thunes-queued", "thunes", "+22890000000").await;
    app.switches.set([Provider::Thunes].into_iter().collect());
    let _dispatcher = app.start_dispatcher(fast_dispatch_settings());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let waiting = app
        .get(&format!("/v1/payouts/{queued}"), &client.token)
        .await;
    assert_eq!(
        waiting.body["status"], "pending",
        "queued payouts wait while disabled"
    );

    app.switches.set(Default::default());
    let payout = app
        .wait_for_status(&client, &queued, &FINAL, FINAL_STATUS_WAIT)
        .await;
    assert_eq!(payout["status"], "succeeded", "{payout}");
    sandbox.stop().await;
}

/// Reads a payout's dispatch_queue row: state, attempts, whether it has no
/// lease, last_error and next_attempt_at.
async fn queue_row(app: &TestApp, payout_id: &str) -> (String, i32, bool, Option<String>, String) {
    sqlx::query_as(
        "SELECT state, attempts, lease_until IS NULL, last_error, next_attempt_at::text \
         FROM dispatch_queue WHERE payout_id = $1::uuid",
    )
    .bind(payout_id)
    .fetch_one(&app.pool)
    .await
    .expect("queue row")
}

#[tokio::test]
async fn unconfigured_provider_rows_stay_unleased() {
    let (app, sandbox) = spawn_app_with_sandbox(&[]).await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let waiting = pay(&app, &client, "thunes-waits", "thunes", "+22890000000").await;
    let sent = pay(&app, &client, "tmoney-goes", "tmoney", "+22890000000").await;
    let before = queue_row(&app, &waiting).await;

    // A dispatcher of an instance that has no Thunes settings.
    let mut partial = app.state.dispatcher(fast_dispatch_settings());
    partial.providers.remove(&Provider::Thunes);
    let claimed = partial.round().await.expect("round");
    assert_eq!(claimed, 1, "only the tmoney payout is claimed");
    let claimed = partial.round().await.expect("second round");
    assert_eq!(claimed, 0, "the thunes payout is never claimed");

    let after = queue_row(&app, &waiting).await;
    assert_eq!(after, before, "the thunes row is left as it was");
    assert_eq!(after.0, "ready", "state");
    assert_eq!(after.1, 0, "attempts");
    assert!(after.2, "no lease");
    assert_eq!(after.3, None, "last_error");
    let tmoney = queue_row(&app, &sent).await;
    assert_ne!(tmoney.0, "ready", "the tmoney payout went out: {tmoney:?}");

    // An instance that has Thunes sends the waiting payout.
    let _dispatcher = app.start_dispatcher(fast_dispatch_settings());
    let payout = app
        .wait_for_status(&client, &waiting, &FINAL, FINAL_STATUS_WAIT)
        .await;
    assert_eq!(payout["status"], "succeeded", "{payout}");
    sandbox.stop().await;
}

#[tokio::test]
async fn timeout_then_success_pays_once() {
    // The sandbox answers ...02 after 3 s; with a 1 s client timeout the
    // first submission times out although the provider took the transfer.
    let (app, sandbox) = spawn_app_with_sandbox(&[("PROVIDER_TIMEOUT_MS", "1000")]).await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let _dispatcher = app.start_dispatcher(fast_dispatch_settings());

    let mut payouts = Vec::new();
    for provider in ["tmoney", "momo"] {
        payouts.push(
            pay(
                &app,
                &client,
                &format!("{provider}-timeout"),
                provider,
                "+22890000002",
            )
            .await,
        );
    }
    for payout_id in &payouts {
        let payout = app
            .wait_for_status(&client, payout_id, &FINAL, FINAL_STATUS_WAIT)
            .await;
        assert_eq!(payout["status"], "succeeded", "{payout}");
    }
    let transactions = sandbox.transactions().await;
    for payout_id in &payouts {
        let (_, created) = sandbox_counts(&transactions, payout_id);
        assert_eq!(
            created, 1,
            "payout {payout_id} has exactly one provider transaction"
        );
        // The callback can finish the payout while the dispatcher still
        // waits for its timed-out call, so its attempts may come later.
        let deadline = tokio::time::Instant::now() + FINAL_STATUS_WAIT;
        while event_count(&app, payout_id, "ProviderAttempted").await == 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            event_count(&app, payout_id, "ProviderAttempted").await >= 1,
            "attempts recorded for {payout_id}"
        );
    }
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!((available, held), (8_000, 0), "each payout settled once");
    sandbox.stop().await;
}
