//! TMoney adapter, and the response, logging and status-resolution helpers
//! that the other adapters reuse.
//!
//! No operator API for TMoney is public, so this is our own aggregator-style
//! contract, authenticated with `Authorization: Bearer {api_key}`:
//!
//! - `POST /tmoney/v1/disburse` with `reference` (the payout id),
//!   `phone_number`, `amount` (decimal text), `currency` and `reason`
//!   returns 200 or 202 with `{"transaction_id", "reference", "status"}`.
//!   A second request with the same reference returns 409
//!   `{"code": "DUPLICATE_REFERENCE"}`.
//! - `GET /tmoney/v1/transactions/{reference}` returns the same object, or
//!   404 when no transaction has that reference.
//!
//! `status` is `SUCCESS`, `FAILED` (with a `reason`) or `PENDING`. A 5xx
//! carries a `code`: PAYEE_NOT_FOUND, INVALID_MSISDN and NOT_ENOUGH_FUNDS are
//! final, any other code is resolved by a status lookup.

use async_trait::async_trait;
use nepxy_ledger::Provider;
use reqwest::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::config::TmoneyConfig;
use super::money::to_major_text;
use super::{
    PayoutOrder, PayoutProvider, ProviderError, TransferState, classify_transport, http_client,
    retry_after,
};

/// Codes of a 5xx disburse response that mean TMoney will never pay this
/// payout, so it fails without a status lookup.
const TERMINAL_CODES: [&str; 3] = ["PAYEE_NOT_FOUND", "INVALID_MSISDN", "NOT_ENOUGH_FUNDS"];

/// Code of the 409 response to a reference that TMoney already has.
const DUPLICATE_REFERENCE: &str = "DUPLICATE_REFERENCE";

/// `reason` sent when the payout has no reference of its own.
const DEFAULT_REASON: &str = "Nepxy payout";

/// Maximum size of a provider response body that the adapters read. Status
/// and error bodies of these APIs are a few kilobytes, so a larger body is
/// treated as unreadable instead of being buffered.
pub(super) const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// TMoney payout client.
pub struct TmoneyClient {
    config: TmoneyConfig,
    http: reqwest::Client,
}

impl TmoneyClient {
    /// Creates a client with the timeouts of [`http_client`].
    ///
    /// # Panics
    ///
    /// Panics when the TLS backend cannot be initialized, as
    /// `reqwest::Client::new` does.
    pub fn new(config: TmoneyConfig) -> Self {
        let http = http_client().expect("the reqwest client for TMoney could not be built");
        Self::with_client(config, http)
    }

    /// Creates a client that sends its requests with `http`, for example one
    /// with shorter timeouts.
    pub fn with_client(config: TmoneyConfig, http: reqwest::Client) -> Self {
        Self { config, http }
    }

