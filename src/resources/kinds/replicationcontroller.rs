//! ReplicationController: the ReplicaSet's predecessor in core `v1`, whose
//! selector is a plain label map. It means exactly a ReplicaSet with that
//! map as `matchLabels`, and its controller
//! (`controllers::replicationcontroller`) runs the ReplicaSet's logic on
//! that reading; validation here reads it the same way.

use k8s_openapi::api::core::v1::ReplicationController as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::{default_template, set_default};
use crate::resources::printer::{
    AGE, CONTAINERS, Column, IMAGES, NAME, age, col, n, name, selector_string, template_containers,
    wide,
};
use crate::resources::validation::{FieldError, NameRule};

pub struct ReplicationController;

fn non_empty_map(v: Option<&Value>) -> Option<&serde_json::Map<String, Value>> {
    v.and_then(Value::as_object).filter(|m| !m.is_empty())
}

/// The ReplicaSet-shaped reading of an RC: its selector map as
/// `matchLabels`. Everything else has the same names in both.
pub fn as_replica_set(rc: &Value) -> Value {
    let mut rs = rc.clone();
    if let Some(sel) = non_empty_map(rc.pointer("/spec/selector")) {
        rs["spec"]["selector"] = json!({"matchLabels": sel});
    } else if let Some(spec) = rs.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("selector");
    }
    rs
}

impl KindSpec for ReplicationController {
    type Object = Object;
    const PLURAL: &'static str = "replicationcontrollers";
    const SINGULAR: &'static str = "replicationcontroller";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["rc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status, Subresource::Scale];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas.",
        ),
        col(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        col(
            "Ready",
            "integer",
            "The number of ready replicas for this replication controller.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "Selector is a label query over pods that should match the Replicas count.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &["status.replicas"];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    /// As Kubernetes: a missing selector (and missing object labels) are
    /// the template's labels.
    fn default(obj: &mut Value) {
        default_template(obj);
        let labels = non_empty_map(obj.pointer("/spec/template/metadata/labels")).cloned();
        if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
            set_default(spec, "replicas", json!(1));
            if let Some(labels) = &labels
                && non_empty_map(spec.get("selector")).is_none()
            {
                spec["selector"] = json!(labels);
            }
        }
        if let Some(labels) = labels
            && obj.is_object()
            && non_empty_map(obj.pointer("/metadata/labels")).is_none()
            && obj.get("metadata").is_some_and(Value::is_object)
        {
            obj["metadata"]["labels"] = json!(labels);
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        super::deployment::validate_replicated(&as_replica_set(obj))
    }

    fn cells(o: &Value) -> Vec<Value> {
        let (c, i) = template_containers(o);
        vec![
            name(o),
            json!(n(o, "/spec/replicas")),
            json!(n(o, "/status/replicas")),
            json!(n(o, "/status/readyReplicas")),
            age(o),
            json!(c),
            json!(i),
            json!(selector_string(o.pointer("/spec/selector"))),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"replicas": 0}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(selector: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"selector": selector,
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}}}})
    }

    #[test]
    fn a_missing_selector_is_the_templates_labels() {
        let mut o = rc(Value::Null);
        o["spec"].as_object_mut().unwrap().remove("selector");
        ReplicationController::default(&mut o);
        assert_eq!(o["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(o["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(o["spec"]["replicas"], 1);
        assert!(ReplicationController::validate(&o).is_empty());
    }

    #[test]
    fn a_selector_that_misses_the_template_is_refused() {
        let mut o = rc(json!({"app": "other"}));
        ReplicationController::default(&mut o);
        let errs = ReplicationController::validate(&o);
        assert!(
            errs.iter()
                .any(|e| e.detail.contains("does not match template")),
            "{errs:?}"
        );
    }

    #[test]
    fn its_replica_set_reading_uses_match_labels() {
        let rs = as_replica_set(&rc(json!({"app": "web"})));
        assert_eq!(rs["spec"]["selector"], json!({"matchLabels": {"app": "web"}}));
    }
}
