//! Rebuilding the read models from the events into shadow tables, comparing
//! them row by row with the live tables, and swapping them in on request.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use nepxy_ledger::metadata::EventMetadata;
use nepxy_ledger::{Payout, PayoutEvent, Wallet, WalletEvent, upcast};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgPool};

use crate::ProjectionError;
use crate::record::EventRecord;
use crate::views::Projected;
use crate::writes::Writes;

/// Read models compared and swapped by a rebuild.
pub const READ_MODELS: [&str; 6] = [
    "payouts",
    "wallet_balances",
    "journal_postings",
    "event_history",
    "wallet_holds",
    "wallet_deposits",
];
/// Outboxes that the projections also write: shadowed so that a rebuild
/// never touches the live ones, but neither compared nor swapped.
const OUTBOXES: [&str; 2] = ["dispatch_queue", "notifications"];
/// Tables the projections read, copied with their rows.
const INPUTS: [&str; 1] = ["notification_endpoints"];
/// Schema of the shadow tables.
const SHADOW: &str = "rebuild";
/// Events read per query.
const PAGE_SIZE: i64 = 2_000;
/// Differences printed per table.
pub const MAX_DIFFERENCES_SHOWN: i64 = 20;

#[derive(FromRow)]
pub(crate) struct StoredEvent {
    pub(crate) aggregate_type: String,
    pub(crate) aggregate_id: String,
    pub(crate) sequence: i64,
    pub(crate) event_version: String,
    pub(crate) payload: String,
    pub(crate) metadata: String,
    pub(crate) recorded_at: DateTime<Utc>,
}

/// One table's differences between the live and the rebuilt rows.
#[derive(Debug, Clone)]
pub struct TableDiff {
    pub table: &'static str,
    /// Rows only in the live table, as JSON (at most MAX_DIFFERENCES_SHOWN).
    pub only_live: Vec<Value>,
    pub only_live_count: i64,
    /// Rows only in the rebuilt table.
    pub only_rebuilt: Vec<Value>,
    pub only_rebuilt_count: i64,
}

async fn table_exists(
    conn: &mut PgConnection,
    schema: &str,
    table: &str,
) -> Result<bool, ProjectionError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}.{table}"))
        .fetch_one(&mut *conn)
        .await?;
    Ok(exists)
}

