//! Provider sandbox: the MTN MoMo, Thunes and TMoney payout APIs served on
//! loopback, with scripted outcomes and callbacks signed the way each
//! provider's webhook adapter expects, so that the whole payout loop runs on
//! one machine. The `nepxy-provider-sandbox` binary serves [`Sandbox::router`].
//!
//! Credentials are required where the real APIs require them, and any
//! non-empty value is accepted, except that MoMo transfer and status requests
//! need a token from the sandbox's own token endpoint. State lives in memory
//! and is lost when the process stops.

mod admin;
pub mod callback;
pub mod input;
pub mod momo;
pub mod outcome;
pub mod store;
pub mod thunes;
pub mod tmoney;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use nepxy_ledger::Provider;
use reqwest::Url;
use serde_json::json;
use uuid::Uuid;

use callback::{Callback, CallbackSender, Signing};
use outcome::{LATE_CALLBACK_DELAY, MAX_HOLD, Outcome, SLOW_RESPONSE_DELAY};
use store::{Admission, State, Store, Transaction};

/// Path of the ledger's TMoney webhook, appended to the callback base URL.
pub const TMONEY_WEBHOOK_PATH: &str = "/v1/webhooks/tmoney";
/// Path of the ledger's Thunes webhook, appended to the callback base URL
/// for transactions created without a callback_url.
pub const THUNES_WEBHOOK_PATH: &str = "/v1/webhooks/thunes";

/// Sandbox configuration.
pub struct Settings {
    /// Base URL of TMoney callbacks, and of Thunes callbacks for transactions
    /// created without a callback_url. Like every callback URL, it is checked
    /// with [`callback::loopback_url`] before each callback.
    pub callback_base_url: Option<Url>,
    /// Time from acceptance (Thunes: confirmation) to the final status and
    /// its callback.
    pub callback_delay: Duration,
    /// Key of the TMoney callback HMAC.
    pub tmoney_secret: Option<Vec<u8>>,
    /// Key of the Thunes Standard Webhooks HMAC, decoded from `whsec_`.
    pub thunes_key: Option<Vec<u8>>,
    /// POST or PUT: MTN documents both for its callbacks.
    pub momo_callback_method: Method,
}

/// Shared handle on the sandbox state, cheap to clone into handlers.
#[derive(Clone)]
pub struct Sandbox(Arc<Shared>);

struct Shared {
    settings: Settings,
    store: Mutex<Store>,
    sender: CallbackSender,
}

/// What a create request gets, once the store and the outcome decided.
pub enum CreateAnswer {
    /// The reference already has a transaction. Contains a copy.
    Duplicate(Box<Transaction>),
    /// First `...04` request: 429 with Retry-After.
    RateLimited,
    /// `...05`: the hold ended, so the sandbox responds 503.
    HoldExpired,
    /// `...06`: terminal HTTP 500, nothing created.
    NotEnoughFunds,
    /// `...03`: HTTP 500 although the transaction was created.
    AmbiguousError,
    /// The sandbox tracks [`store::MAX_REFERENCES`] references already.
    Full,
    /// The transaction was created. Contains a copy.
    Accepted(Box<Transaction>),
}

impl CreateAnswer {
    fn name(&self) -> &'static str {
        match self {
            CreateAnswer::Duplicate(_) => "duplicate",
            CreateAnswer::RateLimited => "rate_limited",
            CreateAnswer::HoldExpired => "hold_expired",
            CreateAnswer::NotEnoughFunds => "not_enough_funds",
            CreateAnswer::AmbiguousError => "ambiguous_error",
            CreateAnswer::Full => "full",
            CreateAnswer::Accepted(_) => "accepted",
        }
    }
}

impl Sandbox {
    pub fn new(settings: Settings) -> reqwest::Result<Sandbox> {
        let sender =
            CallbackSender::new(settings.tmoney_secret.clone(), settings.thunes_key.clone())?;
        Ok(Sandbox(Arc::new(Shared {
            settings,
            store: Mutex::new(Store::default()),
            sender,
        })))
    }

    /// Builds the router with every endpoint of the three providers and of
    /// `/sandbox`.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(momo::routes())
            .merge(thunes::routes())
            .merge(tmoney::routes())
            .merge(admin::routes())
            .fallback(unknown_route)
            .with_state(self.clone())
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// Locks the store. A panic in another handler does not make the state
    /// unusable, because every change is a single insert or field update.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.0
            .store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a create request and plays the outcome: creates the
    /// transaction unless a duplicate or the outcome prevents it, waits for
    /// the slow and held outcomes, and, with `start_settlement`, starts the
    /// timer that finishes the transaction and sends its callback. Thunes
    /// passes false, because its timer starts at confirmation.
    pub async fn create(
        &self,
        provider: Provider,
        reference: &str,
        outcome: Outcome,
        start_settlement: bool,
        build: impl FnOnce(u64) -> Transaction,
    ) -> CreateAnswer {
        let admission = self.store().admit(provider, reference, outcome, build);
        let answer = match admission {
            Admission::Duplicate(transaction) => CreateAnswer::Duplicate(transaction),
            Admission::RateLimited => CreateAnswer::RateLimited,
            Admission::NotEnoughFunds => CreateAnswer::NotEnoughFunds,
            Admission::Full => {
                tracing::warn!(
                    %provider,
                    reference,
                    max = store::MAX_REFERENCES,
                    "reference limit reached; POST /sandbox/reset clears the state"
                );
                CreateAnswer::Full
            }
            Admission::Hold => {
                tracing::info!(
                    %provider,
                    reference,
                    %outcome,
                    max_seconds = MAX_HOLD.as_secs(),
                    "holding the create request until the client gives up"
                );
                // Axum drops this future when the client disconnects, so the
                // hold usually ends with the client's timeout.
                tokio::time::sleep(MAX_HOLD).await;
                CreateAnswer::HoldExpired
            }
            Admission::Created(transaction) => {
                if start_settlement {
                    self.start_settlement(transaction.serial);
                }
                match outcome {
                    Outcome::Slow => {
                        tokio::time::sleep(SLOW_RESPONSE_DELAY).await;
                        CreateAnswer::Accepted(transaction)
                    }
                    Outcome::AmbiguousError => CreateAnswer::AmbiguousError,
                    _ => CreateAnswer::Accepted(transaction),
                }
            }
        };
        tracing::info!(
            %provider,
            reference,
            %outcome,
            answer = answer.name(),
            attempts = self.store().attempts(provider, reference),
            "create request answered"
        );
        answer
    }

