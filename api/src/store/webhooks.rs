//! The webhook inbox: raw deliveries, accepted nonces and operator replays.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::StoreError;

/// How long an accepted nonce or event id is remembered. Twice the timestamp
/// tolerance, so a delivery is stale by its timestamp before its nonce is
/// forgotten.
pub const REPLAY_KEY_RETENTION_SECONDS: i64 = 2 * crate::webhooks::TIMESTAMP_TOLERANCE_SECONDS;

pub struct NewDelivery<'a> {
    pub webhook_id: Uuid,
    pub provider: &'a str,
    pub received_at: DateTime<Utc>,
    pub peer_addr: Option<String>,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(String, String)],
    pub body: Option<&'a [u8]>,
    pub body_size: i64,
    pub verdict: &'a str,
    pub reason: Option<&'a str>,
}

#[derive(Debug, Clone, FromRow)]
pub struct DeliveryRow {
    pub webhook_id: Uuid,
    pub provider: String,
    pub received_at: DateTime<Utc>,
    pub peer_addr: Option<String>,
    pub method: String,
    pub path: String,
    pub headers: Value,
    pub body: Option<Vec<u8>>,
    pub body_size: i64,
    pub verdict: String,
    pub reason: Option<String>,
    pub replay_key: Option<String>,
    pub payout_id: Option<Uuid>,
    pub report: Option<Value>,
    pub updated_at: DateTime<Utc>,
}

impl DeliveryRow {
    /// The stored headers as (name, value) pairs.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        serde_json::from_value(self.headers.clone()).unwrap_or_default()
    }
}

/// What became of a delivery after it was stored.
pub struct VerdictUpdate<'a> {
    pub verdict: &'a str,
    pub reason: Option<&'a str>,
    pub replay_key: Option<&'a str>,
    pub payout_id: Option<Uuid>,
    pub report: Option<Value>,
}

/// Stores a delivery in its own transaction, before anything else happens
/// to it, so that a crash later loses nothing that arrived.
pub async fn insert(pool: &PgPool, delivery: &NewDelivery<'_>) -> Result<(), StoreError> {
    let headers = serde_json::to_value(delivery.headers)?;
    sqlx::query(
        "INSERT INTO webhook_deliveries (webhook_id, provider, received_at, peer_addr, method, path, \
             headers, body, body_size, verdict, reason, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $3)",
    )
    .bind(delivery.webhook_id)
    .bind(delivery.provider)
    .bind(delivery.received_at)
    .bind(&delivery.peer_addr)
    .bind(delivery.method)
    .bind(delivery.path)
    .bind(headers)
    .bind(delivery.body)
    .bind(delivery.body_size)
    .bind(delivery.verdict)
    .bind(delivery.reason)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn set_verdict(
    pool: &PgPool,
    webhook_id: Uuid,
    update: &VerdictUpdate<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET verdict = $2, reason = $3, \
             replay_key = COALESCE($4, replay_key), payout_id = COALESCE($5, payout_id), \
             report = COALESCE($6, report), updated_at = now() \
         WHERE webhook_id = $1",
    )
    .bind(webhook_id)
    .bind(update.verdict)
    .bind(update.reason)
    .bind(update.replay_key)
    .bind(update.payout_id)
    .bind(&update.report)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a nonce or event id as used. Returns false when it was already
/// used by another delivery and has not expired.
pub async fn claim_replay_key(
    pool: &PgPool,
    provider: &str,
    replay_key: &str,
    webhook_id: Uuid,
) -> Result<bool, StoreError> {
    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO webhook_replay_keys (provider, replay_key, webhook_id, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (provider, replay_key) DO UPDATE SET \
             webhook_id = EXCLUDED.webhook_id, expires_at = EXCLUDED.expires_at \
         WHERE webhook_replay_keys.expires_at < now() \
         RETURNING 1",
    )
    .bind(provider)
    .bind(replay_key)
    .bind(webhook_id)
    .bind(REPLAY_KEY_RETENTION_SECONDS as f64)
    .fetch_optional(pool)
    .await?;
    Ok(claimed.is_some())
}

/// Deletes nonces and event ids past their expiry.
pub async fn purge_expired_replay_keys(pool: &PgPool) -> Result<u64, StoreError> {
    let result = sqlx::query("DELETE FROM webhook_replay_keys WHERE expires_at < now()")
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

const DELIVERY_COLUMNS: &str = "webhook_id, provider, received_at, peer_addr, method, path, headers, body, \
     body_size, verdict, reason, replay_key, payout_id, report, updated_at";

pub async fn find(pool: &PgPool, webhook_id: Uuid) -> Result<Option<DeliveryRow>, StoreError> {
    let row = sqlx::query_as::<_, DeliveryRow>(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1"
    ))
    .bind(webhook_id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Position after which a page of deliveries starts, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryCursor {
    pub received_at: DateTime<Utc>,
    pub webhook_id: Uuid,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub provider: Option<String>,
    pub verdict: Option<String>,
    pub received_from: Option<DateTime<Utc>>,
    pub received_before: Option<DateTime<Utc>>,
    pub after: Option<DeliveryCursor>,
    pub limit: i64,
}

/// Lists deliveries newest first; returns the page and the next cursor.
pub async fn list(
    pool: &PgPool,
    filter: &DeliveryFilter,
) -> Result<(Vec<DeliveryRow>, Option<DeliveryCursor>), StoreError> {
    let mut rows = sqlx::query_as::<_, DeliveryRow>(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
         WHERE ($1::text IS NULL OR provider = $1) \
           AND ($2::text IS NULL OR verdict = $2) \
           AND ($3::timestamptz IS NULL OR received_at >= $3) \
           AND ($4::timestamptz IS NULL OR received_at < $4) \
           AND ($5::timestamptz IS NULL OR (received_at, webhook_id) < ($5, $6)) \
         ORDER BY received_at DESC, webhook_id DESC \
         LIMIT $7"
    ))
    .bind(&filter.provider)
    .bind(&filter.verdict)
    .bind(filter.received_from)
    .bind(filter.received_before)
    .bind(filter.after.map(|cursor| cursor.received_at))
    .bind(filter.after.map(|cursor| cursor.webhook_id))
    .bind(filter.limit + 1)
    .fetch_all(pool)
    .await?;

    let next = if rows.len() as i64 > filter.limit {
        rows.truncate(filter.limit as usize);
        rows.last().map(|row| DeliveryCursor {
            received_at: row.received_at,
            webhook_id: row.webhook_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

pub struct NewReplay<'a> {
    pub webhook_id: Uuid,
    pub actor: &'a str,
    pub reason: &'a str,
    pub dry_run: bool,
    pub verdict: &'a str,
    pub detail: Option<&'a str>,
}

/// Records who replayed a delivery, why, and with what verdict.
pub async fn record_replay(pool: &PgPool, replay: &NewReplay<'_>) -> Result<Uuid, StoreError> {
    let replay_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO webhook_replays (replay_id, webhook_id, actor, reason, dry_run, verdict, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(replay_id)
    .bind(replay.webhook_id)
    .bind(replay.actor)
    .bind(replay.reason)
    .bind(replay.dry_run)
    .bind(replay.verdict)
    .bind(replay.detail)
    .execute(pool)
    .await?;
    Ok(replay_id)
}
