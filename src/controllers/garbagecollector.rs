//! The garbage collector: what `metadata.ownerReferences` promise.
//!
//! - A dependent whose owners are all gone is deleted (background
//!   propagation, the default of `kubectl delete`).
//! - An owner being deleted with the `foregroundDeletion` finalizer
//!   (`--cascade=foreground`) has its dependents deleted first; once none
//!   is left the finalizer is cleared and the API server removes it.
//! - An owner being deleted with the `orphan` finalizer
//!   (`--cascade=orphan`) has its reference removed from each dependent,
//!   then the finalizer is cleared.
//!
//! It keeps a graph of every object's uid and owners, fed by a metadata
//! watch per kind, and decides from the graph alone ([`decide`]); an owner
//! the graph does not know is looked up before its dependents go, since
//! the graph may lag the store. The graph is rebuilt from the watches'
//! initial lists after a restart, so owners deleted while the control plane
//! was down still have their dependents collected.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{Backoff, ControllerError, PodEvent, PodEvents, api_resource};
use crate::resources::{KINDS, Kind};

/// The finalizers of the two waiting propagation policies.
pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// One owner reference of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: String,
    /// `None` for a kind wkube does not serve: such an owner is left alone.
    pub kind: Option<&'static Kind>,
    pub name: String,
}

/// What the graph knows of one object.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<Owner>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    fn from_meta(kind: &'static Kind, meta: &ObjectMeta) -> Option<(String, Node)> {
        let uid = meta.uid.clone()?;
        let owners = meta
            .owner_references
            .iter()
            .flatten()
            .map(|r| Owner {
                uid: r.uid.clone(),
                kind: owner_kind(&r.api_version, &r.kind),
                name: r.name.clone(),
            })
            .collect();
        let node = Node {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            owners,
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
        };
        Some((uid, node))
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

fn owner_kind(api_version: &str, kind: &str) -> Option<&'static Kind> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    crate::resources::by_kind(group, kind)
}

/// Every object and, per owner uid, the uids that name it.
#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Records `node`; returns the uids whose decisions may have changed.
    pub fn upsert(&mut self, uid: String, node: Node) -> Vec<String> {
        // Owners it no longer names (released by an orphan deletion) may
        // be done waiting.
        let mut dropped = Vec::new();
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&uid);
                    if d.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
                dropped.push(o.uid.clone());
            }
        }
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        let owners: Vec<String> = node.owners.iter().map(|o| o.uid.clone()).collect();
        self.nodes.insert(uid.clone(), node);
        // The object itself (as owner or dependent), and its owners, old
        // and new (one waiting in the foreground may now be done).
        let mut touched: Vec<String> = std::iter::once(uid).chain(owners).collect();
        for o in dropped {
            if !touched.contains(&o) {
                touched.push(o);
            }
        }
        touched
    }

    /// Forgets `uid`; returns the uids whose decisions may have changed:
    /// its dependents (their owner is gone) and its owners.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched: Vec<String> = self
            .dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(node) = self.nodes.remove(uid) {
            for o in &node.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
                touched.push(o.uid.clone());
            }
        }
        touched
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, &Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n)))
            .collect()
    }
}

/// What the collector does about one object.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// A dependent whose known owners are all absent from the graph: delete
    /// it once each is confirmed gone from the store.
    DeleteIfOwnersGone(Vec<Owner>),
    /// An owner deleted in the foreground: delete these dependents (uids)
    /// first.
    DeleteDependents(Vec<String>),
    /// An owner deleted as `orphan`: remove its reference from these
    /// dependents (uids) first.
    ReleaseDependents(Vec<String>),
    /// An owner whose waiting deletion is done: clear this finalizer.
    ClearFinalizer(&'static str),
}

