use nepxy_tests::{payout_body, spawn_app};
use reqwest::StatusCode;

#[tokio::test]
async fn payout_reserves_funds() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;
    let reply = app
        .post_payout(&client, "smoke-1", &payout_body(2_500, "tmoney"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "pending");
    assert_eq!(
        reply.body["updated_at"], reply.body["created_at"],
        "a new payout is created and last updated by the same event"
    );
    let balance = app
        .get(
            &format!("/v1/accounts/{}/balance", client.client_id),
            &client.token,
        )
        .await;
    assert_eq!(balance.body["balances"][0]["available"], 97_500);
    assert_eq!(balance.body["balances"][0]["held"], 2_500);
}
