//! LimitRange (core v1): per-container (or per-pod) bounds on compute in a
//! namespace, and the requests and limits a container gets when it states
//! none. The API server applies and checks it when a pod is created
//! (`api::quota`); this file is what the API server checks and prints,
//! and the rules themselves, kept pure.

use k8s_openapi::api::core::v1::LimitRange as Object;
use serde_json::{Map, Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{CREATED_AT, Column, NAME, created_at, name};
use crate::resources::quantity::{self, QUANTITY_FORMAT, Quantity};
use crate::resources::validation::{FieldError, NameRule};

pub struct LimitRange;

/// The item types Kubernetes knows.
const TYPES: &[&str] = &["Pod", "Container", "PersistentVolumeClaim"];

impl KindSpec for LimitRange {
    type Object = Object;
    const PLURAL: &'static str = "limitranges";
    const SINGULAR: &'static str = "limitrange";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["limits"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[NAME, CREATED_AT];
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    /// Set by cluster administrators, read by the namespace's users.
    const ACCESS: Access = Access::ReadOnly;

    /// As Kubernetes defaults a Container item: the default limit is the
    /// max, the default request the default limit, else the min.
    fn default(obj: &mut Value) {
        let Some(items) = obj.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else {
            return;
        };
        for item in items.iter_mut().filter(|i| i["type"] == "Container") {
            let copy_missing = |item: &mut Value, from: &str, to: &str| {
                let Some(src) = item.get(from).and_then(Value::as_object).cloned() else {
                    return;
                };
                if !item.get(to).is_some_and(Value::is_object) {
                    item[to] = json!({});
                }
                for (r, q) in src {
                    if item[to].get(&r).is_none() {
                        item[to][r] = q;
                    }
                }
                if item[to].as_object().is_some_and(Map::is_empty)
                    && let Some(m) = item.as_object_mut()
                {
                    m.remove(to);
                }
            };
            copy_missing(item, "max", "default");
            copy_missing(item, "default", "defaultRequest");
            copy_missing(item, "min", "defaultRequest");
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(items) = obj.pointer("/spec/limits").and_then(Value::as_array) else {
            return errs;
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("spec.limits[{i}]");
            let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
            if !TYPES.contains(&ty) {
                errs.push(FieldError::not_supported(format!("{at}.type"), ty, TYPES));
            }
            let q = |field: &str, r: &str| {
                item.pointer(&format!("/{field}/{r}"))
                    .and_then(Value::as_str)
                    .and_then(quantity::parse)
            };
            for field in ["max", "min", "default", "defaultRequest", "maxLimitRequestRatio"] {
                for (r, v) in item.get(field).and_then(Value::as_object).into_iter().flatten() {
                    if v.as_str().and_then(quantity::parse).is_none() {
                        errs.push(FieldError::invalid(
                            format!("{at}.{field}[{r}]"),
                            v.to_string(),
                            format!("quantities must match the regular expression '{QUANTITY_FORMAT}'"),
                        ));
                    }
                }
            }
            if ty == "Pod" {
                for field in ["default", "defaultRequest"] {
                    if item.get(field).is_some_and(|d| d.as_object().is_some_and(|m| !m.is_empty())) {
                        errs.push(FieldError {
                            kind: crate::resources::validation::FieldErrorKind::Forbidden,
                            field: format!("{at}.{field}"),
                            value: None,
                            detail: "may not be specified when `type` is 'Pod'".into(),
                        });
                    }
                }
            }
            let resources: std::collections::BTreeSet<String> = ["max", "min", "default", "defaultRequest"]
                .iter()
                .filter_map(|f| item.get(*f).and_then(Value::as_object))
                .flat_map(|m| m.keys().cloned())
                .collect();
            for r in &resources {
                let (min, max) = (q("min", r), q("max", r));
                let (def, req) = (q("default", r), q("defaultRequest", r));
                let show = |f: &str| item.pointer(&format!("/{f}/{r}")).and_then(Value::as_str).unwrap_or("").to_string();
                if let (Some(min), Some(max)) = (min, max)
                    && min > max
                {
                    errs.push(FieldError::invalid(format!("{at}.min[{r}]"), show("min"),
                        format!("min value {} is greater than max value {}", show("min"), show("max"))));
                }
                if let (Some(req), Some(max)) = (req, max)
                    && req > max
                {
                    errs.push(FieldError::invalid(format!("{at}.defaultRequest[{r}]"), show("defaultRequest"),
                        format!("default request value {} is greater than max value {}", show("defaultRequest"), show("max"))));
                }
                if let (Some(req), Some(def)) = (req, def)
                    && req > def
                {
                    errs.push(FieldError::invalid(format!("{at}.defaultRequest[{r}]"), show("defaultRequest"),
                        format!("default request value {} is greater than default limit value {}", show("defaultRequest"), show("default"))));
                }
                if let (Some(min), Some(def)) = (min, def)
                    && min > def
                {
                    errs.push(FieldError::invalid(format!("{at}.default[{r}]"), show("default"),
                        format!("min value {} is greater than default value {}", show("min"), show("default"))));
                }
                if let (Some(def), Some(max)) = (def, max)
                    && def > max
                {
                    errs.push(FieldError::invalid(format!("{at}.default[{r}]"), show("default"),
                        format!("default value {} is greater than max value {}", show("default"), show("max"))));
                }
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![name(o), created_at(o)]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        None
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

/// Gives each container of `pod` the defaults of the Container items of
/// `ranges` that it does not state. Returns what was set, as Kubernetes
/// records it in the `kubernetes.io/limit-ranger` annotation (empty when
/// nothing was).
pub fn apply_defaults(pod: &mut Value, ranges: &[Value]) -> String {
    let items: Vec<&Value> = ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(|i| i["type"] == "Container")
        .collect();
    let mut notes = Vec::new();
    for field in ["initContainers", "containers"] {
        let Some(containers) = pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut() {
            let cname = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
            for (from, to, what) in [("defaultRequest", "requests", "request"), ("default", "limits", "limit")] {
                let mut set = Vec::new();
                for item in &items {
                    for (r, q) in item.get(from).and_then(Value::as_object).into_iter().flatten() {
                        // A stated limit without a request is the request
                        // too in Kubernetes (pod defaulting runs first), so
                        // no default request goes below it.
                        if c.pointer(&format!("/resources/{to}/{r}")).is_some()
                            || (to == "requests" && c.pointer(&format!("/resources/limits/{r}")).is_some())
                        {
                            continue;
                        }
                        if !c["resources"].is_object() {
                            c["resources"] = json!({});
                        }
                        if !c["resources"][to].is_object() {
                            c["resources"][to] = json!({});
                        }
                        c["resources"][to][r] = q.clone();
                        set.push(r.clone());
                    }
                }
                if !set.is_empty() {
                    notes.push(format!("{} {what} for {} {cname}", set.join(", "),
                        if field == "initContainers" { "init container" } else { "container" }));
                }
            }
        }
    }
    if notes.is_empty() {
        String::new()
    } else {
        format!("LimitRanger plugin set: {}", notes.join("; "))
    }
}

/// The checks of `ranges`' Container and Pod items against `pod`, with
/// Kubernetes' messages; empty when the pod fits.
pub fn check(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errs = Vec::new();
    let containers: Vec<Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect();
    let items = ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten();
    for item in items {
        match item["type"].as_str() {
            Some("Container") => {
                for c in &containers {
                    let amount = |w: &str, r: &str| {
                        c.pointer(&format!("/resources/{w}/{r}")).and_then(Value::as_str).map(str::to_string)
                    };
                    bounds(item, "Container", &amount, &mut errs);
                }
            }
            Some("Pod") => {
                // Sums over the app containers (Kubernetes' pod limits).
                let amount = |w: &str, r: &str| {
                    let mut sum = 0i128;
                    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
                        sum += c.pointer(&format!("/resources/{w}/{r}"))
                            .and_then(Value::as_str)
                            .and_then(quantity::parse)?
                            .0;
                    }
                    Some(super::resourcequota::format(r, Quantity(sum)))
                };
                bounds(item, "Pod", &amount, &mut errs);
            }
            _ => {}
        }
    }
    errs
}

/// The min, max and ratio checks of one item, at most one message per
/// constraint as in Kubernetes; `amount(which, resource)` is the stated
/// request or limit.
fn bounds(
    item: &Value,
    per: &str,
    amount: &dyn Fn(&str, &str) -> Option<String>,
    errs: &mut Vec<String>,
) {
    let pairs = |f: &str| -> Vec<(String, String)> {
        item.get(f)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(r, q)| q.as_str().map(|q| (r.clone(), q.to_string())))
            .collect()
    };
    let parse = |s: &Option<String>| s.as_deref().and_then(quantity::parse);
    for (r, min) in pairs("min") {
        let Some(m) = quantity::parse(&min) else {
            continue;
        };
        let (req, lim) = (amount("requests", &r), amount("limits", &r));
        let msg = match (parse(&req), parse(&lim)) {
            (None, _) => format!("minimum {r} usage per {per} is {min}.  No request is specified"),
            (Some(q), _) if q < m => format!(
                "minimum {r} usage per {per} is {min}, but request is {}",
                req.unwrap_or_default()
            ),
            (_, Some(l)) if l < m => format!(
                "minimum {r} usage per {per} is {min}, but limit is {}",
                lim.unwrap_or_default()
            ),
            _ => continue,
        };
        errs.push(msg);
    }
    for (r, max) in pairs("max") {
        let Some(m) = quantity::parse(&max) else {
            continue;
        };
        let (req, lim) = (amount("requests", &r), amount("limits", &r));
        let msg = match (parse(&req), parse(&lim)) {
            (_, None) => format!("maximum {r} usage per {per} is {max}.  No limit is specified"),
            (_, Some(l)) if l > m => format!(
                "maximum {r} usage per {per} is {max}, but limit is {}",
                lim.unwrap_or_default()
            ),
            (Some(q), _) if q > m => format!(
                "maximum {r} usage per {per} is {max}, but request is {}",
                req.unwrap_or_default()
            ),
            _ => continue,
        };
        errs.push(msg);
    }
    for (r, ratio) in pairs("maxLimitRequestRatio") {
        let Some(max_ratio) = quantity::parse(&ratio) else {
            continue;
        };
        let (req, lim) = (parse(&amount("requests", &r)), parse(&amount("limits", &r)));
        let prefix = format!("{r} max limit to request ratio per {per} is {ratio}");
        let msg = match (req, lim) {
            (_, None) => format!("{prefix}, but no limit is specified or limit is 0"),
            (_, Some(l)) if l.0 == 0 => format!("{prefix}, but no limit is specified or limit is 0"),
            (None, _) => format!("{prefix}, but no request is specified or request is 0"),
            (Some(q), _) if q.0 == 0 => {
                format!("{prefix}, but no request is specified or request is 0")
            }
            (Some(q), Some(l)) => {
                let actual = l.0 as f64 / q.0 as f64;
                if actual <= max_ratio.0 as f64 / 1000.0 {
                    continue;
                }
                format!("{prefix}, but provided ratio is {actual:.6}")
            }
        };
        errs.push(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(item: Value) -> Value {
        let mut r = json!({"spec": {"limits": [item]}});
        LimitRange::default(&mut r);
        r
    }

    #[test]
    fn defaults_follow_max_then_default_then_min() {
        let r = range(json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}));
        assert_eq!(r["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
        assert_eq!(r["spec"]["limits"][0]["defaultRequest"], json!({"cpu": "2", "memory": "64Mi"}));
    }

    #[test]
    fn containers_get_the_defaults_they_do_not_state() {
        let r = range(json!({"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
                             "defaultRequest": {"cpu": "100m"}}));
        let mut pod = json!({"spec": {"containers": [
            {"name": "web", "resources": {"limits": {"memory": "1Gi"}}}]}});
        let note = apply_defaults(&mut pod, &[r]);
        let res = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(res["requests"]["cpu"], "100m");
        assert_eq!(res["limits"]["cpu"], "500m");
        assert_eq!(res["limits"]["memory"], "1Gi", "a stated limit is kept");
        assert_eq!(note, "LimitRanger plugin set: cpu request for container web; cpu limit for container web");
    }

    #[test]
    fn bounds_are_checked_with_kubernetes_messages() {
        let r = range(json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1"},
                             "maxLimitRequestRatio": {"cpu": "2"}}));
        let pod = |req: &str, lim: &str| json!({"spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": req}, "limits": {"cpu": lim}}}]}});
        assert!(check(&pod("500m", "1"), std::slice::from_ref(&r)).is_empty());
        assert_eq!(check(&pod("50m", "100m"), std::slice::from_ref(&r)),
                   ["minimum cpu usage per Container is 100m, but request is 50m"]);
        assert_eq!(check(&pod("1", "2"), std::slice::from_ref(&r)),
                   ["maximum cpu usage per Container is 1, but limit is 2"]);
        assert_eq!(check(&pod("200m", "1"), std::slice::from_ref(&r)),
                   ["cpu max limit to request ratio per Container is 2, but provided ratio is 5.000000"]);
    }

    #[test]
    fn a_default_above_the_max_is_invalid() {
        let errs = LimitRange::validate(&json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "1"}, "default": {"cpu": "2"}}]}}));
        assert!(errs.iter().any(|e| e.message().contains("default value 2 is greater than max value 1")), "{errs:?}");
    }
}
