//! PostgreSQL persistence: the event store, clients, tokens and idempotency
//! records.

pub mod audit;
pub mod clients;
pub mod dispatch;
pub mod events;
pub mod idempotency;
pub mod notifications;
pub mod tokens;
pub mod webhooks;

use sha2::{Digest, Sha256};

pub use events::{KeyClaim, KeyTaken, LoadPlan, Loaded, LoadedSet, Opened, Store, UnitOfWork};

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another writer appended to the same aggregate first; `event` names
    /// the (aggregate type, id, sequence) both wrote.
    #[error("concurrent write: {event}")]
    Conflict { event: String },
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl From<nepxy_ledger::upcast::UpcastError> for StoreError {
    fn from(error: nepxy_ledger::upcast::UpcastError) -> Self {
        StoreError::Corrupt(format!("stored event: {error}"))
    }
}

impl From<nepxy_projections::ProjectionError> for StoreError {
    fn from(error: nepxy_projections::ProjectionError) -> Self {
        match error {
            nepxy_projections::ProjectionError::Database(error) => StoreError::Database(error),
            nepxy_projections::ProjectionError::Corrupt(message) => StoreError::Corrupt(message),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// A 64-bit key for PostgreSQL advisory locks, taken from SHA-256 so that
/// different names practically never share a lock.
pub fn lock_key(namespace: &str, name: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(namespace.as_bytes())
        .chain_update([0])
        .chain_update(name.as_bytes())
        .finalize();
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}
