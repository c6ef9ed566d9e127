//! Given-events / when-command / then-events tests of the wallet aggregate,
//! run with the cqrs-es test framework.

use cqrs_es::Aggregate;
use cqrs_es::DomainEvent;
use cqrs_es::test::TestFramework;
use nepxy_ledger::wallet::{Hold, HoldState};
use nepxy_ledger::{Account, Currency, Provider, Wallet, WalletCommand, WalletError, WalletEvent};
use uuid::Uuid;

const CLIENT: Uuid = Uuid::from_u128(0x0c01);
const OTHER_CLIENT: Uuid = Uuid::from_u128(0x0c02);
const CURRENCY: Currency = Currency::XOF;
const DEPOSIT: Uuid = Uuid::from_u128(0xd001);
const SECOND_DEPOSIT: Uuid = Uuid::from_u128(0xd002);
const PAYOUT: Uuid = Uuid::from_u128(0xa001);
const SECOND_PAYOUT: Uuid = Uuid::from_u128(0xa002);
const PROVIDER: Provider = Provider::Tmoney;

fn wallet() -> TestFramework<Wallet> {
    TestFramework::<Wallet>::with(())
}

fn deposit(deposit_id: Uuid, amount_minor: i64) -> WalletCommand {
    WalletCommand::Deposit {
        client_id: CLIENT,
        currency: CURRENCY,
        deposit_id,
        amount_minor,
    }
}

fn reserve(payout_id: Uuid, amount_minor: i64) -> WalletCommand {
    WalletCommand::Reserve {
        client_id: CLIENT,
        currency: CURRENCY,
        payout_id,
        amount_minor,
    }
}

fn settle(payout_id: Uuid) -> WalletCommand {
    WalletCommand::Settle {
        payout_id,
        provider: PROVIDER,
    }
}

fn release(payout_id: Uuid) -> WalletCommand {
    WalletCommand::Release { payout_id }
}

fn refund(payout_id: Uuid) -> WalletCommand {
    WalletCommand::Refund {
        payout_id,
        provider: PROVIDER,
    }
}

fn deposited(deposit_id: Uuid, amount_minor: i64) -> WalletEvent {
    WalletEvent::FundsDeposited {
        client_id: CLIENT,
        currency: CURRENCY,
        deposit_id,
        amount_minor,
    }
}

fn reserved(payout_id: Uuid, amount_minor: i64) -> WalletEvent {
    WalletEvent::FundsReserved {
        client_id: CLIENT,
        currency: CURRENCY,
        payout_id,
        amount_minor,
    }
}

fn settled(payout_id: Uuid, amount_minor: i64) -> WalletEvent {
    WalletEvent::FundsSettled {
        client_id: CLIENT,
        currency: CURRENCY,
        payout_id,
        amount_minor,
        provider: PROVIDER,
    }
}

fn released(payout_id: Uuid, amount_minor: i64) -> WalletEvent {
    WalletEvent::FundsReleased {
        client_id: CLIENT,
        currency: CURRENCY,
        payout_id,
        amount_minor,
    }
}

fn refunded(payout_id: Uuid, amount_minor: i64) -> WalletEvent {
    WalletEvent::FundsRefunded {
        client_id: CLIENT,
        currency: CURRENCY,
        payout_id,
        amount_minor,
        provider: PROVIDER,
    }
}

fn replay(events: Vec<WalletEvent>) -> Wallet {
    let mut wallet = Wallet::default();
    for event in events {
        wallet.apply(event);
    }
    wallet
}

// Deposit

#[test]
fn deposit_credits_new_wallet() {
    wallet()
        .given_no_previous_events()
        .when(deposit(DEPOSIT, 5_000))
        .then_expect_events(vec![deposited(DEPOSIT, 5_000)]);
}

#[test]
fn deposit_adds_to_existing_balance() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(deposit(SECOND_DEPOSIT, 2_500))
        .then_expect_events(vec![deposited(SECOND_DEPOSIT, 2_500)]);
}

#[test]
fn deposit_repeated_id_emits_nothing() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(deposit(DEPOSIT, 5_000))
        .then_expect_events(vec![]);
}

