//! The node authorizer's graph: which Secrets, ConfigMaps and service
//! accounts the pods bound to each node use, kept current from a watch on
//! the pods.
//!
//! A kubelet asks for its pods' token, config maps and secrets as each pod
//! starts, and the authorizer must find a pod on that node that uses the
//! object. Scanning the namespace's pods for it made every pod start cost
//! time linear in the pods, so filling a node with thousands of pods was
//! quadratic. The graph answers with a lookup.
//!
//! The graph only ever says yes: a request it finds no edge for goes on to
//! the scan, which reads the store itself. So a pod created a moment ago
//! (the kubelet may see it before the graph does) is never refused, and
//! an edge is taken away when the pod's delete or change is applied here,
//! as promptly as any watcher sees it. While its watch is broken the graph
//! is off (it answers nothing, rather than grant from a stale view) until
//! the pods are loaded again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use serde_json::Value;

use crate::store::Store;
use crate::store::follow::{self, Change, Mirror};

const PODS_PREFIX: &str = "/registry/pods/";

/// An object a pod uses, in the pod's namespace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Uses {
    Secret(String),
    ConfigMap(String),
    ServiceAccount(String),
}

/// One pod's edges: its node, its namespace and what it uses.
#[derive(Debug, PartialEq, Eq)]
struct Edges {
    node: String,
    namespace: String,
    uses: Vec<Uses>,
}

/// (node, namespace, object) → how many of the node's pods use it.
type Counts = HashMap<(String, String, Uses), u32>;

#[derive(Default)]
struct Graph {
    /// By the pod's store key, so a change or delete takes its old edges
    /// away.
    pods: HashMap<Vec<u8>, Edges>,
    counts: Counts,
}

impl Graph {
    fn remove(&mut self, key: &[u8]) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        for u in old.uses {
            let k = (old.node.clone(), old.namespace.clone(), u);
            if let Some(n) = self.counts.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&k);
                }
            }
        }
    }

    /// Applies the pods a store change sets or deletes.
    fn replay(&mut self, change: &Change<'_>) {
        for (key, value) in change.updates() {
            match value.and_then(|v| serde_json::from_slice::<Value>(v).ok()) {
                Some(pod) => self.put(key, &pod),
                None => self.remove(key),
            }
        }
    }

    fn put(&mut self, key: &[u8], pod: &Value) {
        let edges = edges_of(pod);
        if self.pods.get(key) == edges.as_ref() {
            return;
        }
        self.remove(key);
        let Some(edges) = edges else {
            return;
        };
        for u in &edges.uses {
            *self
                .counts
                .entry((edges.node.clone(), edges.namespace.clone(), u.clone()))
                .or_default() += 1;
        }
        self.pods.insert(key.to_vec(), edges);
    }
}

/// The edges of a pod bound to a node; none for an unbound one.
fn edges_of(pod: &Value) -> Option<Edges> {
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str)?;
    if node.is_empty() {
        return None;
    }
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut uses = uses_of(pod);
    uses.sort();
    uses.dedup();
    Some(Edges {
        node: node.to_string(),
        namespace: namespace.to_string(),
        uses,
    })
}

/// Every object `pod` uses: the Secrets and ConfigMaps of its volumes
/// (projected sources too), of its containers' and init containers' `env`
/// and `envFrom`, and its service account (`default` when unnamed).
pub fn uses_of(pod: &Value) -> Vec<Uses> {
    let spec = &pod["spec"];
    let name = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut out = vec![Uses::ServiceAccount(
        spec.get("serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string(),
    )];
    for v in spec["volumes"].as_array().into_iter().flatten() {
        out.extend(name(v.get("secret"), "secretName").map(Uses::Secret));
        out.extend(name(v.get("configMap"), "name").map(Uses::ConfigMap));
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            out.extend(name(s.get("secret"), "name").map(Uses::Secret));
            out.extend(name(s.get("configMap"), "name").map(Uses::ConfigMap));
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                let from = e.get("valueFrom");
                out.extend(
                    name(from.and_then(|f| f.get("secretKeyRef")), "name").map(Uses::Secret),
                );
                out.extend(
                    name(from.and_then(|f| f.get("configMapKeyRef")), "name").map(Uses::ConfigMap),
                );
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                out.extend(name(e.get("secretRef"), "name").map(Uses::Secret));
                out.extend(name(e.get("configMapRef"), "name").map(Uses::ConfigMap));
            }
        }
    }
    out
}

/// The graph and whether its watch still runs.
#[derive(Default)]
pub struct NodeGraph {
    graph: RwLock<Graph>,
    live: AtomicBool,
}

impl NodeGraph {
    /// Loads every pod and keeps the graph current from the store.
    ///
    /// # Errors
    /// The first read of the pods failed.
    pub async fn start(store: Store) -> Result<Arc<NodeGraph>, crate::store::StoreError> {
        let this = Arc::new(NodeGraph::default());
        follow::follow(store, PODS_PREFIX, &this).await?;
        Ok(this)
    }

