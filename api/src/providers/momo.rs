//! MTN MoMo Disbursement adapter: `POST /disbursement/v1_0/transfer` and
//! `GET /disbursement/v1_0/transfer/{X-Reference-Id}`.
//!
//! The X-Reference-Id of a transfer is the payout id, so MoMo rejects a
//! second submission of a payout with 409 RESOURCE_ALREADY_EXIST instead of
//! paying twice. MoMo reports most business failures (NOT_ENOUGH_FUNDS,
//! PAYEE_NOT_FOUND) as HTTP 500 with a `code` in the body, so a 5xx is
//! classified by that code. Every call carries a Bearer token from
//! `POST /disbursement/token/`, which the client caches.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use nepxy_ledger::Provider;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::config::MomoConfig;
use super::money::to_major_text;
use super::tmoney::{
    classify_lookup_error, ensure_positive_amount, log_status_outcome, log_submit_outcome,
    lookup_status_error, rate_limited, read_body, read_error_body, read_json, resolve_ambiguous,
    resolve_duplicate, resolve_send_failure, scalar_text, warn_unknown_status,
};
use super::{PayoutOrder, PayoutProvider, ProviderError, TransferState, http_client};

const SUBSCRIPTION_KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";
const REFERENCE_ID_HEADER: &str = "X-Reference-Id";
const TARGET_ENVIRONMENT_HEADER: &str = "X-Target-Environment";
const CALLBACK_URL_HEADER: &str = "X-Callback-Url";

/// Time before a token's `expires_in` at which the cached token is replaced,
/// so that it cannot expire while a request that carries it is in flight.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Maximum time a token is cached, whatever its `expires_in`. MoMo tokens
/// last about an hour, so this only bounds an implausible value.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Maximum length in characters of `payerMessage` and `payeeNote`, which
/// MoMo rejects when longer.
const MAX_NOTE_CHARS: usize = 128;

/// `payeeNote` sent when the payout has no reference of its own.
const DEFAULT_PAYEE_NOTE: &str = "Nepxy payout";

/// Codes of a 5xx transfer response that mean MoMo will never pay this
/// transfer: the payee cannot receive it, our account cannot send it, or our
/// request or configuration is wrong. The payout fails without a status
/// lookup. Any other code, such as INTERNAL_PROCESSING_ERROR or
/// SERVICE_UNAVAILABLE, leaves the outcome unknown.
const TERMINAL_CODES: [&str; 15] = [
    "PAYEE_NOT_FOUND",
    "PAYER_NOT_FOUND",
    "PAYEE_NOT_ALLOWED_TO_RECEIVE",
    "PAYEE_LIMIT_REACHED",
    "PAYER_LIMIT_REACHED",
    "NOT_ENOUGH_FUNDS",
    "SENDER_ACCOUNT_NOT_ACTIVE",
    "NOT_ALLOWED",
    "INVALID_CURRENCY",
    "NOT_ALLOWED_TARGET_ENVIRONMENT",
    "INVALID_CALLBACK_URL_HOST",
    "VALIDATION_ERROR",
    "APPROVAL_REJECTED",
    "EXPIRED",
    "TRANSACTION_CANCELED",
];

/// MTN MoMo Disbursement client.
pub struct MomoClient {
    config: MomoConfig,
    http: reqwest::Client,
    /// The cached access token. Callers wait on the lock while one of them
    /// requests a new token, so concurrent calls request it only once.
    token: Mutex<Option<AccessToken>>,
}

struct AccessToken {
    value: String,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Token lifetime in seconds.
    expires_in: u64,
}

/// Failure of a call with a Bearer token before any response arrived.
enum CallError {
    /// No token could be obtained, so the call itself was not sent.
    Token(ProviderError),
    /// The call was attempted and failed in transport.
    Transport(reqwest::Error),
}

impl MomoClient {
    /// Creates a client with the timeouts of [`http_client`].
    ///
    /// # Panics
    ///
    /// Panics when the TLS backend cannot be initialized, as
    /// `reqwest::Client::new` does.
    pub fn new(config: MomoConfig) -> Self {
        let http = http_client().expect("the reqwest client for MTN MoMo could not be built");
        Self::with_client(config, http)
    }

