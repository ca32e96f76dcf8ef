//! Per-object latency as a histogram: a fixed set of counters, whatever the number of
//! objects, recorded without a lock, read as percentiles for the report.
//!
//! Buckets are log-linear: every power of two of microseconds is split into
//! [`SUB_BUCKETS`] equal parts, so a percentile is exact to within 1/16 (6%) of its
//! value, from a microsecond to days.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Parts of each power of two.
const SUB_BUCKETS: u64 = 16;
/// Powers of two of microseconds covered: up to 2^40 µs, about 12 days.
const OCTAVES: u64 = 40;
const BUCKETS: usize = ((OCTAVES + 1) * SUB_BUCKETS) as usize;

/// How long objects took, from the start of their processing to their outcome.
pub struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .finish()
    }
}

/// The bucket of `micros`: values below [`SUB_BUCKETS`] have one each; above, each
/// power of two is split into [`SUB_BUCKETS`] parts.
fn bucket(micros: u64) -> usize {
    if micros < SUB_BUCKETS {
        return micros as usize;
    }
    let octave = 63 - u64::from(micros.leading_zeros()); // floor(log2), at least 4
    let shift = octave - SUB_BUCKETS.trailing_zeros() as u64;
    let sub = (micros >> shift) - SUB_BUCKETS; // 0 ..= 15
    let index = (octave - SUB_BUCKETS.trailing_zeros() as u64 + 1) * SUB_BUCKETS + sub;
    (index as usize).min(BUCKETS - 1)
}

/// The smallest value of bucket `index`, in microseconds (the inverse of [`bucket`]).
fn bucket_floor(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let octave = index / SUB_BUCKETS - 1 + SUB_BUCKETS.trailing_zeros() as u64;
    let sub = index % SUB_BUCKETS;
    (SUB_BUCKETS + sub) << (octave - SUB_BUCKETS.trailing_zeros() as u64)
}

impl LatencyHistogram {
    /// Counts one object that took `took`.
    pub fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(micros)].fetch_add(1, Relaxed);
    }

    /// Objects counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The latency below which a fraction `q` (0 to 1) of the objects finished, as the
    /// floor of its bucket; `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the object at `q`, 1-based: the median of 3 is the 2nd.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_micros(bucket_floor(index)));
            }
        }
        Some(Duration::from_micros(bucket_floor(BUCKETS - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_within_a_sixteenth_of_their_values() {
        let mut last = 0;
        for micros in (0..100_000u64).chain([1 << 20, 123_456_789, 1 << 39]) {
            let b = bucket(micros);
            assert!(b >= last, "{micros}");
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= micros, "{micros}: floor {floor}");
            assert!(
                micros - floor <= micros / SUB_BUCKETS,
                "{micros}: floor {floor} too far"
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_from_the_counts() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        let near = |d: Option<Duration>, ms: u64| {
            let d = d.unwrap().as_micros() as u64;
            d <= ms * 1000 && ms * 1000 - d <= ms * 1000 / SUB_BUCKETS
        };
        assert!(near(h.quantile(0.5), 50), "{:?}", h.quantile(0.5));
        assert!(near(h.quantile(0.99), 99), "{:?}", h.quantile(0.99));
        assert!(near(h.quantile(1.0), 100), "{:?}", h.quantile(1.0));
        assert!(near(h.quantile(0.0), 1), "{:?}", h.quantile(0.0));
    }
}
