//! The node lifecycle controller: notices nodes whose kubelet went silent,
//! taints them, and moves their pods elsewhere, as Kubernetes' node
//! lifecycle controller, taint-based eviction and pod garbage collector do
//! together.
//!
//! Every `monitor_period` it looks at each Node and its Lease in
//! `kube-node-lease`:
//!
//! - A node whose Lease (and status heartbeat) did not change within the
//!   grace period gets its Ready condition set to `Unknown`
//!   (`NodeStatusUnknown`, "Kubelet stopped posting node status."), and the
//!   Ready condition of its pods is set to `False`.
//! - A node whose Ready is `Unknown` carries `node.kubernetes.io/unreachable`
//!   taints (NoSchedule and NoExecute), one whose Ready is `False` carries
//!   `node.kubernetes.io/not-ready`; a Ready node carries neither.
//! - Pods on a node with NoExecute taints are deleted once their
//!   tolerations for those taints ran out (`TaintManagerEviction`); the API
//!   server gives every pod 300 s for both taints unless it says otherwise.
//! - A pod marked for deletion on a node that is not Ready can never be
//!   confirmed gone by its kubelet: once its grace period is over it is
//!   removed at once (grace 0). Pods bound to a Node that no longer exists
//!   are removed likewise after a quarantine.
//!
//! Heartbeats are judged by this controller's own clock (when it *saw* a
//! change), never by comparing the kubelet's timestamps with ours.
//!
//! Nodes and Leases are read from caches their watches keep, and pods from
//! the controllers' shared pod cache, not listed every period: a LIST per pass would cost the API server an encode (and
//! us a decode) of every Node and Lease each `monitor_period`. A pass waits
//! for both caches' first list, and is skipped while a watch is failing
//! (as a failed LIST skipped it): a cache that stopped seeing heartbeats
//! would make live nodes look silent.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::time::Instant;

use super::ControllerError;
use crate::events::{EventType, Recorder, reference};
use crate::scheduler::tolerates;

/// The taint of a node whose kubelet stopped posting status.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node that reports itself not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Message of the Ready condition of a silent node, as Kubernetes words it.
pub const STATUS_UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";

/// The controller's timing (`--node-monitor-period`,
/// `--node-monitor-grace-period`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// How often nodes are checked.
    pub monitor_period: Duration,
    /// How long a node may stay silent before it is marked unreachable.
    pub grace_period: Duration,
    /// How long a pod must stay bound to a missing Node before it is
    /// removed (a Node being re-registered gets this long).
    pub orphan_quarantine: Duration,
}

impl Default for NodeLifecycleConfig {
    /// Kubernetes' defaults: check every 5 s, 40 s grace, 40 s quarantine.
    fn default() -> Self {
        NodeLifecycleConfig {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(40),
            orphan_quarantine: Duration::from_secs(40),
        }
    }
}

/// How often pods bound to missing nodes are looked for (Kubernetes' pod
/// garbage collector runs every 20 s).
const ORPHAN_SCAN: Duration = Duration::from_secs(20);

/// The namespace of the nodes' Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// How long a watch that failed is distrusted when no event shows it back:
/// a watch that resumes where it stopped shows nothing until something
/// changes. Longer than the longest retry delay of kube's default back-off
/// (30 s), so a watch that stays down stays distrusted.
const DISTRUST_FAILED_WATCH: Duration = Duration::from_secs(60);

/// Whether a cache's watch has shown every change lately: not after it
/// failed, until an event (or [`DISTRUST_FAILED_WATCH`]) shows it back.
#[derive(Default)]
struct WatchHealth {
    failed_at: parking_lot::Mutex<Option<Instant>>,
}

impl WatchHealth {
    fn saw_event(&self) {
        *self.failed_at.lock() = None;
    }

    fn failed(&self) {
        *self.failed_at.lock() = Some(Instant::now());
    }

    fn trusted(&self) -> bool {
        self.failed_at
            .lock()
            .is_none_or(|t| t.elapsed() >= DISTRUST_FAILED_WATCH)
    }
}

/// What was last seen of a node's heartbeat, and when.
struct Probe {
    heartbeat: String,
    seen_at: Instant,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    ready: Option<String>,
}

