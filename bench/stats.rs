//! Latency recording and the summaries every benchmark prints: ops/s and
//! percentiles from an HDR histogram, plus the number formatting the tables
//! share.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in nanoseconds, 3 significant digits, from 1 ns to 60 s: the
/// fast end matters because loopback reads take tens of microseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

/// What one client task (or a merge of them) observed.
pub struct Recorder {
    pub hist: Histogram<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            hist: new_histogram(),
            errors: 0,
            first_error: None,
        }
    }
}

impl Recorder {
    pub fn ok(&mut self, latency: Duration) {
        // Saturating: a latency beyond the 60 s bound still counts as an op.
        self.hist
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn error(&mut self, err: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(err.to_string());
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        // Both histograms come from `new_histogram`, so their bounds agree
        // and `add` cannot fail.
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Summary over `elapsed` wall time; throughput counts successful ops.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let h = &self.hist;
        let ops = h.len();
        let secs = elapsed.as_secs_f64();
        Summary {
            ops,
            errors: self.errors,
            elapsed_s: secs,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            mean_us: h.mean() / 1e3,
            p50_us: h.value_at_quantile(0.50) as f64 / 1e3,
            p90_us: h.value_at_quantile(0.90) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
            p999_us: h.value_at_quantile(0.999) as f64 / 1e3,
            max_us: h.max() as f64 / 1e3,
            client_cpu_us_per_op: None,
            server_cpu_us_per_op: None,
            server_disk_bytes_per_op: None,
        }
    }
}

/// One measurement, in the units people read: ops/s and microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub ops: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub ops_per_sec: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// CPU time per successful op spent by the load generator and by the
    /// server, when the benchmark measured them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_op: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_op: Option<f64>,
    /// Bytes the server wrote to storage per successful op.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_disk_bytes_per_op: Option<f64>,
}

/// CPU used during a measured interval, per op, in microseconds.
pub fn cpu_per_op_us(before: Option<Duration>, after: Option<Duration>, ops: u64) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    (ops > 0).then(|| used.as_secs_f64() * 1e6 / ops as f64)
}

/// `0.43 ms`, `87 µs`, `23.1 ms`, `1.20 s`: three significant digits at most.
pub fn fmt_latency_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Integer with thousands separators: `31,204`.
pub fn fmt_rate(rate: f64) -> String {
    let n = rate.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `a / b` as `3.21×`, or `—` when `b` is zero.
pub fn fmt_ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_rate(9_400.4), "9,400");
        assert_eq!(fmt_rate(1_234_567.0), "1,234,567");
        assert_eq!(fmt_rate(12.0), "12");
        assert_eq!(fmt_latency_us(430.0), "430 µs");
        assert_eq!(fmt_latency_us(2_345.0), "2.35 ms");
        assert_eq!(fmt_latency_us(23_100.0), "23.1 ms");
        assert_eq!(fmt_ratio(3.0, 1.0), "3.00×");
    }

    #[test]
    fn summary_percentiles() {
        let mut r = Recorder::default();
        for us in 1..=100u64 {
            r.ok(Duration::from_micros(us));
        }
        let s = r.summary(Duration::from_secs(1));
        assert_eq!(s.ops, 100);
        assert!((s.p50_us - 50.0).abs() < 0.1, "{}", s.p50_us);
        assert!((s.p99_us - 99.0).abs() < 0.1, "{}", s.p99_us);
        assert!((s.ops_per_sec - 100.0).abs() < 1e-9);
    }
}
