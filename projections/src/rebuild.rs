//! Rebuilding the read models from the events into shadow tables, comparing
//! them row by row with the live tables, and swapping them in on request.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use futures_util::TryStreamExt;
use nepxy_ledger::metadata::EventMetadata;
use nepxy_ledger::{Payout, PayoutEvent, Wallet, WalletEvent, upcast};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, FromRow, PgConnection, PgPool, Postgres};
use tokio::sync::mpsc;

use crate::ProjectionError;
use crate::copy_text::{CopyBatch, Table};
use crate::fold::Fold;
use crate::record::EventRecord;
use crate::views::Projected;
use crate::writes::Writes;

/// Read models compared and swapped by a rebuild: the tables that the fold
/// fills.
pub const READ_MODELS: [&str; Table::ALL.len()] = {
    let mut names = [""; Table::ALL.len()];
    let mut index = 0;
    while index < names.len() {
        names[index] = Table::ALL[index].name();
        index += 1;
    }
    names
};
/// Outboxes that the projections also write: shadowed so that a rebuild
/// never touches the live ones, but neither compared nor swapped.
const OUTBOXES: [&str; 2] = ["dispatch_queue", "notifications"];
/// Tables the projections read, copied with their rows.
const INPUTS: [&str; 1] = ["notification_endpoints"];
/// Schema of the shadow tables.
const SHADOW: &str = "rebuild";
/// Events read per query.
const PAGE_SIZE: i64 = 10_000;
/// Bytes of COPY rows collected before they are sent to the loading
/// connection. One COPY statement per table and batch costs a round trip.
const BATCH_BYTES: usize = 1 << 20;
/// Batches waiting for the loading connection, which bounds the memory when
/// loading is slower than folding.
const QUEUED_BATCHES: usize = 4;
/// Differences printed per table.
pub const MAX_DIFFERENCES_SHOWN: i64 = 20;

/// The chunk sizes of a rebuild: events read per query and bytes of COPY
/// rows per loaded batch. [`Chunks::default`] is what `rebuild` uses.
#[derive(Debug, Clone, Copy)]
pub struct Chunks {
    pub page_events: i64,
    pub batch_bytes: usize,
}

impl Default for Chunks {
    fn default() -> Chunks {
        Chunks {
            page_events: PAGE_SIZE,
            batch_bytes: BATCH_BYTES,
        }
    }
}

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

/// Drops the indexes of the shadow table `table`, with the constraints that
/// own them, and returns the statements that create them again. Building
/// each index once after the load was faster than updating it row by row
/// (docs/BENCHMARKS.md).
async fn detach_indexes(
    conn: &mut PgConnection,
    table: &str,
) -> Result<Vec<String>, ProjectionError> {
    let statements: Vec<(String, String)> = sqlx::query_as(
        "SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname), \
                format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname, \
                       pg_get_constraintdef(c.oid)) \
         FROM pg_constraint c \
         WHERE c.conrelid = $1::regclass AND c.contype IN ('p', 'u', 'x') \
         UNION ALL \
         SELECT format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid) \
         FROM pg_index i \
         WHERE i.indrelid = $1::regclass AND NOT EXISTS ( \
             SELECT 1 FROM pg_constraint c \
             WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid \
               AND c.contype IN ('p', 'u', 'x'))",
    )
    .bind(format!("{SHADOW}.{table}"))
    .fetch_all(&mut *conn)
    .await?;
    let mut create = Vec::new();
    for (drop, recreate) in statements {
        sqlx::query(&drop).execute(&mut *conn).await?;
        create.push(recreate);
    }
    Ok(create)
}

