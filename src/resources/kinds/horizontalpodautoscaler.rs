//! HorizontalPodAutoscaler (`autoscaling/v2`): keeps a scalable
//! workload's replica count where its metrics say it should be, between
//! `minReplicas` and `maxReplicas`. The control loop is
//! `controllers::podautoscaler`; this file is what the API server checks
//! and prints.
//!
//! `minReplicas: 0` is accepted with any metric: wkube's service proxy
//! holds the first request for a workload at zero and asks for a replica
//! (see `proxy::activate`), so a workload at zero is woken by traffic, not
//! by a metric.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::printer::{AGE, Column, NAME, age, col, n, name, s};
use crate::resources::validation::{FieldError, NameRule, int_at};

pub struct HorizontalPodAutoscaler;

/// The metric source types served.
pub const METRIC_TYPES: &[&str] = &["ContainerResource", "External", "Object", "Pods", "Resource"];

/// The default target when none is given: 80% of the pods' CPU requests.
pub const DEFAULT_CPU_UTILIZATION: i64 = 80;

impl KindSpec for HorizontalPodAutoscaler {
    type Object = Object;
    const PLURAL: &'static str = "horizontalpodautoscalers";
    const SINGULAR: &'static str = "horizontalpodautoscaler";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["hpa"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Reference",
            "string",
            "reference to the target object being scaled",
        ),
        col(
            "Targets",
            "string",
            "the current and target values of each metric",
        ),
        col(
            "MinPods",
            "string",
            "the lower limit for the number of pods that can be set by the autoscaler",
        ),
        col(
            "MaxPods",
            "integer",
            "the upper limit for the number of pods that can be set by the autoscaler",
        ),
        col(
            "Replicas",
            "integer",
            "current number of replicas of pods managed by this autoscaler",
        ),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
            return;
        };
        set_default(spec, "minReplicas", json!(1));
        let no_metrics = spec
            .get("metrics")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if no_metrics {
            spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]);
        }
        // A behavior given in part is completed with the defaults; none
        // at all stays unset (the controller applies the same defaults).
        if let Some(behavior) = spec.get_mut("behavior").filter(|b| b.is_object()) {
            for (dir, rules) in [
                ("scaleUp", default_scale_up()),
                ("scaleDown", default_scale_down()),
            ] {
                match behavior.get_mut(dir).filter(|r| r.is_object()) {
                    Some(given) => {
                        for key in ["stabilizationWindowSeconds", "selectPolicy", "policies"] {
                            set_default(given, key, rules[key].clone());
                        }
                    }
                    None => behavior[dir] = rules,
                }
            }
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for field in ["kind", "name"] {
            if s(obj, &format!("/spec/scaleTargetRef/{field}")).is_empty() {
                errs.push(FieldError::required(format!("spec.scaleTargetRef.{field}")));
            }
        }
        let min = int_at(obj, "spec.minReplicas");
        if let Some(m) = min
            && m < 0
        {
            errs.push(FieldError::invalid(
                "spec.minReplicas",
                m.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        match int_at(obj, "spec.maxReplicas") {
            None => errs.push(FieldError::required("spec.maxReplicas")),
            Some(max) if max < 1 => errs.push(FieldError::invalid(
                "spec.maxReplicas",
                max.to_string(),
                "must be greater than 0",
            )),
            Some(max) if min.is_some_and(|m| max < m) => errs.push(FieldError::invalid(
                "spec.maxReplicas",
                max.to_string(),
                "must be greater than or equal to `minReplicas`",
            )),
            Some(_) => {}
        }
        if let Some(metrics) = obj.pointer("/spec/metrics").and_then(Value::as_array) {
            for (i, m) in metrics.iter().enumerate() {
                validate_metric(m, &format!("spec.metrics[{i}]"), &mut errs);
            }
        }
        for dir in ["scaleUp", "scaleDown"] {
            if let Some(rules) = obj.pointer(&format!("/spec/behavior/{dir}")) {
                validate_rules(rules, &format!("spec.behavior.{dir}"), &mut errs);
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let min = o
            .pointer("/spec/minReplicas")
            .and_then(Value::as_i64)
            .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
        vec![
            name(o),
            json!(format!(
                "{}/{}",
                s(o, "/spec/scaleTargetRef/kind"),
                s(o, "/spec/scaleTargetRef/name")
            )),
            json!(targets(o)),
            json!(min),
            json!(n(o, "/spec/maxReplicas")),
            json!(n(o, "/status/currentReplicas")),
            age(o),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"currentReplicas": 0, "desiredReplicas": 0}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

/// Scale-up rules when none are given: no stabilization, and per 15 s at
/// most double or four pods more, whichever is larger.
pub fn default_scale_up() -> Value {
    json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15}]})
}

/// Scale-down rules when none are given: the highest recommendation of
/// the last five minutes, and up to all pods per 15 s.
pub fn default_scale_down() -> Value {
    json!({"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [
        {"type": "Percent", "value": 100, "periodSeconds": 15}]})
}

fn validate_target(target: Option<&Value>, path: &str, allowed: &[&str], errs: &mut Vec<FieldError>) {
    let Some(target) = target else {
        errs.push(FieldError::required(format!("{path}.target")));
        return;
    };
    let ty = s(target, "/type");
    if !allowed.contains(&ty) {
        errs.push(FieldError::not_supported(format!("{path}.target.type"), ty, allowed));
        return;
    }
    let (field, present) = match ty {
        "Utilization" => ("averageUtilization", target.get("averageUtilization")),
        "AverageValue" => ("averageValue", target.get("averageValue")),
        _ => ("value", target.get("value")),
    };
    match present {
        None | Some(Value::Null) => errs.push(FieldError::required(format!("{path}.target.{field}"))),
        Some(Value::Number(n)) if n.as_i64().is_none_or(|v| v <= 0) => {
            errs.push(FieldError::invalid(
                format!("{path}.target.{field}"),
                n.to_string(),
                "must be greater than 0",
            ));
        }
        Some(Value::String(q)) if crate::resources::quantity::parse(q).is_none_or(|v| v.0 <= 0) => {
            errs.push(FieldError::invalid(
                format!("{path}.target.{field}"),
                q.clone(),
                "must be a positive quantity",
            ));
        }
        Some(_) => {}
    }
}

/// The field of a metric that holds its source, by the metric's type.
fn source_field(ty: &str) -> &'static str {
    match ty {
        "Resource" => "resource",
        "ContainerResource" => "containerResource",
        "Pods" => "pods",
        "Object" => "object",
        _ => "external",
    }
}

