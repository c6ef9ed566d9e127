//! Commands: each runs in one unit of work behind an idempotency record.

pub mod clients;
pub mod deposits;
pub mod dispatch;
pub mod outcomes;
pub mod payouts;
pub mod replays;
pub mod tokens;

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{SubsecRound, Utc};
use nepxy_ledger::metadata::{Actor, EventMetadata, Source};
use nepxy_ledger::{PayoutError, WalletError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::store::idempotency::StoredResponse;
use crate::store::{KeyClaim, KeyTaken, LoadPlan, LoadedSet, Opened, Store, UnitOfWork};

/// Attempts of a command that lost an optimistic-concurrency race to a writer
/// outside this service's locks (two instances before the lock was taken).
const MAX_CONFLICT_ATTEMPTS: u32 = 5;
/// Base delay between those attempts, doubled each time.
const CONFLICT_BACKOFF_BASE: Duration = Duration::from_millis(10);

/// The HTTP result of a command.
#[derive(Debug)]
pub struct Outcome {
    pub status: StatusCode,
    pub body: Value,
    /// Whether the body is a stored answer to an earlier identical request.
    pub replayed: bool,
}

/// Everything that identifies one idempotent request.
pub struct IdempotentRequest<'a> {
    pub principal: &'a Principal,
    pub key: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a Value,
    pub request_id: Option<String>,
}

impl IdempotentRequest<'_> {
    /// SHA-256 of the method, the path and the body; serde_json orders object
    /// keys, so the same document with keys reordered has the same fingerprint.
    fn fingerprint(&self) -> Vec<u8> {
        Sha256::new()
            .chain_update(self.method.as_bytes())
            .chain_update(b"\n")
            .chain_update(self.path.as_bytes())
            .chain_update(b"\n")
            .chain_update(self.body.to_string().as_bytes())
            .finalize()
            .to_vec()
    }

    pub fn metadata(&self, source: Source) -> EventMetadata {
        EventMetadata {
            request_id: self.request_id.clone(),
            actor: Some(Actor {
                subject: self.principal.client_id.to_string(),
                role: self.principal.role.to_string(),
            }),
            source,
            idempotency_key: Some(self.key.to_owned()),
            webhook_id: None,
            reason: None,
            recorded_at: Utc::now().trunc_subsecs(6),
        }
    }
}

/// Runs `work` once per (client, Idempotency-Key): the first request executes
/// it and stores its answer in the same transaction; later identical requests
/// get that answer again; a different request under the same key is a 422;
/// a request that arrives while the first still runs is a 409.
///
/// The key's check, the plan's locks and its loads are one round trip, and
/// `work` gets the loaded aggregates.
pub async fn run_idempotent<F, Fut>(
    store: &Store,
    request: &IdempotentRequest<'_>,
    plan: &LoadPlan<'_>,
    mut work: F,
) -> Result<Outcome, ApiError>
where
    F: FnMut(UnitOfWork, LoadedSet) -> Fut,
    Fut: Future<Output = (UnitOfWork, Result<(StatusCode, Value), ApiError>)>,
{
    let client_id = request.principal.client_id;
    let fingerprint = request.fingerprint();
    let claim = KeyClaim {
        client_id,
        key: request.key,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut unit = store.begin().await?;
        let opened = match unit.open(&[claim], plan).await {
            Ok(opened) => opened,
            Err(error) => {
                release(unit).await;
                return Err(error.into());
            }
        };
        let loaded = match opened {
            Opened::Ready(loaded) => loaded,
            Opened::KeysTaken(mut taken) => {
                // Rolled back before the response, so that the key's lock is
                // free when the client sends its next request.
                release(unit).await;
                let (_, taken) = taken.pop().ok_or_else(|| {
                    ApiError::Internal("the key was reported taken without a state".to_owned())
                })?;
                return key_taken_outcome(taken, &fingerprint);
            }
        };

        let (unit, result) = work(unit, loaded).await;
        let result = match result {
            Ok((status, body)) => {
                finish(unit, status, body, client_id, request.key, &fingerprint).await
            }
            Err(error) => {
                release(unit).await;
                Err(error)
            }
        };
        match result {
            Err(ApiError::WriteConflict { .. }) if attempt < MAX_CONFLICT_ATTEMPTS => {
                tracing::warn!(
                    attempt,
                    "concurrent write to the same aggregate; retrying the command"
                );
                tokio::time::sleep(CONFLICT_BACKOFF_BASE * 2_u32.pow(attempt - 1)).await;
            }
            result => return result,
        }
    }
}

/// Returns the response to a request whose Idempotency-Key another request
/// took: 409 while that request runs, its stored response when the
/// fingerprints match, 422 when they differ.
fn key_taken_outcome(taken: KeyTaken, fingerprint: &[u8]) -> Result<Outcome, ApiError> {
    match taken {
        KeyTaken::Busy => Err(ApiError::Conflict {
            detail:
                "a request with this Idempotency-Key is still in progress; retry after it completes"
                    .to_owned(),
        }),
        KeyTaken::Stored(stored) if stored.fingerprint != fingerprint => {
            Err(ApiError::IdempotencyKeyReused)
        }
        KeyTaken::Stored(stored) => Ok(Outcome {
            status: StatusCode::from_u16(stored.status_code).unwrap_or(StatusCode::OK),
            body: stored.body,
            replayed: true,
        }),
    }
}

/// Rolls back a unit of work before the response is sent. Dropping it would
/// also roll back, but only when the pool reuses the connection. Until then
/// the Idempotency-Key's lock stays taken, so a prompt retry gets 409.
pub(crate) async fn release(unit: UnitOfWork) {
    if let Err(error) = unit.rollback().await {
        tracing::warn!(error = %error, "rollback failed; the connection is dropped instead");
    }
}

/// Stores the answer of a command that ran and commits its unit of work.
async fn finish(
    mut unit: UnitOfWork,
    status: StatusCode,
    body: Value,
    client_id: Uuid,
    key: &str,
    fingerprint: &[u8],
) -> Result<Outcome, ApiError> {
    let response = StoredResponse {
        fingerprint: fingerprint.to_vec(),
        status_code: status.as_u16(),
        body,
    };
    unit.store_response(client_id, key, &response);
    unit.commit().await?;
    Ok(Outcome {
        status,
        body: response.body,
        replayed: false,
    })
}

impl From<WalletError> for ApiError {
    fn from(error: WalletError) -> Self {
        match error {
            WalletError::InsufficientFunds { .. } => ApiError::InsufficientFunds {
                detail: format!("{error}; deposit funds or lower the amount"),
            },
            WalletError::NotPositive(_) | WalletError::Overflow => {
                ApiError::validation("amount", error.to_string())
            }
            WalletError::WrongClient { .. }
            | WalletError::WrongCurrency { .. }
            | WalletError::ReusedId(_) => ApiError::Conflict {
                detail: error.to_string(),
            },
            WalletError::UnknownHold(_) | WalletError::HoldClosed { .. } => ApiError::Conflict {
                detail: error.to_string(),
            },
        }
    }
}

impl From<PayoutError> for ApiError {
    fn from(error: PayoutError) -> Self {
        ApiError::Conflict {
            detail: error.to_string(),
        }
    }
}
