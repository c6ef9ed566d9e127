//! Webhook bodies verify against the bytes as sent and are stored byte for
//! byte, whatever their JSON layout or encoding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use nepxy_api::webhooks::ReportStatus;
use nepxy_tests::{
    Caller, MomoStatusStub, Reply, TestApp, assert_problem, spawn_app, spawn_app_with_momo,
    thunes_headers, tmoney_headers, webhook_id_of,
};
use reqwest::StatusCode;
use uuid::Uuid;

const AMOUNT: i64 = 2_500;

/// Asserts that the database and GET /v1/webhooks/{id} both hold `body`
/// exactly, and that body_text is present exactly when it is UTF-8.
async fn assert_stored_exactly(
    app: &TestApp,
    reader: &Caller,
    webhook_id: Uuid,
    body: &[u8],
    context: &str,
) {
    let stored = app.stored_delivery(webhook_id).await;
    assert_eq!(
        stored.body.as_deref(),
        Some(body),
        "{context}: stored bytea"
    );
    assert_eq!(stored.body_size, body.len() as i64, "{context}: body_size");

    let show_reply = app
        .get(&format!("/v1/webhooks/{webhook_id}"), &reader.token)
        .await;
    assert_eq!(
        show_reply.status,
        StatusCode::OK,
        "{context}: show: {:?}",
        show_reply.body
    );
    let encoded = show_reply.body["body_base64"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: body_base64 is missing"));
    let decoded = STANDARD
        .decode(encoded)
        .unwrap_or_else(|error| panic!("{context}: body_base64 does not decode: {error}"));
    assert_eq!(decoded, body, "{context}: body_base64 decodes to the body");
    match std::str::from_utf8(body) {
        Ok(text) => assert_eq!(show_reply.body["body_text"], text, "{context}: body_text"),
        Err(_) => assert!(
            show_reply.body["body_text"].is_null(),
            "{context}: body_text is null for non-UTF-8 bytes, got {:?}",
            show_reply.body["body_text"]
        ),
    }
}

fn assert_applied(reply: &Reply, context: &str) {
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{context}: status, body {:?}",
        reply.body
    );
    assert_eq!(reply.body["verdict"], "applied", "{context}: verdict");
}

/// Placeholder for the payout id in [`UNUSUAL_TMONEY_BODIES`].
const PAYOUT_ID: &str = "PAYOUT_ID";

/// TMoney bodies in unusual but valid JSON layouts: the case, the body and
/// the provider_ref that the body reports.
const UNUSUAL_TMONEY_BODIES: [(&str, &str, &str); 10] = [
    (
        "unsorted keys",
        r#"{"currency":"XOF","transaction_id":"TM-1","amount":2500,"status":"SUCCESS","external_ref":"PAYOUT_ID"}"#,
        "TM-1",
    ),
    (
        "\\u00e9 escape",
        r#"{"external_ref":"PAYOUT_ID","status":"SUCCESS","transaction_id":"TM-caf\u00e9","amount":2500,"currency":"XOF"}"#,
        "TM-café",
    ),
    (
        "escaped slash",
        r#"{"external_ref":"PAYOUT_ID","status":"SUCCESS","transaction_id":"TM\/2024\/7","amount":2500,"currency":"XOF"}"#,
        "TM/2024/7",
    ),
    (
        "trailing newline",
        "{\"external_ref\":\"PAYOUT_ID\",\"status\":\"SUCCESS\",\"transaction_id\":\"TM-4\",\"amount\":2500,\"currency\":\"XOF\"}\n",
        "TM-4",
    ),
    (
        "CRLF line endings",
        "{\r\n  \"external_ref\": \"PAYOUT_ID\",\r\n  \"status\": \"SUCCESS\",\r\n  \"transaction_id\": \"TM-5\",\r\n  \"amount\": 2500,\r\n  \"currency\": \"XOF\"\r\n}\r\n",
        "TM-5",
    ),
    (
        "unknown fields",
        r#"{"external_ref":"PAYOUT_ID","status":"SUCCESS","transaction_id":"TM-6","amount":2500,"currency":"XOF","fee":12,"channel":"USSD","tags":["a","b"],"note":null}"#,
        "TM-6",
    ),
    (
        "nested unknown objects",
        r#"{"meta":{"trace":{"id":"t-1","hops":[{"at":1},{"at":2}]}},"external_ref":"PAYOUT_ID","status":"SUCCESS","transaction_id":"TM-7","amount":2500,"currency":"XOF","payer":{"msisdn":"+22890000000"}}"#,
        "TM-7",
    ),
    (
        "raw UTF-8 text",
        r#"{"external_ref":"PAYOUT_ID","status":"SUCCESS","transaction_id":"TM-Lomé-8","amount":2500,"currency":"XOF","note":"Paiement reçu ✓"}"#,
        "TM-Lomé-8",
    ),
    (
        "amount as a decimal string",
        r#"{"external_ref":"PAYOUT_ID","status":"SUCCESS","transaction_id":"TM-9","amount":"2500.00","currency":"XOF"}"#,
        "TM-9",
    ),
    (
        "whitespace around tokens",
        "  { \"external_ref\" : \"PAYOUT_ID\" ,\t\"status\" : \"SUCCESS\" , \"transaction_id\" : \"TM-10\" , \"amount\" : 2500 , \"currency\" : \"XOF\" }  ",
        "TM-10",
    ),
];

