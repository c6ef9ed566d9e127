//! The event feed: every event in a stable global order, for auditors and
//! for the catch-up projector.
//!
//! Sequence and identity values become visible out of commit order: a
//! transaction that took global_position 10 may commit after the one that took
//! 11, so a reader that remembers "everything up to 11" would skip 10 forever.
//! Every event therefore carries the id of the transaction that wrote it
//! (`transaction_id`, an xid8), and a reader only returns events whose
//! transaction id is below a horizon that no running transaction of this
//! database is below: every transaction older than the horizon has committed
//! or rolled back, so no event can still appear below it. Pages are ordered
//! by (transaction_id, global_position), and the cursor is the last pair
//! read. An event committed late is simply read later, once the horizon
//! passes its transaction; nothing is skipped or read twice.
//!
//! [`horizon`] is the smaller of the snapshot's xmax and the oldest
//! transaction id assigned to a running session of this database (from
//! `pg_stat_activity`, which shows `backend_xid` to every role). It is taken
//! in its own statement before the read, so the read's snapshot, taken later,
//! includes every transaction that ended before the horizon was computed. The
//! classic horizon, `pg_snapshot_xmin(pg_current_snapshot())`, counts every
//! database of the server, so one long transaction anywhere (a DROP DATABASE
//! waiting for a checkpoint, say) would stall this feed. Prepared (two-phase)
//! transactions do not appear in `pg_stat_activity`; the service uses none.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool};

use crate::ProjectionError;

/// Position of an event in the global order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventPosition {
    pub transaction_id: u64,
    pub global_position: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct EventRowRaw {
    transaction_id: String,
    global_position: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
    recorded_at: DateTime<Utc>,
    chain_hash: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub position: EventPosition,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    /// SHA-256 link to the previous event of the aggregate.
    pub chain_hash: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub recorded_from: Option<DateTime<Utc>>,
    pub recorded_before: Option<DateTime<Utc>>,
    pub after: Option<EventPosition>,
    pub limit: i64,
}

/// Computes the transaction id below which every transaction of this database
/// has ended, as text (an xid8). See the module docs.
///
/// The snapshot's xmax is taken when the statement starts, before
/// `pg_stat_activity` is read. Every id below xmax was assigned before that,
/// so its transaction has either ended or still shows in `pg_stat_activity`.
/// `backend_xid` is 32 bits wide; it is widened relative to xmax, and ids
/// assigned after the snapshot come out at or above xmax.
pub async fn horizon(pool: &PgPool) -> Result<String, ProjectionError> {
    let horizon: String = sqlx::query_scalar(
        "SELECT least(snapshot.xmax, min(snapshot.xmax + CASE WHEN running.ahead < 2147483648 \
                    THEN running.ahead ELSE running.ahead - 4294967296 END))::text \
         FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::numeric AS xmax) AS snapshot \
         LEFT JOIN LATERAL ( \
             SELECT (activity.backend_xid::text::numeric - snapshot.xmax % 4294967296 + 4294967296) \
                    % 4294967296 AS ahead \
             FROM pg_stat_activity AS activity \
             WHERE activity.datname = current_database() AND activity.backend_xid IS NOT NULL \
         ) AS running ON true \
         GROUP BY snapshot.xmax",
    )
    .fetch_one(pool)
    .await?;
    Ok(horizon)
}

/// One page of events after `filter.after`, in global order, holding back
/// events of transactions that may still be running (see the module docs).
pub async fn events(
    pool: &PgPool,
    filter: &EventFilter,
) -> Result<Vec<AuditEvent>, ProjectionError> {
    let horizon = horizon(pool).await?;
    let (after_transaction, after_position) = match filter.after {
        Some(position) => (
            position.transaction_id.to_string(),
            position.global_position,
        ),
        None => ("0".to_owned(), 0),
    };
    let rows = sqlx::query_as::<_, EventRowRaw>(
        "SELECT transaction_id::text AS transaction_id, global_position, aggregate_type, aggregate_id, \
                sequence, event_type, event_version, payload::jsonb AS payload, metadata::jsonb AS metadata, \
                recorded_at, chain_hash \
         FROM events \
         WHERE (transaction_id, global_position) > ($1::xid8, $2) \
           AND transaction_id < $9::xid8 \
           AND ($3::text IS NULL OR aggregate_type = $3) \
           AND ($4::text IS NULL OR aggregate_id = $4) \
           AND ($5::text IS NULL OR event_type = $5) \
           AND ($6::timestamptz IS NULL OR recorded_at >= $6) \
           AND ($7::timestamptz IS NULL OR recorded_at < $7) \
         ORDER BY transaction_id, global_position \
         LIMIT $8",
    )
    .bind(after_transaction)
    .bind(after_position)
    .bind(&filter.aggregate_type)
    .bind(&filter.aggregate_id)
    .bind(&filter.event_type)
    .bind(filter.recorded_from)
    .bind(filter.recorded_before)
    .bind(filter.limit)
    .bind(horizon)
    .fetch_all(pool)
    .await?;

    rows.into_iter().map(into_event).collect()
}

pub fn into_event(row: EventRowRaw) -> Result<AuditEvent, ProjectionError> {
    let transaction_id = row.transaction_id.parse::<u64>().map_err(|_| {
        ProjectionError::Corrupt(format!(
            "transaction id {:?} is not a number",
            row.transaction_id
        ))
    })?;
    Ok(AuditEvent {
        position: EventPosition {
            transaction_id,
            global_position: row.global_position,
        },
        aggregate_type: row.aggregate_type,
        aggregate_id: row.aggregate_id,
        sequence: row.sequence,
        event_type: row.event_type,
        event_version: row.event_version,
        payload: row.payload,
        metadata: row.metadata,
        recorded_at: row.recorded_at,
        chain_hash: row.chain_hash,
    })
}
