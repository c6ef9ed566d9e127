//! `nepxy-bench`: sends payout commands, repeated keys, signed provider
//! webhooks and reads to a running service over loopback HTTP. Between its
//! runs it runs the pgbench baseline against the same PostgreSQL, and it
//! reports each figure with its ratio to the baseline at the same client
//! count.
//!
//! The service must run against an empty database with BOOTSTRAP_ADMIN_SECRET
//! set, because the driver creates its own admin, clients and deposits.
//! Every run is bounded by `--requests` and `--max-seconds`, and pgbench by
//! `--max-seconds`.

mod mixes;
mod pgbench;
mod report;
mod service;
mod signing;
mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::Value;

use crate::mixes::{Driver, Mix, Phase, PhaseResult, Wallets};
use crate::pgbench::{Baseline, BaselineRun, WalletSpread};
use crate::report::{HalfOf, Row, RunLabel};
use crate::signing::WebhookKeys;

/// The runs the driver can make at each client count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum MixArg {
    /// New payouts, each worker paying from its own wallet.
    PayoutsMany,
    /// New payouts, every worker paying from one client's single wallet.
    PayoutsOne,
    /// Payouts where --duplicate-percent of the requests repeat a key.
    Duplicates,
    /// Signed TMoney and Thunes success reports for payouts of this run.
    Webhooks,
    /// GET of a payout and GET of a balance, alternately.
    Reads,
}

