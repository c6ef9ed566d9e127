//! The event history for auditors: a global order that never skips or
//! repeats an event under concurrent writers, filters, payout history and
//! state as of a past moment.

use std::collections::HashSet;
use std::time::Duration;

use nepxy_api::store::audit::{self, EventFilter};
use nepxy_tests::{TestApp, fresh_database, payout_body, spawn_app, tmoney_report};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

/// Writers and events each in the concurrency test.
const WRITERS: usize = 24;
const EVENTS_PER_WRITER: usize = 5;

/// Appends one test event per transaction and sleeps before committing, so
/// transactions commit in another order than they took their positions.
async fn slow_writer(pool: PgPool, writer: usize) {
    for index in 0..EVENTS_PER_WRITER {
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('OrderTest', $1, $2, 'Written', '1', '{}', '{}')",
        )
        .bind(format!("writer-{writer}"))
        .bind(index as i64 + 1)
        .execute(&mut *tx)
        .await
        .expect("insert event");
        // Later writers and later events wait less, so positions taken early
        // often commit late.
        let delay_ms = ((WRITERS - writer) * 7 + (EVENTS_PER_WRITER - index) * 11) % 90;
        tokio::time::sleep(Duration::from_millis(delay_ms as u64)).await;
        tx.commit().await.expect("commit");
    }
}

#[tokio::test]
async fn concurrent_writers_read_exactly_once() {
    let pool = PgPool::connect(&fresh_database().await)
        .await
        .expect("connect");
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| tokio::spawn(slow_writer(pool.clone(), writer)))
        .collect();

    let mut seen = Vec::new();
    let mut filter = EventFilter {
        aggregate_type: Some("OrderTest".to_owned()),
        limit: 7,
        ..EventFilter::default()
    };
    let expected = WRITERS * EVENTS_PER_WRITER;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < expected && tokio::time::Instant::now() < deadline {
        let page = audit::events(&pool, &filter).await.expect("read a page");
        if let Some(last) = page.last() {
            filter.after = Some(last.position);
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen.extend(
            page.into_iter()
                .map(|event| (event.aggregate_id, event.sequence)),
        );
    }
    for writer in writers {
        writer.await.expect("writer finished");
    }
    // A last read after every writer committed finds nothing new.
    let rest = audit::events(&pool, &filter).await.expect("final page");
    seen.extend(
        rest.into_iter()
            .map(|event| (event.aggregate_id, event.sequence)),
    );

    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no event is read twice");
    assert_eq!(seen.len(), expected, "every event is read");
}

/// The hazard made deterministic: a transaction takes a position, a later
/// one commits first. A reader that follows positions alone skips the early
/// one forever; the audit reader holds the later one back until the early
/// transaction ends, then returns both.
#[tokio::test]
async fn late_commit_is_not_skipped() {
    let pool = PgPool::connect(&fresh_database().await)
        .await
        .expect("connect");
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                  VALUES ('OrderTest', $1, 1, 'Written', '1', '{}', '{}')";

    let mut early = pool.begin().await.expect("begin early");
    sqlx::query(insert)
        .bind("early")
        .execute(&mut *early)
        .await
        .expect("early insert");
    let mut late = pool.begin().await.expect("begin late");
    sqlx::query(insert)
        .bind("late")
        .execute(&mut *late)
        .await
        .expect("late insert");
    late.commit().await.expect("late commits first");

    let filter = EventFilter {
        aggregate_type: Some("OrderTest".to_owned()),
        limit: 100,
        ..EventFilter::default()
    };
    let naive_first: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, global_position FROM events WHERE aggregate_type = 'OrderTest' ORDER BY global_position",
    )
    .fetch_all(&pool)
    .await
    .expect("naive read");
    assert_eq!(naive_first.len(), 1, "only the late event is visible");
    let naive_checkpoint = naive_first[0].1;
    let held_back = audit::events(&pool, &filter).await.expect("audit read");
    assert!(
        held_back.is_empty(),
        "the audit reader waits for the early transaction"
    );

    early.commit().await.expect("early commits");
    let naive_next: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, global_position FROM events WHERE aggregate_type = 'OrderTest' \
         AND global_position > $1 ORDER BY global_position",
    )
    .bind(naive_checkpoint)
    .fetch_all(&pool)
    .await
    .expect("naive read after");
    assert!(
        naive_next.is_empty(),
        "a position-only reader has skipped the early event"
    );

    // Transactions of other tests on the same server also hold the horizon
    // back for a moment, so the reader polls.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut both: Vec<String> = Vec::new();
    while both.len() < 2 && tokio::time::Instant::now() < deadline {
        both = audit::events(&pool, &filter)
            .await
            .expect("audit read after")
            .into_iter()
            .map(|event| event.aggregate_id)
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        both,
        vec!["early".to_owned(), "late".to_owned()],
        "both events, in transaction order"
    );
}

