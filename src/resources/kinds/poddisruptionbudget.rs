//! PodDisruptionBudget (`policy/v1`): how many of a set of pods must stay
//! healthy (`minAvailable`) or may be down (`maxUnavailable`) while pods
//! are evicted on purpose (`kubectl drain`). The disruption controller
//! (`controllers::disruption`) keeps its status; the eviction subresource
//! of pods (`api::eviction`) spends it. This file is what the API server
//! checks and prints, plus the arithmetic both sides share.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::PodDisruptionBudget as Object;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, n, name};
use crate::resources::validation::{FieldError, NameRule};

pub struct PodDisruptionBudget;

/// The `unhealthyPodEvictionPolicy` values.
pub const UNHEALTHY_POLICIES: &[&str] = &["IfHealthyBudget", "AlwaysAllow"];

/// Kubernetes' message for a percent that does not parse.
const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

impl KindSpec for PodDisruptionBudget {
    type Object = Object;
    const PLURAL: &'static str = "poddisruptionbudgets";
    const SINGULAR: &'static str = "poddisruptionbudget";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["pdb"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Min Available",
            "string",
            "The minimum number of pods that must be available simultaneously. This can be either an integer or a string specifying a percentage, e.g. \"28%\".",
        ),
        col(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable simultaneously. This can be either an integer or a string specifying a percentage, e.g. \"28%\".",
        ),
        col(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(_obj: &mut Value) {
        // policy/v1 defaults nothing. A budget with neither field set
        // expects no pods, so (as in Kubernetes) it allows no disruption.
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let min = obj.pointer("/spec/minAvailable");
        let max = obj.pointer("/spec/maxUnavailable");
        if min.is_some() && max.is_some() {
            errs.push(FieldError::invalid(
                "spec",
                obj.pointer("/spec").map(Value::to_string).unwrap_or_default(),
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        if let Some(v) = min {
            validate_int_or_percent(v, "spec.minAvailable", &mut errs);
        }
        if let Some(v) = max {
            validate_int_or_percent(v, "spec.maxUnavailable", &mut errs);
        }
        if let Some(sel) = obj.pointer("/spec/selector") {
            validate_label_selector(sel, "spec.selector", &mut errs);
        }
        if let Some(p) = obj.pointer("/spec/unhealthyPodEvictionPolicy")
            && let Some(p) = p.as_str()
            && !UNHEALTHY_POLICIES.contains(&p)
        {
            errs.push(FieldError::not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                UNHEALTHY_POLICIES,
            ));
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let shown = |p: &str| match o.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "N/A".into(),
        };
        vec![
            name(o),
            json!(shown("/spec/minAvailable")),
            json!(shown("/spec/maxUnavailable")),
            json!(n(o, "/status/disruptionsAllowed")),
            age(o),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        // Nothing is allowed until the controller has counted the pods.
        Some(json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

/// An `IntOrString` budget figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Count(i64),
    /// Percent of the pods the owning workloads ask for.
    Percent(i64),
}

impl Amount {
    /// Reads an `IntOrString`; `None` for anything else (which validation
    /// refuses).
    pub fn parse(v: &Value) -> Option<Amount> {
        match v {
            Value::Number(n) => n.as_i64().map(Amount::Count),
            Value::String(s) => s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok())
                .map(Amount::Percent),
            _ => None,
        }
    }

    /// The figure applied to `total`, rounding a percent up as Kubernetes
    /// does for both fields.
    pub fn of(self, total: i64) -> i64 {
        match self {
            Amount::Count(c) => c,
            Amount::Percent(p) => (p.saturating_mul(total) + 99).div_euclid(100),
        }
    }
}

fn validate_int_or_percent(v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => {}
            _ => errs.push(FieldError::invalid(
                path,
                n.to_string(),
                "must be greater than or equal to 0",
            )),
        },
        Value::String(s) => match Amount::parse(v) {
            Some(Amount::Percent(p)) if p > 100 => errs.push(FieldError::invalid(
                path,
                s.clone(),
                "must not be greater than 100%",
            )),
            Some(_) => {}
            None => errs.push(FieldError::invalid(path, s.clone(), PERCENT_MSG)),
        },
        other => errs.push(FieldError::invalid(
            path,
            other.to_string(),
            "must be an integer or percentage (e.g '5%')",
        )),
    }
}

/// A `LabelSelector`'s expressions use the four operators with values
/// only where they take them. (NetworkPolicy's selectors share it.)
pub fn validate_label_selector(sel: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) else {
        return;
    };
    for (i, e) in exprs.iter().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" | "NotIn" if values == 0 => errs.push(FieldError {
                detail: "must be specified when `operator` is 'In' or 'NotIn'".into(),
                ..FieldError::required(format!("{at}.values"))
            }),
            "Exists" | "DoesNotExist" if values > 0 => errs.push(FieldError {
                kind: crate::resources::validation::FieldErrorKind::Forbidden,
                field: format!("{at}.values"),
                value: None,
                detail: "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    .into(),
            }),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(FieldError::not_supported(
                format!("{at}.operator"),
                other,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
    }
}

