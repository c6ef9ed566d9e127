//! Property test that any sequence of wallet commands keeps the books balanced.
//!
//! Commands for three clients in XOF and EUR run through `Wallet::decide` and
//! `apply`, one wallet per client and currency. Rejected commands change nothing.
//! After every step the journal built from the emitted events must balance,
//! every wallet's balances must match its accounts in that journal, and an
//! accepted command must emit nothing when it runs again.

use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use nepxy_ledger::{Account, Currency, JournalEntry, Provider, Wallet, WalletCommand};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use uuid::Uuid;

const CLIENTS: [Uuid; 3] = [
    Uuid::from_u128(0x0c01),
    Uuid::from_u128(0x0c02),
    Uuid::from_u128(0x0c03),
];
const CURRENCIES: [Currency; 2] = [Currency::XOF, Currency::EUR];

/// Deposits and reservations draw their ids from small pools, so the same id
/// often comes back with the same amount, with another amount or in another
/// wallet.
const DEPOSIT_IDS: u128 = 4;
const RESERVED_PAYOUT_IDS: u128 = 6;
/// Settlements, releases and refunds may also name ids from this larger pool,
/// which includes ids that no wallet ever reserved.
const ANY_PAYOUT_IDS: u128 = 12;

fn deposit_id(index: u128) -> Uuid {
    Uuid::from_u128(0xd000 + index)
}

fn payout_id(index: u128) -> Uuid {
    Uuid::from_u128(0xa000 + index)
}

/// The payout a settlement, release or refund names.
#[derive(Debug, Clone, Copy)]
enum PayoutChoice {
    /// One of the payouts reserved so far in the step's wallet, picked by
    /// index modulo their count.
    Reserved(usize),
    /// Any id of the larger pool, reserved or not.
    Any(u128),
}

#[derive(Debug, Clone)]
enum Operation {
    Deposit {
        deposit: u128,
        amount_minor: i64,
    },
    Reserve {
        payout: u128,
        amount_minor: i64,
    },
    Settle {
        payout: PayoutChoice,
        provider: Provider,
    },
    Release {
        payout: PayoutChoice,
    },
    Refund {
        payout: PayoutChoice,
        provider: Provider,
    },
}

/// One operation on the wallet of `CLIENTS[client]` in `currency`.
#[derive(Debug, Clone)]
struct Step {
    client: usize,
    currency: Currency,
    operation: Operation,
}

/// Mostly ordinary amounts, some non-positive ones that must be rejected,
/// and some close to `i64::MAX` to reach the overflow checks.
fn amount_minor() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => 1..=10_000_i64,
        1 => -2..=0_i64,
        1 => prop_oneof![Just(i64::MAX), Just(i64::MAX / 2 + 1), (i64::MAX - 10_000)..=i64::MAX],
    ]
}

fn payout_choice() -> impl Strategy<Value = PayoutChoice> {
    prop_oneof![
        3 => any::<usize>().prop_map(PayoutChoice::Reserved),
        1 => (0..ANY_PAYOUT_IDS).prop_map(PayoutChoice::Any),
    ]
}

fn provider() -> impl Strategy<Value = Provider> {
    prop::sample::select(Provider::ALL.to_vec())
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        3 => (0..DEPOSIT_IDS, amount_minor())
            .prop_map(|(deposit, amount_minor)| Operation::Deposit { deposit, amount_minor }),
        3 => (0..RESERVED_PAYOUT_IDS, amount_minor())
            .prop_map(|(payout, amount_minor)| Operation::Reserve { payout, amount_minor }),
        2 => (payout_choice(), provider())
            .prop_map(|(payout, provider)| Operation::Settle { payout, provider }),
        1 => payout_choice().prop_map(|payout| Operation::Release { payout }),
        1 => (payout_choice(), provider())
            .prop_map(|(payout, provider)| Operation::Refund { payout, provider }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..CLIENTS.len(),
        prop::sample::select(CURRENCIES.to_vec()),
        operation(),
    )
        .prop_map(|(client, currency, operation)| Step {
            client,
            currency,
            operation,
        })
}

fn resolve(choice: PayoutChoice, reserved: &[Uuid]) -> Uuid {
    match choice {
        PayoutChoice::Reserved(index) if !reserved.is_empty() => reserved[index % reserved.len()],
        PayoutChoice::Reserved(index) => payout_id(index as u128 % ANY_PAYOUT_IDS),
        PayoutChoice::Any(index) => payout_id(index),
    }
}

