//! The operator endpoints of the webhook inbox: listing, showing and
//! replaying stored deliveries, and who may use them.

use std::collections::HashSet;

use chrono::{SecondsFormat, Utc};
use nepxy_tests::{
    Caller, Reply, TestApp, assert_problem, spawn_app, thunes_report, tmoney_headers,
    tmoney_report, tmoney_signature, unix_now, webhook_id_of,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

const AMOUNT: i64 = 2_500;

/// Fields of a delivery as GET /v1/webhooks/{id} and the list return it.
const DELIVERY_FIELDS: [&str; 15] = [
    "id",
    "provider",
    "received_at",
    "peer_addr",
    "method",
    "path",
    "headers",
    "body_base64",
    "body_text",
    "body_size",
    "verdict",
    "reason",
    "payout_id",
    "report",
    "updated_at",
];

/// A server with a funded client and one caller per staff role.
struct Staff {
    app: TestApp,
    admin: Caller,
    client: Caller,
    operator: Caller,
    auditor: Caller,
}

async fn setup() -> Staff {
    let app = spawn_app().await;
    let (admin, client) = app.funded_client(100_000, "XOF").await;
    let operator = app.create_client(&admin, "operator").await;
    let auditor = app.create_client(&admin, "auditor").await;
    Staff {
        app,
        admin,
        client,
        operator,
        auditor,
    }
}

async fn replay(app: &TestApp, caller: &Caller, webhook_id: &str, body: &Value) -> Reply {
    app.send(
        Method::POST,
        &format!("/v1/webhooks/{webhook_id}/replay"),
        Some(&caller.token),
        &[],
        Some(body),
    )
    .await
}

/// Sends a TMoney SUCCESS report for a payout id that no payout has yet.
async fn send_orphan(app: &TestApp, payout_id: Uuid) -> Uuid {
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

/// Returns the ids of one list page, newest first, and its next_cursor.
async fn list_page(app: &TestApp, reader: &Caller, query: &str) -> (Vec<String>, Option<String>) {
    let reply = app
        .get(&format!("/v1/webhooks?{query}"), &reader.token)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "list ?{query}: {:?}",
        reply.body
    );
    let ids = reply.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("list ?{query}: items is not an array"))
        .iter()
        .map(|item| item["id"].as_str().expect("item id").to_owned())
        .collect();
    let next = reply.body["next_cursor"].as_str().map(str::to_owned);
    (ids, next)
}

