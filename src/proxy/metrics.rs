//! Request counts, errors and latency per service and per pod, served in
//! Prometheus' text format on the agent's `/metrics` (reachable as
//! `kubectl get --raw /api/v1/nodes/NODE/proxy/metrics`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counters of one service or pod.
#[derive(Default)]
pub struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Total latency in microseconds.
    latency_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl Counters {
    fn record(&self, latency: Duration, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Counters by `namespace/name`, for services and for pods.
#[derive(Default)]
pub struct Metrics {
    services: RwLock<HashMap<String, Arc<Counters>>>,
    pods: RwLock<HashMap<String, Arc<Counters>>>,
}

fn counters(map: &RwLock<HashMap<String, Arc<Counters>>>, key: &str) -> Arc<Counters> {
    if let Some(c) = map.read().get(key) {
        return c.clone();
    }
    map.write().entry(key.to_string()).or_default().clone()
}

impl Metrics {
    /// Counts one request to a service (`namespace/name`). An error is a
    /// 5xx answer or no answer at all.
    pub fn service(&self, key: &str, latency: Duration, error: bool) {
        counters(&self.services, key).record(latency, error);
    }

    /// Counts one request served by a pod (`namespace/name`).
    pub fn pod(&self, key: &str, latency: Duration, error: bool) {
        counters(&self.pods, key).record(latency, error);
    }

    /// Requests a pod served so far (for tests and the dashboard).
    pub fn pod_requests(&self, key: &str) -> u64 {
        self.pods.read().get(key).map_or(0, |c| c.requests())
    }

    /// Forgets a pod's counters (it is gone).
    pub fn forget_pod(&self, key: &str) {
        self.pods.write().remove(key);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, node: &str) -> String {
        let mut out = String::new();
        for (what, label, map) in [
            ("service", "service", &self.services),
            ("pod", "pod", &self.pods),
        ] {
            let mut entries: Vec<(String, Arc<Counters>)> = map
                .read()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let _ = writeln!(
                out,
                "# HELP wkube_proxy_{what}_requests_total Requests the node proxy sent to a {what}.\n\
                 # TYPE wkube_proxy_{what}_requests_total counter"
            );
            for (key, c) in &entries {
                let (ns, name) = key.split_once('/').unwrap_or(("", key));
                let _ = writeln!(
                    out,
                    "wkube_proxy_{what}_requests_total{{node=\"{node}\",namespace=\"{ns}\",{label}=\"{name}\"}} {}",
                    c.requests.load(Ordering::Relaxed)
                );
            }
            let _ = writeln!(
                out,
                "# HELP wkube_proxy_{what}_errors_total Requests to a {what} that failed or answered 5xx.\n\
                 # TYPE wkube_proxy_{what}_errors_total counter"
            );
            for (key, c) in &entries {
                let (ns, name) = key.split_once('/').unwrap_or(("", key));
                let _ = writeln!(
                    out,
                    "wkube_proxy_{what}_errors_total{{node=\"{node}\",namespace=\"{ns}\",{label}=\"{name}\"}} {}",
                    c.errors.load(Ordering::Relaxed)
                );
            }
            let _ = writeln!(
                out,
                "# HELP wkube_proxy_{what}_request_duration_seconds Latency of requests to a {what}.\n\
                 # TYPE wkube_proxy_{what}_request_duration_seconds histogram"
            );
            for (key, c) in &entries {
                let (ns, name) = key.split_once('/').unwrap_or(("", key));
                let labels = format!("node=\"{node}\",namespace=\"{ns}\",{label}=\"{name}\"");
                let mut cumulative = 0;
                for (i, bound) in BUCKETS.iter().enumerate() {
                    cumulative += c.buckets[i].load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "wkube_proxy_{what}_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let total = c.requests.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "wkube_proxy_{what}_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}\n\
                     wkube_proxy_{what}_request_duration_seconds_sum{{{labels}}} {}\n\
                     wkube_proxy_{what}_request_duration_seconds_count{{{labels}}} {total}",
                    c.latency_us.load(Ordering::Relaxed) as f64 / 1e6
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_buckets_render_as_prometheus_text() {
        let m = Metrics::default();
        m.service("default/hello", Duration::from_micros(300), false);
        m.service("default/hello", Duration::from_millis(30), true);
        m.pod("default/hello-1", Duration::from_micros(300), false);
        let text = m.render("node-1");
        assert!(text.contains(
            "wkube_proxy_service_requests_total{node=\"node-1\",namespace=\"default\",service=\"hello\"} 2"
        ));
        assert!(text.contains(
            "wkube_proxy_service_errors_total{node=\"node-1\",namespace=\"default\",service=\"hello\"} 1"
        ));
        assert!(text.contains("service=\"hello\",le=\"0.0005\"} 1"));
        assert!(text.contains("service=\"hello\",le=\"0.05\"} 2"));
        assert!(text.contains(
            "wkube_proxy_pod_requests_total{node=\"node-1\",namespace=\"default\",pod=\"hello-1\"} 1"
        ));
        assert_eq!(m.pod_requests("default/hello-1"), 1);
    }
}
