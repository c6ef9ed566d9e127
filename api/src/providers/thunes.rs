//! Thunes Money Transfer API (v2) adapter.
//!
//! A payout takes three requests, each authenticated with HTTP Basic
//! `api_key:api_secret` and keyed by an `external_id` derived from the
//! payout id:
//!
//! 1. `POST /v2/money-transfer/quotations` with external_id `{payout_id}-q`;
//! 2. `POST /v2/money-transfer/quotations/ext-{payout_id}-q/transactions`
//!    with external_id `{payout_id}`;
//! 3. `POST /v2/money-transfer/transactions/ext-{payout_id}/confirm`.
//!
//! Thunes rejects a second quotation or transaction with the same
//! external_id (error code 1007001), and the adapter takes that as "already
//! created". A payout interrupted between two steps therefore resumes where
//! it stopped when it is submitted again. Transactions report a
//! `status_class` from 1 to 9, as a number or a string, which decides the
//! transfer state.

use async_trait::async_trait;
use nepxy_ledger::Provider;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::config::ThunesConfig;
use super::money::to_major_text;
use super::tmoney::{
    classify_lookup_error, classify_send_error, ensure_positive_amount, log_status_outcome,
    log_submit_outcome, lookup_status_error, rate_limited, read_body, read_json, scalar_text,
    warn_unknown_status,
};
use super::{PayoutOrder, PayoutProvider, ProviderError, TransferState, http_client};

/// Thunes error code for a quotation or transaction whose external_id is
/// already used.
const EXTERNAL_ID_ALREADY_USED: &str = "1007001";

/// Country of the payouts, as the quotation's `source.country_iso_code`.
const SOURCE_COUNTRY: &str = "TGO";

/// Sender of every payout: this company, not a person.
const SENDER_NAME: &str = "Nepxy";

/// Beneficiary last name sent when the payout has no recipient name.
const UNKNOWN_BENEFICIARY: &str = "Unknown";

/// Thunes payout client.
pub struct ThunesClient {
    config: ThunesConfig,
    http: reqwest::Client,
}

/// One of the two create steps of a payout.
#[derive(Clone, Copy)]
enum CreateStep {
    Quotation,
    Transaction,
}

impl CreateStep {
    fn name(self) -> &'static str {
        match self {
            CreateStep::Quotation => "quotation",
            CreateStep::Transaction => "transaction",
        }
    }
}

impl ThunesClient {
    /// Creates a client with the timeouts of [`http_client`].
    ///
    /// # Panics
    ///
    /// Panics when the TLS backend cannot be initialized, as
    /// `reqwest::Client::new` does.
    pub fn new(config: ThunesConfig) -> Self {
        let http = http_client().expect("the reqwest client for Thunes could not be built");
        Self::with_client(config, http)
    }

    /// Creates a client that sends its requests with `http`, for example one
    /// with shorter timeouts.
    pub fn with_client(config: ThunesConfig, http: reqwest::Client) -> Self {
        Self { config, http }
    }

