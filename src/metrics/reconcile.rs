//! Reconcile metrics of every control loop (the controller manager's and
//! the cloud controller's): reconciles by outcome and their latency, served
//! with the API server's own on `/metrics` (the control loops run in the
//! same process), under the names Kubernetes' controller runtime uses for
//! the same figures.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus::{HistogramVec, IntCounterVec, Registry};

/// The controllers' series. One per process: every controller manager of
/// a process counts into it, as its `/metrics` shows them together.
struct Series {
    registry: Registry,
    reconciles: IntCounterVec,
    time: HistogramVec,
}

static SERIES: LazyLock<Series> = LazyLock::new(|| {
    let registry = Registry::new();
    let reconciles = super::counter_vec(
        &registry,
        "controller_runtime_reconcile_total",
        "Reconciles per controller and result.",
        &["controller", "result"],
    );
    let time = super::histogram_vec(
        &registry,
        "controller_runtime_reconcile_time_seconds",
        "Time per reconcile.",
        &["controller"],
        super::RECONCILE_BUCKETS,
    );
    Series {
        registry,
        reconciles,
        time,
    }
});

/// The registry the controllers count into, for `/metrics`.
pub fn registry() -> &'static Registry {
    &SERIES.registry
}

/// Counts one reconcile of `controller`.
pub fn record(controller: &'static str, ok: bool, took: Duration) {
    let result = if ok { "success" } else { "error" };
    SERIES
        .reconciles
        .with_label_values(&[controller, result])
        .inc();
    SERIES
        .time
        .with_label_values(&[controller])
        .observe(took.as_secs_f64());
}

/// A reconcile's future, boxed.
pub type Reconciling<E> =
    std::pin::Pin<Box<dyn Future<Output = Result<kube::runtime::controller::Action, E>> + Send>>;

/// Wraps a reconcile function so every call is counted and timed.
pub fn timed<K, C, E, F, Fut>(
    controller: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<C>) -> Reconciling<E>
where
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<kube::runtime::controller::Action, E>> + Send + 'static,
    K: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    move |obj, ctx| {
        let fut = reconcile(obj, ctx);
        Box::pin(async move {
            let start = Instant::now();
            let r = fut.await;
            record(controller, r.is_ok(), start.elapsed());
            r
        })
    }
}

/// The Prometheus text of every controller's counters.
pub fn render() -> String {
    super::render(&[registry()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_and_timed() {
        record("test-a", true, Duration::from_micros(500));
        record("test-a", false, Duration::from_millis(20));
        let text = render();
        assert!(text.contains(
            "controller_runtime_reconcile_total{controller=\"test-a\",result=\"success\"} 1"
        ));
        assert!(text.contains(
            "controller_runtime_reconcile_total{controller=\"test-a\",result=\"error\"} 1"
        ));
        assert!(text.contains(
            "controller_runtime_reconcile_time_seconds_bucket{controller=\"test-a\",le=\"0.001\"} 1"
        ));
        assert!(
            text.contains(
                "controller_runtime_reconcile_time_seconds_count{controller=\"test-a\"} 2"
            )
        );
    }
}
