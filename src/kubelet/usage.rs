//! Turns the kubelet's cumulative counters into rates: once per
//! [`SAMPLE_PERIOD`] it reads each container's CPU time and each pod's
//! request count, and keeps the samples of the last [`WINDOW`], so the
//! stats summary can say how many cores a container uses *now* and how
//! many requests per second a pod serves, as `kubectl top` and the
//! autoscaler need. The counters themselves are kept where the work
//! happens (the runtime's CPU meter, the pod's request gate); this only
//! reads them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Shared;
use super::pods::PodTable;
use crate::agentapi::summary::{
    ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, RequestStats, Summary,
};

pub use crate::agentapi::summary::{SAMPLE_PERIOD, WINDOW};

/// The samples of one cumulative counter within [`WINDOW`].
#[derive(Debug, Default)]
struct Series {
    samples: VecDeque<(Instant, u128)>,
}

impl Series {
    fn push(&mut self, at: Instant, value: u128) {
        // A counter that went down belongs to a restarted container: its
        // old samples say nothing about the new one.
        if self.samples.back().is_some_and(|&(_, last)| value < last) {
            self.samples.clear();
        }
        self.samples.push_back((at, value));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|&(t, _)| at.duration_since(t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Units per second over the window, and the window's length.
    fn rate(&self) -> Option<(f64, Duration)> {
        let &(t0, v0) = self.samples.front()?;
        let &(t1, v1) = self.samples.back()?;
        let span = t1.duration_since(t0);
        if span.is_zero() {
            return None;
        }
        Some(((v1 - v0) as f64 / span.as_secs_f64(), span))
    }
}

/// The highest readings of a gauge within [`WINDOW`].
#[derive(Debug, Default)]
struct Peaks {
    samples: VecDeque<(Instant, usize)>,
}

impl Peaks {
    fn push(&mut self, at: Instant, value: usize) {
        self.samples.push_back((at, value));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| at.duration_since(t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn max(&self) -> Option<usize> {
        self.samples.iter().map(|&(_, v)| v).max()
    }
}

/// The recent samples of every counter the kubelet reads, keyed by pod
/// uid (requests) and `uid/container` (CPU and memory).
#[derive(Default)]
pub struct Sampler {
    series: Mutex<HashMap<String, Series>>,
    memory: Mutex<HashMap<String, Peaks>>,
}

impl Sampler {
    /// Reads every counter once, and forgets pods and containers gone.
    pub fn tick(&self, pods: &PodTable, at: Instant) {
        let mut series = self.series.lock();
        let mut memory = self.memory.lock();
        let mut seen = std::collections::HashSet::new();
        for pod in pods.all() {
            seen.insert(pod.uid.clone());
            series
                .entry(pod.uid.clone())
                .or_default()
                .push(at, u128::from(pod.served()));
            for (name, usage) in pod.usage() {
                let key = cpu_key(&pod.uid, &name);
                if let Some(cpu) = usage.cpu {
                    series
                        .entry(key.clone())
                        .or_default()
                        .push(at, cpu.used().as_nanos());
                }
                if let Some(meter) = usage.memory {
                    memory
                        .entry(key.clone())
                        .or_default()
                        .push(at, meter.take_recent_peak());
                }
                seen.insert(key);
            }
        }
        series.retain(|k, _| seen.contains(k));
        memory.retain(|k, _| seen.contains(k));
    }

    fn rate(&self, key: &str) -> Option<(f64, Duration)> {
        self.series.lock().get(key)?.rate()
    }

    /// The most memory held at once within the window.
    fn recent_peak(&self, key: &str) -> Option<usize> {
        self.memory.lock().get(key)?.max()
    }
}

fn cpu_key(uid: &str, container: &str) -> String {
    format!("{uid}/{container}")
}

/// Samples until `stop` resolves.
pub async fn run(shared: Arc<Shared>, stop: impl std::future::Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => shared.usage.tick(&shared.pods, Instant::now()),
        }
    }
}

/// What each container of each pod uses now, with the node's totals.
pub fn summary(shared: &Shared) -> Summary {
    let now = super::node::chrono_now().to_string();
    let mut node_cpu: u128 = 0;
    let mut node_rate: Option<u64> = None;
    let mut node_memory: u64 = 0;
    let mut pods = Vec::new();
    for h in shared.pods.all() {
        let mut containers = Vec::new();
        for (name, u) in h.usage() {
            let used = u.cpu.as_ref().map_or(0, |c| c.used().as_nanos());
            let rate = shared.usage.rate(&cpu_key(&h.uid, &name));
            let nano_cores = rate.map(|(r, _)| r.round() as u64);
            let (mem, peak) = u
                .memory
                .as_ref()
                .map_or((0, 0), |m| (m.in_use() as u64, m.peak() as u64));
            let recent = shared
                .usage
                .recent_peak(&cpu_key(&h.uid, &name))
                .map_or(mem, |p| (p as u64).max(mem));
            node_cpu += used;
            node_memory += recent;
            if let Some(n) = nano_cores {
                node_rate = Some(node_rate.unwrap_or(0) + n);
            }
            containers.push(ContainerStats {
                name,
                cpu: Some(CpuStats {
                    time: now.clone(),
                    usage_nano_cores: nano_cores,
                    usage_core_nano_seconds: Some(used as u64),
                    window_millis: rate.map(|(_, w)| w.as_millis() as u64),
                }),
                memory: Some(MemoryStats {
                    time: now.clone(),
                    usage_bytes: Some(mem),
                    working_set_bytes: Some(mem),
                    max_working_set_bytes: Some(peak),
                    recent_max_working_set_bytes: Some(recent),
                }),
            });
        }
        let requests = RequestStats {
            time: now.clone(),
            total: h.served(),
            in_flight: h.in_flight() as u64,
            per_second_milli: shared
                .usage
                .rate(&h.uid)
                .map(|(r, _)| (r * 1000.0).round() as u64),
        };
        pods.push(PodStats {
            pod_ref: PodReference {
                name: h.name.clone(),
                namespace: h.namespace.clone(),
                uid: h.uid.clone(),
            },
            containers,
            requests: Some(requests),
        });
    }
    Summary {
        node: NodeStats {
            node_name: shared.config.node_name.clone(),
            cpu: Some(CpuStats {
                time: now.clone(),
                usage_nano_cores: node_rate,
                usage_core_nano_seconds: Some(node_cpu as u64),
                window_millis: None,
            }),
            memory: Some(MemoryStats {
                time: now,
                usage_bytes: Some(node_memory),
                working_set_bytes: Some(node_memory),
                max_working_set_bytes: None,
                recent_max_working_set_bytes: None,
            }),
        },
        pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate is the counter's growth over the samples kept, which reach
    /// back one window.
    #[test]
    fn a_rate_spans_the_window_and_forgets_older_samples() {
        let t0 = Instant::now();
        let mut s = Series::default();
        assert_eq!(s.rate(), None);
        s.push(t0, 0);
        assert_eq!(s.rate(), None, "one sample is no rate");
        for i in 1..=10u64 {
            s.push(t0 + Duration::from_secs(i), u128::from(i) * 500);
        }
        let (rate, span) = s.rate().unwrap();
        assert!((rate - 500.0).abs() < 1e-9, "{rate}");
        assert!(span <= WINDOW, "{span:?}");
        assert!(span >= WINDOW - Duration::from_secs(1), "{span:?}");
    }

    /// A counter that goes down (the container restarted) starts over.
    #[test]
    fn a_reset_counter_starts_a_new_series() {
        let t0 = Instant::now();
        let mut s = Series::default();
        s.push(t0, 1_000_000);
        s.push(t0 + Duration::from_secs(1), 2_000_000);
        s.push(t0 + Duration::from_secs(2), 10);
        assert_eq!(s.rate(), None);
        s.push(t0 + Duration::from_secs(3), 110);
        let (rate, _) = s.rate().unwrap();
        assert!((rate - 100.0).abs() < 1e-9, "{rate}");
    }
}
