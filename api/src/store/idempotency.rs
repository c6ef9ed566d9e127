//! Stored responses of requests made with an Idempotency-Key. They are read
//! by [`super::UnitOfWork::open`] and written by
//! [`super::UnitOfWork::store_response`].
//!
//! A record is written in the same transaction as the events it answers for,
//! so either both exist or neither does. While the first request runs it
//! holds a transaction-scoped advisory lock on (client, key); a second request
//! that cannot take the lock is told the first one is still in progress.

use serde_json::Value;
use uuid::Uuid;

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
