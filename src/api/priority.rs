//! Priority admission, as Kubernetes' `Priority` admission plugin: a new
//! pod's `spec.priorityClassName` becomes `spec.priority` and
//! `spec.preemptionPolicy` (the global default class when the pod names
//! none, priority 0 when there is no default), and at most one
//! PriorityClass is the global default.
//!
//! The decision ([`resolve`], [`second_default`]) is pure; the functions
//! around it read the classes from the store.

use serde_json::{Value, json};

use super::ApiState;
use super::objects;
use super::status::ApiError;
use crate::resources::kinds::priorityclass::DEFAULT_PREEMPTION;
use crate::resources::{self, Kind};

/// Why a pod's priority is refused. Each message is the one Kubernetes
/// gives, after `pods "NAME" is forbidden: `.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriorityError {
    #[error("no PriorityClass with name {0} was found")]
    UnknownClass(String),
    #[error(
        "the integer value of priority ({sent}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
    )]
    PriorityMismatch { sent: i64, computed: i64 },
    #[error(
        "the string value of PreemptionPolicy ({sent}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
    )]
    PreemptionMismatch { sent: String, computed: String },
}

/// What a pod's spec gets.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The class name to write back ("" when none applies).
    pub class: String,
    pub priority: i64,
    pub preemption: String,
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn is_default(class: &Value) -> bool {
    class
        .get("globalDefault")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn class_name(class: &Value) -> &str {
    class
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The priority a pod spec gets from `classes`.
///
/// # Errors
/// The class named does not exist, or the spec already says something
/// else than the class.
pub fn resolve(spec: &Value, classes: &[Value]) -> Result<Resolved, PriorityError> {
    let chosen = match str_at(spec, "priorityClassName") {
        Some(name) => Some(
            classes
                .iter()
                .find(|c| class_name(c) == name)
                .ok_or_else(|| PriorityError::UnknownClass(name.to_string()))?,
        ),
        // Kubernetes picks the default with the lowest value should there
        // ever be more than one (a race between two creates).
        None => classes
            .iter()
            .filter(|c| is_default(c))
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0)),
    };
    let resolved = match chosen {
        Some(c) => Resolved {
            class: class_name(c).to_string(),
            priority: c.get("value").and_then(Value::as_i64).unwrap_or(0),
            preemption: str_at(c, "preemptionPolicy")
                .unwrap_or(DEFAULT_PREEMPTION)
                .to_string(),
        },
        None => Resolved {
            class: String::new(),
            priority: 0,
            preemption: DEFAULT_PREEMPTION.to_string(),
        },
    };
    if let Some(sent) = spec.get("priority").and_then(Value::as_i64)
        && sent != resolved.priority
    {
        return Err(PriorityError::PriorityMismatch {
            sent,
            computed: resolved.priority,
        });
    }
    if let Some(sent) = str_at(spec, "preemptionPolicy")
        && sent != resolved.preemption
    {
        return Err(PriorityError::PreemptionMismatch {
            sent: sent.to_string(),
            computed: resolved.preemption,
        });
    }
    Ok(resolved)
}

/// The name of another class that is already the global default, when
/// `class` wants to be one too.
pub fn second_default<'a>(class: &Value, classes: &'a [Value]) -> Option<&'a str> {
    if !is_default(class) {
        return None;
    }
    classes
        .iter()
        .find(|c| is_default(c) && class_name(c) != class_name(class))
        .map(class_name)
}

fn priority_classes() -> Result<&'static Kind, ApiError> {
    resources::by_resource("scheduling.k8s.io", "v1", "priorityclasses").ok_or(ApiError::NoRoute)
}

async fn all_classes(state: &ApiState) -> Result<Vec<Value>, ApiError> {
    let kind = priority_classes()?;
    Ok(state
        .registry
        .list(kind, None, 0, None, &|_| true)
        .await?
        .items)
}

