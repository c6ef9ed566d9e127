//! Double-entry postings.
//!
//! A movement of `amount` from account A to account B credits A and debits B.
//! An account's balance is its debits minus its credits, so a client's
//! available balance grows with a deposit, `world:funding` goes negative by
//! everything ever deposited, and the balances of one currency always sum to
//! zero because every entry balances.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;
use crate::provider::Provider;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Account {
    ClientAvailable(Uuid),
    ClientHeld(Uuid),
    ProviderClearing(Provider),
    WorldFunding,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::ClientAvailable(client_id) => write!(f, "client:{client_id}:available"),
            Account::ClientHeld(client_id) => write!(f, "client:{client_id}:held"),
            Account::ProviderClearing(provider) => write!(f, "provider:{provider}:clearing"),
            Account::WorldFunding => f.write_str("world:funding"),
        }
    }
}

/// One side of a journal entry. Exactly one of `debit_minor` and
/// `credit_minor` is non-zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: Account,
    pub currency: Currency,
    pub debit_minor: i64,
    pub credit_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub postings: Vec<Posting>,
}

impl JournalEntry {
    /// The entry for moving `amount_minor` from `from` to `to`.
    pub fn transfer(from: Account, to: Account, currency: Currency, amount_minor: i64) -> Self {
        JournalEntry {
            postings: vec![
                Posting {
                    account: from,
                    currency,
                    debit_minor: 0,
                    credit_minor: amount_minor,
                },
                Posting {
                    account: to,
                    currency,
                    debit_minor: amount_minor,
                    credit_minor: 0,
                },
            ],
        }
    }

    /// Debits minus credits per currency; zero for every currency when the
    /// entry balances.
    pub fn imbalance(&self) -> BTreeMap<Currency, i128> {
        let mut sums = BTreeMap::new();
        for posting in &self.postings {
            *sums.entry(posting.currency).or_insert(0) +=
                i128::from(posting.debit_minor) - i128::from(posting.credit_minor);
        }
        sums
    }

    pub fn is_balanced(&self) -> bool {
        self.imbalance().values().all(|sum| *sum == 0)
    }
}
