//! Notification endpoints, the notification outbox and its delivery
//! attempts.
//!
//! Outbox rows are written by the payout projection in the transaction of
//! the event (see `nepxy_projections::views`). This module claims them for
//! delivery under a lease, records every attempt, and serves the client's
//! reads and changes.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::{StoreError, lock_key};

/// A registered endpoint as the API shows it, without its secrets.
#[derive(Debug, Clone, FromRow)]
pub struct EndpointRow {
    pub endpoint_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub secret_rotated_at: Option<DateTime<Utc>>,
    /// Until this time the secret before the last rotation also signs.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, url, description, created_at, secret_rotated_at, \
     previous_secret_expires_at, disabled_at";

/// A new endpoint, validated.
pub struct NewEndpoint<'a> {
    pub client_id: Uuid,
    pub url: &'a str,
    pub description: Option<&'a str>,
    pub secret: &'a str,
}

/// Position after which a page starts, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// Inserts an endpoint unless the client already has `max_per_client`
/// endpoints that are not deleted, in which case it returns `None`.
pub async fn create_endpoint(
    pool: &PgPool,
    endpoint: &NewEndpoint<'_>,
    max_per_client: i64,
) -> Result<Option<EndpointRow>, StoreError> {
    let mut tx = pool.begin().await?;
    // Concurrent registrations of one client queue here, so the count
    // below cannot be passed by two of them at once.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(
            "notification_endpoints",
            &endpoint.client_id.to_string(),
        ))
        .execute(&mut *tx)
        .await?;
    let existing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notification_endpoints WHERE client_id = $1 AND deleted_at IS NULL",
    )
    .bind(endpoint.client_id)
    .fetch_one(&mut *tx)
    .await?;
    if existing >= max_per_client {
        return Ok(None);
    }

    let row = sqlx::query_as::<_, EndpointRow>(&format!(
        "INSERT INTO notification_endpoints (endpoint_id, client_id, url, description, secret, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(endpoint.client_id)
    .bind(endpoint.url)
    .bind(endpoint.description)
    .bind(endpoint.secret)
    // The application's clock, like the `recorded_at` of events, because the
    // outbox insert compares the two to skip endpoints registered later.
    .bind(Utc::now().trunc_subsecs(6))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(row))
}

/// Lists a client's endpoints that are not deleted, newest first. Returns
/// the page and the cursor of the next one, `None` on the last page.
pub async fn list_endpoints(
    pool: &PgPool,
    client_id: Uuid,
    after: Option<PageCursor>,
    limit: i64,
) -> Result<(Vec<EndpointRow>, Option<PageCursor>), StoreError> {
    // The row after the page, when there is one, shows that another page
    // exists.
    let rows = sqlx::query_as::<_, EndpointRow>(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM notification_endpoints \
         WHERE client_id = $1 AND deleted_at IS NULL \
           AND ($2::timestamptz IS NULL OR (created_at, endpoint_id) < ($2, $3)) \
         ORDER BY created_at DESC, endpoint_id DESC \
         LIMIT $4"
    ))
    .bind(client_id)
    .bind(after.map(|cursor| cursor.created_at))
    .bind(after.map(|cursor| cursor.id))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(split_page(rows, limit, |row| PageCursor {
        created_at: row.created_at,
        id: row.endpoint_id,
    }))
}

