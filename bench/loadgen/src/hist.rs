//! A fixed-size latency histogram: linear buckets (50 µs up to 250 ms by default, 1 µs up
//! to 100 ms for the probe's network round trips) plus an overflow bucket and the exact
//! maximum. Recording never allocates (it is on the per-packet path).

use std::time::Duration;

pub struct Histogram {
    bucket_us: u64,
    /// One count per bucket, then the overflow bucket.
    counts: Box<[u64]>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(50, 5000)
    }
}

impl Histogram {
    /// `buckets` linear buckets of `bucket_us` each.
    pub fn new(bucket_us: u64, buckets: usize) -> Histogram {
        Histogram {
            bucket_us: bucket_us.max(1),
            counts: vec![0; buckets + 1].into_boxed_slice(),
            total: 0,
            max_us: 0,
        }
    }

    /// 1 µs buckets up to 100 ms (800 KB): for round trips of tens of µs.
    pub fn fine() -> Histogram {
        Histogram::new(1, 100_000)
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros() as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        let overflow = self.counts.len() - 1;
        let b = ((us / self.bucket_us) as usize).min(overflow);
        self.counts[b] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The upper edge of the bucket holding quantile `q` (0..=1), in µs; the exact
    /// maximum for the overflow bucket; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let want = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let overflow = self.counts.len() - 1;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return if i == overflow {
                    self.max_us
                } else {
                    ((i as u64 + 1) * self.bucket_us).min(self.max_us)
                };
            }
        }
        self.max_us
    }

    /// `p50=… p99=… p999=… max=…` in milliseconds with three decimals.
    pub fn summary_ms(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50={:.3} p99={:.3} p999={:.3} max={:.3}",
            ms(self.quantile_us(0.5)),
            ms(self.quantile_us(0.99)),
            ms(self.quantile_us(0.999)),
            ms(self.max_us)
        )
    }

    /// `p50=… p99=… p999=… max=…` in whole microseconds.
    pub fn summary_us(&self) -> String {
        format!(
            "p50={} p99={} p999={} max={}",
            self.quantile_us(0.5),
            self.quantile_us(0.99),
            self.quantile_us(0.999),
            self.max_us
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_edges() {
        let mut h = Histogram::default();
        for us in [10, 20, 30, 20_000, 20_010, 21_000, 400_000] {
            h.record_us(us);
        }
        assert_eq!(h.count(), 7);
        assert_eq!(h.quantile_us(0.0), 50);
        assert_eq!(h.quantile_us(0.5), 20_050);
        assert_eq!(h.quantile_us(1.0), 400_000);
        assert_eq!(h.max_us(), 400_000);
    }

    #[test]
    fn fine_buckets_resolve_microseconds() {
        let mut h = Histogram::fine();
        for us in [17, 18, 18, 19, 250, 150_000] {
            h.record_us(us);
        }
        assert_eq!(h.quantile_us(0.5), 19);
        assert_eq!(h.quantile_us(0.8), 251);
        // Beyond 100 ms: the overflow bucket answers with the exact maximum.
        assert_eq!(h.quantile_us(1.0), 150_000);
        assert_eq!(h.summary_us(), "p50=19 p99=150000 p999=150000 max=150000");
    }
}
