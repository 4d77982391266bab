//! Per-controller metrics: reconciles by outcome and their latency, served
//! with the API server's own on `/metrics` (the controller manager runs in
//! the same process), under the names Kubernetes' controller runtime uses
//! for the same figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Latency buckets in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Counters {
    success: u64,
    error: u64,
    buckets: [u64; BUCKETS.len()],
    sum: f64,
}

static REGISTRY: Mutex<BTreeMap<&'static str, Counters>> = Mutex::new(BTreeMap::new());

/// Counts one reconcile of `controller`.
pub fn record(controller: &'static str, ok: bool, took: Duration) {
    let mut reg = REGISTRY.lock();
    let c = reg.entry(controller).or_default();
    if ok {
        c.success += 1;
    } else {
        c.error += 1;
    }
    let secs = took.as_secs_f64();
    c.sum += secs;
    if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
        c.buckets[i] += 1;
    }
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
    let reg = REGISTRY.lock();
    let mut out = String::new();
    if reg.is_empty() {
        return out;
    }
    out.push_str(
        "# HELP controller_runtime_reconcile_total Reconciles per controller and result.\n\
         # TYPE controller_runtime_reconcile_total counter\n",
    );
    for (name, c) in reg.iter() {
        let _ = writeln!(
            out,
            "controller_runtime_reconcile_total{{controller=\"{name}\",result=\"success\"}} {}\n\
             controller_runtime_reconcile_total{{controller=\"{name}\",result=\"error\"}} {}",
            c.success, c.error
        );
    }
    out.push_str(
        "# HELP controller_runtime_reconcile_time_seconds Time per reconcile.\n\
         # TYPE controller_runtime_reconcile_time_seconds histogram\n",
    );
    for (name, c) in reg.iter() {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += c.buckets[i];
            let _ = writeln!(
                out,
                "controller_runtime_reconcile_time_seconds_bucket{{controller=\"{name}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = c.success + c.error;
        let _ = writeln!(
            out,
            "controller_runtime_reconcile_time_seconds_bucket{{controller=\"{name}\",le=\"+Inf\"}} {total}\n\
             controller_runtime_reconcile_time_seconds_sum{{controller=\"{name}\"}} {}\n\
             controller_runtime_reconcile_time_seconds_count{{controller=\"{name}\"}} {total}",
            c.sum
        );
    }
    out
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