    async fn send_disbursement(&self, order: &PayoutOrder) -> Result<TransferState, ProviderError> {
        ensure_positive_amount(order)?;
        let payout_id = order.payout_id;
        let reference = payout_id.to_string();
        let amount = to_major_text(order.amount_minor, order.currency);
        let reason = order
            .reference
            .as_deref()
            .map(str::trim)
            .filter(|reason| !reason.is_empty())
            .unwrap_or(DEFAULT_REASON);
        let body = DisburseRequest {
            reference: &reference,
            phone_number: order.msisdn.as_str(),
            amount: &amount,
            currency: order.currency.code(),
            reason,
        };

        let url = format!("{}/tmoney/v1/disburse", self.config.base_url);
        let sent = self
            .http
            .post(&url)
            .bearer_auth(&self.config.api_key)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return resolve_send_failure(self, payout_id, &error).await,
        };

        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            return match read_json::<TransactionBody>(response).await {
                Ok(transaction) => Ok(transaction.transfer_state(payout_id)),
                Err(reason) => {
                    let reason = format!(
                        "TMoney accepted the disbursement with HTTP {status}, but {reason}"
                    );
                    resolve_ambiguous(self, payout_id, reason).await
                }
            };
        }

        let error_body = read_error_body(response).await;
        match status {
            StatusCode::CONFLICT if error_body.code.as_deref() == Some(DUPLICATE_REFERENCE) => {
                tracing::info!(
                    provider = %Provider::Tmoney,
                    %payout_id,
                    "TMoney already has a disbursement with this reference, so its status is looked up"
                );
                resolve_duplicate(self, payout_id).await
            }
            StatusCode::TOO_MANY_REQUESTS => Err(rate_limited("TMoney disburse", &headers)),
            _ if status.is_server_error() => match error_body.code {
                Some(code) if TERMINAL_CODES.contains(&code.as_str()) => {
                    Ok(TransferState::Failed { code })
                }
                _ => {
                    let reason = format!(
                        "TMoney disburse returned HTTP {status}{}",
                        error_body.describe()
                    );
                    resolve_ambiguous(self, payout_id, reason).await
                }
            },
            _ if status.is_client_error() => Err(ProviderError::Refused {
                reason: format!(
                    "TMoney disburse returned HTTP {status}{}",
                    error_body.describe()
                ),
            }),
            _ => {
                let reason = format!("TMoney disburse returned unexpected HTTP {status}");
                resolve_ambiguous(self, payout_id, reason).await
            }
        }
    }

    async fn look_up(&self, payout_id: Uuid) -> Result<TransferState, ProviderError> {
        let url = format!(
            "{}/tmoney/v1/transactions/{payout_id}",
            self.config.base_url
        );
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.config.api_key)
            .send()
            .await
            .map_err(|error| classify_lookup_error(&error))?;

        let status = response.status();
        match status {
            StatusCode::OK => read_json::<TransactionBody>(response)
                .await
                .map(|transaction| transaction.transfer_state(payout_id))
                .map_err(|reason| ProviderError::Transient {
                    reason: format!("TMoney status lookup returned HTTP 200, but {reason}"),
                    retry_after: None,
                }),
            StatusCode::NOT_FOUND => Ok(TransferState::NotFound),
            _ => Err(lookup_status_error("TMoney status lookup", response).await),
        }
    }
}

#[async_trait]
impl PayoutProvider for TmoneyClient {
    fn provider(&self) -> Provider {
        Provider::Tmoney
    }

    async fn submit(&self, order: &PayoutOrder) -> Result<TransferState, ProviderError> {
        let outcome = self.send_disbursement(order).await;
        log_submit_outcome(Provider::Tmoney, order, &outcome);
        outcome
    }

    async fn status(&self, payout_id: Uuid) -> Result<TransferState, ProviderError> {
        let outcome = self.look_up(payout_id).await;
        log_status_outcome(Provider::Tmoney, payout_id, &outcome);
        outcome
    }
}

#[derive(Serialize)]
struct DisburseRequest<'a> {
    reference: &'a str,
    phone_number: &'a str,
    amount: &'a str,
    currency: &'a str,
    reason: &'a str,
}

/// Fields of a TMoney transaction that the adapter reads. Serde ignores the
/// others.
#[derive(Deserialize)]
struct TransactionBody {
    transaction_id: Option<serde_json::Value>,
    status: Option<String>,
    reason: Option<String>,
}

impl TransactionBody {
    fn transfer_state(&self, payout_id: Uuid) -> TransferState {
        let provider_ref = self.transaction_id.as_ref().and_then(scalar_text);
        match self.status.as_deref() {
            Some("SUCCESS") => TransferState::Succeeded { provider_ref },
            Some("FAILED") => {
                let code = self
                    .reason
                    .as_deref()
                    .map(str::trim)
                    .filter(|reason| !reason.is_empty())
                    .unwrap_or("FAILED");
                TransferState::Failed {
                    code: code.to_owned(),
                }
            }
            Some("PENDING") => TransferState::Pending { provider_ref },
            other => {
                warn_unknown_status(Provider::Tmoney, payout_id, other.unwrap_or("<missing>"));
                TransferState::Pending { provider_ref }
            }
        }
    }
}

// Helpers shared by the MoMo, Thunes and TMoney adapters.

/// Rejects an order whose amount is not positive before anything is sent.
pub(super) fn ensure_positive_amount(order: &PayoutOrder) -> Result<(), ProviderError> {
    if order.amount_minor > 0 {
        return Ok(());
    }
    Err(ProviderError::Refused {
        reason: format!(
            "payout {} has amount_minor {}; a payout amount must be positive",
            order.payout_id, order.amount_minor
        ),
    })
}

