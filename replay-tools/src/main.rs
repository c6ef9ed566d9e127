//! `nepxy-replay`: operator commands that read the ledger's database directly.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sqlx::postgres::PgPoolOptions;

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
    /// Check the books: postings balance per currency, no available balance
    /// is negative, and every wallet balance equals the sum of its postings.
    /// Exits with status 1 when a check fails.
    Verify,
    /// Stored provider webhooks: list, show, replay.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
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