#[tokio::test]
async fn unusual_tmoney_json_applies() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;

    for (index, (case, template, provider_ref)) in UNUSUAL_TMONEY_BODIES.into_iter().enumerate() {
        let payout_id = app
            .create_payout(&client, &format!("unusual-{index}"), AMOUNT, "tmoney")
            .await;
        let body = template.replace(PAYOUT_ID, &payout_id.to_string());
        let headers = tmoney_headers(body.as_bytes());

        let reply = app
            .send_webhook("/v1/webhooks/tmoney", &headers, body.clone().into_bytes())
            .await;

        assert_applied(&reply, case);
        let payout = app.payout(&client, payout_id).await;
        assert_eq!(payout["status"], "succeeded", "{case}: payout status");
        assert_eq!(payout["provider_ref"], provider_ref, "{case}: provider_ref");
        assert_stored_exactly(&app, &auditor, webhook_id_of(&reply), body.as_bytes(), case).await;
    }
}

#[tokio::test]
async fn pretty_thunes_object_applies() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;
    let payout_id = app
        .create_payout(&client, "thunes-pretty", AMOUNT, "thunes")
        .await;
    // A full transaction object as Thunes sends it, pretty-printed, with
    // escaped slashes, a \u escape and many fields the adapter ignores.
    let body = format!(
        r#"{{
  "id": 7300915,
  "status": "70000",
  "status_message": "COMPLETED",
  "status_class": "7",
  "status_class_message": "COMPLETED",
  "external_id": "{payout_id}",
  "external_code": null,
  "transaction_type": "C2C",
  "creation_date": "2025-02-03T14:05:09Z",
  "credit_party_identifier": {{"msisdn": "+22890000000"}},
  "source": {{"country_iso_code": "FRA", "currency": "EUR", "amount": 3.81}},
  "destination": {{"currency": "XOF", "amount": 2500}},
  "beneficiary": {{"firstname": "Ama", "lastname": "K\u00e9l\u00e9"}},
  "wholesale_fx_rate": 655.957,
  "callback_url": "https:\/\/callbacks.example.test\/v1\/webhooks\/thunes",
  "documents": []
}}"#
    );
    let headers = thunes_headers(body.as_bytes());

    let reply = app
        .send_webhook("/v1/webhooks/thunes", &headers, body.clone().into_bytes())
        .await;

    assert_applied(&reply, "pretty Thunes object");
    assert_eq!(
        app.payout_status(&client, payout_id).await,
        "succeeded",
        "payout status"
    );
    assert_stored_exactly(
        &app,
        &auditor,
        webhook_id_of(&reply),
        body.as_bytes(),
        "Thunes",
    )
    .await;
}

#[tokio::test]
async fn crlf_momo_callback_applies() {
    let stub = MomoStatusStub::answering(Some(ReportStatus::Failed));
    let app = spawn_app_with_momo(&[], Some(stub)).await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;
    let payout_id = app
        .create_payout(&client, "momo-crlf", AMOUNT, "momo")
        .await;
    let body = format!(
        "{{\r\n\"financialTransactionId\": 99887766,\r\n\"externalId\": \"{payout_id}\",\r\n\"amount\": \"2500\",\r\n\"currency\": \"XOF\",\r\n\"payee\": {{\"partyIdType\": \"MSISDN\", \"partyId\": \"22890000000\"}},\r\n\"status\": \"FAILED\",\r\n\"reason\": {{\"code\": \"PAYEE_NOT_FOUND\", \"message\": \"Le b\\u00e9n\\u00e9ficiaire n'existe pas\"}}\r\n}}\r\n"
    );

    let reply = app.send_momo(payout_id, &body).await;

    assert_applied(&reply, "CRLF MoMo callback");
    let payout = app.payout(&client, payout_id).await;
    assert_eq!(payout["status"], "failed", "payout status");
    assert_eq!(
        payout["failure_code"], "PAYEE_NOT_FOUND",
        "failure_code is the reason code"
    );
    assert_stored_exactly(
        &app,
        &auditor,
        webhook_id_of(&reply),
        body.as_bytes(),
        "MoMo",
    )
    .await;
}

