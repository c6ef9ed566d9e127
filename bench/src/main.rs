//! `nepxy-bench`: sends payout commands to a running service over loopback
//! HTTP and reports throughput and latency.
//!
//! The service must run against an empty database with BOOTSTRAP_ADMIN_SECRET
//! set, because the driver creates its own admin, clients and deposits.
//! Every run is bounded by `--requests` and `--max-seconds`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Wallets {
    /// Every request pays out from one client's single XOF wallet.
    One,
    /// Each concurrent worker has its own client and wallet.
    Many,
}

#[derive(Parser)]
#[command(
    name = "nepxy-bench",
    about = "Payout load driver for the Nepxy ledger"
)]
struct Args {
    /// Base URL of the service; loopback only.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    base_url: String,
    #[arg(long, env = "BOOTSTRAP_ADMIN_SECRET", hide_env_values = true)]
    bootstrap_secret: String,
    /// Concurrent clients sending requests.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Total payout requests of the measured run.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Requests sent before measuring, to warm up connections and caches.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Hard stop of the measured run, in seconds.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    #[arg(long, value_enum, default_value_t = Wallets::Many)]
    wallets: Wallets,
    /// Process id of the service, to report its peak resident memory.
    #[arg(long)]
    service_pid: Option<u32>,
    /// After sending, wait until every payout of the measured run reaches a
    /// final status (the service must run with a provider sandbox), and
    /// report payouts per second from first request to last final status.
    #[arg(long)]
    wait_final: bool,
    /// Recipient number of every payout; its last two digits choose the
    /// sandbox's outcome (00 succeeds).
    #[arg(long, default_value = "+22890000000")]
    msisdn: String,
}

struct Caller {
    token: String,
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
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.clients)
        .build()?;

    let callers = setup(&http, &args).await?;
    let callers = Arc::new(callers);

    run(&http, &args, &callers, args.warmup, "warmup").await?;
    let report = run(&http, &args, &callers, args.requests, "measured").await?;
    report.print(&args);
    if args.wait_final {
        wait_final(&http, &args, &callers, &report).await?;
    }
    if let Some(pid) = args.service_pid {
        match peak_rss_kib(pid) {
            Some(kib) => println!("service peak RSS: {:.1} MiB", kib as f64 / 1024.0),
            None => println!("service peak RSS: unavailable for pid {pid}"),
        }
    }
    Ok(())
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    key: Option<&str>,
    body: Value,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

async fn token(http: &reqwest::Client, base: &str, created: &Value) -> anyhow::Result<String> {
    let (status, body) = post(
        http,
        format!("{base}/v1/auth/token"),
        None,
        None,
        json!({
            "grant_type": "client_credentials",
            "client_id": created["client_id"],
            "client_secret": created["client_secret"],
        }),
    )
    .await?;
    if status != StatusCode::OK {
        bail!("token request failed with {status}: {body}");
    }
    Ok(body["access_token"]
        .as_str()
        .context("access_token missing")?
        .to_owned())
}

/// Creates the admin, the paying clients and their deposits.
async fn setup(http: &reqwest::Client, args: &Args) -> anyhow::Result<Vec<Caller>> {
    let base = &args.base_url;
    let mut request = http
        .post(format!("{base}/v1/admin/bootstrap"))
        .header("x-bootstrap-secret", &args.bootstrap_secret);
    request = request.header("content-type", "application/json");
    let response = request.send().await.context("service not reachable")?;
    let status = response.status();
    let admin: Value = response.json().await.unwrap_or(Value::Null);
    if status != StatusCode::CREATED {
        bail!("bootstrap failed with {status}: {admin}; the driver needs an empty database");
    }
    let admin_token = token(http, base, &admin).await?;

    let wallet_count = match args.wallets {
        Wallets::One => 1,
        Wallets::Many => args.clients,
    };
    let mut callers = Vec::with_capacity(wallet_count);
    for index in 0..wallet_count {
        let (status, created) = post(
            http,
            format!("{base}/v1/admin/clients"),
            Some(&admin_token),
            None,
            json!({ "name": format!("bench client {index}"), "role": "client" }),
        )
        .await?;
        if status != StatusCode::CREATED {
            bail!("client creation failed with {status}: {created}");
        }
        let client_id = created["client_id"]
            .as_str()
            .context("client_id missing")?
            .to_owned();
        let (status, body) = post(
            http,
            format!("{base}/v1/accounts/{client_id}/deposits"),
            Some(&admin_token),
            Some(&Uuid::new_v4().to_string()),
            json!({ "amount": 900_000_000, "currency": "XOF" }),
        )
        .await?;
        if status != StatusCode::CREATED {
            bail!("deposit failed with {status}: {body}");
        }
        callers.push(Caller {
            token: token(http, base, &created).await?,
        });
    }
    Ok(callers)
}

