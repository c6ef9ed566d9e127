//! An event as stored, with its position and metadata.

use chrono::{DateTime, Utc};
use nepxy_ledger::metadata::EventMetadata;

#[derive(Debug, Clone)]
pub struct EventRecord<E> {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event: E,
    pub metadata: EventMetadata,
    pub recorded_at: DateTime<Utc>,
}
