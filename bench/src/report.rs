//! One line per run while the driver works, and a Markdown table at the end.

use crate::mixes::PhaseResult;
use crate::pgbench::{BaselineRun, WalletSpread};
use crate::stats::{Summary, Tally, format_ratio, ratio};

/// Kind of run that a row measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunLabel {
    Baseline(WalletSpread),
    PayoutsMany,
    PayoutsOne,
    Duplicates,
    Webhooks,
    Reads,
    /// Payouts sent at a fixed rate.
    HalfLoad {
        distinct: bool,
        half_of: HalfOf,
        rate_per_second: f64,
    },
}

/// Rate that a half-load run sends half of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfOf {
    /// The target throughput, a share of the baseline.
    Target,
    /// The throughput that the unpaced payouts run reached.
    Measured,
}

impl RunLabel {
    fn text(&self) -> String {
        match self {
            Self::Baseline(WalletSpread::Distinct) => "pgbench, distinct wallets".to_owned(),
            Self::Baseline(WalletSpread::One) => "pgbench, one wallet".to_owned(),
            Self::PayoutsMany => "payouts, distinct wallets".to_owned(),
            Self::PayoutsOne => "payouts, one wallet".to_owned(),
            Self::Duplicates => "payouts with repeated keys".to_owned(),
            Self::Webhooks => "webhooks".to_owned(),
            Self::Reads => "reads".to_owned(),
            Self::HalfLoad {
                distinct,
                half_of,
                rate_per_second,
            } => format!(
                "payouts at {rate_per_second:.0}/s (half the {}), {}",
                match half_of {
                    HalfOf::Target => "target",
                    HalfOf::Measured => "measured rate",
                },
                if *distinct {
                    "distinct wallets"
                } else {
                    "one wallet"
                }
            ),
        }
    }
}

/// One measured run with its ratios to the baseline.
#[derive(Debug, Clone)]
pub struct Row {
    pub clients: usize,
    pub label: RunLabel,
    pub summary: Summary,
    /// Outcome counts of our runs, `None` in baseline rows.
    pub tally: Option<Tally>,
    /// Failed pgbench transactions of a baseline row.
    pub baseline_failed: Option<u64>,
    pub throughput_ratio: Option<f64>,
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    pub service_rss_mib: Option<f64>,
    pub service_cpu_ms_per_request: Option<f64>,
    pub driver_cpu_ms_per_request: Option<f64>,
}

impl Row {
    pub fn baseline(clients: usize, spread: WalletSpread, run: &BaselineRun) -> Self {
        Self {
            clients,
            label: RunLabel::Baseline(spread),
            summary: run.summary.clone(),
            tally: None,
            baseline_failed: Some(run.totals.failed),
            throughput_ratio: None,
            p50_ratio: None,
            p99_ratio: None,
            service_rss_mib: None,
            service_cpu_ms_per_request: None,
            driver_cpu_ms_per_request: None,
        }
    }

    pub fn ours(
        clients: usize,
        label: RunLabel,
        result: &PhaseResult,
        baseline: Option<&Summary>,
    ) -> Self {
        let summary = result.summary.clone();
        let per_request = |seconds: Option<f64>| {
            seconds
                .filter(|_| summary.count > 0)
                .map(|seconds| seconds * 1000.0 / summary.count as f64)
        };
        Self {
            clients,
            label,
            throughput_ratio: ratio(summary.per_second, baseline.map(|b| b.per_second)),
            p50_ratio: ratio(summary.p50_ms, baseline.map(|b| b.p50_ms)),
            p99_ratio: ratio(summary.p99_ms, baseline.map(|b| b.p99_ms)),
            tally: Some(result.tally.clone()),
            baseline_failed: None,
            service_rss_mib: result.service_rss_kib.map(|kib| kib as f64 / 1024.0),
            service_cpu_ms_per_request: per_request(result.service_cpu_seconds),
            driver_cpu_ms_per_request: per_request(result.driver_cpu_seconds),
            summary,
        }
    }

    /// Formats the row as one line for the console.
    pub fn line(&self) -> String {
        format!(
            "{} clients, {}: {} requests, {:.0}/s ({}), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {}",
            self.clients,
            self.label.text(),
            self.summary.count,
            self.summary.per_second,
            format_ratio(self.throughput_ratio),
            self.summary.p50_ms,
            self.summary.p99_ms,
            self.summary.max_ms,
            self.outcomes(),
        )
    }

    fn outcomes(&self) -> String {
        match (&self.tally, self.baseline_failed) {
            (Some(tally), _) => {
                format!("replays {}, errors {}", tally.replayed, tally.errors_text())
            }
            (None, Some(failed)) => format!("failed transactions {failed}"),
            (None, None) => String::new(),
        }
    }

