//! Signed reports from each provider move a payout and its wallet balances.
//!
//! Every test funds a client with 100 000 XOF and creates a payout of 2 500
//! XOF, so the wallet starts at 97 500 available and 2 500 held.

use nepxy_api::webhooks::ReportStatus;
use nepxy_tests::{
    Caller, MomoStatusStub, Reply, TestApp, momo_report, spawn_app, spawn_app_with_momo,
    thunes_report, tmoney_report, webhook_id_of,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const FUNDED: i64 = 100_000;
const AMOUNT: i64 = 2_500;

/// Balances after the payout was created and before any report.
const HELD: (i64, i64) = (FUNDED - AMOUNT, AMOUNT);

struct Setup {
    app: TestApp,
    admin: Caller,
    client: Caller,
    payout_id: Uuid,
}

async fn setup_on(app: TestApp, provider: &str) -> Setup {
    let (admin, client) = app.funded_client(FUNDED, "XOF").await;
    let payout_id = app
        .create_payout(&client, "payout-1", AMOUNT, provider)
        .await;
    Setup {
        app,
        admin,
        client,
        payout_id,
    }
}

async fn setup(provider: &str) -> Setup {
    setup_on(spawn_app().await, provider).await
}

impl Setup {
    async fn balances(&self) -> (i64, i64) {
        self.app
            .balance_of(&self.client, self.client.client_id, "XOF")
            .await
    }

    async fn status(&self) -> String {
        self.app.payout_status(&self.client, self.payout_id).await
    }

    fn id(&self) -> String {
        self.payout_id.to_string()
    }
}

fn assert_verdict(reply: &Reply, status: StatusCode, verdict: &str, context: &str) {
    assert_eq!(
        reply.status, status,
        "{context}: status, body {:?}",
        reply.body
    );
    assert_eq!(
        reply.body["verdict"], verdict,
        "{context}: verdict, body {:?}",
        reply.body
    );
}

async fn replay(app: &TestApp, operator: &Caller, webhook_id: Uuid, reason: &str) -> Reply {
    app.send(
        Method::POST,
        &format!("/v1/webhooks/{webhook_id}/replay"),
        Some(&operator.token),
        &[],
        Some(&json!({ "reason": reason })),
    )
    .await
}

#[tokio::test]
async fn tmoney_success_settles() {
    let fixture = setup("tmoney").await;
    let body = tmoney_report(&fixture.id(), "SUCCESS", AMOUNT, "XOF");

    let reply = fixture.app.send_tmoney(&body).await;

    assert_verdict(&reply, StatusCode::OK, "applied", "SUCCESS report");
    assert_eq!(
        reply.body["payout_id"],
        fixture.id(),
        "answer names the payout"
    );
    let events = reply.body["events"].as_array().expect("events array");
    assert!(
        events.contains(&json!("PayoutSucceeded")),
        "answer lists PayoutSucceeded: {events:?}"
    );
    assert_eq!(fixture.status().await, "succeeded", "payout status");
    assert_eq!(
        fixture.balances().await,
        (FUNDED - AMOUNT, 0),
        "the hold is settled and available is unchanged"
    );

    let payout = fixture.app.payout(&fixture.client, fixture.payout_id).await;
    let transaction_id =
        serde_json::from_str::<Value>(&body).expect("report is JSON")["transaction_id"].clone();
    assert_eq!(
        payout["provider_ref"], transaction_id,
        "provider_ref is TMoney's transaction_id"
    );
    let stored = fixture.app.stored_delivery(webhook_id_of(&reply)).await;
    assert_eq!(stored.verdict, "applied", "stored verdict");
    assert_eq!(
        stored.payout_id,
        Some(fixture.payout_id),
        "stored payout id"
    );
}

#[tokio::test]
async fn thunes_declined_releases_funds() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(FUNDED, "XOF").await;
    let cases = [
        ("string", json!("90400"), json!("9")),
        ("number", json!(90400), json!(9)),
    ];

    for (form, status, status_class) in cases {
        let payout_id = app
            .create_payout(&client, &format!("thunes-{form}"), AMOUNT, "thunes")
            .await;
        let body = thunes_report(&payout_id.to_string(), status, status_class, AMOUNT, "XOF");

        let reply = app.send_thunes(&body).await;

        let context = format!("status_class 9 as a {form}");
        assert_verdict(&reply, StatusCode::OK, "applied", &context);
        let payout = app.payout(&client, payout_id).await;
        assert_eq!(payout["status"], "failed", "{context}: payout status");
        assert_eq!(
            payout["failure_code"], "90400",
            "{context}: failure_code is the Thunes status"
        );
        assert_eq!(
            app.balance_of(&client, client.client_id, "XOF").await,
            (FUNDED, 0),
            "{context}: the hold is released to available"
        );
    }
}