    /// Creates a client that sends its requests with `http`, for example one
    /// with shorter timeouts.
    pub fn with_client(config: MomoConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            token: Mutex::new(None),
        }
    }

    async fn send_transfer(&self, order: &PayoutOrder) -> Result<TransferState, ProviderError> {
        ensure_positive_amount(order)?;
        let payout_id = order.payout_id;
        let reference_id = payout_id.hyphenated().to_string();
        let amount = to_major_text(order.amount_minor, order.currency);
        let payer_message = format!("Nepxy payout {reference_id}");
        let payee_note = order
            .reference
            .as_deref()
            .map(str::trim)
            .filter(|reference| !reference.is_empty())
            .unwrap_or(DEFAULT_PAYEE_NOTE);
        let body = TransferRequest {
            amount: &amount,
            currency: order.currency.code(),
            external_id: &reference_id,
            payee: Party {
                party_id_type: "MSISDN",
                party_id: order.msisdn.digits(),
            },
            payer_message: truncate_chars(&payer_message, MAX_NOTE_CHARS),
            payee_note: truncate_chars(payee_note, MAX_NOTE_CHARS),
        };
        let url = format!("{}/disbursement/v1_0/transfer", self.config.base_url);
        let callback_url = format!(
            "{}/v1/webhooks/momo/{}",
            self.config.callback_base_url, order.callback_token
        );

        let sent = self
            .send_with_token(|token| {
                self.http
                    .post(&url)
                    .bearer_auth(token)
                    .header(REFERENCE_ID_HEADER, &reference_id)
                    .header(TARGET_ENVIRONMENT_HEADER, &self.config.target_environment)
                    .header(CALLBACK_URL_HEADER, &callback_url)
                    .header(SUBSCRIPTION_KEY_HEADER, &self.config.subscription_key)
                    .json(&body)
            })
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(CallError::Token(error)) => return Err(error),
            Err(CallError::Transport(error)) => {
                return resolve_send_failure(self, payout_id, &error).await;
            }
        };

        let status = response.status();
        if status.is_success() {
            // MoMo returns 202 with an empty body. The outcome arrives by
            // callback or status lookup.
            return Ok(TransferState::Pending { provider_ref: None });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(rate_limited("MoMo transfer", response.headers()));
        }

        let error_body = read_error_body(response).await;
        match status {
            StatusCode::CONFLICT => {
                tracing::info!(
                    provider = %Provider::Momo,
                    %payout_id,
                    "MoMo already has a transfer with this X-Reference-Id, so its status is looked up"
                );
                resolve_duplicate(self, payout_id).await
            }
            _ if status.is_server_error() => match error_body.code {
                Some(code) if TERMINAL_CODES.contains(&code.as_str()) => {
                    Ok(TransferState::Failed { code })
                }
                _ => {
                    let reason = format!(
                        "MoMo transfer returned HTTP {status}{}",
                        error_body.describe()
                    );
                    resolve_ambiguous(self, payout_id, reason).await
                }
            },
            _ if status.is_client_error() => Err(ProviderError::Refused {
                reason: format!(
                    "MoMo transfer returned HTTP {status}{}",
                    error_body.describe()
                ),
            }),
            _ => {
                let reason = format!("MoMo transfer returned unexpected HTTP {status}");
                resolve_ambiguous(self, payout_id, reason).await
            }
        }
    }

    async fn look_up(&self, payout_id: Uuid) -> Result<TransferState, ProviderError> {
        let url = format!(
            "{}/disbursement/v1_0/transfer/{}",
            self.config.base_url,
            payout_id.hyphenated()
        );
        let sent = self
            .send_with_token(|token| {
                self.http
                    .get(&url)
                    .bearer_auth(token)
                    .header(TARGET_ENVIRONMENT_HEADER, &self.config.target_environment)
                    .header(SUBSCRIPTION_KEY_HEADER, &self.config.subscription_key)
            })
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(CallError::Token(error)) => return Err(error),
            Err(CallError::Transport(error)) => return Err(classify_lookup_error(&error)),
        };

        match response.status() {
            StatusCode::OK => read_json::<TransferStatusBody>(response)
                .await
                .map(|transfer| transfer.transfer_state(payout_id))
                .map_err(|reason| ProviderError::Transient {
                    reason: format!("MoMo status lookup returned HTTP 200, but {reason}"),
                    retry_after: None,
                }),
            StatusCode::NOT_FOUND => Ok(TransferState::NotFound),
            _ => Err(lookup_status_error("MoMo status lookup", response).await),
        }
    }

    /// Sends the request that `build` makes with the current access token.
    /// When MoMo rejects the token with 401, for example because it revoked
    /// it before `expires_in`, drops it and sends the request once more with
    /// a new token. A second 401 is returned to the caller.
    async fn send_with_token(
        &self,
        build: impl Fn(&str) -> RequestBuilder,
    ) -> Result<Response, CallError> {
        let token = self.access_token().await.map_err(CallError::Token)?;
        let response = build(&token).send().await.map_err(CallError::Transport)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }

        tracing::warn!(
            provider = %Provider::Momo,
            "MoMo rejected the access token with HTTP 401, so a new token is requested and the call is retried once"
        );
        self.forget_token(&token).await;
        let token = self.access_token().await.map_err(CallError::Token)?;
        build(&token).send().await.map_err(CallError::Transport)
    }

    /// Returns the cached access token, or requests a new one when there is
    /// none or it is about to expire.
    async fn access_token(&self) -> Result<String, ProviderError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }

        let token = self.request_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Drops the cached token if it is still `rejected`, so a token that
    /// another call has refreshed meanwhile is kept.
    async fn forget_token(&self, rejected: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|token| token.value == rejected) {
            *cached = None;
        }
    }

    /// Requests an access token with the API user and key. No transfer is
    /// sent without a token, so every failure here is transient or refused,
    /// never ambiguous.
    async fn request_token(&self) -> Result<AccessToken, ProviderError> {
        let url = format!("{}/disbursement/token/", self.config.base_url);
        let requested_at = Instant::now();
        let response = self
            .http
            .post(&url)
            .basic_auth(&self.config.api_user, Some(&self.config.api_key))
            .header(SUBSCRIPTION_KEY_HEADER, &self.config.subscription_key)
            .send()
            .await
            .map_err(|error| ProviderError::Transient {
                reason: format!("MoMo token request failed: {error}"),
                retry_after: None,
            })?;

        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(rate_limited("MoMo token request", response.headers()));
        }
        if status.is_server_error() {
            return Err(ProviderError::Transient {
                reason: format!("MoMo token request returned HTTP {status}"),
                retry_after: None,
            });
        }
        if !status.is_success() {
            tracing::warn!(
                provider = %Provider::Momo,
                http_status = status.as_u16(),
                "MoMo rejected the token request"
            );
            return Err(ProviderError::Refused {
                reason: format!(
                    "MoMo token request returned HTTP {status}; check MOMO_API_USER, MOMO_API_KEY and MOMO_SUBSCRIPTION_KEY"
                ),
            });
        }

        let body = read_body(response)
            .await
            .map_err(|reason| ProviderError::Transient {
                reason: format!("MoMo token request: {reason}"),
                retry_after: None,
            })?;
        // The serde error is not included: it could quote the token.
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| ProviderError::Transient {
                reason: "MoMo token response is not JSON with access_token and expires_in"
                    .to_owned(),
                retry_after: None,
            })?;
        let lifetime = Duration::from_secs(token.expires_in)
            .min(MAX_TOKEN_LIFETIME)
            .saturating_sub(TOKEN_EXPIRY_MARGIN);
        tracing::info!(
            provider = %Provider::Momo,
            expires_in_seconds = token.expires_in,
            "MoMo issued a new access token"
        );
        Ok(AccessToken {
            value: token.access_token,
            refresh_at: requested_at + lifetime,
        })
    }
}

