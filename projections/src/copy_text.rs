//! Read-model rows in the text format of `COPY ... FROM STDIN`, and their
//! loading into a schema's tables.

use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ProjectionError;

/// A read model that [`crate::fold::Fold`] fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Payouts,
    WalletBalances,
    JournalPostings,
    EventHistory,
    WalletHolds,
    WalletDeposits,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Payouts,
        Table::WalletBalances,
        Table::JournalPostings,
        Table::EventHistory,
        Table::WalletHolds,
        Table::WalletDeposits,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Table::Payouts => "payouts",
            Table::WalletBalances => "wallet_balances",
            Table::JournalPostings => "journal_postings",
            Table::EventHistory => "event_history",
            Table::WalletHolds => "wallet_holds",
            Table::WalletDeposits => "wallet_deposits",
        }
    }

    /// Columns that `nepxy_apply_writes` sets, in the order of the COPY rows.
    /// Columns that later migrations add with a default keep it, as they do
    /// on the SQL path.
    fn columns(self) -> &'static str {
        match self {
            Table::Payouts => {
                "payout_id, client_id, status, amount_minor, currency, provider, msisdn, \
                 recipient_name, reference, provider_ref, failure_code, created_at, updated_at, \
                 last_sequence, country_code"
            }
            Table::WalletBalances => {
                "client_id, currency, available_minor, held_minor, last_sequence, updated_at"
            }
            Table::JournalPostings => {
                "aggregate_type, aggregate_id, sequence, account, currency, debit_minor, \
                 credit_minor, recorded_at"
            }
            Table::EventHistory => {
                "aggregate_type, aggregate_id, sequence, event_type, event_version, payout_id, \
                 client_id, request_id, source, recorded_at"
            }
            Table::WalletHolds => {
                "wallet_id, payout_id, amount_minor, state, provider, last_sequence"
            }
            Table::WalletDeposits => "wallet_id, deposit_id, amount_minor, sequence",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Rows of one table in COPY text format, ready to load.
#[derive(Debug)]
pub struct CopyBatch {
    pub table: Table,
    pub rows: u64,
    pub(crate) data: Vec<u8>,
}

impl CopyBatch {
    /// Loads the rows into `schema.table` with one COPY statement. Returns
    /// the number of rows loaded.
    pub async fn copy_into(
        &self,
        conn: &mut PgConnection,
        schema: &str,
    ) -> Result<u64, ProjectionError> {
        let statement = format!(
            "COPY {schema}.{} ({}) FROM STDIN",
            self.table.name(),
            self.table.columns()
        );
        let mut copy = conn.copy_in_raw(&statement).await?;
        // On an error, dropping `copy` ends the COPY with CopyFail.
        copy.send(self.data.as_slice()).await?;
        Ok(copy.finish().await?)
    }
}

/// Appends one row in the text format of COPY: columns separated by tabs,
/// `\N` for NULL, and backslash escapes for backslash, tab, newline and
/// carriage return.
pub(crate) struct RowWriter<'a> {
    buffer: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> RowWriter<'a> {
    pub(crate) fn new(buffer: &'a mut Vec<u8>) -> RowWriter<'a> {
        RowWriter {
            buffer,
            first: true,
        }
    }

    fn separate(&mut self) {
        if !self.first {
            self.buffer.push(b'\t');
        }
        self.first = false;
    }

    pub(crate) fn text(&mut self, value: &str) {
        self.separate();
        let bytes = value.as_bytes();
        let mut plain_from = 0;
        for (index, byte) in bytes.iter().enumerate() {
            let escaped: &[u8] = match byte {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                _ => continue,
            };
            self.buffer.extend_from_slice(&bytes[plain_from..index]);
            self.buffer.extend_from_slice(escaped);
            plain_from = index + 1;
        }
        self.buffer.extend_from_slice(&bytes[plain_from..]);
    }

    pub(crate) fn optional_text(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    pub(crate) fn null(&mut self) {
        self.separate();
        self.buffer.extend_from_slice(b"\\N");
    }

    pub(crate) fn int(&mut self, value: i64) {
        self.separate();
        self.push_display(value);
    }

    pub(crate) fn uuid(&mut self, value: Uuid) {
        self.separate();
        self.push_display(value.hyphenated());
    }

    pub(crate) fn optional_uuid(&mut self, value: Option<Uuid>) {
        match value {
            Some(value) => self.uuid(value),
            None => self.null(),
        }
    }

    /// Writes the timestamp as serde writes it into the SQL path's JSON
    /// (RFC 3339 with up to nanoseconds), so that PostgreSQL rounds it to
    /// microseconds the same way on both paths.
    pub(crate) fn timestamp(&mut self, value: DateTime<Utc>) {
        self.separate();
        self.buffer.extend_from_slice(
            value
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
                .as_bytes(),
        );
    }

    fn push_display(&mut self, value: impl std::fmt::Display) {
        // Writing to a Vec<u8> cannot fail.
        let _ = write!(self.buffer, "{value}");
    }

    pub(crate) fn end(self) {
        self.buffer.push(b'\n');
    }
}