#[tokio::test]
async fn momo_success_confirmed() {
    let stub = MomoStatusStub::answering(Some(ReportStatus::Succeeded));
    let fixture = setup_on(spawn_app_with_momo(&[], Some(stub.clone())).await, "momo").await;
    let body = momo_report(&fixture.id(), "SUCCESSFUL", AMOUNT, "XOF");

    let reply = fixture.app.send_momo(fixture.payout_id, &body).await;

    assert_verdict(&reply, StatusCode::OK, "applied", "SUCCESSFUL callback");
    assert_eq!(
        stub.requested_ids(),
        vec![fixture.payout_id],
        "the status lookup asks about the payout of the token"
    );
    assert_eq!(fixture.status().await, "succeeded", "payout status");
    assert_eq!(
        fixture.balances().await,
        (FUNDED - AMOUNT, 0),
        "hold settled"
    );
}

#[tokio::test]
async fn momo_put_accepted() {
    let stub = MomoStatusStub::answering(Some(ReportStatus::Failed));
    let fixture = setup_on(spawn_app_with_momo(&[], Some(stub)).await, "momo").await;
    let body = momo_report(&fixture.id(), "FAILED", AMOUNT, "XOF");

    let reply = fixture
        .app
        .send_raw(
            Method::PUT,
            &nepxy_tests::momo_path(fixture.payout_id),
            None,
            &[("content-type", "application/json")],
            body.into_bytes(),
        )
        .await;

    assert_verdict(&reply, StatusCode::OK, "applied", "FAILED callback by PUT");
    assert_eq!(fixture.status().await, "failed", "payout status");
    assert_eq!(fixture.balances().await, (FUNDED, 0), "funds released");
}

#[tokio::test]
async fn momo_default_unconfirmed() {
    let fixture = setup("momo").await;
    let events_before = fixture.app.event_count().await;
    let body = momo_report(&fixture.id(), "SUCCESSFUL", AMOUNT, "XOF");

    let reply = fixture.app.send_momo(fixture.payout_id, &body).await;

    assert_verdict(
        &reply,
        StatusCode::ACCEPTED,
        "unconfirmed",
        "callback without a status lookup",
    );
    assert_eq!(fixture.status().await, "pending", "payout status");
    assert_eq!(fixture.balances().await, HELD, "balances");
    assert_eq!(
        fixture.app.event_count().await,
        events_before,
        "no new events"
    );
    let stored = fixture.app.stored_delivery(webhook_id_of(&reply)).await;
    assert_eq!(stored.verdict, "unconfirmed", "stored verdict");
    assert!(
        stored
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("lookup failed")),
        "stored reason says the lookup failed: {:?}",
        stored.reason
    );
}

