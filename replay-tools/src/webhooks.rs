//! `nepxy-replay webhooks`: list, show and replay stored provider deliveries.

use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use nepxy_api::config::WebhookSecrets;
use nepxy_api::providers::config::ProvidersConfig;
use nepxy_api::providers::momo::MomoClient;
use nepxy_api::routes::webhooks::delivery_json;
use nepxy_api::store::Store;
use nepxy_api::store::webhooks::{self, DeliveryFilter};
use nepxy_api::webhooks::confirm::{NotConfigured, ProviderLookup, TransferStatusLookup};
use nepxy_api::webhooks::intake::{Intake, Refusal};
use nepxy_ledger::metadata::Actor;
use sqlx::PgPool;
use uuid::Uuid;

/// Deliveries read per page while selecting what to replay.
const PAGE_SIZE: i64 = 500;
/// A progress line is printed after this many replayed deliveries.
const PROGRESS_EVERY: usize = 100;

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// List stored deliveries, newest first.
    List(ListArgs),
    /// Show one delivery with its headers and raw body.
    Show {
        /// Id of the delivery (the webhook_id in responses and logs).
        id: Uuid,
    },
    /// Verify and apply stored deliveries again. The signature is checked
    /// against the stored bytes, but not the timestamp or the nonce.
    Replay(ReplayArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Only deliveries of this provider: tmoney, thunes or momo.
    #[arg(long)]
    provider: Option<String>,
    /// Only deliveries with this verdict, e.g. orphan, rejected, unconfirmed.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(nepxy_api::store::webhooks::VERDICTS))]
    verdict: Option<String>,
    /// Only deliveries received at or after this RFC 3339 time.
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Only deliveries received before this RFC 3339 time.
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Maximum number of deliveries to print.
    #[arg(long, default_value_t = 50)]
    limit: i64,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Replay this delivery.
    #[arg(long, conflicts_with_all = ["provider", "orphans"])]
    id: Option<Uuid>,
    /// Replay every delivery of this provider in the --from/--to range.
    #[arg(long, requires = "from")]
    provider: Option<String>,
    /// Replay every delivery whose verdict is orphan.
    #[arg(long, conflicts_with = "provider")]
    orphans: bool,
    /// Start of the time range (RFC 3339), with --provider or --orphans.
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// End of the time range (RFC 3339, exclusive).
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Why the deliveries are replayed; stored with each replay.
    #[arg(long)]
    reason: String,
    /// Who replays, stored with each replay; defaults to the login name.
    #[arg(long, env = "USER", default_value = "operator")]
    actor: String,
    /// Print what each delivery would change without changing anything.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(pool: &PgPool, command: WebhooksCommand) -> anyhow::Result<bool> {
    match command {
        WebhooksCommand::List(args) => {
            let filter = DeliveryFilter {
                provider: args.provider,
                verdict: args.verdict,
                received_from: args.from,
                received_before: args.to,
                after: None,
                limit: args.limit.clamp(1, 10_000),
            };
            let (rows, _) = webhooks::list(pool, &filter).await?;
            for row in &rows {
                println!(
                    "{}  {}  {:<7}  {:<19}  {}",
                    row.webhook_id,
                    row.received_at.to_rfc3339(),
                    row.provider,
                    row.verdict,
                    row.reason.as_deref().unwrap_or("")
                );
            }
            println!("{} deliveries", rows.len());
            Ok(true)
        }
        WebhooksCommand::Show { id } => {
            let row = webhooks::find(pool, id)
                .await?
                .with_context(|| format!("webhook {id} not found"))?;
            println!("{}", serde_json::to_string_pretty(&delivery_json(&row))?);
            Ok(true)
        }
        WebhooksCommand::Replay(args) => replay(pool, args).await,
    }
}

async fn replay(pool: &PgPool, args: ReplayArgs) -> anyhow::Result<bool> {
    let reason = args.reason.trim();
    if reason.is_empty() {
        bail!("--reason must not be empty");
    }
    let ids = select(pool, &args).await?;
    if ids.is_empty() {
        println!("no deliveries match");
        return Ok(true);
    }

    // MoMo reports are confirmed with MoMo's status endpoint when the MOMO_*
    // variables are set, as the server does; otherwise they stay unconfirmed.
    let momo_status: Arc<dyn TransferStatusLookup> = match ProvidersConfig::from_env()?.momo {
        Some(momo) => Arc::new(ProviderLookup(Arc::new(MomoClient::new(momo)))),
        None => Arc::new(NotConfigured),
    };
    let intake = Intake {
        store: Store::new(pool.clone()),
        secrets: WebhookSecrets::from_env()?,
        momo_status,
        // Replays from the command line run even while the server is in
        // maintenance.
        maintenance: Default::default(),
    };
    let actor = Actor {
        subject: format!("cli:{}", args.actor),
        role: "operator".to_owned(),
    };

    let mut all_applied = true;
    for (index, id) in ids.iter().enumerate() {
        let outcome = intake
            .replay(*id, actor.clone(), reason, args.dry_run)
            .await
            .map_err(|error| anyhow::anyhow!("replay of {id} failed: {error}"))?;
        let line = match outcome {
            None => format!("{id}  not found"),
            Some(Ok(handled)) => format!(
                "{id}  {}{}  events: {}  {}",
                if args.dry_run { "would be " } else { "" },
                handled.verdict,
                if handled.events.is_empty() {
                    "none".to_owned()
                } else {
                    handled.events.join(", ")
                },
                handled.detail.unwrap_or_default()
            ),
            Some(Err(Refusal::Rejected { reason, .. })) => {
                all_applied = false;
                format!("{id}  rejected: {reason}")
            }
            Some(Err(Refusal::Malformed { reason, .. })) => {
                all_applied = false;
                format!("{id}  malformed: {reason}")
            }
        };
        println!("{line}");
        if (index + 1) % PROGRESS_EVERY == 0 {
            eprintln!(
                "progress: {} of {} deliveries replayed",
                index + 1,
                ids.len()
            );
        }
    }
    eprintln!(
        "done: {} deliveries {}",
        ids.len(),
        if args.dry_run { "checked" } else { "replayed" }
    );
    Ok(all_applied)
}

/// The ids to replay, oldest first, so reports apply in arrival order.
async fn select(pool: &PgPool, args: &ReplayArgs) -> anyhow::Result<Vec<Uuid>> {
    if let Some(id) = args.id {
        return Ok(vec![id]);
    }
    if args.provider.is_none() && !args.orphans {
        bail!("choose what to replay: --id ID, --provider NAME --from TIME, or --orphans");
    }
    let mut filter = DeliveryFilter {
        provider: args.provider.clone(),
        verdict: args.orphans.then(|| "orphan".to_owned()),
        received_from: args.from,
        received_before: args.to,
        after: None,
        limit: PAGE_SIZE,
    };
    let mut ids = Vec::new();
    loop {
        let (rows, next) = webhooks::list(pool, &filter).await?;
        ids.extend(rows.iter().map(|row| row.webhook_id));
        match next {
            Some(cursor) => filter.after = Some(cursor),
            None => break,
        }
    }
    ids.reverse();
    Ok(ids)
}
