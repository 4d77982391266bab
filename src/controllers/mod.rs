//! The controller manager: control loops that move the cluster's current
//! state to the desired one, talking only through the API.
//!
//! Each controller is `reconcile(object, ctx) -> Result<Action>`, level
//! based and idempotent, with a separate error policy (requeue with
//! back-off), run by `kube`'s controller runtime, which keeps watch-fed
//! caches and never reconciles one object twice at once.
//!
//! - [`replicaset`]: keeps `replicas` pods of a ReplicaSet's template.
//! - [`replicationcontroller`]: the same for ReplicationControllers, by
//!   the ReplicaSet's own pass.
//! - [`deployment`]: ReplicaSets per pod template, rolling updates and
//!   Recreate, and the status `kubectl rollout status` waits on.
//! - [`endpoints`]: the EndpointSlices and Endpoints of every Service with
//!   a selector, which the node proxies route by.
//! - [`job`]: pods run to completion, retries, deadlines, TTL.
//! - [`cronjob`]: Jobs on a cron schedule.
//! - [`daemonset`]: one pod per fitting node, rolling updates.
//! - [`nodelifecycle`]: marks silent nodes, taints them, evicts their pods.
//! - [`garbagecollector`]: deletes (or releases) what owners leave behind.
//! - [`customresourcedefinition`]: accepts CRDs' names, marks them
//!   Established, and deletes a deleted CRD's objects.
//! - [`ingress`]: where each Ingress the node proxies serve is reachable.
//! - [`gateway`]: the status of the Gateway API objects the proxies serve.
//! - [`disruption`]: PodDisruptionBudgets' status: healthy pods against
//!   the budget, and the disruptions the eviction subresource may spend.
//! - [`resourcequota`]: ResourceQuotas' `status.used`, recounted from
//!   what each namespace holds.
//! - [`podautoscaler`]: HorizontalPodAutoscalers: replicas that follow
//!   CPU, memory and request rates.
//! - [`namespace`]: empties a terminating namespace, then lets it go.
//! - [`serviceaccount`]: the `default` ServiceAccount of every namespace.
//! - [`leader`]: leader election on Leases, so that of several control
//!   planes only one runs each component.
//! - [`events`]: the Events controllers record.

pub mod cronjob;
pub mod customresourcedefinition;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod garbagecollector;
pub mod gateway;
pub mod ingress;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod podautoscaler;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod serviceaccount;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::controller::Action;

/// Why a reconcile failed; the error policy requeues it with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The controller reference an owner puts on what it creates (pods,
/// ReplicaSets, Jobs, revisions, slices): the garbage collector deletes
/// them with it, and adoption checks `controller`.
pub fn controller_ref<K>(
    owner: &K,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference
where
    K: kube::Resource<DynamicType = ()>,
{
    use kube::ResourceExt;
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Runs a built controller until its shutdown: every reconcile timed under
/// `name` in the controller metrics, and a failed one logged and retried
/// after a back-off that doubles with each failure of the same object
/// ([`Backoff`]) and starts over once it succeeds. The one tail every
/// controller shares.
pub async fn drive<K, C, F, Fut>(
    controller: kube::runtime::Controller<K>,
    name: &'static str,
    reconcile: F,
    ctx: Arc<C>,
) where
    K: Clone
        + kube::Resource<DynamicType = ()>
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    C: Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, ControllerError>> + Send + 'static,
{
    use futures::{FutureExt, StreamExt};
    let backoff = Arc::new(Backoff::default());
    let forget = backoff.clone();
    let reconcile = Arc::new(reconcile);
    let reconcile = move |obj: Arc<K>, ctx: Arc<C>| {
        let key = object_key(&*obj);
        let forget = forget.clone();
        reconcile(obj, ctx).map(move |r| {
            if r.is_ok() {
                forget.succeeded(&key);
            }
            r
        })
    };
    controller
        .run(
            crate::metrics::reconcile::timed(name, reconcile),
            move |obj: Arc<K>, e: &ControllerError, _ctx| {
                let delay = backoff.failed(&object_key(&*obj));
                tracing::warn!(error = %e, retry_in = ?delay, "{name} reconcile failed");
                Action::requeue(delay)
            },
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "{name} reconcile");
            }
        })
        .await;
}

