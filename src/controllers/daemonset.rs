//! The DaemonSet controller: one pod of the template on every node that
//! fits it (its `nodeSelector`, required node affinity and the taints it
//! tolerates), updated with `RollingUpdate` (at most `maxUnavailable`
//! nodes without an available pod) or `OnDelete`, with a ControllerRevision
//! per template and the status `kubectl rollout status` waits on.
//!
//! Daemon pods are placed by the scheduler like any other pod: each one
//! names its node in a required node affinity term (`matchFields
//! metadata.name In [node]`), and carries the tolerations Kubernetes gives
//! daemon pods, so a cordoned or not-ready node keeps its daemons.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodTemplateSpec,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::deployment::template_hash;
use super::replicaset::{Expectations, Expected, is_ready};
use super::{ControllerError, selector_query};
use crate::events::EventType::Normal;
use crate::events::record;

/// The name events from this controller carry.
const COMPONENT: &str = "daemonset-controller";

/// The label tying a daemon pod (and a ControllerRevision) to a template.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The taints every daemon pod tolerates (as in Kubernetes): a daemon
/// keeps running on a node that is unhealthy or cordoned.
const DAEMON_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

struct Ctx {
    client: kube::Client,
    /// Every node, fed by the node watch that also wakes the DaemonSets.
    nodes: Store<Node>,
    /// Every ControllerRevision, fed by their watch.
    revisions: Store<ControllerRevision>,
    /// Every pod, from the controllers' shared pod watch.
    pods: Arc<super::PodCache>,
    /// Per DaemonSet uid, the creates and deletes the pod cache has not
    /// shown yet: a DaemonSet is not acted on until they show, so a pass
    /// ahead of the cache does not start a second pod on a node.
    expected: Expectations,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: super::PodFeed,
    cache: Arc<super::PodCache>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let daemonsets: Api<DaemonSet> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(daemonsets, watcher::Config::default());
    // The node watch fills the node cache reconciles read, and a node
    // coming, going or changing labels or taints concerns every DaemonSet.
    let (node_store, writer) = reflector::store();
    let node_changes = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    // Its ControllerRevisions, likewise from a cache their watch fills.
    let (revision_store, writer) = reflector::store();
    let revision_changes = watcher(
        Api::<ControllerRevision>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let all = controller.store();
    let controller = controller
        .owns_shared_stream(pods)
        .owns_stream(revision_changes)
        .watches_stream(node_changes, move |_node: Node| {
            all.state()
                .iter()
                .map(|ds| ObjectRef::from_obj(&**ds))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        nodes: node_store,
        revisions: revision_store,
        pods: cache,
        expected: Expectations::default(),
    });
    super::drive(controller, "daemonset", reconcile, ctx).await;
}

/// The template's tolerations plus the daemon defaults it lacks.
fn daemon_tolerations(template: &PodTemplateSpec) -> Vec<Toleration> {
    let mut out = template
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    for (key, effect) in DAEMON_TOLERATIONS {
        let present = out.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
        });
        if !present {
            out.push(Toleration {
                key: Some((*key).into()),
                operator: Some("Exists".into()),
                effect: Some((*effect).into()),
                ..Toleration::default()
            });
        }
    }
    out
}

/// Whether a daemon pod of `template` belongs on `node`: its node
/// selector, required affinity and taints, judged by the scheduler's own
/// filter plugins.
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> bool {
    let mut spec = template.spec.clone().unwrap_or_default();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| Some(n) != node.metadata.name.as_deref())
    {
        return false;
    }
    spec.tolerations = Some(daemon_tolerations(template));
    let pod = Pod {
        metadata: ObjectMeta::default(),
        spec: Some(spec),
        status: None,
    };
    crate::scheduler::admits_by_affinity_and_taints(&pod, node)
}

/// The node a daemon pod is for: where it is bound, else the node its
/// affinity names.
fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Pins a pod to `node` through its required node affinity, replacing the
/// template's required terms (the node was already checked against them).
fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let mut node_affinity = affinity.node_affinity.take().unwrap_or_default();
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    });
    affinity.node_affinity = Some(node_affinity);
    affinity
}

fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Ready for at least `min_ready` seconds.
fn is_available(p: &Pod, min_ready: i32, now: Timestamp) -> bool {
    if min_ready <= 0 {
        return is_ready(p);
    }
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.as_ref())
        .is_some_and(|t| now.duration_since(t.0).as_secs() >= i64::from(min_ready))
}