/// Marks a client's endpoint deleted and its pending notifications
/// disabled. Returns `false` when the client has no such endpoint.
pub async fn delete_endpoint(
    pool: &PgPool,
    client_id: Uuid,
    endpoint_id: Uuid,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query(
        "UPDATE notification_endpoints SET deleted_at = now() \
         WHERE endpoint_id = $1 AND client_id = $2 AND deleted_at IS NULL",
    )
    .bind(endpoint_id)
    .bind(client_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    disable_pending(&mut tx, endpoint_id).await?;
    tx.commit().await?;
    Ok(true)
}

/// Replaces an endpoint's secret. The replaced secret keeps signing, next to
/// the new one, for `overlap`. Returns `None` when the client has no such
/// endpoint.
pub async fn rotate_secret(
    pool: &PgPool,
    client_id: Uuid,
    endpoint_id: Uuid,
    new_secret: &str,
    overlap: std::time::Duration,
) -> Result<Option<EndpointRow>, StoreError> {
    let row = sqlx::query_as::<_, EndpointRow>(&format!(
        "UPDATE notification_endpoints SET \
             previous_secret = secret, \
             previous_secret_expires_at = now() + make_interval(secs => $4), \
             secret = $3, \
             secret_rotated_at = now() \
         WHERE endpoint_id = $1 AND client_id = $2 AND deleted_at IS NULL \
         RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(endpoint_id)
    .bind(client_id)
    .bind(new_secret)
    .bind(overlap.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// A notification taken for delivery, with what the attempt needs from its
/// endpoint.
#[derive(Clone, FromRow)]
pub struct ClaimedNotification {
    pub notification_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    /// The payouts row when the event committed, as `to_jsonb` wrote it.
    pub payout: Value,
    pub created_at: DateTime<Utc>,
    /// Attempts made before this one, across redeliveries.
    pub attempts: i32,
    pub attempts_in_window: i32,
    pub retry_window_start: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    /// The secret before the last rotation, while it still signs.
    pub previous_secret: Option<String>,
    /// Whether the endpoint is neither deleted nor disabled.
    pub endpoint_active: bool,
}

/// Takes up to `limit` due notifications for `lease_seconds`. SKIP LOCKED
/// lets several workers claim side by side without waiting, and the lease
/// keeps a notification with one worker at a time. After a crash the lease
/// runs out and another worker delivers the notification.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease_seconds: f64,
) -> Result<Vec<ClaimedNotification>, StoreError> {
    let rows = sqlx::query_as::<_, ClaimedNotification>(
        "UPDATE notifications n SET lease_until = now() + make_interval(secs => $2) \
         FROM notification_endpoints e \
         WHERE e.endpoint_id = n.endpoint_id \
           AND n.notification_id IN ( \
               SELECT notification_id FROM notifications \
               WHERE status = 'pending' AND next_attempt_at <= now() \
                 AND (lease_until IS NULL OR lease_until < now()) \
               ORDER BY next_attempt_at \
               LIMIT $1 \
               FOR UPDATE SKIP LOCKED) \
         RETURNING n.notification_id, n.endpoint_id, n.event_type, n.payout, n.created_at, \
             n.attempts, n.attempts_in_window, n.retry_window_start, e.url, e.secret, \
             CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END \
                 AS previous_secret, \
             (e.deleted_at IS NULL AND e.disabled_at IS NULL) AS endpoint_active",
    )
    .bind(limit)
    .bind(lease_seconds)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// One delivery attempt: its number, when it started and what came back.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub notification_id: Uuid,
    pub endpoint_id: Uuid,
    /// 1 for the first attempt of the notification.
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub status_code: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: i32,
    /// `retry_window_start` as claimed. A later value at record time means
    /// that a redelivery was requested during the attempt.
    pub claimed_window_start: DateTime<Utc>,
}

/// Effect of an attempt on its notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Not delivered, and the next attempt is due at this time.
    Retry(DateTime<Utc>),
    /// Not delivered, and the retry window is over.
    Failed,
    /// The endpoint responded with 410 Gone, so it and its pending
    /// notifications are disabled.
    Gone,
}

/// Records an attempt and its outcome, and releases the lease. A redelivery
/// requested while the attempt ran makes the notification pending and due
/// now, whatever the outcome. Returns `false`, recording nothing, when
/// another worker recorded this attempt number first (after this worker's
/// lease ran out).
pub async fn record_attempt(
    pool: &PgPool,
    record: &AttemptRecord,
    outcome: AttemptOutcome,
) -> Result<bool, StoreError> {
    let (status, next_attempt_at) = match outcome {
        AttemptOutcome::Delivered => ("delivered", None),
        AttemptOutcome::Retry(next) => ("pending", Some(next)),
        AttemptOutcome::Failed => ("failed", None),
        AttemptOutcome::Gone => ("disabled", None),
    };

    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE notifications SET \
             status = CASE WHEN retry_window_start > $5 THEN 'pending' ELSE $2 END, \
             attempts = $3, \
             attempts_in_window = CASE WHEN retry_window_start > $5 THEN 0 \
                 ELSE attempts_in_window + 1 END, \
             next_attempt_at = CASE WHEN retry_window_start > $5 THEN now() ELSE $4 END, \
             lease_until = NULL, \
             delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END, \
             updated_at = now() \
         WHERE notification_id = $1 AND attempts = $3 - 1",
    )
    .bind(record.notification_id)
    .bind(status)
    .bind(record.attempt)
    .bind(next_attempt_at)
    .bind(record.claimed_window_start)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }

    sqlx::query(
        "INSERT INTO notification_attempts \
             (notification_id, attempt, started_at, status_code, error, duration_ms, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(record.notification_id)
    .bind(record.attempt)
    .bind(record.started_at)
    .bind(record.status_code)
    .bind(&record.error)
    .bind(record.duration_ms)
    .bind(next_attempt_at)
    .execute(&mut *tx)
    .await?;

    if outcome == AttemptOutcome::Gone {
        sqlx::query(
            "UPDATE notification_endpoints SET disabled_at = COALESCE(disabled_at, now()) \
             WHERE endpoint_id = $1",
        )
        .bind(record.endpoint_id)
        .execute(&mut *tx)
        .await?;
        disable_pending(&mut tx, record.endpoint_id).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Marks a claimed notification disabled without an attempt, because its
/// endpoint was deleted or disabled after the notification was written.
pub async fn disable_notification(pool: &PgPool, notification_id: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE notifications SET status = 'disabled', next_attempt_at = NULL, lease_until = NULL, \
             updated_at = now() \
         WHERE notification_id = $1 AND status = 'pending'",
    )
    .bind(notification_id)
    .execute(pool)
    .await?;
    Ok(())
}

async fn disable_pending(
    conn: &mut sqlx::PgConnection,
    endpoint_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE notifications SET status = 'disabled', next_attempt_at = NULL, updated_at = now() \
         WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(endpoint_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Result of a redelivery request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    Scheduled,
    /// The client has no notification with this id.
    NotFound,
    /// The notification's endpoint was deleted, or disabled after a 410 Gone.
    EndpointInactive,
}

/// Makes a client's notification pending and due now, with a new retry
/// window. Its attempts and its id stay, so the receiver gets the same
/// `webhook-id` again.
pub async fn redeliver(
    pool: &PgPool,
    client_id: Uuid,
    notification_id: Uuid,
) -> Result<Redelivery, StoreError> {
    let endpoint_active: Option<bool> = sqlx::query_scalar(
        "SELECT e.deleted_at IS NULL AND e.disabled_at IS NULL \
         FROM notifications n JOIN notification_endpoints e ON e.endpoint_id = n.endpoint_id \
         WHERE n.notification_id = $1 AND n.client_id = $2",
    )
    .bind(notification_id)
    .bind(client_id)
    .fetch_optional(pool)
    .await?;
    match endpoint_active {
        None => return Ok(Redelivery::NotFound),
        Some(false) => return Ok(Redelivery::EndpointInactive),
        Some(true) => {}
    }

    sqlx::query(
        "UPDATE notifications SET status = 'pending', next_attempt_at = now(), \
             retry_window_start = now(), attempts_in_window = 0, updated_at = now() \
         WHERE notification_id = $1",
    )
    .bind(notification_id)
    .execute(pool)
    .await?;
    Ok(Redelivery::Scheduled)
}

/// A notification as GET /v1/notifications lists it.
#[derive(Debug, Clone, FromRow)]
pub struct NotificationRow {
    pub notification_id: Uuid,
    pub endpoint_id: Uuid,
    pub payout_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AttemptRow {
    pub notification_id: Uuid,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub status_code: Option<i16>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Filters of GET /v1/notifications. `client_id` is always set.
#[derive(Debug, Clone)]
pub struct NotificationFilter {
    pub client_id: Uuid,
    pub payout_id: Option<Uuid>,
    pub endpoint_id: Option<Uuid>,
    pub status: Option<String>,
    pub after: Option<PageCursor>,
    pub limit: i64,
}

/// Lists a client's notifications newest first. Returns the page and the
/// cursor of the next one, `None` on the last page.
pub async fn list_notifications(
    pool: &PgPool,
    filter: &NotificationFilter,
) -> Result<(Vec<NotificationRow>, Option<PageCursor>), StoreError> {
    let rows = sqlx::query_as::<_, NotificationRow>(
        "SELECT notification_id, endpoint_id, payout_id, event_type, status, next_attempt_at, \
             created_at, delivered_at \
         FROM notifications \
         WHERE client_id = $1 \
           AND ($2::uuid IS NULL OR payout_id = $2) \
           AND ($3::uuid IS NULL OR endpoint_id = $3) \
           AND ($4::text IS NULL OR status = $4) \
           AND ($5::timestamptz IS NULL OR (created_at, notification_id) < ($5, $6)) \
         ORDER BY created_at DESC, notification_id DESC \
         LIMIT $7",
    )
    .bind(filter.client_id)
    .bind(filter.payout_id)
    .bind(filter.endpoint_id)
    .bind(&filter.status)
    .bind(filter.after.map(|cursor| cursor.created_at))
    .bind(filter.after.map(|cursor| cursor.id))
    .bind(filter.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(split_page(rows, filter.limit, |row| PageCursor {
        created_at: row.created_at,
        id: row.notification_id,
    }))
}

/// Returns the attempts of the given notifications, in attempt order.
pub async fn attempts_of(
    pool: &PgPool,
    notification_ids: &[Uuid],
) -> Result<Vec<AttemptRow>, StoreError> {
    let rows = sqlx::query_as::<_, AttemptRow>(
        "SELECT notification_id, attempt, started_at, status_code, error, duration_ms, \
             next_attempt_at \
         FROM notification_attempts \
         WHERE notification_id = ANY($1) \
         ORDER BY notification_id, attempt",
    )
    .bind(notification_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Cuts the extra row fetched beyond `limit` and returns the cursor of the
/// next page when there was one.
fn split_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> PageCursor,
) -> (Vec<T>, Option<PageCursor>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(cursor_of);
    (rows, next)
}
