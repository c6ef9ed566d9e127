//! `nepxy-replay verify`: double-entry checks over the read models.

use nepxy_projections::queries;

use crate::chain;
use sqlx::PgPool;

/// Runs every check, prints one line per finding, and returns whether all
/// checks passed.
pub async fn run(pool: &PgPool) -> anyhow::Result<bool> {
    let mut clean = true;

    let (chained, broken) = chain::verify_chains(pool).await?;
    match broken {
        Some(link) => {
            clean = false;
            println!(
                "FAIL first broken link: aggregate {} {} sequence {}: {}",
                link.aggregate_type, link.aggregate_id, link.sequence, link.reason
            );
        }
        None => println!("checked the hash chains of {chained} events"),
    }

    let key = std::env::var("CHECKPOINT_KEY")
        .ok()
        .filter(|key| !key.is_empty());
    let (checkpoints, problems) =
        chain::verify_checkpoints(pool, key.as_deref().map(str::as_bytes)).await?;
    for problem in &problems {
        clean = false;
        println!("FAIL {problem}");
    }
    if key.is_none() && checkpoints > 0 {
        println!("note: CHECKPOINT_KEY is not set, so checkpoint signatures were not checked");
    }
    println!("checked {checkpoints} checkpoints");

    let imbalances = queries::journal_imbalance(pool).await?;
    for (currency, imbalance) in &imbalances {
        if *imbalance != 0 {
            clean = false;
            println!("FAIL journal postings in {currency} sum to {imbalance}, expected 0");
        }
    }
    println!("checked journal balance of {} currencies", imbalances.len());

    let mismatches = queries::wallet_mismatches(pool).await?;
    for mismatch in &mismatches {
        clean = false;
        println!(
            "FAIL wallet {} {}: read model shows available {} held {}, postings give available {} held {}",
            mismatch.client_id,
            mismatch.currency,
            mismatch.available_minor,
            mismatch.held_minor,
            mismatch.posted_available_minor,
            mismatch.posted_held_minor
        );
    }

    let negative = queries::negative_available_accounts(pool).await?;
    for (account, currency, balance) in &negative {
        clean = false;
        println!("FAIL account {account} has a negative balance of {balance} {currency}");
    }

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    println!("checked {events} events");
    println!(
        "{}",
        if clean {
            "verify: ok"
        } else {
            "verify: FAILED"
        }
    );
    Ok(clean)
}
