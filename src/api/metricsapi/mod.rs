//! The metrics APIs, served by the API server from what the node agents
//! measure (their stats summaries, see [`collect`]):
//!
//! - `metrics.k8s.io/v1beta1`: PodMetrics and NodeMetrics, what
//!   `kubectl top` and the autoscaler read: each container's cores in use
//!   over the agent's sampling window and the memory its instances hold.
//! - `custom.metrics.k8s.io/v1beta2`: each pod's HTTP requests per second
//!   and requests in flight, and their sums over a Service's pods.
//!
//! Both are read-only and never stored: a request is answered from the
//! last gathering, and checked by RBAC like any resource of its group.

pub mod collect;
pub mod custom;

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::authn::UserInfo;
use super::rbac::Attributes;
use super::request::{Query, json_response};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use crate::agentapi::summary::{PodStats, Summary};
use crate::resources;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// What a path under `/apis/metrics.k8s.io/v1beta1` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// PodMetrics in one namespace (`None`: all), or one by name.
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
    /// NodeMetrics, or one by name.
    Nodes { name: Option<String> },
}

/// Recognises a metrics path (`None`: not one).
pub fn parse(path: &str) -> Option<Target> {
    let rest = path
        .strip_prefix("/apis/metrics.k8s.io/v1beta1/")?
        .trim_end_matches('/');
    let segs: Vec<&str> = rest.split('/').collect();
    let own = |s: &str| Some(s.to_string());
    Some(match segs.as_slice() {
        ["pods"] => Target::Pods {
            namespace: None,
            name: None,
        },
        ["namespaces", ns, "pods"] => Target::Pods {
            namespace: own(ns),
            name: None,
        },
        ["namespaces", ns, "pods", name] => Target::Pods {
            namespace: own(ns),
            name: own(name),
        },
        ["nodes"] => Target::Nodes { name: None },
        ["nodes", name] => Target::Nodes { name: own(name) },
        _ => return None,
    })
}

/// Answers a metrics request for `user`.
///
/// # Errors
/// 405 for anything but GET, 403 without `get`/`list` on the resource,
/// 400 for a bad selector, 404 for a pod or node without metrics.
pub async fn handle(
    state: &ApiState,
    user: &UserInfo,
    method: &Method,
    target: Target,
    raw_query: Option<&str>,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let query = Query::parse(raw_query)?;
    if query.flag("watch") {
        return Err(ApiError::MethodNotAllowed);
    }
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), &[])?;
    let (resource, namespace, name) = match &target {
        Target::Pods { namespace, name } => ("pods", namespace.clone(), name.clone()),
        Target::Nodes { name } => ("nodes", None, name.clone()),
    };
    state.check(
        user,
        &Attributes {
            verb: if name.is_some() { "get" } else { "list" }.into(),
            group: GROUP.into(),
            resource: resource.into(),
            namespace: namespace.clone().unwrap_or_default(),
            name: name.clone().unwrap_or_default(),
            ..Default::default()
        },
    )?;
    let gathered = state.usage.gather(state).await?;
    let keep = |obj: &Value| labels.matches(obj) && fields.matches(obj);
    match target {
        Target::Pods { namespace, name } => {
            let pods = pods_in(state, namespace.as_deref()).await?;
            let mut items: Vec<Value> = measured(&gathered, &pods)
                .into_iter()
                .filter_map(|(p, pod)| pod_metrics(p, pod))
                .collect();
            if let Some(name) = name {
                items.retain(|m| m["metadata"]["name"] == name.as_str());
                return match items.pop() {
                    Some(m) => Ok(json_response(StatusCode::OK, &m)),
                    None => Err(not_found("pods", &name)),
                };
            }
            items.retain(|m| keep(m));
            items.sort_by(|a, b| {
                let key = |v: &Value| {
                    (
                        v["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        v["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    )
                };
                key(a).cmp(&key(b))
            });
            Ok(json_response(
                StatusCode::OK,
                &list("PodMetricsList", items),
            ))
        }
        Target::Nodes { name } => {
            let mut items: Vec<Value> = gathered
                .summaries
                .iter()
                .filter_map(|s| {
                    let node = gathered
                        .nodes
                        .iter()
                        .find(|n| n["metadata"]["name"] == s.node.node_name.as_str())?;
                    node_metrics(s, node)
                })
                .collect();
            if let Some(name) = name {
                items.retain(|m| m["metadata"]["name"] == name.as_str());
                return match items.pop() {
                    Some(m) => Ok(json_response(StatusCode::OK, &m)),
                    None => Err(not_found("nodes", &name)),
                };
            }
            items.retain(|m| keep(m));
            items.sort_by(|a, b| {
                a["metadata"]["name"]
                    .as_str()
                    .cmp(&b["metadata"]["name"].as_str())
            });
            Ok(json_response(
                StatusCode::OK,
                &list("NodeMetricsList", items),
            ))
        }
    }
}

