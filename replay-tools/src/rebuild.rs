//! `nepxy-replay rebuild`: replays every event into shadow tables, compares
//! them with the live read models and swaps them in when asked.

use std::io::Write;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use nepxy_projections::rebuild::{self, MAX_DIFFERENCES_SHOWN, READ_MODELS};
use sqlx::PgPool;

/// Width of the progress bar, in characters.
const BAR_WIDTH: usize = 40;

#[derive(Args)]
pub struct RebuildArgs {
    /// Rebuild only this read model (repeatable): payouts, wallet_balances,
    /// journal_postings, event_history, wallet_holds, wallet_deposits.
    #[arg(long = "projection")]
    projections: Vec<String>,
    /// Compare the rebuilt tables with the live ones row by row and report
    /// every difference; exit with status 1 when any differs.
    #[arg(long)]
    verify: bool,
    /// Replace the live tables with the rebuilt ones. The replaced tables are
    /// kept in a schema named replaced_<unix time>. Writers wait during the
    /// swap; run it in maintenance mode.
    #[arg(long)]
    swap: bool,
}

pub async fn run(pool: &PgPool, args: RebuildArgs) -> anyhow::Result<bool> {
    let tables: Vec<&'static str> = if args.projections.is_empty() {
        READ_MODELS.to_vec()
    } else {
        let mut tables = Vec::new();
        for name in &args.projections {
            match READ_MODELS.iter().find(|table| **table == name.as_str()) {
                Some(table) => tables.push(*table),
                None => bail!(
                    "unknown projection {name:?}; use one of {}",
                    READ_MODELS.join(", ")
                ),
            }
        }
        tables
    };

    let started = Instant::now();
    let applied = rebuild::rebuild(pool, &tables, |done, total| {
        let share = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        let filled = ((share * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
        eprint!(
            "\r[{}{}] {:>3.0}% {done}/{total} events",
            "#".repeat(filled),
            " ".repeat(BAR_WIDTH - filled),
            share * 100.0
        );
        let _ = std::io::stderr().flush();
    })
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!();
    println!(
        "rebuilt {} from {applied} events in {seconds:.2} s ({:.0} events/s)",
        tables.join(", "),
        applied as f64 / seconds.max(f64::EPSILON)
    );

    let mut clean = true;
    if args.verify {
        for diff in rebuild::compare(pool, &tables).await? {
            if diff.only_live_count == 0 && diff.only_rebuilt_count == 0 {
                println!("{}: identical", diff.table);
                continue;
            }
            clean = false;
            println!(
                "DIFF {}: {} rows only in the live table, {} only in the rebuilt one (first {MAX_DIFFERENCES_SHOWN} of each below)",
                diff.table, diff.only_live_count, diff.only_rebuilt_count
            );
            for row in &diff.only_live {
                println!("  live:    {row}");
            }
            for row in &diff.only_rebuilt {
                println!("  rebuilt: {row}");
            }
        }
    }

    if args.swap {
        let replaced = rebuild::swap(pool, &tables).await?;
        println!(
            "swapped in the rebuilt {}; the replaced tables are in schema {replaced}",
            tables.join(", ")
        );
    }
    rebuild::drop_shadow(pool).await?;
    Ok(clean)
}
