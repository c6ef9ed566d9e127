//! Creating, reading and listing payouts, and who may see them.

use std::collections::HashSet;

use nepxy_tests::{Caller, TestApp, assert_problem, payout_body, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// Fields of a payout as POST and GET return it.
const PAYOUT_FIELDS: [&str; 12] = [
    "id",
    "client_id",
    "status",
    "amount",
    "currency",
    "provider",
    "recipient",
    "reference",
    "provider_ref",
    "failure_code",
    "created_at",
    "updated_at",
];

/// Creates a payout and returns its body, panicking unless the status is 201.
async fn create_payout(app: &TestApp, client: &Caller, key: &str, amount: i64) -> Value {
    let reply = app
        .post_payout(client, key, &payout_body(amount, "tmoney"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "create payout {key}: {:?}",
        reply.body
    );
    reply.body
}

fn payout_id(payout: &Value) -> String {
    payout["id"].as_str().expect("payout id").to_owned()
}

/// Follows next_cursor from the first page to the last and returns the ids
/// in the order they were listed, with the number of pages.
async fn list_all(app: &TestApp, reader: &Caller, query: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/v1/payouts?{query}&cursor={cursor}"),
            None => format!("/v1/payouts?{query}"),
        };
        let reply = app.get(&path, &reader.token).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "list {path}: {:?}",
            reply.body
        );
        pages += 1;
        assert!(pages <= 20, "listing {query} does not end");
        let items = reply.body["items"].as_array().expect("items array");
        ids.extend(items.iter().map(payout_id));
        match reply.body["next_cursor"].as_str() {
            Some(next) => {
                assert!(!items.is_empty(), "a page with a next_cursor has items");
                cursor = Some(next.to_owned());
            }
            None => {
                assert!(
                    reply.body["next_cursor"].is_null(),
                    "next_cursor is a string or null, got {:?}",
                    reply.body["next_cursor"]
                );
                return (ids, pages);
            }
        }
    }
}

#[tokio::test]
async fn created_payout_reads_back() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;

    let created = create_payout(&app, &client, "read-back", 2_500).await;

    assert!(
        Uuid::parse_str(&payout_id(&created)).is_ok(),
        "id is a UUID: {:?}",
        created["id"]
    );
    assert_eq!(
        created["client_id"],
        client.client_id.to_string(),
        "client_id"
    );
    assert_eq!(created["status"], "pending", "status");
    assert_eq!(created["amount"], 2_500, "amount");
    assert_eq!(created["currency"], "XOF", "currency");
    assert_eq!(created["provider"], "tmoney", "provider");
    assert_eq!(
        created["recipient"],
        json!({ "msisdn": "+22890123456", "name": "Kossi Mensah", "country_code": 228 }),
        "recipient"
    );
    assert_eq!(created["reference"], "invoice 42", "reference");
    assert!(created["provider_ref"].is_null(), "provider_ref is null");
    assert!(created["failure_code"].is_null(), "failure_code is null");
    assert!(created["created_at"].is_string(), "created_at");
    assert!(created["updated_at"].is_string(), "updated_at");

    let reply = app
        .get(
            &format!("/v1/payouts/{}", payout_id(&created)),
            &client.token,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "GET: {:?}", reply.body);
    assert_eq!(
        reply.content_type(),
        Some("application/json"),
        "content type of GET"
    );
    let mut created_fields: Vec<&String> = created.as_object().expect("object").keys().collect();
    let mut read_fields: Vec<&String> = reply.body.as_object().expect("object").keys().collect();
    created_fields.sort();
    read_fields.sort();
    assert_eq!(
        read_fields, created_fields,
        "GET and POST have the same fields"
    );
    for field in PAYOUT_FIELDS {
        assert_eq!(
            reply.body.get(field),
            created.get(field),
            "GET and POST differ in {field}"
        );
    }
}

#[tokio::test]
async fn other_client_gets_404() {
    let app = spawn_app().await;
    let (admin, owner) = app.funded_client(100_000, "XOF").await;
    let stranger = app.create_client(&admin, "client").await;
    let created = create_payout(&app, &owner, "private", 1_000).await;
    let path = format!("/v1/payouts/{}", payout_id(&created));

    let reply = app.get(&path, &stranger.token).await;
    assert_problem(
        &reply,
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "another client's payout",
    );

    let (ids, _) = list_all(&app, &stranger, "limit=50").await;
    assert!(ids.is_empty(), "the stranger's list is empty, got {ids:?}");
}

#[tokio::test]
async fn auditor_and_admin_can_read() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;
    let operator = app.create_client(&admin, "operator").await;
    let created = create_payout(&app, &client, "audited", 1_000).await;
    let path = format!("/v1/payouts/{}", payout_id(&created));

    for (role, reader) in [("auditor", &auditor), ("admin", &admin)] {
        let reply = app.get(&path, &reader.token).await;
        assert_eq!(reply.status, StatusCode::OK, "{role}: {:?}", reply.body);
        assert_eq!(reply.body["id"], created["id"], "{role}: id");
        assert_eq!(
            reply.body["client_id"], created["client_id"],
            "{role}: client_id"
        );
    }

    let reply = app.get(&path, &operator.token).await;
    assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "operator reading a payout",
    );
}