/// `maxUnavailable` of `desired` nodes: a count or a percentage rounded
/// down; at least one, so a rollout always moves.
fn max_unavailable(v: Option<&IntOrString>, desired: i32) -> i32 {
    let n = match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            (i64::from(desired) * pct / 100) as i32
        }
        None => 1,
    };
    n.max(1)
}

fn revision_of(cr: &ControllerRevision) -> i64 {
    cr.revision
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.uid().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let selector = selector_query(&spec.selector);
    if selector.is_empty() {
        return Err(ControllerError::Invalid(format!(
            "daemonset {ns}/{name} has an empty selector"
        )));
    }
    let owned = |refs: &[OwnerReference]| {
        refs.iter()
            .any(|o| o.controller == Some(true) && o.uid == uid)
    };
    let template_json = serde_json::to_value(&spec.template).unwrap_or_default();
    let hash = template_hash(&template_json);
    sync_revisions(&ctx, &ds, &hash, &template_json, &owned).await?;

    // From the node cache, not a LIST of every node on every pass.
    let nodes: Vec<Arc<Node>> = ctx.nodes.state();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Its pods from the shared pod cache, not a LIST, once it is complete.
    ctx.pods.listed().await;
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| owned(p.owner_references()))
        .collect();
    let instant = Instant::now();
    {
        let listed: HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
        let live: HashSet<String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect();
        let satisfied = ctx
            .expected
            .observe(&uid, &live, &listed, instant, Expected::is_satisfied);
        if !satisfied {
            // The pod events still on their way wake it up again.
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
    }
    let now = Timestamp::now();
    let Plan {
        create: to_create,
        delete: to_delete,
        counts,
    } = plan(&spec, &hash, &nodes, &pods, now);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    let dp = DeleteParams::background();
    let deletes = to_delete
        .iter()
        .map(|p| pods_api.delete(p.metadata.name.as_deref().unwrap_or_default(), &dp));
    let deleted = futures::future::join_all(deletes).await;
    ctx.expected.record(
        &uid,
        Vec::new(),
        to_delete.iter().map(|p| p.name_any()).collect(),
        instant,
    );
    for r in deleted {
        match r {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let post = PostParams::default();
    let new_pods: Vec<Pod> = to_create
        .iter()
        .map(|node| new_pod(&ds, node, &hash))
        .collect();
    let results =
        futures::future::join_all(new_pods.iter().map(|p| pods_api.create(&post, p))).await;
    let names = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|p| p.name_any()))
        .collect();
    ctx.expected.record(&uid, names, Vec::new(), instant);
    for r in results {
        let pod = r?;
        let message = format!("Created pod: {}", pod.name_any());
        record(
            &ctx.client,
            COMPONENT,
            &*ds,
            Normal,
            "SuccessfulCreate",
            message,
        )
        .await;
    }
    for p in &to_delete {
        let message = format!("Deleted pod: {}", p.name_any());
        record(
            &ctx.client,
            COMPONENT,
            &*ds,
            Normal,
            "SuccessfulDelete",
            message,
        )
        .await;
    }

    let status = DaemonSetStatus {
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: None,
        current_number_scheduled: counts.current,
        desired_number_scheduled: counts.desired,
        number_available: Some(counts.available),
        number_misscheduled: counts.misscheduled,
        number_ready: counts.ready,
        number_unavailable: Some((counts.desired - counts.available).max(0)),
        observed_generation: ds.metadata.generation,
        updated_number_scheduled: Some(counts.updated),
    };
    if ds.status.as_ref() != Some(&status) {
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await?;
    }
    // Pods becoming available after minReadySeconds change no object:
    // look again then.
    if min_ready > 0 && counts.ready > counts.available {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Daemon counts for the status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    desired: i32,
    current: i32,
    misscheduled: i32,
    ready: i32,
    available: i32,
    updated: i32,
}

/// What one pass does: the nodes to create a daemon pod for, the pods to
/// delete, and the counts as they are now.
struct Plan<'a> {
    create: Vec<String>,
    delete: Vec<&'a Pod>,
    counts: Counts,
}

