//! The pgbench baseline: one transaction that stores an idempotency record,
//! appends one event and upserts one balance row (bench/pgbench/payout.sql),
//! run against the same PostgreSQL as the service.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::stats::{Summary, percentile_ms};

/// Locations of pgbench and psql, and the database the baseline writes to.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Directory with `pgbench` and `psql`.
    pub pg_bin: PathBuf,
    /// Database of the baseline tables. Never the service's database,
    /// because setup.sql drops and recreates its schema.
    pub url: String,
    /// Directory with setup.sql and payout.sql.
    pub scripts: PathBuf,
    /// Directory for pgbench's per-transaction logs.
    pub log_dir: PathBuf,
}

/// The two variants of payout.sql.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletSpread {
    /// Each pgbench client upserts its own balance row.
    Distinct,
    /// Every transaction upserts the same balance row.
    One,
}

impl WalletSpread {
    fn distinct_flag(self) -> u8 {
        match self {
            Self::Distinct => 1,
            Self::One => 0,
        }
    }
}

/// The figures pgbench prints at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PgbenchTotals {
    pub transactions: u64,
    pub failed: u64,
    /// Transactions per second without the initial connection time.
    pub tps: f64,
    pub latency_average_ms: Option<f64>,
}

/// A finished baseline run.
#[derive(Debug, Clone)]
pub struct BaselineRun {
    pub totals: PgbenchTotals,
    /// Latencies from the per-transaction log, with pgbench's tps as
    /// `per_second`.
    pub summary: Summary,
}

