//! Writes collected in memory and sent to PostgreSQL in one round trip.
//!
//! A command appends events, updates read models and outbox rows, and stores
//! its idempotency record. Sent one statement at a time, that was about
//! twenty round trips per payout. [`Writes`] keeps the writes in order
//! instead, and [`Writes::apply`] passes the list to the `nepxy_apply_writes`
//! function (migration `command_functions`). The function runs them one
//! after another in the caller's transaction, so each write reads the
//! effects of the ones before it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;

/// One write. The `write` tag names the branch of `nepxy_apply_writes` that
/// runs it; the fields are that branch's inputs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "write", rename_all = "snake_case")]
pub enum Write {
    /// Events of one aggregate, all with the same metadata.
    Events {
        aggregate_type: &'static str,
        aggregate_id: String,
        events: Vec<NewEvent>,
        /// The metadata as JSON text, stored as it is.
        metadata: String,
        recorded_at: DateTime<Utc>,
    },
    Balance {
        client_id: Uuid,
        currency: &'static str,
        available_delta: i64,
        held_delta: i64,
        sequence: i64,
        recorded_at: DateTime<Utc>,
    },
    Postings {
        aggregate_type: &'static str,
        aggregate_id: String,
        sequence: i64,
        postings: Vec<Posting>,
        recorded_at: DateTime<Utc>,
    },
    Deposit {
        wallet_id: String,
        deposit_id: Uuid,
        amount_minor: i64,
        sequence: i64,
    },
    Hold {
        wallet_id: String,
        payout_id: Uuid,
        amount_minor: i64,
        state: &'static str,
        provider: Option<&'static str>,
        sequence: i64,
    },
    Payout {
        payout_id: Uuid,
        client_id: Uuid,
        amount_minor: i64,
        currency: &'static str,
        provider: &'static str,
        msisdn: String,
        recipient_name: Option<String>,
        reference: Option<String>,
        country_code: i32,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
        sequence: i64,
    },
    /// The dispatcher's outbox row of a new payout.
    DispatchQueued {
        payout_id: Uuid,
        provider: &'static str,
        at: DateTime<Utc>,
    },
    PayoutStatus {
        payout_id: Uuid,
        status: Option<&'static str>,
        provider_ref: Option<String>,
        failure_code: Option<String>,
        sequence: i64,
        recorded_at: DateTime<Utc>,
    },
    DispatchState {
        payout_id: Uuid,
        state: &'static str,
    },
    /// The notification outbox rows of a payout's final event.
    Notification {
        payout_id: Uuid,
        event_type: &'static str,
        at: DateTime<Utc>,
    },
    History {
        aggregate_type: &'static str,
        aggregate_id: String,
        sequence: i64,
        event_type: String,
        event_version: String,
        payout_id: Option<Uuid>,
        client_id: Option<Uuid>,
        request_id: Option<String>,
        source: String,
        recorded_at: DateTime<Utc>,
    },
    /// Replaces the aggregate's snapshot.
    Snapshot {
        aggregate_type: &'static str,
        aggregate_id: String,
        sequence: i64,
        /// The aggregate as JSON text.
        payload: String,
    },
    /// The stored response to an Idempotency-Key.
    Response {
        client_id: Uuid,
        key: String,
        /// Hex digits of the request's fingerprint.
        fingerprint: String,
        status_code: u16,
        body: serde_json::Value,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct NewEvent {
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The event as JSON text, stored as it is.
    pub payload: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Posting {
    pub account: String,
    pub currency: &'static str,
    pub debit_minor: i64,
    pub credit_minor: i64,
}

/// An ordered list of writes.
#[derive(Debug, Default)]
pub struct Writes {
    items: Vec<Write>,
}

impl Writes {
    pub fn push(&mut self, write: Write) {
        self.items.push(write);
    }

    /// Removes the writes and returns them in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Write> {
        self.items.drain(..)
    }

    /// Runs every write in order in one round trip and empties the list. A
    /// failing write fails the call with PostgreSQL's error and leaves the
    /// caller's transaction aborted.
    pub async fn apply(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let document = serde_json::to_string(&self.items)
            .map_err(|error| ProjectionError::Corrupt(format!("writes: {error}")))?;
        sqlx::query("SELECT nepxy_apply_writes($1::jsonb)")
            .bind(document)
            .execute(&mut *conn)
            .await?;
        self.items.clear();
        Ok(())
    }
}
