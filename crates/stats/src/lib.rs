//! The statistics of every benchmark harness in the workspace (`banyan-bench`, the bus's
//! `cargo bench`, the checkout bench), so that a p99 means the same in each of them.
//!
//! - [`Latencies`]: durations recorded into an HDR histogram (3 significant digits, from 1 ns
//!   to an hour), read as percentiles. Recording is O(1) and the memory fixed, so a long run
//!   or a load generator at many thousand requests a second costs no sort and no vector.
//! - [`median`]: the figure of a case over interleaved rounds: rounds absorb the machine's
//!   drift, the median its outliers.
//! - [`micros`], [`millis`], [`per_second`], [`ratio`]: the units the tables print.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies of one case in one round.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Nanoseconds.
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// The longest latency recorded as itself; longer ones are recorded as this (an hour is
    /// not a latency, it is an outage).
    const HIGHEST: Duration = Duration::from_secs(3600);

    pub fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, Self::HIGHEST.as_nanos() as u64, 3)
                .expect("constant bounds are valid"),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(nanos.max(1));
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `q`-quantile (0 < q ≤ 1): the latency `q` of the calls took at most, to 3
    /// significant digits; zero when nothing was recorded.
    pub fn percentile(&self, q: f64) -> Duration {
        if self.histogram.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.histogram.value_at_quantile(q.clamp(0.0, 1.0)))
    }

    /// Adds every latency of `other` (the total of several kinds, say).
    pub fn add(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("every Latencies has the same bounds");
    }

    /// The longest latency recorded.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.histogram.max())
    }
}

impl FromIterator<Duration> for Latencies {
    fn from_iter<I: IntoIterator<Item = Duration>>(iter: I) -> Self {
        let mut latencies = Self::new();
        for latency in iter {
            latencies.record(latency);
        }
        latencies
    }
}

/// The median of `values` (the upper one of an even count); zero when empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// `count` operations over `elapsed`, per second.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// `a / b`, or `None` when either is not a positive figure (a case that did not run).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a > 0.0).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Duration, b: Duration) -> bool {
        // Three significant digits: within 0.1 %.
        a.abs_diff(b).as_secs_f64() <= b.as_secs_f64() / 1000.0
    }

    #[test]
    fn percentiles_come_out_to_three_significant_digits() {
        let latencies: Latencies = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(latencies.count(), 100);
        assert!(close(latencies.percentile(0.50), Duration::from_micros(50)));
        assert!(close(latencies.percentile(0.99), Duration::from_micros(99)));
        assert!(close(latencies.percentile(1.0), Duration::from_micros(100)));
        assert!(close(latencies.max(), Duration::from_micros(100)));
        assert_eq!(Latencies::new().percentile(0.5), Duration::ZERO);
    }

    #[test]
    fn a_latency_beyond_the_range_is_kept_at_its_top_not_lost() {
        let mut latencies = Latencies::new();
        latencies.record(Duration::from_secs(7200));
        latencies.record(Duration::ZERO);
        assert_eq!(latencies.count(), 2);
        assert!(latencies.max() >= Duration::from_secs(3599));
    }

    #[test]
    fn medians_take_the_middle_of_rounds_and_ratios_need_two_figures() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 3.0);
        assert_eq!(median([]), 0.0);
        assert_eq!(ratio(10.0, 4.0), Some(2.5));
        assert_eq!(ratio(10.0, 0.0), None);
        assert_eq!(ratio(0.0, 4.0), None);
        assert_eq!(per_second(10, Duration::from_millis(500)), 20.0);
    }
}
