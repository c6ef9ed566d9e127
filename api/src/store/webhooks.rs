//! The webhook inbox: raw deliveries, accepted nonces and operator replays.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgExecutor, PgPool};
use uuid::Uuid;

use super::StoreError;

/// How long an accepted nonce or event id is remembered. Twice the timestamp
/// tolerance, so a delivery is stale by its timestamp before its nonce is
/// forgotten.
pub const REPLAY_KEY_RETENTION_SECONDS: i64 = 2 * crate::webhooks::TIMESTAMP_TOLERANCE_SECONDS;

/// Seconds after arrival when a delivery still without a final verdict (the
/// process died, the database failed) is first retried.
pub const FIRST_RETRY_SECONDS: i64 = 30;

/// Verdicts of deliveries that are retried automatically: not processed yet,
/// no such payout yet, MoMo's status endpoint did not confirm.
/// Verdicts a delivery can have, for the list filters of the API and the
/// command line.
pub const VERDICTS: [&str; 12] = [
    "received",
    "applied",
    "duplicate",
    "pending",
    "orphan",
    "conflict",
    "transition_rejected",
    "unconfirmed",
    "rejected",
    "malformed",
    "oversized",
    "dead",
];

pub const RETRYABLE_VERDICTS: [&str; 3] = ["received", "orphan", "unconfirmed"];

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
             headers, body, body_size, verdict, reason, updated_at, next_retry_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $3, \
             CASE WHEN $10 = 'received' THEN $3 + make_interval(secs => $12) END)",
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
    .bind(FIRST_RETRY_SECONDS as f64)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores what became of a delivery, in the caller's transaction when
/// `executor` is one.
pub async fn set_verdict(
    executor: impl PgExecutor<'_>,
    webhook_id: Uuid,
    update: &VerdictUpdate<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET verdict = $2, reason = $3, \
             replay_key = COALESCE($4, replay_key), payout_id = COALESCE($5, payout_id), \
             report = COALESCE($6, report), updated_at = now(), \
             next_retry_at = CASE WHEN $2 = ANY($7) THEN next_retry_at END \
         WHERE webhook_id = $1",
    )
    .bind(webhook_id)
    .bind(update.verdict)
    .bind(update.reason)
    .bind(update.replay_key)
    .bind(update.payout_id)
    .bind(&update.report)
    .bind(&RETRYABLE_VERDICTS[..])
    .execute(executor)
    .await?;
    Ok(())
}

/// A delivery due for an automatic retry.
#[derive(Debug, Clone, FromRow)]
pub struct DueRetry {
    pub webhook_id: Uuid,
    pub retry_attempts: i32,
    pub received_at: DateTime<Utc>,
}

/// Takes up to `limit` deliveries due for a retry, for `lease_seconds`.
pub async fn claim_retries(
    pool: &PgPool,
    limit: i64,
    lease_seconds: i64,
) -> Result<Vec<DueRetry>, StoreError> {
    let rows = sqlx::query_as::<_, DueRetry>(
        "UPDATE webhook_deliveries SET retry_lease_until = now() + make_interval(secs => $2) \
         WHERE webhook_id IN ( \
             SELECT webhook_id FROM webhook_deliveries \
             WHERE next_retry_at <= now() AND verdict = ANY($3) \
               AND (retry_lease_until IS NULL OR retry_lease_until < now()) \
             ORDER BY next_retry_at \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED) \
         RETURNING webhook_id, retry_attempts, received_at",
    )
    .bind(limit)
    .bind(lease_seconds as f64)
    .bind(&RETRYABLE_VERDICTS[..])
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Records one retry attempt and schedules the next one (`None` when the
/// delivery needs no more retries).
pub async fn record_retry(
    pool: &PgPool,
    webhook_id: Uuid,
    attempt: i32,
    verdict: &str,
    detail: Option<&str>,
    next_retry_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_retry_attempts (webhook_id, attempt, verdict, detail) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(webhook_id)
    .bind(attempt)
    .bind(verdict)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE webhook_deliveries SET retry_attempts = $2, retry_lease_until = NULL, \
             next_retry_at = CASE WHEN verdict = ANY($4) THEN $3 END \
         WHERE webhook_id = $1",
    )
    .bind(webhook_id)
    .bind(attempt)
    .bind(next_retry_at)
    .bind(&RETRYABLE_VERDICTS[..])
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Gives up on a delivery: it becomes `dead`, listed for operators, and only
/// a replay applies it.
pub async fn mark_dead(pool: &PgPool, webhook_id: Uuid, reason: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET verdict = 'dead', reason = $2, next_retry_at = NULL, \
             retry_lease_until = NULL, updated_at = now() \
         WHERE webhook_id = $1",
    )
    .bind(webhook_id)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a nonce or event id as used by `webhook_id`. Returns false when
/// another delivery used it and it has not expired. The same delivery may
/// claim its key again, as the retry worker does after a claim that was
/// rolled back or that committed without an application.
pub async fn claim_replay_key(
    executor: impl PgExecutor<'_>,
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
            OR webhook_replay_keys.webhook_id = EXCLUDED.webhook_id \
         RETURNING 1",
    )
    .bind(provider)
    .bind(replay_key)
    .bind(webhook_id)
    .bind(REPLAY_KEY_RETENTION_SECONDS as f64)
    .fetch_optional(executor)
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
pub async fn record_replay(
    conn: &mut sqlx::PgConnection,
    replay: &NewReplay<'_>,
) -> Result<Uuid, StoreError> {
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
    .execute(conn)
    .await?;
    Ok(replay_id)
}