struct Monitor {
    client: kube::Client,
    cfg: NodeLifecycleConfig,
    /// Every Node, fed by the node watch.
    nodes: Store<Node>,
    /// Every Lease in [`LEASE_NAMESPACE`], fed by the lease watch.
    leases: Store<Lease>,
    node_watch: Arc<WatchHealth>,
    lease_watch: Arc<WatchHealth>,
    recorder: Recorder,
    probes: HashMap<String, Probe>,
    /// Every pod, from the controllers' shared pod watch.
    pods: Arc<super::PodCache>,
    /// Pods (by uid) bound to a missing node, and since when.
    orphans: HashMap<String, Instant>,
    last_orphan_scan: Option<Instant>,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    cfg: NodeLifecycleConfig,
    cache: Arc<super::PodCache>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    use futures::StreamExt as _;
    let stop = crate::shutdown::Stop::new(shutdown);
    // Caches of every Node and node Lease, kept by their watches, instead
    // of two LISTs every period.
    let (nodes, node_writer) = reflector::store();
    let (leases, lease_writer) = reflector::store();
    let node_watch = Arc::new(WatchHealth::default());
    let lease_watch = Arc::new(WatchHealth::default());
    let recorder = Recorder::start(client.clone(), "node-controller", None);
    // A Node that goes is reported as its watch shows it go, whether or not
    // a pass had looked at it yet.
    let on_delete = recorder.clone();
    let node_feed = follow(
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(node_writer)
            .inspect(
                move |event: &Result<watcher::Event<Node>, watcher::Error>| {
                    if let Ok(watcher::Event::Delete(node)) = event {
                        let name = node.name_any();
                        on_delete.record(
                            &reference(node),
                            EventType::Normal,
                            "RemovingNode",
                            format!("Node {name} event: Removing Node {name} from Controller"),
                        );
                    }
                },
            ),
        "node",
        node_watch.clone(),
        stop.wait(),
    );
    let lease_feed = follow(
        watcher(
            Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(lease_writer),
        "lease",
        lease_watch.clone(),
        stop.wait(),
    );
    let m = Monitor {
        recorder,
        client,
        cfg,
        nodes,
        leases,
        node_watch,
        lease_watch,
        probes: HashMap::new(),
        pods: cache,
        orphans: HashMap::new(),
        last_orphan_scan: None,
    };
    tokio::join!(node_feed, lease_feed, m.run(stop.wait()));
}

/// Drives one cache's watch until `stop`, noting its failures and events
/// in `health`.
async fn follow<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    what: &'static str,
    health: Arc<WatchHealth>,
    stop: impl Future<Output = ()>,
) {
    use futures::StreamExt;
    let mut events = std::pin::pin!(events.take_until(stop));
    while let Some(event) = events.next().await {
        match event {
            Ok(_) => health.saw_event(),
            Err(e) => {
                health.failed();
                tracing::warn!(error = %e, "node lifecycle: {what} watch failed; retrying");
            }
        }
    }
}

/// What identifies one heartbeat: the Lease's renew time and the Ready
/// condition's heartbeat time (either moving means the kubelet lives).
fn heartbeat(node: &Node, lease: Option<&Lease>) -> String {
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let status = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    format!("{renew}|{status}")
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The node's conditions with Ready set to `Unknown`, as Kubernetes marks
/// a node whose kubelet went silent (or never spoke).
pub fn conditions_unknown(node: &Node, now: &Time) -> Vec<NodeCondition> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) => {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some(STATUS_UNKNOWN_MESSAGE.into());
            c.last_transition_time = Some(now.clone());
        }
        None => conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusNeverUpdated".into()),
            message: Some("Kubelet never posted node status.".into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        }),
    }
    conditions
}

/// The taints a node should carry for its Ready status: other taints are
/// kept as they are, and a taint already present keeps its `timeAdded`.
/// As in Kubernetes, only NoExecute taints carry `timeAdded` (eviction
/// times count from it).
pub fn desired_taints(current: &[Taint], ready: Option<&str>, now: &Time) -> Vec<Taint> {
    let managed = |t: &Taint| {
        (t.key == UNREACHABLE || t.key == NOT_READY)
            && (t.effect == "NoSchedule" || t.effect == "NoExecute")
    };
    let key = match ready {
        Some("Unknown") => Some(UNREACHABLE),
        Some("False") => Some(NOT_READY),
        _ => None,
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || Some(t.key.as_str()) == key)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.into(),
                    value: None,
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then(|| now.clone()),
                });
            }
        }
    }
    out
}