#[async_trait]
impl PayoutProvider for MomoClient {
    fn provider(&self) -> Provider {
        Provider::Momo
    }

    async fn submit(&self, order: &PayoutOrder) -> Result<TransferState, ProviderError> {
        let outcome = self.send_transfer(order).await;
        log_submit_outcome(Provider::Momo, order, &outcome);
        outcome
    }

    async fn status(&self, payout_id: Uuid) -> Result<TransferState, ProviderError> {
        let outcome = self.look_up(payout_id).await;
        log_status_outcome(Provider::Momo, payout_id, &outcome);
        outcome
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransferRequest<'a> {
    amount: &'a str,
    currency: &'a str,
    external_id: &'a str,
    payee: Party<'a>,
    payer_message: &'a str,
    payee_note: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Party<'a> {
    party_id_type: &'a str,
    /// E.164 digits without the `+`.
    party_id: &'a str,
}

/// Fields of a MoMo transfer that the adapter reads. Serde ignores the
/// others.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferStatusBody {
    status: Option<String>,
    financial_transaction_id: Option<serde_json::Value>,
    /// `{"code", "message"}` per the MoMo API spec, a plain string in some
    /// versions.
    reason: Option<serde_json::Value>,
}

impl TransferStatusBody {
    fn transfer_state(&self, payout_id: Uuid) -> TransferState {
        let provider_ref = self.financial_transaction_id.as_ref().and_then(scalar_text);
        match self.status.as_deref() {
            Some("SUCCESSFUL") => TransferState::Succeeded { provider_ref },
            Some("FAILED") => TransferState::Failed {
                code: self.failure_code(),
            },
            Some("PENDING") => TransferState::Pending { provider_ref },
            other => {
                warn_unknown_status(Provider::Momo, payout_id, other.unwrap_or("<missing>"));
                TransferState::Pending { provider_ref }
            }
        }
    }

