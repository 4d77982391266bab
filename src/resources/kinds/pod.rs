//! Pod: one or more Wasm containers bound to a node.

use k8s_openapi::api::core::v1::Pod as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::default_pod_spec;
use crate::resources::printer::{
    AGE, Column, Keep, NAME, age, at, col, n, none_if_empty, s, wide,
};
use crate::resources::validation::{FieldError, NameRule, validate_pod_spec};

pub struct Pod;

impl KindSpec for Pod {
    type Object = Object;
    const PLURAL: &'static str = "pods";
    const SINGULAR: &'static str = "pod";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [Subresource] = &[
        Subresource::Status,
        Subresource::Binding,
        Subresource::Log,
        Subresource::Proxy,
        Subresource::Exec,
        Subresource::Attach,
        Subresource::PortForward,
        Subresource::Eviction,
    ];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Ready",
            "string",
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        col(
            "Status",
            "string",
            "The aggregate status of the containers in this pod.",
        ),
        col(
            "Restarts",
            "string",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        AGE,
        wide(
            "IP",
            "string",
            "IP address allocated to the pod. Routable at least within the cluster.",
        ),
        wide(
            "Node",
            "string",
            "NodeName is a request to schedule this pod onto a specific node.",
        ),
        wide(
            "Nominated Node",
            "string",
            "nominatedNodeName is set only when this pod preempts other pods on the node.",
        ),
        wide(
            "Readiness Gates",
            "string",
            "If specified, all readiness gates will be evaluated for pod readiness.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ];
    const ALLOCATION: Allocation = Allocation::PodPriority;
    const DELETION: Deletion = Deletion::Graceful;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            default_pod_spec(spec);
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_pod_spec(obj.get("spec"), "spec", &mut errs);
        errs
    }

    /// `kubectl get pods` lists thousands: its rows decode the container
    /// count, the node and these status fields, not the whole pod.
    const CELL_FIELDS: Option<&'static [(&'static str, Keep)]> = Some(&[
        (
            "spec",
            Keep::Only(&[("containers", Keep::Count), ("nodeName", Keep::All)]),
        ),
        (
            "status",
            Keep::Only(&[
                ("containerStatuses", Keep::All),
                ("phase", Keep::All),
                ("reason", Keep::All),
                ("podIP", Keep::All),
                ("nominatedNodeName", Keep::All),
            ]),
        ),
    ]);

    fn cells(o: &Value) -> Vec<Value> {
        let statuses = o
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let total = o
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let ready = statuses
            .iter()
            .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
            .count();
        let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
        let mut reason = s(o, "/status/phase").to_string();
        if !s(o, "/status/reason").is_empty() {
            reason = s(o, "/status/reason").to_string();
        }
        for c in statuses {
            let waiting = s(c, "/state/waiting/reason");
            let term = s(c, "/state/terminated/reason");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if !term.is_empty() {
                reason = term.to_string();
            } else if at(c, "/state/terminated").is_some() {
                reason = format!("ExitCode:{}", n(c, "/state/terminated/exitCode"));
            }
        }
        if at(o, "/metadata/deletionTimestamp").is_some() {
            reason = "Terminating".into();
        }
        if reason.is_empty() {
            reason = "Pending".into();
        }
        vec![
            json!(s(o, "/metadata/name")),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts.to_string()),
            age(o),
            json!(none_if_empty(s(o, "/status/podIP").to_string())),
            json!(none_if_empty(s(o, "/spec/nodeName").to_string())),
            json!(none_if_empty(s(o, "/status/nominatedNodeName").to_string())),
            json!("<none>"),
        ]
    }

    fn initial_status(obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending", "qosClass": qos_class(obj.get("spec"))}))
    }

    fn on_create(obj: &mut Value, ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        if obj
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && obj.get("spec").is_none_or(Value::is_object)
        {
            obj["spec"]["serviceAccountName"] = json!("default");
        }
        add_default_tolerations(
            obj,
            ctx.not_ready_toleration_seconds,
            ctx.unreachable_toleration_seconds,
        );
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

/// Kubernetes' QoS class of a pod from its containers' requests and limits.
pub fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let has_both = |res: &str| {
            let l = lim.and_then(|l| l.get(res));
            let r = req.and_then(|r| r.get(res)).or(l);
            l.is_some() && r == l
        };
        if !(has_both("cpu") && has_both("memory")) {
            guaranteed = false;
        }
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// Kubernetes' DefaultTolerationSeconds: a pod that does not tolerate the
/// `not-ready` or `unreachable` NoExecute taints already gets tolerations
/// for them, so that it stays bound to a failing node for a while (and is
/// evicted after that) instead of at once.
fn add_default_tolerations(obj: &mut Value, not_ready_secs: i64, unreachable_secs: i64) {
    let mut list = obj
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let covers = |list: &[Value], key: &str| {
        list.iter().any(|t| {
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let tkey = t.get("key").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            (effect.is_empty() || effect == "NoExecute")
                && (tkey == key || (tkey.is_empty() && op == "Exists"))
        })
    };
    let mut changed = false;
    for (key, secs) in [
        ("node.kubernetes.io/not-ready", not_ready_secs),
        ("node.kubernetes.io/unreachable", unreachable_secs),
    ] {
        if !covers(&list, key) {
            list.push(json!({"key": key, "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": secs}));
            changed = true;
        }
    }
    if changed && obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"]["tolerations"] = json!(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_default_tolerations_for_failing_nodes_unless_they_have_their_own() {
        let mut pod = json!({"spec": {"containers": []}});
        add_default_tolerations(&mut pod, 300, 5);
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 5},
            ])
        );
        let own = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                          "effect": "NoExecute"}]);
        let mut pod = json!({"spec": {"tolerations": own.clone()}});
        add_default_tolerations(&mut pod, 300, 300);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], own[0]);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        // Tolerating everything covers both.
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_default_tolerations(&mut pod, 300, 300);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        assert_eq!(
            qos_class(Some(&json!({"containers": [{"name": "a"}]}))),
            "BestEffort"
        );
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(Some(&g)), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(Some(&b)), "Burstable");
    }
}