#[tokio::test]
async fn list_pages_newest_first() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let other = app.create_client(&admin, "client").await;
    let deposit = app.deposit(&admin, other.client_id, 10_000, "XOF").await;
    assert_eq!(
        deposit.status,
        StatusCode::CREATED,
        "deposit for the other client"
    );
    let auditor = app.create_client(&admin, "auditor").await;

    let mut created = Vec::new();
    for index in 0..5 {
        let payout = create_payout(&app, &client, &format!("page-{index}"), 1_000 + index).await;
        created.push(payout_id(&payout));
    }
    let other_payout = payout_id(&create_payout(&app, &other, "other-0", 1_000).await);
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let (ids, pages) = list_all(&app, &client, "limit=2").await;
    assert_eq!(pages, 3, "5 payouts in pages of 2");
    assert_eq!(ids, newest_first, "every own payout once, newest first");
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no payout is listed twice");

    let (ids, _) = list_all(&app, &client, "status=pending&limit=2").await;
    assert_eq!(
        ids, newest_first,
        "status=pending lists every pending payout"
    );

    let (ids, pages) = list_all(&app, &client, "status=succeeded").await;
    assert!(
        ids.is_empty(),
        "status=succeeded lists nothing, got {ids:?}"
    );
    assert_eq!(pages, 1, "an empty list is one page");

    let (ids, _) = list_all(&app, &client, "limit=5").await;
    assert_eq!(ids, newest_first, "a page exactly as large as the list");

    let (ids, _) = list_all(&app, &auditor, "limit=4").await;
    assert_eq!(ids.len(), 6, "the auditor sees every client's payouts");
    assert_eq!(
        ids[0], other_payout,
        "the auditor's list starts with the newest"
    );

    let (ids, _) = list_all(
        &app,
        &auditor,
        &format!("client_id={}&limit=2", client.client_id),
    )
    .await;
    assert_eq!(ids, newest_first, "the auditor filters by client_id");
}

#[tokio::test]
async fn list_rejects_invalid_parameters() {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;
    create_payout(&app, &client, "listed", 1_000).await;
    let own_filter = format!("client_id={}", client.client_id);

    let cases = [
        ("unknown status", "status=done", "status"),
        ("uppercase status", "status=PENDING", "status"),
        ("zero limit", "limit=0", "limit"),
        ("limit above 200", "limit=201", "limit"),
        ("negative limit", "limit=-1", "limit"),
        ("limit not a number", "limit=ten", "limit"),
        ("cursor not base64", "cursor=%25%25%25", "cursor"),
        // base64url of "x:y": decodable, but neither part parses.
        ("cursor of the wrong content", "cursor=eDp5", "cursor"),
        ("client passes client_id", own_filter.as_str(), "client_id"),
    ];
    for (case, query, field) in cases {
        let reply = app
            .get(&format!("/v1/payouts?{query}"), &client.token)
            .await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-error",
            case,
        );
        assert_eq!(reply.body["field"], field, "{case}: field");
    }

    let reply = app
        .get("/v1/payouts?client_id=not-a-uuid", &auditor.token)
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/validation-error",
        "auditor passes a malformed client_id",
    );
    assert_eq!(reply.body["field"], "client_id", "auditor client_id field");

    let reply = app.get("/v1/payouts?state=pending", &client.token).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown parameter: {:?}",
        reply.body
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("state"),
        "unknown parameter: the detail names it, got {detail:?}"
    );

    let reply = app.get("/v1/payouts?limit=200", &client.token).await;
    assert_eq!(reply.status, StatusCode::OK, "limit=200 is accepted");
}

#[tokio::test]
async fn non_uuid_payout_id_is_404() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(100_000, "XOF").await;

    for id in ["not-a-uuid", "123", &Uuid::new_v4().to_string()] {
        let reply = app.get(&format!("/v1/payouts/{id}"), &client.token).await;
        assert_problem(
            &reply,
            StatusCode::NOT_FOUND,
            "/problems/not-found",
            &format!("payout id {id}"),
        );
    }
}

#[tokio::test]
async fn insufficient_funds_changes_nothing() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(1_000, "XOF").await;

    let reply = app
        .post_payout(&client, "too-much", &payout_body(1_001, "tmoney"))
        .await;

    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/insufficient-funds",
        "1001 from 1000",
    );
    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (1_000, 0),
        "balance (available, held)"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM payouts").await,
        0,
        "payouts rows"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE aggregate_type <> 'Client'")
            .await,
        1,
        "events besides the deposit and the ClientCreated events"
    );

    let reply = app
        .post_payout(&client, "other-currency", &{
            let mut body = payout_body(100, "tmoney");
            body["currency"] = json!("XAF");
            body
        })
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/insufficient-funds",
        "a currency without a wallet",
    );
}

#[tokio::test]
async fn exact_balance_payout_succeeds() {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(1_000, "XOF").await;

    create_payout(&app, &client, "everything", 1_000).await;

    assert_eq!(
        app.balance_of(&client, client.client_id, "XOF").await,
        (0, 1_000),
        "balance (available, held)"
    );
    let reply = app
        .post_payout(&client, "one-more", &payout_body(1, "tmoney"))
        .await;
    assert_problem(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/insufficient-funds",
        "1 from an empty wallet",
    );
}
