//! ResourceQuota (core v1): the most a namespace may hold — pods and other
//! objects by count, and the compute its pods ask for. The API server
//! charges each create against it (`api::quota`); the resource quota
//! controller (`controllers::resourcequota`) recounts `status.used` from
//! what is there. This file is what the API server checks and prints, and
//! the usage arithmetic both sides share, so that they count alike.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceQuota as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name};
use crate::resources::quantity::{self, QUANTITY_FORMAT, Quantity};
use crate::resources::validation::{FieldError, NameRule};

pub struct ResourceQuota;

impl KindSpec for ResourceQuota {
    type Object = Object;
    const PLURAL: &'static str = "resourcequotas";
    const SINGULAR: &'static str = "resourcequota";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["quota"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        AGE,
        col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
        col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    /// As in Kubernetes, namespace users read their quota; only cluster
    /// administrators set it.
    const ACCESS: Access = Access::ReadOnly;

    fn default(_obj: &mut Value) {}

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(hard) = obj.pointer("/spec/hard").and_then(Value::as_object) {
            for (resource, v) in hard {
                let field = format!("spec.hard[{resource}]");
                match v.as_str().and_then(quantity::parse) {
                    None => errs.push(FieldError::invalid(
                        field,
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                        format!("quantities must match the regular expression '{QUANTITY_FORMAT}'"),
                    )),
                    Some(q) if q.0 < 0 => errs.push(FieldError::invalid(
                        field,
                        v.as_str().unwrap_or_default(),
                        "must be greater than or equal to 0",
                    )),
                    Some(q) if is_integer_resource(resource) && q.0 % 1000 != 0 => {
                        errs.push(FieldError::invalid(
                            field,
                            v.as_str().unwrap_or_default(),
                            "must be an integer",
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let (request, limit) = request_and_limit_cells(o);
        vec![name(o), age(o), json!(request), json!(limit)]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        // The controller fills `hard` and `used`; until it has, creates
        // the quota tracks are refused ("status unknown").
        Some(json!({}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

/// `kubectl get quota`'s two cells: `name: used/hard` per resource,
/// `limits.*` in the second, the rest in the first.
fn request_and_limit_cells(o: &Value) -> (String, String) {
    let hard = o.pointer("/status/hard").and_then(Value::as_object);
    let used = o.pointer("/status/used").and_then(Value::as_object);
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    if let Some(hard) = hard {
        for (resource, h) in hard {
            let u = used
                .and_then(|u| u.get(resource))
                .and_then(Value::as_str)
                .unwrap_or("0");
            let cell = format!("{resource}: {u}/{}", h.as_str().unwrap_or_default());
            if resource.starts_with("limits.") {
                limit.push(cell);
            } else {
                request.push(cell);
            }
        }
    }
    (request.join(", "), limit.join(", "))
}

/// Object counts must be whole numbers.
fn is_integer_resource(resource: &str) -> bool {
    resource.starts_with("count/")
        || matches!(
            resource,
            "pods"
                | "services"
                | "services.nodeports"
                | "services.loadbalancers"
                | "configmaps"
                | "secrets"
                | "replicationcontrollers"
                | "resourcequotas"
                | "persistentvolumeclaims"
        )
}

/// Amounts by resource name (`pods`, `requests.cpu`, `count/deployments.apps`).
pub type Usage = BTreeMap<String, Quantity>;

/// Whether a pod counts against a quota: not finished, and not past its
/// deletion's grace period.
pub fn pod_counts(pod: &Value, now_unix: i64) -> bool {
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return false;
    }
    let Some(deleted_at) = pod
        .pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
    else {
        return true;
    };
    let grace = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let due = deleted_at
        .parse::<k8s_openapi::jiff::Timestamp>()
        .map_or(0, |t| t.as_second());
    now_unix <= due + grace
}

/// A container's request for `resource`: its request, or its limit when
/// only that is set (as Kubernetes defaults requests from limits).
fn container_amount(c: &Value, which: &str, resource: &str) -> Option<Quantity> {
    let at = |w: &str| {
        c.pointer(&format!("/resources/{w}/{resource}"))
            .and_then(Value::as_str)
            .and_then(quantity::parse)
    };
    match which {
        "requests" => at("requests").or_else(|| at("limits")),
        _ => at("limits"),
    }
}

/// What the pod asks for of `resource` (`requests` or `limits`): the sum
/// over its containers, or the largest init container when that is more
/// (init containers run one at a time, before the others). `None` when a
/// container does not say (so a quota tracking it cannot charge it).
fn pod_amount(pod: &Value, which: &str, resource: &str) -> (Quantity, bool) {
    let list = |field: &str| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut complete = true;
    let mut sum = 0i128;
    for c in list("containers") {
        match container_amount(&c, which, resource) {
            Some(q) => sum += q.0,
            None => complete = false,
        }
    }
    let mut init_max = 0i128;
    for c in list("initContainers") {
        match container_amount(&c, which, resource) {
            Some(q) => init_max = init_max.max(q.0),
            None => complete = false,
        }
    }
    (Quantity(sum.max(init_max)), complete)
}

/// The compute resources a quota can track on pods, with where each is
/// read from.
const COMPUTE: &[(&str, &str, &str)] = &[
    ("cpu", "requests", "cpu"),
    ("memory", "requests", "memory"),
    ("ephemeral-storage", "requests", "ephemeral-storage"),
    ("requests.cpu", "requests", "cpu"),
    ("requests.memory", "requests", "memory"),
    ("requests.ephemeral-storage", "requests", "ephemeral-storage"),
    ("limits.cpu", "limits", "cpu"),
    ("limits.memory", "limits", "memory"),
    ("limits.ephemeral-storage", "limits", "ephemeral-storage"),
];

/// What one pod uses of every resource a quota may track.
pub fn pod_usage(pod: &Value) -> Usage {
    let mut u = Usage::new();
    u.insert("pods".into(), Quantity(1000));
    u.insert("count/pods".into(), Quantity(1000));
    for (name, which, resource) in COMPUTE {
        let (q, _) = pod_amount(pod, which, resource);
        u.insert((*name).into(), q);
    }
    u
}

/// The compute resources among `tracked` that some container of the pod
/// does not state, as Kubernetes lists them (`must specify …`).
pub fn pod_missing(pod: &Value, tracked: &[&str]) -> Vec<String> {
    COMPUTE
        .iter()
        .filter(|(name, _, _)| tracked.contains(name))
        .filter(|(_, which, resource)| !pod_amount(pod, which, resource).1)
        .map(|(name, _, _)| (*name).to_string())
        .collect()
}

/// What one object of a kind (`group`, `plural`) uses: its count under
/// `count/<plural>[.<group>]`, the legacy count names of core kinds, and
/// for pods their compute and for services their node ports and load
/// balancers.
pub fn object_usage(group: &str, plural: &str, obj: &Value) -> Usage {
    if group.is_empty() && plural == "pods" {
        return pod_usage(obj);
    }
    let one = Quantity(1000);
    let mut u = Usage::new();
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    u.insert(count, one);
    if group.is_empty()
        && matches!(
            plural,
            "services"
                | "configmaps"
                | "secrets"
                | "replicationcontrollers"
                | "resourcequotas"
                | "persistentvolumeclaims"
        )
    {
        u.insert(plural.into(), one);
    }
    if group.is_empty() && plural == "services" {
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let ports = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as i128;
        let node_ports = if matches!(ty, "NodePort" | "LoadBalancer") {
            ports
        } else {
            0
        };
        u.insert("services.nodeports".into(), Quantity(node_ports * 1000));
        u.insert(
            "services.loadbalancers".into(),
            Quantity(if ty == "LoadBalancer" { 1000 } else { 0 }),
        );
    }
    u
}

/// The kind a count resource names: `(group, plural)` of `count/x.g`,
/// `count/x` and the legacy names; `None` for compute resources.
pub fn counted_kind(resource: &str) -> Option<(String, String)> {
    if let Some(rest) = resource.strip_prefix("count/") {
        return Some(match rest.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), rest.to_string()),
        });
    }
    match resource {
        "pods"
        | "services"
        | "configmaps"
        | "secrets"
        | "replicationcontrollers"
        | "resourcequotas"
        | "persistentvolumeclaims" => Some((String::new(), resource.to_string())),
        "services.nodeports" | "services.loadbalancers" => {
            Some((String::new(), "services".to_string()))
        }
        _ => None,
    }
}

/// Whether a quota tracks `obj` (of the kind `group`/`plural`): an
/// unscoped quota tracks everything; a quota with `scopes` or a
/// `scopeSelector` tracks only the pods in every one of its scopes.
pub fn in_scope(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let scopes: Vec<&str> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let exprs: Vec<&Value> = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if scopes.is_empty() && exprs.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    let priority_class = obj
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let best_effort = super::pod::qos_class(obj.get("spec")) == "BestEffort";
    let terminating = obj
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s >= 0);
    let matches = |scope: &str| match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "PriorityClass" => !priority_class.is_empty(),
        // wkube pods have no affinity terms to reach other namespaces.
        "CrossNamespacePodAffinity" => false,
        _ => false,
    };
    let selected = |e: &Value| {
        let scope = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        if scope == "PriorityClass" {
            return match op {
                "In" => values.contains(&priority_class),
                "NotIn" => !values.contains(&priority_class),
                "Exists" => !priority_class.is_empty(),
                "DoesNotExist" => priority_class.is_empty(),
                _ => false,
            };
        }
        match op {
            "DoesNotExist" => !matches(scope),
            _ => matches(scope),
        }
    };
    scopes.into_iter().all(matches) && exprs.into_iter().all(selected)
}

/// A quantity as Kubernetes prints it: whole units plain (`10`), with a
/// binary suffix for byte amounts that have one (`128Mi`), milli-units
/// with `m` (`500m`).
pub fn format(resource: &str, q: Quantity) -> String {
    if q.0 % 1000 != 0 {
        return format!("{}m", q.0);
    }
    let units = q.0 / 1000;
    let bytes = resource.contains("memory") || resource.contains("storage");
    if bytes && units != 0 {
        for (suffix, shift) in [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            let unit = 1i128 << shift;
            if units % unit == 0 {
                return format!("{}{suffix}", units / unit);
            }
        }
        for (suffix, unit) in [("T", 1_000_000_000_000i128), ("G", 1_000_000_000), ("M", 1_000_000), ("k", 1000)] {
            if units % unit == 0 {
                return format!("{}{suffix}", units / unit);
            }
        }
    }
    units.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_uses_its_containers_requests_and_limits() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}}},
        ]}});
        let u = pod_usage(&pod);
        assert_eq!(format("requests.cpu", u["requests.cpu"]), "300m");
        assert_eq!(format("requests.memory", u["requests.memory"]), "128Mi");
        assert_eq!(format("limits.cpu", u["limits.cpu"]), "1200m");
        assert_eq!(format("pods", u["pods"]), "1");
        // Container a states no memory limit.
        assert_eq!(
            pod_missing(&pod, &["requests.cpu", "limits.memory", "pods"]),
            ["limits.memory"]
        );
    }

    #[test]
    fn init_containers_count_when_they_ask_for_more() {
        let pod = json!({"spec": {
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}],
            "containers": [{"resources": {"requests": {"cpu": "500m"}}}]}});
        assert_eq!(format("cpu", pod_usage(&pod)["cpu"]), "2");
    }

    #[test]
    fn objects_count_under_their_count_names() {
        let u = object_usage("apps", "deployments", &json!({}));
        assert_eq!(u.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
        let svc = object_usage("", "services", &json!({"spec": {"type": "NodePort", "ports": [{}, {}]}}));
        assert_eq!(format("services.nodeports", svc["services.nodeports"]), "2");
        assert_eq!(format("services", svc["services"]), "1");
        assert_eq!(counted_kind("count/deployments.apps"), Some(("apps".into(), "deployments".into())));
        assert_eq!(counted_kind("configmaps"), Some((String::new(), "configmaps".into())));
        assert_eq!(counted_kind("requests.cpu"), None);
    }

    #[test]
    fn hard_limits_are_quantities_and_counts_are_whole() {
        let errs = ResourceQuota::validate(&json!({"spec": {"hard": {"pods": "1.5", "cpu": "lots", "memory": "1Gi"}}}));
        let msgs: Vec<String> = errs.iter().map(FieldError::message).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("spec.hard[pods]: Invalid value: \"1.5\": must be an integer")));
        assert!(msgs.iter().any(|m| m.starts_with("spec.hard[cpu]: Invalid value: \"lots\"")));
    }

    #[test]
    fn the_table_splits_requests_from_limits() {
        let q = json!({"status": {"hard": {"pods": "10", "limits.cpu": "2"}, "used": {"pods": "3", "limits.cpu": "0"}}});
        assert_eq!(request_and_limit_cells(&q), ("pods: 3/10".to_string(), "limits.cpu: 0/2".to_string()));
    }

    #[test]
    fn scoped_quotas_track_only_the_pods_in_their_scopes() {
        let scoped = |scopes: Value| json!({"spec": {"scopes": scopes}});
        let bare = json!({"spec": {"containers": [{"name": "c"}]}});
        let sized = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}});
        assert!(in_scope(&scoped(json!(["BestEffort"])), "", "pods", &bare));
        assert!(!in_scope(&scoped(json!(["BestEffort"])), "", "pods", &sized));
        assert!(in_scope(&scoped(json!(["NotBestEffort", "NotTerminating"])), "", "pods", &sized));
        assert!(!in_scope(&scoped(json!(["Terminating"])), "", "pods", &sized));
        assert!(!in_scope(&scoped(json!(["BestEffort"])), "", "configmaps", &json!({})));
        assert!(in_scope(&json!({"spec": {}}), "", "configmaps", &json!({})));
        let by_class = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let mut high = bare.clone();
        high["spec"]["priorityClassName"] = json!("high");
        assert!(in_scope(&by_class, "", "pods", &high));
        assert!(!in_scope(&by_class, "", "pods", &bare));
    }

    #[test]
    fn a_pod_past_its_grace_period_no_longer_counts() {
        let t0 = "2026-01-01T00:00:00Z".parse::<k8s_openapi::jiff::Timestamp>().unwrap().as_second();
        let going = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}});
        assert!(pod_counts(&going, t0 + 10));
        assert!(!pod_counts(&going, t0 + 31));
        assert!(!pod_counts(&json!({"status": {"phase": "Succeeded"}}), t0));
    }
}