/// A transaction left open in another database of the same server does not
/// hold back this database's feed: only this database's writers can add
/// events to its table.
#[tokio::test]
async fn other_database_does_not_hold_feed() {
    let pool = PgPool::connect(&fresh_database().await)
        .await
        .expect("connect");
    let other = PgPool::connect(&fresh_database().await)
        .await
        .expect("connect to the other database");
    let mut open = other.begin().await.expect("begin in the other database");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('OrderTest', 'elsewhere', 1, 'Written', '1', '{}', '{}')",
    )
    .execute(&mut *open)
    .await
    .expect("insert in the other database");

    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('OrderTest', 'here', 1, 'Written', '1', '{}', '{}')",
    )
    .execute(&pool)
    .await
    .expect("insert here");
    let filter = EventFilter {
        aggregate_type: Some("OrderTest".to_owned()),
        limit: 10,
        ..EventFilter::default()
    };
    // Other tests' short transactions in this database may delay the read
    // for a moment; the open transaction elsewhere must not delay it at all.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen.is_empty() && tokio::time::Instant::now() < deadline {
        seen = audit::events(&pool, &filter).await.expect("audit read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open_xid: Option<String> =
        sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::text")
            .fetch_one(&mut *open)
            .await
            .expect("xid of the open transaction");
    assert!(open_xid.is_some(), "the other transaction holds an id");
    assert_eq!(seen.len(), 1, "the committed event is read: {seen:?}");
    assert_eq!(seen[0].aggregate_id, "here");
    open.rollback().await.expect("rollback");
}

async fn auditor_token(
    app: &TestApp,
) -> (
    nepxy_tests::Caller,
    nepxy_tests::Caller,
    nepxy_tests::Caller,
) {
    let (admin, client) = app.funded_client(50_000, "XOF").await;
    let auditor = app.create_client(&admin, "auditor").await;
    (admin, client, auditor)
}

