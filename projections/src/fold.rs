//! The rebuild's write path: folds the [`Write`]s of every event in memory
//! into read-model rows, which [`crate::copy_text`] loads with COPY.
//!
//! Applied to the writes of the events in order, starting from empty tables,
//! [`Fold`] produces the rows that `nepxy_apply_writes` (migration
//! `command_functions`) would leave in the six read models. It mirrors each
//! branch of that function: ON CONFLICT DO NOTHING, the
//! `last_sequence < sequence` guards and the COALESCE of optional columns.
//! It also checks the CHECK constraints on every write, because the SQL path
//! fails on an invalid intermediate row even when a later write would make
//! the row valid again. The outbox writes are skipped, because a rebuild
//! never compares or swaps the outboxes.
//!
//! Memory stays bounded by the largest aggregate. Every key of `payouts`,
//! `wallet_holds`, `event_history`, `journal_postings` and `wallet_deposits`
//! belongs to the aggregate whose events write it, because the payout id is
//! the Payout aggregate's id and `wallet_id` the Wallet aggregate's. So the
//! fold keeps those keys only until [`Fold::end_aggregate`]. Balances are one row
//! per wallet and are kept until [`Fold::finish`].

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::ProjectionError;
use crate::copy_text::{CopyBatch, RowWriter, Table};
use crate::writes::{Posting, Write};

struct PayoutRow {
    payout_id: Uuid,
    client_id: Uuid,
    status: &'static str,
    amount_minor: i64,
    currency: &'static str,
    provider: &'static str,
    msisdn: String,
    recipient_name: Option<String>,
    reference: Option<String>,
    provider_ref: Option<String>,
    failure_code: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_sequence: i64,
    country_code: i32,
}

struct HoldRow {
    amount_minor: i64,
    state: &'static str,
    provider: Option<&'static str>,
    last_sequence: i64,
}

struct BalanceRow {
    available_minor: i64,
    held_minor: i64,
    last_sequence: i64,
    updated_at: DateTime<Utc>,
}

/// The states that the CHECK constraint of `wallet_holds.state` allows.
const HOLD_STATES: [&str; 4] = ["held", "settled", "released", "refunded"];