/// Creates the indexes that [`detach_indexes`] dropped, one table at a time
/// on each of the two connections, the largest tables first so that both
/// connections finish at about the same time.
async fn attach_indexes(
    connections: [&mut PgConnection; 2],
    mut indexes: Vec<(&str, Vec<String>)>,
) -> Result<(), ProjectionError> {
    let [first, second] = connections;
    let by_size: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT t FROM unnest($1::text[]) t \
         ORDER BY pg_total_relation_size(format('{SHADOW}.%I', t)::regclass) DESC"
    ))
    .bind(indexes.iter().map(|(table, _)| *table).collect::<Vec<_>>())
    .fetch_all(&mut *first)
    .await?;
    let mut groups = Vec::new();
    for table in by_size {
        if let Some(position) = indexes.iter().position(|(name, _)| *name == table) {
            groups.push(indexes.swap_remove(position).1);
        }
    }

    let queue = Mutex::new(groups.into_iter());
    let (first, second) = tokio::join!(run_queued(first, &queue), run_queued(second, &queue));
    first?;
    second
}

/// Takes groups from `queue` and runs their statements until it is empty.
async fn run_queued(
    conn: &mut PgConnection,
    queue: &Mutex<std::vec::IntoIter<Vec<String>>>,
) -> Result<(), ProjectionError> {
    loop {
        let next = queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next();
        let Some(group) = next else {
            return Ok(());
        };
        for statement in group {
            sqlx::query(&statement).execute(&mut *conn).await?;
        }
    }
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
    let (aggregate_type, aggregate_id, sequence) =
        (&event.aggregate_type, &event.aggregate_id, event.sequence);
    let corrupt = |error: nepxy_ledger::upcast::UpcastError| {
        ProjectionError::Corrupt(format!(
            "payload of {aggregate_type} {aggregate_id} {sequence}: {error}"
        ))
    };
    match event.aggregate_type.as_str() {
        Wallet::TYPE => {
            let decoded = upcast::decode::<WalletEvent>(&event.event_version, &event.payload)
                .map_err(corrupt)?;
            let record = EventRecord {
                aggregate_type: Wallet::TYPE,
                aggregate_id: event.aggregate_id,
                sequence: event.sequence,
                event: decoded,
                metadata,
                recorded_at: event.recorded_at,
            };
            Wallet::project(writes, &record)?;
        }
        Payout::TYPE => {
            let decoded = upcast::decode::<PayoutEvent>(&event.event_version, &event.payload)
                .map_err(corrupt)?;
            let record = EventRecord {
                aggregate_type: Payout::TYPE,
                aggregate_id: event.aggregate_id,
                sequence: event.sequence,
                event: decoded,
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
/// with the number of events folded so far and the number of stored events.
///
/// The writes of each event are folded in memory ([`Fold`]) into the rows
/// that `nepxy_apply_writes` would leave, instead of running each write as
/// a statement. The rows are loaded with COPY on a second connection while
/// the first one reads the events, and the indexes are built once the rows
/// are in.
pub async fn rebuild(
    pool: &PgPool,
    tables: &[&'static str],
    progress: impl FnMut(u64, u64),
) -> Result<u64, ProjectionError> {
    rebuild_in_chunks(pool, tables, Chunks::default(), progress).await
}

/// Runs [`rebuild`] with the page and batch sizes of `chunks`.
pub async fn rebuild_in_chunks(
    pool: &PgPool,
    tables: &[&'static str],
    chunks: Chunks,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, ProjectionError> {
    let mut reader = pool.acquire().await?;
    let mut shadowed: Vec<&str> = tables.to_vec();
    shadowed.extend(OUTBOXES);
    // Every read model a projection writes is shadowed, so none of its
    // writes reaches a live table; only `tables` are compared and swapped.
    for table in READ_MODELS {
        if !shadowed.contains(&table) {
            shadowed.push(table);
        }
    }
    create_shadow(&mut reader, &shadowed).await?;
    let mut indexes = Vec::new();
    for table in READ_MODELS {
        indexes.push((table, detach_indexes(&mut reader, table).await?));
    }

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM public.events")
        .fetch_one(&mut *reader)
        .await?;
    let writer = pool.acquire().await?;
    let (sender, receiver) = mpsc::channel(QUEUED_BATCHES);
    let loading = tokio::spawn(load_batches(writer, receiver));
    let folded = fold_events(&mut reader, &sender, chunks, |folded| {
        progress(folded, total as u64)
    })
    .await;
    drop(sender);
    let loaded = match loading.await {
        Ok(loaded) => loaded,
        // The task is never cancelled, so it panicked.
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    };
    // A failed load stops the folding too, and its error is the cause.
    let mut writer = loaded?;
    let folded = folded?;

    attach_indexes([&mut reader, &mut writer], indexes).await?;
    Ok(folded)
}

/// Streams every event in aggregate order, folds its writes and sends the
/// rows to `sender` in batches. Returns how many events have read models.
async fn fold_events(
    conn: &mut PgConnection,
    sender: &mpsc::Sender<Vec<CopyBatch>>,
    chunks: Chunks,
    mut progress: impl FnMut(u64),
) -> Result<u64, ProjectionError> {
    let mut fold = Fold::new();
    let mut writes = Writes::default();
    let mut aggregate = (String::new(), String::new());
    let mut after = (String::new(), String::new(), -1_i64);
    let mut folded = 0_u64;
    loop {
        // Keyset pages keep each query short, and PostgreSQL reads each page
        // in primary key order. One query over every event made it sort the
        // whole table before it returned the first row.
        let mut events = sqlx::query_as::<_, StoredEvent>(
            "SELECT aggregate_type, aggregate_id, sequence, event_version, \
                    payload::text AS payload, metadata::text AS metadata, recorded_at \
             FROM public.events WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
             ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4",
        )
        .bind(&after.0)
        .bind(&after.1)
        .bind(after.2)
        .bind(chunks.page_events)
        .fetch(&mut *conn);
        let mut page_rows = 0;
        while let Some(event) = events.try_next().await? {
            page_rows += 1;
            if event.aggregate_type != aggregate.0 || event.aggregate_id != aggregate.1 {
                fold.end_aggregate();
                aggregate = (event.aggregate_type.clone(), event.aggregate_id.clone());
            }
            after.2 = event.sequence;
            if project(&mut writes, event)? {
                folded += 1;
            }
            for write in writes.drain() {
                fold.apply(write)?;
            }
            if fold.buffered_bytes() >= chunks.batch_bytes {
                send_batches(sender, fold.take_batches()).await?;
                progress(folded);
            }
        }
        drop(events);
        if page_rows < chunks.page_events {
            break;
        }
        after.0.clone_from(&aggregate.0);
        after.1.clone_from(&aggregate.1);
    }
    fold.finish();
    send_batches(sender, fold.take_batches()).await?;
    progress(folded);
    Ok(folded)
}

async fn send_batches(
    sender: &mpsc::Sender<Vec<CopyBatch>>,
    batches: Vec<CopyBatch>,
) -> Result<(), ProjectionError> {
    if batches.is_empty() {
        return Ok(());
    }
    sender.send(batches).await.map_err(|_| {
        // The receiver is dropped only when the loader fails, and
        // `rebuild` returns the loader's error instead of this one.
        ProjectionError::Corrupt("the COPY connection stopped loading rows".to_owned())
    })
}

/// Loads every batch received into the shadow tables, in order, with one
/// transaction per message. A transaction kept open for the whole load
/// would hold back the horizon of the event feed, so the audit feed and the
/// catch-up projector would stop until the rebuild ended.
/// Returns the connection once the last transaction has committed.
async fn load_batches(
    mut conn: PoolConnection<Postgres>,
    mut receiver: mpsc::Receiver<Vec<CopyBatch>>,
) -> Result<PoolConnection<Postgres>, ProjectionError> {
    while let Some(batches) = receiver.recv().await {
        let mut tx = conn.begin().await?;
        for batch in batches {
            batch.copy_into(&mut tx, SHADOW).await?;
        }
        tx.commit().await?;
    }
    Ok(conn)
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