fn rfc3339(time: chrono::DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn ids(list: &[Uuid]) -> Vec<String> {
    list.iter().map(Uuid::to_string).collect()
}

#[tokio::test]
async fn list_filters() {
    let staff = setup().await;
    let app = &staff.app;
    let tmoney_payout = app
        .create_payout(&staff.client, "tm", AMOUNT, "tmoney")
        .await;
    let thunes_payout = app
        .create_payout(&staff.client, "th", AMOUNT, "thunes")
        .await;

    let applied = webhook_id_of(
        &app.send_tmoney(&tmoney_report(
            &tmoney_payout.to_string(),
            "SUCCESS",
            AMOUNT,
            "XOF",
        ))
        .await,
    );
    let orphan = send_orphan(app, Uuid::new_v4()).await;
    let middle = Utc::now();
    let thunes = webhook_id_of(
        &app.send_thunes(&thunes_report(
            &thunes_payout.to_string(),
            json!(70000),
            json!(7),
            AMOUNT,
            "XOF",
        ))
        .await,
    );
    let body = tmoney_report(&tmoney_payout.to_string(), "FAILED", AMOUNT, "XOF");
    let mut headers = tmoney_headers(body.as_bytes());
    headers.retain(|(name, _)| name != "x-signature");
    headers.push(("x-signature".to_owned(), "0".repeat(64)));
    let rejected_reply = app
        .send_webhook("/v1/webhooks/tmoney", &headers, body.into_bytes())
        .await;
    assert_eq!(
        rejected_reply.status,
        StatusCode::UNAUTHORIZED,
        "bad signature"
    );
    let rejected = app.latest_delivery().await.webhook_id;
    let end = Utc::now();

    let from_middle = format!("from={}", rfc3339(middle));
    let to_middle = format!("to={}", rfc3339(middle));
    let middle_to_end = format!("from={}&to={}", rfc3339(middle), rfc3339(end));
    let from_end = format!("from={}", rfc3339(end));
    let cases: [(&str, Vec<String>); 12] = [
        ("", ids(&[rejected, thunes, orphan, applied])),
        ("provider=tmoney", ids(&[rejected, orphan, applied])),
        ("provider=thunes", ids(&[thunes])),
        ("provider=momo", vec![]),
        ("verdict=orphan", ids(&[orphan])),
        ("verdict=rejected", ids(&[rejected])),
        ("verdict=applied", ids(&[thunes, applied])),
        ("provider=tmoney&verdict=applied", ids(&[applied])),
        (&from_middle, ids(&[rejected, thunes])),
        (&to_middle, ids(&[orphan, applied])),
        (&middle_to_end, ids(&[rejected, thunes])),
        (&from_end, vec![]),
    ];
    for (query, expected) in cases {
        let (listed, next) = list_page(app, &staff.auditor, query).await;
        assert_eq!(listed, expected, "?{query}: ids, newest first");
        assert_eq!(next, None, "?{query}: a single page");
    }

    for (query, field) in [
        ("provider=paypal", "provider"),
        ("verdict=lost", "verdict"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let reply = app
            .get(&format!("/v1/webhooks?{query}"), &staff.auditor.token)
            .await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-error",
            query,
        );
        assert_eq!(reply.body["field"], field, "?{query}: field");
    }
}

#[tokio::test]
async fn list_cursor_pages() {
    let staff = setup().await;
    let mut sent = HashSet::new();
    for _ in 0..7 {
        sent.insert(send_orphan(&staff.app, Uuid::new_v4()).await.to_string());
    }

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut query = "limit=2".to_owned();
    loop {
        let (page, next) = list_page(&staff.app, &staff.operator, &query).await;
        pages += 1;
        assert!(page.len() <= 2, "page {pages} has {} items", page.len());
        seen.extend(page);
        match next {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }

    assert_eq!(pages, 4, "7 deliveries in pages of 2");
    assert_eq!(seen.len(), 7, "every delivery is listed once: {seen:?}");
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique, sent, "the listed ids are the sent ones");
}

#[tokio::test]
async fn show_shape() {
    let staff = setup().await;
    let payout_id = staff
        .app
        .create_payout(&staff.client, "p", AMOUNT, "tmoney")
        .await;
    let body = tmoney_report(&payout_id.to_string(), "SUCCESS", AMOUNT, "XOF");
    let reply = staff.app.send_tmoney(&body).await;
    let webhook_id = webhook_id_of(&reply);

    let show_reply = staff
        .app
        .get(&format!("/v1/webhooks/{webhook_id}"), &staff.auditor.token)
        .await;

    assert_eq!(
        show_reply.status,
        StatusCode::OK,
        "show: {:?}",
        show_reply.body
    );
    let object = show_reply.body.as_object().expect("a JSON object");
    let keys: HashSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(DELIVERY_FIELDS), "fields");
    let delivery = &show_reply.body;
    assert_eq!(delivery["id"], webhook_id.to_string(), "id");
    assert_eq!(delivery["provider"], "tmoney", "provider");
    assert_eq!(delivery["method"], "POST", "method");
    assert_eq!(delivery["path"], "/v1/webhooks/tmoney", "path");
    assert!(
        delivery["peer_addr"]
            .as_str()
            .is_some_and(|peer| peer.starts_with("127.0.0.1:")),
        "peer_addr is the loopback client: {:?}",
        delivery["peer_addr"]
    );
    assert_eq!(delivery["body_text"], body, "body_text");
    assert_eq!(delivery["body_size"], body.len(), "body_size");
    assert!(delivery["body_base64"].is_string(), "body_base64");
    assert_eq!(delivery["verdict"], "applied", "verdict");
    assert!(
        delivery["reason"].is_string(),
        "reason describes the verdict"
    );
    assert_eq!(delivery["payout_id"], payout_id.to_string(), "payout_id");
    for time in ["received_at", "updated_at"] {
        assert!(
            delivery[time]
                .as_str()
                .is_some_and(|text| chrono::DateTime::parse_from_rfc3339(text).is_ok()),
            "{time} is RFC 3339: {:?}",
            delivery[time]
        );
    }

    let headers = delivery["headers"].as_array().expect("headers array");
    assert!(
        headers
            .iter()
            .all(|pair| pair.as_array().is_some_and(|pair| pair.len() == 2)),
        "headers are [name, value] pairs: {headers:?}"
    );
    assert!(
        headers.contains(&json!(["content-type", "application/json"])),
        "content-type is stored: {headers:?}"
    );

    let report = &delivery["report"];
    assert_eq!(report["provider"], "tmoney", "report.provider");
    assert_eq!(
        report["external_ref"],
        payout_id.to_string(),
        "report.external_ref"
    );
    assert_eq!(report["status"], "succeeded", "report.status");
    assert_eq!(report["raw_status"], "SUCCESS", "report.raw_status");
    assert_eq!(report["amount_minor"], AMOUNT, "report.amount_minor");
    assert_eq!(report["currency"], "XOF", "report.currency");

    for missing in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let reply = staff
            .app
            .get(&format!("/v1/webhooks/{missing}"), &staff.auditor.token)
            .await;
        assert_problem(
            &reply,
            StatusCode::NOT_FOUND,
            "/problems/not-found",
            &missing,
        );
    }
}