/// Decides the step for the object `uid` from the graph.
pub fn decide(graph: &Graph, uid: &str) -> Step {
    let Some(node) = graph.nodes.get(uid) else {
        return Step::Nothing;
    };
    if node.deleting && node.has_finalizer(ORPHAN) {
        let deps: Vec<String> = graph
            .dependents_of(uid)
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        return if deps.is_empty() {
            Step::ClearFinalizer(ORPHAN)
        } else {
            Step::ReleaseDependents(deps)
        };
    }
    if node.deleting && node.has_finalizer(FOREGROUND) {
        let deps = graph.dependents_of(uid);
        if deps.is_empty() {
            return Step::ClearFinalizer(FOREGROUND);
        }
        let to_delete: Vec<String> = deps
            .into_iter()
            .filter(|(_, n)| !n.deleting)
            .map(|(d, _)| d)
            .collect();
        // Dependents already going are waited for.
        return if to_delete.is_empty() {
            Step::Nothing
        } else {
            Step::DeleteDependents(to_delete)
        };
    }
    if node.owners.is_empty() || node.deleting {
        return Step::Nothing;
    }
    // Owners of kinds wkube does not serve are never collected for.
    if node.owners.iter().any(|o| o.kind.is_none()) {
        return Step::Nothing;
    }
    if node.owners.iter().any(|o| graph.nodes.contains_key(&o.uid)) {
        return Step::Nothing;
    }
    Step::DeleteIfOwnersGone(node.owners.clone())
}

struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    queue: mpsc::UnboundedSender<String>,
    queued: Mutex<HashSet<String>>,
    backoff: Backoff,
}