    /// Runs the three steps and resolves an ambiguous failure of any of
    /// them with a status lookup.
    async fn send_payout(&self, order: &PayoutOrder) -> Result<TransferState, ProviderError> {
        ensure_positive_amount(order)?;
        let payer_id: u64 = self
            .config
            .payer_id
            .trim()
            .parse()
            .map_err(|_| ProviderError::Refused {
                reason: "THUNES_PAYER_ID is not a whole number; set it to the Thunes payer id, such as 9999"
                    .to_owned(),
            })?;

        let outcome = match self.create_quotation(order, payer_id).await {
            Ok(()) => match self.create_transaction(order).await {
                Ok(()) => self.confirm(order.payout_id).await,
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match outcome {
            Err(ProviderError::Ambiguous { reason }) => {
                self.resolve_unknown_outcome(order.payout_id, reason).await
            }
            other => other,
        }
    }

    async fn create_quotation(
        &self,
        order: &PayoutOrder,
        payer_id: u64,
    ) -> Result<(), ProviderError> {
        let external_id = quotation_external_id(order.payout_id);
        let amount_text = to_major_text(order.amount_minor, order.currency);
        let amount =
            RawValue::from_string(amount_text).map_err(|error| ProviderError::Refused {
                reason: format!("the payout amount is not a JSON number: {error}"),
            })?;
        let currency = order.currency.code();
        let body = QuotationRequest {
            external_id: &external_id,
            payer_id,
            mode: "DESTINATION_AMOUNT",
            transaction_type: "B2C",
            source: QuotationSource {
                amount: None,
                currency,
                country_iso_code: SOURCE_COUNTRY,
            },
            destination: QuotationDestination {
                amount: &amount,
                currency,
            },
        };
        let url = format!("{}/v2/money-transfer/quotations", self.config.base_url);
        self.create(
            CreateStep::Quotation,
            order.payout_id,
            self.post(&url).json(&body),
        )
        .await
    }

    async fn create_transaction(&self, order: &PayoutOrder) -> Result<(), ProviderError> {
        let external_id = order.payout_id.to_string();
        let lastname = order
            .recipient_name
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .unwrap_or(UNKNOWN_BENEFICIARY);

        // NOTE: the sender and beneficiary fields that a payer requires are
        // listed in its `required_sender_fields` and
        // `required_beneficiary_fields`. These minimal ones are an assumption
        // to check against the configured payer.
        let body = TransactionRequest {
            external_id: &external_id,
            credit_party_identifier: CreditParty {
                msisdn: order.msisdn.as_str(),
            },
            beneficiary: Beneficiary { lastname },
            sender: Sender {
                registered_name: SENDER_NAME,
                country_iso_code: SOURCE_COUNTRY,
            },
            purpose_of_remittance: "OTHER",
            callback_url: &self.config.callback_url,
        };

        // TODO: a payout resumed after its quotation expired gets a 4xx here
        // and is refused. Creating a new quotation needs a new external_id,
        // which the payout id alone cannot provide.
        let url = format!(
            "{}/v2/money-transfer/quotations/ext-{}/transactions",
            self.config.base_url,
            quotation_external_id(order.payout_id)
        );
        self.create(
            CreateStep::Transaction,
            order.payout_id,
            self.post(&url).json(&body),
        )
        .await
    }

    /// Sends a create step. A 2xx, or a 400 or 409 with error code 1007001
    /// (external_id already used), means the resource exists.
    async fn create(
        &self,
        step: CreateStep,
        payout_id: Uuid,
        request: RequestBuilder,
    ) -> Result<(), ProviderError> {
        let response = request.send().await.map_err(|error| {
            let error = classify_send_error(&error);
            with_step(step.name(), error)
        })?;

        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let call = format!("Thunes {} request", step.name());
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(rate_limited(&call, response.headers()));
        }

        let errors = read_errors(response).await;
        if matches!(status, StatusCode::BAD_REQUEST | StatusCode::CONFLICT)
            && errors.contains(EXTERNAL_ID_ALREADY_USED)
        {
            tracing::info!(
                provider = %Provider::Thunes,
                %payout_id,
                step = step.name(),
                "Thunes already has this external_id, so the payout continues with the next step"
            );
            return Ok(());
        }
        let reason = format!("{call} returned HTTP {status}{}", errors.describe());
        if status.is_client_error() {
            Err(ProviderError::Refused { reason })
        } else {
            Err(ProviderError::Ambiguous { reason })
        }
    }

    /// Confirms the transaction and maps the confirmed transaction. When
    /// Thunes rejects the confirm, for example because an earlier attempt
    /// already confirmed it, the state comes from a status lookup.
    async fn confirm(&self, payout_id: Uuid) -> Result<TransferState, ProviderError> {
        let url = format!(
            "{}/v2/money-transfer/transactions/ext-{payout_id}/confirm",
            self.config.base_url
        );
        let response = self
            .post(&url)
            .send()
            .await
            .map_err(|error| with_step("confirm", classify_send_error(&error)))?;

        let status = response.status();
        if status.is_success() {
            return read_json::<Transaction>(response)
                .await
                .map(|transaction| transaction.transfer_state(payout_id))
                .map_err(|reason| ProviderError::Ambiguous {
                    reason: format!("Thunes confirm request returned HTTP {status}, but {reason}"),
                });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(rate_limited("Thunes confirm request", response.headers()));
        }

        let errors = read_errors(response).await;
        let reason = format!(
            "Thunes confirm request returned HTTP {status}{}",
            errors.describe()
        );
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(ProviderError::Refused { reason })
            }
            _ if status.is_client_error() => self.resolve_rejected_confirm(payout_id, reason).await,
            _ => Err(ProviderError::Ambiguous { reason }),
        }
    }

    /// Resolves a submission whose outcome is unknown with a status lookup.
    ///
    /// No transaction, or one created but not confirmed, is
    /// [`ProviderError::Transient`], because submitting again resumes the
    /// steps with the same external ids. A failed lookup is
    /// [`ProviderError::Ambiguous`].
    async fn resolve_unknown_outcome(
        &self,
        payout_id: Uuid,
        reason: String,
    ) -> Result<TransferState, ProviderError> {
        tracing::warn!(
            provider = %Provider::Thunes,
            %payout_id,
            %reason,
            "submission outcome is unknown, so the transaction status is looked up"
        );
        match self.fetch_transaction(payout_id).await {
            Ok(None) => Err(ProviderError::Transient {
                reason: format!(
                    "{reason}; Thunes has no transaction for the payout, so it can be submitted again"
                ),
                retry_after: None,
            }),
            Ok(Some(transaction)) if transaction.is_unconfirmed() => {
                Err(ProviderError::Transient {
                    reason: format!(
                        "{reason}; the Thunes transaction is created but not confirmed, so submit again to confirm it"
                    ),
                    retry_after: None,
                })
            }
            Ok(Some(transaction)) => Ok(transaction.transfer_state(payout_id)),
            Err(lookup_error) => Err(ProviderError::Ambiguous {
                reason: format!("{reason}; the status lookup also failed: {lookup_error}"),
            }),
        }
    }

    /// Looks up a transaction whose confirm Thunes rejected with a 4xx. A
    /// transaction that is still unconfirmed was rejected for good.
    async fn resolve_rejected_confirm(
        &self,
        payout_id: Uuid,
        reason: String,
    ) -> Result<TransferState, ProviderError> {
        tracing::info!(
            provider = %Provider::Thunes,
            %payout_id,
            %reason,
            "Thunes rejected the confirm, so the transaction status is looked up"
        );
        match self.fetch_transaction(payout_id).await {
            Ok(Some(transaction)) if transaction.is_unconfirmed() => Err(ProviderError::Refused {
                reason: format!("{reason}; the transaction is still CREATED"),
            }),
            Ok(Some(transaction)) => Ok(transaction.transfer_state(payout_id)),
            Ok(None) => Err(ProviderError::Ambiguous {
                reason: format!("{reason}; the status lookup found no transaction"),
            }),
            Err(lookup_error) => Err(ProviderError::Ambiguous {
                reason: format!("{reason}; the status lookup also failed: {lookup_error}"),
            }),
        }
    }

    /// Fetches the transaction with external_id `{payout_id}`, or `None`
    /// when Thunes has none.
    async fn fetch_transaction(
        &self,
        payout_id: Uuid,
    ) -> Result<Option<Transaction>, ProviderError> {
        let url = format!(
            "{}/v2/money-transfer/transactions/ext-{payout_id}",
            self.config.base_url
        );
        let response = self
            .http
            .get(&url)
            .basic_auth(&self.config.api_key, Some(&self.config.api_secret))
            .send()
            .await
            .map_err(|error| classify_lookup_error(&error))?;

        match response.status() {
            StatusCode::OK => {
                read_json::<Transaction>(response)
                    .await
                    .map(Some)
                    .map_err(|reason| ProviderError::Transient {
                        reason: format!("Thunes status lookup returned HTTP 200, but {reason}"),
                        retry_after: None,
                    })
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(lookup_status_error("Thunes status lookup", response).await),
        }
    }

    fn post(&self, url: &str) -> RequestBuilder {
        self.http
            .post(url)
            .basic_auth(&self.config.api_key, Some(&self.config.api_secret))
    }
}