    /// Starts the timer of an accepted transaction: after the callback
    /// delay its status becomes final, and the callbacks of its outcome are
    /// sent.
    pub fn start_settlement(&self, serial: u64) {
        let sandbox = self.clone();
        tokio::spawn(async move { sandbox.settle(serial).await });
    }

    async fn settle(self, serial: u64) {
        let delay = self.settings().callback_delay;
        tokio::time::sleep(delay).await;
        let Some(outcome) = self.finish(serial) else {
            return;
        };

        // Standard Webhooks keeps the id of an event across its deliveries,
        // so both deliveries of `...07` share it.
        let event_id = format!("msg_{}", Uuid::new_v4().simple());
        match outcome {
            Outcome::NoCallback => {}
            Outcome::LateCallback => {
                tokio::time::sleep(LATE_CALLBACK_DELAY.saturating_sub(delay)).await;
                self.send_callback(serial, &event_id).await;
            }
            Outcome::DuplicateCallback => {
                self.send_callback(serial, &event_id).await;
                self.send_callback(serial, &event_id).await;
            }
            _ => self.send_callback(serial, &event_id).await,
        }
    }

    /// Sets the final status. Returns the outcome, or `None` when the
    /// transaction is gone (a reset) or was never accepted.
    fn finish(&self, serial: u64) -> Option<Outcome> {
        let mut store = self.store();
        let transaction = store.transaction_by_serial_mut(serial)?;
        if transaction.state != State::Pending {
            return None;
        }
        transaction.state = if transaction.outcome.fails() {
            State::Failed
        } else {
            State::Succeeded
        };
        tracing::info!(
            provider = %transaction.provider,
            reference = transaction.reference,
            outcome = %transaction.outcome,
            status = transaction.provider_status(),
            "transaction finished"
        );
        Some(transaction.outcome)
    }

    async fn send_callback(&self, serial: u64, event_id: &str) {
        let callback = {
            let store = self.store();
            let Some(transaction) = store.transaction_by_serial(serial) else {
                return;
            };
            self.build_callback(transaction, event_id)
        };
        let Some(callback) = callback else {
            return;
        };
        if self.0.sender.deliver(&callback).await
            && let Some(transaction) = self.store().transaction_by_serial_mut(serial)
        {
            transaction.callbacks_delivered += 1;
        }
    }

    /// Builds the provider's callback for the transaction's current state,
    /// or logs why there is none.
    fn build_callback(&self, transaction: &Transaction, event_id: &str) -> Option<Callback> {
        let provider = transaction.provider;
        let reference = transaction.reference.as_str();
        let (url, method, body, signing) = match provider {
            Provider::Momo => (
                transaction.callback_url.clone(),
                self.settings().momo_callback_method.clone(),
                momo::transfer_body(transaction),
                Signing::Unsigned,
            ),
            Provider::Thunes => (
                transaction
                    .callback_url
                    .clone()
                    .or_else(|| self.base_url_with(THUNES_WEBHOOK_PATH)),
                Method::POST,
                thunes::transaction_body(transaction),
                Signing::StandardWebhooks {
                    event_id: event_id.to_owned(),
                },
            ),
            Provider::Tmoney => (
                self.base_url_with(TMONEY_WEBHOOK_PATH),
                Method::POST,
                tmoney::callback_body(transaction),
                Signing::Tmoney,
            ),
        };
        let Some(url) = url else {
            if provider == Provider::Momo {
                tracing::info!(
                    %provider,
                    reference,
                    "callback not sent because the transfer request had no X-Callback-Url"
                );
            } else {
                tracing::warn!(
                    %provider,
                    reference,
                    "callback not sent because the transaction has no callback URL and --callback-base-url is not set"
                );
            }
            return None;
        };
        Some(Callback {
            provider,
            reference: reference.to_owned(),
            method,
            url,
            body,
            signing,
        })
    }

    fn base_url_with(&self, path: &str) -> Option<String> {
        let base = self.settings().callback_base_url.as_ref()?;
        Some(format!("{}{path}", base.as_str().trim_end_matches('/')))
    }
}

/// Responds 404 to paths that no provider serves, naming the method and
/// path, so that a client with a wrong base URL or path sees its mistake.
async fn unknown_route(method: Method, uri: Uri) -> Response {
    tracing::warn!(%method, path = uri.path(), "request for an unknown path");
    let body = json!({
        "code": "NOT_FOUND",
        "message": format!("the sandbox has no endpoint {method} {}", uri.path()),
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}
