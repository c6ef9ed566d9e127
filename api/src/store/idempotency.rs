//! Stored responses of requests made with an Idempotency-Key.
//!
//! A record is written in the same transaction as the events it answers for,
//! so either both exist or neither does. While the first request runs it
//! holds a transaction-scoped advisory lock on (client, key); a second request
//! that cannot take the lock is told the first one is still in progress.

use serde_json::Value;
use uuid::Uuid;

use super::{StoreError, UnitOfWork};

/// Namespace of the advisory locks taken on idempotency keys.
pub const LOCK_NAMESPACE: &str = "idempotency";

#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub fingerprint: Vec<u8>,
    pub status_code: u16,
    pub body: Value,
}

pub fn lock_name(client_id: Uuid, key: &str) -> String {
    format!("{client_id}:{key}")
}

impl UnitOfWork {
    pub async fn stored_response(
        &mut self,
        client_id: Uuid,
        key: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let row: Option<(Vec<u8>, i16, Value)> = sqlx::query_as(
            "SELECT fingerprint, status_code, response_body FROM idempotency_keys \
             WHERE client_id = $1 AND key = $2",
        )
        .bind(client_id)
        .bind(key)
        .fetch_optional(self.connection())
        .await?;
        Ok(row.map(|(fingerprint, status_code, body)| StoredResponse {
            fingerprint,
            status_code: status_code as u16,
            body,
        }))
    }

    pub async fn store_response(
        &mut self,
        client_id: Uuid,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO idempotency_keys (client_id, key, fingerprint, status_code, response_body) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(client_id)
        .bind(key)
        .bind(&response.fingerprint)
        .bind(response.status_code as i16)
        .bind(&response.body)
        .execute(self.connection())
        .await?;
        Ok(())
    }
}
