//! The pods this kubelet runs: each one's handle (its record, for status
//! and logs, and its serving HTTP containers) and the table through which
//! the agent endpoint and the node proxy reach a running pod's HTTP
//! containers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::status::PodRecord;
use crate::runtime::HttpService;
use crate::runtime::http::ResponseBody;

/// An HTTP container that is serving.
pub struct ServiceEntry {
    /// Its declared containerPorts (any port reaches it when it is the
    /// pod's only HTTP container).
    pub ports: Vec<u16>,
    pub service: Arc<HttpService>,
}

/// A pod this kubelet runs: its record (for status and logs) and its
/// serving HTTP containers.
pub struct PodHandle {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `DATA/kubelet/pods/<uid>`.
    pub dir: PathBuf,
    /// Where its token, Secret and ConfigMap volumes are written (in
    /// memory; see `kubelet::volatile`).
    pub secrets_dir: PathBuf,
    record: Mutex<PodRecord>,
    /// Woken on every record change; the status writer waits on it.
    pub changed: Notify,
    services: RwLock<HashMap<String, ServiceEntry>>,
    /// False once the pod is terminating: new requests get 503.
    accepting: AtomicBool,
    inflight: AtomicUsize,
    /// Requests taken since the pod started (for its request rate).
    served: AtomicU64,
    /// Woken when `inflight` drops to zero.
    drained: Notify,
    /// Each container's CPU and memory accounting, by container name.
    usage: RwLock<HashMap<String, Usage>>,
    /// The serving epoch of the table the pod is in (set by
    /// [`PodTable::insert`]), bumped when its HTTP containers change.
    epoch: std::sync::OnceLock<Arc<AtomicU64>>,
}

/// Where a container's use of the node is counted.
#[derive(Clone, Debug)]
pub struct Usage {
    pub cpu: Option<Arc<crate::runtime::fair::CpuShare>>,
    pub memory: Option<Arc<crate::runtime::MemoryMeter>>,
}

/// Why a request could not be given to a pod.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("pod {0} is terminating")]
    Terminating(String),
    #[error("pod {pod} has no HTTP container serving on port {port}")]
    NoService { pod: String, port: String },
}

impl PodHandle {
    pub fn new(pod: &Pod, dir: PathBuf, secrets_dir: PathBuf, record: PodRecord) -> PodHandle {
        PodHandle {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            dir,
            secrets_dir,
            record: Mutex::new(record),
            changed: Notify::new(),
            services: RwLock::new(HashMap::new()),
            epoch: std::sync::OnceLock::new(),
            accepting: AtomicBool::new(true),
            inflight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            drained: Notify::new(),
            usage: RwLock::new(HashMap::new()),
        }
    }

    /// Records where `container`'s use is counted.
    pub fn set_usage(&self, container: &str, usage: Usage) {
        self.usage.write().insert(container.to_string(), usage);
    }