#[tokio::test]
async fn roles_enforced() {
    let staff = setup().await;
    let webhook_id = send_orphan(&staff.app, Uuid::new_v4()).await.to_string();
    let list = "/v1/webhooks".to_owned();
    let show = format!("/v1/webhooks/{webhook_id}");
    let replay_body = json!({ "reason": "role check" });

    for path in [&list, &show] {
        let reply = staff.app.get(path, &staff.client.token).await;
        assert_problem(
            &reply,
            StatusCode::FORBIDDEN,
            "/problems/forbidden",
            &format!("client GET {path}"),
        );
        let reply = staff.app.send(Method::GET, path, None, &[], None).await;
        assert_problem(
            &reply,
            StatusCode::UNAUTHORIZED,
            "/problems/unauthorized",
            &format!("anonymous GET {path}"),
        );
        for reader in [&staff.auditor, &staff.operator, &staff.admin] {
            let reply = staff.app.get(path, &reader.token).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "staff GET {path}: {:?}",
                reply.body
            );
        }
    }

    let reply = replay(&staff.app, &staff.client, &webhook_id, &replay_body).await;
    assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "client replay",
    );
    let reply = replay(&staff.app, &staff.auditor, &webhook_id, &replay_body).await;
    assert_problem(
        &reply,
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "auditor replay",
    );
    assert_eq!(
        staff
            .app
            .count("SELECT count(*) FROM webhook_replays")
            .await,
        0,
        "forbidden replays are not recorded"
    );

    for replayer in [&staff.operator, &staff.admin] {
        let reply = replay(&staff.app, replayer, &webhook_id, &replay_body).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "staff replay: {:?}",
            reply.body
        );
        assert_eq!(reply.body["verdict"], "orphan", "still no payout: verdict");
    }
}

#[tokio::test]
async fn replay_requires_reason() {
    let staff = setup().await;
    let webhook_id = send_orphan(&staff.app, Uuid::new_v4()).await.to_string();

    for (case, body) in [
        ("no reason", json!({})),
        ("null reason", json!({ "reason": null })),
        ("blank reason", json!({ "reason": "   " })),
        ("dry run without reason", json!({ "dry_run": true })),
        ("501 characters", json!({ "reason": "r".repeat(501) })),
    ] {
        let reply = replay(&staff.app, &staff.operator, &webhook_id, &body).await;
        assert_problem(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/validation-error",
            case,
        );
        assert_eq!(reply.body["field"], "reason", "{case}: field");
    }
    assert_eq!(
        staff
            .app
            .count("SELECT count(*) FROM webhook_replays")
            .await,
        0,
        "invalid replays are not recorded"
    );
}