fn object_key<K: kube::Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Per-object exponential back-off of failed reconciles: the first retry
/// after [`Backoff::BASE`], each next one twice as late, at most
/// [`Backoff::MAX`]; a success forgets the object.
#[derive(Default)]
pub struct Backoff {
    failures: parking_lot::Mutex<std::collections::HashMap<String, u32>>,
}

impl Backoff {
    pub const BASE: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(30);

    /// Records a failure of `key`; the delay before its retry.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock();
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Self::delay(*n)
    }

    /// Forgets the failures of `key`.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock();
        if !failures.is_empty() {
            failures.remove(key);
        }
    }

    /// The delay after the `n`th failure in a row (n ≥ 1).
    pub fn delay(n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(16);
        Self::BASE.saturating_mul(factor).min(Self::MAX)
    }
}

/// Requeue after a failure outside a reconcile's error path (a controller
/// that handles its own errors): soon, but not in a tight loop.
pub fn retry_later() -> Action {
    Action::requeue(Duration::from_secs(2))
}

/// Pod changes buffered per controller before the shared pod watch waits
/// for the slowest one.
const POD_EVENT_BUFFER: usize = 16_384;

/// A controller's feed of the shared pod watch: every pod as it is listed,
/// changed or deleted.
pub type PodFeed = futures::channel::mpsc::Receiver<Arc<Pod>>;

/// The shared pod watch as events, for a follower that must tell a
/// deletion from a change and know when the first list is complete (the
/// garbage collector).
#[derive(Clone, Debug)]
pub enum PodEvent {
    Applied(Arc<Pod>),
    Deleted(Arc<Pod>),
    /// Every pod has been listed once (after a start or a re-list).
    Listed,
}

/// A feed of [`PodEvent`]s.
pub type PodEvents = futures::channel::mpsc::Receiver<PodEvent>;

/// Every pod, by namespace and name, as the shared pod watch last showed
/// it: the cache controllers read instead of listing pods on each
/// reconcile. It is updated before the watch event reaches any controller,
/// so a reconcile woken by a pod change sees that change; and a controller
/// that counts pods waits for [`PodCache::listed`] first, so it never acts
/// on half a list (as Kubernetes' controllers wait for their informers to
/// sync).
#[derive(Default)]
pub struct PodCache {
    by_ns: parking_lot::RwLock<HashMap<String, HashMap<String, Arc<Pod>>>>,
    /// The pods seen by a re-list in progress: when it ends, the pods not
    /// among them (deleted while the watch was down) are dropped.
    relisting: parking_lot::Mutex<Option<HashSet<(String, String)>>>,
    /// Set once the first list is complete.
    listed: tokio::sync::watch::Sender<bool>,
}

impl PodCache {
    fn key(pod: &Pod) -> (String, String) {
        (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        )
    }

    fn apply(&self, pod: &Arc<Pod>) {
        let (ns, name) = Self::key(pod);
        self.by_ns
            .write()
            .entry(ns)
            .or_default()
            .insert(name, pod.clone());
    }

    fn delete(&self, pod: &Pod) {
        let (ns, name) = Self::key(pod);
        let mut by_ns = self.by_ns.write();
        if let Some(pods) = by_ns.get_mut(&ns) {
            pods.remove(&name);
            if pods.is_empty() {
                by_ns.remove(&ns);
            }
        }
    }

    fn begin_relist(&self) {
        *self.relisting.lock() = Some(HashSet::new());
    }

    /// A pod of a (re-)list: in the cache at once, and remembered.
    fn relisted(&self, pod: &Arc<Pod>) {
        self.apply(pod);
        if let Some(seen) = self.relisting.lock().as_mut() {
            seen.insert(Self::key(pod));
        }
    }

    fn end_relist(&self) {
        if let Some(seen) = self.relisting.lock().take() {
            let mut by_ns = self.by_ns.write();
            for (ns, pods) in by_ns.iter_mut() {
                pods.retain(|name, _| seen.contains(&(ns.clone(), name.clone())));
            }
            by_ns.retain(|_, pods| !pods.is_empty());
        }
        self.listed.send_replace(true);
    }

