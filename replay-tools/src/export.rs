//! `nepxy-replay export`: the event history as NDJSON, streamed in the same
//! global order as the audit feed, with each event's chain hash.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::Args;
use nepxy_api::routes::audit::event_json;
use nepxy_api::store::audit::{self, EventFilter};
use sqlx::PgPool;

/// Events read per query.
const PAGE_SIZE: i64 = 1_000;

#[derive(Args)]
pub struct ExportArgs {
    /// Only events recorded at or after this RFC 3339 time.
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Only events recorded before this RFC 3339 time.
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Only events of this aggregate type, e.g. Payout or Wallet.
    #[arg(long)]
    aggregate_type: Option<String>,
    /// Only events of this aggregate id (with --aggregate-type).
    #[arg(long, requires = "aggregate_type")]
    aggregate_id: Option<String>,
}

/// Writes one JSON object per line to stdout; returns the count on stderr.
pub async fn run(pool: &PgPool, args: ExportArgs) -> anyhow::Result<bool> {
    let mut filter = EventFilter {
        aggregate_type: args.aggregate_type,
        aggregate_id: args.aggregate_id,
        event_type: None,
        recorded_from: args.from,
        recorded_before: args.to,
        after: None,
        limit: PAGE_SIZE,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut exported = 0_u64;
    loop {
        let page = audit::events(pool, &filter).await?;
        for event in &page {
            serde_json::to_writer(&mut out, &event_json(event))?;
            out.write_all(b"\n")?;
        }
        exported += page.len() as u64;
        let full = page.len() as i64 == PAGE_SIZE;
        match page.last() {
            Some(last) if full => filter.after = Some(last.position),
            _ => break,
        }
    }
    out.flush()?;
    eprintln!("exported {exported} events");
    Ok(true)
}