impl Collector {
    fn enqueue(&self, uids: impl IntoIterator<Item = String>) {
        let mut queued = self.queued.lock();
        for uid in uids {
            if queued.insert(uid.clone()) {
                let _ = self.queue.send(uid);
            }
        }
    }

    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = api_resource(kind);
        match namespace {
            Some(ns) if kind.namespaced => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Whether the owner `o` of an object in `namespace` is gone from the
    /// store (absent, or replaced by a new object of the same name).
    async fn owner_gone(
        &self,
        o: &Owner,
        namespace: Option<&str>,
    ) -> Result<bool, ControllerError> {
        let Some(kind) = o.kind else {
            return Ok(false);
        };
        match self.api(kind, namespace).get_metadata_opt(&o.name).await? {
            None => Ok(true),
            Some(found) => Ok(found.metadata.uid.as_deref() != Some(o.uid.as_str())),
        }
    }

    async fn delete(&self, node: &Node, uid: &str) -> Result<(), ControllerError> {
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self
            .api(node.kind, node.namespace.as_deref())
            .delete(&node.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrites one metadata field of an object, if it still is `uid`:
    /// `field` is its name, `value` computes it from the current metadata.
    /// The write carries the resourceVersion it read, so a concurrent
    /// change makes it fail and be retried.
    async fn rewrite_meta(
        &self,
        node: &Node,
        uid: &str,
        field: &str,
        value: impl FnOnce(&ObjectMeta) -> serde_json::Value,
    ) -> Result<(), ControllerError> {
        let api = self.api(node.kind, node.namespace.as_deref());
        let Some(current) = api.get_metadata_opt(&node.name).await? else {
            return Ok(());
        };
        if current.metadata.uid.as_deref() != Some(uid) {
            return Ok(());
        }
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            field: value(&current.metadata),
        }});
        match api
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn process(&self, uid: &str) -> Result<(), ControllerError> {
        let (step, node) = {
            let graph = self.graph.lock();
            (decide(&graph, uid), graph.nodes.get(uid).cloned())
        };
        let Some(node) = node else {
            return Ok(());
        };
        match step {
            Step::Nothing => Ok(()),
            Step::DeleteIfOwnersGone(owners) => {
                for o in &owners {
                    if !self.owner_gone(o, node.namespace.as_deref()).await? {
                        return Ok(());
                    }
                }
                self.delete(&node, uid).await
            }
            Step::DeleteDependents(deps) => {
                for d in deps {
                    let dep = self.graph.lock().nodes.get(&d).cloned();
                    if let Some(dep) = dep {
                        self.delete(&dep, &d).await?;
                    }
                }
                Ok(())
            }
            Step::ReleaseDependents(deps) => {
                for d in deps {
                    let dep = self.graph.lock().nodes.get(&d).cloned();
                    let Some(dep) = dep else { continue };
                    self.rewrite_meta(&dep, &d, "ownerReferences", |meta| {
                        let refs: Vec<_> = meta
                            .owner_references
                            .iter()
                            .flatten()
                            .filter(|r| r.uid != uid)
                            .collect();
                        serde_json::json!(refs)
                    })
                    .await?;
                }
                Ok(())
            }
            Step::ClearFinalizer(finalizer) => {
                self.rewrite_meta(&node, uid, "finalizers", |meta| {
                    let left: Vec<&String> = meta
                        .finalizers
                        .iter()
                        .flatten()
                        .filter(|f| *f != finalizer)
                        .collect();
                    serde_json::json!(left)
                })
                .await
            }
        }
    }
}

/// One thing the collector saw, from any kind's watch.
enum Seen {
    Applied(&'static Kind, Box<ObjectMeta>),
    /// The uid of an object gone.
    Deleted(Option<String>),
    /// Every object of the kind has been listed once.
    Listed(&'static Kind),
}

impl Seen {
    fn from_watch(
        kind: &'static Kind,
        event: Result<Event<PartialObjectMeta<DynamicObject>>, watcher::Error>,
    ) -> Option<Seen> {
        match event {
            Ok(Event::Apply(obj) | Event::InitApply(obj)) => {
                Some(Seen::Applied(kind, Box::new(obj.metadata)))
            }
            Ok(Event::Delete(obj)) => Some(Seen::Deleted(obj.metadata.uid)),
            Ok(Event::InitDone) => Some(Seen::Listed(kind)),
            Ok(Event::Init) => None,
            Err(e) => {
                tracing::warn!(kind = kind.plural, error = %e, "garbage collector watch");
                None
            }
        }
    }
}

/// A metadata watch of every object of `kind` (the graph needs nothing
/// else). A custom kind's watch ends once its CRD no longer serves it
/// (the CRD is gone, or changed and its kind built again, which gets a
/// watch of its own).
fn watch_kind(client: &Client, kind: &'static Kind) -> futures::stream::BoxStream<'static, Seen> {
    let api: Api<PartialObjectMeta<DynamicObject>> =
        Api::all_with(client.clone(), &api_resource(kind));
    watch(api, watcher::Config::default())
        .default_backoff()
        .take_while(move |e| {
            let served = e.is_ok()
                || kind.custom.is_none()
                || crate::resources::by_resource(kind.group, kind.version, kind.plural)
                    .is_some_and(|k| std::ptr::eq(k, kind));
            futures::future::ready(served)
        })
        .filter_map(move |e| futures::future::ready(Seen::from_watch(kind, e)))
        .boxed()
}

/// The kinds whose objects the graph holds. Events name what they are
/// about in `involvedObject`, not as owners, and are many: left out.
fn followed_kinds() -> impl Iterator<Item = &'static Kind> {
    KINDS.iter().filter(|k| k.stored && k.plural != "events")
}

/// Runs the collector until `shutdown`.
///
/// Pods come from the controllers' shared pod watch (`pods`), as the other
/// controllers' do: a second watch of every pod would decode each pod
/// change twice.
pub async fn run(
    client: Client,
    pods: PodEvents,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let collector = Arc::new(Collector {
        client: client.clone(),
        graph: Mutex::new(Graph::default()),
        queue: tx,
        queued: Mutex::new(HashSet::new()),
        backoff: Backoff::default(),
    });
    let kinds: Vec<&'static Kind> = followed_kinds().collect();
    let pods_kind = crate::resources::by_kind("", "Pod").expect("pods are served");
    let watched = kinds
        .iter()
        .filter(|&&k| k != pods_kind)
        .map(|&kind| watch_kind(&client, kind));
    let pods = pods
        .map(move |e| match e {
            PodEvent::Applied(pod) => Seen::Applied(pods_kind, Box::new(pod.metadata.clone())),
            PodEvent::Deleted(pod) => Seen::Deleted(pod.metadata.uid.clone()),
            PodEvent::Listed => Seen::Listed(pods_kind),
        })
        .boxed();
    let mut events = futures::stream::select_all(watched.chain(std::iter::once(pods)));
    // Custom kinds come and go with their CRDs: each one served gets a
    // watch of its own when it appears (see `watch_kind`).
    let mut custom_seen = u64::MAX;
    let mut custom_watched: HashSet<usize> = HashSet::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    // Nothing is decided before every kind has been listed once: an owner
    // not listed yet would look gone.
    let mut listed: HashSet<&'static str> = HashSet::new();
    let mut synced = false;
    let worker = {
        let collector = collector.clone();
        async move {
            while let Some(uid) = rx.recv().await {
                collector.queued.lock().remove(&uid);
                match collector.process(&uid).await {
                    Ok(()) => collector.backoff.succeeded(&uid),
                    Err(e) => {
                        let delay = collector.backoff.failed(&uid);
                        tracing::warn!(error = %e, retry_in = ?delay, "garbage collector");
                        let collector = collector.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            collector.enqueue([uid]);
                        });
                    }
                }
            }
        }
    };
    let feed = async {
        loop {
            let seen = tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {
                    let generation = crate::resources::custom::generation();
                    if generation != custom_seen {
                        custom_seen = generation;
                        for kind in crate::resources::custom::all() {
                            // One watch per kind, in the version it is
                            // stored in.
                            let Some(stored) = crate::resources::by_kind(kind.group, kind.kind) else {
                                continue;
                            };
                            if custom_watched.insert(std::ptr::from_ref(stored) as usize) {
                                tracing::info!(kind = stored.kind, group = stored.group, "garbage collector follows a custom kind");
                                events.push(watch_kind(&client, stored));
                            }
                        }
                    }
                    continue;
                }
                next = events.next() => match next {
                    Some(seen) => seen,
                    None => return,
                },
            };
            let touched = {
                let mut graph = collector.graph.lock();
                match seen {
                    Seen::Applied(kind, meta) => match Node::from_meta(kind, &meta) {
                        Some((uid, node)) => graph.upsert(uid, node),
                        None => Vec::new(),
                    },
                    Seen::Deleted(Some(uid)) => graph.remove(&uid),
                    Seen::Deleted(None) => Vec::new(),
                    // A custom kind followed late: owners of it that went
                    // before its watch began were never seen to go, so
                    // every dependent naming one is looked at again.
                    Seen::Listed(kind) if kind.custom.is_some() => graph
                        .nodes
                        .iter()
                        .filter(|(_, n)| {
                            n.owners.iter().any(|o| {
                                o.kind
                                    .is_some_and(|k| k.group == kind.group && k.kind == kind.kind)
                            })
                        })
                        .map(|(uid, _)| uid.clone())
                        .collect(),
                    Seen::Listed(kind) => {
                        listed.insert(kind.plural);
                        if !synced && listed.len() == kinds.len() {
                            synced = true;
                            // Everything that may have work left from
                            // before a restart.
                            graph.nodes.keys().cloned().collect()
                        } else {
                            Vec::new()
                        }
                    }
                }
            };
            if synced {
                collector.enqueue(touched);
            }
        }
    };
    tokio::select! {
        () = feed => {}
        () = worker => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(plural: &str) -> &'static Kind {
        KINDS.iter().find(|k| k.plural == plural).unwrap()
    }