    fn cells(&self) -> Vec<String> {
        let optional = |value: Option<f64>, digits: usize| match value {
            Some(value) => format!("{value:.digits$}"),
            None => "-".to_owned(),
        };
        let (replays, errors) = match (&self.tally, self.baseline_failed) {
            (Some(tally), _) => (tally.replayed.to_string(), tally.errors_text()),
            (None, Some(failed)) => ("-".to_owned(), failed.to_string()),
            (None, None) => ("-".to_owned(), "-".to_owned()),
        };
        let is_baseline = matches!(self.label, RunLabel::Baseline(_));
        let ratio_cell = |value: Option<f64>| {
            if is_baseline {
                "1".to_owned()
            } else {
                format_ratio(value)
            }
        };
        vec![
            self.clients.to_string(),
            self.label.text(),
            self.summary.count.to_string(),
            format!("{:.0}", self.summary.per_second),
            ratio_cell(self.throughput_ratio),
            format!("{:.2}", self.summary.p50_ms),
            ratio_cell(self.p50_ratio),
            format!("{:.2}", self.summary.p99_ms),
            ratio_cell(self.p99_ratio),
            format!("{:.2}", self.summary.max_ms),
            replays,
            errors,
            optional(self.service_rss_mib, 1),
            optional(self.service_cpu_ms_per_request, 2),
            optional(self.driver_cpu_ms_per_request, 2),
        ]
    }
}

const HEADER: [&str; 15] = [
    "clients",
    "run",
    "requests",
    "per s",
    "ratio",
    "p50 ms",
    "p50 ratio",
    "p99 ms",
    "p99 ratio",
    "max ms",
    "replays",
    "errors",
    "service RSS MiB",
    "service CPU ms/req",
    "driver CPU ms/req",
];

/// Formats the rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut table = format!("| {} |\n", HEADER.join(" | "));
    table.push_str(&format!("|{}\n", " --- |".repeat(HEADER.len())));
    for row in rows {
        table.push_str(&format!("| {} |\n", row.cells().join(" | ")));
    }
    table
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::pgbench::PgbenchTotals;
    use crate::stats::Class;

    fn baseline_run(tps: f64) -> BaselineRun {
        BaselineRun {
            totals: PgbenchTotals {
                transactions: 1000,
                failed: 0,
                tps,
                latency_average_ms: None,
            },
            summary: Summary {
                count: 1000,
                per_second: tps,
                p50_ms: 4.0,
                p99_ms: 10.0,
                max_ms: 20.0,
            },
        }
    }

    fn result(per_second: f64, p99_ms: f64) -> PhaseResult {
        let mut tally = Tally::default();
        tally.record(Class::Ok);
        tally.record(Class::Replayed);
        tally.record(Class::Error("409".to_owned()));
        PhaseResult {
            summary: Summary {
                count: 500,
                per_second,
                p50_ms: 6.0,
                p99_ms,
                max_ms: 30.0,
            },
            tally,
            started: Instant::now(),
            elapsed: Duration::from_secs(1),
            created: Vec::new(),
            service_rss_kib: Some(20 * 1024),
            service_cpu_seconds: Some(0.5),
            driver_cpu_seconds: None,
        }
    }

    #[test]
    fn ours_has_ratios_to_baseline() {
        let baseline = baseline_run(1000.0);
        let row = Row::ours(
            64,
            RunLabel::PayoutsMany,
            &result(500.0, 25.0),
            Some(&baseline.summary),
        );
        assert_eq!(row.throughput_ratio, Some(0.5));
        assert_eq!(row.p50_ratio, Some(1.5));
        assert_eq!(row.p99_ratio, Some(2.5));
        assert_eq!(row.service_rss_mib, Some(20.0));
        assert_eq!(row.service_cpu_ms_per_request, Some(1.0));
        assert_eq!(row.driver_cpu_ms_per_request, None);
    }

    #[test]
    fn ours_without_baseline_has_no_ratio() {
        let row = Row::ours(4, RunLabel::Reads, &result(500.0, 25.0), None);
        assert_eq!(row.throughput_ratio, None);
        assert!(row.line().contains("(n/a)"), "{}", row.line());
    }

    #[test]
    fn table_lists_every_row() {
        let baseline = baseline_run(1000.0);
        let rows = vec![
            Row::baseline(16, WalletSpread::Distinct, &baseline),
            Row::ours(
                16,
                RunLabel::Duplicates,
                &result(800.0, 12.0),
                Some(&baseline.summary),
            ),
        ];
        let table = markdown(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[2].starts_with("| 16 | pgbench, distinct wallets | 1000 | 1000 | 1 |"));
        assert!(
            lines[3].contains("| 800 | 0.80x |"),
            "throughput and ratio: {}",
            lines[3]
        );
        assert!(
            lines[3].contains("| 1 | 409=1 |"),
            "replays and errors: {}",
            lines[3]
        );
        assert_eq!(
            lines[3].matches('|').count(),
            HEADER.len() + 1,
            "column count"
        );
    }
}