#[tokio::test]
async fn momo_unconfirmed_then_replayed() {
    let stub = MomoStatusStub::answering(None);
    let fixture = setup_on(spawn_app_with_momo(&[], Some(stub.clone())).await, "momo").await;
    let operator = fixture.app.create_client(&fixture.admin, "operator").await;
    let body = momo_report(&fixture.id(), "SUCCESSFUL", AMOUNT, "XOF");

    let reply = fixture.app.send_momo(fixture.payout_id, &body).await;
    assert_verdict(
        &reply,
        StatusCode::ACCEPTED,
        "unconfirmed",
        "callback while the lookup fails",
    );
    assert_eq!(
        fixture.status().await,
        "pending",
        "payout status before replay"
    );
    let webhook_id = webhook_id_of(&reply);

    stub.set_answer(Some(ReportStatus::Succeeded));
    let replayed = replay(
        &fixture.app,
        &operator,
        webhook_id,
        "MoMo status endpoint is back",
    )
    .await;

    assert_verdict(&replayed, StatusCode::OK, "applied", "replay");
    assert_eq!(
        fixture.status().await,
        "succeeded",
        "payout status after replay"
    );
    assert_eq!(
        fixture.balances().await,
        (FUNDED - AMOUNT, 0),
        "hold settled"
    );
    assert_eq!(
        fixture.app.stored_delivery(webhook_id).await.verdict,
        "applied",
        "stored verdict after replay"
    );
}

#[tokio::test]
async fn momo_lookup_disagrees() {
    let stub = MomoStatusStub::answering(Some(ReportStatus::Failed));
    let fixture = setup_on(spawn_app_with_momo(&[], Some(stub)).await, "momo").await;
    let events_before = fixture.app.event_count().await;
    let body = momo_report(&fixture.id(), "SUCCESSFUL", AMOUNT, "XOF");

    let reply = fixture.app.send_momo(fixture.payout_id, &body).await;

    assert_verdict(
        &reply,
        StatusCode::ACCEPTED,
        "unconfirmed",
        "callback that the lookup contradicts",
    );
    assert_eq!(fixture.status().await, "pending", "payout status");
    assert_eq!(fixture.balances().await, HELD, "balances");
    assert_eq!(
        fixture.app.event_count().await,
        events_before,
        "no new events"
    );
}

#[tokio::test]
async fn tmoney_reversal_refunds() {
    let fixture = setup("tmoney").await;
    let success = fixture
        .app
        .send_tmoney(&tmoney_report(&fixture.id(), "SUCCESS", AMOUNT, "XOF"))
        .await;
    assert_verdict(&success, StatusCode::OK, "applied", "SUCCESS report");

    let reversal = fixture
        .app
        .send_tmoney(&tmoney_report(&fixture.id(), "REVERSED", AMOUNT, "XOF"))
        .await;

    assert_verdict(&reversal, StatusCode::OK, "applied", "REVERSED report");
    assert_eq!(fixture.status().await, "reversed", "payout status");
    assert_eq!(
        fixture.balances().await,
        (FUNDED, 0),
        "the settled amount is refunded to available"
    );
    let types = fixture.app.payout_event_types(fixture.payout_id).await;
    assert_eq!(
        types.last().map(String::as_str),
        Some("PayoutReversed"),
        "last payout event: {types:?}"
    );
}

#[tokio::test]
async fn failed_then_succeeded_rejected() {
    let fixture = setup("tmoney").await;
    let failure = fixture
        .app
        .send_tmoney(&tmoney_report(&fixture.id(), "FAILED", AMOUNT, "XOF"))
        .await;
    assert_verdict(&failure, StatusCode::OK, "applied", "FAILED report");

    let success = fixture
        .app
        .send_tmoney(&tmoney_report(&fixture.id(), "SUCCESS", AMOUNT, "XOF"))
        .await;

    assert_verdict(
        &success,
        StatusCode::ACCEPTED,
        "transition_rejected",
        "SUCCESS after FAILED",
    );
    assert_eq!(fixture.status().await, "failed", "payout status");
    assert_eq!(fixture.balances().await, (FUNDED, 0), "funds stay released");
    let types = fixture.app.payout_event_types(fixture.payout_id).await;
    assert!(
        types.iter().any(|kind| kind == "TransitionRejected"),
        "a TransitionRejected event is recorded: {types:?}"
    );
    assert!(
        !types.iter().any(|kind| kind == "PayoutSucceeded"),
        "no PayoutSucceeded event: {types:?}"
    );
}