    /// Each container's accounting, by name (sorted).
    pub fn usage(&self) -> Vec<(String, Usage)> {
        let mut all: Vec<(String, Usage)> = self
            .usage
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Changes the record and wakes the status writer.
    pub fn update<R>(&self, f: impl FnOnce(&mut PodRecord) -> R) -> R {
        let r = f(&mut self.record.lock());
        self.changed.notify_one();
        r
    }

    /// Changes the record without waking the status writer (for the
    /// writer itself, which records condition transition times).
    pub fn update_quiet<R>(&self, f: impl FnOnce(&mut PodRecord) -> R) -> R {
        f(&mut self.record.lock())
    }

    /// Reads the record.
    pub fn read<R>(&self, f: impl FnOnce(&PodRecord) -> R) -> R {
        f(&self.record.lock())
    }

    /// Makes an HTTP container reachable.
    pub fn add_service(&self, container: &str, entry: ServiceEntry) {
        self.services.write().insert(container.to_string(), entry);
        self.serving_changed();
    }

    /// Takes an HTTP container out of routing (it is restarting or stopped).
    pub fn remove_service(&self, container: &str) {
        self.services.write().remove(container);
        self.serving_changed();
    }

    fn serving_changed(&self) {
        if let Some(epoch) = self.epoch.get() {
            epoch.fetch_add(1, Ordering::Release);
        }
    }

    /// The HTTP container for `port` (`None`: the pod's first one).
    pub fn service_for(&self, port: Option<u16>) -> Option<Arc<HttpService>> {
        let services = self.services.read();
        match port {
            Some(p) => services
                .values()
                .find(|e| e.ports.contains(&p))
                .or_else(|| {
                    // A single HTTP container takes every port, as a
                    // process listening on all of them would.
                    (services.len() == 1)
                        .then(|| services.values().next())
                        .flatten()
                })
                .map(|e| e.service.clone()),
            None => {
                let mut entries: Vec<_> = services.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                entries.first().map(|(_, e)| e.service.clone())
            }
        }
    }

    /// Serves one request in the pod, counting it in flight so graceful
    /// termination can wait for it.
    ///
    /// # Errors
    /// The pod is terminating or has no HTTP container on `port`.
    pub async fn serve<B>(
        &self,
        port: Option<u16>,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<ResponseBody>, ProxyError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(ProxyError::Terminating(self.key()));
        }
        let svc = self
            .service_for(port)
            .ok_or_else(|| ProxyError::NoService {
                pod: self.key(),
                port: port.map_or_else(String::new, |p| p.to_string()),
            })?;
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.served.fetch_add(1, Ordering::Relaxed);
        let _guard = InflightGuard(self);
        Ok(svc.handle(req).await)
    }

    /// Whether a request for `port` would be taken now (the proxy asks
    /// before handing one over, so it can try another endpoint instead).
    pub fn can_serve(&self, port: Option<u16>) -> bool {
        self.accepting.load(Ordering::Acquire) && self.service_for(port).is_some()
    }

    /// The containerPorts its serving HTTP containers declared.
    pub fn serving_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .services
            .read()
            .values()
            .flat_map(|e| e.ports.iter().copied())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Whether any HTTP container is serving.
    pub fn is_serving(&self) -> bool {
        !self.services.read().is_empty()
    }

    /// Requests taken since the pod started.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Stops taking new requests.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// Waits until no request is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.inflight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The pod, as events name it.
    pub fn pod_ref(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        crate::events::pod_reference(&self.namespace, &self.name, &self.uid)
    }

    /// `NAMESPACE/NAME`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

struct InflightGuard<'a>(&'a PodHandle);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// The pods this kubelet runs, by `namespace/name` and by address.
#[derive(Default)]
pub struct PodTable {
    pods: RwLock<HashMap<String, Arc<PodHandle>>>,
    /// The same pods by IP: every request to a pod's address or to a
    /// Service endpoint looks its pod up here, so it must not walk the
    /// node's pods (at 10,000 pods that walk took longer than the request).
    ips: RwLock<HashMap<String, Arc<PodHandle>>>,
    /// Bumped whenever a pod comes or goes, gets its address, or starts or
    /// stops serving: the proxy walks the pods for their addresses only
    /// when it moved, so an idle node with many pods does not walk them.
    epoch: Arc<AtomicU64>,
}