/// Reads a response body of at most [`MAX_RESPONSE_BYTES`]. The error is a
/// reason for a [`ProviderError`].
pub(super) async fn read_body(mut response: Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "the response body exceeds {MAX_RESPONSE_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(format!("reading the response body failed: {error}")),
        }
    }
}

/// Reads and parses a JSON response body. The error is a reason for a
/// [`ProviderError`].
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    response: Response,
) -> Result<T, String> {
    let body = read_body(response).await?;
    serde_json::from_slice(&body)
        .map_err(|error| format!("its body is not the expected JSON: {error}"))
}

/// The `code` and `message` of a MoMo or TMoney error body.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    pub(super) code: Option<String>,
    pub(super) message: Option<String>,
}

impl ErrorBody {
    /// Formats the code and message for an error reason, with a leading
    /// separator, or returns an empty string when the body had neither.
    pub(super) fn describe(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => format!(" with code {code}: {message}"),
            (Some(code), None) => format!(" with code {code}"),
            (None, Some(message)) => format!(": {message}"),
            (None, None) => String::new(),
        }
    }
}

/// Reads an error body. An unreadable or non-JSON body has no code, which
/// makes the failure ambiguous rather than final.
pub(super) async fn read_error_body(response: Response) -> ErrorBody {
    match read_body(response).await {
        Ok(body) => serde_json::from_slice(&body).unwrap_or_default(),
        Err(_) => ErrorBody::default(),
    }
}

/// Returns a JSON string or number as text, since the providers send ids
/// and status codes as either.
pub(super) fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Builds the error for a 429: retry later, after the provider's
/// Retry-After when it sent one.
pub(super) fn rate_limited(call: &str, headers: &reqwest::header::HeaderMap) -> ProviderError {
    ProviderError::Transient {
        reason: format!("{call} returned HTTP 429 Too Many Requests"),
        retry_after: retry_after(headers),
    }
}

/// Classifies a failed submission request. A request that could not be
/// built (an invalid header value) is refused, a connection failure is
/// transient, and anything after the request may have been sent is
/// ambiguous.
pub(super) fn classify_send_error(error: &reqwest::Error) -> ProviderError {
    if error.is_builder() {
        return ProviderError::Refused {
            reason: format!("the request could not be built: {error}"),
        };
    }
    classify_transport(error)
}

/// Classifies a failed status lookup. A lookup changes nothing at the
/// provider, so a timeout is transient here, not ambiguous.
pub(super) fn classify_lookup_error(error: &reqwest::Error) -> ProviderError {
    match classify_send_error(error) {
        ProviderError::Ambiguous { reason } => ProviderError::Transient {
            reason,
            retry_after: None,
        },
        other => other,
    }
}

/// Maps a status lookup response other than 200 and 404: 429 and 5xx are
/// transient, any other status is refused.
pub(super) async fn lookup_status_error(call: &str, response: Response) -> ProviderError {
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return rate_limited(call, response.headers());
    }
    let error_body = read_error_body(response).await;
    let reason = format!("{call} returned HTTP {status}{}", error_body.describe());
    if status.is_server_error() {
        ProviderError::Transient {
            reason,
            retry_after: None,
        }
    } else {
        ProviderError::Refused { reason }
    }
}

/// Handles a submission request that failed in transport: an ambiguous
/// failure is resolved by a status lookup, any other is returned.
pub(super) async fn resolve_send_failure<P: PayoutProvider + ?Sized>(
    provider: &P,
    payout_id: Uuid,
    error: &reqwest::Error,
) -> Result<TransferState, ProviderError> {
    match classify_send_error(error) {
        ProviderError::Ambiguous { reason } => resolve_ambiguous(provider, payout_id, reason).await,
        other => Err(other),
    }
}

/// Resolves a submission whose outcome is unknown by looking up the status.
///
/// A transfer that the provider has is returned as it is. `NotFound` becomes
/// [`ProviderError::Transient`], because submitting again with the same
/// reference is safe. A failed lookup leaves the outcome unknown, so it is
/// [`ProviderError::Ambiguous`].
pub(super) async fn resolve_ambiguous<P: PayoutProvider + ?Sized>(
    provider: &P,
    payout_id: Uuid,
    reason: String,
) -> Result<TransferState, ProviderError> {
    tracing::warn!(
        provider = %provider.provider(),
        %payout_id,
        %reason,
        "submission outcome is unknown, so the transfer status is looked up"
    );
    match provider.status(payout_id).await {
        Ok(TransferState::NotFound) => Err(ProviderError::Transient {
            reason: format!(
                "{reason}; the provider has no transfer for the payout, so it can be submitted again"
            ),
            retry_after: None,
        }),
        Ok(state) => Ok(state),
        Err(lookup_error) => Err(ProviderError::Ambiguous {
            reason: format!("{reason}; the status lookup also failed: {lookup_error}"),
        }),
    }
}

