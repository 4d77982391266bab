//! Request counts, errors and latency per service and per pod, served in
//! Prometheus' text format on the agent's `/metrics` (reachable as
//! `kubectl get --raw /api/v1/nodes/NODE/proxy/metrics`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, Registry};

/// The series of one kind of target (services or pods) on one node.
struct Family {
    node: String,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
}

impl Family {
    /// `what` is `service` or `pod`, used in the names and as the label.
    fn new(registry: &Registry, node: &str, what: &str) -> Family {
        let labels = ["node", "namespace", what];
        Family {
            node: node.to_string(),
            requests: crate::metrics::counter_vec(
                registry,
                &format!("wkube_proxy_{what}_requests_total"),
                &format!("Requests the node proxy sent to a {what}."),
                &labels,
            ),
            errors: crate::metrics::counter_vec(
                registry,
                &format!("wkube_proxy_{what}_errors_total"),
                &format!("Requests to a {what} that failed or answered 5xx."),
                &labels,
            ),
            latency: crate::metrics::histogram_vec(
                registry,
                &format!("wkube_proxy_{what}_request_duration_seconds"),
                &format!("Latency of requests to a {what}."),
                &labels,
                crate::metrics::PROXY_REQUEST_BUCKETS,
            ),
        }
    }

    fn counters(&self, key: &str) -> Counters {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let values = [self.node.as_str(), ns, name];
        Counters {
            requests: self.requests.with_label_values(&values),
            errors: self.errors.with_label_values(&values),
            latency: self.latency.with_label_values(&values),
        }
    }

    fn remove(&self, key: &str) {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let values = [self.node.as_str(), ns, name];
        let _ = self.requests.remove_label_values(&values);
        let _ = self.errors.remove_label_values(&values);
        let _ = self.latency.remove_label_values(&values);
    }
}

/// The series of one service or pod, looked up once and then only
/// incremented.
pub struct Counters {
    requests: IntCounter,
    errors: IntCounter,
    latency: Histogram,
}

impl Counters {
    fn record(&self, latency: Duration, error: bool) {
        self.requests.inc();
        if error {
            self.errors.inc();
        }
        self.latency.observe(latency.as_secs_f64());
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }
}

/// Counters by `namespace/name`, for services and for pods, in a registry
/// of this node's proxy (every series carries the node's name).
pub struct Metrics {
    registry: Registry,
    service_family: Family,
    pod_family: Family,
    services: RwLock<HashMap<String, Arc<Counters>>>,
    pods: RwLock<HashMap<String, Arc<Counters>>>,
}

fn counters(
    map: &RwLock<HashMap<String, Arc<Counters>>>,
    family: &Family,
    key: &str,
) -> Arc<Counters> {
    if let Some(c) = map.read().get(key) {
        return c.clone();
    }
    map.write()
        .entry(key.to_string())
        .or_insert_with(|| Arc::new(family.counters(key)))
        .clone()
}

impl Metrics {
    /// The proxy metrics of node `node`.
    pub fn new(node: &str) -> Metrics {
        let registry = Registry::new();
        Metrics {
            service_family: Family::new(&registry, node, "service"),
            pod_family: Family::new(&registry, node, "pod"),
            registry,
            services: RwLock::default(),
            pods: RwLock::default(),
        }
    }

    /// Counts one request to a service (`namespace/name`). An error is a
    /// 5xx answer or no answer at all.
    pub fn service(&self, key: &str, latency: Duration, error: bool) {
        counters(&self.services, &self.service_family, key).record(latency, error);
    }

    /// Counts one request served by a pod (`namespace/name`).
    pub fn pod(&self, key: &str, latency: Duration, error: bool) {
        counters(&self.pods, &self.pod_family, key).record(latency, error);
    }

    /// Requests a pod served so far (for tests and the dashboard).
    pub fn pod_requests(&self, key: &str) -> u64 {
        self.pods.read().get(key).map_or(0, |c| c.requests())
    }

    /// Forgets a pod's counters (it is gone).
    pub fn forget_pod(&self, key: &str) {
        if self.pods.write().remove(key).is_some() {
            self.pod_family.remove(key);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        crate::metrics::render(&[&self.registry])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_buckets_render_as_prometheus_text() {
        let m = Metrics::new("node-1");
        m.service("default/hello", Duration::from_micros(300), false);
        m.service("default/hello", Duration::from_millis(30), true);
        m.pod("default/hello-1", Duration::from_micros(300), false);
        let text = m.render();
        assert!(text.contains(
            "wkube_proxy_service_requests_total{namespace=\"default\",node=\"node-1\",service=\"hello\"} 2"
        ));
        assert!(text.contains(
            "wkube_proxy_service_errors_total{namespace=\"default\",node=\"node-1\",service=\"hello\"} 1"
        ));
        assert!(text.contains("service=\"hello\",le=\"0.0005\"} 1"));
        assert!(text.contains("service=\"hello\",le=\"0.05\"} 2"));
        assert!(text.contains(
            "wkube_proxy_pod_requests_total{namespace=\"default\",node=\"node-1\",pod=\"hello-1\"} 1"
        ));
        assert_eq!(m.pod_requests("default/hello-1"), 1);
        // A pod that is gone leaves the exposition.
        m.forget_pod("default/hello-1");
        assert_eq!(m.pod_requests("default/hello-1"), 0);
        assert!(!m.render().contains("pod=\"hello-1\""));
    }
}