impl PodTable {
    /// The pod keyed `namespace/name`.
    pub fn get_by_key(&self, key: &str) -> Option<Arc<PodHandle>> {
        self.pods.read().get(key).cloned()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodHandle>> {
        self.pods
            .read()
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// The pod with address `ip`, if it runs here.
    pub fn by_ip(&self, ip: &str) -> Option<Arc<PodHandle>> {
        self.ips.read().get(ip).cloned()
    }

    /// Every pod of this node.
    pub fn all(&self) -> Vec<Arc<PodHandle>> {
        self.pods.read().values().cloned().collect()
    }

    pub fn insert(&self, handle: Arc<PodHandle>) {
        // A handle belongs to one table for its life.
        let _ = handle.epoch.set(Arc::clone(&self.epoch));
        if let Some(ip) = handle.read(|r| r.pod_ip.clone()) {
            self.ips.write().insert(ip, handle.clone());
        }
        self.pods.write().insert(handle.key(), handle);
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// Gives `handle` its address (in its record and in the table).
    pub fn set_ip(&self, handle: &Arc<PodHandle>, ip: &str) {
        handle.update_quiet(|r| r.pod_ip = Some(ip.to_string()));
        self.ips.write().insert(ip.to_string(), handle.clone());
        self.epoch.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever a pod's address or serving ports
    /// may have (see the `epoch` field).
    pub fn serving_epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Removes `handle`: its entry by name if that still is this pod, and
    /// its address.
    pub fn remove(&self, handle: &PodHandle) {
        let key = handle.key();
        {
            let mut pods = self.pods.write();
            if pods.get(&key).is_some_and(|h| h.uid == handle.uid) {
                pods.remove(&key);
            }
        }
        if let Some(ip) = handle.read(|r| r.pod_ip.clone()) {
            let mut ips = self.ips.write();
            if ips.get(&ip).is_some_and(|h| h.uid == handle.uid) {
                ips.remove(&ip);
            }
        }
        self.epoch.fetch_add(1, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.pods.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The proxy reaches this node's pods through its seam.
impl crate::proxy::LocalPods for PodTable {
    fn by_key(&self, key: &str) -> Option<Arc<dyn crate::proxy::LocalPod>> {
        self.get_by_key(key)
            .map(|h| h as Arc<dyn crate::proxy::LocalPod>)
    }

    fn by_ip(&self, ip: std::net::Ipv4Addr) -> Option<Arc<dyn crate::proxy::LocalPod>> {
        PodTable::by_ip(self, &ip.to_string()).map(|h| h as Arc<dyn crate::proxy::LocalPod>)
    }

    fn all(&self) -> Vec<Arc<dyn crate::proxy::LocalPod>> {
        PodTable::all(self)
            .into_iter()
            .map(|h| h as Arc<dyn crate::proxy::LocalPod>)
            .collect()
    }

    fn serving_epoch(&self) -> u64 {
        PodTable::serving_epoch(self)
    }
}

impl crate::proxy::LocalPod for PodHandle {
    fn key(&self) -> String {
        PodHandle::key(self)
    }

    fn ip(&self) -> Option<std::net::Ipv4Addr> {
        self.read(|r| r.pod_ip.clone())
            .and_then(|ip| ip.parse().ok())
    }

    fn is_serving(&self) -> bool {
        PodHandle::is_serving(self)
    }

    fn can_serve(&self, port: Option<u16>) -> bool {
        PodHandle::can_serve(self, port)
    }

    fn serving_ports(&self) -> Vec<u16> {
        PodHandle::serving_ports(self)
    }

    fn serve(
        &self,
        port: Option<u16>,
        req: hyper::Request<crate::proxy::ProxyBody>,
    ) -> crate::proxy::Served<'_> {
        Box::pin(async move {
            PodHandle::serve(self, port, req)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::*;

    fn handle(name: &str) -> Arc<PodHandle> {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.name = Some(name.into());
        pod.metadata.uid = Some(format!("uid-{name}"));
        let record = PodRecord::new(&pod, "127.0.0.1".into());
        Arc::new(PodHandle::new(
            &pod,
            PathBuf::from("/nonexistent"),
            PathBuf::from("/nonexistent"),
            record,
        ))
    }

    #[test]
    fn the_serving_epoch_moves_when_a_pod_comes_goes_or_gets_its_address_only() {
        let table = PodTable::default();
        let a = handle("a");
        let mut last = table.serving_epoch();
        let mut moved = |table: &PodTable| {
            let now = table.serving_epoch();
            let moved = now != last;
            last = now;
            moved
        };
        table.insert(a.clone());
        assert!(moved(&table), "insert");
        table.set_ip(&a, "10.42.0.7");
        assert!(moved(&table), "address");
        // Looking does not move it.
        let _ = table.by_ip("10.42.0.7");
        let _ = table.all();
        a.update(|r| r.initialized = true);
        assert!(!moved(&table), "reads and record changes");
        table.remove(&a);
        assert!(moved(&table), "remove");
        assert!(table.by_ip("10.42.0.7").is_none());
    }
}
