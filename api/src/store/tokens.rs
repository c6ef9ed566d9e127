//! Refresh token families, refresh tokens (by SHA-256 hash) and the record of
//! issued access tokens, with their revocation state.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

/// Returns whether the access token `jti` was revoked, and `false` for an id
/// that was never recorded.
pub async fn access_token_revoked(pool: &PgPool, jti: &str) -> Result<bool, StoreError> {
    let revoked: Option<bool> =
        sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM access_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(pool)
            .await?;
    Ok(revoked.unwrap_or(false))
}

pub async fn insert_family(
    conn: &mut PgConnection,
    family_id: Uuid,
    client_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO token_families (family_id, client_id) VALUES ($1, $2)")
        .bind(family_id)
        .bind(client_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
    family_id: Uuid,
    client_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, client_id, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(token_hash)
    .bind(family_id)
    .bind(client_id)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub struct NewAccessToken<'a> {
    pub jti: &'a str,
    pub client_id: Uuid,
    pub family_id: Option<Uuid>,
    /// `iat` and `exp` of the token, in Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
}

// NOTE: nothing deletes rows of access_tokens, refresh_tokens or
// token_families yet, so they grow by one row per grant and per refresh.
// Expired access token rows can be deleted at any time, because an expired
// token is rejected before this table is read.
pub async fn insert_access_token(
    conn: &mut PgConnection,
    token: &NewAccessToken<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO access_tokens (jti, client_id, family_id, issued_at, expires_at) \
         VALUES ($1, $2, $3, to_timestamp($4), to_timestamp($5))",
    )
    .bind(token.jti)
    .bind(token.client_id)
    .bind(token.family_id)
    .bind(token.issued_at as f64)
    .bind(token.expires_at as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// A refresh token as found by its hash, with its family and client.
#[derive(Debug, FromRow)]
pub struct RefreshTokenRow {
    pub family_id: Uuid,
    pub client_id: Uuid,
    pub role: String,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub family_revoked_at: Option<DateTime<Utc>>,
}

/// Finds a refresh token and locks it and its family until the transaction
/// ends. Two exchanges of the same token therefore run one after the other,
/// and the second reads the `used_at` that the first set. A revocation of the family
/// waits for the exchange too, so it also covers the access token the
/// exchange issues.
pub async fn lock_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<RefreshTokenRow>, StoreError> {
    let row = sqlx::query_as::<_, RefreshTokenRow>(
        "SELECT r.family_id, r.client_id, c.role, r.expires_at, r.used_at, \
                f.revoked_at AS family_revoked_at \
         FROM refresh_tokens r \
         JOIN token_families f ON f.family_id = r.family_id \
         JOIN clients c ON c.client_id = r.client_id \
         WHERE r.token_hash = $1 \
         FOR UPDATE OF r, f",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?;
    Ok(row)
}

pub async fn mark_refresh_token_used(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Families and access tokens that one revocation changed.
#[derive(Debug, Default)]
pub struct Revoked {
    pub families: i64,
    /// Ids of the access tokens revoked now that have not expired yet.
    pub access_tokens: Vec<String>,
}

/// Revokes a family and every unexpired access token issued from it.
pub async fn revoke_family(
    conn: &mut PgConnection,
    family_id: Uuid,
) -> Result<Revoked, StoreError> {
    revoke_matching(conn, "family_id", family_id).await
}

/// Revokes every family and every unexpired access token of a client.
pub async fn revoke_client(
    conn: &mut PgConnection,
    client_id: Uuid,
) -> Result<Revoked, StoreError> {
    revoke_matching(conn, "client_id", client_id).await
}

/// Revokes the families and unexpired access tokens whose `column`, a column
/// of both tables, equals `id`. Families are updated first, so a concurrent
/// refresh, which locks its family row, either finishes before the access
/// token update or reads the family as revoked.
async fn revoke_matching(
    conn: &mut PgConnection,
    column: &'static str,
    id: Uuid,
) -> Result<Revoked, StoreError> {
    let families = sqlx::query(&format!(
        "UPDATE token_families SET revoked_at = now() \
         WHERE {column} = $1 AND revoked_at IS NULL"
    ))
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let access_tokens = sqlx::query_scalar(&format!(
        "UPDATE access_tokens SET revoked_at = now() \
         WHERE {column} = $1 AND revoked_at IS NULL AND expires_at > now() \
         RETURNING jti"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Revoked {
        families: families as i64,
        access_tokens,
    })
}

/// Finds the owner of a recorded access token and locks the token's row
/// until the transaction ends.
pub async fn lock_access_token(
    conn: &mut PgConnection,
    jti: &str,
) -> Result<Option<Uuid>, StoreError> {
    let owner = sqlx::query_scalar("SELECT client_id FROM access_tokens WHERE jti = $1 FOR UPDATE")
        .bind(jti)
        .fetch_optional(conn)
        .await?;
    Ok(owner)
}

/// Revokes one access token; `false` when it was already revoked.
pub async fn revoke_access_token(conn: &mut PgConnection, jti: &str) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE access_tokens SET revoked_at = now() WHERE jti = $1 AND revoked_at IS NULL",
    )
    .bind(jti)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// Finds the family and owner of a refresh token, spent or not.
pub async fn find_refresh_token(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<(Uuid, Uuid)>, StoreError> {
    let row =
        sqlx::query_as("SELECT family_id, client_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(conn)
            .await?;
    Ok(row)
}