fn items(reply: &nepxy_tests::Reply) -> Vec<Value> {
    reply.body["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn audit_feed_pages_with_metadata() {
    let app = spawn_app().await;
    let (_admin, client, auditor) = auditor_token(&app).await;
    for key in ["audit-1", "audit-2", "audit-3"] {
        let reply = app
            .post_payout(&client, key, &payout_body(1_000, "momo"))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }

    let forbidden = app.get("/v1/audit/events", &client.token).await;
    assert_eq!(
        forbidden.status,
        StatusCode::FORBIDDEN,
        "clients cannot read the audit feed"
    );

    // Pages of two, resuming from last_cursor at the end of the feed: other
    // tests' transactions on the same server can hold events back briefly.
    let mut cursor: Option<String> = None;
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < 10 && tokio::time::Instant::now() < deadline {
        let path = match &cursor {
            Some(cursor) => format!("/v1/audit/events?limit=2&cursor={cursor}"),
            None => "/v1/audit/events?limit=2".to_owned(),
        };
        let reply = app.get(&path, &auditor.token).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        events.extend(items(&reply));
        if let Some(last) = reply.body["last_cursor"].as_str() {
            cursor = Some(last.to_owned());
        }
        if reply.body["next_cursor"].is_null() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        events.len(),
        10,
        "three ClientCreated, one deposit, three reserves, three payouts"
    );
    let payout_event = events
        .iter()
        .find(|event| event["event_type"] == "PayoutRequested")
        .expect("a PayoutRequested event");
    assert_eq!(payout_event["metadata"]["source"], "api");
    assert_eq!(
        payout_event["metadata"]["actor"]["subject"],
        client.client_id.to_string()
    );
    assert!(
        payout_event["metadata"]["request_id"].is_string(),
        "request id recorded"
    );
    assert_eq!(payout_event["event_version"], "2");

    let filtered = app
        .get("/v1/audit/events?event_type=FundsReserved", &auditor.token)
        .await;
    assert_eq!(items(&filtered).len(), 3, "filter on event type");
    let bad = app
        .get("/v1/audit/events?cursor=%21%21", &auditor.token)
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
    assert_eq!(bad.body["field"], "cursor");
}

#[tokio::test]
async fn payout_history_includes_webhooks() {
    let app = spawn_app().await;
    let (_admin, client, auditor) = auditor_token(&app).await;
    let created = app
        .post_payout(&client, "history", &payout_body(2_000, "tmoney"))
        .await;
    let payout_id = created.body["id"].as_str().expect("payout id").to_owned();
    let delivered = app
        .send_tmoney(&tmoney_report(&payout_id, "SUCCESS", 2_000, "XOF"))
        .await;
    assert_eq!(delivered.status, StatusCode::OK, "{:?}", delivered.body);

    let history = app
        .get(
            &format!("/v1/audit/payouts/{payout_id}/history"),
            &auditor.token,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK, "{:?}", history.body);
    let types: Vec<&str> = history.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["event_type"].as_str())
        .collect();
    assert_eq!(
        types,
        vec![
            "FundsReserved",
            "PayoutRequested",
            "PayoutSucceeded",
            "FundsSettled"
        ],
        "the payout's and its wallet's events in order"
    );
    let webhooks = history.body["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 1, "the delivery that settled it");
    assert_eq!(webhooks[0]["id"], delivered.body["webhook_id"]);
    assert_eq!(webhooks[0]["verdict"], "applied");
}

#[tokio::test]
async fn state_as_of_past_moment() {
    let app = spawn_app().await;
    let (_admin, client, auditor) = auditor_token(&app).await;
    let created = app
        .post_payout(&client, "as-of", &payout_body(5_000, "tmoney"))
        .await;
    let payout_id = created.body["id"].as_str().expect("payout id").to_owned();

    tokio::time::sleep(Duration::from_millis(20)).await;
    let before_outcome = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let delivered = app
        .send_tmoney(&tmoney_report(&payout_id, "SUCCESS", 5_000, "XOF"))
        .await;
    assert_eq!(delivered.status, StatusCode::OK, "{:?}", delivered.body);

    let as_of = before_outcome.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let encoded = as_of.replace('+', "%2B");
    let then = app
        .get(
            &format!("/v1/payouts/{payout_id}?as_of={encoded}"),
            &client.token,
        )
        .await;
    assert_eq!(then.status, StatusCode::OK, "{:?}", then.body);
    assert_eq!(
        then.body["status"], "pending",
        "the payout was pending then"
    );
    let now = app
        .get(&format!("/v1/payouts/{payout_id}"), &client.token)
        .await;
    assert_eq!(now.body["status"], "succeeded");

    let balance_then = app
        .get(
            &format!("/v1/accounts/{}/balance?as_of={encoded}", client.client_id),
            &auditor.token,
        )
        .await;
    assert_eq!(
        balance_then.status,
        StatusCode::OK,
        "{:?}",
        balance_then.body
    );
    assert_eq!(balance_then.body["balances"][0]["available"], 45_000);
    assert_eq!(
        balance_then.body["balances"][0]["held"], 5_000,
        "still held then"
    );
    let balance_now = app
        .get(
            &format!("/v1/accounts/{}/balance", client.client_id),
            &auditor.token,
        )
        .await;
    assert_eq!(balance_now.body["balances"][0]["held"], 0, "settled now");

    let before_everything = "2000-01-01T00:00:00Z";
    let missing = app
        .get(
            &format!("/v1/payouts/{payout_id}?as_of={before_everything}"),
            &client.token,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{:?}", missing.body);
    let invalid = app
        .get(
            &format!("/v1/payouts/{payout_id}?as_of=yesterday"),
            &client.token,
        )
        .await;
    assert_eq!(
        invalid.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        invalid.body
    );
    assert_eq!(invalid.body["field"], "as_of");
}
