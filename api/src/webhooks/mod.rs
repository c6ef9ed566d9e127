//! Provider webhooks: one adapter per provider, each owning its signature
//! check, its payload parser and its status mapping, behind [`ProviderAdapter`].

pub mod amount;
pub mod confirm;
pub mod intake;
pub mod momo;
pub mod retry;
pub mod thunes;
pub mod tmoney;

use chrono::{DateTime, Utc};
use nepxy_ledger::Provider;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest clock difference accepted between a signed timestamp and now, in
/// either direction.
pub const TIMESTAMP_TOLERANCE_SECONDS: i64 = 300;

/// One received delivery, as the adapters see it.
pub struct Delivery<'a> {
    /// Header names in lowercase with their values, in arrival order; a name
    /// may appear more than once.
    pub headers: &'a [(String, String)],
    /// The body exactly as received.
    pub body: &'a [u8],
    /// The callback token of `/v1/webhooks/momo/{callback_token}`.
    pub path_token: Option<&'a str>,
}

impl Delivery<'_> {
    /// Every value of a header, by lowercase name.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// Signing secrets of one provider: the current one and, during rotation,
/// the previous one. Either verifies.
#[derive(Clone, Default)]
pub struct Secrets {
    pub current: Option<Vec<u8>>,
    pub previous: Option<Vec<u8>>,
}

impl Secrets {
    pub fn all(&self) -> impl Iterator<Item = &[u8]> {
        self.current
            .iter()
            .chain(self.previous.iter())
            .map(Vec::as_slice)
    }
}

/// Facts established by a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The provider's nonce or event id, accepted only once.
    pub replay_key: Option<String>,
    /// The payout the delivery is bound to by its URL, for providers that put
    /// our id in the callback URL (MTN MoMo).
    pub payout_id: Option<Uuid>,
}

/// Reason a delivery failed verification. Every variant gets a 401 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no webhook secret is configured for {0}")]
    NotConfigured(Provider),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {name} is malformed: {reason}")]
    MalformedHeader { name: &'static str, reason: String },
    #[error("signature does not match the body")]
    BadSignature,
    #[error(
        "timestamp {timestamp} is more than {TIMESTAMP_TOLERANCE_SECONDS} s from the server time {now}"
    )]
    Stale { timestamp: i64, now: i64 },
    #[error("callback token is invalid")]
    BadToken,
}

/// Reason a verified body could not be read. It gets a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Outcome a provider reports, in our terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Pending,
    Succeeded,
    Failed,
    Reversed,
}

/// A provider's report in one normalized form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub provider: Provider,
    /// Our payout id as the provider echoes it (not always a UUID).
    pub external_ref: String,
    pub provider_ref: Option<String>,
    pub status: ReportStatus,
    /// The provider's own status value, e.g. `SUCCESSFUL` or `70000`.
    pub raw_status: String,
    pub failure_code: Option<String>,
    /// Amount in minor units of `currency`, when the report has one.
    pub amount_minor: Option<i64>,
    /// ISO 4217 code as reported, even when the ledger does not know it.
    pub currency: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// One provider's webhook rules.
pub trait ProviderAdapter: Send + Sync {
    fn provider(&self) -> Provider;

    /// Checks the delivery's authenticity. `now` is Unix seconds; with
    /// `check_freshness` false (operator replays) old timestamps pass, but
    /// the signature must still match.
    fn verify(
        &self,
        delivery: &Delivery<'_>,
        secrets: &Secrets,
        now: i64,
        check_freshness: bool,
    ) -> Result<Verified, Rejection>;

    /// Reads the body into a report. Unknown fields are ignored, and an
    /// unknown provider status maps to pending (with an alert in the log).
    fn parse(&self, body: &[u8]) -> Result<Report, ParseError>;
}

/// The adapter of a provider.
pub fn adapter(provider: Provider) -> &'static dyn ProviderAdapter {
    match provider {
        Provider::Tmoney => &tmoney::Tmoney,
        Provider::Thunes => &thunes::Thunes,
        Provider::Momo => &momo::Momo,
    }
}