    /// Waits until every pod has been listed once (at once afterwards).
    pub async fn listed(&self) {
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|listed| *listed).await;
    }

    /// The pods of namespace `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.by_ns
            .read()
            .get(ns)
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every pod.
    pub fn all(&self) -> Vec<Arc<Pod>> {
        self.by_ns
            .read()
            .values()
            .flat_map(|pods| pods.values().cloned())
            .collect()
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn pod(ns: &str, name: &str) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        Arc::new(p)
    }

    #[tokio::test]
    async fn a_relist_shows_pods_at_once_and_drops_the_ones_it_did_not_see() {
        let cache = PodCache::default();
        cache.apply(&pod("a", "old"));
        cache.begin_relist();
        cache.relisted(&pod("a", "p1"));
        // Visible while the list is still going: a controller woken by
        // this pod's event sees it.
        assert_eq!(cache.in_namespace("a").len(), 2);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), cache.listed())
                .await
                .is_err()
        );
        cache.relisted(&pod("b", "p2"));
        cache.end_relist();
        cache.listed().await;
        let mut names: Vec<String> = cache
            .all()
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["p1", "p2"]);
    }
}

/// Runs every controller until `shutdown`.
///
/// Seven controllers follow pods. They share one watch, decoded once, as
/// Kubernetes' controller manager shares its informers: with a watch each,
/// every pod change would be encoded, sent and decoded seven times. The
/// fan-out is ours rather than kube-runtime's shared reflector, which
/// passes deletions on to no one and can stall a subscriber whose pod was
/// deleted before it looked the pod up.
pub async fn run(
    client: kube::Client,
    cache: Arc<PodCache>,
    autoscaler: podautoscaler::AutoscalerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let stop = crate::shutdown::Stop::new(shutdown);
    let mut feeds = Vec::new();
    let mut feed = || {
        let (tx, rx) = futures::channel::mpsc::channel(POD_EVENT_BUFFER);
        feeds.push(tx);
        rx
    };
    let (rs_pods, job_pods, ds_pods, ep_pods) = (feed(), feed(), feed(), feed());
    let (pdb_pods, quota_pods) = (feed(), feed());
    let rc_pods = feed();
    let (gc_tx, gc_pods) = futures::channel::mpsc::channel(POD_EVENT_BUFFER);
    let informer = share_pods(
        client.clone(),
        cache.clone(),
        feeds,
        vec![gc_tx],
        stop.wait(),
    );
    tokio::join!(
        informer,
        replicaset::run(client.clone(), rs_pods, cache.clone(), stop.wait()),
        replicationcontroller::run(client.clone(), rc_pods, cache.clone(), stop.wait()),
        deployment::run(client.clone(), stop.wait()),
        endpoints::run(client.clone(), ep_pods, cache.clone(), stop.wait()),
        job::run(client.clone(), job_pods, cache.clone(), stop.wait()),
        cronjob::run(client.clone(), stop.wait()),
        daemonset::run(client.clone(), ds_pods, cache.clone(), stop.wait()),
        disruption::run(client.clone(), pdb_pods, cache.clone(), stop.wait()),
        resourcequota::run(client.clone(), quota_pods, cache.clone(), stop.wait()),
        namespace::run(client.clone(), stop.wait()),
        garbagecollector::run(client.clone(), gc_pods, stop.wait()),
        serviceaccount::run(client.clone(), stop.wait()),
        ingress::run(client.clone(), stop.wait()),
        customresourcedefinition::run(client.clone(), stop.wait()),
        gateway::run(client.clone(), stop.wait()),
        podautoscaler::run(client, cache, autoscaler, stop.wait()),
    );
}

/// Watches every pod and hands each listed, changed or deleted pod to
/// every feed (and each event to every event feed), waiting when one is
/// full (its controller is behind) and dropping feeds whose controller has
/// stopped.
async fn share_pods(
    client: kube::Client,
    cache: Arc<PodCache>,
    mut feeds: Vec<futures::channel::mpsc::Sender<Arc<Pod>>>,
    mut event_feeds: Vec<futures::channel::mpsc::Sender<PodEvent>>,
    shutdown: impl Future<Output = ()>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    // No controller reads a pod's managedFields, and this cache holds
    // every pod of the cluster: dropped on arrival, they cost nothing
    // (kept, they were the largest part of an idle pod's memory here).
    let events = watcher(kube::Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(|p| p.metadata.managed_fields = None)
        .take_until(shutdown);
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(watcher::Event::Apply(pod)) => {
                let pod = Arc::new(pod);
                cache.apply(&pod);
                PodEvent::Applied(pod)
            }
            Ok(watcher::Event::InitApply(pod)) => {
                let pod = Arc::new(pod);
                cache.relisted(&pod);
                PodEvent::Applied(pod)
            }
            Ok(watcher::Event::Delete(pod)) => {
                cache.delete(&pod);
                PodEvent::Deleted(Arc::new(pod))
            }
            Ok(watcher::Event::InitDone) => {
                cache.end_relist();
                PodEvent::Listed
            }
            Ok(watcher::Event::Init) => {
                cache.begin_relist();
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "controllers: pod watch failed; retrying");
                continue;
            }
        };
        if let PodEvent::Applied(pod) | PodEvent::Deleted(pod) = &event {
            send_all(&mut feeds, pod).await;
        }
        send_all(&mut event_feeds, &event).await;
    }
}