#[derive(Parser)]
#[command(
    name = "nepxy-bench",
    about = "Load driver for the Nepxy ledger, with ratios to a pgbench baseline"
)]
struct Args {
    /// Base URL of the service; loopback only.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    base_url: String,
    #[arg(long, env = "BOOTSTRAP_ADMIN_SECRET", hide_env_values = true)]
    bootstrap_secret: String,
    /// Concurrent clients of each run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    clients: Vec<usize>,
    /// Runs made at each client count, comma-separated, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "payouts-many,payouts-one,duplicates,webhooks,reads"
    )]
    mixes: Vec<MixArg>,
    /// Maximum requests of each run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Maximum duration of each run and of each pgbench run, in seconds.
    #[arg(long, default_value_t = 8)]
    max_seconds: u64,
    /// Payouts sent before the first measured run, to open connections and
    /// warm caches.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Share of the duplicate mix's requests that repeat a key, in percent.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(0..=100))]
    duplicate_percent: u32,
    /// After the runs at the largest client count, send payouts there at
    /// fixed rates and report their latency: half the target rate (0.5 x the
    /// baseline with distinct wallets, 0.25 x with one wallet) and half the
    /// throughput the payouts runs reached.
    #[arg(long)]
    half_load: bool,
    /// Process id of the service, to report its memory and CPU time.
    #[arg(long)]
    service_pid: Option<u32>,
    /// Directory with pgbench and psql; with --baseline-url, runs the
    /// baseline before the matching runs.
    #[arg(long, requires = "baseline_url")]
    pg_bin: Option<PathBuf>,
    /// Database for the baseline tables (setup.sql drops and recreates its
    /// schema nepxy_baseline); never the service's database.
    #[arg(long, requires = "pg_bin")]
    baseline_url: Option<String>,
    /// Directory with the baseline's setup.sql and payout.sql.
    #[arg(long, default_value = "bench/pgbench")]
    baseline_scripts: PathBuf,
    /// Directory for pgbench's per-transaction logs.
    #[arg(long, default_value = "target")]
    work_dir: PathBuf,
    /// TMoney webhook secret the service verifies with; needed by the
    /// webhooks mix.
    #[arg(long, env = "TMONEY_WEBHOOK_SECRET", hide_env_values = true)]
    tmoney_webhook_secret: Option<String>,
    /// Thunes webhook secret (whsec_ and base64) the service verifies with;
    /// needed by the webhooks mix.
    #[arg(long, env = "THUNES_WEBHOOK_SECRET", hide_env_values = true)]
    thunes_webhook_secret: Option<String>,
    /// After each payouts run, wait until every payout it created reaches a
    /// final status (the service must run with a provider sandbox), and
    /// report payouts per second from first request to last final status.
    #[arg(long)]
    wait_final: bool,
    /// Recipient number of every payout; its last two digits choose the
    /// sandbox's outcome (00 succeeds).
    #[arg(long, default_value = "+22890000000")]
    msisdn: String,
    /// Also write the result table, in Markdown, to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.base_url.starts_with("http://127.") && !args.base_url.starts_with("http://localhost") {
        bail!(
            "--base-url must be a loopback address, got {}",
            args.base_url
        );
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients must list counts of at least 1");
    }
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let keys = match (&args.tmoney_webhook_secret, &args.thunes_webhook_secret) {
        (Some(tmoney), Some(thunes)) => Some(WebhookKeys::from_secrets(tmoney, thunes)?),
        _ if args.mixes.contains(&MixArg::Webhooks) => bail!(
            "the webhooks mix needs TMONEY_WEBHOOK_SECRET and THUNES_WEBHOOK_SECRET, \
             the same values the service runs with"
        ),
        _ => None,
    };
    let baseline = match (&args.pg_bin, &args.baseline_url) {
        (Some(pg_bin), Some(url)) => {
            std::fs::create_dir_all(&args.work_dir)
                .with_context(|| format!("failed to create {}", args.work_dir.display()))?;
            Some(Baseline {
                pg_bin: pg_bin.clone(),
                url: url.clone(),
                scripts: args.baseline_scripts.clone(),
                log_dir: args.work_dir.clone(),
            })
        }
        _ => None,
    };

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(max_clients)
        .build()?;
    let callers = service::setup(
        &http,
        &args.base_url,
        &args.bootstrap_secret,
        max_clients,
        900_000_000,
    )
    .await?;
    let driver = Arc::new(Driver::new(
        http,
        args.base_url.clone(),
        callers,
        args.msisdn.clone(),
        keys,
        args.service_pid,
    ));

    if args.warmup > 0 {
        let warmup = phase(&args, MixArg::PayoutsMany, max_clients.min(16), None);
        let result = mixes::run_phase(
            &driver,
            &Phase {
                requests: args.warmup,
                ..warmup
            },
        )
        .await?;
        eprintln!(
            "warmup: {} requests in {:.2} s, errors {}",
            result.summary.count,
            result.elapsed.as_secs_f64(),
            result.tally.errors_text()
        );
    }

    let started = Instant::now();
    let mut rows = Vec::new();
    let mut baselines: BTreeMap<(usize, bool), BaselineRun> = BTreeMap::new();
    for &clients in &args.clients {
        for &mix in &args.mixes {
            let spread = match mix {
                MixArg::PayoutsOne => WalletSpread::One,
                _ => WalletSpread::Distinct,
            };
            let key = (clients, spread == WalletSpread::Distinct);
            if let Some(baseline) = &baseline
                && !baselines.contains_key(&key)
            {
                let run = baseline.run(clients, spread, args.max_seconds)?;
                let row = Row::baseline(clients, spread, &run);
                println!("{}", row.line());
                rows.push(row);
                baselines.insert(key, run);
            }
            let result = mixes::run_phase(&driver, &phase(&args, mix, clients, None)).await?;
            if args.wait_final && matches!(mix, MixArg::PayoutsMany | MixArg::PayoutsOne) {
                wait_final(&driver, &result).await?;
            }
            let row = Row::ours(
                clients,
                label(mix),
                &result,
                baselines.get(&key).map(|run| &run.summary),
            );
            println!("{}", row.line());
            rows.push(row);
        }
    }

    if args.half_load {
        let paced = half_load(&args, &driver, max_clients, &baselines, &rows).await?;
        rows.extend(paced);
    }

    println!();
    println!(
        "all runs took {:.0} s; ratios are ours / baseline at the same client count",
        started.elapsed().as_secs_f64()
    );
    let table = report::markdown(&rows);
    println!("{table}");
    if let Some(pid) = args.service_pid {
        match service::peak_rss_kib(pid) {
            Some(kib) => println!(
                "service peak RSS over the whole run: {:.1} MiB",
                kib as f64 / 1024.0
            ),
            None => println!("service peak RSS: unavailable for pid {pid}"),
        }
    }
    if let Some(path) = &args.report {
        std::fs::write(path, &table)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

fn phase(args: &Args, mix: MixArg, clients: usize, rate: Option<f64>) -> Phase {
    let (mix, wallets) = match mix {
        MixArg::PayoutsMany => (Mix::Payouts, Wallets::Distinct),
        MixArg::PayoutsOne => (Mix::Payouts, Wallets::One),
        MixArg::Duplicates => (Mix::Duplicates, Wallets::Distinct),
        MixArg::Webhooks => (Mix::Webhooks, Wallets::Distinct),
        MixArg::Reads => (Mix::Reads, Wallets::Distinct),
    };
    Phase {
        mix,
        wallets,
        clients,
        requests: args.requests,
        max_duration: Duration::from_secs(args.max_seconds),
        rate,
        duplicate_percent: args.duplicate_percent,
    }
}

fn label(mix: MixArg) -> RunLabel {
    match mix {
        MixArg::PayoutsMany => RunLabel::PayoutsMany,
        MixArg::PayoutsOne => RunLabel::PayoutsOne,
        MixArg::Duplicates => RunLabel::Duplicates,
        MixArg::Webhooks => RunLabel::Webhooks,
        MixArg::Reads => RunLabel::Reads,
    }
}

/// Target throughput of payouts at the largest client count, as a share of
/// the baseline: 1.0 x with distinct wallets and 0.5 x with one wallet.
fn target_share(distinct: bool) -> f64 {
    if distinct { 1.0 } else { 0.5 }
}

/// Rates of the half-load runs: half the target rate (from the baseline)
/// and half the throughput the service reached, each when known.
fn half_load_rates(
    baseline_per_second: Option<f64>,
    measured_per_second: Option<f64>,
    distinct: bool,
) -> Vec<(HalfOf, f64)> {
    let mut rates = Vec::new();
    if let Some(baseline) = baseline_per_second.filter(|tps| *tps > 0.0) {
        rates.push((HalfOf::Target, baseline * target_share(distinct) * 0.5));
    }
    if let Some(measured) = measured_per_second.filter(|rate| *rate > 0.0) {
        rates.push((HalfOf::Measured, measured * 0.5));
    }
    rates
}

/// Sends payouts at fixed rates at `clients`, with distinct wallets and
/// with one wallet, to measure latency below saturation. See
/// [`half_load_rates`] for the rates.
async fn half_load(
    args: &Args,
    driver: &Arc<Driver>,
    clients: usize,
    baselines: &BTreeMap<(usize, bool), BaselineRun>,
    measured: &[Row],
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (mix, distinct) in [(MixArg::PayoutsMany, true), (MixArg::PayoutsOne, false)] {
        let baseline = baselines.get(&(clients, distinct)).map(|run| &run.summary);
        let ours = measured
            .iter()
            .find(|row| row.clients == clients && row.label == label(mix))
            .map(|row| row.summary.per_second);
        let rates = half_load_rates(baseline.map(|b| b.per_second), ours, distinct);
        if rates.is_empty() {
            eprintln!("half load: no baseline and no {mix:?} run at {clients} clients, skipped");
        }
        for (half_of, rate) in rates {
            let result = mixes::run_phase(driver, &phase(args, mix, clients, Some(rate))).await?;
            let row = Row::ours(
                clients,
                RunLabel::HalfLoad {
                    distinct,
                    half_of,
                    rate_per_second: rate,
                },
                &result,
                baseline,
            );
            println!("{}", row.line());
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Longest wait for the payouts of a run to reach a final status.
const FINAL_WAIT: Duration = Duration::from_secs(300);

/// Polls every payout of the run until it is final, then prints payouts per
/// second from the run's first request to the last final status.
async fn wait_final(driver: &Driver, result: &PhaseResult) -> anyhow::Result<()> {
    let deadline = Instant::now() + FINAL_WAIT;
    let mut pending = result.created.clone();
    let mut finals: BTreeMap<String, usize> = BTreeMap::new();
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            bail!(
                "{} payouts not final after {} s",
                pending.len(),
                FINAL_WAIT.as_secs()
            );
        }
        let mut still_pending = Vec::new();
        for payout in pending {
            let response = driver
                .http
                .get(format!("{}/v1/payouts/{}", driver.base_url, payout.id))
                .bearer_auth(&payout.caller.token)
                .send()
                .await?;
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match body["status"].as_str() {
                Some(status @ ("succeeded" | "failed" | "reversed")) => {
                    *finals.entry(status.to_owned()).or_default() += 1;
                }
                _ => still_pending.push(payout),
            }
        }
        pending = still_pending;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let elapsed = result.started.elapsed();
    let finals: Vec<String> = finals
        .iter()
        .map(|(status, n)| format!("{status}={n}"))
        .collect();
    println!(
        "end to end: {} payouts final in {:.2} s, {:.0} payouts/s ({})",
        result.created.len(),
        elapsed.as_secs_f64(),
        result.created.len() as f64 / elapsed.as_secs_f64(),
        finals.join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_load_of_target_and_measured() {
        assert_eq!(
            half_load_rates(Some(2000.0), Some(600.0), true),
            vec![(HalfOf::Target, 1000.0), (HalfOf::Measured, 300.0)]
        );
        // The one-wallet target is 0.5 x its baseline, so half of it is 0.25 x.
        assert_eq!(
            half_load_rates(Some(800.0), Some(100.0), false),
            vec![(HalfOf::Target, 200.0), (HalfOf::Measured, 50.0)]
        );
    }

    #[test]
    fn half_load_without_figures() {
        assert_eq!(
            half_load_rates(None, Some(600.0), true),
            vec![(HalfOf::Measured, 300.0)]
        );
        assert!(half_load_rates(Some(0.0), None, true).is_empty());
        assert!(half_load_rates(None, Some(0.0), false).is_empty());
    }
}