#[async_trait]
impl PayoutProvider for ThunesClient {
    fn provider(&self) -> Provider {
        Provider::Thunes
    }

    async fn submit(&self, order: &PayoutOrder) -> Result<TransferState, ProviderError> {
        let outcome = self.send_payout(order).await;
        log_submit_outcome(Provider::Thunes, order, &outcome);
        outcome
    }

    /// Looks up the transaction. A transaction created but not confirmed
    /// (status class 1) is `Pending`, and submitting the payout again
    /// confirms it.
    async fn status(&self, payout_id: Uuid) -> Result<TransferState, ProviderError> {
        let outcome =
            self.fetch_transaction(payout_id)
                .await
                .map(|transaction| match transaction {
                    Some(transaction) => transaction.transfer_state(payout_id),
                    None => TransferState::NotFound,
                });
        log_status_outcome(Provider::Thunes, payout_id, &outcome);
        outcome
    }
}

fn quotation_external_id(payout_id: Uuid) -> String {
    format!("{payout_id}-q")
}

/// Prefixes a transport error's reason with the step that failed.
fn with_step(step: &str, error: ProviderError) -> ProviderError {
    match error {
        ProviderError::Transient {
            reason,
            retry_after,
        } => ProviderError::Transient {
            reason: format!("Thunes {step} request: {reason}"),
            retry_after,
        },
        ProviderError::Ambiguous { reason } => ProviderError::Ambiguous {
            reason: format!("Thunes {step} request: {reason}"),
        },
        ProviderError::Refused { reason } => ProviderError::Refused {
            reason: format!("Thunes {step} request: {reason}"),
        },
    }
}