#[test]
fn deposit_same_id_other_amount_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(deposit(DEPOSIT, 5_001))
        .then_expect_error(WalletError::ReusedId(DEPOSIT));
}

#[test]
fn deposit_non_positive_amount_rejected() {
    for amount_minor in [0, -1, i64::MIN] {
        wallet()
            .given_no_previous_events()
            .when(deposit(DEPOSIT, amount_minor))
            .then_expect_error(WalletError::NotPositive(amount_minor));
    }
}

#[test]
fn deposit_for_other_client_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(WalletCommand::Deposit {
            client_id: OTHER_CLIENT,
            currency: CURRENCY,
            deposit_id: SECOND_DEPOSIT,
            amount_minor: 100,
        })
        .then_expect_error(WalletError::WrongClient {
            expected: CLIENT,
            actual: OTHER_CLIENT,
        });
}

#[test]
fn deposit_in_other_currency_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(WalletCommand::Deposit {
            client_id: CLIENT,
            currency: Currency::EUR,
            deposit_id: SECOND_DEPOSIT,
            amount_minor: 100,
        })
        .then_expect_error(WalletError::WrongCurrency {
            expected: CURRENCY,
            actual: Currency::EUR,
        });
}

#[test]
fn deposit_up_to_maximum_balance_passes() {
    // Available plus held reaches exactly i64::MAX.
    wallet()
        .given(vec![deposited(DEPOSIT, i64::MAX - 10), reserved(PAYOUT, 4)])
        .when(deposit(SECOND_DEPOSIT, 10))
        .then_expect_events(vec![deposited(SECOND_DEPOSIT, 10)]);
}

#[test]
fn deposit_beyond_maximum_balance_overflows() {
    // Held funds count towards the limit, so 11 more overflows even though
    // the available balance alone is 14 below i64::MAX.
    wallet()
        .given(vec![deposited(DEPOSIT, i64::MAX - 10), reserved(PAYOUT, 4)])
        .when(deposit(SECOND_DEPOSIT, 11))
        .then_expect_error(WalletError::Overflow);
}

#[test]
fn deposit_of_maximum_into_maximum_overflows() {
    wallet()
        .given(vec![deposited(DEPOSIT, i64::MAX)])
        .when(deposit(SECOND_DEPOSIT, i64::MAX))
        .then_expect_error(WalletError::Overflow);
}

// Reserve

#[test]
fn reserve_within_available_balance() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(reserve(PAYOUT, 1_200))
        .then_expect_events(vec![reserved(PAYOUT, 1_200)]);
}

#[test]
fn reserve_exact_available_balance_passes() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000), reserved(PAYOUT, 3_000)])
        .when(reserve(SECOND_PAYOUT, 2_000))
        .then_expect_events(vec![reserved(SECOND_PAYOUT, 2_000)]);
}

#[test]
fn reserve_beyond_available_is_insufficient_funds() {
    // 60 of the 100 deposited are already held, so only 40 are available.
    wallet()
        .given(vec![deposited(DEPOSIT, 100), reserved(PAYOUT, 60)])
        .when(reserve(SECOND_PAYOUT, 50))
        .then_expect_error(WalletError::InsufficientFunds {
            available_minor: 40,
            requested_minor: 50,
        });
}

#[test]
fn reserve_one_above_available_is_insufficient_funds() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(reserve(PAYOUT, 5_001))
        .then_expect_error(WalletError::InsufficientFunds {
            available_minor: 5_000,
            requested_minor: 5_001,
        });
}

#[test]
fn reserve_on_empty_wallet_is_insufficient_funds() {
    wallet()
        .given_no_previous_events()
        .when(reserve(PAYOUT, 1))
        .then_expect_error(WalletError::InsufficientFunds {
            available_minor: 0,
            requested_minor: 1,
        });
}

#[test]
fn reserve_repeated_payout_emits_nothing() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000), reserved(PAYOUT, 1_200)])
        .when(reserve(PAYOUT, 1_200))
        .then_expect_events(vec![]);
}

#[test]
fn reserve_repeated_after_settle_emits_nothing() {
    // A retried payout request must not reserve the amount a second time.
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            settled(PAYOUT, 1_200),
        ])
        .when(reserve(PAYOUT, 1_200))
        .then_expect_events(vec![]);
}

