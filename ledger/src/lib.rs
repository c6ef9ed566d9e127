//! Domain rules of the Nepxy payout ledger.
//!
//! Money is an `i64` count of a currency's minor unit ([`money`]). A client's
//! funds live in one [`wallet::Wallet`] aggregate per currency, and each payout
//! is a [`payout::Payout`] aggregate with its own lifecycle. Every movement of
//! money becomes a balanced journal entry ([`posting`]), so debits equal
//! credits per currency at all times.
//!
//! This crate has no HTTP and no SQL: the rules are tested with the cqrs-es
//! test framework alone.

pub mod client;
pub mod ids;
pub mod metadata;
pub mod money;
pub mod msisdn;
pub mod payout;
pub mod posting;
pub mod provider;
pub mod upcast;
pub mod wallet;
pub mod webhook_delivery;

pub use client::{Client, ClientCommand, ClientError, ClientEvent, RevocationScope};
pub use money::{Currency, Money, MoneyError};
pub use msisdn::{Msisdn, MsisdnError};
pub use payout::{Payout, PayoutCommand, PayoutError, PayoutEvent, PayoutStatus};
pub use posting::{Account, JournalEntry, Posting};
pub use provider::{Provider, RecipientError};
pub use wallet::{Wallet, WalletCommand, WalletError, WalletEvent};
