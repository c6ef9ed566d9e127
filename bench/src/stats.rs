//! Latency summaries, outcome counts and ratios to the baseline.

use std::collections::BTreeMap;
use std::time::Duration;

/// Throughput and latency of one measured run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Requests or transactions completed, failed ones included.
    pub count: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Summarizes latencies in microseconds taken over `elapsed`.
    pub fn from_latencies(mut latencies_us: Vec<u64>, elapsed: Duration) -> Self {
        latencies_us.sort_unstable();
        let seconds = elapsed.as_secs_f64();
        Self {
            count: latencies_us.len(),
            per_second: if seconds > 0.0 {
                latencies_us.len() as f64 / seconds
            } else {
                0.0
            },
            p50_ms: percentile_ms(&latencies_us, 0.50),
            p99_ms: percentile_ms(&latencies_us, 0.99),
            max_ms: percentile_ms(&latencies_us, 1.0),
        }
    }
}

/// Nearest-rank percentile of sorted microsecond latencies, in milliseconds;
/// 0 when there are none. `fraction` is from 0 to 1.
pub fn percentile_ms(sorted_us: &[u64], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (fraction.clamp(0.0, 1.0) * sorted_us.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(sorted_us.len() - 1);
    sorted_us[index] as f64 / 1000.0
}

/// Our figure divided by the baseline's, or `None` when the baseline is
/// missing or not positive, so that no ratio is printed from nothing.
pub fn ratio(ours: f64, baseline: Option<f64>) -> Option<f64> {
    match baseline {
        Some(baseline) if baseline > 0.0 && baseline.is_finite() && ours.is_finite() => {
            Some(ours / baseline)
        }
        _ => None,
    }
}

/// Formats a ratio as `0.42x`, or `n/a` without one.
pub fn format_ratio(value: Option<f64>) -> String {
    match value {
        Some(value) => format!("{value:.2}x"),
        None => "n/a".to_owned(),
    }
}

/// Outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// The expected response to a new request.
    Ok,
    /// The stored response to a repeated Idempotency-Key, identical to the
    /// first response.
    Replayed,
    /// Anything else, with a label such as `409`, `transport` or
    /// `replay-mismatch`.
    Error(String),
}

/// Outcome counts of one run; replays are counted apart from errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub replayed: usize,
    pub errors: BTreeMap<String, usize>,
}

impl Tally {
    pub fn record(&mut self, class: Class) {
        match class {
            Class::Ok => self.ok += 1,
            Class::Replayed => self.replayed += 1,
            Class::Error(label) => *self.errors.entry(label).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.replayed += other.replayed;
        for (label, count) in other.errors {
            *self.errors.entry(label).or_default() += count;
        }
    }

    /// Errors as `409=3 transport=1`, or `0` when there are none.
    pub fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".to_owned();
        }
        self.errors
            .iter()
            .map(|(label, count)| format!("{label}={count}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&sorted, 0.0), 1.0);
    }

    #[test]
    fn percentile_of_few_samples() {
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
        assert_eq!(percentile_ms(&[2500], 0.5), 2.5);
        // With 10 samples the 99th percentile is the largest one.
        let sorted: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile_ms(&sorted, 0.99), 0.010);
    }

    #[test]
    fn summary_rate_and_order() {
        let summary = Summary::from_latencies(vec![3000, 1000, 2000, 4000], Duration::from_secs(2));
        assert_eq!(summary.count, 4);
        assert_eq!(summary.per_second, 2.0);
        assert_eq!(summary.p50_ms, 2.0);
        assert_eq!(summary.max_ms, 4.0);
    }

    #[test]
    fn summary_of_zero_elapsed() {
        let summary = Summary::from_latencies(vec![1000], Duration::ZERO);
        assert_eq!(summary.per_second, 0.0);
    }

    #[test]
    fn ratio_to_baseline() {
        assert_eq!(ratio(500.0, Some(1000.0)), Some(0.5));
        assert_eq!(ratio(1500.0, Some(1000.0)), Some(1.5));
        assert_eq!(ratio(0.0, Some(1000.0)), Some(0.0));
    }

    #[test]
    fn ratio_without_usable_baseline() {
        assert_eq!(ratio(500.0, None), None);
        assert_eq!(ratio(500.0, Some(0.0)), None);
        assert_eq!(ratio(500.0, Some(-3.0)), None);
        assert_eq!(ratio(500.0, Some(f64::NAN)), None);
        assert_eq!(ratio(f64::INFINITY, Some(10.0)), None);
    }

    #[test]
    fn ratio_formatting() {
        assert_eq!(format_ratio(Some(0.4567)), "0.46x");
        assert_eq!(format_ratio(None), "n/a");
    }

    #[test]
    fn tally_keeps_replays_apart_from_errors() {
        let mut tally = Tally::default();
        tally.record(Class::Ok);
        tally.record(Class::Replayed);
        tally.record(Class::Replayed);
        tally.record(Class::Error("409".to_owned()));
        assert_eq!(tally.ok, 1);
        assert_eq!(tally.replayed, 2);
        assert_eq!(tally.errors.len(), 1);
        assert_eq!(tally.errors_text(), "409=1");
    }

    #[test]
    fn tally_merge_adds_labels() {
        let mut first = Tally::default();
        first.record(Class::Error("409".to_owned()));
        let mut second = Tally::default();
        second.record(Class::Error("409".to_owned()));
        second.record(Class::Error("transport".to_owned()));
        second.record(Class::Ok);
        first.merge(second);
        assert_eq!(first.ok, 1);
        assert_eq!(first.errors_text(), "409=2 transport=1");
    }
}
