//! The pod manager: watches the pods bound to this node and keeps one
//! worker per pod.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::Shared;
use super::ipam::PodIps;
use super::worker::PodWorker;

/// A running worker, as the manager sees it.
struct WorkerRef {
    pod: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Watches this node's pods and keeps one worker per pod UID.
pub struct PodManager {
    shared: Arc<Shared>,
    ips: Arc<Mutex<Option<PodIps>>>,
    workers: HashMap<String, WorkerRef>,
}

impl PodManager {
    pub fn new(shared: Arc<Shared>, pod_cidr: Option<String>) -> PodManager {
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
        let mut stream = std::pin::pin!(watcher(pods, cfg));
        let mut shutdown = std::pin::pin!(shutdown);
        let mut listed: Option<Vec<String>> = None;
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = &mut shutdown => break,
            };
            let Some(event) = event else { break };
            match event {
                Ok(watcher::Event::Init) => listed = Some(Vec::new()),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        listed.get_or_insert_with(Vec::new).push(uid);
                    }
                    self.apply(pod);
                }
                Ok(watcher::Event::InitDone) => {
                    // Pods that vanished while the watch was down.
                    if let Some(seen) = listed.take() {
                        let gone: Vec<String> = self
                            .workers
                            .keys()
                            .filter(|uid| !seen.contains(uid))
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
        if let Some(w) = self.workers.get(uid) {
            w.pod.send_replace(None);
        }
    }
}