#[tokio::test]
async fn replay_unknown_404() {
    let staff = setup().await;
    for missing in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let reply = replay(
            &staff.app,
            &staff.operator,
            &missing,
            &json!({ "reason": "check" }),
        )
        .await;
        assert_problem(
            &reply,
            StatusCode::NOT_FOUND,
            "/problems/not-found",
            &missing,
        );
    }
}

#[tokio::test]
async fn replay_applied_is_duplicate() {
    let staff = setup().await;
    let payout_id = staff
        .app
        .create_payout(&staff.client, "p", AMOUNT, "tmoney")
        .await;
    let reply = staff
        .app
        .send_tmoney(&tmoney_report(
            &payout_id.to_string(),
            "SUCCESS",
            AMOUNT,
            "XOF",
        ))
        .await;
    assert_eq!(
        reply.body["verdict"], "applied",
        "first delivery: {:?}",
        reply.body
    );
    let webhook_id = webhook_id_of(&reply);
    let events_before = staff.app.event_count().await;

    let replayed = replay(
        &staff.app,
        &staff.operator,
        &webhook_id.to_string(),
        &json!({ "reason": "provider asked us to re-check" }),
    )
    .await;

    assert_eq!(
        replayed.status,
        StatusCode::OK,
        "replay: {:?}",
        replayed.body
    );
    assert_eq!(replayed.body["verdict"], "duplicate", "replay verdict");
    assert_eq!(
        replayed.body["events"],
        json!([]),
        "replay writes no events"
    );
    assert_eq!(
        staff.app.event_count().await,
        events_before + 1,
        "only the record of the replay"
    );
    assert_eq!(
        staff.app.payout_status(&staff.client, payout_id).await,
        "succeeded",
        "payout status"
    );

    let (actor, reason, dry_run, verdict): (String, String, bool, String) = sqlx::query_as(
        "SELECT actor, reason, dry_run, verdict FROM webhook_replays WHERE webhook_id = $1",
    )
    .bind(webhook_id)
    .fetch_one(&staff.app.pool)
    .await
    .expect("one replay row");
    assert_eq!(actor, staff.operator.client_id.to_string(), "replay actor");
    assert_eq!(reason, "provider asked us to re-check", "replay reason");
    assert!(!dry_run, "replay is not a dry run");
    assert_eq!(verdict, "duplicate", "recorded replay verdict");
}