struct Report {
    started: Instant,
    /// Ids of the created payouts, with the index of the caller that owns them.
    payouts: Vec<(usize, String)>,
    elapsed: Duration,
    latencies_us: Vec<u64>,
    statuses: BTreeMap<String, usize>,
}

impl Report {
    fn print(&self, args: &Args) {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let percentile = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
            sorted[index] as f64 / 1000.0
        };
        let completed = sorted.len();
        println!(
            "payouts: {completed} requests, {} clients, wallets={:?}, {:.2} s",
            args.clients,
            args.wallets,
            self.elapsed.as_secs_f64()
        );
        println!(
            "throughput: {:.0} requests/s",
            completed as f64 / self.elapsed.as_secs_f64()
        );
        println!(
            "latency ms: p50 {:.2}, p99 {:.2}, max {:.2}",
            percentile(0.50),
            percentile(0.99),
            percentile(1.0)
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}={n}"))
            .collect();
        println!("statuses: {}", statuses.join(" "));
    }
}

/// Sends `total` payouts with unique keys from `args.clients` workers.
async fn run(
    http: &reqwest::Client,
    args: &Args,
    callers: &Arc<Vec<Caller>>,
    total: usize,
    label: &str,
) -> anyhow::Result<Report> {
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.clients);
    for worker in 0..args.clients {
        let http = http.clone();
        let callers = Arc::clone(callers);
        let next = Arc::clone(&next);
        let url = format!("{}/v1/payouts", args.base_url);
        let run_id = Uuid::new_v4();
        let msisdn = args.msisdn.clone();
        workers.push(tokio::spawn(async move {
            let caller_index = worker % callers.len();
            let caller = &callers[caller_index];
            let mut latencies = Vec::new();
            let mut created = Vec::new();
            let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let key = format!("{run_id}-{}", latencies.len());
                let body = json!({
                    "amount": 1_000,
                    "currency": "XOF",
                    "provider": "tmoney",
                    "recipient": { "msisdn": msisdn },
                });
                let sent = Instant::now();
                let outcome = post(&http, url.clone(), Some(&caller.token), Some(&key), body).await;
                latencies.push(sent.elapsed().as_micros() as u64);
                let status = match outcome {
                    Ok((status, body)) => {
                        if let Some(id) = body["id"].as_str() {
                            created.push((caller_index, id.to_owned()));
                        }
                        status.as_u16().to_string()
                    }
                    Err(_) => "transport-error".to_owned(),
                };
                *statuses.entry(status).or_default() += 1;
            }
            (latencies, statuses, created)
        }));
    }
    let mut latencies_us = Vec::with_capacity(total);
    let mut statuses = BTreeMap::new();
    let mut payouts = Vec::with_capacity(total);
    for worker in workers {
        let (latencies, worker_statuses, created) = worker.await.context("worker panicked")?;
        latencies_us.extend(latencies);
        payouts.extend(created);
        for (status, count) in worker_statuses {
            *statuses.entry(status).or_default() += count;
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{label} run finished: {} requests in {:.2} s",
        latencies_us.len(),
        elapsed.as_secs_f64()
    );
    Ok(Report {
        started,
        payouts,
        elapsed,
        latencies_us,
        statuses,
    })
}

/// Peak resident set size (VmHWM) of a process, from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Longest wait for the payouts of a run to reach a final status.
const FINAL_WAIT: Duration = Duration::from_secs(300);

/// Polls every created payout until it is succeeded or failed, then prints
/// the end-to-end rate: payouts per second from the first request to the
/// last final status.
async fn wait_final(
    http: &reqwest::Client,
    args: &Args,
    callers: &Arc<Vec<Caller>>,
    report: &Report,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + FINAL_WAIT;
    let mut pending: Vec<(usize, String)> = report.payouts.clone();
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
        for (caller_index, id) in pending {
            let response = http
                .get(format!("{}/v1/payouts/{id}", args.base_url))
                .bearer_auth(&callers[caller_index].token)
                .send()
                .await?;
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match body["status"].as_str() {
                Some(status @ ("succeeded" | "failed" | "reversed")) => {
                    *finals.entry(status.to_owned()).or_default() += 1;
                }
                _ => still_pending.push((caller_index, id)),
            }
        }
        pending = still_pending;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let elapsed = report.started.elapsed();
    let finals: Vec<String> = finals
        .iter()
        .map(|(status, n)| format!("{status}={n}"))
        .collect();
    println!(
        "end to end: {} payouts final in {:.2} s, {:.0} payouts/s ({})",
        report.payouts.len(),
        elapsed.as_secs_f64(),
        report.payouts.len() as f64 / elapsed.as_secs_f64(),
        finals.join(" ")
    );
    Ok(())
}