/// Fill a new pod's priority from its class.
///
/// # Errors
/// 403 with Kubernetes' message when the class is unknown or the pod
/// states another priority than its class gives.
pub async fn admit_pod(state: &ApiState, kind: &Kind, pod: &mut Value) -> Result<(), ApiError> {
    let Some(spec) = pod.get("spec").filter(|s| s.is_object()) else {
        return Ok(());
    };
    let classes = all_classes(state).await?;
    let resolved = resolve(spec, &classes).map_err(|e| {
        let name = objects::name_of(pod).to_string();
        ApiError::Forbidden {
            message: format!("{} \"{name}\" is forbidden: {e}", kind.plural),
            kind: kind.plural.into(),
            name,
            group: kind.group.into(),
        }
    })?;
    let spec = &mut pod["spec"];
    if !resolved.class.is_empty() {
        spec["priorityClassName"] = json!(resolved.class);
    }
    spec["priority"] = json!(resolved.priority);
    spec["preemptionPolicy"] = json!(resolved.preemption);
    Ok(())
}

/// Refuse a second global default class.
///
/// # Errors
/// 403 naming the class that is already the default.
pub async fn admit_class(state: &ApiState, kind: &Kind, class: &Value) -> Result<(), ApiError> {
    if !is_default(class) {
        return Ok(());
    }
    let classes = all_classes(state).await?;
    match second_default(class, &classes) {
        None => Ok(()),
        Some(other) => {
            let name = class_name(class).to_string();
            Err(ApiError::Forbidden {
                message: format!(
                    "{} \"{name}\" is forbidden: PriorityClass {other} is already marked as default. Only one default can exist",
                    kind.qualified_plural()
                ),
                kind: kind.plural.into(),
                name,
                group: kind.group.into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64, default: bool) -> Value {
        json!({"metadata": {"name": name}, "value": value, "globalDefault": default,
            "preemptionPolicy": "PreemptLowerPriority"})
    }

    #[test]
    fn a_named_class_gives_its_value_and_policy() {
        let mut never = class("batch", 10, false);
        never["preemptionPolicy"] = json!("Never");
        let r = resolve(&json!({"priorityClassName": "batch"}), &[never]).unwrap();
        assert_eq!(
            r,
            Resolved {
                class: "batch".into(),
                priority: 10,
                preemption: "Never".into()
            }
        );
    }

    #[test]
    fn the_global_default_applies_when_no_class_is_named() {
        let classes = [class("a", 5, false), class("dflt", 7, true)];
        let r = resolve(&json!({}), &classes).unwrap();
        assert_eq!((r.class.as_str(), r.priority), ("dflt", 7));
    }

    #[test]
    fn without_a_default_the_priority_is_zero() {
        let r = resolve(&json!({}), &[class("a", 5, false)]).unwrap();
        assert_eq!((r.class.as_str(), r.priority), ("", 0));
        assert_eq!(r.preemption, "PreemptLowerPriority");
    }

    #[test]
    fn an_unknown_class_is_refused_with_kubernetes_message() {
        let e = resolve(&json!({"priorityClassName": "gold"}), &[]).unwrap_err();
        assert_eq!(e.to_string(), "no PriorityClass with name gold was found");
    }

    #[test]
    fn a_priority_the_class_does_not_give_is_refused() {
        let classes = [class("a", 5, false)];
        assert!(resolve(&json!({"priorityClassName": "a", "priority": 5}), &classes).is_ok());
        let e = resolve(&json!({"priorityClassName": "a", "priority": 6}), &classes).unwrap_err();
        assert_eq!(
            e,
            PriorityError::PriorityMismatch {
                sent: 6,
                computed: 5
            }
        );
        let e = resolve(&json!({"priority": 1}), &[]).unwrap_err();
        assert!(e.to_string().contains("computed 0"));
        let e = resolve(
            &json!({"priorityClassName": "a", "preemptionPolicy": "Never"}),
            &classes,
        )
        .unwrap_err();
        assert!(matches!(e, PriorityError::PreemptionMismatch { .. }));
    }

    #[test]
    fn only_one_class_is_the_default() {
        let classes = [class("a", 5, true), class("b", 1, false)];
        assert_eq!(second_default(&class("c", 1, true), &classes), Some("a"));
        assert_eq!(second_default(&class("a", 9, true), &classes), None);
        assert_eq!(second_default(&class("c", 1, false), &classes), None);
    }
}