#[test]
fn reserve_repeated_beyond_available_emits_nothing() {
    // The repeat is detected before the balance check, so it succeeds
    // even though the whole balance is now held.
    wallet()
        .given(vec![deposited(DEPOSIT, 1_200), reserved(PAYOUT, 1_200)])
        .when(reserve(PAYOUT, 1_200))
        .then_expect_events(vec![]);
}

#[test]
fn reserve_same_payout_other_amount_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000), reserved(PAYOUT, 1_200)])
        .when(reserve(PAYOUT, 1_300))
        .then_expect_error(WalletError::ReusedId(PAYOUT));
}

#[test]
fn reserve_non_positive_amount_rejected() {
    for amount_minor in [0, -1, i64::MIN] {
        wallet()
            .given(vec![deposited(DEPOSIT, 5_000)])
            .when(reserve(PAYOUT, amount_minor))
            .then_expect_error(WalletError::NotPositive(amount_minor));
    }
}

#[test]
fn reserve_for_other_client_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(WalletCommand::Reserve {
            client_id: OTHER_CLIENT,
            currency: CURRENCY,
            payout_id: PAYOUT,
            amount_minor: 100,
        })
        .then_expect_error(WalletError::WrongClient {
            expected: CLIENT,
            actual: OTHER_CLIENT,
        });
}

#[test]
fn reserve_in_other_currency_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(WalletCommand::Reserve {
            client_id: CLIENT,
            currency: Currency::EUR,
            payout_id: PAYOUT,
            amount_minor: 100,
        })
        .then_expect_error(WalletError::WrongCurrency {
            expected: CURRENCY,
            actual: Currency::EUR,
        });
}

// Settle

#[test]
fn settle_held_funds() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000), reserved(PAYOUT, 1_200)])
        .when(settle(PAYOUT))
        .then_expect_events(vec![settled(PAYOUT, 1_200)]);
}

#[test]
fn settle_repeated_emits_nothing() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            settled(PAYOUT, 1_200),
        ])
        .when(settle(PAYOUT))
        .then_expect_events(vec![]);
}

#[test]
fn settle_after_refund_emits_nothing() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            settled(PAYOUT, 1_200),
            refunded(PAYOUT, 1_200),
        ])
        .when(settle(PAYOUT))
        .then_expect_events(vec![]);
}

#[test]
fn settle_after_release_rejected() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            released(PAYOUT, 1_200),
        ])
        .when(settle(PAYOUT))
        .then_expect_error(WalletError::HoldClosed {
            payout_id: PAYOUT,
            state: HoldState::Released,
            action: "settled",
        });
}

#[test]
fn settle_unknown_payout_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000), reserved(PAYOUT, 1_200)])
        .when(settle(SECOND_PAYOUT))
        .then_expect_error(WalletError::UnknownHold(SECOND_PAYOUT));
}

#[test]
fn settle_on_empty_wallet_rejected() {
    wallet()
        .given_no_previous_events()
        .when(settle(PAYOUT))
        .then_expect_error(WalletError::UnknownHold(PAYOUT));
}

// Release

#[test]
fn release_held_funds() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000), reserved(PAYOUT, 1_200)])
        .when(release(PAYOUT))
        .then_expect_events(vec![released(PAYOUT, 1_200)]);
}

#[test]
fn release_repeated_emits_nothing() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            released(PAYOUT, 1_200),
        ])
        .when(release(PAYOUT))
        .then_expect_events(vec![]);
}

#[test]
fn release_after_settle_rejected() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            settled(PAYOUT, 1_200),
        ])
        .when(release(PAYOUT))
        .then_expect_error(WalletError::HoldClosed {
            payout_id: PAYOUT,
            state: HoldState::Settled,
            action: "released",
        });
}

#[test]
fn release_after_refund_rejected() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            settled(PAYOUT, 1_200),
            refunded(PAYOUT, 1_200),
        ])
        .when(release(PAYOUT))
        .then_expect_error(WalletError::HoldClosed {
            payout_id: PAYOUT,
            state: HoldState::Refunded,
            action: "released",
        });
}

