//! In-memory state of the sandbox: the provider transactions, the number of
//! create requests per reference, Thunes quotations and MoMo access tokens.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use nepxy_ledger::Provider;
use serde::Serialize;

use super::outcome::Outcome;
use super::{momo, thunes, tmoney};

/// Maximum number of distinct references (per provider) that the sandbox
/// tracks. Create requests for new references get 503 beyond it, so a
/// runaway client cannot grow the memory without limit until a reset.
pub const MAX_REFERENCES: usize = 100_000;
/// Maximum number of Thunes quotations kept until a reset.
pub const MAX_QUOTATIONS: usize = 100_000;
/// Maximum number of live MoMo access tokens.
pub const MAX_TOKENS: usize = 10_000;

/// Progress of a provider transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Created but not confirmed (Thunes only).
    Created,
    /// Accepted, and the outcome is not final yet.
    Pending,
    Succeeded,
    Failed,
}

/// Provider-specific request fields that the provider's responses and
/// callbacks echo.
#[derive(Debug, Clone)]
pub enum Details {
    Momo(momo::TransferDetails),
    Thunes(thunes::TransactionDetails),
    Tmoney(tmoney::DisburseDetails),
}

/// One transaction created at a provider.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Sandbox-wide number, never reused, even after a reset. It is the
    /// Thunes transaction id and the source of the other providers' ids.
    pub serial: u64,
    pub provider: Provider,
    /// The caller's reference: MoMo X-Reference-Id, Thunes external_id or
    /// TMoney reference.
    pub reference: String,
    pub outcome: Outcome,
    pub state: State,
    /// Recipient number as the request gave it.
    pub recipient: String,
    /// Amount in major units, as decimal text.
    pub amount: String,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    /// Callback target named by the request (MoMo X-Callback-Url, Thunes
    /// callback_url).
    pub callback_url: Option<String>,
    /// Callback deliveries that got a 2xx response.
    pub callbacks_delivered: u32,
    pub details: Details,
}

impl Transaction {
    /// Id the provider gives the transaction: MoMo financialTransactionId,
    /// Thunes id or TMoney transaction_id.
    pub fn provider_transaction_id(&self) -> String {
        match self.provider {
            Provider::Momo => momo::financial_transaction_id(self.serial),
            Provider::Thunes => self.serial.to_string(),
            Provider::Tmoney => tmoney::transaction_id(self.serial),
        }
    }

    /// Status in the provider's own terms, such as `SUCCESSFUL` or `70000`.
    pub fn provider_status(&self) -> &'static str {
        match self.provider {
            Provider::Momo => momo::status_name(self.state),
            Provider::Thunes => thunes::status_of(self.state).code,
            Provider::Tmoney => tmoney::status_name(self.state),
        }
    }
}

/// A Thunes quotation.
#[derive(Debug, Clone)]
pub struct Quotation {
    pub id: u64,
    pub external_id: String,
    pub created_at: DateTime<Utc>,
    pub details: thunes::QuotationDetails,
}

/// Result of recording a create request.
pub enum Admission {
    /// A transaction with this reference already exists. Contains a copy.
    Duplicate(Box<Transaction>),
    /// First `...04` request: respond 429 and create nothing.
    RateLimited,
    /// `...05`: hold the request and create nothing.
    Hold,
    /// `...06`: respond with the terminal error and create nothing.
    NotEnoughFunds,
    /// [`MAX_REFERENCES`] is reached.
    Full,
    /// The transaction was created. Contains a copy.
    Created(Box<Transaction>),
}

/// Result of [`Store::insert_quotation`].
pub enum QuotationInsert {
    /// The new quotation. Contains a copy.
    Created(Box<Quotation>),
    /// Another quotation has the external_id.
    Duplicate,
    /// [`MAX_QUOTATIONS`] is reached.
    Full,
}

/// Everything the sandbox remembers. Callers hold its mutex only for short,
/// non-async sections.
#[derive(Default)]
pub struct Store {
    transactions: Vec<Transaction>,
    by_reference: HashMap<(Provider, String), usize>,
    by_serial: HashMap<u64, usize>,
    /// Create requests received per reference, including those that created
    /// nothing.
    attempts: HashMap<(Provider, String), u32>,
    quotations: Vec<Quotation>,
    quotation_by_external_id: HashMap<String, usize>,
    quotation_by_id: HashMap<u64, usize>,
    /// MoMo access tokens and their expiry.
    tokens: HashMap<String, Instant>,
    /// Last serial handed out. Reset keeps it, so that a callback scheduled
    /// before a reset never finds a transaction created after it.
    last_serial: u64,
}

