//! ReplicaSet: a fixed number of pods from one template.

use k8s_openapi::api::apps::v1::ReplicaSet as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::{default_template, set_default};
use crate::resources::printer::{
    AGE, CONTAINERS, Column, IMAGES, NAME, age, col, n, name, selector_string, template_containers,
    wide,
};
use crate::resources::validation::{FieldError, NameRule};

pub struct ReplicaSet;

impl KindSpec for ReplicaSet {
    type Object = Object;
    const PLURAL: &'static str = "replicasets";
    const SINGULAR: &'static str = "replicaset";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["rs"];
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
            "The number of ready replicas for this replica set.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "Selector is a label query over pods that should match the replica count.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &["status.replicas"];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
        default_template(obj);
        if let Some(spec) = obj.get_mut("spec") {
            set_default(spec, "replicas", json!(1));
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        super::deployment::validate_replicated(obj)
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
        Some(json!({}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