#[derive(Serialize)]
struct QuotationRequest<'a> {
    external_id: &'a str,
    payer_id: u64,
    mode: &'a str,
    transaction_type: &'a str,
    source: QuotationSource<'a>,
    destination: QuotationDestination<'a>,
}

#[derive(Serialize)]
struct QuotationSource<'a> {
    /// Always null in DESTINATION_AMOUNT mode: Thunes computes it.
    amount: Option<&'a RawValue>,
    currency: &'a str,
    country_iso_code: &'a str,
}

#[derive(Serialize)]
struct QuotationDestination<'a> {
    /// Decimal number in major units, written verbatim so that no float
    /// rounding happens.
    amount: &'a RawValue,
    currency: &'a str,
}

#[derive(Serialize)]
struct TransactionRequest<'a> {
    external_id: &'a str,
    credit_party_identifier: CreditParty<'a>,
    beneficiary: Beneficiary<'a>,
    sender: Sender<'a>,
    purpose_of_remittance: &'a str,
    callback_url: &'a str,
}

#[derive(Serialize)]
struct CreditParty<'a> {
    /// E.164 with the `+`.
    msisdn: &'a str,
}

#[derive(Serialize)]
struct Beneficiary<'a> {
    lastname: &'a str,
}

/// A company sender.
#[derive(Serialize)]
struct Sender<'a> {
    registered_name: &'a str,
    country_iso_code: &'a str,
}

/// Fields of a Thunes transaction that the adapter reads. Serde ignores the
/// many others.
#[derive(Deserialize)]
struct Transaction {
    /// Thunes transaction id, a number or a string.
    id: Option<serde_json::Value>,
    /// 5-digit status code, a number or a string.
    status: Option<serde_json::Value>,
    /// Status class from 1 to 9, a number or a string.
    status_class: Option<serde_json::Value>,
}

impl Transaction {
    fn status_class(&self) -> Option<String> {
        self.status_class.as_ref().and_then(scalar_text)
    }

    /// Returns whether the transaction is created but not confirmed
    /// (status class 1).
    fn is_unconfirmed(&self) -> bool {
        self.status_class().as_deref() == Some("1")
    }

