//! The node authorizer: a node's credential (user `system:node:NAME`, group
//! `system:nodes`) reaches only what that node needs — its own Node and
//! Lease, the pods bound to it, and the secrets, config maps and
//! service-account tokens those pods use — however broad the RBAC role
//! bound to `system:nodes` is. Checked before RBAC; anything it does not
//! restrict is left to RBAC.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::ApiState;
use super::authn::UserInfo;
use super::nodegraph::{Uses, uses_of};
use super::rbac::Attributes;
use super::status::ApiError;
use crate::resources::{self, Kind};

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
            let object = if a.resource == "secrets" {
                Uses::Secret(a.name.clone())
            } else {
                Uses::ConfigMap(a.name.clone())
            };
            if node_uses(state, node, &a.namespace, object).await
                || (a.resource == "secrets"
                    && (ingress_certificate(state, &a.namespace, &a.name).await
                        || gateway_certificate(state, &a.namespace, &a.name).await))
            {
                Decision::NoOpinion
            } else {
                deny(format!(
                    "no relationship found between node {node:?} and this object"
                ))
            }
        }
        ("", "serviceaccounts", "token") | ("", "serviceaccounts", "") => {
            if node_uses(
                state,
                node,
                &a.namespace,
                Uses::ServiceAccount(a.name.clone()),
            )
            .await
            {
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

/// Whether an Ingress of a class the node proxies serve names the Secret
/// `ns/name` in its `spec.tls`: every node serves those Ingresses, so every
/// node may read their certificates (and nothing else by this rule).
async fn ingress_certificate(state: &ApiState, ns: &str, name: &str) -> bool {
    use crate::resources::kinds::ingressclass::WKUBE_CONTROLLER;
    let (Some(ingresses), Some(classes)) = (
        resources::by_resource("networking.k8s.io", "v1", "ingresses"),
        resources::by_resource("networking.k8s.io", "v1", "ingressclasses"),
    ) else {
        return false;
    };
    let names_it = |i: &Value| {
        i.pointer("/spec/tls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|t| t.get("secretName").and_then(Value::as_str) == Some(name))
    };
    let Ok(page) = state
        .registry
        .list(ingresses, Some(ns), 0, None, &names_it)
        .await
    else {
        return false;
    };
    for ingress in page.items {
        let Some(class) = ingress
            .pointer("/spec/ingressClassName")
            .and_then(Value::as_str)
        else {
            continue;
        };
        if let Ok(Some(c)) = state.registry.try_get(classes, None, class).await
            && c.pointer("/spec/controller").and_then(Value::as_str) == Some(WKUBE_CONTROLLER)
        {
            return true;
        }
    }
    false
}

/// Whether a Gateway of a class the node proxies serve, in `ns`, names
/// the Secret `ns/name` as a listener's certificate (the same reasoning as
/// for Ingresses: every node serves those listeners).
async fn gateway_certificate(state: &ApiState, ns: &str, name: &str) -> bool {
    use crate::resources::gateway::GROUP;
    use crate::resources::kinds::gatewayclass::WKUBE_CONTROLLER;
    let (Some(gateways), Some(classes)) = (
        resources::by_resource(GROUP, "v1", "gateways"),
        resources::by_resource(GROUP, "v1", "gatewayclasses"),
    ) else {
        return false;
    };
    let names_it = |g: &Value| {
        g.pointer("/spec/listeners")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| l.pointer("/tls/certificateRefs").and_then(Value::as_array))
            .flatten()
            .any(|r| {
                r.get("name").and_then(Value::as_str) == Some(name)
                    && r.get("namespace")
                        .and_then(Value::as_str)
                        .is_none_or(|n| n == ns)
            })
    };
    let Ok(page) = state
        .registry
        .list(gateways, Some(ns), 0, None, &names_it)
        .await
    else {
        return false;
    };
    for gw in page.items {
        let class = gw
            .pointer("/spec/gatewayClassName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Ok(Some(c)) = state.registry.try_get(classes, None, class).await
            && c.pointer("/spec/controllerName").and_then(Value::as_str) == Some(WKUBE_CONTROLLER)
        {
            return true;
        }
    }
    false
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

/// Whether a pod in `ns` bound to `node` uses `object`: looked up in the
/// graph ([`super::nodegraph`]), which answers a kubelet's requests as its
/// pods start, and on a miss read from the store.
async fn node_uses(state: &ApiState, node: &str, ns: &str, object: Uses) -> bool {
    state.node_graph.uses(node, ns, &object)
        || any_pod_on(state, node, ns, |p| uses_of(p).contains(&object)).await
}

/// Whether a pod in `ns` bound to `node` satisfies `uses`, read from the
/// store (the graph's fallback). The pods are decoded one at a time and
/// the search stops at the first match.
async fn any_pod_on(state: &ApiState, node: &str, ns: &str, uses: impl Fn(&Value) -> bool) -> bool {
    let Some(kind) = resources::by_resource("", "v1", "pods") else {
        return false;
    };
    let Ok(page) = state
        .registry
        .list_raw(kind, Some(ns), 0, None, &|_| true)
        .await
    else {
        return false;
    };
    page.items.iter().any(|kv| {
        super::registry::decode(kv).is_ok_and(|p| {
            p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) && uses(&p)
        })
    })
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
        let uses = uses_of(&pod);
        let has = |u: Uses| uses.contains(&u);
        assert!(has(Uses::ConfigMap("cm1".into())));
        assert!(has(Uses::ConfigMap("cm2".into())));
        assert!(has(Uses::Secret("sec1".into())));
        assert!(has(Uses::Secret("sec2".into())));
        assert!(!has(Uses::Secret("cm1".into())));
        assert!(!has(Uses::ConfigMap("other".into())));
    }
}

/// Labels a node may set on its own Node although they sit in the
/// `kubernetes.io` / `k8s.io` namespaces (those are otherwise reserved:
/// a node that could label itself `node-role.kubernetes.io/control-plane`
/// would draw workloads meant for the control plane).
const NODE_SETTABLE_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];

/// Label prefixes a node may set freely.
const NODE_SETTABLE_PREFIXES: &[&str] = &["kubelet.kubernetes.io/", "node.kubernetes.io/"];

/// Whether a node may set, change or remove the label `key` on itself.
fn node_may_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    if NODE_SETTABLE_LABELS.contains(&key)
        || NODE_SETTABLE_PREFIXES.iter().any(|p| key.starts_with(p))
    {
        return true;
    }
    if prefix == "node-restriction.kubernetes.io"
        || prefix.ends_with(".node-restriction.kubernetes.io")
    {
        return false;
    }
    let reserved = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    !(reserved("kubernetes.io") || reserved("k8s.io"))
}

