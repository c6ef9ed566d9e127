//! Outbound payout providers: one adapter per provider behind
//! [`PayoutProvider`], each with explicit timeouts.
//!
//! Every provider-side reference is derived from the payout id (the MoMo
//! X-Reference-Id is the payout UUID, the Thunes external_id and the TMoney
//! reference are its text), so a retried or resumed submission can never
//! create a second provider transaction.

pub mod config;
pub mod momo;
pub mod money;
pub mod thunes;
pub mod tmoney;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nepxy_ledger::{Currency, Msisdn, Provider};
use uuid::Uuid;

/// Longest wait for one provider HTTP request, unless PROVIDER_TIMEOUT_MS
/// says otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a TCP connection to a provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Payout order sent to a provider.
#[derive(Debug, Clone)]
pub struct PayoutOrder {
    pub payout_id: Uuid,
    pub amount_minor: i64,
    pub currency: Currency,
    pub msisdn: Msisdn,
    pub recipient_name: Option<String>,
    pub reference: Option<String>,
    /// Path segment of the MoMo callback URL, `/v1/webhooks/momo/{token}`.
    pub callback_token: String,
}

/// A provider's view of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferState {
    /// Accepted and in progress.
    Pending {
        provider_ref: Option<String>,
    },
    Succeeded {
        provider_ref: Option<String>,
    },
    Failed {
        code: String,
    },
    /// The provider has no transfer with this reference: submitting again
    /// with the same reference is safe.
    NotFound,
}

/// Failure of a provider call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// A timeout, a transport error or a 429: retry later with the same
    /// reference. `retry_after` is the provider's Retry-After, when given.
    #[error("transient failure: {reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider may or may not have created the transfer (a timeout
    /// after sending, an ambiguous 5xx). From `submit` it means the adapter
    /// already asked for the status and that lookup failed too.
    #[error("ambiguous failure: {reason}")]
    Ambiguous { reason: String },
    /// A request the provider will never accept as sent (bad credentials,
    /// a 4xx that is not a business failure); needs an operator.
    #[error("provider refused the request: {reason}")]
    Refused { reason: String },
}

/// One provider's payout API.
#[async_trait]
pub trait PayoutProvider: Send + Sync {
    fn provider(&self) -> Provider;

    /// Submits the payout. `Ok` is the transfer's state after submission: a
    /// business failure the provider reports synchronously (MoMo answers
    /// NOT_ENOUGH_FUNDS with HTTP 500) is `Ok(TransferState::Failed)`.
    async fn submit(&self, order: &PayoutOrder) -> Result<TransferState, ProviderError>;

    /// Asks for the state of the transfer of `payout_id`.
    async fn status(&self, payout_id: Uuid) -> Result<TransferState, ProviderError>;
}

/// Classifies a reqwest failure: a timeout or a failure after the request
/// was sent is ambiguous, a connection failure is transient.
pub fn classify_transport(error: &reqwest::Error) -> ProviderError {
    if error.is_connect() {
        ProviderError::Transient {
            reason: format!("connection failed: {error}"),
            retry_after: None,
        }
    } else {
        ProviderError::Ambiguous {
            reason: format!("request failed or timed out: {error}"),
        }
    }
}

/// Reads a Retry-After header given in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The adapters of every configured provider, each with the configured
/// request timeout.
pub fn build(config: &config::ProvidersConfig) -> BTreeMap<Provider, Arc<dyn PayoutProvider>> {
    let mut providers: BTreeMap<Provider, Arc<dyn PayoutProvider>> = BTreeMap::new();
    let http = match http_client_with_timeout(config.request_timeout) {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(error = %error, "could not build the provider HTTP client; no provider is available");
            return providers;
        }
    };
    if let Some(momo) = &config.momo {
        providers.insert(
            Provider::Momo,
            Arc::new(momo::MomoClient::with_client(momo.clone(), http.clone())),
        );
    }
    if let Some(thunes) = &config.thunes {
        providers.insert(
            Provider::Thunes,
            Arc::new(thunes::ThunesClient::with_client(
                thunes.clone(),
                http.clone(),
            )),
        );
    }
    if let Some(tmoney) = &config.tmoney {
        providers.insert(
            Provider::Tmoney,
            Arc::new(tmoney::TmoneyClient::with_client(tmoney.clone(), http)),
        );
    }
    providers
}

/// A reqwest client with this module's timeouts.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    http_client_with_timeout(REQUEST_TIMEOUT)
}

/// A reqwest client with the given request timeout and the connect timeout.
pub fn http_client_with_timeout(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .build()
}
