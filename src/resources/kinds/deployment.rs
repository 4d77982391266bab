//! Deployment: replicas of a pod template, rolled out through ReplicaSets.

use k8s_openapi::api::apps::v1::Deployment as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::{default_template, set_default};
use crate::resources::printer::{
    AGE, CONTAINERS, Column, IMAGES, NAME, age, col, n, name, selector_string, template_containers,
    wide,
};
use crate::resources::validation::{
    FieldError, NameRule, int_at, non_negative, validate_pod_spec,
    validate_selector_matches_template,
};

pub struct Deployment;

impl KindSpec for Deployment {
    type Object = Object;
    const PLURAL: &'static str = "deployments";
    const SINGULAR: &'static str = "deployment";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["deploy"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status, Subresource::Scale];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Ready", "string", "Number of the pod with ready state"),
        col(
            "Up-to-date",
            "string",
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        col(
            "Available",
            "string",
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "Label selector for pods."),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
        default_template(obj);
        if let Some(spec) = obj.get_mut("spec") {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        validate_replicated(obj)
    }

    fn cells(o: &Value) -> Vec<Value> {
        let (c, i) = template_containers(o);
        vec![
            name(o),
            json!(format!(
                "{}/{}",
                n(o, "/status/readyReplicas"),
                n(o, "/spec/replicas")
            )),
            json!(n(o, "/status/updatedReplicas")),
            json!(n(o, "/status/availableReplicas")),
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

/// The checks a Deployment and a ReplicaSet share.
pub fn validate_replicated(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    non_negative(
        obj,
        &[
            "spec.replicas",
            "spec.minReadySeconds",
            "spec.revisionHistoryLimit",
            "spec.progressDeadlineSeconds",
        ],
        &mut errs,
    );
    if let (Some(deadline), Some(ready)) = (
        int_at(obj, "spec.progressDeadlineSeconds"),
        int_at(obj, "spec.minReadySeconds"),
    ) && deadline <= ready
    {
        errs.push(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            deadline.to_string(),
            "must be greater than minReadySeconds",
        ));
    }
    validate_selector_matches_template(obj, &mut errs);
    validate_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        &mut errs,
    );
    errs
}
