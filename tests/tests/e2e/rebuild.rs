//! `nepxy-replay rebuild`: read models rebuilt from the events, compared row
//! by row with the live tables, and swapped in on request.

use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use nepxy_projections::fold::Fold;
use nepxy_projections::rebuild::{Chunks, READ_MODELS, compare, drop_shadow, rebuild_in_chunks};
use nepxy_projections::writes::Posting;
use nepxy_projections::{ProjectionError, Write, Writes};
use nepxy_tests::{TestApp, binary_path, fresh_database, payout_body, spawn_app, tmoney_report};
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

fn rebuild(app: &TestApp, args: &[&str]) -> Output {
    Command::new(binary_path("nepxy-replay"))
        .arg("rebuild")
        .args(args)
        .env("DATABASE_URL", &app.database_url)
        .output()
        .expect("run nepxy-replay rebuild")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn app_with_history() -> (TestApp, nepxy_tests::Caller) {
    let app = spawn_app().await;
    let (_admin, client) = app.funded_client(50_000, "XOF").await;
    for (key, provider) in [
        ("rebuild-1", "tmoney"),
        ("rebuild-2", "momo"),
        ("rebuild-3", "thunes"),
    ] {
        let reply = app
            .post_payout(&client, key, &payout_body(1_000, provider))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        if key == "rebuild-1" {
            let payout_id = reply.body["id"].as_str().expect("payout id").to_owned();
            let settled = app
                .send_tmoney(&tmoney_report(&payout_id, "SUCCESS", 1_000, "XOF"))
                .await;
            assert_eq!(settled.status, StatusCode::OK, "{:?}", settled.body);
        }
    }
    (app, client)
}

#[tokio::test]
async fn rebuild_matches_live_tables() {
    let (app, _client) = app_with_history().await;
    let output = rebuild(&app, &["--verify"]);
    let text = stdout(&output);
    assert!(output.status.success(), "rebuild --verify failed: {text}");
    for table in [
        "payouts",
        "wallet_balances",
        "journal_postings",
        "event_history",
        "wallet_holds",
        "wallet_deposits",
    ] {
        assert!(
            text.contains(&format!("{table}: identical")),
            "{table} differs: {text}"
        );
    }
    assert!(
        text.contains("from 9 events"),
        "every event replayed: {text}"
    );
    let shadow: bool = sqlx::query_scalar("SELECT to_regnamespace('rebuild') IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .expect("schema lookup");
    assert!(!shadow, "the shadow tables are dropped afterwards");
}

#[tokio::test]
async fn small_pages_and_batches_match() {
    let (app, _client) = app_with_history().await;
    // Two events per page splits aggregates across pages, and one byte per
    // batch makes every event's rows a batch and a transaction of their own.
    let chunks = Chunks {
        page_events: 2,
        batch_bytes: 1,
    };
    let mut reports = 0;
    let folded = rebuild_in_chunks(&app.pool, &READ_MODELS, chunks, |_, _| reports += 1)
        .await
        .expect("rebuild in small chunks");
    assert_eq!(folded, 9, "every event with read models is folded");
    assert!(reports >= 9, "progress after every batch: {reports}");

    let diffs = compare(&app.pool, &READ_MODELS).await.expect("compare");
    for diff in diffs {
        assert_eq!(
            diff.only_live_count, 0,
            "{}: rows missing from the rebuild: {:?}",
            diff.table, diff.only_live
        );
        assert_eq!(
            diff.only_rebuilt_count, 0,
            "{}: rows only in the rebuild: {:?}",
            diff.table, diff.only_rebuilt
        );
    }
    drop_shadow(&app.pool)
        .await
        .expect("drop the shadow tables");
}

#[tokio::test]
async fn drift_reported_and_swapped_away() {
    let (app, client) = app_with_history().await;
    sqlx::query("UPDATE wallet_balances SET available_minor = available_minor + 7")
        .execute(&app.pool)
        .await
        .expect("corrupt the read model");

    let output = rebuild(&app, &["--projection", "wallet_balances", "--verify"]);
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "drift must fail the check: {text}"
    );
    assert!(
        text.contains(
            "DIFF wallet_balances: 1 rows only in the live table, 1 only in the rebuilt one"
        ),
        "{text}"
    );
    assert!(
        text.contains("\"available_minor\": 47007") || text.contains("\"available_minor\":47007"),
        "the live row is shown: {text}"
    );

    let swapped = rebuild(&app, &["--projection", "wallet_balances", "--swap"]);
    assert!(
        swapped.status.success(),
        "swap failed: {}",
        stdout(&swapped)
    );
    assert!(
        stdout(&swapped).contains("swapped in the rebuilt wallet_balances"),
        "{}",
        stdout(&swapped)
    );
    let (available, held) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!(
        (available, held),
        (47_000, 2_000),
        "the balance is rebuilt from the events"
    );

    let again = rebuild(&app, &["--verify"]);
    assert!(
        again.status.success(),
        "clean after the swap: {}",
        stdout(&again)
    );

    // The service keeps writing to the swapped-in table.
    let reply = app
        .post_payout(&client, "after-swap", &payout_body(500, "tmoney"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let (available, _) = app.balance_of(&client, client.client_id, "XOF").await;
    assert_eq!(
        available, 46_500,
        "writes after the swap land in the new table"
    );
}

#[tokio::test]
async fn unknown_projection_is_rejected() {
    let app = spawn_app().await;
    let output = rebuild(&app, &["--projection", "balances"]);
    assert_eq!(output.status.code(), Some(2), "usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown projection \"balances\""),
        "{stderr}"
    );
}

/// Rewrites the PayoutRequested event of `payout_id` as version 1 stored it,
/// without `country_code`, labelled `version`.
async fn store_as_version_one(app: &TestApp, payout_id: &str, version: &str) {
    app.rewrite_events(&format!(
        "UPDATE events SET payload = (payload::jsonb #- '{{PayoutRequested,country_code}}')::json, \
             event_version = '{version}' \
         WHERE aggregate_type = 'Payout' AND aggregate_id = '{payout_id}' AND sequence = 1"
    ))
    .await;
}

async fn thunes_payout(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT payout_id::text FROM payouts WHERE provider = 'thunes'")
        .fetch_one(&app.pool)
        .await
        .expect("the Thunes payout")
}

#[tokio::test]
async fn version_one_event_is_upcast() {
    let (app, client) = app_with_history().await;
    let payout_id = thunes_payout(&app).await;
    store_as_version_one(&app, &payout_id, "1").await;
    let stored: String = sqlx::query_scalar(
        "SELECT payload::text FROM events \
         WHERE aggregate_type = 'Payout' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(&payout_id)
    .fetch_one(&app.pool)
    .await
    .expect("stored event");
    assert!(!stored.contains("country_code"), "{stored}");

    // The rebuild reads the version 1 event and must derive the same
    // country code that the live row got from the version 2 event.
    let output = rebuild(&app, &["--verify"]);
    let text = stdout(&output);
    assert!(output.status.success(), "rebuild --verify failed: {text}");
    assert!(text.contains("payouts: identical"), "{text}");
    assert!(text.contains("event_history: identical"), "{text}");

    // A point-in-time read decodes the same event.
    let now = chrono::Utc::now()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .replace('+', "%2B");
    let past = app
        .get(
            &format!("/v1/payouts/{payout_id}?as_of={now}"),
            &client.token,
        )
        .await;
    assert_eq!(past.status, StatusCode::OK, "{:?}", past.body);
    assert_eq!(past.body["recipient"]["country_code"], 228);

    // A command loads the aggregate through the same upcaster.
    let report = nepxy_tests::thunes_report(
        &payout_id,
        serde_json::json!(70000),
        serde_json::json!(7),
        1_000,
        "XOF",
    );
    let applied = app.send_thunes(&report).await;
    assert_eq!(applied.status, StatusCode::OK, "{:?}", applied.body);
    assert_eq!(applied.body["verdict"], "applied");
    let shown = app
        .get(&format!("/v1/payouts/{payout_id}"), &client.token)
        .await;
    assert_eq!(shown.body["status"], "succeeded");
    assert_eq!(shown.body["recipient"]["country_code"], 228);
}

#[tokio::test]
async fn mislabelled_version_is_reported() {
    let (app, _client) = app_with_history().await;
    let payout_id = thunes_payout(&app).await;
    // A version 1 payload labelled 2 skips the upcaster and cannot decode.
    store_as_version_one(&app, &payout_id, "2").await;
    let output = rebuild(&app, &["--verify"]);
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "rebuild accepted a mislabelled event"
    );
    assert!(
        errors.contains(&format!("Payout {payout_id} 1")),
        "the event is not named: {errors}"
    );
    assert!(errors.contains("country_code"), "{errors}");
}

/// Indexes of each read model in `schema`, as (table, definition) with the
/// schema left out, and the definitions without the index names when
/// `with_names` is false.
async fn index_definitions(pool: &PgPool, schema: &str, with_names: bool) -> Vec<(String, String)> {
    let mut definitions: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.relname::text, \
                CASE WHEN $2 THEN replace(pg_get_indexdef(i.indexrelid), $1 || '.', '') \
                     ELSE concat_ws(' ', CASE WHEN i.indisprimary THEN 'PRIMARY' END, \
                                    CASE WHEN i.indisunique THEN 'UNIQUE' END, \
                                    regexp_replace(pg_get_indexdef(i.indexrelid), '^.*? USING ', 'USING ')) \
                END \
         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
         WHERE t.relnamespace = $1::regnamespace AND t.relname = ANY($3)",
    )
    .bind(schema)
    .bind(with_names)
    .bind(READ_MODELS.to_vec())
    .fetch_all(pool)
    .await
    .expect("read index definitions");
    definitions.sort();
    definitions
}

/// Constraints of each read model in `schema`, as (table, name, definition).
async fn constraint_definitions(pool: &PgPool, schema: &str) -> Vec<(String, String, String)> {
    let mut definitions: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.relname::text, c.conname::text, pg_get_constraintdef(c.oid) \
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
         WHERE t.relnamespace = $1::regnamespace AND t.relname = ANY($2)",
    )
    .bind(schema)
    .bind(READ_MODELS.to_vec())
    .fetch_all(pool)
    .await
    .expect("read constraint definitions");
    definitions.sort();
    definitions
}