/// When a pod on a node with these taints must be evicted: `None` while
/// its tolerations last forever. An untolerated NoExecute taint evicts at
/// once; otherwise the shortest `tolerationSeconds` among the tolerations
/// used counts from the time the taints were added (Kubernetes' rule).
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_execute.is_empty() {
        return None;
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let since = no_execute
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|a| a.0))
        .min()
        .unwrap_or(now);
    let mut shortest: Option<i64> = None;
    for taint in &no_execute {
        let used: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Some(since.min(now));
        }
        for t in used {
            if let Some(s) = t.toleration_seconds {
                shortest = Some(shortest.map_or(s, |m| m.min(s)));
            }
        }
    }
    let secs = shortest?.max(0);
    Some(
        since
            .checked_add(SignedDuration::from_secs(secs))
            .unwrap_or(now),
    )
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn pod_ready_status(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

fn uid_precondition(pod: &Pod) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

impl Monitor {
    /// Runs a pass every `monitor_period` until `shutdown`, the first once
    /// both caches hold a complete list (an empty cache would make every
    /// node new and every bound pod an orphan).
    async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let ready = async {
            self.nodes.wait_until_ready().await?;
            self.leases.wait_until_ready().await
        };
        tokio::select! {
            r = ready => if r.is_err() {
                return;
            },
            _ = &mut shutdown => return,
        }
        let mut tick =
            tokio::time::interval(self.cfg.monitor_period.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut shutdown => return,
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "node lifecycle pass failed; retrying next period");
            }
        }
    }

    async fn pass(&mut self) -> Result<(), ControllerError> {
        // A failing watch may have missed heartbeats: judging nodes by its
        // cache could mark live nodes silent. Skipped as a failed LIST was.
        if !self.node_watch.trusted() || !self.lease_watch.trusted() {
            return Err(ControllerError::Invalid(
                "the node or lease watch is failing".into(),
            ));
        }
        // From the watch-fed caches, not two LISTs every period (a LIST
        // costs the API server a decode of every Node and Lease). In name
        // order, as a LIST returned them.
        let mut nodes = self.nodes.state();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let leases: HashMap<String, Arc<Lease>> = self
            .leases
            .state()
            .into_iter()
            .map(|l| (l.name_any(), l))
            .collect();

        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        let gone: Vec<String> = self
            .probes
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        // Their `RemovingNode` event came from the node watch.
        for name in gone {
            self.probes.remove(&name);
        }

        for node in &nodes {
            let lease = leases.get(&node.name_any()).map(|l| &**l);
            if let Err(e) = self.monitor(node, lease).await {
                tracing::warn!(node = %node.name_any(), error = %e, "node check failed");
            }
        }

        if self
            .last_orphan_scan
            .is_none_or(|t| t.elapsed() >= ORPHAN_SCAN)
        {
            self.last_orphan_scan = Some(Instant::now());
            self.collect_orphans(&names).await?;
        }
        Ok(())
    }

    async fn monitor(&mut self, node: &Node, lease: Option<&Lease>) -> Result<(), ControllerError> {
        let name = node.name_any();
        let beat = heartbeat(node, lease);
        let now = Instant::now();
        let probe = self.probes.entry(name.clone()).or_insert_with(|| Probe {
            heartbeat: beat.clone(),
            seen_at: now,
            reference: reference(node),
            ready: ready_condition(node).map(|c| c.status.clone()),
        });
        if probe.heartbeat != beat {
            probe.heartbeat = beat;
            probe.seen_at = now;
        }
        probe.reference = reference(node);
        let silent = probe.seen_at.elapsed() >= self.cfg.grace_period;
        let previous = probe.ready.clone();

        let wall = Time(Timestamp::now());
        let mut ready = ready_condition(node).map(|c| c.status.clone());
        let mark_unknown = silent && ready.as_deref() != Some("Unknown");
        if mark_unknown {
            ready = Some("Unknown".into());
        }

        // Taints first: the cached resourceVersion makes this a
        // compare-and-swap (a copy older than the node fails with 409, and
        // the next period retries), and the status patch below would
        // change it.
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let taints = desired_taints(&current, ready.as_deref(), &wall);
        if taints != current {
            let mut updated = node.clone();
            updated.spec.get_or_insert_with(Default::default).taints =
                (!taints.is_empty()).then(|| taints.clone());
            let api: Api<Node> = Api::all(self.client.clone());
            api.replace(&name, &PostParams::default(), &updated).await?;
        }

        if mark_unknown {
            let conditions = conditions_unknown(node, &wall);
            let api: Api<Node> = Api::all(self.client.clone());
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"conditions": conditions}})),
            )
            .await?;
            tracing::info!(node = %name, "node stopped posting status; marked Unknown");
        }
        if ready != previous {
            let status = if ready.as_deref() == Some("True") {
                "NodeReady"
            } else {
                "NodeNotReady"
            };
            // A node first seen Ready is not news.
            if previous.is_some() || status == "NodeNotReady" {
                self.recorder.record(
                    &reference(node),
                    EventType::Normal,
                    status,
                    format!("Node {name} status is now: {status}"),
                );
            }
        }
        if let Some(p) = self.probes.get_mut(&name) {
            p.ready = ready.clone();
        }

        if ready.as_deref() == Some("True") || ready.is_none() {
            return Ok(());
        }
        // The node's pods from the shared pod cache, not a LIST.
        self.pods.listed().await;
        let pods: Vec<Arc<Pod>> = self
            .pods
            .all()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
            .collect();
        let now = Timestamp::now();
        for pod in pods.iter().map(|p| &**p) {
            let r = if is_terminating(pod) {
                self.finish_deletion(pod, now).await
            } else {
                self.mark_not_ready(pod).await?;
                match eviction_time(pod, &taints, now) {
                    Some(at) if at <= now => self.evict(pod).await,
                    _ => Ok(()),
                }
            };
            if let Err(e) = r {
                tracing::warn!(pod = %pod.name_any(), error = %e, "pod on an unhealthy node not handled");
            }
        }
        Ok(())
    }

    /// Sets the pod's Ready condition to False: its node cannot serve it.
    async fn mark_not_ready(&self, pod: &Pod) -> Result<(), ControllerError> {
        if pod_ready_status(pod).is_none_or(|s| s == "False") {
            return Ok(());
        }
        let now = Time(Timestamp::now());
        let conditions: Vec<PodCondition> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|mut c| {
                if c.type_ == "Ready" {
                    c.status = "False".into();
                    c.last_transition_time = Some(now.clone());
                }
                c
            })
            .collect();
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": conditions}})),
        )
        .await?;
        self.recorder.record(
            &reference(pod),
            EventType::Warning,
            "NodeNotReady",
            "Node is not ready".into(),
        );
        Ok(())
    }

    /// Deletes a pod whose tolerations of its node's NoExecute taints ran
    /// out (the kubelet, if it ever comes back, stops it).
    async fn evict(&self, pod: &Pod) -> Result<(), ControllerError> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        self.recorder.record(
            &reference(pod),
            EventType::Normal,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.retain(|c| c.type_ != "DisruptionTarget");
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByTaintManager".into()),
            message: Some("Taint manager: deleting due to NoExecute taint".into()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..PodCondition::default()
        });
        // The condition only explains the deletion; failing to write it
        // must not keep the pod on a dead node.
        let _ = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"conditions": conditions}})),
            )
            .await;
        match api.delete(&name, &uid_precondition(pod)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a pod marked for deletion whose grace period is over: its
    /// node is not Ready, so no kubelet will confirm it stopped.
    async fn finish_deletion(&self, pod: &Pod, now: Timestamp) -> Result<(), ControllerError> {
        let Some(marked) = pod.metadata.deletion_timestamp.as_ref() else {
            return Ok(());
        };
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(0)
            .max(0);
        // The deletion timestamp already includes the grace period in
        // Kubernetes; wkube stores when the delete was asked, so add it.
        let due = marked
            .0
            .checked_add(SignedDuration::from_secs(grace))
            .unwrap_or(now);
        if due > now {
            return Ok(());
        }
        self.force_delete(pod).await
    }

    async fn force_delete(&self, pod: &Pod) -> Result<(), ControllerError> {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut dp = uid_precondition(pod);
        dp.grace_period_seconds = Some(0);
        tracing::info!(pod = %format!("{ns}/{}", pod.name_any()), "force-deleting a pod its node cannot confirm");
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes pods bound to Nodes that stayed missing for the quarantine.
    async fn collect_orphans(&mut self, nodes: &HashSet<String>) -> Result<(), ControllerError> {
        // Every bound pod from the shared pod cache, not a LIST.
        self.pods.listed().await;
        let pods = self.pods.all();
        let mut still = HashMap::new();
        for pod in pods.iter().map(|p| &**p) {
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if bound.is_empty() || nodes.contains(&bound) {
                continue;
            }
            let uid = pod.uid().unwrap_or_default();
            let since = self.orphans.get(&uid).copied().unwrap_or_else(Instant::now);
            if since.elapsed() >= self.cfg.orphan_quarantine {
                if let Err(e) = self.force_delete(pod).await {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "orphaned pod not removed");
                    still.insert(uid, since);
                }
            } else {
                still.insert(uid, since);
            }
        }
        self.orphans = still;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: effect.into(),
            time_added: added.map(|s| Time(at(s))),
        }
    }

    fn pod_tolerating(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn a_silent_node_gets_both_unreachable_taints_and_keeps_others() {
        let now = Time(at(0));
        let other = taint("dedicated", "NoSchedule", None);
        let t = desired_taints(std::slice::from_ref(&other), Some("Unknown"), &now);
        assert_eq!(
            t,
            vec![
                other.clone(),
                taint(UNREACHABLE, "NoSchedule", None),
                taint(UNREACHABLE, "NoExecute", Some(0)),
            ]
        );
        // Seen again later: the time it was added stays.
        let later = desired_taints(&t, Some("Unknown"), &Time(at(60)));
        assert_eq!(later, t);
        // Ready again: only the foreign taint is left.
        assert_eq!(desired_taints(&t, Some("True"), &now), vec![other]);
    }

    #[test]
    fn a_node_reporting_not_ready_swaps_to_the_not_ready_taints() {
        let now = Time(at(5));
        let unreachable = desired_taints(&[], Some("Unknown"), &Time(at(0)));
        let t = desired_taints(&unreachable, Some("False"), &now);
        assert_eq!(
            t,
            vec![
                taint(NOT_READY, "NoSchedule", None),
                taint(NOT_READY, "NoExecute", Some(5)),
            ]
        );
    }

    #[test]
    fn eviction_waits_for_the_shortest_toleration() {
        let taints = [
            taint(UNREACHABLE, "NoSchedule", None),
            taint(UNREACHABLE, "NoExecute", Some(10)),
        ];
        let pod = pod_tolerating(vec![tol(UNREACHABLE, Some(300)), tol(UNREACHABLE, Some(5))]);
        assert_eq!(eviction_time(&pod, &taints, at(11)), Some(at(15)));
    }

    #[test]
    fn an_untolerated_no_execute_taint_evicts_at_once() {
        let taints = [taint(UNREACHABLE, "NoExecute", Some(10))];
        let pod = pod_tolerating(vec![tol(NOT_READY, Some(300))]);
        assert_eq!(eviction_time(&pod, &taints, at(11)), Some(at(10)));
    }

    #[test]
    fn a_toleration_without_seconds_keeps_the_pod_forever() {
        let taints = [taint(UNREACHABLE, "NoExecute", Some(10))];
        let pod = pod_tolerating(vec![tol(UNREACHABLE, None)]);
        assert_eq!(eviction_time(&pod, &taints, at(1000)), None);
        // NoSchedule taints never evict.
        let pod = pod_tolerating(vec![]);
        assert_eq!(
            eviction_time(&pod, &[taint(UNREACHABLE, "NoSchedule", None)], at(0)),
            None
        );
    }

    #[test]
    fn a_silent_node_is_marked_unknown_with_kubernetes_wording() {
        let mut node = Node::default();
        let now = Time(at(0));
        let c = conditions_unknown(&node, &now);
        assert_eq!(c[0].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        node.status = Some(k8s_openapi::api::core::v1::NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_heartbeat_time: Some(Time(at(-50))),
                ..NodeCondition::default()
            }]),
            ..Default::default()
        });
        let c = conditions_unknown(&node, &now);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, "Unknown");
        assert_eq!(c[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(c[0].message.as_deref(), Some(STATUS_UNKNOWN_MESSAGE));
        assert_eq!(c[0].last_heartbeat_time, Some(Time(at(-50))));
    }
}