/// Creates empty shadow tables shaped like the live ones.
async fn create_shadow(conn: &mut PgConnection, tables: &[&str]) -> Result<(), ProjectionError> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SHADOW} CASCADE"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {SHADOW}"))
        .execute(&mut *conn)
        .await?;
    for table in tables {
        if table_exists(conn, "public", table).await? {
            sqlx::query(&format!(
                "CREATE TABLE {SHADOW}.{table} (LIKE public.{table} INCLUDING ALL)"
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    for table in INPUTS {
        if table_exists(conn, "public", table).await? {
            sqlx::query(&format!(
                "CREATE TABLE {SHADOW}.{table} AS TABLE public.{table}"
            ))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Adds the writes of one stored event; they go to the tables that the search
/// path of the connection that applies them names. Returns false for
/// aggregates without read models.
pub(crate) fn project(writes: &mut Writes, event: StoredEvent) -> Result<bool, ProjectionError> {
    let metadata: EventMetadata = serde_json::from_str(&event.metadata).map_err(|error| {
        ProjectionError::Corrupt(format!(
            "metadata of {} {} {}: {error}",
            event.aggregate_type, event.aggregate_id, event.sequence
        ))
    })?;
    let label = format!(
        "{} {} {}",
        event.aggregate_type, event.aggregate_id, event.sequence
    );
    let corrupt = |error: nepxy_ledger::upcast::UpcastError| {
        ProjectionError::Corrupt(format!("payload of {label}: {error}"))
    };
    match event.aggregate_type.as_str() {
        Wallet::TYPE => {
            let record = EventRecord {
                aggregate_type: Wallet::TYPE,
                aggregate_id: event.aggregate_id,
                sequence: event.sequence,
                event: upcast::decode::<WalletEvent>(&event.event_version, &event.payload)
                    .map_err(corrupt)?,
                metadata,
                recorded_at: event.recorded_at,
            };
            Wallet::project(writes, &record)?;
        }
        Payout::TYPE => {
            let record = EventRecord {
                aggregate_type: Payout::TYPE,
                aggregate_id: event.aggregate_id,
                sequence: event.sequence,
                event: upcast::decode::<PayoutEvent>(&event.event_version, &event.payload)
                    .map_err(corrupt)?,
                metadata,
                recorded_at: event.recorded_at,
            };
            Payout::project(writes, &record)?;
        }
        // Aggregates without read models.
        _ => return Ok(false),
    }
    Ok(true)
}

/// Adds the writes of `events` and applies them in one round trip. Returns
/// how many events have read models.
pub(crate) async fn project_all(
    conn: &mut PgConnection,
    events: impl IntoIterator<Item = StoredEvent>,
) -> Result<u64, ProjectionError> {
    let mut writes = Writes::default();
    let mut projected = 0;
    for event in events {
        if project(&mut writes, event)? {
            projected += 1;
        }
    }
    writes.apply(conn).await?;
    Ok(projected)
}

/// Replays every event into shadow tables of `tables`. `progress` is called
/// with the number of events applied so far after each page.
pub async fn rebuild(
    pool: &PgPool,
    tables: &[&'static str],
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, ProjectionError> {
    let mut conn = pool.acquire().await?;
    let mut shadowed: Vec<&str> = tables.to_vec();
    shadowed.extend(OUTBOXES);
    // Every read model a projection writes is shadowed, so none of its
    // writes reaches a live table; only `tables` are compared and swapped.
    for table in READ_MODELS {
        if !shadowed.contains(&table) {
            shadowed.push(table);
        }
    }
    create_shadow(&mut conn, &shadowed).await?;
    sqlx::query(&format!("SET search_path = {SHADOW}, public"))
        .execute(&mut *conn)
        .await?;

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM public.events")
        .fetch_one(&mut *conn)
        .await?;
    let mut applied = 0_u64;
    let mut after = (String::new(), String::new(), 0_i64);
    let result = loop {
        let page = sqlx::query_as::<_, StoredEvent>(
            "SELECT aggregate_type, aggregate_id, sequence, event_version, payload::text AS payload, \
                    metadata::text AS metadata, recorded_at \
             FROM public.events WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
             ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4",
        )
        .bind(&after.0)
        .bind(&after.1)
        .bind(after.2)
        .bind(PAGE_SIZE)
        .fetch_all(&mut *conn)
        .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => break Err(error.into()),
        };
        let Some(last) = page.last() else {
            break Ok(applied);
        };
        after = (
            last.aggregate_type.clone(),
            last.aggregate_id.clone(),
            last.sequence,
        );
        match project_all(&mut conn, page).await {
            Ok(projected) => applied += projected,
            Err(error) => {
                let _ = sqlx::query("RESET search_path").execute(&mut *conn).await;
                return Err(error);
            }
        }
        progress(applied, total as u64);
    };
    sqlx::query("RESET search_path").execute(&mut *conn).await?;
    result
}

/// Compares the live and the rebuilt rows of each table.
pub async fn compare(
    pool: &PgPool,
    tables: &[&'static str],
) -> Result<Vec<TableDiff>, ProjectionError> {
    let mut diffs = Vec::new();
    for table in tables {
        let count = |left: &str, right: &str| {
            format!(
                "SELECT count(*) FROM (SELECT * FROM {left}.{table} EXCEPT ALL SELECT * FROM {right}.{table}) d"
            )
        };
        let rows = |left: &str, right: &str| {
            format!(
                "SELECT to_jsonb(d) FROM (SELECT * FROM {left}.{table} EXCEPT ALL SELECT * FROM {right}.{table}) d LIMIT {MAX_DIFFERENCES_SHOWN}"
            )
        };
        let only_live_count: i64 = sqlx::query_scalar(&count("public", SHADOW))
            .fetch_one(pool)
            .await?;
        let only_rebuilt_count: i64 = sqlx::query_scalar(&count(SHADOW, "public"))
            .fetch_one(pool)
            .await?;
        let only_live: Vec<Value> = sqlx::query_scalar(&rows("public", SHADOW))
            .fetch_all(pool)
            .await?;
        let only_rebuilt: Vec<Value> = sqlx::query_scalar(&rows(SHADOW, "public"))
            .fetch_all(pool)
            .await?;
        diffs.push(TableDiff {
            table,
            only_live,
            only_live_count,
            only_rebuilt,
            only_rebuilt_count,
        });
    }
    Ok(diffs)
}

/// Replaces the live tables with the rebuilt ones in one transaction, after
/// applying the events that committed during the rebuild. Writers wait while
/// it runs. The replaced tables are kept in schema `replaced_<unix time>`.
pub async fn swap(pool: &PgPool, tables: &[&'static str]) -> Result<String, ProjectionError> {
    let mut tx = pool.begin().await?;
    // SHARE mode waits for every writing transaction to end and keeps new
    // ones out until the swap commits.
    sqlx::query("LOCK TABLE events IN SHARE MODE")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("SET LOCAL search_path = {SHADOW}, public"))
        .execute(&mut *tx)
        .await?;
    let missing = sqlx::query_as::<_, StoredEvent>(&format!(
        "SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_version, e.payload::text AS payload, \
                e.metadata::text AS metadata, e.recorded_at \
         FROM public.events e \
         LEFT JOIN {SHADOW}.event_history h USING (aggregate_type, aggregate_id, sequence) \
         WHERE h.sequence IS NULL AND e.aggregate_type IN ('Wallet', 'Payout') \
         ORDER BY e.aggregate_type, e.aggregate_id, e.sequence"
    ))
    .fetch_all(&mut *tx)
    .await?;
    project_all(&mut tx, missing).await?;
    sqlx::query("SET LOCAL search_path = public")
        .execute(&mut *tx)
        .await?;

    let replaced = format!("replaced_{}", Utc::now().timestamp());
    sqlx::query(&format!("CREATE SCHEMA {replaced}"))
        .execute(&mut *tx)
        .await?;
    for table in tables {
        sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA {replaced}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("ALTER TABLE {SHADOW}.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(replaced)
}

/// Drops the shadow tables.
pub async fn drop_shadow(pool: &PgPool) -> Result<(), ProjectionError> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SHADOW} CASCADE"))
        .execute(pool)
        .await?;
    Ok(())
}
