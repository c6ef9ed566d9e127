//! One signed TMoney report moves a payout end to end.

use hmac::{Hmac, KeyInit, Mac};
use nepxy_tests::{TEST_TMONEY_SECRET, payout_body, spawn_app};
use reqwest::{Method, StatusCode};
use sha2::Sha256;

fn tmoney_signature(timestamp: &str, nonce: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(TEST_TMONEY_SECRET.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{nonce}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn tmoney_success_settles_payout() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let payout = app
        .post_payout(&client, "wh-smoke", &payout_body(2_500, "tmoney"))
        .await;
    assert_eq!(payout.status, StatusCode::CREATED, "{:?}", payout.body);
    let payout_id = payout.body["id"].as_str().expect("id").to_owned();

    let body = format!(
        r#"{{"external_ref":"{payout_id}","status":"SUCCESS","transaction_id":"TM-1","amount":2500,"currency":"XOF"}}"#
    );
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = tmoney_signature(&timestamp, "nonce-1", body.as_bytes());
    let reply = app
        .send_raw(
            Method::POST,
            "/v1/webhooks/tmoney",
            None,
            &[
                ("content-type", "application/json"),
                ("x-timestamp", &timestamp),
                ("x-nonce", "nonce-1"),
                ("x-signature", &signature),
            ],
            body.clone().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["verdict"], "applied");

    let shown = app
        .get(&format!("/v1/payouts/{payout_id}"), &client.token)
        .await;
    assert_eq!(shown.body["status"], "succeeded");
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!(
        (available, held),
        (97_500, 0),
        "settled funds leave the wallet"
    );

    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM webhook_deliveries WHERE verdict = 'applied'")
            .fetch_one(&app.pool)
            .await
            .expect("stored delivery");
    assert_eq!(stored, body.into_bytes(), "body stored byte for byte");
}
