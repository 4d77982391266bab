//! The scheduler's view of the cluster, fed by the node and pod watches:
//! every node with the requests of the pods placed on it — pods bound
//! through the API and pods this scheduler has *assumed* onto a node but
//! whose binding is still in flight. Counting assumed pods is what keeps
//! two quick decisions from overcommitting the same node.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::framework::{NodeInfo, PodInfo, Resources, pod_requests};

/// A pod counted against a node.
#[derive(Clone, Debug)]
struct Placed {
    node: String,
    requests: Resources,
    score_requests: Resources,
    /// Placed by this scheduler, not yet seen bound through the watch.
    assumed: bool,
    /// What preemption weighs and names.
    namespace: String,
    name: String,
    priority: i32,
    /// Being deleted: its requests are still held, but it is already
    /// leaving, so preempting it again would free nothing more.
    terminating: bool,
}

/// A pod on a node that preemption may consider.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    pub requests: Resources,
    pub score_requests: Resources,
    pub terminating: bool,
}

/// What changed when a Node was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeChange {
    /// A node appeared or changed in a way that may let pods fit.
    Relevant,
    /// Nothing the scheduler looks at changed.
    Irrelevant,
}

#[derive(Debug, Default)]
struct Entry {
    info: NodeInfo,
    /// The Node object exists (pods may name a node before it is seen).
    known: bool,
}

/// The nodes in name order, in one contiguous array: a cycle walks every
/// node, and an array walk is several times faster than a tree walk. Nodes
/// come and go rarely; pods are counted against them by index.
#[derive(Debug, Default)]
struct NodeTable {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
}

impl NodeTable {
    fn get(&self, name: &str) -> Option<&Entry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Entry> {
        self.index.get(name).map(|&i| &mut self.entries[i])
    }

    /// The entry of `name`, added (unknown, empty) in name order if missing.
    fn entry(&mut self, name: &str) -> &mut Entry {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let at = self
                    .entries
                    .partition_point(|e| e.info.name.as_str() < name);
                self.entries.insert(
                    at,
                    Entry {
                        info: NodeInfo {
                            name: name.to_string(),
                            ..NodeInfo::default()
                        },
                        known: false,
                    },
                );
                self.reindex(at);
                at
            }
        };
        &mut self.entries[i]
    }

    fn remove(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name) {
            self.entries.remove(i);
            self.reindex(i);
        }
    }

    /// Index positions from `from` on after an insert or removal there.
    fn reindex(&mut self, from: usize) {
        for (i, e) in self.entries.iter().enumerate().skip(from) {
            self.index.insert(e.info.name.clone(), i);
        }
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: NodeTable,
    pods: HashMap<String, Placed>,
}

