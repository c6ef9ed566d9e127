//! Reads of the event history for auditors. The global order itself is
//! implemented in [`nepxy_projections::feed`].

use chrono::{DateTime, Utc};
pub use nepxy_projections::feed::{AuditEvent, EventFilter, EventPosition, events};
use nepxy_projections::feed::{EventRowRaw, into_event};
use sqlx::PgPool;

use super::StoreError;

/// The payloads of one aggregate's events recorded at or before `as_of`, in
/// sequence order, for point-in-time state.
pub async fn aggregate_events_until(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    as_of: DateTime<Utc>,
) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError> {
    let rows = sqlx::query_as::<_, (String, String, DateTime<Utc>)>(
        "SELECT event_version, payload::text, recorded_at FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND recorded_at <= $3 \
         ORDER BY sequence",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(as_of)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Ids of a client's wallets (one per currency) that have any event.
pub async fn wallet_ids(pool: &PgPool, client_id: uuid::Uuid) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT aggregate_id FROM events \
         WHERE aggregate_type = 'Wallet' AND aggregate_id LIKE $1 ORDER BY aggregate_id",
    )
    .bind(format!("{client_id}:%"))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Every event about one payout, its own and its wallet's, in global order.
/// The event_history read model indexes wallet events by payout id, so this
/// reads no other payout's events.
pub async fn payout_events(
    pool: &PgPool,
    payout_id: uuid::Uuid,
) -> Result<Vec<AuditEvent>, StoreError> {
    let rows = sqlx::query_as::<_, EventRowRaw>(
        "SELECT e.transaction_id::text AS transaction_id, e.global_position, e.aggregate_type, e.aggregate_id, \
                e.sequence, e.event_type, e.event_version, e.payload::jsonb AS payload, \
                e.metadata::jsonb AS metadata, e.recorded_at, e.chain_hash \
         FROM event_history h \
         JOIN events e USING (aggregate_type, aggregate_id, sequence) \
         WHERE h.payout_id = $1 \
         ORDER BY e.transaction_id, e.global_position",
    )
    .bind(payout_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(into_event).collect::<Result<_, _>>()?)
}