fn command(step: &Step, reserved: &[Uuid]) -> WalletCommand {
    let client_id = CLIENTS[step.client];
    let currency = step.currency;
    match step.operation {
        Operation::Deposit {
            deposit,
            amount_minor,
        } => WalletCommand::Deposit {
            client_id,
            currency,
            deposit_id: deposit_id(deposit),
            amount_minor,
        },
        Operation::Reserve {
            payout,
            amount_minor,
        } => WalletCommand::Reserve {
            client_id,
            currency,
            payout_id: payout_id(payout),
            amount_minor,
        },
        Operation::Settle { payout, provider } => WalletCommand::Settle {
            payout_id: resolve(payout, reserved),
            provider,
        },
        Operation::Release { payout } => WalletCommand::Release {
            payout_id: resolve(payout, reserved),
        },
        Operation::Refund { payout, provider } => WalletCommand::Refund {
            payout_id: resolve(payout, reserved),
            provider,
        },
    }
}

/// Computes the balance, debits minus credits, of every (account, currency)
/// pair in `journal`.
fn account_balances(journal: &[JournalEntry]) -> BTreeMap<(Account, Currency), i128> {
    let mut balances = BTreeMap::new();
    for posting in journal.iter().flat_map(|entry| &entry.postings) {
        *balances
            .entry((posting.account.clone(), posting.currency))
            .or_insert(0) += i128::from(posting.debit_minor) - i128::from(posting.credit_minor);
    }
    balances
}

fn check_books(
    journal: &[JournalEntry],
    wallets: &BTreeMap<(usize, Currency), Wallet>,
) -> Result<(), TestCaseError> {
    let balances = account_balances(journal);

    let mut totals: BTreeMap<Currency, i128> = BTreeMap::new();
    for ((_, currency), balance) in &balances {
        *totals.entry(*currency).or_insert(0) += balance;
    }
    for (currency, total) in &totals {
        prop_assert_eq!(*total, 0, "{} accounts do not sum to zero", currency);
    }

    for ((client, currency), wallet) in wallets {
        let client_id = CLIENTS[*client];
        let available = Account::ClientAvailable(client_id);
        let held = Account::ClientHeld(client_id);
        prop_assert!(
            wallet.available_minor >= 0,
            "{available} {currency} is negative: {}",
            wallet.available_minor
        );
        prop_assert!(
            wallet.held_minor >= 0,
            "{held} {currency} is negative: {}",
            wallet.held_minor
        );

        let journal_available = balances.get(&(available.clone(), *currency)).copied();
        prop_assert_eq!(
            i128::from(wallet.available_minor),
            journal_available.unwrap_or(0),
            "{} {} in the wallet differs from the journal",
            available,
            currency
        );
        let journal_held = balances.get(&(held.clone(), *currency)).copied();
        prop_assert_eq!(
            i128::from(wallet.held_minor),
            journal_held.unwrap_or(0),
            "{} {} in the wallet differs from the journal",
            held,
            currency
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn wallet_commands_keep_books_balanced(steps in prop::collection::vec(step(), 1..100)) {
        let mut wallets: BTreeMap<(usize, Currency), Wallet> = BTreeMap::new();
        let mut journal: Vec<JournalEntry> = Vec::new();
        // Payout ids reserved in each wallet, in the order of reservation.
        let mut reserved: BTreeMap<(usize, Currency), Vec<Uuid>> = BTreeMap::new();

        for step in &steps {
            let reserved_here = reserved.entry((step.client, step.currency)).or_default();
            let command = command(step, reserved_here);
            let wallet = wallets.entry((step.client, step.currency)).or_default();

            // A rejected command changes nothing, and the books are checked anyway.
            if let Ok(events) = wallet.decide(command.clone()) {
                for event in events {
                    prop_assert_eq!(event.client_id(), CLIENTS[step.client]);
                    prop_assert_eq!(event.currency(), step.currency);
                    let entry = event.journal_entry();
                    prop_assert!(entry.is_balanced(), "unbalanced entry {:?} for {:?}", entry, event);
                    journal.push(entry);
                    if let WalletCommand::Reserve { payout_id, .. } = command {
                        reserved_here.push(payout_id);
                    }
                    wallet.apply(event);
                }

                // An accepted command emits nothing when it runs again.
                let repeat = wallet.decide(command.clone());
                prop_assert_eq!(repeat, Ok(vec![]), "repeat of {:?}", command);
            }

            check_books(&journal, &wallets)?;
        }
    }
}