#[tokio::test]
async fn swapped_tables_keep_indexes() {
    let (app, _client) = app_with_history().await;
    let live_indexes = index_definitions(&app.pool, "public", false).await;
    let live_constraints = constraint_definitions(&app.pool, "public").await;
    // The shadow tables used to keep the indexes that CREATE TABLE ... LIKE
    // ... INCLUDING ALL gave them, names included.
    sqlx::query("CREATE SCHEMA like_live")
        .execute(&app.pool)
        .await
        .expect("create schema");
    for table in READ_MODELS {
        sqlx::query(&format!(
            "CREATE TABLE like_live.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&app.pool)
        .await
        .expect("create table");
    }
    let like_indexes = index_definitions(&app.pool, "like_live", true).await;
    assert!(
        like_indexes.len() >= 11,
        "every read model has its indexes: {like_indexes:?}"
    );

    let output = rebuild(&app, &["--swap"]);
    assert!(output.status.success(), "swap failed: {}", stdout(&output));

    assert_eq!(
        index_definitions(&app.pool, "public", true).await,
        like_indexes,
        "the swapped tables have the indexes that LIKE ... INCLUDING ALL gives"
    );
    assert_eq!(
        index_definitions(&app.pool, "public", false).await,
        live_indexes,
        "the swapped tables have the indexes of the replaced ones"
    );
    assert_eq!(
        constraint_definitions(&app.pool, "public").await,
        live_constraints,
        "the swapped tables have the constraints of the replaced ones"
    );
}

// The rebuild folds the writes in Rust and loads the rows with COPY. These
// tests send the same writes through `nepxy_apply_writes` into schema
// `by_sql` and through the fold into schema `by_fold`, and compare the rows.

const SQL_SCHEMA: &str = "by_sql";
const FOLD_SCHEMA: &str = "by_fold";
const SHADOWED: [&str; 9] = [
    "payouts",
    "wallet_balances",
    "journal_postings",
    "event_history",
    "wallet_holds",
    "wallet_deposits",
    "dispatch_queue",
    "notifications",
    "notification_endpoints",
];

async fn pool_with_schemas() -> PgPool {
    let pool = PgPool::connect(&fresh_database().await)
        .await
        .expect("connect");
    for schema in [SQL_SCHEMA, FOLD_SCHEMA] {
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .expect("create schema");
        for table in SHADOWED {
            sqlx::query(&format!(
                "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"
            ))
            .execute(&pool)
            .await
            .expect("create table");
        }
    }
    pool
}

/// Applies the writes of each aggregate in order through
/// `nepxy_apply_writes` into `by_sql`.
async fn apply_by_sql(pool: &PgPool, aggregates: &[Vec<Write>]) -> Result<(), ProjectionError> {
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query(&format!("SET search_path = {SQL_SCHEMA}, public"))
        .execute(&mut *conn)
        .await
        .expect("set search_path");
    let mut writes = Writes::default();
    for write in aggregates.iter().flatten() {
        writes.push(write.clone());
    }
    let result = writes.apply(&mut conn).await;
    conn.close().await.expect("close connection");
    result
}

/// Folds the writes of each aggregate in order and loads the rows into
/// `by_fold` with COPY.
async fn apply_by_fold(pool: &PgPool, aggregates: &[Vec<Write>]) -> Result<(), ProjectionError> {
    let mut fold = Fold::new();
    for aggregate in aggregates {
        for write in aggregate {
            fold.apply(write.clone())?;
        }
        fold.end_aggregate();
    }
    fold.finish();
    let mut conn = pool.acquire().await.expect("connection");
    for batch in fold.take_batches() {
        let loaded = batch.copy_into(&mut conn, FOLD_SCHEMA).await?;
        assert_eq!(
            loaded,
            batch.rows,
            "rows loaded into {}",
            batch.table.name()
        );
    }
    Ok(())
}

/// Counts the rows of `table` found in only one of the two schemas.
async fn differences(pool: &PgPool, table: &str) -> (i64, i64) {
    let count = |left: &str, right: &str| {
        format!(
            "SELECT count(*) FROM (SELECT * FROM {left}.{table} EXCEPT ALL SELECT * FROM {right}.{table}) d"
        )
    };
    let only_sql: i64 = sqlx::query_scalar(&count(SQL_SCHEMA, FOLD_SCHEMA))
        .fetch_one(pool)
        .await
        .expect("compare");
    let only_fold: i64 = sqlx::query_scalar(&count(FOLD_SCHEMA, SQL_SCHEMA))
        .fetch_one(pool)
        .await
        .expect("compare");
    (only_sql, only_fold)
}

async fn rows_of(pool: &PgPool, schema: &str, table: &str) -> Vec<serde_json::Value> {
    sqlx::query_scalar(&format!(
        "SELECT to_jsonb(t) FROM {schema}.{table} t ORDER BY to_jsonb(t)::text"
    ))
    .fetch_all(pool)
    .await
    .expect("read rows")
}

/// Builds the writes both ways and checks that every read model has the
/// same rows, and that `expected_rows` of them are in each table named.
async fn assert_fold_matches_sql(aggregates: &[Vec<Write>], expected_rows: &[(&str, usize)]) {
    let pool = pool_with_schemas().await;
    apply_by_sql(&pool, aggregates).await.expect("apply by SQL");
    apply_by_fold(&pool, aggregates)
        .await
        .expect("apply by fold");
    for table in READ_MODELS {
        let (only_sql, only_fold) = differences(&pool, table).await;
        assert_eq!(
            (only_sql, only_fold),
            (0, 0),
            "{table} differs:\nby SQL:  {:?}\nby fold: {:?}",
            rows_of(&pool, SQL_SCHEMA, table).await,
            rows_of(&pool, FOLD_SCHEMA, table).await
        );
    }
    for (table, rows) in expected_rows {
        assert_eq!(
            rows_of(&pool, FOLD_SCHEMA, table).await.len(),
            *rows,
            "rows in {table}"
        );
    }
}

fn at(seconds: i64, nanoseconds: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_000_000 + seconds, nanoseconds).expect("valid timestamp")
}

fn payout_write(payout_id: Uuid, client_id: Uuid, sequence: i64) -> Write {
    Write::Payout {
        payout_id,
        client_id,
        amount_minor: 1_500,
        currency: "XOF",
        provider: "tmoney",
        msisdn: "+22890112233".to_owned(),
        recipient_name: Some("Ama Mensah".to_owned()),
        reference: None,
        country_code: 228,
        created_at: at(0, 123_456_789),
        updated_at: at(0, 500),
        sequence,
    }
}

fn status_write(
    payout_id: Uuid,
    status: Option<&'static str>,
    provider_ref: Option<&str>,
    failure_code: Option<&str>,
    sequence: i64,
) -> Write {
    Write::PayoutStatus {
        payout_id,
        status,
        provider_ref: provider_ref.map(str::to_owned),
        failure_code: failure_code.map(str::to_owned),
        sequence,
        recorded_at: at(sequence, 1_500),
    }
}

fn hold_write(
    wallet_id: &str,
    payout_id: Uuid,
    amount_minor: i64,
    state: &'static str,
    provider: Option<&'static str>,
    sequence: i64,
) -> Write {
    Write::Hold {
        wallet_id: wallet_id.to_owned(),
        payout_id,
        amount_minor,
        state,
        provider,
        sequence,
    }
}

fn balance_write(client_id: Uuid, available_delta: i64, held_delta: i64, sequence: i64) -> Write {
    Write::Balance {
        client_id,
        currency: "XOF",
        available_delta,
        held_delta,
        sequence,
        recorded_at: at(sequence, 0),
    }
}

fn history_write(aggregate_id: &str, sequence: i64, event_type: &str) -> Write {
    Write::History {
        aggregate_type: "Wallet",
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        event_type: event_type.to_owned(),
        event_version: "1".to_owned(),
        payout_id: None,
        client_id: None,
        request_id: None,
        source: "api".to_owned(),
        recorded_at: at(sequence, 0),
    }
}

#[tokio::test]
async fn fold_payout_status_keeps_earlier_values() {
    let payout_id = Uuid::new_v4();
    let client_id = Uuid::new_v4();
    let payout = vec![
        payout_write(payout_id, client_id, 1),
        // Outbox writes do not change the read models.
        Write::DispatchQueued {
            payout_id,
            provider: "tmoney",
            at: at(1, 0),
        },
        status_write(payout_id, Some("submitted"), Some("ref-1"), None, 2),
        // A provider attempt changes no column but updated_at and
        // last_sequence.
        status_write(payout_id, None, None, None, 3),
        // A failure keeps the provider reference it does not name.
        status_write(payout_id, Some("failed"), None, Some("INSUFFICIENT"), 4),
        // An event already applied changes nothing.
        status_write(payout_id, Some("succeeded"), Some("ref-old"), None, 4),
        status_write(payout_id, Some("submitted"), Some("ref-0"), None, 2),
        // The last write keeps every value it does not name.
        status_write(payout_id, None, None, None, 5),
        Write::DispatchState {
            payout_id,
            state: "done",
        },
    ];
    assert_fold_matches_sql(&[payout], &[("payouts", 1)]).await;
}

#[tokio::test]
async fn fold_hold_settles_with_provider() {
    let payout_id = Uuid::new_v4();
    let other_payout = Uuid::new_v4();
    let wallet_id = format!("{}:XOF", Uuid::new_v4());
    let wallet = vec![
        hold_write(&wallet_id, payout_id, 1_000, "held", None, 2),
        // A stale write is skipped even though it would set a provider.
        hold_write(&wallet_id, payout_id, 1_000, "settled", Some("momo"), 1),
        hold_write(&wallet_id, payout_id, 1_000, "settled", Some("tmoney"), 3),
        // The amount never changes, and a NULL provider keeps the stored one.
        hold_write(&wallet_id, payout_id, 9_999, "refunded", None, 4),
        hold_write(&wallet_id, payout_id, 1_000, "held", Some("momo"), 3),
        hold_write(&wallet_id, other_payout, 700, "held", None, 5),
        hold_write(&wallet_id, other_payout, 700, "released", None, 6),
    ];
    assert_fold_matches_sql(&[wallet], &[("wallet_holds", 2)]).await;
}

#[tokio::test]
async fn fold_status_without_payout_is_dropped() {
    let payout_id = Uuid::new_v4();
    let statuses = vec![
        status_write(payout_id, Some("succeeded"), Some("ref-1"), None, 2),
        status_write(payout_id, Some("reversed"), None, None, 3),
    ];
    // A payout whose status writes come before its Payout write keeps the
    // values of the Payout write.
    let late_payout_id = Uuid::new_v4();
    let late = vec![
        status_write(late_payout_id, Some("submitted"), Some("ref-2"), None, 2),
        payout_write(late_payout_id, Uuid::new_v4(), 1),
    ];
    assert_fold_matches_sql(&[statuses, late], &[("payouts", 1)]).await;
}

#[tokio::test]
async fn fold_text_needs_escaping() {
    let awkward = [
        "",
        "Mensah, Ama",
        "\"Kofi\" O'Neil",
        "line one\nline two\r\nline three",
        "tab\there",
        "back\\slash \\N \\.",
        "\\.",
        "before\n\\.\nafter",
        "Ɛfua Kɔkɔ, 東京",
    ];
    let client_id = Uuid::new_v4();
    let mut aggregates = Vec::new();
    for (index, text) in awkward.iter().enumerate() {
        let payout_id = Uuid::new_v4();
        let sequence = 1;
        aggregates.push(vec![
            Write::Payout {
                payout_id,
                client_id,
                amount_minor: 100,
                currency: "XOF",
                provider: "thunes",
                msisdn: format!("+2289000000{index}"),
                recipient_name: Some((*text).to_owned()),
                reference: if index % 2 == 0 {
                    None
                } else {
                    Some((*text).to_owned())
                },
                country_code: 228,
                created_at: at(index as i64, 999_999_999),
                updated_at: at(index as i64, 1),
                sequence,
            },
            status_write(payout_id, Some("failed"), None, Some(text), 2),
            Write::History {
                aggregate_type: "Payout",
                aggregate_id: payout_id.to_string(),
                sequence,
                event_type: "PayoutRequested".to_owned(),
                event_version: "2".to_owned(),
                payout_id: Some(payout_id),
                client_id: if index % 2 == 0 {
                    None
                } else {
                    Some(client_id)
                },
                request_id: if index % 3 == 0 {
                    None
                } else {
                    Some((*text).to_owned())
                },
                source: (*text).to_owned(),
                recorded_at: at(index as i64, 0),
            },
        ]);
    }
    let rows = awkward.len();
    assert_fold_matches_sql(&aggregates, &[("payouts", rows), ("event_history", rows)]).await;

    // NULL and the empty string stay apart.
    let pool = pool_with_schemas().await;
    apply_by_fold(&pool, &aggregates)
        .await
        .expect("apply by fold");
    let (nulls, empty): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE reference IS NULL), count(*) FILTER (WHERE recipient_name = '') \
         FROM {FOLD_SCHEMA}.payouts"
    ))
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(nulls, 5, "references left NULL");
    assert_eq!(empty, 1, "empty recipient names");
}

