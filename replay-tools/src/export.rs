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
/// Longest wait for transactions that began before the export to end.
const HORIZON_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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
    // The feed holds back events of transactions that may still run. The
    // export covers every transaction that started before it, so it keeps
    // reading until the feed's horizon has passed all of them.
    let started_before: u64 =
        sqlx::query_scalar::<_, String>("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
            .fetch_one(pool)
            .await?
            .parse()?;
    let deadline = std::time::Instant::now() + HORIZON_WAIT;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut exported = 0_u64;
    loop {
        // Checked before the read, so once it holds, this read sees every
        // event of the transactions that began before the export.
        let horizon: u64 = nepxy_projections::feed::horizon(pool).await?.parse()?;
        let horizon_passed = horizon >= started_before;
        let page = audit::events(pool, &filter).await?;
        for event in &page {
            serde_json::to_writer(&mut out, &event_json(event))?;
            out.write_all(b"\n")?;
        }
        exported += page.len() as u64;
        if let Some(last) = page.last() {
            filter.after = Some(last.position);
        }
        if page.len() as i64 == PAGE_SIZE {
            continue;
        }
        if horizon_passed {
            break;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "a transaction older than the export is still running after {} s; the export stopped after {exported} events",
                HORIZON_WAIT.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    out.flush()?;
    eprintln!("exported {exported} events");
    Ok(true)
}