#[tokio::test]
async fn replay_events_metadata() {
    let staff = setup().await;
    let key = "late-payout";
    let payout_id = nepxy_ledger::ids::payout_id(staff.client.client_id, key);
    let webhook_id = send_orphan(&staff.app, payout_id).await;
    staff
        .app
        .create_payout(&staff.client, key, AMOUNT, "tmoney")
        .await;
    let last_position: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&staff.app.pool)
        .await
        .expect("last event position");

    let replayed = replay(
        &staff.app,
        &staff.operator,
        &webhook_id.to_string(),
        &json!({ "reason": "payout created after the report" }),
    )
    .await;
    assert_eq!(
        replayed.status,
        StatusCode::OK,
        "replay: {:?}",
        replayed.body
    );
    assert_eq!(replayed.body["verdict"], "applied", "replay verdict");

    let written: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, metadata::jsonb FROM events WHERE global_position > $1 \
         ORDER BY global_position",
    )
    .bind(last_position)
    .fetch_all(&staff.app.pool)
    .await
    .expect("events written by the replay");
    let types: Vec<&str> = written.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        types,
        ["PayoutSucceeded", "FundsSettled", "DeliveryReplayed"],
        "events written: the outcome, then the record of the replay"
    );
    assert_eq!(
        replayed.body["events"],
        json!(["PayoutSucceeded", "FundsSettled"]),
        "the answer lists the events the report wrote"
    );
    for (kind, metadata) in &written {
        assert_eq!(metadata["source"], "replay", "{kind}: source");
        assert_eq!(
            metadata["actor"]["subject"],
            staff.operator.client_id.to_string(),
            "{kind}: actor subject"
        );
        assert_eq!(metadata["actor"]["role"], "operator", "{kind}: actor role");
        assert_eq!(
            metadata["reason"], "payout created after the report",
            "{kind}: reason"
        );
        assert_eq!(
            metadata["webhook_id"],
            webhook_id.to_string(),
            "{kind}: webhook_id"
        );
    }
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let staff = setup().await;
    let key = "dry-run-payout";
    let payout_id = nepxy_ledger::ids::payout_id(staff.client.client_id, key);
    let webhook_id = send_orphan(&staff.app, payout_id).await;
    staff
        .app
        .create_payout(&staff.client, key, AMOUNT, "tmoney")
        .await;
    let events_before = staff.app.event_count().await;

    let dry = replay(
        &staff.app,
        &staff.operator,
        &webhook_id.to_string(),
        &json!({ "reason": "check before applying", "dry_run": true }),
    )
    .await;

    assert_eq!(dry.status, StatusCode::OK, "dry run: {:?}", dry.body);
    assert_eq!(dry.body["verdict"], "applied", "dry run: would-be verdict");
    assert_eq!(
        dry.body["events"],
        json!(["PayoutSucceeded", "FundsSettled"]),
        "dry run: events it would write"
    );
    assert_eq!(
        staff.app.event_count().await,
        events_before + 1,
        "dry run: only the record of the replay"
    );
    let audit = staff
        .app
        .get(
            "/v1/audit/events?event_type=DeliveryReplayed",
            &staff.auditor.token,
        )
        .await;
    assert_eq!(audit.status, StatusCode::OK, "{:?}", audit.body);
    let recorded = &audit.body["items"][0];
    assert_eq!(recorded["aggregate_type"], "WebhookDelivery");
    assert_eq!(recorded["aggregate_id"], webhook_id.to_string());
    let replayed = &recorded["payload"]["DeliveryReplayed"];
    assert_eq!(replayed["dry_run"], true, "{recorded}");
    assert_eq!(replayed["verdict"], "applied", "{recorded}");
    assert_eq!(recorded["metadata"]["reason"], "check before applying");
    assert_eq!(
        recorded["metadata"]["actor"]["subject"],
        staff.operator.client_id.to_string()
    );
    assert!(recorded["metadata"]["request_id"].is_string(), "{recorded}");
    assert_eq!(
        staff.app.stored_delivery(webhook_id).await.verdict,
        "orphan",
        "dry run: stored verdict"
    );
    assert_eq!(
        staff.app.payout_status(&staff.client, payout_id).await,
        "pending",
        "dry run: payout status"
    );
    let dry_runs = staff
        .app
        .count("SELECT count(*) FROM webhook_replays WHERE dry_run")
        .await;
    assert_eq!(dry_runs, 1, "the dry run is recorded as one");

    let real = replay(
        &staff.app,
        &staff.operator,
        &webhook_id.to_string(),
        &json!({ "reason": "apply after the dry run" }),
    )
    .await;

    assert_eq!(real.status, StatusCode::OK, "replay: {:?}", real.body);
    assert_eq!(real.body["verdict"], "applied", "replay verdict");
    assert_eq!(
        staff.app.event_count().await,
        events_before + 4,
        "replay events: two records of replays, the outcome and the settlement"
    );
    assert_eq!(
        staff.app.payout_status(&staff.client, payout_id).await,
        "succeeded",
        "payout status after replay"
    );
}

