//! The scheduler: places pods that have no `spec.nodeName` onto nodes, and
//! talks to the rest of the cluster only through the API.
//!
//! - [`queue`]: active / back-off / unschedulable queues.
//! - [`cache`]: nodes and the pods placed on them (bound and assumed),
//!   fed by watches.
//! - [`framework`]: plugin traits, [`framework::Status`], the cycle.
//! - [`plugins`]: the filter and score plugins, one per file.
//! - [`config`]: the scoring strategy and weights.
//!
//! One task runs the cycles: under the cache lock it filters every node,
//! scores every feasible one, picks the best and *assumes* the pod there,
//! so the next cycle already counts it. Pods of one priority that wait
//! together are placed as a batch ([`batch`]): each still goes to its best
//! node, in an order that packs nodes tighter. Bindings
//! (`pods/binding`) are sent by separate tasks, a bounded number at once; a
//! refused binding forgets the assumption and retries the pod after a
//! back-off. A pod that fits nowhere gets `PodScheduled=False` with reason
//! `Unschedulable` and a `FailedScheduling` event, and is tried again when
//! a node appears or changes or a placed pod goes away. Before that, a pod
//! that may preempt looks for pods of lower priority to remove
//! ([`preemption`]): the victims are deleted, the pod is nominated to their
//! node (`status.nominatedNodeName`), and their going retries it; the
//! queue's priority order puts it before the pods it outranks.

pub mod batch;
pub mod cache;
pub mod config;
pub mod framework;
pub mod plugins;
pub mod preemption;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::json;

use self::cache::{Cache, NodeChange};
use self::config::{DEFAULT_SCHEDULER_NAME, ScoringStrategy, StrategyType};
use self::framework::{Binder, Framework, PodInfo, ScheduleError};
use self::queue::SchedulingQueue;

pub use self::plugins::taint_toleration::tolerates;

/// Whether `pod` may run on `node` by its node selector and affinity and by
/// the node's taints: the placement rules of the scheduler's filters that
/// a controller placing pods itself (the DaemonSet controller) follows
/// too, so the two never disagree.
pub fn admits_by_affinity_and_taints(pod: &Pod, node: &Node) -> bool {
    use self::framework::{FilterPlugin, NodeInfo};
    use self::plugins::{node_affinity::NodeAffinity, taint_toleration::TaintToleration};
    let pod = PodInfo::from_pod(pod);
    let node = NodeInfo::from_node(node);
    NodeAffinity.filter(&pod, &node).is_success()
        && TaintToleration.filter(&pod, &node).is_success()
}

/// Everything the scheduler needs besides its API client.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this are ours.
    pub scheduler_name: String,
    /// How `NodeResourcesFit` scores.
    pub strategy: ScoringStrategy,
    /// Score weights of `NodeResourcesFit` and `NodeAffinity`.
    pub resources_fit_weight: i64,
    pub node_affinity_weight: i64,
    /// Weight of `NodeResourcesBalancedAllocation` (0 turns it off).
    pub balanced_allocation_weight: i64,
    /// Back-off after a failed attempt: first delay and cap.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Most bindings in flight at once.
    pub max_binds_in_flight: usize,
    /// How often every unschedulable pod is retried even without a
    /// cluster change (a safety net against a missed event).
    pub resync: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            strategy: ScoringStrategy::default(),
            resources_fit_weight: 1,
            node_affinity_weight: 2,
            balanced_allocation_weight: 1,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            max_binds_in_flight: 256,
            resync: Duration::from_secs(60),
        }
    }
}

impl SchedulerConfig {
    /// Applies what a configuration file sets.
    pub fn with_file(mut self, file: config::FileConfig) -> Self {
        if let Some(n) = file.scheduler_name {
            self.scheduler_name = n;
        }
        if let Some(s) = file.strategy {
            self.strategy = s;
        }
        if let Some(w) = file.resources_fit_weight {
            self.resources_fit_weight = w;
        }
        if let Some(w) = file.node_affinity_weight {
            self.node_affinity_weight = w;
        }
        if let Some(w) = file.balanced_allocation_weight {
            self.balanced_allocation_weight = w;
        }
        self
    }

