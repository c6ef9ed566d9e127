//! `nepxy-replay`: operator commands that read the ledger's database directly.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sqlx::postgres::PgPoolOptions;

mod chain;
mod export;
mod rebuild;
mod verify;
mod webhooks;

#[derive(Parser)]
#[command(
    name = "nepxy-replay",
    version,
    about = "Operator tools for the Nepxy payout ledger"
)]
struct Cli {
    /// PostgreSQL URL of the ledger database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the history and the books: every event's hash chain and every
    /// signed checkpoint (signatures when CHECKPOINT_KEY is set), postings
    /// balancing per currency, no negative client balance, and every wallet
    /// balance equal to the sum of its postings. Exits with status 1 when a
    /// check fails, naming the first broken link.
    Verify,
    /// Sign a checkpoint of every aggregate's last event hash with
    /// CHECKPOINT_KEY; run it periodically, e.g. hourly from a scheduler.
    Checkpoint,
    /// Write the event history as NDJSON (one event per line, with its chain
    /// hash) to stdout, for a time range or one aggregate.
    Export(export::ExportArgs),
    /// Replay every event into shadow read models, optionally compare them
    /// with the live ones (--verify) and swap them in (--swap).
    Rebuild(rebuild::RebuildArgs),
    /// Stored provider webhooks: list, show, replay.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
}

async fn checkpoint(pool: &sqlx::PgPool) -> anyhow::Result<bool> {
    let key = std::env::var("CHECKPOINT_KEY")
        .ok()
        .filter(|key| key.len() >= 32)
        .ok_or_else(|| anyhow::anyhow!("CHECKPOINT_KEY is missing or shorter than 32 bytes; set it to a random secret kept outside the database"))?;
    let (checkpoint_id, heads) = chain::checkpoint(pool, key.as_bytes()).await?;
    println!("checkpoint {checkpoint_id} signed {heads} aggregate heads");
    Ok(true)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let pool = match PgPoolOptions::new()
        .max_connections(2)
        .connect(&cli.database_url)
        .await
    {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("nepxy-replay: could not connect to DATABASE_URL: {error}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Verify => verify::run(&pool).await,
        Command::Webhooks(command) => webhooks::run(&pool, command).await,
        Command::Checkpoint => checkpoint(&pool).await,
        Command::Export(args) => export::run(&pool, args).await,
        Command::Rebuild(args) => rebuild::run(&pool, args).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("nepxy-replay: {error:#}");
            ExitCode::from(2)
        }
    }
}