/// Returns a TMoney SUCCESS body for `payout_id` whose field `field` contains
/// "reçu à Lomé" in Latin-1. The bytes 0xE7, 0xE0 and 0xE9 are not valid
/// UTF-8, so the body is not JSON as RFC 8259 defines it.
fn latin1_body(payout_id: Uuid, field: &str) -> Vec<u8> {
    let mut body = format!(
        r#"{{"external_ref":"{payout_id}","status":"SUCCESS","transaction_id":"TM-1","amount":2500,"currency":"XOF","{field}":"re"#
    )
    .into_bytes();
    body.extend_from_slice(b"\xe7u \xe0 Lom\xe9\"}");
    assert!(std::str::from_utf8(&body).is_err(), "the body is not UTF-8");
    body
}

#[tokio::test]
async fn latin1_field_malformed() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;
    let payout_id = app.create_payout(&client, "latin1", AMOUNT, "tmoney").await;
    let events_before = app.event_count().await;
    // TMoney's reason is read into the report, so its text must decode.
    let body = latin1_body(payout_id, "reason");
    let headers = tmoney_headers(&body);

    let reply = app
        .send_webhook("/v1/webhooks/tmoney", &headers, body.clone())
        .await;

    assert_problem(
        &reply,
        StatusCode::BAD_REQUEST,
        "/problems/bad-request",
        "Latin-1 reason",
    );
    let stored = app.latest_delivery().await;
    assert_eq!(stored.verdict, "malformed", "stored verdict");
    assert_stored_exactly(&app, &auditor, stored.webhook_id, &body, "Latin-1 reason").await;
    assert_eq!(
        app.payout_status(&client, payout_id).await,
        "pending",
        "payout status"
    );
    assert_eq!(app.event_count().await, events_before, "no new events");
}

#[tokio::test]
async fn latin1_unknown_field_kept() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;
    let payout_id = app.create_payout(&client, "latin1", AMOUNT, "tmoney").await;
    // The adapter skips unknown fields, so whether it checks their encoding
    // is up to the JSON parser; either response is acceptable here.
    let body = latin1_body(payout_id, "note");
    let headers = tmoney_headers(&body);

    let reply = app
        .send_webhook("/v1/webhooks/tmoney", &headers, body.clone())
        .await;

    assert!(
        reply.status == StatusCode::OK || reply.status == StatusCode::BAD_REQUEST,
        "Latin-1 unknown field: 200 or 400, got {} {:?}",
        reply.status,
        reply.body
    );
    let stored = app.latest_delivery().await;
    let expected_verdict = if reply.status == StatusCode::OK {
        "applied"
    } else {
        "malformed"
    };
    assert_eq!(stored.verdict, expected_verdict, "stored verdict");
    assert_stored_exactly(&app, &auditor, stored.webhook_id, &body, "Latin-1 note").await;
}

#[tokio::test]
async fn non_json_bodies_kept() {
    let app = spawn_app().await;
    let (admin, _client) = app.funded_client(100_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;
    let cases: [(&str, &[u8]); 6] = [
        ("empty body", b""),
        (
            "UTF-8 byte order mark",
            b"\xef\xbb\xbf{\"external_ref\":\"x\",\"status\":\"SUCCESS\"}",
        ),
        ("NUL bytes", b"\x00\x00\x00"),
        ("form encoding", b"external_ref=x&status=SUCCESS"),
        (
            "two JSON objects",
            b"{\"external_ref\":\"x\",\"status\":\"SUCCESS\"}{}",
        ),
        (
            "JSON array",
            b"[{\"external_ref\":\"x\",\"status\":\"SUCCESS\"}]",
        ),
    ];

    for (case, body) in cases {
        let headers = tmoney_headers(body);

        let reply = app
            .send_webhook("/v1/webhooks/tmoney", &headers, body.to_vec())
            .await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{case}: status, body {:?}",
            reply.body
        );
        let stored = app.latest_delivery().await;
        assert_eq!(stored.verdict, "malformed", "{case}: stored verdict");
        assert_stored_exactly(&app, &auditor, stored.webhook_id, body, case).await;
    }
}