#[test]
fn release_unknown_payout_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000), reserved(PAYOUT, 1_200)])
        .when(release(SECOND_PAYOUT))
        .then_expect_error(WalletError::UnknownHold(SECOND_PAYOUT));
}

// Refund

#[test]
fn refund_settled_funds() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            settled(PAYOUT, 1_200),
        ])
        .when(refund(PAYOUT))
        .then_expect_events(vec![refunded(PAYOUT, 1_200)]);
}

#[test]
fn refund_repeated_emits_nothing() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            settled(PAYOUT, 1_200),
            refunded(PAYOUT, 1_200),
        ])
        .when(refund(PAYOUT))
        .then_expect_events(vec![]);
}

#[test]
fn refund_of_held_funds_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000), reserved(PAYOUT, 1_200)])
        .when(refund(PAYOUT))
        .then_expect_error(WalletError::HoldClosed {
            payout_id: PAYOUT,
            state: HoldState::Held,
            action: "refunded",
        });
}

#[test]
fn refund_of_released_funds_rejected() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            released(PAYOUT, 1_200),
        ])
        .when(refund(PAYOUT))
        .then_expect_error(WalletError::HoldClosed {
            payout_id: PAYOUT,
            state: HoldState::Released,
            action: "refunded",
        });
}

#[test]
fn refund_unknown_payout_rejected() {
    wallet()
        .given(vec![deposited(DEPOSIT, 5_000)])
        .when(refund(PAYOUT))
        .then_expect_error(WalletError::UnknownHold(PAYOUT));
}

#[test]
fn refund_beyond_maximum_available_overflows() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, i64::MAX),
            reserved(PAYOUT, i64::MAX),
            settled(PAYOUT, i64::MAX),
            deposited(SECOND_DEPOSIT, 1),
        ])
        .when(refund(PAYOUT))
        .then_expect_error(WalletError::Overflow);
}

#[test]
fn refund_beyond_maximum_balance_overflows() {
    // The available balance alone has room for the refund. After it,
    // releasing SECOND_PAYOUT would raise the available balance to
    // 2 * i64::MAX and overflow in `apply`.
    let history = vec![
        deposited(DEPOSIT, i64::MAX),
        reserved(PAYOUT, i64::MAX),
        settled(PAYOUT, i64::MAX),
        deposited(SECOND_DEPOSIT, i64::MAX),
        reserved(SECOND_PAYOUT, i64::MAX),
    ];
    wallet()
        .given(history)
        .when(refund(PAYOUT))
        .then_expect_error(WalletError::Overflow);
}

#[test]
fn refund_up_to_maximum_balance_passes() {
    let history = vec![
        deposited(DEPOSIT, i64::MAX),
        reserved(PAYOUT, 10),
        settled(PAYOUT, 10),
        reserved(SECOND_PAYOUT, 4),
    ];
    wallet()
        .given(history)
        .when(refund(PAYOUT))
        .then_expect_events(vec![refunded(PAYOUT, 10)]);
}

// State and journal entries

#[test]
fn state_follows_hold_lifecycle() {
    let wallet = replay(vec![
        deposited(DEPOSIT, 5_000),
        reserved(PAYOUT, 1_200),
        reserved(SECOND_PAYOUT, 800),
    ]);
    assert_eq!(wallet.client_id, Some(CLIENT));
    assert_eq!(wallet.currency, Some(CURRENCY));
    assert_eq!(wallet.available_minor, 3_000);
    assert_eq!(wallet.held_minor, 2_000);
    assert_eq!(wallet.deposits.get(&DEPOSIT), Some(&5_000));
    assert_eq!(
        wallet.holds.get(&PAYOUT),
        Some(&Hold {
            amount_minor: 1_200,
            state: HoldState::Held,
            provider: None,
        })
    );

    let wallet = replay(vec![
        deposited(DEPOSIT, 5_000),
        reserved(PAYOUT, 1_200),
        reserved(SECOND_PAYOUT, 800),
        settled(PAYOUT, 1_200),
        released(SECOND_PAYOUT, 800),
    ]);
    assert_eq!(wallet.available_minor, 3_800);
    assert_eq!(wallet.held_minor, 0);
    assert_eq!(wallet.holds[&PAYOUT].state, HoldState::Settled);
    assert_eq!(wallet.holds[&SECOND_PAYOUT].state, HoldState::Released);

    let wallet = replay(vec![
        deposited(DEPOSIT, 5_000),
        reserved(PAYOUT, 1_200),
        settled(PAYOUT, 1_200),
        refunded(PAYOUT, 1_200),
    ]);
    assert_eq!(wallet.available_minor, 5_000);
    assert_eq!(wallet.held_minor, 0);
    assert_eq!(wallet.holds[&PAYOUT].state, HoldState::Refunded);
}

