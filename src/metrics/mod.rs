//! Metrics, one way for every component: each keeps its series in a
//! [`prometheus::Registry`], and `/metrics` endpoints render one or more
//! registries in Prometheus' text format with [`render`]. The bucket sets
//! live here, side by side, so a new histogram picks one rather than
//! inventing another.

pub mod reconcile;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency of API requests, in seconds: the Kubernetes API server's
/// buckets, so dashboards built for it read wkube's figures.
pub const API_REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Time per reconcile of a control loop, in seconds.
pub const RECONCILE_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Latency of requests through the service proxy, in seconds: Wasm pods
/// answer in well under a millisecond, so the buckets start at 0.5 ms.
pub const PROXY_REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A counter with `labels`, registered in `registry`.
///
/// # Panics
/// When `name` is already registered there or is not a valid metric name:
/// both are mistakes in wkube's own code, found by its first test.
#[must_use]
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("registering metric {name}: {e}"));
    vec
}

/// A histogram with `labels` and `buckets`, registered in `registry`.
///
/// # Panics
/// As [`counter_vec`].
#[must_use]
pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let vec = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry
        .register(Box::new(vec.clone()))
        .unwrap_or_else(|e| panic!("registering metric {name}: {e}"));
    vec
}

/// The text exposition of every series in `registries`, in order.
#[must_use]
pub fn render(registries: &[&Registry]) -> String {
    let families: Vec<_> = registries.iter().flat_map(|r| r.gather()).collect();
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail on I/O; a family the encoder rejects
    // would be a bug in how it was built, and is left out rather than
    // taking the endpoint down.
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!("encoding metrics: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let r = Registry::new();
        let c = counter_vec(&r, "t_requests_total", "Requests.", &["verb", "code"]);
        let h = histogram_vec(&r, "t_seconds", "Latency.", &["verb"], &[0.1, 1.0]);
        c.with_label_values(&["GET", "200"]).inc_by(3);
        h.with_label_values(&["GET"]).observe(0.5);
        let text = render(&[&r]);
        assert!(text.contains("# TYPE t_requests_total counter\n"), "{text}");
        assert!(
            // Labels come out sorted by name.
            text.contains("t_requests_total{code=\"200\",verb=\"GET\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{verb=\"GET\",le=\"0.1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{verb=\"GET\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{verb=\"GET\",le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_sum{verb=\"GET\"} 0.5\n"), "{text}");
        assert!(text.contains("t_seconds_count{verb=\"GET\"} 1\n"), "{text}");
    }
}
