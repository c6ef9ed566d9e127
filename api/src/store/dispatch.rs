//! The dispatch queue: claiming due payouts under a lease, and recording
//! what the dispatcher did with them.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::StoreError;

#[derive(Debug, Clone, FromRow)]
pub struct QueueRow {
    pub payout_id: Uuid,
    pub provider: String,
    pub state: String,
    pub attempts: i32,
}

/// Takes up to `limit` due payouts of enabled providers for `lease_seconds`.
/// SKIP LOCKED lets several dispatchers claim side by side without waiting,
/// and the lease keeps a payout with one dispatcher at a time; after a crash
/// the lease runs out and another dispatcher resumes the payout.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease_seconds: i64,
    disabled: &[String],
) -> Result<Vec<QueueRow>, StoreError> {
    let rows = sqlx::query_as::<_, QueueRow>(
        "UPDATE dispatch_queue SET lease_until = now() + make_interval(secs => $2) \
         WHERE payout_id IN ( \
             SELECT payout_id FROM dispatch_queue \
             WHERE state <> 'done' AND next_attempt_at <= now() \
               AND (lease_until IS NULL OR lease_until < now()) \
               AND provider <> ALL($3) \
             ORDER BY next_attempt_at \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED) \
         RETURNING payout_id, provider, state, attempts",
    )
    .bind(limit)
    .bind(lease_seconds as f64)
    .bind(disabled)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Releases a payout's lease and schedules its next step.
pub async fn reschedule(
    pool: &PgPool,
    payout_id: Uuid,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dispatch_queue SET attempts = $2, next_attempt_at = $3, last_error = $4, \
             lease_until = NULL, updated_at = now() \
         WHERE payout_id = $1",
    )
    .bind(payout_id)
    .bind(attempts)
    .bind(next_attempt_at)
    .bind(last_error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Sends a submitted payout back to submission: the provider has no
/// transfer for it, so submitting again with the same reference is safe.
pub async fn resubmit(pool: &PgPool, payout_id: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dispatch_queue SET state = 'ready', next_attempt_at = now(), lease_until = NULL, \
             updated_at = now() \
         WHERE payout_id = $1 AND state = 'submitted'",
    )
    .bind(payout_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Payouts waiting per provider and state, for /health and metrics.
pub async fn backlog(pool: &PgPool) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT provider, state, count(*) FROM dispatch_queue WHERE state <> 'done' \
         GROUP BY provider, state ORDER BY provider, state",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