    /// Maps the status class to a transfer state. Class 7 (completed) is
    /// `Succeeded`. Classes 3 (rejected), 4 (cancelled) and 9 (declined) are
    /// `Failed`, with the 5-digit status as the code. Classes 1, 2, 5 and 6
    /// (created, confirmed, submitted, available) are `Pending`. Class 8
    /// (reversed) is `Pending` too, because `TransferState` has no reversed
    /// state and the reversal is applied from the Thunes webhook.
    fn transfer_state(&self, payout_id: Uuid) -> TransferState {
        let provider_ref = self.id.as_ref().and_then(scalar_text);
        let status_class = self.status_class();
        match status_class.as_deref() {
            Some("7") => TransferState::Succeeded { provider_ref },
            Some("3" | "4" | "9") => {
                let class = status_class.unwrap_or_default();
                let code = self
                    .status
                    .as_ref()
                    .and_then(scalar_text)
                    .unwrap_or_else(|| format!("status_class {class}"));
                TransferState::Failed { code }
            }
            Some("8") => {
                tracing::warn!(
                    provider = %Provider::Thunes,
                    %payout_id,
                    provider_ref = ?provider_ref,
                    "Thunes reported the transaction as reversed, which the adapter reports as pending because the reversal is applied from the Thunes webhook"
                );
                TransferState::Pending { provider_ref }
            }
            Some("1" | "2" | "5" | "6") => TransferState::Pending { provider_ref },
            other => {
                warn_unknown_status(Provider::Thunes, payout_id, other.unwrap_or("<missing>"));
                TransferState::Pending { provider_ref }
            }
        }
    }
}

/// A Thunes error body: `{"errors": [{"code", "message"}]}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorList {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    /// A number or a string.
    code: Option<serde_json::Value>,
    message: Option<String>,
}

impl ErrorList {
    fn contains(&self, code: &str) -> bool {
        self.errors
            .iter()
            .any(|error| error.code.as_ref().and_then(scalar_text).as_deref() == Some(code))
    }

    /// Formats the errors for an error reason, with a leading separator, or
    /// returns an empty string when there are none.
    fn describe(&self) -> String {
        let entries: Vec<String> = self
            .errors
            .iter()
            .map(|error| {
                let code = error
                    .code
                    .as_ref()
                    .and_then(scalar_text)
                    .unwrap_or_default();
                let message = error.message.as_deref().unwrap_or_default();
                format!("{code} {message}").trim().to_owned()
            })
            .collect();
        if entries.is_empty() {
            String::new()
        } else {
            format!(" with errors: {}", entries.join("; "))
        }
    }
}