fn labels(obj: Option<&Value>) -> Map<String, Value> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Node restriction admission: what a node's credential may write, judged
/// on the object itself (the authorizer above sees only the URL). A node
/// creates only its own Node, and never sets or changes reserved labels on
/// it. `old` is the stored object on update.
///
/// # Errors
/// [`ApiError::Forbidden`] with Kubernetes' message.
pub fn admit(
    user: &UserInfo,
    kind: &Kind,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    if !kind.group.is_empty() || kind.kind != "Node" {
        return Ok(());
    }
    let name = super::objects::name_of(new);
    let forbidden = |why: String| ApiError::Forbidden {
        message: format!("nodes \"{name}\" is forbidden: {why}"),
        kind: "nodes".into(),
        name: name.to_string(),
        group: String::new(),
    };
    if name != node {
        return Err(forbidden(format!(
            "node {node:?} is not allowed to modify node {name:?}"
        )));
    }
    let (before, after) = (labels(old), labels(Some(new)));
    let touched: BTreeSet<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .filter(|k| !node_may_label(k))
        .collect();
    if touched.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = touched.into_iter().map(String::as_str).collect();
    Err(forbidden(match old {
        None => format!(
            "node {node:?} is not allowed to set the following labels: {}",
            keys.join(", ")
        ),
        Some(_) => format!(
            "node {node:?} is not allowed to modify labels: {}",
            keys.join(", ")
        ),
    }))
}

#[cfg(test)]
mod restriction_tests {
    use serde_json::json;

    use super::*;

    fn node_user(name: &str) -> UserInfo {
        UserInfo {
            username: format!("system:node:{name}"),
            uid: String::new(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        }
    }

    fn node_obj(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
    }

    fn nodes() -> &'static Kind {
        resources::by_kind("", "Node").unwrap()
    }

    #[test]
    fn reserved_labels_are_the_kubernetes_namespaces_less_the_kubelets_own() {
        for (key, allowed) in [
            ("app", true),
            ("example.com/tier", true),
            ("kubernetes.io/hostname", true),
            ("topology.kubernetes.io/zone", true),
            (
                "node.kubernetes.io/exclude-from-external-load-balancers",
                true,
            ),
            ("kubelet.kubernetes.io/anything", true),
            ("node-role.kubernetes.io/control-plane", false),
            ("node-role.kubernetes.io/worker", false),
            ("kubernetes.io/role", false),
            ("foo.k8s.io/x", false),
            ("k8s.io/x", false),
            ("node-restriction.kubernetes.io/pool", false),
        ] {
            assert_eq!(node_may_label(key), allowed, "{key}");
        }
    }

    #[test]
    fn a_node_creates_only_itself_and_never_with_reserved_labels() {
        let n1 = node_user("n1");
        admit(
            &n1,
            nodes(),
            None,
            &node_obj("n1", json!({"kubernetes.io/hostname": "n1"})),
        )
        .unwrap();
        let other = admit(&n1, nodes(), None, &node_obj("n2", json!({}))).unwrap_err();
        assert!(
            other
                .to_string()
                .contains(r#"node "n1" is not allowed to modify node "n2""#),
            "{other}"
        );
        let role = json!({"node-role.kubernetes.io/control-plane": ""});
        let err = admit(&n1, nodes(), None, &node_obj("n1", role.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"nodes "n1" is forbidden: node "n1" is not allowed to set the following labels: node-role.kubernetes.io/control-plane"#
        );
        let old = node_obj("n1", json!({}));
        let err = admit(&n1, nodes(), Some(&old), &node_obj("n1", role.clone())).unwrap_err();
        assert!(
            err.to_string().contains("not allowed to modify labels"),
            "{err}"
        );
        // An admin set it: the node keeps it through its own updates, but
        // cannot take it off.
        let labelled = node_obj("n1", role.clone());
        admit(&n1, nodes(), Some(&labelled), &labelled).unwrap();
        admit(&n1, nodes(), Some(&labelled), &old).unwrap_err();
        // Users that are not nodes are not judged here.
        let admin = UserInfo {
            username: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        admit(&admin, nodes(), None, &node_obj("n2", role)).unwrap();
    }
}