    /// `reason.code`, else `reason` when it is a string, else `FAILED`.
    fn failure_code(&self) -> String {
        let code = match &self.reason {
            Some(serde_json::Value::Object(reason)) => reason.get("code").and_then(scalar_text),
            Some(serde_json::Value::String(reason)) => Some(reason.clone()),
            _ => None,
        };
        code.map(|code| code.trim().to_owned())
            .filter(|code| !code.is_empty())
            .unwrap_or_else(|| "FAILED".to_owned())
    }
}

/// Returns the longest prefix of `text` with at most `max_chars` characters.
fn truncate_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use nepxy_ledger::{Currency, Msisdn};
    use serde_json::json;

    use super::super::tmoney::mock::{
        MockServer, RecordedRequest, Reply, TEST_TIMEOUT, closed_port_url, test_client,
    };
    use super::*;

    const TOKEN_PATH: &str = "/disbursement/token/";
    const TRANSFER_PATH: &str = "/disbursement/v1_0/transfer";

    fn config(base_url: &str) -> MomoConfig {
        MomoConfig {
            base_url: base_url.to_owned(),
            api_user: "api-user".to_owned(),
            api_key: "api-key".to_owned(),
            subscription_key: "subscription-key".to_owned(),
            target_environment: "sandbox".to_owned(),
            callback_base_url: "http://127.0.0.1:8080".to_owned(),
        }
    }

    fn client(base_url: &str) -> MomoClient {
        MomoClient::with_client(config(base_url), test_client())
    }

    fn order(amount_minor: i64, currency: Currency) -> PayoutOrder {
        PayoutOrder {
            payout_id: Uuid::now_v7(),
            amount_minor,
            currency,
            msisdn: Msisdn::parse("+46733123499").expect("valid MSISDN"),
            recipient_name: None,
            reference: Some("Invoice 42".to_owned()),
            callback_token: "cb_7Yq3kPz9".to_owned(),
        }
    }

    fn status_path(payout_id: Uuid) -> String {
        format!("{TRANSFER_PATH}/{}", payout_id.hyphenated())
    }

    /// Replies to the token endpoint with `token-1`, `token-2`, … and to
    /// every other request with `reply`.
    fn with_tokens(
        reply: impl Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static,
    ) -> impl Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static {
        move |request, earlier| {
            if request.path == TOKEN_PATH {
                Reply::json(
                    200,
                    json!({"access_token": format!("token-{}", earlier + 1), "token_type": "access_token", "expires_in": 3600}),
                )
            } else {
                reply(request, earlier)
            }
        }
    }

    fn transfer_status(status: &str) -> serde_json::Value {
        json!({"amount": "25", "currency": "EUR", "financialTransactionId": "1234567890", "status": status})
    }

    #[tokio::test]
    async fn transfer_request_shape() {
        let server = MockServer::start(with_tokens(|_, _| Reply::empty(202))).await;
        let order = order(2500, Currency::XOF);

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(state, Ok(TransferState::Pending { provider_ref: None }));

        let token_requests = server.requests_to("POST", TOKEN_PATH);
        assert_eq!(token_requests.len(), 1);
        let basic = format!("Basic {}", STANDARD.encode("api-user:api-key"));
        assert_eq!(
            token_requests[0].header("authorization"),
            Some(basic.as_str())
        );
        assert_eq!(
            token_requests[0].header("ocp-apim-subscription-key"),
            Some("subscription-key")
        );

        let transfers = server.requests_to("POST", TRANSFER_PATH);
        assert_eq!(transfers.len(), 1);
        let transfer = &transfers[0];
        let reference_id = order.payout_id.hyphenated().to_string();
        assert_eq!(transfer.header("authorization"), Some("Bearer token-1"));
        assert_eq!(
            transfer.header("x-reference-id"),
            Some(reference_id.as_str())
        );
        assert_eq!(transfer.header("x-target-environment"), Some("sandbox"));
        assert_eq!(
            transfer.header("x-callback-url"),
            Some("http://127.0.0.1:8080/v1/webhooks/momo/cb_7Yq3kPz9")
        );
        assert_eq!(
            transfer.header("ocp-apim-subscription-key"),
            Some("subscription-key")
        );
        assert_eq!(transfer.header("content-type"), Some("application/json"));

        let body = transfer.json();
        assert_eq!(body["amount"], "2500");
        assert_eq!(body["currency"], "XOF");
        assert_eq!(body["externalId"], reference_id);
        assert_eq!(
            body["payee"],
            json!({"partyIdType": "MSISDN", "partyId": "46733123499"})
        );
        assert_eq!(body["payerMessage"], format!("Nepxy payout {reference_id}"));
        assert_eq!(body["payeeNote"], "Invoice 42");
    }

    #[tokio::test]
    async fn transfer_amount_with_decimals() {
        let server = MockServer::start(with_tokens(|_, _| Reply::empty(202))).await;
        let mut order = order(1250, Currency::EUR);
        order.reference = Some("x".repeat(200));

        client(&server.base_url)
            .submit(&order)
            .await
            .expect("submitted");

        let body = server.requests_to("POST", TRANSFER_PATH)[0].json();
        assert_eq!(body["amount"], "12.50");
        assert_eq!(body["currency"], "EUR");
        assert_eq!(body["payeeNote"], "x".repeat(MAX_NOTE_CHARS));
    }

    #[tokio::test]
    async fn token_cached_across_transfers() {
        let server = MockServer::start(with_tokens(|_, _| Reply::empty(202))).await;
        let client = client(&server.base_url);

        client
            .submit(&order(2500, Currency::XOF))
            .await
            .expect("first transfer");
        client
            .submit(&order(2500, Currency::XOF))
            .await
            .expect("second transfer");

        assert_eq!(server.requests_to("POST", TOKEN_PATH).len(), 1);
        let transfers = server.requests_to("POST", TRANSFER_PATH);
        assert_eq!(transfers.len(), 2);
        for transfer in transfers {
            assert_eq!(transfer.header("authorization"), Some("Bearer token-1"));
        }
    }

    #[tokio::test]
    async fn short_lived_token_is_not_reused() {
        let server = MockServer::start(|request, earlier| {
            if request.path == TOKEN_PATH {
                // Expires within TOKEN_EXPIRY_MARGIN, so it is never cached.
                Reply::json(
                    200,
                    json!({"access_token": format!("token-{}", earlier + 1), "expires_in": 30}),
                )
            } else {
                Reply::empty(202)
            }
        })
        .await;
        let client = client(&server.base_url);

        client
            .submit(&order(2500, Currency::XOF))
            .await
            .expect("first transfer");
        client
            .submit(&order(2500, Currency::XOF))
            .await
            .expect("second transfer");

        assert_eq!(server.requests_to("POST", TOKEN_PATH).len(), 2);
    }

    #[tokio::test]
    async fn unauthorized_refreshes_token_once() {
        let server = MockServer::start(with_tokens(|request, _| {
            if request.header("authorization") == Some("Bearer token-1") {
                Reply::json(401, json!({"message": "Access token expired"}))
            } else {
                Reply::empty(202)
            }
        }))
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert_eq!(state, Ok(TransferState::Pending { provider_ref: None }));
        assert_eq!(server.requests_to("POST", TOKEN_PATH).len(), 2);
        let transfers = server.requests_to("POST", TRANSFER_PATH);
        assert_eq!(transfers.len(), 2);
        assert_eq!(transfers[1].header("authorization"), Some("Bearer token-2"));
        assert_eq!(
            transfers[0].header("x-reference-id"),
            transfers[1].header("x-reference-id"),
            "the retry reuses the X-Reference-Id"
        );
    }

    #[tokio::test]
    async fn repeated_unauthorized_is_refused() {
        let server = MockServer::start(with_tokens(|_, _| Reply::empty(401))).await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Refused { .. })),
            "{state:?}"
        );
        assert_eq!(server.requests_to("POST", TRANSFER_PATH).len(), 2);
        assert_eq!(server.requests_to("POST", TOKEN_PATH).len(), 2);
    }

    #[tokio::test]
    async fn rejected_credentials_are_refused() {
        let server =
            MockServer::start(|_, _| Reply::json(401, json!({"error": "login_failed"}))).await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Refused { .. })),
            "{state:?}"
        );
        assert!(server.requests_to("POST", TRANSFER_PATH).is_empty());
    }

    #[tokio::test]
    async fn token_server_error_is_transient() {
        let server = MockServer::start(|_, _| Reply::empty(503)).await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Transient { .. })),
            "{state:?}"
        );
        assert!(server.requests_to("POST", TRANSFER_PATH).is_empty());
    }

    #[tokio::test]
    async fn conflict_looks_up_status() {
        let order = order(2500, Currency::XOF);
        let status = status_path(order.payout_id);
        let server = MockServer::start(with_tokens(move |request, _| {
            if request.path == status {
                Reply::json(200, transfer_status("SUCCESSFUL"))
            } else {
                Reply::json(
                    409,
                    json!({"code": "RESOURCE_ALREADY_EXIST", "message": "Duplicated reference id"}),
                )
            }
        }))
        .await;

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Succeeded {
                provider_ref: Some("1234567890".to_owned())
            })
        );
        let lookups = server.requests_to("GET", &status_path(order.payout_id));
        assert_eq!(lookups.len(), 1);
        assert_eq!(lookups[0].header("authorization"), Some("Bearer token-1"));
        assert_eq!(lookups[0].header("x-target-environment"), Some("sandbox"));
        assert_eq!(
            lookups[0].header("ocp-apim-subscription-key"),
            Some("subscription-key")
        );
    }

    #[tokio::test]
    async fn conflict_without_transfer_is_ambiguous() {
        let server = MockServer::start(with_tokens(|request, _| {
            if request.method == "GET" {
                Reply::empty(404)
            } else {
                Reply::json(409, json!({"code": "RESOURCE_ALREADY_EXIST"}))
            }
        }))
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Ambiguous { .. })),
            "{state:?}"
        );
    }

    #[tokio::test]
    async fn terminal_server_error_fails() {
        for code in TERMINAL_CODES {
            let server = MockServer::start(with_tokens(move |_, _| {
                Reply::json(500, json!({"code": code, "message": "business failure"}))
            }))
            .await;

            let state = client(&server.base_url)
                .submit(&order(2500, Currency::XOF))
                .await;

            assert_eq!(
                state,
                Ok(TransferState::Failed {
                    code: code.to_owned()
                })
            );
            assert_eq!(
                server.requests().len(),
                2,
                "{code}: token and transfer only, no status lookup"
            );
        }
    }

    #[tokio::test]
    async fn ambiguous_server_error_found_by_lookup() {
        for body in [
            Some(json!({"code": "INTERNAL_PROCESSING_ERROR"})),
            Some(json!({"code": "SERVICE_UNAVAILABLE"})),
            Some(json!({"code": "TRANSFER_TYPE_UNKNOWN"})),
            None,
        ] {
            let order = order(2500, Currency::XOF);
            let status = status_path(order.payout_id);
            let transfer_reply = body.clone();
            let server = MockServer::start(with_tokens(move |request, _| {
                if request.path == status {
                    Reply::json(200, transfer_status("PENDING"))
                } else {
                    match &transfer_reply {
                        Some(body) => Reply::json(500, body.clone()),
                        None => Reply::empty(500),
                    }
                }
            }))
            .await;

            let state = client(&server.base_url).submit(&order).await;

            assert_eq!(
                state,
                Ok(TransferState::Pending {
                    provider_ref: Some("1234567890".to_owned())
                }),
                "{body:?}"
            );
            assert_eq!(
                server
                    .requests_to("GET", &status_path(order.payout_id))
                    .len(),
                1,
                "{body:?}"
            );
        }
    }

    #[tokio::test]
    async fn ambiguous_server_error_not_found_is_transient() {
        let server = MockServer::start(with_tokens(|request, _| {
            if request.method == "GET" {
                Reply::empty(404)
            } else {
                Reply::json(500, json!({"code": "INTERNAL_PROCESSING_ERROR"}))
            }
        }))
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(
                state,
                Err(ProviderError::Transient {
                    retry_after: None,
                    ..
                })
            ),
            "{state:?}"
        );
    }

    #[tokio::test]
    async fn ambiguous_server_error_failed_lookup_is_ambiguous() {
        let server = MockServer::start(with_tokens(|_, _| {
            Reply::json(503, json!({"code": "SERVICE_UNAVAILABLE"}))
        }))
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Ambiguous { .. })),
            "{state:?}"
        );
    }

    #[tokio::test]
    async fn rate_limit_is_transient_with_retry_after() {
        let server = MockServer::start(with_tokens(|_, _| {
            Reply::empty(429).with_header("retry-after", "1")
        }))
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert_eq!(
            state,
            Err(ProviderError::Transient {
                reason: "MoMo transfer returned HTTP 429 Too Many Requests".to_owned(),
                retry_after: Some(Duration::from_secs(1)),
            })
        );
    }

    #[tokio::test]
    async fn client_errors_are_refused() {
        for status in [400, 403] {
            let server = MockServer::start(with_tokens(move |_, _| {
                Reply::json(
                    status,
                    json!({"code": "VALIDATION_ERROR", "message": "invalid payee"}),
                )
            }))
            .await;

            let state = client(&server.base_url)
                .submit(&order(2500, Currency::XOF))
                .await;

            assert!(
                matches!(state, Err(ProviderError::Refused { .. })),
                "{status}: {state:?}"
            );
            assert_eq!(
                server.requests().len(),
                2,
                "{status}: token and transfer only"
            );
        }
    }

    #[tokio::test]
    async fn unanswered_transfer_is_ambiguous() {
        let server = MockServer::start(with_tokens(|_, _| Reply::never())).await;
        let started = Instant::now();

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Ambiguous { .. })),
            "{state:?}"
        );
        assert!(
            started.elapsed() < TEST_TIMEOUT * 4,
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(server.requests_to("POST", TRANSFER_PATH).len(), 1);
        assert_eq!(
            server.requests().len(),
            3,
            "token, transfer and status lookup"
        );
    }

    #[tokio::test]
    async fn unanswered_transfer_resolved_by_lookup() {
        let order = order(2500, Currency::XOF);
        let status = status_path(order.payout_id);
        let server = MockServer::start(with_tokens(move |request, _| {
            if request.path == status {
                Reply::json(200, transfer_status("PENDING"))
            } else {
                Reply::never()
            }
        }))
        .await;

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Pending {
                provider_ref: Some("1234567890".to_owned())
            })
        );
    }

    #[tokio::test]
    async fn connection_failure_is_transient() {
        let state = client(&closed_port_url().await)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Transient { .. })),
            "{state:?}"
        );
    }

    #[tokio::test]
    async fn invalid_callback_token_is_refused() {
        let server = MockServer::start(with_tokens(|_, _| Reply::empty(202))).await;
        let mut order = order(2500, Currency::XOF);
        order.callback_token = "line\nbreak".to_owned();

        let state = client(&server.base_url).submit(&order).await;

        assert!(
            matches!(state, Err(ProviderError::Refused { .. })),
            "{state:?}"
        );
        assert!(server.requests_to("POST", TRANSFER_PATH).is_empty());
    }

    #[tokio::test]
    async fn status_lookup_responses() {
        let payout_id = Uuid::now_v7();
        let lookups = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&lookups);
        let server = MockServer::start(with_tokens(move |_, _| {
            match counter.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::json(200, transfer_status("SUCCESSFUL")),
                1 => Reply::json(404, json!({"code": "RESOURCE_NOT_FOUND"})),
                2 => Reply::empty(500),
                _ => Reply::empty(429).with_header("retry-after", "1"),
            }
        }))
        .await;
        let client = client(&server.base_url);

        assert_eq!(
            client.status(payout_id).await,
            Ok(TransferState::Succeeded {
                provider_ref: Some("1234567890".to_owned())
            })
        );
        assert_eq!(client.status(payout_id).await, Ok(TransferState::NotFound));
        let server_error = client.status(payout_id).await;
        assert!(
            matches!(server_error, Err(ProviderError::Transient { .. })),
            "{server_error:?}"
        );
        let rate_limited = client.status(payout_id).await;
        assert!(
            matches!(
                rate_limited,
                Err(ProviderError::Transient {
                    retry_after: Some(_),
                    ..
                })
            ),
            "{rate_limited:?}"
        );
        assert_eq!(lookups.load(Ordering::SeqCst), 4);
        assert_eq!(server.requests_to("GET", &status_path(payout_id)).len(), 4);
    }

    #[tokio::test]
    async fn unanswered_status_lookup_is_transient() {
        let server = MockServer::start(with_tokens(|_, _| Reply::never())).await;

        let state = client(&server.base_url).status(Uuid::now_v7()).await;

        assert!(
            matches!(state, Err(ProviderError::Transient { .. })),
            "{state:?}"
        );
    }

    #[test]
    fn status_mapping() {
        let reference = Some("1234567890".to_owned());
        let cases = [
            (
                transfer_status("SUCCESSFUL"),
                TransferState::Succeeded {
                    provider_ref: reference.clone(),
                },
            ),
            (
                json!({"status": "FAILED", "reason": {"code": "PAYEE_NOT_FOUND", "message": "Payee does not exist"}}),
                TransferState::Failed {
                    code: "PAYEE_NOT_FOUND".to_owned(),
                },
            ),
            (
                json!({"status": "FAILED", "reason": "APPROVAL_REJECTED"}),
                TransferState::Failed {
                    code: "APPROVAL_REJECTED".to_owned(),
                },
            ),
            (
                json!({"status": "FAILED"}),
                TransferState::Failed {
                    code: "FAILED".to_owned(),
                },
            ),
            (
                json!({"status": "FAILED", "reason": {"message": "no code"}}),
                TransferState::Failed {
                    code: "FAILED".to_owned(),
                },
            ),
            (
                transfer_status("PENDING"),
                TransferState::Pending {
                    provider_ref: reference.clone(),
                },
            ),
            (
                transfer_status("ONGOING"),
                TransferState::Pending {
                    provider_ref: reference.clone(),
                },
            ),
            (json!({}), TransferState::Pending { provider_ref: None }),
        ];
        for (body, expected) in cases {
            let parsed: TransferStatusBody =
                serde_json::from_value(body.clone()).expect("body parses");
            assert_eq!(parsed.transfer_state(Uuid::nil()), expected, "{body}");
        }
    }

    #[test]
    fn note_truncation_keeps_whole_characters() {
        assert_eq!(truncate_chars("abc", 5), "abc");
        assert_eq!(truncate_chars("abcdef", 3), "abc");
        assert_eq!(truncate_chars("éèà", 2), "éè");
    }
}