    /// True when a pod bound to `node` in `namespace` uses `object`; false
    /// when the graph knows of none or is off (the caller then scans).
    pub fn uses(&self, node: &str, namespace: &str, object: &Uses) -> bool {
        self.live.load(Ordering::Acquire)
            && self.graph.read().counts.contains_key(&(
                node.to_string(),
                namespace.to_string(),
                object.clone(),
            ))
    }
}

impl Mirror for NodeGraph {
    fn apply(&self, change: Change<'_>) {
        match change {
            Change::Loaded(_) => {
                // Built apart, so the authorizer is not held up meanwhile.
                let mut fresh = Graph::default();
                fresh.replay(&change);
                *self.graph.write() = fresh;
                self.live.store(true, Ordering::Release);
            }
            Change::Events(_) => self.graph.write().replay(&change),
            Change::Lost => {
                tracing::warn!(
                    "the node authorizer's graph is off until the pods are loaded again"
                );
                self.live.store(false, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, node: &str, secret: &str) -> Value {
        json!({
            "metadata": {"namespace": ns, "name": "p"},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "runner",
                "volumes": [{"name": "v", "secret": {"secretName": secret}},
                            {"name": "p", "projected": {"sources": [{"configMap": {"name": "root-ca"}}]}}],
                "initContainers": [{"name": "i",
                    "envFrom": [{"configMapRef": {"name": "settings"}}]}],
                "containers": [{"name": "c",
                    "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "api-key", "key": "k"}}}]}],
            },
        })
    }

    #[test]
    fn edges_follow_a_pod_as_it_changes_and_goes() {
        let live = NodeGraph::default();
        live.live.store(true, Ordering::Release);
        let key = b"/registry/pods/ns1/p";
        live.graph.write().put(key, &pod("ns1", "n1", "tls"));
        for u in [
            Uses::Secret("tls".into()),
            Uses::Secret("api-key".into()),
            Uses::ConfigMap("root-ca".into()),
            Uses::ConfigMap("settings".into()),
            Uses::ServiceAccount("runner".into()),
        ] {
            assert!(live.uses("n1", "ns1", &u), "{u:?}");
            assert!(!live.uses("n2", "ns1", &u), "{u:?} on another node");
            assert!(!live.uses("n1", "ns2", &u), "{u:?} in another namespace");
        }
        assert!(!live.uses("n1", "ns1", &Uses::Secret("other".into())));
        // A second pod sharing an object keeps it after the first goes.
        let key2 = b"/registry/pods/ns1/q";
        live.graph.write().put(key2, &pod("ns1", "n1", "other"));
        live.graph.write().put(key, &pod("ns1", "n1", "renamed"));
        assert!(!live.uses("n1", "ns1", &Uses::Secret("tls".into())));
        assert!(live.uses("n1", "ns1", &Uses::Secret("renamed".into())));
        live.graph.write().remove(key);
        assert!(live.uses("n1", "ns1", &Uses::Secret("api-key".into())));
        live.graph.write().remove(key2);
        assert!(!live.uses("n1", "ns1", &Uses::Secret("api-key".into())));
        assert!(live.graph.read().counts.is_empty());
        // Unbound pods have no edges; a graph that is off answers nothing.
        live.graph.write().put(key, &pod("ns1", "", "tls"));
        assert!(live.graph.read().counts.is_empty());
        live.graph.write().put(key, &pod("ns1", "n1", "tls"));
        live.live.store(false, Ordering::Release);
        assert!(!live.uses("n1", "ns1", &Uses::Secret("tls".into())));
    }

    #[test]
    fn an_unnamed_service_account_is_default() {
        let uses = uses_of(&json!({"spec": {"nodeName": "n1", "containers": []}}));
        assert_eq!(uses, vec![Uses::ServiceAccount("default".into())]);
    }

    /// After a broken watch the graph is loaded again: a pod deleted in
    /// between loses its edges and a pod added later gains them.
    #[tokio::test]
    async fn the_graph_is_loaded_again_after_a_broken_watch() {
        use crate::store::follow::testing::{Breakable, until};
        use crate::store::{DeleteRangeRequest, KeyRange, PutRequest};

        let dir = tempfile::tempdir().unwrap();
        let breakable = Breakable::open(dir.path());
        let store: Store = breakable.clone();
        let put = |name: &'static str, secret: &'static str| {
            let store = store.clone();
            async move {
                store
                    .put(PutRequest {
                        key: format!("{PODS_PREFIX}ns1/{name}").into_bytes().into(),
                        value: serde_json::to_vec(&pod("ns1", "n1", secret))
                            .unwrap()
                            .into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        };
        put("a", "tls").await;
        let graph = NodeGraph::start(store.clone()).await.unwrap();
        let uses = |s: &str| graph.uses("n1", "ns1", &Uses::Secret(s.into()));
        assert!(uses("tls"));

        breakable.break_watches().await;
        store
            .delete_range(DeleteRangeRequest {
                range: KeyRange::single(format!("{PODS_PREFIX}ns1/a")),
                ..Default::default()
            })
            .await
            .unwrap();
        put("b", "later").await;
        until(
            "the graph catching up",
            std::time::Duration::from_secs(3),
            || !uses("tls") && uses("later"),
        )
        .await;
    }
}