#[tokio::test]
async fn replay_rejected_conflict() {
    let staff = setup().await;
    let payout_id = staff
        .app
        .create_payout(&staff.client, "p", AMOUNT, "tmoney")
        .await;
    let body = tmoney_report(&payout_id.to_string(), "SUCCESS", AMOUNT, "XOF");
    let mut headers = tmoney_headers(body.as_bytes());
    headers.retain(|(name, _)| name != "x-signature");
    headers.push(("x-signature".to_owned(), "ab".repeat(32)));
    let reply = staff
        .app
        .send_webhook("/v1/webhooks/tmoney", &headers, body.into_bytes())
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "bad signature");
    let webhook_id = staff.app.latest_delivery().await.webhook_id;
    let events_before = staff.app.event_count().await;

    let replayed = replay(
        &staff.app,
        &staff.operator,
        &webhook_id.to_string(),
        &json!({ "reason": "try anyway" }),
    )
    .await;

    assert_problem(
        &replayed,
        StatusCode::CONFLICT,
        "/problems/conflict",
        "replay of a forgery",
    );
    assert_eq!(
        staff.app.stored_delivery(webhook_id).await.verdict,
        "rejected",
        "stored verdict"
    );
    assert_eq!(
        staff.app.event_count().await,
        events_before + 1,
        "only the record of the replay"
    );
    let recorded: String =
        sqlx::query_scalar("SELECT verdict FROM webhook_replays WHERE webhook_id = $1")
            .bind(webhook_id)
            .fetch_one(&staff.app.pool)
            .await
            .expect("replay row");
    assert_eq!(recorded, "rejected", "recorded replay verdict");
}

#[tokio::test]
async fn replay_skips_freshness() {
    let staff = setup().await;
    let payout_id = staff
        .app
        .create_payout(&staff.client, "p", AMOUNT, "tmoney")
        .await;
    let body = tmoney_report(&payout_id.to_string(), "SUCCESS", AMOUNT, "XOF");
    let timestamp = (unix_now() - 3_600).to_string();
    let signature = tmoney_signature(
        nepxy_tests::TEST_TMONEY_SECRET.as_bytes(),
        &timestamp,
        "n-late",
        body.as_bytes(),
    );
    let headers = [
        ("x-timestamp".to_owned(), timestamp),
        ("x-nonce".to_owned(), "n-late".to_owned()),
        ("x-signature".to_owned(), signature),
    ];
    let reply = staff
        .app
        .send_webhook("/v1/webhooks/tmoney", &headers, body.into_bytes())
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "an hour old: {:?}",
        reply.body
    );
    let webhook_id = staff.app.latest_delivery().await.webhook_id;

    let replayed = replay(
        &staff.app,
        &staff.operator,
        &webhook_id.to_string(),
        &json!({ "reason": "delivery was delayed by the provider" }),
    )
    .await;

    assert_eq!(
        replayed.status,
        StatusCode::OK,
        "replay: {:?}",
        replayed.body
    );
    assert_eq!(replayed.body["verdict"], "applied", "replay verdict");
    assert_eq!(
        staff.app.payout_status(&staff.client, payout_id).await,
        "succeeded",
        "payout status"
    );
}

#[tokio::test]
async fn replay_oversized_conflict() {
    let staff = setup().await;
    let body = vec![b' '; 64 * 1024 + 1];
    let headers = tmoney_headers(&body);
    let reply = staff
        .app
        .send_webhook("/v1/webhooks/tmoney", &headers, body)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "oversized");
    let webhook_id = staff.app.latest_delivery().await.webhook_id;

    let replayed = replay(
        &staff.app,
        &staff.operator,
        &webhook_id.to_string(),
        &json!({ "reason": "see what happens" }),
    )
    .await;

    assert_problem(
        &replayed,
        StatusCode::CONFLICT,
        "/problems/conflict",
        "replay without a body",
    );
    assert_eq!(
        staff.app.stored_delivery(webhook_id).await.verdict,
        "oversized",
        "stored verdict"
    );
    let recorded = staff
        .app
        .count("SELECT count(*) FROM webhook_replays WHERE verdict = 'malformed'")
        .await;
    assert_eq!(
        recorded, 1,
        "the failed replay is recorded with its actor and reason"
    );
}