    /// The plugins of this configuration.
    pub fn framework(&self) -> Framework {
        use plugins::*;
        Framework {
            filters: vec![
                Box::new(node_unschedulable::NodeUnschedulable),
                Box::new(node_affinity::NodeAffinity),
                Box::new(taint_toleration::TaintToleration),
                Box::new(node_resources::NodeResourcesFit {
                    strategy: self.strategy.clone(),
                }),
            ],
            scores: vec![
                (
                    Box::new(node_resources::NodeResourcesFit {
                        strategy: self.strategy.clone(),
                    }),
                    self.resources_fit_weight,
                ),
                (
                    Box::new(node_affinity::NodeAffinity),
                    self.node_affinity_weight,
                ),
                (
                    Box::new(balanced_allocation::BalancedAllocation {
                        resources: self.strategy.resources.iter().map(|r| r.0).collect(),
                    }),
                    self.balanced_allocation_weight,
                ),
            ],
        }
    }
}

/// Binds through the `pods/binding` subresource.
struct ApiBinder {
    client: kube::Client,
}

#[async_trait::async_trait]
impl Binder for ApiBinder {
    async fn bind(&self, pod: &PodInfo, node: &str) -> Result<(), String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        pods.create_subresource::<_, serde_json::Value>(
            "binding",
            &pod.name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }
}

/// What the scheduler's tasks share.
struct Shared {
    client: kube::Client,
    config: SchedulerConfig,
    cache: Mutex<Cache>,
    queue: SchedulingQueue,
    binder: Arc<dyn Binder>,
    binds: Arc<tokio::sync::Semaphore>,
    /// `Scheduled` events (bounded; dropped rather than slowing binds).
    events: crate::events::Recorder,
}

/// Runs the scheduler until `shutdown` resolves; bindings in flight are
/// finished before it returns.
pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shared = Arc::new(Shared {
        binder: Arc::new(ApiBinder {
            client: client.clone(),
        }),
        binds: Arc::new(tokio::sync::Semaphore::new(
            config.max_binds_in_flight.max(1),
        )),
        queue: SchedulingQueue::new(config.backoff_initial, config.backoff_max),
        cache: Mutex::new(Cache::default()),
        events: crate::events::Recorder::start(client.clone(), config.scheduler_name.clone(), None),
        client,
        config,
    });
    tracing::info!(
        scheduler = %shared.config.scheduler_name,
        strategy = ?shared.config.strategy.kind,
        "scheduler starting"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let nodes = tokio::spawn(watch_nodes(shared.clone(), stopped()));
    let pods = tokio::spawn(watch_pods(shared.clone(), stopped()));
    let resync = {
        let shared = shared.clone();
        let stop = stopped();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(shared.config.resync);
            tick.tick().await;
            let mut stop = std::pin::pin!(stop);
            loop {
                tokio::select! {
                    _ = tick.tick() => shared.queue.move_all(),
                    _ = &mut stop => break,
                }
            }
        })
    };
    let scheduling = tokio::spawn(schedule_loop(shared.clone()));
    shutdown.await;
    let _ = stop_tx.send(true);
    shared.queue.close();
    let _ = scheduling.await;
    let _ = tokio::join!(nodes, pods, resync);
    // Every binding task holds a permit: taking them all waits for them.
    let _ = shared
        .binds
        .acquire_many(shared.config.max_binds_in_flight.max(1) as u32)
        .await;
    tracing::info!("scheduler stopped");
}

