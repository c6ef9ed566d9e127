//! API clients and their hashed secrets.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::{StoreError, lock_key};
use crate::auth::Role;

#[derive(Debug, Clone, FromRow)]
pub struct ClientRow {
    pub client_id: Uuid,
    pub name: String,
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

pub struct NewClient<'a> {
    pub client_id: Uuid,
    pub name: &'a str,
    pub role: Role,
    pub secret_hash: &'a [u8],
    pub created_by: Option<Uuid>,
}

pub async fn find(pool: &PgPool, client_id: Uuid) -> Result<Option<ClientRow>, StoreError> {
    let row = sqlx::query_as::<_, ClientRow>(
        "SELECT client_id, name, role, secret_hash, created_at FROM clients WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

pub async fn insert(
    conn: &mut PgConnection,
    client: &NewClient<'_>,
) -> Result<DateTime<Utc>, StoreError> {
    let created_at = sqlx::query_scalar(
        "INSERT INTO clients (client_id, name, role, secret_hash, created_by) \
         VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
    )
    .bind(client.client_id)
    .bind(client.name)
    .bind(client.role.as_str())
    .bind(client.secret_hash)
    .bind(client.created_by)
    .fetch_one(conn)
    .await?;
    Ok(created_at)
}

/// Creates the first admin unless an admin exists, in the caller's
/// transaction. Returns `None` when one does. Concurrent calls are
/// serialized by an advisory lock held until the transaction ends, so at
/// most one of them creates an admin.
pub async fn insert_first_admin(
    conn: &mut PgConnection,
    client: &NewClient<'_>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key("bootstrap", "admin"))
        .execute(&mut *conn)
        .await?;
    let admin_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clients WHERE role = 'admin')")
            .fetch_one(&mut *conn)
            .await?;
    if admin_exists {
        return Ok(None);
    }
    let created_at = sqlx::query_scalar(
        "INSERT INTO clients (client_id, name, role, secret_hash) VALUES ($1, $2, 'admin', $3) \
         RETURNING created_at",
    )
    .bind(client.client_id)
    .bind(client.name)
    .bind(client.secret_hash)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(created_at))
}