fn validate_metric(m: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let ty = s(m, "/type");
    if !METRIC_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(format!("{path}.type"), ty, METRIC_TYPES));
        return;
    }
    let source = source_field(ty);
    let Some(src) = m.get(source).filter(|v| v.is_object()) else {
        errs.push(FieldError::required(format!("{path}.{source}")));
        return;
    };
    let at = format!("{path}.{source}");
    match ty {
        "Resource" | "ContainerResource" => {
            if s(src, "/name").is_empty() {
                errs.push(FieldError::required(format!("{at}.name")));
            }
            if ty == "ContainerResource" && s(src, "/container").is_empty() {
                errs.push(FieldError::required(format!("{at}.container")));
            }
            validate_target(src.get("target"), &at, &["Utilization", "AverageValue"], errs);
        }
        "Pods" => {
            if s(src, "/metric/name").is_empty() {
                errs.push(FieldError::required(format!("{at}.metric.name")));
            }
            validate_target(src.get("target"), &at, &["AverageValue"], errs);
        }
        "Object" => {
            for f in ["kind", "name"] {
                if s(src, &format!("/describedObject/{f}")).is_empty() {
                    errs.push(FieldError::required(format!("{at}.describedObject.{f}")));
                }
            }
            if s(src, "/metric/name").is_empty() {
                errs.push(FieldError::required(format!("{at}.metric.name")));
            }
            validate_target(src.get("target"), &at, &["Value", "AverageValue"], errs);
        }
        _ => {
            if s(src, "/metric/name").is_empty() {
                errs.push(FieldError::required(format!("{at}.metric.name")));
            }
            validate_target(src.get("target"), &at, &["Value", "AverageValue"], errs);
        }
    }
}

