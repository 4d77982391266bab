//! PriorityClass (`scheduling.k8s.io/v1`): a name for a pod priority.
//!
//! A pod names a class in `spec.priorityClassName`; the API server's
//! priority admission (`api::priority`) turns the name into
//! `spec.priority` and `spec.preemptionPolicy` when the pod is created,
//! so that the scheduler reads numbers, never classes. The rule that at
//! most one class is the global default needs the other classes, so it is
//! checked there too.
//!
//! Two classes exist in every cluster and are created at bootstrap:
//! [`SYSTEM_CLASSES`]. Every other name starting with `system-` is
//! reserved, and user classes stay at or below
//! [`HIGHEST_USER_PRIORITY`], so that no workload can outrank the
//! cluster's own components.

use k8s_openapi::api::scheduling::v1::PriorityClass as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, FieldErrorKind, NameRule};

pub struct PriorityClass;

/// The largest `value` a class not reserved for the system may have.
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

/// The prefix of reserved class names.
pub const SYSTEM_PREFIX: &str = "system-";

/// The built-in classes: name and value (neither is the global default).
pub const SYSTEM_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// The preemption policy of a class that names none, and of a pod when no
/// class applies.
pub const DEFAULT_PREEMPTION: &str = "PreemptLowerPriority";

const PREEMPTION_POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];

/// The object of a built-in class, as bootstrap creates it.
pub fn system_class(name: &str, value: i64) -> Value {
    json!({
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": value,
        "description": if name == "system-node-critical" {
            "Used for system critical pods that must not be moved from their current node."
        } else {
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."
        },
    })
}

fn forbidden(field: &str, detail: impl Into<String>) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Forbidden,
        field: field.into(),
        value: None,
        detail: detail.into(),
    }
}

/// Why a `system-` name is not one of the built-in classes as they are,
/// or `None` when it is.
fn not_a_system_class(name: &str, value: i64, global_default: bool) -> Option<String> {
    let Some(&(_, want)) = SYSTEM_CLASSES.iter().find(|(n, _)| *n == name) else {
        return Some(format!("{name} is not a known system priority class"));
    };
    if value != want {
        return Some(format!("value of {name} PriorityClass must be {want}"));
    }
    if global_default {
        return Some(format!("globalDefault of {name} PriorityClass must be false"));
    }
    None
}

impl KindSpec for PriorityClass {
    type Object = Object;
    const PLURAL: &'static str = "priorityclasses";
    const SINGULAR: &'static str = "priorityclass";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &["pc"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Value",
            "integer",
            "value represents the integer value of this priority class.",
        ),
        col(
            "Global-Default",
            "boolean",
            "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
        ),
        AGE,
        col(
            "PreemptionPolicy",
            "string",
            "preemptionPolicy is the Policy for preempting pods with lower priority.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::None;
    // `value` is immutable too, but Kubernetes words that one as a
    // Forbidden error: see `on_update`.
    const IMMUTABLE: &'static [&'static str] = &["preemptionPolicy"];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::SingleGlobalDefault;
    const DELETION: Deletion = Deletion::Immediate;
    // As in Kubernetes, no user-facing role reads or writes classes: they
    // rank every workload of the cluster against every other.
    const ACCESS: Access = Access::ClusterAdmin;

    fn default(obj: &mut Value) {
        if obj.is_object() && obj.get("preemptionPolicy").is_none_or(Value::is_null) {
            obj["preemptionPolicy"] = json!(DEFAULT_PREEMPTION);
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = s(obj, "/metadata/name");
        let Some(value) = obj.get("value").and_then(Value::as_i64) else {
            errs.push(FieldError::required("value"));
            return errs;
        };
        let global_default = obj
            .get("globalDefault")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if name.starts_with(SYSTEM_PREFIX) {
            if let Some(why) = not_a_system_class(name, value, global_default) {
                errs.push(forbidden(
                    "metadata.name",
                    format!(
                        "priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {why}"
                    ),
                ));
            }
        } else if value > HIGHEST_USER_PRIORITY {
            errs.push(forbidden(
                "value",
                format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
            ));
        }
        if let Some(p) = obj.get("preemptionPolicy").and_then(Value::as_str)
            && !PREEMPTION_POLICIES.contains(&p)
        {
            errs.push(FieldError::not_supported(
                "preemptionPolicy",
                p,
                PREEMPTION_POLICIES,
            ));
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![
            name(o),
            json!(o.get("value").and_then(Value::as_i64).unwrap_or(0)),
            json!(
                o.get("globalDefault")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            age(o),
            json!(s(o, "/preemptionPolicy")),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        None
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(old: &Value, new: &mut Value) -> Result<(), FieldError> {
        if old.get("value") != new.get("value") {
            return Err(forbidden("value", "may not be changed in an update."));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64) -> Value {
        let mut o = json!({"metadata": {"name": name}, "value": value});
        PriorityClass::default(&mut o);
        o
    }

    #[test]
    fn a_user_class_may_not_outrank_a_billion() {
        assert!(PriorityClass::validate(&class("high", HIGHEST_USER_PRIORITY)).is_empty());
        let errs = PriorityClass::validate(&class("higher", HIGHEST_USER_PRIORITY + 1));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "value");
    }

    #[test]
    fn system_names_are_reserved_for_the_built_in_classes() {
        for &(name, value) in SYSTEM_CLASSES {
            let o = system_class(name, value);
            let mut o = o;
            PriorityClass::default(&mut o);
            assert!(PriorityClass::validate(&o).is_empty(), "{name}");
        }
        let errs = PriorityClass::validate(&class("system-mine", 5));
        assert!(errs[0].message().contains("reserved for system use only"));
        let errs = PriorityClass::validate(&class("system-node-critical", 5));
        assert!(errs[0].message().contains("must be 2000001000"));
    }

    #[test]
    fn an_unknown_preemption_policy_is_refused() {
        let mut o = class("low", 1);
        o["preemptionPolicy"] = json!("Sometimes");
        assert_eq!(PriorityClass::validate(&o).len(), 1);
    }

    #[test]
    fn the_value_may_not_change() {
        let old = class("low", 1);
        let mut same = old.clone();
        assert!(PriorityClass::on_update(&old, &mut same).is_ok());
        let mut new = class("low", 2);
        let e = PriorityClass::on_update(&old, &mut new).unwrap_err();
        assert_eq!(e.message(), "value: Forbidden: may not be changed in an update.");
    }

    #[test]
    fn a_value_is_required_and_has_no_hostile_shape() {
        let errs = PriorityClass::validate(&json!({"metadata": {"name": "x"}, "value": "1"}));
        assert_eq!(errs[0].field, "value");
        let mut not_an_object = json!([1]);
        PriorityClass::default(&mut not_an_object);
    }
}