#[test]
fn journal_entries_move_between_expected_accounts() {
    let available = Account::ClientAvailable(CLIENT);
    let held = Account::ClientHeld(CLIENT);
    let clearing = Account::ProviderClearing(PROVIDER);
    // Each case is (event, credited account, debited account).
    let cases = [
        (
            deposited(DEPOSIT, 700),
            Account::WorldFunding,
            available.clone(),
        ),
        (reserved(PAYOUT, 700), available.clone(), held.clone()),
        (settled(PAYOUT, 700), held.clone(), clearing.clone()),
        (released(PAYOUT, 700), held.clone(), available.clone()),
        (refunded(PAYOUT, 700), clearing.clone(), available.clone()),
    ];
    for (event, credited, debited) in cases {
        let entry = event.journal_entry();
        let name = event.event_type();
        assert!(entry.is_balanced(), "{name} entry is not balanced");
        assert_eq!(entry.postings.len(), 2, "{name}");

        let credit = &entry.postings[0];
        assert_eq!(credit.account, credited, "{name} credited account");
        assert_eq!(credit.currency, CURRENCY, "{name}");
        assert_eq!(credit.credit_minor, 700, "{name}");
        assert_eq!(credit.debit_minor, 0, "{name}");

        let debit = &entry.postings[1];
        assert_eq!(debit.account, debited, "{name} debited account");
        assert_eq!(debit.currency, CURRENCY, "{name}");
        assert_eq!(debit.debit_minor, 700, "{name}");
        assert_eq!(debit.credit_minor, 0, "{name}");
    }
}

#[test]
fn account_names_are_stable() {
    let client = Uuid::from_u128(1);
    assert_eq!(
        Account::ClientAvailable(client).to_string(),
        "client:00000000-0000-0000-0000-000000000001:available"
    );
    assert_eq!(
        Account::ClientHeld(client).to_string(),
        "client:00000000-0000-0000-0000-000000000001:held"
    );
    assert_eq!(
        Account::ProviderClearing(Provider::Momo).to_string(),
        "provider:momo:clearing"
    );
    assert_eq!(Account::WorldFunding.to_string(), "world:funding");
}

#[test]
fn event_types_are_stable() {
    // Stored events are read back by these names, so they must never change.
    assert_eq!(deposited(DEPOSIT, 1).event_type(), "FundsDeposited");
    assert_eq!(reserved(PAYOUT, 1).event_type(), "FundsReserved");
    assert_eq!(settled(PAYOUT, 1).event_type(), "FundsSettled");
    assert_eq!(released(PAYOUT, 1).event_type(), "FundsReleased");
    assert_eq!(refunded(PAYOUT, 1).event_type(), "FundsRefunded");
    assert_eq!(deposited(DEPOSIT, 1).event_version(), "1");
}

#[test]
fn command_key_is_deposit_or_payout_id() {
    assert_eq!(deposit(DEPOSIT, 1).key(), DEPOSIT);
    assert_eq!(reserve(PAYOUT, 1).key(), PAYOUT);
    assert_eq!(settle(PAYOUT).key(), PAYOUT);
    assert_eq!(release(PAYOUT).key(), PAYOUT);
    assert_eq!(refund(PAYOUT).key(), PAYOUT);
}

#[test]
fn refund_credits_provider_that_was_settled() {
    wallet()
        .given(vec![
            deposited(DEPOSIT, 5_000),
            reserved(PAYOUT, 1_200),
            settled(PAYOUT, 1_200),
        ])
        .when(WalletCommand::Refund {
            payout_id: PAYOUT,
            provider: Provider::Momo,
        })
        .then_expect_events(vec![refunded(PAYOUT, 1_200)]);
}
