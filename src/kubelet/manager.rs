//! The pod manager: watches the pods bound to this node and keeps one
//! worker per pod.
//!
//! On an agent with a checkpoint, the manager also saves the pods it runs
//! (sealed, see [`crate::checkpoint`]). When the agent starts again and no
//! API server has listed its pods within [`OFFLINE_START_AFTER`], it starts
//! the saved ones, so a node that restarts while cut off keeps serving.
//! The first list that does arrive then stands for the cluster: pods it
//! lacks are stopped, changed ones updated, deleted ones terminated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::Shared;
use super::ipam::PodIps;
use super::worker::PodWorker;

/// A running worker, as the manager sees it.
struct WorkerRef {
    pod: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a restarted agent waits for the API server to list its pods
/// before it starts the pods it saved.
pub const OFFLINE_START_AFTER: Duration = Duration::from_secs(3);

/// The checkpoint file of the pods this node runs.
pub const CHECKPOINT: &str = "pods";

/// What the manager saves for a restart without the API server.
#[derive(Default, Serialize, Deserialize)]
pub struct Saved {
    pub pod_cidr: Option<String>,
    pub pods: Vec<Arc<Pod>>,
}

/// The pods the manager runs, as last seen, for the checkpoint.
#[derive(Clone, Default)]
pub struct Running {
    pods: Arc<Mutex<BTreeMap<String, Arc<Pod>>>>,
    pub changed: Arc<Notify>,
}

impl Running {
    /// The checkpoint's contents now.
    pub fn snapshot(&self, pod_cidr: Option<String>) -> Saved {
        Saved {
            pod_cidr,
            pods: self.pods.lock().values().cloned().collect(),
        }
    }

    fn set(&self, uid: &str, pod: Option<Arc<Pod>>) {
        let mut pods = self.pods.lock();
        match pod {
            Some(p) => {
                pods.insert(uid.to_string(), p);
            }
            None => {
                if pods.remove(uid).is_none() {
                    return;
                }
            }
        }
        drop(pods);
        self.changed.notify_one();
    }
}

/// Watches this node's pods and keeps one worker per pod UID.
pub struct PodManager {
    shared: Arc<Shared>,
    ips: Arc<Mutex<Option<PodIps>>>,
    workers: HashMap<String, WorkerRef>,
    running: Running,
    /// Pods saved by an earlier run, started if the API server does not
    /// list this node's pods in time.
    saved: Vec<Arc<Pod>>,
}

impl PodManager {
    pub fn new(
        shared: Arc<Shared>,
        pod_cidr: Option<String>,
        running: Running,
        saved: Vec<Arc<Pod>>,
    ) -> PodManager {
        let ips = pod_cidr.and_then(|c| match PodIps::new(&c) {
            Ok(ips) => Some(ips),
            Err(e) => {
                tracing::warn!(error = %e, "cannot use the node's podCIDR; pods get no IP");
                None
            }
        });
        PodManager {
            shared,
            ips: Arc::new(Mutex::new(ips)),
            workers: HashMap::new(),
            running,
            saved,
        }
    }

    /// Runs until `shutdown`: follows the watch, starts a worker for each
    /// new pod, hands updates to existing ones and tells them when their
    /// pod is gone. On shutdown the workers are stopped without touching
    /// the pods' objects, so a restarted kubelet takes them back.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let pods: Api<Pod> = Api::all(self.shared.client.clone());
        let cfg = watcher::Config::default()
            .fields(&format!("spec.nodeName={}", self.shared.config.node_name));
        // Nothing here reads managedFields: dropping them at once keeps
        // each pod's copy (and the checkpoint) small.
        let stream = watcher(pods, cfg).modify(|p| p.metadata.managed_fields = None);
        let mut stream = std::pin::pin!(stream);
        let mut shutdown = std::pin::pin!(shutdown);
        let mut listed: Option<HashSet<String>> = None;
        let offline_start = tokio::time::sleep(OFFLINE_START_AFTER);
        let mut offline_start = std::pin::pin!(offline_start);
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = &mut offline_start, if !self.saved.is_empty() => {
                    let saved = std::mem::take(&mut self.saved);
                    tracing::warn!(
                        pods = saved.len(),
                        "no API server has listed this node's pods; starting the pods it saved"
                    );
                    for pod in saved {
                        self.apply(Arc::unwrap_or_clone(pod));
                    }
                    continue;
                }
                _ = &mut shutdown => break,
            };
            let Some(event) = event else { break };
            match event {
                Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        listed.get_or_insert_with(HashSet::new).insert(uid);
                    }
                    self.apply(pod);
                }
                Ok(watcher::Event::InitDone) => {
                    // The cluster has spoken: saved pods are not needed.
                    self.saved.clear();
                    // Pods that vanished while the watch was down.
                    if let Some(seen) = listed.take() {
                        let gone: Vec<String> = self
                            .workers
                            .keys()
                            .filter(|uid| !seen.contains(*uid))
                            .cloned()
                            .collect();
                        for uid in gone {
                            self.deleted(&uid);
                        }
                    }
                }
                Ok(watcher::Event::Apply(pod)) => self.apply(pod),
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        self.deleted(uid);
                    }
                }
                Err(e) => {
                    // The watcher retries by itself; the pods keep running.
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            self.workers.retain(|_, w| !w.task.is_finished());
        }
        for (_, w) in self.workers.drain() {
            w.task.abort();
            let _ = w.task.await;
        }
    }

    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
        self.running.set(&uid, Some(pod.clone()));
        if let Some(w) = self.workers.get(&uid) {
            w.pod.send_replace(Some(pod));
            return;
        }
        // An earlier kubelet's IP stays with its pod.
        if let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            && let Some(ips) = self.ips.lock().as_mut()
        {
            ips.reserve(ip);
        }
        let (tx, rx) = watch::channel(Some(pod));
        let worker = PodWorker::new(self.shared.clone(), rx, self.ips.clone());
        let task = tokio::spawn(worker.run());
        self.workers.insert(uid, WorkerRef { pod: tx, task });
    }

    fn deleted(&mut self, uid: &str) {
        self.running.set(uid, None);
        if let Some(w) = self.workers.get(uid) {
            w.pod.send_replace(None);
        }
    }
}