/// Whether a budget covers a pod: its selector matches the pod's labels.
/// In `policy/v1` an empty selector (`{}`) covers every pod of the
/// namespace; a missing one covers none.
pub fn covers(pdb: &Value, pod_labels: &BTreeMap<String, String>) -> bool {
    let sel = pdb
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value::<LabelSelector>(s.clone()).ok());
    selects(sel.as_ref(), pod_labels)
}

/// [`covers`] for a typed selector (the disruption controller's).
pub fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else {
        return false;
    };
    match kube::core::Selector::try_from(sel.clone()) {
        Ok(s) => kube::core::SelectorExt::matches(&s, labels),
        // An operator Kubernetes does not know (refused by validation).
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: Value) -> Vec<String> {
        PodDisruptionBudget::validate(&json!({"spec": spec}))
            .iter()
            .map(FieldError::message)
            .collect()
    }

    #[test]
    fn min_available_and_max_unavailable_are_exclusive() {
        let e = errors(json!({"minAvailable": 1, "maxUnavailable": 1, "selector": {}}));
        assert_eq!(e.len(), 1);
        assert!(e[0].ends_with("minAvailable and maxUnavailable cannot be both set"));
        assert!(errors(json!({"minAvailable": 1})).is_empty());
        assert!(errors(json!({"maxUnavailable": "25%"})).is_empty());
    }

    #[test]
    fn figures_are_non_negative_integers_or_percents_up_to_100() {
        assert_eq!(
            errors(json!({"minAvailable": -1})),
            ["spec.minAvailable: Invalid value: \"-1\": must be greater than or equal to 0"]
        );
        assert_eq!(
            errors(json!({"maxUnavailable": "150%"})),
            ["spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"]
        );
        assert!(errors(json!({"maxUnavailable": "half"}))[0].contains("a valid percent string"));
    }

    #[test]
    fn selector_operators_are_checked() {
        let e = errors(
            json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
        );
        assert!(e[0].starts_with("spec.selector.matchExpressions[0].operator: Unsupported value"));
    }

    #[test]
    fn percents_round_up() {
        assert_eq!(Amount::parse(&json!("50%")).map(|a| a.of(3)), Some(2));
        assert_eq!(Amount::parse(&json!(2)).map(|a| a.of(10)), Some(2));
        assert_eq!(Amount::parse(&json!("x%")), None);
    }

    #[test]
    fn an_empty_selector_covers_every_pod_and_a_missing_one_none() {
        let labels = [("app".to_string(), "web".to_string())].into();
        assert!(covers(&json!({"spec": {"selector": {}}}), &labels));
        assert!(!covers(&json!({"spec": {}}), &labels));
        assert!(covers(
            &json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}}),
            &labels
        ));
        assert!(!covers(
            &json!({"spec": {"selector": {"matchLabels": {"app": "db"}}}}),
            &labels
        ));
    }
}