/// Read-model rows folded from writes, with the rows that are final kept as
/// COPY text per table.
#[derive(Default)]
pub struct Fold {
    /// Payouts of the current aggregate.
    payouts: HashMap<Uuid, PayoutRow>,
    /// Holds of the current aggregate, by (wallet id, payout id).
    holds: HashMap<(String, Uuid), HoldRow>,
    /// Keys of the current aggregate's rows, which ON CONFLICT DO NOTHING
    /// keeps from being written twice.
    history_keys: HashSet<(&'static str, String, i64)>,
    posting_keys: HashSet<(&'static str, String, i64, String)>,
    deposit_keys: HashSet<(String, Uuid)>,
    /// Every wallet's balance, by (client id, currency).
    balances: HashMap<(Uuid, &'static str), BalanceRow>,
    /// Final rows not yet taken, indexed by [`Table::index`].
    buffers: [Vec<u8>; 6],
    buffered_rows: [u64; 6],
}

impl Fold {
    pub fn new() -> Fold {
        Fold::default()
    }

    /// Applies one write as `nepxy_apply_writes` would. Fails when a CHECK
    /// constraint of the SQL path would fail, and on a write that no
    /// projection produces (events, snapshot, response).
    pub fn apply(&mut self, write: Write) -> Result<(), ProjectionError> {
        match write {
            Write::Balance {
                client_id,
                currency,
                available_delta,
                held_delta,
                sequence,
                recorded_at,
            } => self.apply_balance(
                client_id,
                currency,
                (available_delta, held_delta),
                sequence,
                recorded_at,
            ),
            Write::Postings {
                aggregate_type,
                aggregate_id,
                sequence,
                postings,
                recorded_at,
            } => self.apply_postings(
                aggregate_type,
                aggregate_id,
                sequence,
                postings,
                recorded_at,
            ),
            Write::Deposit {
                wallet_id,
                deposit_id,
                amount_minor,
                sequence,
            } => self.apply_deposit(wallet_id, deposit_id, amount_minor, sequence),
            Write::Hold {
                wallet_id,
                payout_id,
                amount_minor,
                state,
                provider,
                sequence,
            } => self.apply_hold(
                wallet_id,
                payout_id,
                amount_minor,
                state,
                provider,
                sequence,
            ),
            Write::Payout {
                payout_id,
                client_id,
                amount_minor,
                currency,
                provider,
                msisdn,
                recipient_name,
                reference,
                country_code,
                created_at,
                updated_at,
                sequence,
            } => {
                require(amount_minor > 0, || {
                    format!("payouts row {payout_id}: amount_minor {amount_minor} is not positive")
                })?;
                self.payouts.entry(payout_id).or_insert(PayoutRow {
                    payout_id,
                    client_id,
                    status: "pending",
                    amount_minor,
                    currency,
                    provider,
                    msisdn,
                    recipient_name,
                    reference,
                    provider_ref: None,
                    failure_code: None,
                    created_at,
                    updated_at,
                    last_sequence: sequence,
                    country_code,
                });
                Ok(())
            }
            Write::PayoutStatus {
                payout_id,
                status,
                provider_ref,
                failure_code,
                sequence,
                recorded_at,
            } => {
                // The SQL path updates only an existing row that has not seen
                // this sequence, and a NULL keeps the stored value.
                if let Some(row) = self.payouts.get_mut(&payout_id)
                    && row.last_sequence < sequence
                {
                    row.status = status.unwrap_or(row.status);
                    row.provider_ref = provider_ref.or(row.provider_ref.take());
                    row.failure_code = failure_code.or(row.failure_code.take());
                    row.updated_at = recorded_at;
                    row.last_sequence = sequence;
                }
                Ok(())
            }
            Write::History {
                aggregate_type,
                aggregate_id,
                sequence,
                event_type,
                event_version,
                payout_id,
                client_id,
                request_id,
                source,
                recorded_at,
            } => {
                let key = (aggregate_type, aggregate_id, sequence);
                if self.history_keys.contains(&key) {
                    return Ok(());
                }
                let mut row = self.row(Table::EventHistory);
                row.text(aggregate_type);
                row.text(&key.1);
                row.int(sequence);
                row.text(&event_type);
                row.text(&event_version);
                row.optional_uuid(payout_id);
                row.optional_uuid(client_id);
                row.optional_text(request_id.as_deref());
                row.text(&source);
                row.timestamp(recorded_at);
                row.end();
                self.history_keys.insert(key);
                Ok(())
            }
            // Outboxes: a rebuild never compares or swaps them.
            Write::DispatchQueued { .. }
            | Write::DispatchState { .. }
            | Write::Notification { .. } => Ok(()),
            Write::Events { .. } => Err(not_projected("events")),
            Write::Snapshot { .. } => Err(not_projected("snapshot")),
            Write::Response { .. } => Err(not_projected("response")),
        }
    }

    fn apply_balance(
        &mut self,
        client_id: Uuid,
        currency: &'static str,
        (available_delta, held_delta): (i64, i64),
        sequence: i64,
        recorded_at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let wallet = || format!("wallet_balances row of wallet {client_id}:{currency}");
        let (available_minor, held_minor) = match self.balances.get(&(client_id, currency)) {
            Some(row) if row.last_sequence >= sequence => return Ok(()),
            Some(row) => {
                let (Some(available), Some(held)) = (
                    row.available_minor.checked_add(available_delta),
                    row.held_minor.checked_add(held_delta),
                ) else {
                    return Err(ProjectionError::Corrupt(format!(
                        "{} overflows bigint at sequence {sequence}",
                        wallet()
                    )));
                };
                (available, held)
            }
            None => (available_delta, held_delta),
        };
        require(available_minor >= 0 && held_minor >= 0, || {
            format!(
                "{} goes negative at sequence {sequence}: available_minor {available_minor}, \
                 held_minor {held_minor}",
                wallet()
            )
        })?;
        self.balances.insert(
            (client_id, currency),
            BalanceRow {
                available_minor,
                held_minor,
                last_sequence: sequence,
                updated_at: recorded_at,
            },
        );
        Ok(())
    }

    fn apply_postings(
        &mut self,
        aggregate_type: &'static str,
        aggregate_id: String,
        sequence: i64,
        postings: Vec<Posting>,
        recorded_at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        for posting in postings {
            require(
                posting.debit_minor >= 0 && posting.credit_minor >= 0,
                || {
                    format!(
                        "journal_postings row {aggregate_type} {aggregate_id} {sequence} {}: \
                     debit_minor {} or credit_minor {} is negative",
                        posting.account, posting.debit_minor, posting.credit_minor
                    )
                },
            )?;
            let key = (
                aggregate_type,
                aggregate_id.clone(),
                sequence,
                posting.account,
            );
            if self.posting_keys.contains(&key) {
                continue;
            }
            let mut row = self.row(Table::JournalPostings);
            row.text(aggregate_type);
            row.text(&aggregate_id);
            row.int(sequence);
            row.text(&key.3);
            row.text(posting.currency);
            row.int(posting.debit_minor);
            row.int(posting.credit_minor);
            row.timestamp(recorded_at);
            row.end();
            self.posting_keys.insert(key);
        }
        Ok(())
    }

    fn apply_deposit(
        &mut self,
        wallet_id: String,
        deposit_id: Uuid,
        amount_minor: i64,
        sequence: i64,
    ) -> Result<(), ProjectionError> {
        require(amount_minor > 0, || {
            format!(
                "wallet_deposits row {wallet_id} {deposit_id}: amount_minor {amount_minor} is \
                 not positive"
            )
        })?;
        let key = (wallet_id, deposit_id);
        if self.deposit_keys.contains(&key) {
            return Ok(());
        }
        let mut row = self.row(Table::WalletDeposits);
        row.text(&key.0);
        row.uuid(deposit_id);
        row.int(amount_minor);
        row.int(sequence);
        row.end();
        self.deposit_keys.insert(key);
        Ok(())
    }

    fn apply_hold(
        &mut self,
        wallet_id: String,
        payout_id: Uuid,
        amount_minor: i64,
        state: &'static str,
        provider: Option<&'static str>,
        sequence: i64,
    ) -> Result<(), ProjectionError> {
        let valid_state = HOLD_STATES.contains(&state);
        let invalid_state = |wallet_id: &str| {
            format!(
                "wallet_holds row {wallet_id} {payout_id}: state {state:?} is not one of {}",
                HOLD_STATES.join(", ")
            )
        };
        match self.holds.entry((wallet_id, payout_id)) {
            // The amount never changes once the hold exists.
            Entry::Occupied(entry) => {
                if entry.get().last_sequence < sequence {
                    require(valid_state, || invalid_state(&entry.key().0))?;
                    let row = entry.into_mut();
                    row.state = state;
                    row.provider = provider.or(row.provider);
                    row.last_sequence = sequence;
                }
            }
            Entry::Vacant(entry) => {
                require(amount_minor > 0, || {
                    format!(
                        "wallet_holds row {} {payout_id}: amount_minor {amount_minor} is not \
                         positive",
                        entry.key().0
                    )
                })?;
                require(valid_state, || invalid_state(&entry.key().0))?;
                entry.insert(HoldRow {
                    amount_minor,
                    state,
                    provider,
                    last_sequence: sequence,
                });
            }
        }
        Ok(())
    }

    /// Ends the current aggregate: its `payouts` and `wallet_holds` rows
    /// become final, and the keys kept to skip repeated rows are forgotten.
    /// Call it after the last write of each aggregate. A key repeated in a
    /// later aggregate reaches the table twice, so the rebuild fails when it
    /// adds the table's primary key after the load.
    pub fn end_aggregate(&mut self) {
        let payouts = std::mem::take(&mut self.payouts);
        for payout in payouts.into_values() {
            let mut row = self.row(Table::Payouts);
            row.uuid(payout.payout_id);
            row.uuid(payout.client_id);
            row.text(payout.status);
            row.int(payout.amount_minor);
            row.text(payout.currency);
            row.text(payout.provider);
            row.text(&payout.msisdn);
            row.optional_text(payout.recipient_name.as_deref());
            row.optional_text(payout.reference.as_deref());
            row.optional_text(payout.provider_ref.as_deref());
            row.optional_text(payout.failure_code.as_deref());
            row.timestamp(payout.created_at);
            row.timestamp(payout.updated_at);
            row.int(payout.last_sequence);
            row.int(i64::from(payout.country_code));
            row.end();
        }

        let holds = std::mem::take(&mut self.holds);
        for ((wallet_id, payout_id), hold) in holds {
            let mut row = self.row(Table::WalletHolds);
            row.text(&wallet_id);
            row.uuid(payout_id);
            row.int(hold.amount_minor);
            row.text(hold.state);
            row.optional_text(hold.provider);
            row.int(hold.last_sequence);
            row.end();
        }

        self.history_keys.clear();
        self.posting_keys.clear();
        self.deposit_keys.clear();
    }

    /// Ends the last aggregate and turns every balance into a final row.
    pub fn finish(&mut self) {
        self.end_aggregate();
        let balances = std::mem::take(&mut self.balances);
        for ((client_id, currency), balance) in balances {
            let mut row = self.row(Table::WalletBalances);
            row.uuid(client_id);
            row.text(currency);
            row.int(balance.available_minor);
            row.int(balance.held_minor);
            row.int(balance.last_sequence);
            row.timestamp(balance.updated_at);
            row.end();
        }
    }

    /// Bytes of final rows not yet taken.
    pub fn buffered_bytes(&self) -> usize {
        self.buffers.iter().map(Vec::len).sum()
    }

    /// Removes and returns the final rows, one batch per table that has any.
    pub fn take_batches(&mut self) -> Vec<CopyBatch> {
        let mut batches = Vec::new();
        for table in Table::ALL {
            let index = table.index();
            if self.buffers[index].is_empty() {
                continue;
            }
            batches.push(CopyBatch {
                table,
                rows: std::mem::take(&mut self.buffered_rows[index]),
                data: std::mem::take(&mut self.buffers[index]),
            });
        }
        batches
    }

    fn row(&mut self, table: Table) -> RowWriter<'_> {
        self.buffered_rows[table.index()] += 1;
        RowWriter::new(&mut self.buffers[table.index()])
    }
}

fn require(condition: bool, message: impl FnOnce() -> String) -> Result<(), ProjectionError> {
    if condition {
        Ok(())
    } else {
        Err(ProjectionError::Corrupt(message()))
    }
}

fn not_projected(kind: &str) -> ProjectionError {
    ProjectionError::Corrupt(format!(
        "a projection produced a write of kind {kind}, which only commands send"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_000_000 + seconds, 0).expect("valid timestamp")
    }

    fn balance(client_id: Uuid, available_delta: i64, held_delta: i64, sequence: i64) -> Write {
        Write::Balance {
            client_id,
            currency: "XOF",
            available_delta,
            held_delta,
            sequence,
            recorded_at: at(sequence),
        }
    }

    fn history(aggregate_id: &str, sequence: i64, request_id: Option<&str>) -> Write {
        Write::History {
            aggregate_type: "Wallet",
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            event_type: "FundsDeposited".to_owned(),
            event_version: "1".to_owned(),
            payout_id: None,
            client_id: None,
            request_id: request_id.map(str::to_owned),
            source: "api".to_owned(),
            recorded_at: at(sequence),
        }
    }

    fn text_of(fold: &mut Fold, table: Table) -> String {
        let batches = fold.take_batches();
        let batch = batches
            .iter()
            .find(|batch| batch.table == table)
            .unwrap_or_else(|| panic!("no rows for {}", table.name()));
        String::from_utf8(batch.data.clone()).expect("COPY text is UTF-8")
    }

    #[test]
    fn copy_text_escapes_and_nulls() {
        let mut fold = Fold::new();
        fold.apply(history("w\\1\t2\n3\r4", 1, None))
            .expect("apply");
        fold.apply(history("w", 2, Some(""))).expect("apply");
        let text = text_of(&mut fold, Table::EventHistory);
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert_eq!(
            rows[0],
            "Wallet\tw\\\\1\\t2\\n3\\r4\t1\tFundsDeposited\t1\t\\N\t\\N\t\\N\tapi\t\
             2026-11-30T00:53:21Z"
        );
        assert!(
            rows[1].contains("\t\\N\t\\N\t\tapi\t"),
            "an empty request id is not NULL: {}",
            rows[1]
        );
    }

    #[test]
    fn history_repeat_keeps_first_row() {
        let mut fold = Fold::new();
        fold.apply(history("w", 1, Some("first"))).expect("apply");
        fold.apply(history("w", 1, Some("second"))).expect("apply");
        let text = text_of(&mut fold, Table::EventHistory);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("first"), "{text}");
    }

    #[test]
    fn balance_skips_applied_sequences() {
        let client_id = Uuid::new_v4();
        let mut fold = Fold::new();
        for write in [
            balance(client_id, 1_000, 0, 1),
            balance(client_id, -400, 400, 2),
            balance(client_id, 5_000, 0, 2),
        ] {
            fold.apply(write).expect("apply");
        }
        fold.finish();
        let text = text_of(&mut fold, Table::WalletBalances);
        assert!(
            text.starts_with(&format!("{client_id}\tXOF\t600\t400\t2\t")),
            "{text}"
        );
    }

    #[test]
    fn negative_balance_names_wallet_and_sequence() {
        let client_id = Uuid::new_v4();
        let mut fold = Fold::new();
        fold.apply(balance(client_id, 1_000, 0, 1)).expect("apply");
        let error = fold
            .apply(balance(client_id, 0, -1, 7))
            .expect_err("held_minor goes negative");
        let message = error.to_string();
        assert!(
            message.contains(&format!("wallet {client_id}:XOF")),
            "{message}"
        );
        assert!(message.contains("sequence 7"), "{message}");
        assert!(message.contains("held_minor -1"), "{message}");
    }

    #[test]
    fn overflowing_balance_is_rejected() {
        let client_id = Uuid::new_v4();
        let mut fold = Fold::new();
        fold.apply(balance(client_id, i64::MAX, 0, 1))
            .expect("apply");
        let error = fold
            .apply(balance(client_id, 1, 0, 2))
            .expect_err("available_minor overflows");
        assert!(error.to_string().contains("overflows bigint"), "{error}");
    }

    #[test]
    fn command_writes_are_rejected() {
        let mut fold = Fold::new();
        let snapshot = Write::Snapshot {
            aggregate_type: "Wallet",
            aggregate_id: "w".to_owned(),
            sequence: 1,
            payload: "{}".to_owned(),
        };
        let error = fold.apply(snapshot).expect_err("snapshot write");
        assert!(error.to_string().contains("snapshot"), "{error}");
    }

    #[test]
    fn outbox_writes_add_no_rows() {
        let payout_id = Uuid::new_v4();
        let mut fold = Fold::new();
        for write in [
            Write::DispatchQueued {
                payout_id,
                provider: "tmoney",
                at: at(1),
            },
            Write::DispatchState {
                payout_id,
                state: "done",
            },
            Write::Notification {
                payout_id,
                event_type: "payout.succeeded",
                at: at(2),
            },
        ] {
            fold.apply(write).expect("apply");
        }
        fold.finish();
        assert_eq!(fold.buffered_bytes(), 0);
        assert!(fold.take_batches().is_empty());
    }
}