/// Reads a Thunes error body. An unreadable or unexpected body has no
/// errors.
async fn read_errors(response: Response) -> ErrorList {
    match read_body(response).await {
        Ok(body) => serde_json::from_slice(&body).unwrap_or_default(),
        Err(_) => ErrorList::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use nepxy_ledger::{Currency, Msisdn};
    use serde_json::json;

    use super::super::tmoney::mock::{
        MockServer, RecordedRequest, Reply, TEST_TIMEOUT, closed_port_url, test_client,
    };
    use super::*;

    const QUOTATIONS_PATH: &str = "/v2/money-transfer/quotations";
    const CALLBACK_URL: &str = "http://127.0.0.1:8080/v1/webhooks/thunes";

    fn config(base_url: &str) -> ThunesConfig {
        ThunesConfig {
            base_url: base_url.to_owned(),
            api_key: "api-key".to_owned(),
            api_secret: "api-secret".to_owned(),
            payer_id: "9999".to_owned(),
            callback_url: CALLBACK_URL.to_owned(),
        }
    }

    fn client(base_url: &str) -> ThunesClient {
        ThunesClient::with_client(config(base_url), test_client())
    }

    fn order(amount_minor: i64, currency: Currency) -> PayoutOrder {
        PayoutOrder {
            payout_id: Uuid::now_v7(),
            amount_minor,
            currency,
            msisdn: Msisdn::parse("+22890112233").expect("valid MSISDN"),
            recipient_name: Some("Ama Mensah".to_owned()),
            reference: None,
            callback_token: "unused".to_owned(),
        }
    }

    fn transaction_path(payout_id: Uuid) -> String {
        format!("/v2/money-transfer/quotations/ext-{payout_id}-q/transactions")
    }

    fn confirm_path(payout_id: Uuid) -> String {
        format!("/v2/money-transfer/transactions/ext-{payout_id}/confirm")
    }

    fn status_path(payout_id: Uuid) -> String {
        format!("/v2/money-transfer/transactions/ext-{payout_id}")
    }

    fn transaction(
        status: serde_json::Value,
        status_class: serde_json::Value,
    ) -> serde_json::Value {
        json!({"id": 4242001, "status": status, "status_class": status_class, "external_id": "ignored"})
    }

    fn external_id_used(http_status: u16, code: serde_json::Value) -> Reply {
        Reply::json(
            http_status,
            json!({"errors": [{"code": code, "message": "External ID already used"}]}),
        )
    }

    /// Replies to the quotation and transaction requests as Thunes does for
    /// a new payout, to the confirm with `confirm` and to a status lookup
    /// with `lookup`.
    fn steps(
        confirm: impl Fn() -> Reply + Send + Sync + 'static,
        lookup: impl Fn() -> Reply + Send + Sync + 'static,
    ) -> impl Fn(&RecordedRequest, usize) -> Reply + Send + Sync + 'static {
        move |request, _| {
            if request.path == QUOTATIONS_PATH {
                Reply::json(201, json!({"id": 1, "external_id": "ignored"}))
            } else if request.path.ends_with("/transactions") {
                Reply::json(201, transaction(json!(10000), json!(1)))
            } else if request.path.ends_with("/confirm") {
                confirm()
            } else {
                lookup()
            }
        }
    }

    fn confirmed() -> Reply {
        Reply::json(200, transaction(json!("20000"), json!("2")))
    }

    fn not_found() -> Reply {
        Reply::json(
            404,
            json!({"errors": [{"code": "1003001", "message": "Transaction not found"}]}),
        )
    }

    #[tokio::test]
    async fn payout_request_shapes() {
        let server = MockServer::start(steps(confirmed, not_found)).await;
        let order = order(2500, Currency::XOF);
        let payout_id = order.payout_id;

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Pending {
                provider_ref: Some("4242001".to_owned())
            })
        );
        let requests = server.requests();
        let paths: Vec<&str> = requests
            .iter()
            .map(|request| request.path.as_str())
            .collect();
        let expected_paths = [
            QUOTATIONS_PATH.to_owned(),
            transaction_path(payout_id),
            confirm_path(payout_id),
        ];
        assert_eq!(paths, expected_paths);
        let basic = format!("Basic {}", STANDARD.encode("api-key:api-secret"));
        for request in &requests {
            assert_eq!(request.method, "POST");
            assert_eq!(
                request.header("authorization"),
                Some(basic.as_str()),
                "{}",
                request.path
            );
        }

        let quotation = &requests[0];
        assert_eq!(
            quotation.json(),
            json!({
                "external_id": format!("{payout_id}-q"),
                "payer_id": 9999,
                "mode": "DESTINATION_AMOUNT",
                "transaction_type": "B2C",
                "source": {"amount": null, "currency": "XOF", "country_iso_code": "TGO"},
                "destination": {"amount": 2500, "currency": "XOF"}
            })
        );
        assert!(
            quotation
                .text()
                .contains(r#""destination":{"amount":2500,"currency":"XOF"}"#),
            "{}",
            quotation.text()
        );

        let transaction = requests[1].json();
        assert_eq!(transaction["external_id"], payout_id.to_string());
        assert_eq!(
            transaction["credit_party_identifier"],
            json!({"msisdn": "+22890112233"})
        );
        assert_eq!(
            transaction["beneficiary"],
            json!({"lastname": "Ama Mensah"})
        );
        assert_eq!(transaction["sender"]["registered_name"], "Nepxy");
        assert_eq!(transaction["purpose_of_remittance"], "OTHER");
        assert_eq!(transaction["callback_url"], CALLBACK_URL);

        assert!(requests[2].body.is_empty(), "confirm has no body");
    }

    #[tokio::test]
    async fn quotation_amount_is_exact_decimal() {
        let server = MockServer::start(steps(confirmed, not_found)).await;
        let mut order = order(1250, Currency::EUR);
        order.recipient_name = Some("  ".to_owned());

        client(&server.base_url)
            .submit(&order)
            .await
            .expect("submitted");

        let requests = server.requests();
        let quotation = requests[0].text();
        assert!(
            quotation.contains(r#""destination":{"amount":12.50,"currency":"EUR"}"#),
            "{quotation}"
        );
        assert!(
            quotation
                .contains(r#""source":{"amount":null,"currency":"EUR","country_iso_code":"TGO"}"#),
            "{quotation}"
        );
        assert_eq!(requests[1].json()["beneficiary"]["lastname"], "Unknown");
    }

    #[tokio::test]
    async fn duplicate_external_ids_continue_to_confirm() {
        let server = MockServer::start(|request, _| {
            if request.path == QUOTATIONS_PATH {
                external_id_used(400, json!(1007001))
            } else if request.path.ends_with("/transactions") {
                external_id_used(409, json!("1007001"))
            } else {
                Reply::json(200, transaction(json!(70000), json!(7)))
            }
        })
        .await;
        let order = order(2500, Currency::XOF);

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Succeeded {
                provider_ref: Some("4242001".to_owned())
            })
        );
        assert_eq!(
            server
                .requests_to("POST", &confirm_path(order.payout_id))
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn other_quotation_error_is_refused() {
        let server = MockServer::start(|_, _| {
            Reply::json(
                400,
                json!({"errors": [{"code": 1000400, "message": "Invalid payer"}]}),
            )
        })
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        let Err(ProviderError::Refused { reason }) = state else {
            panic!("expected Refused, got {state:?}");
        };
        assert!(reason.contains("1000400 Invalid payer"), "{reason}");
        assert_eq!(server.requests().len(), 1, "stops after the quotation");
    }

    #[tokio::test]
    async fn rejected_confirm_uses_status() {
        let server = MockServer::start(steps(
            || {
                Reply::json(
                    400,
                    json!({"errors": [{"code": 1008001, "message": "Invalid transaction status"}]}),
                )
            },
            || Reply::json(200, transaction(json!(70000), json!(7))),
        ))
        .await;
        let order = order(2500, Currency::XOF);

        let state = client(&server.base_url).submit(&order).await;

        assert_eq!(
            state,
            Ok(TransferState::Succeeded {
                provider_ref: Some("4242001".to_owned())
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
    async fn rejected_confirm_of_unconfirmed_is_refused() {
        let server = MockServer::start(steps(
            || {
                Reply::json(
                    400,
                    json!({"errors": [{"code": 1008002, "message": "Quotation expired"}]}),
                )
            },
            || Reply::json(200, transaction(json!(10000), json!(1))),
        ))
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Refused { .. })),
            "{state:?}"
        );
    }

    #[tokio::test]
    async fn ambiguous_quotation_not_found_is_transient() {
        let server = MockServer::start(|request, _| {
            if request.method == "GET" {
                not_found()
            } else {
                Reply::empty(500)
            }
        })
        .await;
        let order = order(2500, Currency::XOF);

        let state = client(&server.base_url).submit(&order).await;

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
        assert_eq!(
            server
                .requests_to("GET", &status_path(order.payout_id))
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn ambiguous_confirm_found_by_lookup() {
        let server = MockServer::start(steps(
            || Reply::empty(502),
            || Reply::json(200, transaction(json!("50000"), json!("5"))),
        ))
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert_eq!(
            state,
            Ok(TransferState::Pending {
                provider_ref: Some("4242001".to_owned())
            })
        );
    }

    #[tokio::test]
    async fn ambiguous_confirm_unconfirmed_is_transient() {
        let server = MockServer::start(steps(
            || Reply::empty(500),
            || Reply::json(200, transaction(json!(10000), json!(1))),
        ))
        .await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert!(
            matches!(state, Err(ProviderError::Transient { .. })),
            "{state:?}"
        );
    }

    #[tokio::test]
    async fn ambiguous_failed_lookup_is_ambiguous() {
        let server = MockServer::start(steps(|| Reply::empty(500), || Reply::empty(503))).await;

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
        let server =
            MockServer::start(|_, _| Reply::empty(429).with_header("retry-after", "1")).await;

        let state = client(&server.base_url)
            .submit(&order(2500, Currency::XOF))
            .await;

        assert_eq!(
            state,
            Err(ProviderError::Transient {
                reason: "Thunes quotation request returned HTTP 429 Too Many Requests".to_owned(),
                retry_after: Some(Duration::from_secs(1)),
            })
        );
    }

    #[tokio::test]
    async fn unauthorized_is_refused() {
        let server = MockServer::start(|_, _| Reply::empty(401)).await;

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
    async fn unanswered_confirm_is_ambiguous() {
        let server = MockServer::start(steps(Reply::never, Reply::never)).await;
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
            4,
            "three steps and one status lookup"
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
    async fn invalid_payer_id_is_refused_unsent() {
        let server = MockServer::start(steps(confirmed, not_found)).await;
        let mut config = config(&server.base_url);
        config.payer_id = "payer-9999".to_owned();
        let client = ThunesClient::with_client(config, test_client());

        let state = client.submit(&order(2500, Currency::XOF)).await;

        assert!(
            matches!(state, Err(ProviderError::Refused { .. })),
            "{state:?}"
        );
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn status_lookup_responses() {
        let server = MockServer::start(|request, _| {
            if request
                .path
                .contains("00000000-0000-0000-0000-000000000000")
            {
                not_found()
            } else {
                Reply::json(200, transaction(json!(90201), json!(9)))
            }
        })
        .await;
        let client = client(&server.base_url);
        let payout_id = Uuid::now_v7();

        assert_eq!(
            client.status(payout_id).await,
            Ok(TransferState::Failed {
                code: "90201".to_owned()
            })
        );
        assert_eq!(
            client.status(Uuid::nil()).await,
            Ok(TransferState::NotFound)
        );
        let lookups = server.requests_to("GET", &status_path(payout_id));
        assert_eq!(lookups.len(), 1);
        let basic = format!("Basic {}", STANDARD.encode("api-key:api-secret"));
        assert_eq!(lookups[0].header("authorization"), Some(basic.as_str()));
    }

    #[test]
    fn status_class_mapping() {
        let pending = TransferState::Pending {
            provider_ref: Some("4242001".to_owned()),
        };
        let cases = [
            (json!(10000), json!(1), pending.clone()),
            (json!("20000"), json!("2"), pending.clone()),
            (
                json!(30200),
                json!(3),
                TransferState::Failed {
                    code: "30200".to_owned(),
                },
            ),
            (
                json!("40000"),
                json!("4"),
                TransferState::Failed {
                    code: "40000".to_owned(),
                },
            ),
            (json!(50000), json!(5), pending.clone()),
            (json!(60000), json!(6), pending.clone()),
            (
                json!(70000),
                json!(7),
                TransferState::Succeeded {
                    provider_ref: Some("4242001".to_owned()),
                },
            ),
            (json!(80000), json!(8), pending.clone()),
            (
                json!(90201),
                json!("9"),
                TransferState::Failed {
                    code: "90201".to_owned(),
                },
            ),
            (
                json!(null),
                json!(9),
                TransferState::Failed {
                    code: "status_class 9".to_owned(),
                },
            ),
            (json!(0), json!(0), pending.clone()),
            (json!(null), json!(null), pending.clone()),
        ];
        for (status, status_class, expected) in cases {
            let body = transaction(status, status_class);
            let parsed: Transaction = serde_json::from_value(body.clone()).expect("body parses");
            assert_eq!(parsed.transfer_state(Uuid::nil()), expected, "{body}");
        }
    }

    #[test]
    fn error_list_codes_and_description() {
        let errors: ErrorList = serde_json::from_value(json!({"errors": [
            {"code": 1007001, "message": "External ID already used"},
            {"code": "1000400"}
        ]}))
        .expect("error body parses");

        assert!(errors.contains(EXTERNAL_ID_ALREADY_USED));
        assert!(errors.contains("1000400"));
        assert!(!errors.contains("1003001"));
        assert_eq!(
            errors.describe(),
            " with errors: 1007001 External ID already used; 1000400"
        );
        assert_eq!(ErrorList::default().describe(), "");
    }
}