#[tokio::test]
async fn fold_repeated_keys_keep_first_row() {
    let wallet_id = format!("{}:XOF", Uuid::new_v4());
    let deposit_id = Uuid::new_v4();
    let posting = |account: &str, debit_minor: i64, credit_minor: i64| Posting {
        account: account.to_owned(),
        currency: "XOF",
        debit_minor,
        credit_minor,
    };
    let wallet = vec![
        history_write(&wallet_id, 1, "FundsDeposited"),
        history_write(&wallet_id, 1, "FundsReserved"),
        history_write(&wallet_id, 2, "FundsReserved"),
        Write::Postings {
            aggregate_type: "Wallet",
            aggregate_id: wallet_id.clone(),
            sequence: 1,
            postings: vec![
                posting("world:funding", 500, 0),
                posting("wallet:available", 0, 500),
                posting("world:funding", 0, 7),
            ],
            recorded_at: at(1, 0),
        },
        Write::Postings {
            aggregate_type: "Wallet",
            aggregate_id: wallet_id.clone(),
            sequence: 1,
            postings: vec![posting("wallet:available", 0, 900)],
            recorded_at: at(9, 0),
        },
        Write::Deposit {
            wallet_id: wallet_id.clone(),
            deposit_id,
            amount_minor: 500,
            sequence: 1,
        },
        Write::Deposit {
            wallet_id: wallet_id.clone(),
            deposit_id,
            amount_minor: 800,
            sequence: 3,
        },
    ];
    assert_fold_matches_sql(
        &[wallet],
        &[
            ("event_history", 2),
            ("journal_postings", 2),
            ("wallet_deposits", 1),
        ],
    )
    .await;
}