/// Works out a pass from the nodes and the DaemonSet's own pods, with
/// `hash` naming the current template.
fn plan<'a, P: std::borrow::Borrow<Pod>>(
    spec: &DaemonSetSpec,
    hash: &str,
    nodes: &[Arc<Node>],
    pods: &'a [P],
    now: Timestamp,
) -> Plan<'a> {
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut to_delete: Vec<&Pod> = Vec::new();
    for p in pods {
        let p: &'a Pod = p.borrow();
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if is_terminal(p) {
            // A daemon that exited is replaced, as Kubernetes does.
            to_delete.push(p);
            continue;
        }
        match target_node(p) {
            Some(n) => by_node.entry(n).or_default().push(p),
            None => to_delete.push(p),
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let mut to_create: Vec<String> = Vec::new();
    let mut counts = Counts::default();
    // Nodes whose daemon is of an old template: (its pod, available).
    let mut old: Vec<(&Pod, bool)> = Vec::new();
    let mut unavailable = 0;
    for node in nodes {
        let node: &Node = node;
        let node_name = node.name_any();
        let here = by_node.remove(&node_name).unwrap_or_default();
        if !should_run(&spec.template, node) {
            if !here.is_empty() {
                counts.misscheduled += 1;
                to_delete.extend(here);
            }
            continue;
        }
        counts.desired += 1;
        let Some(oldest) = here
            .iter()
            .min_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
            .copied()
        else {
            to_create.push(node_name);
            unavailable += 1;
            continue;
        };
        // One daemon per node: the oldest stays.
        to_delete.extend(here.iter().filter(|p| !std::ptr::eq(**p, oldest)));
        counts.current += 1;
        let is_avail = is_available(oldest, min_ready, now);
        if is_ready(oldest) {
            counts.ready += 1;
        }
        if is_avail {
            counts.available += 1;
        } else {
            unavailable += 1;
        }
        if oldest.labels().get(HASH_LABEL).map(String::as_str) == Some(hash) {
            counts.updated += 1;
        } else {
            old.push((oldest, is_avail));
        }
    }
    // Pods on nodes that no longer exist.
    to_delete.extend(by_node.into_values().flatten());

    if rolling && !old.is_empty() {
        let ru = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let budget = max_unavailable(ru.and_then(|r| r.max_unavailable.as_ref()), counts.desired);
        // Old pods that are not available cost nothing to replace; the
        // rest may go while fewer than maxUnavailable nodes lack one.
        let mut room = (budget - unavailable).max(0);
        for (pod, avail) in &old {
            if !avail {
                to_delete.push(pod);
            } else if room > 0 {
                to_delete.push(pod);
                room -= 1;
            }
        }
    }

    Plan {
        create: to_create,
        delete: to_delete,
        counts,
    }
}

/// Makes sure a ControllerRevision holds the current template (the newest
/// revision number, so `kubectl rollout history` and `undo` see it) and
/// drops old ones beyond `revisionHistoryLimit`.
async fn sync_revisions(
    ctx: &Ctx,
    ds: &DaemonSet,
    hash: &str,
    template: &serde_json::Value,
    owned: &impl Fn(&[OwnerReference]) -> bool,
) -> Result<(), ControllerError> {
    let ns = ds.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    // From the revision cache, not a LIST each pass. A lagging cache is
    // safe for finding the template's revision: its name is the
    // template's hash (a create it has not seen yet is a 409), and the
    // renumbering below carries the resourceVersion it read. It is not
    // safe for numbering: a cache that has not seen the last revision yet
    // would hand its number out again (two revisions numbered 1, and
    // `kubectl rollout history` shows one). So a new number, needed only
    // when the template changes, is taken past a fresh list.
    ctx.revisions
        .wait_until_ready()
        .await
        .map_err(|e| ControllerError::Invalid(format!("revision cache: {e}")))?;
    let mut revisions: Vec<ControllerRevision> = ctx
        .revisions
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()) && owned(r.owner_references()))
        .map(|r| (**r).clone())
        .collect();
    revisions.sort_by_key(revision_of);
    let max = revisions.last().map_or(0, revision_of);
    let listed_max = || async {
        let listed = api.list(&ListParams::default()).await?;
        Ok::<i64, kube::Error>(
            listed
                .items
                .iter()
                .filter(|r| owned(r.owner_references()))
                .map(revision_of)
                .max()
                .unwrap_or(0)
                .max(max),
        )
    };
    match revisions
        .iter()
        .position(|r| r.labels().get(HASH_LABEL).map(String::as_str) == Some(hash))
    {
        Some(i) => {
            let r = revisions.remove(i);
            if r.revision < max {
                // Back to an older template: it becomes the newest revision.
                let next = listed_max().await? + 1;
                let patch = json!({"metadata": {"resourceVersion": r.resource_version()},
                                   "revision": next});
                api.patch(
                    &r.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            }
        }
        None => {
            let mut labels = ds
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.into());
            let mut data = json!({"spec": {"template": template}});
            data["spec"]["template"]["$patch"] = json!("replace");
            let cr = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{hash}", ds.name_any())),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![super::controller_ref(ds)]),
                    ..ObjectMeta::default()
                },
                data: Some(RawExtension(data)),
                revision: listed_max().await? + 1,
            };
            match api.create(&PostParams::default(), &cr).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let excess = revisions.len().saturating_sub(limit);
    for r in revisions.iter().take(excess) {
        match api.delete(&r.name_any(), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The daemon pod of the current template for `node`.
fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.clone().unwrap_or_default();
    let mut spec = template.spec.clone().unwrap_or_default();
    let mut labels = meta.labels.take().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    spec.tolerations = Some(daemon_tolerations(&template));
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations.take(),
            owner_references: Some(vec![super::controller_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arcs(nodes: &[Node]) -> Vec<Arc<Node>> {
        nodes.iter().cloned().map(Arc::new).collect()
    }
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, Taint};
    use serde_json::Value;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Taint::default()
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn template(selector: &[(&str, &str)], tolerate: Option<&str>) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                node_selector: (!selector.is_empty()).then(|| {
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                tolerations: tolerate.map(|k| {
                    vec![Toleration {
                        key: Some(k.into()),
                        operator: Some("Exists".into()),
                        ..Toleration::default()
                    }]
                }),
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn daemons_run_on_nodes_that_fit_them() {
        let cases = [
            // (template, node, runs)
            (template(&[], None), node("a", &[], &[]), true),
            (
                template(&[("disk", "ssd")], None),
                node("a", &[("disk", "ssd")], &[]),
                true,
            ),
            (
                template(&[("disk", "ssd")], None),
                node("a", &[("disk", "hdd")], &[]),
                false,
            ),
            (
                template(&[], None),
                node("a", &[], &[("dedicated", "NoSchedule")]),
                false,
            ),
            (
                template(&[], Some("dedicated")),
                node("a", &[], &[("dedicated", "NoSchedule")]),
                true,
            ),
            // Only a preference: does not keep daemons away.
            (
                template(&[], None),
                node("a", &[], &[("x", "PreferNoSchedule")]),
                true,
            ),
            // The taints of unhealthy and cordoned nodes are tolerated.
            (
                template(&[], None),
                node("a", &[], &[("node.kubernetes.io/not-ready", "NoExecute")]),
                true,
            ),
            (
                template(&[], None),
                node(
                    "a",
                    &[],
                    &[("node.kubernetes.io/unschedulable", "NoSchedule")],
                ),
                true,
            ),
        ];
        for (i, (t, n, want)) in cases.iter().enumerate() {
            assert_eq!(should_run(t, n), *want, "case {i}");
        }
    }

    #[test]
    fn a_daemon_pod_is_pinned_to_its_node_with_default_tolerations() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "d1"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "a", "image": "a:v1"}],
                        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                            {"nodeSelectorTerms": [{"matchExpressions":
                                [{"key": "os", "operator": "In", "values": ["wasi"]}]}]}}}}}}
        }))
        .unwrap();
        let pod = new_pod(&ds, "node-7", "abc");
        assert_eq!(target_node(&pod).as_deref(), Some("node-7"));
        assert_eq!(
            pod.labels().get(HASH_LABEL).map(String::as_str),
            Some("abc")
        );
        let spec = pod.spec.unwrap();
        let terms = spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        assert!(terms[0].match_expressions.is_none());
        let tolerations = spec.tolerations.unwrap();
        for (key, effect) in DAEMON_TOLERATIONS {
            assert!(
                tolerations
                    .iter()
                    .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect)),
                "{key}"
            );
        }
    }

    /// A daemon pod of template `hash` on `node`, created at `minute`.
    fn daemon(name: &str, node: &str, hash: &str, ready: bool, minute: u32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {HASH_LABEL: hash},
                "creationTimestamp": format!("2026-01-01T00:{minute:02}:00Z")},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn spec(strategy: Value) -> DaemonSetSpec {
        serde_json::from_value(
            json!({"selector": {}, "template": {"spec": {"containers": []}},
            "updateStrategy": strategy}),
        )
        .unwrap()
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        let mut out: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        out.sort();
        out
    }

    #[test]
    fn a_pass_creates_missing_daemons_and_rolls_within_max_unavailable() {
        let nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| node(n, &[], &[])).collect();
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let rolling =
            |n: i32| spec(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": n}}));
        let on_delete = spec(json!({"type": "OnDelete"}));
        type Case = (
            DaemonSetSpec,
            Vec<Pod>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            // Nothing yet: one pod per node.
            (rolling(1), vec![], vec!["a", "b", "c"], vec![]),
            // All old and available: one at a time.
            (
                rolling(1),
                vec![
                    daemon("pa", "a", "old", true, 1),
                    daemon("pb", "b", "old", true, 1),
                    daemon("pc", "c", "old", true, 1),
                ],
                vec![],
                vec!["pa"],
            ),
            (
                rolling(2),
                vec![
                    daemon("pa", "a", "old", true, 1),
                    daemon("pb", "b", "old", true, 1),
                    daemon("pc", "c", "old", true, 1),
                ],
                vec![],
                vec!["pa", "pb"],
            ),
            // A node already without its daemon uses up the budget; an
            // unavailable old pod goes anyway.
            (
                rolling(1),
                vec![
                    daemon("pb", "b", "old", false, 1),
                    daemon("pc", "c", "old", true, 1),
                ],
                vec!["a"],
                vec!["pb"],
            ),
            // OnDelete replaces nothing by itself.
            (
                on_delete,
                vec![
                    daemon("pa", "a", "old", true, 1),
                    daemon("pb", "b", "new", true, 1),
                ],
                vec!["c"],
                vec![],
            ),
            // A second pod on a node and a pod on a vanished node go.
            (
                rolling(1),
                vec![
                    daemon("pa", "a", "new", true, 1),
                    daemon("pa2", "a", "new", true, 2),
                    daemon("pb", "b", "new", true, 1),
                    daemon("pc", "c", "new", true, 1),
                    daemon("px", "x", "new", true, 1),
                ],
                vec![],
                vec!["pa2", "px"],
            ),
        ];
        for (i, (spec, pods, create, delete)) in cases.into_iter().enumerate() {
            let plan = plan(&spec, "new", &arcs(&nodes), &pods, now);
            assert_eq!(plan.create, create, "case {i}: create");
            assert_eq!(names(&plan.delete), delete, "case {i}: delete");
        }
    }

    #[test]
    fn a_pass_counts_what_the_status_reports() {
        let nodes = vec![
            node("a", &[("role", "edge")], &[]),
            node("b", &[("role", "edge")], &[]),
            node("c", &[], &[]),
        ];
        let mut spec = spec(json!({"type": "RollingUpdate"}));
        spec.template = template(&[("role", "edge")], None);
        let pods = vec![
            daemon("pa", "a", "new", true, 1),
            daemon("pb", "b", "old", false, 1),
            daemon("pc", "c", "new", true, 1),
        ];
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let plan = plan(&spec, "new", &arcs(&nodes), &pods, now);
        assert_eq!(
            plan.counts,
            Counts {
                desired: 2,
                current: 2,
                misscheduled: 1,
                ready: 1,
                available: 1,
                updated: 1,
            }
        );
        assert_eq!(names(&plan.delete), ["pb", "pc"]);
    }

    #[test]
    fn max_unavailable_is_a_count_or_a_percentage_of_at_least_one() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(max_unavailable(None, 10), 1);
        assert_eq!(max_unavailable(Some(&IntOrString::Int(3)), 10), 3);
        assert_eq!(max_unavailable(Some(&pct("25%")), 10), 2);
        assert_eq!(max_unavailable(Some(&pct("10%")), 3), 1);
        assert_eq!(max_unavailable(Some(&IntOrString::Int(0)), 3), 1);
    }
}