#[tokio::test]
async fn amount_mismatch_conflict() {
    let fixture = setup("tmoney").await;
    let body = tmoney_report(&fixture.id(), "SUCCESS", AMOUNT + 1, "XOF");

    let reply = fixture.app.send_tmoney(&body).await;

    assert_verdict(&reply, StatusCode::ACCEPTED, "conflict", "amount 2 501");
    assert_eq!(fixture.status().await, "pending", "payout status");
    assert_eq!(fixture.balances().await, HELD, "balances");
    let types = fixture.app.payout_event_types(fixture.payout_id).await;
    assert_eq!(
        types.last().map(String::as_str),
        Some("ReportConflict"),
        "last payout event: {types:?}"
    );
}

#[tokio::test]
async fn currency_mismatch_conflict() {
    let fixture = setup("tmoney").await;
    // "ZZZ" is unknown to the ledger, so its amount cannot be converted.
    for currency in ["EUR", "ZZZ"] {
        let body = tmoney_report(&fixture.id(), "SUCCESS", AMOUNT, currency);

        let reply = fixture.app.send_tmoney(&body).await;

        let context = format!("currency {currency}");
        assert_verdict(&reply, StatusCode::ACCEPTED, "conflict", &context);
        assert_eq!(
            fixture.status().await,
            "pending",
            "{context}: payout status"
        );
        assert_eq!(fixture.balances().await, HELD, "{context}: balances");
    }
    let conflicts = fixture
        .app
        .payout_event_types(fixture.payout_id)
        .await
        .into_iter()
        .filter(|kind| kind == "ReportConflict")
        .count();
    assert_eq!(conflicts, 2, "one ReportConflict event per report");
}

#[tokio::test]
async fn unknown_status_pending() {
    let fixture = setup("tmoney").await;
    let events_before = fixture.app.event_count().await;
    let body = tmoney_report(&fixture.id(), "ON_HOLD_FOR_REVIEW", AMOUNT, "XOF");

    let reply = fixture.app.send_tmoney(&body).await;

    assert_verdict(&reply, StatusCode::OK, "pending", "unknown status");
    assert_eq!(fixture.status().await, "pending", "payout status");
    assert_eq!(fixture.balances().await, HELD, "balances");
    assert_eq!(
        fixture.app.event_count().await,
        events_before,
        "no new events"
    );
    let stored = fixture.app.stored_delivery(webhook_id_of(&reply)).await;
    assert_eq!(stored.verdict, "pending", "stored verdict");
}

#[tokio::test]
async fn orphan_replayed_after_payout() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(FUNDED, "XOF").await;
    let operator = app.create_client(&admin, "operator").await;
    let key = "payout-reported-early";
    let expected_id = nepxy_ledger::ids::payout_id(client.client_id, key);
    let events_before = app.event_count().await;

    let early = app
        .send_tmoney(&tmoney_report(
            &expected_id.to_string(),
            "SUCCESS",
            AMOUNT,
            "XOF",
        ))
        .await;

    assert_verdict(
        &early,
        StatusCode::ACCEPTED,
        "orphan",
        "report before payout",
    );
    assert_eq!(app.event_count().await, events_before, "no new events");
    let webhook_id = webhook_id_of(&early);

    let payout_id = app.create_payout(&client, key, AMOUNT, "tmoney").await;
    assert_eq!(payout_id, expected_id, "payout id derives from the key");
    assert_eq!(
        app.stored_delivery(webhook_id).await.verdict,
        "orphan",
        "creating the payout does not apply the orphan by itself"
    );

    let replayed = replay(&app, &operator, webhook_id, "payout now exists").await;

    assert_verdict(&replayed, StatusCode::OK, "applied", "replay of the orphan");
    assert_eq!(
        app.payout_status(&client, payout_id).await,
        "succeeded",
        "payout status"
    );
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (FUNDED - AMOUNT, 0),
        "hold settled"
    );
    assert_eq!(
        app.stored_delivery(webhook_id).await.verdict,
        "applied",
        "stored verdict after replay"
    );
}