    fn node(owners: &[&str], deleting: bool, finalizers: &[&str]) -> Node {
        Node {
            kind: kind("pods"),
            namespace: Some("ns".into()),
            name: "x".into(),
            owners: owners
                .iter()
                .map(|o| Owner {
                    uid: o.to_string(),
                    kind: Some(kind("replicasets")),
                    name: format!("rs-{o}"),
                })
                .collect(),
            deleting,
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn graph(nodes: &[(&str, Node)]) -> Graph {
        let mut g = Graph::default();
        for (uid, n) in nodes {
            g.upsert(uid.to_string(), n.clone());
        }
        g
    }

    #[test]
    fn decisions_follow_owners_and_propagation_finalizers() {
        let orphaned = node(&["rs1"], false, &[]);
        let owned = node(&["rs1"], false, &[]);
        let rs = node(&[], false, &[]);
        let rs_fg = node(&[], true, &[FOREGROUND]);
        let rs_orphan = node(&[], true, &[ORPHAN]);
        let going = node(&["rs1"], true, &[]);
        let mut foreign = node(&["x1"], false, &[]);
        foreign.owners[0].kind = None;
        let cases: Vec<(Graph, &str, Step)> = vec![
            // An owner still there keeps its dependent.
            (
                graph(&[("rs1", rs.clone()), ("p", owned.clone())]),
                "p",
                Step::Nothing,
            ),
            // An owner gone: delete once confirmed.
            (
                graph(&[("p", orphaned.clone())]),
                "p",
                Step::DeleteIfOwnersGone(orphaned.owners.clone()),
            ),
            // No owners at all: nothing.
            (graph(&[("rs1", rs.clone())]), "rs1", Step::Nothing),
            // An owner of a kind not served: never collected.
            (graph(&[("p", foreign)]), "p", Step::Nothing),
            // Foreground: dependents first, those already going waited for.
            (
                graph(&[("rs1", rs_fg.clone()), ("p", owned.clone())]),
                "rs1",
                Step::DeleteDependents(vec!["p".into()]),
            ),
            (
                graph(&[("rs1", rs_fg.clone()), ("p", going)]),
                "rs1",
                Step::Nothing,
            ),
            (
                graph(&[("rs1", rs_fg)]),
                "rs1",
                Step::ClearFinalizer(FOREGROUND),
            ),
            // Orphan: release dependents, then clear.
            (
                graph(&[("rs1", rs_orphan.clone()), ("p", owned)]),
                "rs1",
                Step::ReleaseDependents(vec!["p".into()]),
            ),
            (
                graph(&[("rs1", rs_orphan)]),
                "rs1",
                Step::ClearFinalizer(ORPHAN),
            ),
            // Unknown uid.
            (Graph::default(), "nope", Step::Nothing),
        ];
        for (i, (g, uid, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(&g, uid), want, "case {i}");
        }
    }

    #[test]
    fn a_released_dependent_touches_the_owner_it_no_longer_names() {
        let mut g = graph(&[
            ("rs1", node(&[], true, &[ORPHAN])),
            ("p", node(&["rs1"], false, &[])),
        ]);
        let touched = g.upsert("p".into(), node(&[], false, &[]));
        assert!(touched.contains(&"rs1".to_string()), "{touched:?}");
        assert_eq!(decide(&g, "rs1"), Step::ClearFinalizer(ORPHAN));
    }

    #[test]
    fn removing_an_owner_touches_its_dependents_and_unlinks_them() {
        let mut g = graph(&[
            ("rs1", node(&[], false, &[])),
            ("p", node(&["rs1"], false, &[])),
        ]);
        assert_eq!(g.remove("rs1"), vec!["p".to_string()]);
        let touched = g.remove("p");
        assert_eq!(touched, vec!["rs1".to_string()]);
        assert!(g.dependents.is_empty());
        assert!(g.nodes.is_empty());
    }
}
