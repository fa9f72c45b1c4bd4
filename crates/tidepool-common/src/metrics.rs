//! Lock-free counters and fixed-bucket histograms rendered as Prometheus text, shared by the
//! master's and the clients' metrics (relaxed atomics: a metric never orders other memory).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A fixed-bucket histogram of integer observations (bytes, or nanoseconds for latencies).
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive) in observation units, ascending.
    bounds: &'static [u64],
    /// Observations per bucket, not cumulative; one extra for +Inf.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum: AtomicU64,
    /// Output scale: `le` and `_sum` are printed as `value / scale` (1e9 turns ns into s).
    scale: f64,
}

impl Histogram {
    /// An empty histogram over `bounds`, printed divided by `scale`.
    pub fn new(bounds: &'static [u64], scale: f64) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Sum of the observations, in observation units.
    pub fn sum(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    /// The `q` quantile (0..=1) in observation units, interpolated linearly inside its bucket
    /// as Prometheus' `histogram_quantile` does; `None` without observations. Observations
    /// beyond the last bound report that bound.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut cum = 0u64;
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 && (cum + c) as f64 >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    return self.bounds.last().copied();
                };
                let lower = if i == 0 { 0 } else { self.bounds[i - 1] };
                let frac = ((rank - cum as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lower + ((upper - lower) as f64 * frac) as u64);
            }
            cum += c;
        }
        self.bounds.last().copied()
    }

    /// Writes `name_bucket`, `name_sum` and `name_count` lines; `labels` is `k="v"` pairs
    /// without braces, or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let le = *b as f64 / self.scale;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cum}");
        }
        cum += self.buckets[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum.load(Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cum}");
    }
}

/// Latency buckets in nanoseconds: 10 µs ... 1 s (print with scale 1e9 for seconds).
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