/// Looks up the transfer that a "reference already used" response points to.
/// A lookup that fails or finds nothing leaves the outcome unknown, so both
/// are [`ProviderError::Ambiguous`].
pub(super) async fn resolve_duplicate<P: PayoutProvider + ?Sized>(
    provider: &P,
    payout_id: Uuid,
) -> Result<TransferState, ProviderError> {
    match provider.status(payout_id).await {
        Ok(TransferState::NotFound) => Err(ProviderError::Ambiguous {
            reason: "the provider reported the reference as already used, but its status lookup found no transfer"
                .to_owned(),
        }),
        Ok(state) => Ok(state),
        Err(lookup_error) => Err(ProviderError::Ambiguous {
            reason: format!(
                "the provider reported the reference as already used, and the status lookup failed: {lookup_error}"
            ),
        }),
    }
}

/// Logs a transfer status that the adapter does not recognize. The caller
/// reports such a transfer as pending.
pub(super) fn warn_unknown_status(provider: Provider, payout_id: Uuid, status: &str) {
    tracing::warn!(
        alert = "unknown_provider_status",
        %provider,
        %payout_id,
        status,
        "provider reported an unknown transfer status, so the transfer is treated as pending"
    );
}

/// Logs the outcome of a submission, with the MSISDN masked.
pub(super) fn log_submit_outcome(
    provider: Provider,
    order: &PayoutOrder,
    outcome: &Result<TransferState, ProviderError>,
) {
    let payout_id = order.payout_id;
    let msisdn = order.msisdn.masked();
    match outcome {
        Ok(state) => tracing::info!(
            %provider,
            %payout_id,
            %msisdn,
            amount_minor = order.amount_minor,
            currency = order.currency.code(),
            ?state,
            "payout submitted to provider"
        ),
        Err(error) => tracing::warn!(
            %provider,
            %payout_id,
            %msisdn,
            amount_minor = order.amount_minor,
            currency = order.currency.code(),
            %error,
            "payout submission to provider failed"
        ),
    }
}

/// Logs the outcome of a status lookup.
pub(super) fn log_status_outcome(
    provider: Provider,
    payout_id: Uuid,
    outcome: &Result<TransferState, ProviderError>,
) {
    match outcome {
        Ok(state) => {
            tracing::info!(%provider, %payout_id, ?state, "provider returned the transfer status")
        }
        Err(error) => {
            tracing::warn!(%provider, %payout_id, %error, "transfer status lookup failed")
        }
    }
}