#[tokio::test]
async fn fold_balance_sums_deltas() {
    let client_id = Uuid::new_v4();
    let other_client = Uuid::new_v4();
    let wallet = vec![
        balance_write(client_id, 10_000, 0, 1),
        balance_write(client_id, -4_000, 4_000, 2),
        // Sequences already applied are skipped.
        balance_write(client_id, 1_000_000, 0, 2),
        balance_write(client_id, 1_000_000, 0, 1),
        balance_write(client_id, 0, -4_000, 3),
    ];
    let other = vec![balance_write(other_client, 300, 0, 1)];
    assert_fold_matches_sql(&[wallet, other], &[("wallet_balances", 2)]).await;
}

#[tokio::test]
async fn fold_negative_balance_fails() {
    let client_id = Uuid::new_v4();
    let wallet = vec![
        balance_write(client_id, 1_000, 0, 1),
        balance_write(client_id, -1_500, 1_500, 2),
        // A later deposit would make the balance valid again, but the SQL
        // path checks every write.
        balance_write(client_id, 5_000, 0, 3),
    ];
    let pool = pool_with_schemas().await;
    let by_sql = apply_by_sql(&pool, std::slice::from_ref(&wallet)).await;
    assert!(
        matches!(&by_sql, Err(ProjectionError::Database(error)) if error.to_string().contains("wallet_balances_available_minor_check")),
        "the SQL path rejects the write: {by_sql:?}"
    );

    let by_fold = apply_by_fold(&pool, &[wallet]).await;
    let Err(ProjectionError::Corrupt(message)) = by_fold else {
        panic!("the fold must reject the write: {by_fold:?}");
    };
    assert!(
        message.contains(&format!("wallet {client_id}:XOF")),
        "the wallet is named: {message}"
    );
    assert!(
        message.contains("sequence 2"),
        "the sequence is named: {message}"
    );

    // A first write that is negative fails as the SQL path's INSERT does.
    let first = vec![balance_write(client_id, 0, -1, 1)];
    let Err(ProjectionError::Corrupt(message)) = apply_by_fold(&pool, &[first]).await else {
        panic!("the fold must reject a negative first write");
    };
    assert!(message.contains("sequence 1"), "{message}");
}