impl Baseline {
    /// Recreates the baseline tables, then runs payout.sql for `seconds`
    /// with `clients` connections, each running one transaction at a time.
    pub fn run(
        &self,
        clients: usize,
        spread: WalletSpread,
        seconds: u64,
    ) -> anyhow::Result<BaselineRun> {
        self.reset_tables()?;

        let prefix = self
            .log_dir
            .join(format!("pgbench-{clients}-{}", spread.distinct_flag()));
        remove_logs(&prefix)?;
        let threads = clients.min(2);
        let output = Command::new(self.pg_bin.join("pgbench"))
            .args(["--no-vacuum", "--protocol=prepared", "--log"])
            .arg(format!("--log-prefix={}", prefix.display()))
            .arg(format!("--client={clients}"))
            .arg(format!("--jobs={threads}"))
            .arg(format!("--time={seconds}"))
            .arg(format!("--define=distinct={}", spread.distinct_flag()))
            .arg(format!(
                "--file={}",
                self.scripts.join("payout.sql").display()
            ))
            .arg(&self.url)
            .output()
            .context("failed to start pgbench; check --pg-bin")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench exited with {}: {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let totals = parse_totals(&stdout)?;
        let mut latencies_us = read_logs(&prefix)?;
        latencies_us.sort_unstable();
        remove_logs(&prefix)?;
        let summary = Summary {
            count: latencies_us.len(),
            per_second: totals.tps,
            p50_ms: percentile_ms(&latencies_us, 0.50),
            p99_ms: percentile_ms(&latencies_us, 0.99),
            max_ms: percentile_ms(&latencies_us, 1.0),
        };
        Ok(BaselineRun { totals, summary })
    }

    fn reset_tables(&self) -> anyhow::Result<()> {
        let output = Command::new(self.pg_bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(self.scripts.join("setup.sql"))
            .arg(&self.url)
            .env("PGOPTIONS", "-c client_min_messages=warning")
            .output()
            .context("failed to start psql; check --pg-bin")?;
        if !output.status.success() {
            bail!(
                "psql -f setup.sql failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// Reads the totals from pgbench's standard output (PostgreSQL 15 format).
pub fn parse_totals(stdout: &str) -> anyhow::Result<PgbenchTotals> {
    let mut transactions = None;
    let mut failed = 0;
    let mut tps = None;
    let mut latency_average_ms = None;
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            // "12345" or "12345/20000" when -t was given.
            let processed = rest.trim().split('/').next().unwrap_or_default();
            transactions = Some(
                processed
                    .parse::<u64>()
                    .with_context(|| format!("invalid transaction count in {line:?}"))?,
            );
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            let count = rest.split_whitespace().next().unwrap_or_default();
            failed = count
                .parse::<u64>()
                .with_context(|| format!("invalid failed count in {line:?}"))?;
        } else if let Some(rest) = line.strip_prefix("latency average =") {
            let value = rest.trim().trim_end_matches("ms").trim();
            latency_average_ms = value.parse::<f64>().ok();
        } else if let Some(rest) = line.strip_prefix("tps =") {
            let value = rest.split_whitespace().next().unwrap_or_default();
            tps = Some(
                value
                    .parse::<f64>()
                    .with_context(|| format!("invalid tps in {line:?}"))?,
            );
        }
    }
    let Some(transactions) = transactions else {
        bail!("pgbench output has no transaction count: {stdout}");
    };
    let Some(tps) = tps else {
        bail!("pgbench output has no tps line (the run may have aborted): {stdout}");
    };
    Ok(PgbenchTotals {
        transactions,
        failed,
        tps,
        latency_average_ms,
    })
}

/// Reads the latency in microseconds from one line of pgbench's
/// per-transaction log: `client_id transaction_no time script_no
/// time_epoch time_us [...]`. Returns `None` for transactions that have no
/// latency (`failed` or `skipped` in the time field) and for other lines.
pub fn parse_log_latency(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    let _client = fields.next()?.parse::<u64>().ok()?;
    let _transaction = fields.next()?.parse::<u64>().ok()?;
    fields.next()?.parse::<u64>().ok()
}

/// Reads every log file pgbench wrote for `prefix`: `prefix.PID` for the
/// first thread and `prefix.PID.N` for the others.
fn read_logs(prefix: &Path) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    for path in log_files(prefix)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        latencies.extend(text.lines().filter_map(parse_log_latency));
    }
    Ok(latencies)
}

fn remove_logs(prefix: &Path) -> anyhow::Result<()> {
    for path in log_files(prefix)? {
        std::fs::remove_file(&path)
            .with_context(|| format!("failed to remove {}", path.display()))?;
    }
    Ok(())
}

fn log_files(prefix: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = prefix.parent().context("log prefix has no directory")?;
    let stem = format!(
        "{}.",
        prefix
            .file_name()
            .context("log prefix has no file name")?
            .to_string_lossy()
    );
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))?
    {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&stem) {
            files.push(entry.path());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines pgbench 15.18 prints before its totals for a run of payout.sql.
    const PREAMBLE: &str = "\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: bench/pgbench/payout.sql
scaling factor: 1
query mode: prepared
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 3 s
";

    /// Totals of a completed run.
    const COMPLETED: &str = "\
number of transactions actually processed: 1812
number of failed transactions: 0 (0.000%)
latency average = 6.649 ms
initial connection time = 26.021 ms
tps = 601.586835 (without initial connection time)
";

    /// Totals when every client aborted.
    const ABORTED: &str = "\
number of transactions actually processed: 0
number of failed transactions: 0 (NaN%)
";

    #[test]
    fn totals_of_completed_run() {
        let totals = parse_totals(&format!("{PREAMBLE}{COMPLETED}")).expect("parsed");
        assert_eq!(totals.transactions, 1812);
        assert_eq!(totals.failed, 0);
        assert_eq!(totals.tps, 601.586835);
        assert_eq!(totals.latency_average_ms, Some(6.649));
    }

    #[test]
    fn totals_of_aborted_run_rejected() {
        let error = parse_totals(&format!("{PREAMBLE}{ABORTED}")).expect_err("no tps line");
        assert!(error.to_string().contains("no tps line"), "{error}");
    }

    #[test]
    fn totals_with_count_limit_and_failures() {
        let output = "number of transactions actually processed: 990/1000\n\
                      number of failed transactions: 10 (1.000%)\n\
                      tps = 250.5 (without initial connection time)\n";
        let totals = parse_totals(output).expect("parsed");
        assert_eq!(totals.transactions, 990);
        assert_eq!(totals.failed, 10);
        assert_eq!(totals.tps, 250.5);
        assert_eq!(totals.latency_average_ms, None);
    }

    #[test]
    fn totals_with_garbled_tps_rejected() {
        let output = "number of transactions actually processed: 5\ntps = fast\n";
        assert!(parse_totals(output).is_err());
    }

    #[test]
    fn log_line_latency() {
        assert_eq!(
            parse_log_latency("0 1 17572 0 1796431911 905553"),
            Some(17572)
        );
        assert_eq!(
            parse_log_latency("3 2 7216 0 1796431911 927408 0"),
            Some(7216)
        );
    }

    #[test]
    fn log_line_without_latency() {
        assert_eq!(
            parse_log_latency("0 7 failed 0 1796431911 905553 serialization"),
            None
        );
        assert_eq!(parse_log_latency("1 3 skipped 0 1796431911 1"), None);
        assert_eq!(parse_log_latency(""), None);
        assert_eq!(parse_log_latency("pgbench: error"), None);
    }

    #[test]
    fn payout_script_matches_setup() {
        let setup = include_str!("../pgbench/setup.sql");
        let payout = include_str!("../pgbench/payout.sql");
        assert!(
            payout.contains(":distinct"),
            "payout.sql reads the variable set by --define=distinct"
        );
        for table in ["idempotency_keys", "events", "wallet_balances"] {
            let name = format!("nepxy_baseline.{table}");
            assert!(
                setup.contains(&format!("CREATE TABLE {name}")),
                "setup creates {name}"
            );
            assert!(
                payout.contains(&format!("INSERT INTO {name}")),
                "payout writes {name}"
            );
        }
        let statements = payout
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .filter(|line| line.trim_end().ends_with(';'))
            .count();
        // BEGIN, three inserts and END.
        assert_eq!(statements, 5, "one transaction of three statements");
    }

    #[test]
    fn logs_of_every_thread_are_read() {
        let dir = std::env::temp_dir().join(format!("nepxy-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let prefix = dir.join("pgbench-4-1");
        std::fs::write(
            dir.join("pgbench-4-1.100"),
            "0 1 1000 0 1 1\n0 2 3000 0 1 2\n",
        )
        .expect("first thread");
        std::fs::write(dir.join("pgbench-4-1.100.1"), "1 1 2000 0 1 1\n").expect("second");
        std::fs::write(dir.join("pgbench-16-1.100"), "0 1 9999 0 1 1\n").expect("other run");

        let mut latencies = read_logs(&prefix).expect("read");
        latencies.sort_unstable();
        assert_eq!(latencies, vec![1000, 2000, 3000]);

        remove_logs(&prefix).expect("removed");
        assert!(read_logs(&prefix).expect("read again").is_empty());
        assert!(dir.join("pgbench-16-1.100").exists(), "other run kept");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