/// A local HTTP server for adapter tests: it records every request and
/// replies as the test's responder decides.
#[cfg(test)]
pub(super) mod mock {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};

    /// Request timeout of [`test_client`], short so that the tests of an
    /// unanswered request finish quickly.
    pub const TEST_TIMEOUT: Duration = Duration::from_millis(300);

    /// Builds a client like [`super::http_client`] with a [`TEST_TIMEOUT`]
    /// timeout.
    pub fn test_client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(TEST_TIMEOUT)
            .connect_timeout(TEST_TIMEOUT)
            .build()
            .expect("test client builds")
    }

    /// A request as the mock server received it.
    #[derive(Clone, Debug)]
    pub struct RecordedRequest {
        pub method: Method,
        pub path: String,
        pub headers: HeaderMap,
        pub body: Bytes,
    }

    impl RecordedRequest {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|value| value.to_str().ok())
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("request body is JSON")
        }

        pub fn text(&self) -> &str {
            std::str::from_utf8(&self.body).expect("request body is UTF-8")
        }
    }

    /// Response of the mock server to one request.
    pub struct Reply {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: String,
        never_respond: bool,
    }

    impl Reply {
        pub fn empty(status: u16) -> Self {
            Self {
                status: StatusCode::from_u16(status).expect("valid status code"),
                headers: Vec::new(),
                body: String::new(),
                never_respond: false,
            }
        }

        pub fn json(status: u16, body: serde_json::Value) -> Self {
            Self {
                body: body.to_string(),
                ..Self::empty(status)
            }
            .with_header("content-type", "application/json")
        }

        /// Creates a reply that is never sent, so the client times out.
        pub fn never() -> Self {
            Self {
                never_respond: true,
                ..Self::empty(200)
            }
        }

        pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
            self.headers.push((
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("valid header value"),
            ));
            self
        }
    }

    /// Chooses the reply to a request. The second argument is the number of
    /// earlier requests with the same method and path.
    type Responder = dyn Fn(&RecordedRequest, usize) -> Reply + Send + Sync;

    #[derive(Clone)]
    struct MockState {
        requests: Arc<Mutex<Vec<RecordedRequest>>>,
        responder: Arc<Responder>,
    }

    pub struct MockServer {
        pub base_url: String,
        requests: Arc<Mutex<Vec<RecordedRequest>>>,
    }

    impl MockServer {
        /// Starts the server on 127.0.0.1 with a free port.
        pub async fn start(
            responder: impl Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static,
        ) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("mock server binds to a loopback port");
            let address = listener.local_addr().expect("mock server has an address");
            let requests = Arc::new(Mutex::new(Vec::new()));
            let state = MockState {
                requests: Arc::clone(&requests),
                responder: Arc::new(responder),
            };
            let app = axum::Router::new()
                .fallback(record_and_reply)
                .with_state(state);
            tokio::spawn(async move {
                axum::serve(listener, app).await.expect("mock server runs");
            });
            Self {
                base_url: format!("http://{address}"),
                requests,
            }
        }

        /// Returns every request received so far, in order.
        pub fn requests(&self) -> Vec<RecordedRequest> {
            self.requests.lock().expect("request log lock").clone()
        }

        /// Returns the requests received so far with this method and path.
        pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
            self.requests()
                .into_iter()
                .filter(|request| request.method.as_str() == method && request.path == path)
                .collect()
        }
    }

    async fn record_and_reply(
        State(state): State<MockState>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let request = RecordedRequest {
            method,
            path: uri.path().to_owned(),
            headers,
            body,
        };
        let reply = {
            let mut requests = state.requests.lock().expect("request log lock");
            let earlier = requests
                .iter()
                .filter(|earlier| earlier.method == request.method && earlier.path == request.path)
                .count();
            requests.push(request.clone());
            (state.responder)(&request, earlier)
        };

        if reply.never_respond {
            return std::future::pending().await;
        }
        let mut response = (reply.status, reply.body).into_response();
        for (name, value) in reply.headers {
            response.headers_mut().insert(name, value);
        }
        if !response.headers().contains_key(header::CONTENT_TYPE) {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        response
    }

    /// Returns the URL of a loopback port where nothing listens, for
    /// connection failures.
    pub async fn closed_port_url() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds a loopback port");
        let address = listener.local_addr().expect("listener has an address");
        drop(listener);
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use nepxy_ledger::{Currency, Msisdn};
    use serde_json::json;

    use super::mock::{MockServer, Reply, TEST_TIMEOUT, closed_port_url, test_client};
    use super::*;

    const API_KEY: &str = "tmoney-test-key";

    fn client(base_url: &str) -> TmoneyClient {
        let config = TmoneyConfig {
            base_url: base_url.to_owned(),
            api_key: API_KEY.to_owned(),
        };
        TmoneyClient::with_client(config, test_client())
    }

    fn order(amount_minor: i64, currency: Currency) -> PayoutOrder {
        PayoutOrder {
            payout_id: Uuid::now_v7(),
            amount_minor,
            currency,
            msisdn: Msisdn::parse("+22890112233").expect("valid MSISDN"),
            recipient_name: Some("Ama Mensah".to_owned()),
            reference: Some("Invoice 42".to_owned()),
            callback_token: "cb-token".to_owned(),
        }
    }

    fn disburse_path() -> &'static str {
        "/tmoney/v1/disburse"
    }

    fn status_path(payout_id: Uuid) -> String {
        format!("/tmoney/v1/transactions/{payout_id}")
    }

    fn transaction(status: &str) -> serde_json::Value {
        json!({"transaction_id": "TX-1", "reference": "ignored", "status": status})
    }

    #[tokio::test]
    async fn disburse_request_shape() {
        let server = MockServer::start(|_, _| Reply::json(202, transaction("PENDING"))).await;
        let order = order(2500, Currency::XOF);

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Pending {
                provider_ref: Some("TX-1".to_owned())
            })
        );
        let requests = server.requests_to("POST", disburse_path());
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(
            request.header("authorization"),
            Some("Bearer tmoney-test-key")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body = request.json();
        assert_eq!(body["reference"], order.payout_id.to_string());
        assert_eq!(body["phone_number"], "+22890112233");
        assert_eq!(body["amount"], "2500");
        assert_eq!(body["currency"], "XOF");
        assert_eq!(body["reason"], "Invoice 42");
    }

    #[tokio::test]
    async fn disburse_amount_with_decimals_and_default_reason() {
        let server = MockServer::start(|_, _| Reply::json(200, transaction("SUCCESS"))).await;
        let mut order = order(1250, Currency::EUR);
        order.reference = None;

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Succeeded {
                provider_ref: Some("TX-1".to_owned())
            })
        );
        let body = server.requests_to("POST", disburse_path())[0].json();
        assert_eq!(body["amount"], "12.50");
        assert_eq!(body["currency"], "EUR");
        assert_eq!(body["reason"], "Nepxy payout");
    }

    #[tokio::test]
    async fn non_positive_amount_is_refused_unsent() {
        let server = MockServer::start(|_, _| Reply::json(202, transaction("PENDING"))).await;

        let state = client(&server.base_url)
            .submit(&order(0, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Refused { .. })),
            "{state:?}"
        );
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn duplicate_reference_looks_up_status() {
        let order = order(2500, Currency::XOF);
        let status = status_path(order.payout_id);
        let server = MockServer::start(move |request, _| {
            if request.path == status {
                Reply::json(200, transaction("SUCCESS"))
            } else {
                Reply::json(
                    409,
                    json!({"code": "DUPLICATE_REFERENCE", "message": "reference already used"}),
                )
            }
        })
        .await;

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Succeeded {
                provider_ref: Some("TX-1".to_owned())
            })
        );
        let lookups = server.requests_to("GET", &status_path(order.payout_id));
        assert_eq!(lookups.len(), 1);
        assert_eq!(
            lookups[0].header("authorization"),
            Some("Bearer tmoney-test-key")
        );
    }

    #[tokio::test]
    async fn other_conflict_is_refused() {
        let server = MockServer::start(|_, _| Reply::json(409, json!({"code": "LOCKED"}))).await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Refused { .. })),
            "{state:?}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn terminal_server_error_fails() {
        for code in TERMINAL_CODES {
            let server =
                MockServer::start(move |_, _| Reply::json(500, json!({"code": code}))).await;

            let state = client(&server.base_url)
                .submit(&order(2500, Currency::XOF))
                .await;

            assert_eq!(
                state,
                Ok(TransferState::Failed {
                    code: code.to_owned()
                })
            );
            assert_eq!(server.requests().len(), 1, "no status lookup for {code}");
        }
    }

    #[tokio::test]
    async fn ambiguous_server_error_found_by_lookup() {
        let order = order(2500, Currency::XOF);
        let status = status_path(order.payout_id);
        let server = MockServer::start(move |request, _| {
            if request.path == status {
                Reply::json(200, transaction("PENDING"))
            } else {
                Reply::json(502, json!({"code": "UPSTREAM_TIMEOUT"}))
            }
        })
        .await;

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Pending {
                provider_ref: Some("TX-1".to_owned())
            })
        );
        assert_eq!(
            server
                .requests_to("GET", &status_path(order.payout_id))
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn ambiguous_server_error_not_found_is_transient() {
        let server = MockServer::start(|request, _| {
            if request.method == "GET" {
                Reply::json(404, json!({"code": "NOT_FOUND"}))
            } else {
                Reply::empty(500)
            }
        })
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
        let server = MockServer::start(|_, _| Reply::empty(503)).await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Ambiguous { .. })),
            "{state:?}"
        );
        assert_eq!(
            server.requests().len(),
            2,
            "one disburse and one status lookup"
        );
    }

    #[tokio::test]
    async fn rate_limit_is_transient_with_retry_after() {
        let server = MockServer::start(|_, _| {
            Reply::json(429, json!({"code": "RATE_LIMITED"})).with_header("retry-after", "1")
        })
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert_eq!(
            state,
            Err(ProviderError::Transient {
                reason: "TMoney disburse returned HTTP 429 Too Many Requests".to_owned(),
                retry_after: Some(Duration::from_secs(1)),
            })
        );
    }

    #[tokio::test]
    async fn client_errors_are_refused() {
        for status in [400, 401, 403, 422] {
            let server =
                MockServer::start(move |_, _| Reply::json(status, json!({"code": "BAD_REQUEST"})))
                    .await;

            let state = client(&server.base_url)
                .submit(&order(2500, Currency::XOF))
                .await;

            assert!(
                matches!(state, Err(ProviderError::Refused { .. })),
                "{status}: {state:?}"
            );
            assert_eq!(server.requests().len(), 1, "{status}: no status lookup");
        }
    }

    #[tokio::test]
    async fn unanswered_request_is_ambiguous() {
        let server = MockServer::start(|_, _| Reply::never()).await;
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
        assert_eq!(
            server.requests().len(),
            2,
            "one disburse and one status lookup"
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
    async fn status_not_found() {
        let server = MockServer::start(|_, _| Reply::json(404, json!({"code": "NOT_FOUND"}))).await;
        let payout_id = Uuid::now_v7();

        let state = client(&server.base_url).status(payout_id).await;

        assert_eq!(state, Ok(TransferState::NotFound));
        let requests = server.requests();
        assert_eq!(requests[0].path, status_path(payout_id));
        assert_eq!(
            requests[0].header("authorization"),
            Some("Bearer tmoney-test-key")
        );
    }

    #[tokio::test]
    async fn status_lookup_errors() {
        let cases = [(500, "transient"), (429, "transient"), (401, "refused")];
        for (status, expected) in cases {
            let server = MockServer::start(move |_, _| Reply::empty(status)).await;

            let state = client(&server.base_url).status(Uuid::now_v7()).await;

            let kind = match state {
                Err(ProviderError::Transient { .. }) => "transient",
                Err(ProviderError::Refused { .. }) => "refused",
                _ => "other",
            };
            assert_eq!(kind, expected, "HTTP {status}: {state:?}");
        }
    }

    #[test]
    fn status_mapping() {
        let pending = |reference: &str| TransferState::Pending {
            provider_ref: Some(reference.to_owned()),
        };
        let cases = [
            (
                json!({"transaction_id": "TX-9", "status": "SUCCESS"}),
                TransferState::Succeeded {
                    provider_ref: Some("TX-9".to_owned()),
                },
            ),
            (
                json!({"transaction_id": 77, "status": "SUCCESS"}),
                TransferState::Succeeded {
                    provider_ref: Some("77".to_owned()),
                },
            ),
            (
                json!({"transaction_id": "TX-9", "status": "FAILED", "reason": "PAYEE_NOT_FOUND"}),
                TransferState::Failed {
                    code: "PAYEE_NOT_FOUND".to_owned(),
                },
            ),
            (
                json!({"transaction_id": "TX-9", "status": "FAILED", "reason": null}),
                TransferState::Failed {
                    code: "FAILED".to_owned(),
                },
            ),
            (
                json!({"transaction_id": "TX-9", "status": "FAILED", "reason": " "}),
                TransferState::Failed {
                    code: "FAILED".to_owned(),
                },
            ),
            (
                json!({"transaction_id": "TX-9", "status": "PENDING"}),
                pending("TX-9"),
            ),
            (
                json!({"transaction_id": "TX-9", "status": "PROCESSING"}),
                pending("TX-9"),
            ),
            (
                json!({"status": "PENDING"}),
                TransferState::Pending { provider_ref: None },
            ),
        ];
        for (body, expected) in cases {
            let parsed: TransactionBody =
                serde_json::from_value(body.clone()).expect("body parses");
            assert_eq!(parsed.transfer_state(Uuid::nil()), expected, "{body}");
        }
    }

    #[test]
    fn error_body_description() {
        let full = ErrorBody {
            code: Some("X".to_owned()),
            message: Some("bad".to_owned()),
        };
        assert_eq!(full.describe(), " with code X: bad");
        assert_eq!(ErrorBody::default().describe(), "");
    }
}
