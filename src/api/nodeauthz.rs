//! The node authorizer: a node's credential (user `system:node:NAME`, group
//! `system:nodes`) reaches only what that node needs — its own Node and
//! Lease, the pods bound to it, and the secrets, config maps and
//! service-account tokens those pods use — however broad the RBAC role
//! bound to `system:nodes` is. Checked before RBAC; anything it does not
//! restrict is left to RBAC.

use serde_json::Value;

use super::ApiState;
use super::authn::UserInfo;
use super::rbac::Attributes;
use crate::resources;

/// The node a user is, if it is one.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == "system:nodes") {
        return None;
    }
    user.username.strip_prefix("system:node:")
}

/// What the node authorizer says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not restricted here: RBAC decides.
    NoOpinion,
    /// Refused whatever RBAC says, with the reason.
    Deny(String),
}

/// Decides `a` for `node`; reads the store for pod bindings.
pub async fn decide(state: &ApiState, node: &str, a: &Attributes) -> Decision {
    let deny = |why: String| Decision::Deny(why);
    let reads = matches!(a.verb.as_str(), "get" | "list" | "watch");
    match (
        a.group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
    ) {
        ("", "nodes", _) => {
            // A create names no object in its attributes (the name is in
            // the body); a node may create Node objects, but never change
            // another's.
            let own = a.name == node;
            let any_read = reads && a.subresource.is_empty();
            let create = a.verb == "create" && a.name.is_empty();
            if any_read || create || own {
                Decision::NoOpinion
            } else {
                deny(format!("node {node:?} may only change its own Node object"))
            }
        }
        ("coordination.k8s.io", "leases", _) => {
            if a.namespace == "kube-node-lease"
                && (a.name == node || (a.name.is_empty() && a.verb == "create"))
            {
                Decision::NoOpinion
            } else {
                deny(format!(
                    "node {node:?} may only use its own Lease in kube-node-lease"
                ))
            }
        }
        ("", "pods", "") if reads => Decision::NoOpinion,
        ("", "pods", "status" | "") | ("", "pods", "eviction") => {
            match pod_node(state, &a.namespace, &a.name).await {
                PodNode::BoundTo(n) if n == node => Decision::NoOpinion,
                // A pod that is gone already (a kubelet's last delete
                // racing another): the handler's 404 says so, as in
                // Kubernetes, where a refusal would be retried for nothing.
                PodNode::Missing if !a.name.is_empty() && a.verb != "create" => Decision::NoOpinion,
                _ => deny(format!("node {node:?} may only change pods bound to it")),
            }
        }
        ("", "secrets" | "configmaps", "") => {
            if a.verb != "get" || a.name.is_empty() {
                return deny(format!(
                    "node {node:?} may only get the {} its pods use, one by name",
                    a.resource
                ));
            }
            let field = if a.resource == "secrets" {
                "secret"
            } else {
                "configMap"
            };
            if pods_on(state, node, &a.namespace)
                .await
                .iter()
                .any(|p| references(p, field, &a.name))
            {
                Decision::NoOpinion
            } else {
                deny(format!(
                    "no relationship found between node {node:?} and this object"
                ))
            }
        }
        ("", "serviceaccounts", "token") | ("", "serviceaccounts", "") => {
            let uses = pods_on(state, node, &a.namespace).await.iter().any(|p| {
                p.pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    == a.name
            });
            if uses {
                Decision::NoOpinion
            } else {
                deny(format!(
                    "no relationship found between node {node:?} and this object"
                ))
            }
        }
        _ => Decision::NoOpinion,
    }
}

/// Where a pod is, for the node authorizer.
enum PodNode {
    BoundTo(String),
    Unbound,
    Missing,
}

/// Where the pod `ns/name` is; only `spec.nodeName` is read from the store
/// (every status update of a kubelet asks this). A store error counts as
/// unbound, which refuses.
async fn pod_node(state: &ApiState, ns: &str, name: &str) -> PodNode {
    #[derive(serde::Deserialize)]
    struct Bound {
        #[serde(default)]
        spec: BoundSpec,
    }
    #[derive(serde::Deserialize, Default)]
    struct BoundSpec {
        #[serde(rename = "nodeName")]
        node_name: Option<String>,
    }
    let Some(kind) = resources::by_resource("", "v1", "pods") else {
        return PodNode::Unbound;
    };
    match state.registry.peek::<Bound>(kind, Some(ns), name).await {
        Ok(None) => PodNode::Missing,
        Ok(Some(Bound {
            spec: BoundSpec { node_name: Some(n) },
        })) if !n.is_empty() => PodNode::BoundTo(n),
        Ok(Some(_)) | Err(_) => PodNode::Unbound,
    }
}

/// The pods in `ns` bound to `node`.
async fn pods_on(state: &ApiState, node: &str, ns: &str) -> Vec<Value> {
    let Some(kind) = resources::by_resource("", "v1", "pods") else {
        return Vec::new();
    };
    let keep = |p: &Value| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
    match state.registry.list(kind, Some(ns), 0, None, &keep).await {
        Ok(page) => page.items,
        Err(_) => Vec::new(),
    }
}

/// Whether `pod` uses the secret or config map `name` (volumes, projected
/// sources, env and envFrom of every container).
fn references(pod: &Value, field: &str, name: &str) -> bool {
    let named = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key)).and_then(Value::as_str) == Some(name)
    };
    let volume_key = if field == "secret" {
        "secretName"
    } else {
        "name"
    };
    let env_ref = if field == "secret" {
        "secretKeyRef"
    } else {
        "configMapKeyRef"
    };
    let env_from = if field == "secret" {
        "secretRef"
    } else {
        "configMapRef"
    };
    let spec = &pod["spec"];
    let in_volumes = spec["volumes"].as_array().into_iter().flatten().any(|v| {
        named(v.get(field), volume_key)
            || v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| named(s.get(field), "name"))
    });
    let in_containers = ["containers", "initContainers"].iter().any(|list| {
        spec[*list].as_array().into_iter().flatten().any(|c| {
            c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| named(e.get("valueFrom").and_then(|f| f.get(env_ref)), "name"))
                || c["envFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| named(e.get(env_from), "name"))
        })
    });
    in_volumes || in_containers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_node_users_are_nodes() {
        let node = UserInfo {
            username: "system:node:n1".into(),
            uid: String::new(),
            groups: vec!["system:nodes".into()],
        };
        assert_eq!(node_of(&node), Some("n1"));
        let impostor = UserInfo {
            groups: vec![],
            ..node
        };
        assert_eq!(node_of(&impostor), None);
    }

    #[test]
    fn references_cover_volumes_env_and_env_from() {
        let pod = json!({"spec": {
            "volumes": [{"name": "v", "configMap": {"name": "cm1"}},
                        {"name": "s", "secret": {"secretName": "sec1"}}],
            "containers": [{"name": "c",
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec2", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "cm2"}}]}]}});
        assert!(references(&pod, "configMap", "cm1"));
        assert!(references(&pod, "configMap", "cm2"));
        assert!(references(&pod, "secret", "sec1"));
        assert!(references(&pod, "secret", "sec2"));
        assert!(!references(&pod, "secret", "cm1"));
        assert!(!references(&pod, "configMap", "other"));
    }
}