/// Sends `item` to every feed, dropping those whose receiver is gone.
async fn send_all<T: Clone>(feeds: &mut Vec<futures::channel::mpsc::Sender<T>>, item: &T) {
    use futures::SinkExt;
    let mut stopped = Vec::new();
    for (i, feed) in feeds.iter_mut().enumerate() {
        if feed.send(item.clone()).await.is_err() {
            stopped.push(i);
        }
    }
    for i in stopped.into_iter().rev() {
        feeds.remove(i);
    }
}

/// Runs [`run`]'s controllers and the node lifecycle controller until
/// `shutdown`: everything the `kube-controller-manager` Lease guards.
pub async fn run_all(
    client: kube::Client,
    node_lifecycle: nodelifecycle::NodeLifecycleConfig,
    autoscaler: podautoscaler::AutoscalerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let stop = crate::shutdown::Stop::new(shutdown);
    // Filled by the shared pod watch that `run` starts; the node lifecycle
    // controller reads it too.
    let cache = Arc::new(PodCache::default());
    tokio::join!(
        run(client.clone(), cache.clone(), autoscaler, stop.wait()),
        nodelifecycle::run(client, node_lifecycle, cache, stop.wait()),
    );
}

/// The client's description of a served kind, for dynamic APIs over every
/// kind (the namespace controller and the garbage collector).
pub fn api_resource(kind: &crate::resources::Kind) -> kube::core::ApiResource {
    kube::core::ApiResource {
        group: kind.group.into(),
        version: kind.version.into(),
        api_version: kind.api_version(),
        kind: kind.kind.into(),
        plural: kind.plural.into(),
    }
}

/// `sel` as kube-core's selector; `None` for an operator Kubernetes does
/// not know (which admission refuses, so only a stored object written
/// around it can have one).
fn selector(sel: &LabelSelector) -> Option<kube::core::Selector> {
    kube::core::Selector::try_from(sel.clone()).ok()
}

/// A label selector in its query-string form (`a=b,c in (d),!e`); empty
/// for an empty or invalid one.
pub fn selector_query(sel: &LabelSelector) -> String {
    selector(sel).map(|s| s.to_string()).unwrap_or_default()
}

/// Whether `labels` satisfy `sel` (an empty or invalid selector matches
/// nothing, as for a ReplicaSet).
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    use kube::core::SelectorExt;
    selector(sel).is_some_and(|s| !s.selects_all() && s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use std::collections::BTreeMap;

    #[test]
    fn failed_reconciles_back_off_exponentially_per_object_until_one_succeeds() {
        let b = Backoff::default();
        let delays: Vec<Duration> = (0..4).map(|_| b.failed("ns/a")).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        // Another object starts from the beginning.
        assert_eq!(b.failed("ns/b"), Backoff::BASE);
        // A success starts the object over.
        b.succeeded("ns/a");
        assert_eq!(b.failed("ns/a"), Backoff::BASE);
        // The delay stops growing at the cap.
        assert_eq!(Backoff::delay(40), Backoff::MAX);
        assert_eq!(Backoff::delay(9), Duration::from_millis(25_600));
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            }]),
        };
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "a")])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "c")])
        ));
        assert!(!selector_matches(&sel, &labels(&[("tier", "a")])));
        assert!(!selector_matches(
            &LabelSelector::default(),
            &labels(&[("a", "b")])
        ));
        assert_eq!(selector_query(&sel), "app=web,tier in (a,b)");
        // An operator Kubernetes does not know selects nothing.
        let odd = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..LabelSelector::default()
        };
        assert!(!selector_matches(&odd, &labels(&[("tier", "a")])));
        assert_eq!(selector_query(&odd), "");
    }
}