impl Cache {
    /// The nodes pods may be placed on, in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|e| e.known).map(|e| &e.info)
    }

    /// One node, if it is known.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|e| e.known).map(|e| &e.info)
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes().map(|n| n.name.clone()).collect()
    }

    /// Adds or updates a node, keeping what is placed on it.
    pub fn apply_node(&mut self, node: &Node) -> NodeChange {
        let mut fresh = NodeInfo::from_node(node);
        let entry = self.nodes.entry(&fresh.name);
        fresh.requested = entry.info.requested;
        fresh.score_requested = entry.info.score_requested;
        let change = if entry.known && entry.info == fresh {
            NodeChange::Irrelevant
        } else {
            NodeChange::Relevant
        };
        entry.info = fresh;
        entry.known = true;
        change
    }

    /// Removes a node; pods still bound to it keep their accounting until
    /// they go too.
    pub fn remove_node(&mut self, name: &str) {
        if let Some(e) = self.nodes.get_mut(name) {
            e.known = false;
            if e.info.requested == Resources::default() {
                self.nodes.remove(name);
            }
        }
    }

    fn place(&mut self, uid: &str, placed: Placed) {
        let e = self.nodes.entry(&placed.node);
        e.info.requested.add(&placed.requests);
        e.info.score_requested.add(&placed.score_requests);
        self.pods.insert(uid.to_string(), placed);
    }

    /// Takes a pod off its node; true when it was counted.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(p) = self.pods.remove(uid) else {
            return false;
        };
        if let Some(e) = self.nodes.get_mut(&p.node) {
            e.info.requested.sub(&p.requests);
            e.info.score_requested.sub(&p.score_requests);
            if !e.known && e.info.requested == Resources::default() {
                self.nodes.remove(&p.node);
            }
        }
        true
    }

    /// Counts a bound, non-terminal pod against its node. An assumed pod
    /// seen bound is confirmed; a pod seen on another node moves.
    pub fn apply_bound_pod(&mut self, pod: &Pod, node: &str) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if let Some(p) = self.pods.get_mut(uid)
            && p.node == node
        {
            p.assumed = false;
            p.terminating = terminating;
            return;
        }
        self.remove_pod(uid);
        let (requests, score_requests) = pod_requests(pod);
        self.place(
            uid,
            Placed {
                node: node.to_string(),
                requests,
                score_requests,
                assumed: false,
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                terminating,
            },
        );
    }

    /// Counts `pod` against `node` before its binding is confirmed.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        self.remove_pod(&pod.uid);
        self.place(
            &pod.uid,
            Placed {
                node: node.to_string(),
                requests: pod.requests,
                score_requests: pod.score_requests,
                assumed: true,
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                priority: pod.priority,
                terminating: false,
            },
        );
    }

    /// Drops an assumption whose binding failed; a pod already seen bound
    /// stays counted.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove_pod(uid);
        }
    }

    /// Whether `uid` is assumed or bound (then it must not be queued).
    pub fn is_placed(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// UIDs of every counted pod (for re-list reconciliation).
    pub fn pod_uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// The pods counted against `node` (a scan of every placed pod: only
    /// preemption asks, and only for pods that fit nowhere).
    pub fn pods_on(&self, node: &str) -> Vec<PlacedPod> {
        self.pods
            .iter()
            .filter(|(_, p)| p.node == node)
            .map(|(uid, p)| PlacedPod {
                uid: uid.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                priority: p.priority,
                requests: p.requests,
                score_requests: p.score_requests,
                terminating: p.terminating,
            })
            .collect()
    }

    /// Marks a pod as leaving before the watch shows it (a victim just
    /// chosen), so the next cycle does not choose it again.
    pub fn mark_terminating(&mut self, uid: &str) {
        if let Some(p) = self.pods.get_mut(uid) {
            p.terminating = true;
        }
    }

    /// Whether `uid` is counted and confirmed bound.
    pub fn is_bound(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| !p.assumed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testing::pod;

    fn node_obj(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn bound(uid: &str, node: &str, cpu: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn assumed_pods_count_until_forgotten_and_bound_pods_after() {
        let mut c = Cache::default();
        assert_eq!(c.apply_node(&node_obj("a")), NodeChange::Relevant);
        assert_eq!(c.apply_node(&node_obj("a")), NodeChange::Irrelevant);
        let mut p = pod(1500, 0);
        p.uid = "u1".into();
        c.assume(&p, "a");
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1500);
        c.forget("u1");
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 0);

        c.assume(&p, "a");
        c.apply_bound_pod(&bound("u1", "a", "1500m"), "a");
        // Confirmed: a late failure report must not drop it.
        c.forget("u1");
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1500);
        assert!(c.remove_pod("u1"));
        assert_eq!(c.node("a").unwrap().requested, Resources::default());
    }

    #[test]
    fn nodes_walk_in_name_order_whatever_order_they_came_in() {
        let mut c = Cache::default();
        for n in ["c", "a", "d", "b"] {
            c.apply_node(&node_obj(n));
        }
        let names = |c: &Cache| c.nodes().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c), ["a", "b", "c", "d"]);
        c.remove_node("b");
        assert_eq!(names(&c), ["a", "c", "d"]);
        // Pods still land on the right node after the shift.
        c.apply_bound_pod(&bound("u1", "d", "1"), "d");
        assert_eq!(c.node("d").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.node("c").unwrap().requested.milli_cpu, 0);
        assert_eq!(c.nodes().count(), 3);
    }

    #[test]
    fn pods_on_a_node_not_yet_seen_count_once_it_appears() {
        let mut c = Cache::default();
        c.apply_bound_pod(&bound("u1", "b", "1"), "b");
        assert!(c.node("b").is_none());
        c.apply_node(&node_obj("b"));
        assert_eq!(c.node("b").unwrap().requested.milli_cpu, 1000);
        assert_eq!(c.node("b").unwrap().allocatable.milli_cpu, 4000);
    }
}
