//! Metadata stored beside every event.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What caused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Api,
    Webhook,
    Dispatcher,
    Replay,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub subject: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub request_id: Option<String>,
    pub actor: Option<Actor>,
    pub source: Source,
    pub idempotency_key: Option<String>,
    pub webhook_id: Option<String>,
    /// Why an operator made the change, for replays and admin actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub recorded_at: DateTime<Utc>,
}