/// Keeps the cache's nodes current; a relevant change retries the
/// unschedulable pods.
async fn watch_nodes(shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let api: Api<Node> = Api::all(shared.client.clone());
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut listed: Option<Vec<String>> = None;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = &mut shutdown => return,
        };
        let Some(event) = event else { return };
        match event {
            Ok(watcher::Event::Init) => listed = Some(Vec::new()),
            Ok(watcher::Event::InitApply(node)) => {
                if let Some(l) = listed.as_mut() {
                    l.push(node.metadata.name.clone().unwrap_or_default());
                }
                shared.cache.lock().apply_node(&node);
            }
            Ok(watcher::Event::InitDone) => {
                let seen = listed.take().unwrap_or_default();
                let mut cache = shared.cache.lock();
                for name in cache.node_names() {
                    if !seen.contains(&name) {
                        cache.remove_node(&name);
                    }
                }
                drop(cache);
                shared.queue.move_all();
            }
            Ok(watcher::Event::Apply(node)) => {
                let change = shared.cache.lock().apply_node(&node);
                if change == NodeChange::Relevant {
                    shared.queue.move_all();
                }
            }
            Ok(watcher::Event::Delete(node)) => {
                if let Some(name) = node.metadata.name.as_deref() {
                    shared.cache.lock().remove_node(name);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduler: node watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Bound pods go to the cache, pods waiting for us to the queue.
async fn watch_pods(shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut listed: Option<std::collections::HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            e = stream.next() => e,
            _ = &mut shutdown => return,
        };
        let Some(event) = event else { return };
        match event {
            Ok(watcher::Event::Init) => listed = Some(Default::default()),
            Ok(watcher::Event::InitApply(pod)) => {
                if let (Some(l), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                    l.insert(uid);
                }
                apply_pod(&shared, &pod);
            }
            Ok(watcher::Event::InitDone) => {
                // Pods that went away while the watch was down.
                let seen = listed.take().unwrap_or_default();
                let mut cache = shared.cache.lock();
                let mut freed = false;
                for uid in cache.pod_uids() {
                    if !seen.contains(&uid) && cache.is_bound(&uid) {
                        freed |= cache.remove_pod(&uid);
                        shared.queue.delete(&uid);
                    }
                }
                drop(cache);
                if freed {
                    shared.queue.move_all();
                }
            }
            Ok(watcher::Event::Apply(pod)) => apply_pod(&shared, &pod),
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    shared.queue.delete(uid);
                    if shared.cache.lock().remove_pod(uid) {
                        shared.queue.move_all();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduler: pod watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn apply_pod(shared: &Shared, pod: &Pod) {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let terminal = matches!(phase, Some("Succeeded" | "Failed"));
    let spec = pod.spec.as_ref();
    match spec
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        Some(node) => {
            shared.queue.delete(uid);
            if terminal {
                // A finished pod no longer holds its requests.
                if shared.cache.lock().remove_pod(uid) {
                    shared.queue.move_all();
                }
            } else {
                shared.cache.lock().apply_bound_pod(pod, node);
            }
        }
        None => {
            let ours = spec
                .and_then(|s| s.scheduler_name.as_deref())
                .unwrap_or(DEFAULT_SCHEDULER_NAME)
                == shared.config.scheduler_name;
            if !ours || terminal || pod.metadata.deletion_timestamp.is_some() {
                shared.queue.delete(uid);
                return;
            }
            // Assumed and being bound: the watch will show it bound.
            if shared.cache.lock().is_placed(uid) {
                return;
            }
            shared.queue.add(PodInfo::from_pod(pod));
        }
    }
}

/// Most pods placed together (see [`batch`]), with the most-allocated
/// strategy (the others place one pod at a time). Larger batches pack a little
/// tighter (`bench/packing-sim.py`'s batch runs: 1.034× the lower bound at
/// 16, 1.023× at 64) but hold the cache lock longer.
const BATCH_MAX: usize = 64;

/// A batch of at least this many pods means pods are arriving in a burst:
/// the scheduler then waits [`BATCH_LINGER`] for more of them before
/// placing it. Pods created one at a time, or by a few clients, never wait.
const BURST: usize = 8;

/// How long a burst's batch waits to fill (see [`BURST`]).
const BATCH_LINGER: Duration = Duration::from_millis(3);

/// The scheduling cycles: the pods of one priority waiting together are
/// placed as a batch, then each is bound (or reported unschedulable).
async fn schedule_loop(shared: Arc<Shared>) {
    let framework = shared.config.framework();
    let resources = shared.config.strategy.resources.clone();
    // Only packing gains from the batch's order; spreading places each pod
    // on the emptiest node whatever the order, and there every pod of a
    // batch would share one best node, to be looked for again after each
    // placement.
    let pack = shared.config.strategy.kind == StrategyType::MostAllocated;
    let max = if pack { BATCH_MAX } else { 1 };
    while let Some(mut popped) = shared.queue.pop_batch(max).await {
        if pack && popped.len() >= BURST && popped.len() < BATCH_MAX {
            tokio::time::sleep(BATCH_LINGER).await;
            shared.queue.pop_more(&mut popped, BATCH_MAX);
        }
        let (popped, placements) = {
            let mut cache = shared.cache.lock();
            // A pod deleted, or bound by someone else, while the batch
            // waited has left the queue (the pod watch saw it): it is not
            // placed.
            popped.retain(|p| shared.queue.place(&p.info.uid) == Some(queue::Place::InFlight));
            let pods: Vec<Arc<PodInfo>> = popped.iter().map(|p| p.info.clone()).collect();
            let placements = batch::place(&framework, &resources, &pods, &mut cache);
            (popped, placements)
        };
        for (i, decision) in placements {
            if !decide(&shared, &framework, &popped[i], decision).await {
                return;
            }
        }
        // Let the watches and bindings run between cycles.
        tokio::task::yield_now().await;
    }
}

/// Acts on one pod's scheduling decision: binds it, or reports it
/// unschedulable (after looking for pods to preempt). False when the
/// scheduler is shutting down.
async fn decide(
    shared: &Arc<Shared>,
    framework: &Framework,
    popped: &queue::Popped,
    decision: Result<framework::ScheduleResult, ScheduleError>,
) -> bool {
    let pod = popped.info.clone();
    match decision {
        Ok(result) => {
            let Ok(permit) = shared.binds.clone().acquire_owned().await else {
                return false;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                match shared.binder.bind(&pod, &result.node).await {
                    Ok(()) => {
                        shared.queue.done(&pod.uid);
                        shared.events.record(
                            &crate::events::pod_reference(&pod.namespace, &pod.name, &pod.uid),
                            crate::events::EventType::Normal,
                            "Scheduled",
                            format!(
                                "Successfully assigned {}/{} to {}",
                                pod.namespace, pod.name, result.node
                            ),
                        );
                    }
                    Err(e) => {
                        tracing::info!(pod = %pod.key(), node = %result.node, error = %e,
                            "scheduler: binding failed; retrying");
                        shared.cache.lock().forget(&pod.uid);
                        shared.queue.retry(&pod.uid);
                    }
                }
                drop(permit);
            });
        }
        Err(ScheduleError::Unfit(fit)) => {
            let mut message = fit.to_string();
            tracing::debug!(pod = %pod.key(), %message, "scheduler: pod does not fit");
            let preemption = {
                let mut cache = shared.cache.lock();
                let chosen = preemption::select(framework, &pod, &cache);
                for v in chosen.iter().flat_map(|p| &p.victims) {
                    cache.mark_terminating(&v.uid);
                }
                chosen
            };
            if let Some(p) = &preemption {
                message.push_str(&format!(
                    " preemption: {} pod(s) of lower priority removed from node {}.",
                    p.victims.len(),
                    p.node
                ));
            }
            shared.queue.unschedulable(&pod.uid, popped.cycle);
            if let Some(p) = preemption {
                let shared = shared.clone();
                let pod = pod.clone();
                tokio::spawn(async move { preempt(&shared, &pod, p).await });
            }
            let Ok(permit) = shared.binds.clone().acquire_owned().await else {
                return false;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                report_unschedulable(&shared, &pod, &message).await;
                drop(permit);
            });
        }
        Err(e @ ScheduleError::Internal { .. }) => {
            tracing::error!(pod = %pod.key(), error = %e, "scheduler: cycle failed");
            shared.queue.retry(&pod.uid);
        }
    }
    true
}

/// Carries out a preemption: nominates the node on the preemptor, then
/// deletes each victim (gracefully) with a `Preempted` event on it.
async fn preempt(shared: &Shared, pod: &PodInfo, p: preemption::Preemption) {
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    let nominate = json!({"status": {"nominatedNodeName": p.node}});
    if let Err(e) = pods
        .patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&nominate))
        .await
    {
        tracing::info!(pod = %pod.key(), error = %e, "scheduler: cannot nominate a node");
    }
    for v in &p.victims {
        tracing::info!(preemptor = %pod.key(), victim = %format!("{}/{}", v.namespace, v.name),
            node = %p.node, "scheduler: preempting");
        shared.events.record(
            &crate::events::pod_reference(&v.namespace, &v.name, &v.uid),
            crate::events::EventType::Normal,
            "Preempted",
            format!("Preempted by pod {} on node {}", pod.uid, p.node),
        );
        let victims: Api<Pod> = Api::namespaced(shared.client.clone(), &v.namespace);
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(v.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match victims.delete(&v.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::info!(victim = %v.name, error = %e, "scheduler: cannot delete a victim");
            }
        }
    }
}

/// `PodScheduled=False` with reason `Unschedulable` on the pod and a
/// `FailedScheduling` event, as Kubernetes reports it.
async fn report_unschedulable(shared: &Shared, pod: &PodInfo, message: &str) {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": now,
    }]}});
    if let Err(e) = pods
        .patch_status(
            &pod.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        tracing::info!(pod = %pod.key(), error = %e, "scheduler: cannot record PodScheduled=False");
    }
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(shared.client.clone(), &pod.namespace);
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", pod.name), "namespace": pod.namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace,
                           "name": pod.name, "uid": pod.uid},
        "reason": "FailedScheduling", "message": message, "type": "Warning",
        "source": {"component": shared.config.scheduler_name},
        "reportingComponent": shared.config.scheduler_name,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let event: k8s_openapi::api::core::v1::Event = match serde_json::from_value(event) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "scheduler: building an event");
            return;
        }
    };
    if let Err(e) = events.create(&PostParams::default(), &event).await {
        tracing::info!(pod = %pod.key(), error = %e, "scheduler: cannot record event");
    }
}