impl Store {
    /// Records one create request for `reference` and, unless the outcome or
    /// a duplicate prevents it, creates the transaction that `build` returns
    /// for the new serial. The check and the insert happen under the same
    /// lock, so concurrent duplicates create one transaction at most.
    pub fn admit(
        &mut self,
        provider: Provider,
        reference: &str,
        outcome: Outcome,
        build: impl FnOnce(u64) -> Transaction,
    ) -> Admission {
        let key = (provider, reference.to_owned());
        if !self.attempts.contains_key(&key) && self.attempts.len() >= MAX_REFERENCES {
            return Admission::Full;
        }
        let attempts = self.attempts.entry(key.clone()).or_insert(0);
        *attempts += 1;
        let attempts = *attempts;

        if let Some(&index) = self.by_reference.get(&key) {
            return Admission::Duplicate(Box::new(self.transactions[index].clone()));
        }
        match outcome {
            Outcome::RateLimitedOnce if attempts == 1 => return Admission::RateLimited,
            Outcome::NoResponse => return Admission::Hold,
            Outcome::NotEnoughFunds => return Admission::NotEnoughFunds,
            _ => {}
        }

        let serial = self.next_serial();
        let transaction = build(serial);
        let index = self.transactions.len();
        self.by_reference.insert(key, index);
        self.by_serial.insert(serial, index);
        self.transactions.push(transaction.clone());
        Admission::Created(Box::new(transaction))
    }

    pub fn next_serial(&mut self) -> u64 {
        self.last_serial += 1;
        self.last_serial
    }

    pub fn transaction(&self, provider: Provider, reference: &str) -> Option<&Transaction> {
        let index = self.by_reference.get(&(provider, reference.to_owned()))?;
        Some(&self.transactions[*index])
    }

    pub fn transaction_by_serial(&self, serial: u64) -> Option<&Transaction> {
        let index = self.by_serial.get(&serial)?;
        Some(&self.transactions[*index])
    }

    pub fn transaction_by_serial_mut(&mut self, serial: u64) -> Option<&mut Transaction> {
        let index = self.by_serial.get(&serial)?;
        Some(&mut self.transactions[*index])
    }

    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }

    /// Number of create requests received for the reference.
    pub fn attempts(&self, provider: Provider, reference: &str) -> u32 {
        self.attempts
            .get(&(provider, reference.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Create requests received for the reference at every provider.
    pub fn attempts_at_any_provider(&self, reference: &str) -> u32 {
        Provider::ALL
            .into_iter()
            .map(|provider| self.attempts(provider, reference))
            .sum()
    }

    /// Stores a new quotation unless its external_id is taken or
    /// [`MAX_QUOTATIONS`] is reached.
    pub fn insert_quotation(
        &mut self,
        external_id: &str,
        details: thunes::QuotationDetails,
    ) -> QuotationInsert {
        if self.quotation_by_external_id.contains_key(external_id) {
            return QuotationInsert::Duplicate;
        }
        if self.quotations.len() >= MAX_QUOTATIONS {
            return QuotationInsert::Full;
        }
        let quotation = Quotation {
            id: self.next_serial(),
            external_id: external_id.to_owned(),
            created_at: Utc::now(),
            details,
        };
        let index = self.quotations.len();
        self.quotation_by_external_id
            .insert(quotation.external_id.clone(), index);
        self.quotation_by_id.insert(quotation.id, index);
        self.quotations.push(quotation.clone());
        QuotationInsert::Created(Box::new(quotation))
    }

    pub fn quotation_by_id(&self, id: u64) -> Option<&Quotation> {
        Some(&self.quotations[*self.quotation_by_id.get(&id)?])
    }

    pub fn quotation_by_external_id(&self, external_id: &str) -> Option<&Quotation> {
        Some(&self.quotations[*self.quotation_by_external_id.get(external_id)?])
    }

    /// Stores a MoMo access token valid until `expires_at`. Expired tokens
    /// are dropped first, and when [`MAX_TOKENS`] live tokens remain, all of
    /// them are dropped, so their holders get 401 and request new ones.
    pub fn insert_token(&mut self, token: String, expires_at: Instant) {
        if self.tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            self.tokens.retain(|_, expiry| *expiry > now);
        }
        if self.tokens.len() >= MAX_TOKENS {
            tracing::warn!(
                tokens = self.tokens.len(),
                "too many live MoMo access tokens, so all of them are revoked"
            );
            self.tokens.clear();
        }
        self.tokens.insert(token, expires_at);
    }

    pub fn token_is_valid(&self, token: &str) -> bool {
        self.tokens
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    /// Drops every transaction, attempt count and quotation, and returns
    /// the number of transactions dropped. MoMo access tokens stay valid, so
    /// a connected client does not need a new one.
    pub fn reset(&mut self) -> usize {
        let dropped = self.transactions.len();
        self.transactions.clear();
        self.by_reference.clear();
        self.by_serial.clear();
        self.attempts.clear();
        self.quotations.clear();
        self.quotation_by_external_id.clear();
        self.quotation_by_id.clear();
        dropped
    }
}
