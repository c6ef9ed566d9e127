//! Reads of the read-model tables.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use crate::ProjectionError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct PayoutRow {
    pub payout_id: Uuid,
    pub client_id: Uuid,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
    pub provider: String,
    pub msisdn: String,
    pub recipient_name: Option<String>,
    /// NULL only in rows projected by a binary older than this column.
    pub country_code: Option<i32>,
    pub reference: Option<String>,
    pub provider_ref: Option<String>,
    pub failure_code: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct BalanceRow {
    pub currency: String,
    pub available_minor: i64,
    pub held_minor: i64,
}

/// Position after which a page of payouts starts, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayoutCursor {
    pub created_at: DateTime<Utc>,
    pub payout_id: Uuid,
}

#[derive(Debug, Clone, Default)]
pub struct PayoutFilter {
    pub client_id: Option<Uuid>,
    pub status: Option<String>,
    pub after: Option<PayoutCursor>,
    pub limit: i64,
}

const PAYOUT_COLUMNS: &str = "payout_id, client_id, status, amount_minor, currency, provider, msisdn, \
     recipient_name, country_code, reference, provider_ref, failure_code, created_at, updated_at";

pub async fn payout(pool: &PgPool, payout_id: Uuid) -> Result<Option<PayoutRow>, ProjectionError> {
    let row = sqlx::query_as::<_, PayoutRow>(&format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE payout_id = $1"
    ))
    .bind(payout_id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Lists payouts newest first. Returns the page and the cursor of the next
/// page, which is `None` on the last page.
pub async fn payouts(
    pool: &PgPool,
    filter: &PayoutFilter,
) -> Result<(Vec<PayoutRow>, Option<PayoutCursor>), ProjectionError> {
    // One row more than the page tells whether another page exists.
    let rows = sqlx::query_as::<_, PayoutRow>(&format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts \
         WHERE ($1::uuid IS NULL OR client_id = $1) \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR (created_at, payout_id) < ($3, $4)) \
         ORDER BY created_at DESC, payout_id DESC \
         LIMIT $5"
    ))
    .bind(filter.client_id)
    .bind(&filter.status)
    .bind(filter.after.map(|cursor| cursor.created_at))
    .bind(filter.after.map(|cursor| cursor.payout_id))
    .bind(filter.limit + 1)
    .fetch_all(pool)
    .await?;

    let mut rows = rows;
    let next = if rows.len() as i64 > filter.limit {
        rows.truncate(filter.limit as usize);
        rows.last().map(|row| PayoutCursor {
            created_at: row.created_at,
            payout_id: row.payout_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

pub async fn balances(pool: &PgPool, client_id: Uuid) -> Result<Vec<BalanceRow>, ProjectionError> {
    let rows = sqlx::query_as::<_, BalanceRow>(
        "SELECT currency, available_minor, held_minor FROM wallet_balances \
         WHERE client_id = $1 ORDER BY currency",
    )
    .bind(client_id)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Debits minus credits per currency over all journal postings; every value
/// is zero when the books balance.
pub async fn journal_imbalance(pool: &PgPool) -> Result<Vec<(String, i64)>, ProjectionError> {
    let rows = sqlx::query_as::<_, (String, i64)>(
        "SELECT currency, (sum(debit_minor) - sum(credit_minor))::bigint \
         FROM journal_postings GROUP BY currency ORDER BY currency",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// A wallet whose read-model balance differs from the sum of its postings.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct WalletMismatch {
    pub client_id: Uuid,
    pub currency: String,
    pub available_minor: i64,
    pub held_minor: i64,
    pub posted_available_minor: i64,
    pub posted_held_minor: i64,
}

/// Wallets whose `wallet_balances` row disagrees with `journal_postings`.
pub async fn wallet_mismatches(pool: &PgPool) -> Result<Vec<WalletMismatch>, ProjectionError> {
    let rows = sqlx::query_as::<_, WalletMismatch>(
        "WITH posted AS ( \
             SELECT account, currency, (sum(debit_minor) - sum(credit_minor))::bigint AS balance \
             FROM journal_postings WHERE account LIKE 'client:%' GROUP BY account, currency) \
         SELECT w.client_id, w.currency, w.available_minor, w.held_minor, \
                COALESCE(a.balance, 0) AS posted_available_minor, \
                COALESCE(h.balance, 0) AS posted_held_minor \
         FROM wallet_balances w \
         LEFT JOIN posted a ON a.account = 'client:' || w.client_id || ':available' AND a.currency = w.currency \
         LEFT JOIN posted h ON h.account = 'client:' || w.client_id || ':held' AND h.currency = w.currency \
         WHERE w.available_minor <> COALESCE(a.balance, 0) OR w.held_minor <> COALESCE(h.balance, 0) \
         ORDER BY w.client_id, w.currency",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Client available or held accounts whose postings sum below zero.
pub async fn negative_available_accounts(
    pool: &PgPool,
) -> Result<Vec<(String, String, i64)>, ProjectionError> {
    let rows = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT account, currency, (sum(debit_minor) - sum(credit_minor))::bigint AS balance \
         FROM journal_postings \
         WHERE account LIKE 'client:%' \
         GROUP BY account, currency \
         HAVING sum(debit_minor) - sum(credit_minor) < 0 \
         ORDER BY account, currency",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
