//! HorizontalPodAutoscaler as `autoscaling/v1`: the same objects as
//! `autoscaling/v2` (stored once, in v2), seen and written in v1's shape.
//!
//! A v1 request is answered by the v2 handlers through [`super::views`]:
//! this file only says how one shape becomes the other.
//!
//! v1 holds only a CPU utilization target. Everything else v2 has (other
//! metrics, `behavior`, conditions, other current metrics) rides along in
//! annotations, as Kubernetes keeps it, so a v2 object read and written
//! back through v1 loses nothing.

use serde_json::{Map, Value, json};

use super::views::View;

const V1: &str = "/apis/autoscaling/v1/";
const V2: &str = "/apis/autoscaling/v2/";
const PLURAL: &str = "horizontalpodautoscalers";

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

/// The v2 object of a v1 one.
pub fn to_v2(v1: &Value) -> Value {
    let mut out = v1.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    let annotations = out
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut kept = Map::new();
    let mut carried = Map::new();
    for (k, v) in annotations {
        if [METRICS, BEHAVIOR, CONDITIONS, CURRENT_METRICS].contains(&k.as_str()) {
            carried.insert(k, v);
        } else {
            kept.insert(k, v);
        }
    }
    let parsed = |k: &str| {
        carried
            .get(k)
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    };
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        if kept.is_empty() {
            meta.remove("annotations");
        } else {
            meta.insert("annotations".into(), Value::Object(kept));
        }
    }
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        let mut metrics: Vec<Value> = Vec::new();
        if let Some(pct) = spec.remove("targetCPUUtilizationPercentage") {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": pct}}}));
        }
        if let Some(Value::Array(more)) = parsed(METRICS) {
            metrics.extend(more);
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), Value::Array(metrics));
        }
        if let Some(b) = parsed(BEHAVIOR) {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut) {
        let mut current: Vec<Value> = Vec::new();
        if let Some(pct) = status.remove("currentCPUUtilizationPercentage") {
            current.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": pct}}}));
        }
        if let Some(Value::Array(more)) = parsed(CURRENT_METRICS) {
            current.extend(more);
        }
        if !current.is_empty() {
            status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(c) = parsed(CONDITIONS) {
            status.insert("conditions".into(), c);
        }
    }
    out
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

/// The v1 view of a v2 object.
pub fn to_v1(v2: &Value) -> Value {
    let mut out = v2.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    let mut carried: Vec<(&str, Value)> = Vec::new();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = match spec.remove("metrics") {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        let (cpu, rest): (Vec<Value>, Vec<Value>) =
            metrics.into_iter().partition(is_cpu_utilization);
        if let Some(pct) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/target/averageUtilization"))
        {
            spec.insert("targetCPUUtilizationPercentage".into(), pct.clone());
        }
        if !rest.is_empty() {
            carried.push((METRICS, Value::Array(rest)));
        }
        if let Some(b) = spec.remove("behavior").filter(|b| !b.is_null()) {
            carried.push((BEHAVIOR, b));
        }
    }
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut) {
        let current = match status.remove("currentMetrics") {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        let (cpu, rest): (Vec<Value>, Vec<Value>) = current
            .into_iter()
            .partition(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu");
        if let Some(pct) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        {
            status.insert("currentCPUUtilizationPercentage".into(), pct.clone());
        }
        if !rest.is_empty() {
            carried.push((CURRENT_METRICS, Value::Array(rest)));
        }
        if let Some(c) = status.remove("conditions").filter(|c| !c.is_null()) {
            carried.push((CONDITIONS, c));
        }
    }
    if !carried.is_empty()
        && let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut)
    {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            for (k, v) in carried {
                a.insert(k.into(), json!(v.to_string()));
            }
        }
    }
    out
}

/// autoscaling/v1 as a view of the stored autoscaling/v2 objects.
pub const VIEW: View = View {
    view_prefix: V1,
    stored_prefix: V2,
    plural: PLURAL,
    kind: "HorizontalPodAutoscaler",
    view_api_version: "autoscaling/v1",
    stored_api_version: "autoscaling/v2",
    stored_group: "autoscaling",
    stored_version: "v2",
    to_view: to_v1,
    to_stored: to_v2,
    selector: |s| s.to_string(),
};

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "annotations": {"team": "a"}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "10"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 30}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}})
    }

    #[test]
    fn v1_shows_the_cpu_target_and_carries_the_rest_in_annotations() {
        let v1 = to_v1(&v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 30);
        let a = &v1["metadata"]["annotations"];
        assert_eq!(a["team"], "a");
        assert!(a[METRICS].as_str().unwrap().contains("requests_per_second"));
        assert!(
            a[BEHAVIOR]
                .as_str()
                .unwrap()
                .contains("stabilizationWindowSeconds")
        );
        assert!(a[CONDITIONS].as_str().unwrap().contains("AbleToScale"));
    }

    #[test]
    fn a_round_trip_through_v1_loses_nothing() {
        assert_eq!(to_v2(&to_v1(&v2())), v2());
    }

    #[test]
    fn a_plain_v1_object_becomes_a_cpu_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                     "targetCPUUtilizationPercentage": 50}});
        let v2 = to_v2(&v1);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert!(v2["metadata"].get("annotations").is_none());
    }

    #[test]
    fn only_autoscaler_paths_are_taken() {
        let matches = |p: &str| VIEW.matches(p);
        assert!(matches(
            "/apis/autoscaling/v1/namespaces/ns/horizontalpodautoscalers"
        ));
        assert!(matches(
            "/apis/autoscaling/v1/namespaces/ns/horizontalpodautoscalers/web/status"
        ));
        assert!(matches("/apis/autoscaling/v1/horizontalpodautoscalers"));
        assert!(!matches("/apis/autoscaling/v1"));
        assert!(!matches("/apis/autoscaling/v2/horizontalpodautoscalers"));
    }
}