/// The stored pods of a namespace (`None`: all), by (namespace, name).
pub(crate) async fn pods_in(
    state: &ApiState,
    namespace: Option<&str>,
) -> Result<HashMap<(String, String), Value>, ApiError> {
    let kind = resources::by_resource("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    let page = state
        .registry
        .list(kind, namespace, 0, None, &|_| true)
        .await?;
    Ok(page
        .items
        .into_iter()
        .map(|p| {
            let key = (
                p["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            );
            (key, p)
        })
        .collect())
}

/// Each measured pod that is the stored pod of its name (not an older one
/// of the same name), with its stored object; `pods` as [`pods_in`]
/// gives them.
pub(crate) fn measured<'a>(
    gathered: &'a collect::Gathering,
    pods: &'a HashMap<(String, String), Value>,
) -> Vec<(&'a PodStats, &'a Value)> {
    gathered
        .summaries
        .iter()
        .flat_map(|s| s.pods.iter())
        .filter_map(|p| {
            let pod = pods.get(&(p.pod_ref.namespace.clone(), p.pod_ref.name.clone()))?;
            (pod.pointer("/metadata/uid").and_then(Value::as_str) == Some(p.pod_ref.uid.as_str()))
                .then_some((p, pod))
        })
        .collect()
}

fn not_found(resource: &str, name: &str) -> ApiError {
    ApiError::NotFound {
        group: GROUP.into(),
        resource: resource.into(),
        name: name.into(),
    }
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    })
}

/// A window as a duration string (`4.999s`).
fn window(millis: u64) -> String {
    format!("{}.{:03}s", millis / 1000, millis % 1000)
}

/// A CPU quantity in nanocores.
pub fn cpu_quantity(nano_cores: u64) -> String {
    format!("{nano_cores}n")
}

/// A memory quantity in bytes (`Ki` when it divides evenly, as the
/// metrics pipeline usually writes them).
pub fn memory_quantity(bytes: u64) -> String {
    if bytes > 0 && bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// A pod's metrics, from its stats and its stored object; `None` until
/// every container has a CPU rate (a pod just started has one sample).
fn pod_metrics(p: &PodStats, pod: &Value) -> Option<Value> {
    let mut containers = Vec::new();
    let mut widest = 0;
    let mut time = String::new();
    for c in &p.containers {
        let cpu = c.cpu.as_ref()?;
        let nano_cores = cpu.usage_nano_cores?;
        widest = widest.max(cpu.window_millis.unwrap_or(0));
        time.clone_from(&cpu.time);
        // The window's high-water mark: an instance per request holds its
        // memory only while it answers.
        let memory = c
            .memory
            .as_ref()
            .and_then(|m| m.recent_max_working_set_bytes.or(m.working_set_bytes))
            .unwrap_or(0);
        containers.push(json!({
            "name": c.name,
            "usage": {"cpu": cpu_quantity(nano_cores), "memory": memory_quantity(memory)},
        }));
    }
    if containers.is_empty() {
        return None;
    }
    let meta = &pod["metadata"];
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": meta.get("labels").cloned().unwrap_or_else(|| json!({})),
            "creationTimestamp": time,
        },
        "timestamp": time,
        "window": window(widest),
        "containers": containers,
    }))
}

/// A node's metrics: the sums over the pods it runs.
fn node_metrics(s: &Summary, node: &Value) -> Option<Value> {
    let cpu = s.node.cpu.as_ref()?;
    let memory = s
        .node
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes)
        .unwrap_or(0);
    let widest = s
        .pods
        .iter()
        .flat_map(|p| &p.containers)
        .filter_map(|c| c.cpu.as_ref()?.window_millis)
        .max()
        .unwrap_or(crate::agentapi::summary::WINDOW.as_millis() as u64);
    let meta = &node["metadata"];
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {
            "name": meta["name"],
            "labels": meta.get("labels").cloned().unwrap_or_else(|| json!({})),
            "creationTimestamp": cpu.time,
        },
        "timestamp": cpu.time,
        "window": window(widest),
        "usage": {
            "cpu": cpu_quantity(cpu.usage_nano_cores.unwrap_or(0)),
            "memory": memory_quantity(memory),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_pods_and_nodes() {
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods"),
            Some(Target::Pods {
                namespace: Some("ns".into()),
                name: None
            })
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/web"),
            Some(Target::Pods {
                namespace: Some("ns".into()),
                name: Some("web".into())
            })
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/pods"),
            Some(Target::Pods {
                namespace: None,
                name: None
            })
        );
        assert_eq!(
            parse("/apis/metrics.k8s.io/v1beta1/nodes/n1"),
            Some(Target::Nodes {
                name: Some("n1".into())
            })
        );
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1/namespaces/ns"), None);
        assert_eq!(parse("/apis/metrics.k8s.io/v1beta1/nodes/a/b"), None);
        assert_eq!(parse("/apis/apps/v1/deployments"), None);
    }

    #[test]
    fn quantities_are_nanocores_and_kibibytes() {
        assert_eq!(cpu_quantity(1_500_000), "1500000n");
        assert_eq!(memory_quantity(2 << 20), "2048Ki");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(window(4_999), "4.999s");
    }
}
