//! Read models of the Nepxy ledger, built from its events.
//!
//! [`views`] turns one stored event into the writes that apply it to the
//! read-model tables, and [`writes`] sends them in one round trip inside the
//! caller's transaction; every write is guarded by the event's
//! (aggregate id, sequence), so applying an event twice changes nothing.
//! [`rebuild`] replays every event into shadow tables: [`fold`] applies the
//! same writes in memory, and [`copy_text`] loads the rows with COPY.
//! [`queries`] reads those tables for the API.

pub mod catchup;
pub mod copy_text;
pub mod feed;
pub mod fold;
pub mod queries;
pub mod rebuild;
pub mod record;
pub mod views;
pub mod writes;

pub use record::EventRecord;
pub use views::Projected;
pub use writes::{Write, Writes};

/// Errors of the read-model layer.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
}
