//! Idempotency-Key handling of POST /v1/payouts and deposits: replays,
//! reused keys, per-client scope and a storm of identical requests.

use std::sync::Arc;

use nepxy_tests::{TestApp, assert_problem, payout_body, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

/// Number of identical requests sent at once in the storm test.
const STORM_SIZE: usize = 100;

async fn count_reserves(app: &TestApp, payout_id: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM events WHERE event_type = 'FundsReserved' \
         AND payload::text LIKE '%{payout_id}%'"
    ))
    .await
}

#[tokio::test]
async fn replay_returns_stored_answer() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let body = payout_body(2_500, "tmoney");

    let first = app.post_payout(&client, "replay-1", &body).await;
    let second = app.post_payout(&client, "replay-1", &body).await;

    assert_eq!(first.status, StatusCode::CREATED, "first: {:?}", first.body);
    assert!(
        first.header("idempotent-replayed").is_none(),
        "the first answer is not marked as replayed"
    );
    assert_eq!(second.status, StatusCode::CREATED, "replay status");
    assert_eq!(
        second.header("idempotent-replayed"),
        Some("true"),
        "Idempotent-Replayed header"
    );
    assert_eq!(second.body, first.body, "replay body");
    assert_ne!(
        second.header("x-request-id"),
        first.header("x-request-id"),
        "each answer has its own request id"
    );

    let payout_id = first.body["id"].as_str().expect("id");
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (7_500, 2_500),
        "balance (available, held) after one reserve"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM payouts").await,
        1,
        "payouts rows"
    );
    assert_eq!(
        count_reserves(&app, payout_id).await,
        1,
        "FundsReserved events"
    );
}

#[tokio::test]
async fn reused_key_with_other_body() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let first = app
        .post_payout(&client, "reused", &payout_body(2_500, "tmoney"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "first: {:?}", first.body);

    let mut no_reference = payout_body(2_500, "tmoney");
    no_reference
        .as_object_mut()
        .expect("object")
        .remove("reference");
    let cases = [
        ("other amount", payout_body(2_600, "tmoney")),
        ("other provider", payout_body(2_500, "thunes")),
        ("reference removed", no_reference),
    ];
    for (case, body) in cases {
        let reply = app.post_payout(&client, "reused", &body).await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/idempotency-key-reused",
            case,
        );
    }

    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (7_500, 2_500),
        "balance (available, held) shows only the first payout"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM payouts").await,
        1,
        "payouts rows"
    );
}

#[tokio::test]
async fn reordered_keys_are_replayed() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let original = br#"{"amount":1000,"currency":"XOF","provider":"momo","recipient":{"msisdn":"+22890123456","name":"Ama"},"reference":"rent"}"#;
    let reordered = br#"{
        "reference": "rent",
        "recipient": { "name": "Ama", "msisdn": "+22890123456" },
        "provider": "momo",
        "currency": "XOF",
        "amount": 1000
    }"#;

    let mut replies = Vec::new();
    for bytes in [original.as_slice(), reordered.as_slice()] {
        let reply = app
            .send_raw(
                Method::POST,
                "/v1/payouts",
                Some(&client.token),
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", "reordered"),
                ],
                bytes.to_vec(),
            )
            .await;
        replies.push(reply);
    }

    assert_eq!(
        replies[0].status,
        StatusCode::CREATED,
        "first: {:?}",
        replies[0].body
    );
    assert_eq!(
        replies[1].status,
        StatusCode::CREATED,
        "reordered: {:?}",
        replies[1].body
    );
    assert_eq!(
        replies[1].header("idempotent-replayed"),
        Some("true"),
        "the reordered document is a replay"
    );
    assert_eq!(replies[1].body, replies[0].body, "replay body");
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (9_000, 1_000),
        "balance (available, held)"
    );
}

#[tokio::test]
async fn keys_are_scoped_per_client() {
    let app = spawn_app().await;
    let (admin, alice) = app.funded_client(10_000, "XOF").await;
    let bob = app.create_client(&admin, "client").await;
    let deposit = app.deposit(&admin, bob.client_id, 10_000, "XOF").await;
    assert_eq!(deposit.status, StatusCode::CREATED, "deposit for bob");
    let body = payout_body(1_000, "tmoney");

    let from_alice = app.post_payout(&alice, "shared-key", &body).await;
    let from_bob = app.post_payout(&bob, "shared-key", &body).await;

    assert_eq!(
        from_alice.status,
        StatusCode::CREATED,
        "alice: {:?}",
        from_alice.body
    );
    assert_eq!(
        from_bob.status,
        StatusCode::CREATED,
        "bob: {:?}",
        from_bob.body
    );
    assert!(
        from_bob.header("idempotent-replayed").is_none(),
        "bob's request is not a replay of alice's"
    );
    assert_ne!(from_alice.body["id"], from_bob.body["id"], "payout ids");
    assert_eq!(
        from_bob.body["client_id"],
        bob.client_id.to_string(),
        "bob's payout belongs to bob"
    );
    assert_eq!(
        app.balance_of(&alice, alice.client_id, "XOF").await,
        (9_000, 1_000),
        "alice's balance"
    );
    assert_eq!(
        app.balance_of(&bob, bob.client_id, "XOF").await,
        (9_000, 1_000),
        "bob's balance"
    );
}