fn validate_rules(rules: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(w) = rules.get("stabilizationWindowSeconds").and_then(Value::as_i64)
        && !(0..=3600).contains(&w)
    {
        errs.push(FieldError::invalid(
            format!("{path}.stabilizationWindowSeconds"),
            w.to_string(),
            "must be less than or equal to 3600 and greater than or equal to 0",
        ));
    }
    let select = s(rules, "/selectPolicy");
    if !select.is_empty() && !["Max", "Min", "Disabled"].contains(&select) {
        errs.push(FieldError::not_supported(
            format!("{path}.selectPolicy"),
            select,
            &["Disabled", "Max", "Min"],
        ));
    }
    let policies = rules.get("policies").and_then(Value::as_array);
    if policies.is_some_and(Vec::is_empty) && select != "Disabled" {
        errs.push(FieldError::required(format!("{path}.policies")));
    }
    for (i, p) in policies.into_iter().flatten().enumerate() {
        let at = format!("{path}.policies[{i}]");
        let ty = s(p, "/type");
        if !["Pods", "Percent"].contains(&ty) {
            errs.push(FieldError::not_supported(format!("{at}.type"), ty, &["Percent", "Pods"]));
        }
        match p.get("value").and_then(Value::as_i64) {
            Some(v) if v > 0 => {}
            v => errs.push(FieldError::invalid(
                format!("{at}.value"),
                v.map_or_else(String::new, |v| v.to_string()),
                "must be greater than zero",
            )),
        }
        match p.get("periodSeconds").and_then(Value::as_i64) {
            Some(v) if (1..=1800).contains(&v) => {}
            v => errs.push(FieldError::invalid(
                format!("{at}.periodSeconds"),
                v.map_or_else(String::new, |v| v.to_string()),
                "must be greater than zero and less than or equal to 1800",
            )),
        }
    }
}

/// The Targets column: `NAME: CURRENT/TARGET` per metric, `<unknown>`
/// for a current value not measured yet.
fn targets(o: &Value) -> String {
    let specs = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let current = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let mut parts: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let ty = s(m, "/type");
            let source = source_field(ty);
            let src = &m[source];
            let metric = if ty == "Resource" || ty == "ContainerResource" {
                s(src, "/name").to_string()
            } else {
                s(src, "/metric/name").to_string()
            };
            let target = &src["target"];
            let cur = current.get(i).map(|c| &c[source]["current"]);
            let (want, have) = match s(target, "/type") {
                "Utilization" => (
                    format!("{}%", target["averageUtilization"]),
                    cur.and_then(|c| c["averageUtilization"].as_i64())
                        .map(|v| format!("{v}%")),
                ),
                "AverageValue" => (
                    s(target, "/averageValue").to_string(),
                    cur.and_then(|c| c["averageValue"].as_str().map(str::to_string)),
                ),
                _ => (
                    s(target, "/value").to_string(),
                    cur.and_then(|c| c["value"].as_str().map(str::to_string)),
                ),
            };
            format!(
                "{metric}: {}/{want}",
                have.unwrap_or_else(|| "<unknown>".into())
            )
        })
        .collect();
    if parts.len() > 3 {
        let more = parts.len() - 3;
        parts.truncate(3);
        parts.push(format!("+ {more} more..."));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(spec: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": spec})
    }

    #[test]
    fn defaults_give_one_replica_at_least_and_cpu_at_eighty_percent() {
        let mut o = hpa(json!({"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                               "maxReplicas": 5}));
        HorizontalPodAutoscaler::default(&mut o);
        assert_eq!(o["spec"]["minReplicas"], 1);
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(o["spec"].get("behavior").is_none());
        let mut o = hpa(json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}}));
        HorizontalPodAutoscaler::default(&mut o);
        assert_eq!(o["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 5);
        assert_eq!(o["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(o["spec"]["behavior"]["scaleUp"], default_scale_up());
    }

    #[test]
    fn validation_names_each_bad_field() {
        let errs = HorizontalPodAutoscaler::validate(&hpa(json!({
            "scaleTargetRef": {"kind": "Deployment"},
            "minReplicas": 3, "maxReplicas": 2,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}},
                {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "Value", "value": "1"}}},
                {"type": "Bogus"},
            ],
            "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 4000}]}},
        })));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.scaleTargetRef.name",
                "spec.maxReplicas",
                "spec.metrics[0].resource.target.averageUtilization",
                "spec.metrics[1].pods.target.type",
                "spec.metrics[2].type",
                "spec.behavior.scaleUp.policies[0].value",
                "spec.behavior.scaleUp.policies[0].periodSeconds",
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn targets_show_current_over_wanted() {
        let o = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]},
            "status": {"currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}});
        assert_eq!(
            targets(&o),
            "cpu: 12%/50%, requests_per_second: <unknown>/10"
        );
    }
}