#[tokio::test]
async fn deposit_replay_counts_once() {
    let app = spawn_app().await;
    let admin = app.bootstrap_admin().await;
    let client = app.create_client(&admin, "client").await;
    let path = format!("/v1/accounts/{}/deposits", client.client_id);
    let body = json!({ "amount": 5_000, "currency": "XOF" });
    let key = Uuid::new_v4().to_string();
    let headers = [("idempotency-key", key.as_str())];

    let first = app
        .send(
            Method::POST,
            &path,
            Some(&admin.token),
            &headers,
            Some(&body),
        )
        .await;
    let second = app
        .send(
            Method::POST,
            &path,
            Some(&admin.token),
            &headers,
            Some(&body),
        )
        .await;

    assert_eq!(first.status, StatusCode::CREATED, "first: {:?}", first.body);
    assert_eq!(
        first.body["balance"]["available"], 5_000,
        "balance in the first answer"
    );
    assert_eq!(second.status, StatusCode::CREATED, "replay status");
    assert_eq!(
        second.header("idempotent-replayed"),
        Some("true"),
        "Idempotent-Replayed header"
    );
    assert_eq!(second.body, first.body, "replay body");

    let other_amount = json!({ "amount": 6_000, "currency": "XOF" });
    let reused = app
        .send(
            Method::POST,
            &path,
            Some(&admin.token),
            &headers,
            Some(&other_amount),
        )
        .await;
    assert_problem(
        &reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/idempotency-key-reused",
        "deposit key with another amount",
    );

    assert_eq!(
        app.balance_of(&admin, client.client_id, "XOF").await,
        (5_000, 0),
        "the deposit counts once"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'FundsDeposited'")
            .await,
        1,
        "FundsDeposited events"
    );
}

#[tokio::test]
async fn identical_payout_storm_reserves_once() {
    let app = Arc::new(spawn_app().await);
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let client = Arc::new(client);
    let body = Arc::new(payout_body(3_000, "thunes"));

    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..STORM_SIZE {
        let (app, client, body) = (Arc::clone(&app), Arc::clone(&client), Arc::clone(&body));
        requests.spawn(async move { app.post_payout(&client, "storm", &body).await });
    }
    let replies = requests.join_all().await;

    let created: Vec<_> = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty(), "at least one request answered 201");
    let payout = &created[0].body;
    for reply in &created {
        assert_eq!(reply.body, *payout, "every 201 carries the same payout");
    }
    for reply in replies
        .iter()
        .filter(|reply| reply.status != StatusCode::CREATED)
    {
        assert_problem(
            reply,
            StatusCode::CONFLICT,
            "/problems/conflict",
            "request that found the key in progress",
        );
    }
    let fresh = created
        .iter()
        .filter(|reply| reply.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "201 answers that are not replays");

    let payout_id = payout["id"].as_str().expect("id");
    assert_eq!(
        app.count("SELECT count(*) FROM payouts").await,
        1,
        "payouts rows"
    );
    assert_eq!(
        count_reserves(&app, payout_id).await,
        1,
        "FundsReserved events"
    );
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (97_000, 3_000),
        "balance (available, held) after one reserve"
    );
}

/// Rounds of immediate retries in the prompt-retry test.
const PROMPT_RETRIES: usize = 40;

/// A client that retries at once must get the same response again, never
/// 409, because each response is sent only after its transaction, and the
/// key's lock with it, has ended.
#[tokio::test]
async fn prompt_retry_never_sees_409() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(10_000, "XOF").await;
    let accepted = payout_body(1_000, "tmoney");
    let too_large = payout_body(1_000_000, "tmoney");

    let first = app.post_payout(&client, "prompt-ok", &accepted).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    for round in 0..PROMPT_RETRIES {
        // A replay of a stored response, a reused key and a rejected command.
        let replay = app.post_payout(&client, "prompt-ok", &accepted).await;
        assert_eq!(
            replay.status,
            StatusCode::CREATED,
            "round {round}: {:?}",
            replay.body
        );
        let reused = app.post_payout(&client, "prompt-ok", &too_large).await;
        assert_eq!(
            reused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "round {round}: {:?}",
            reused.body
        );
        let rejected = app.post_payout(&client, "prompt-poor", &too_large).await;
        assert_eq!(
            rejected.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "round {round}: {:?}",
            rejected.body
        );
    }
}
