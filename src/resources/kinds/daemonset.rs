//! DaemonSet: one pod on every node that fits the template.

use k8s_openapi::api::apps::v1::DaemonSet as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::{default_template, set_default};
use crate::resources::printer::{
    AGE, CONTAINERS, Column, IMAGES, NAME, age, col, n, name, none_if_empty, selector_string,
    template_containers, wide,
};
use crate::resources::validation::{
    FieldError, NameRule, non_negative, validate_pod_spec, validate_selector_matches_template,
};

pub struct DaemonSet;

impl KindSpec for DaemonSet {
    type Object = Object;
    const PLURAL: &'static str = "daemonsets";
    const SINGULAR: &'static str = "daemonset";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["ds"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Desired",
            "integer",
            "The desired number of nodes running the daemon pod.",
        ),
        col(
            "Current",
            "integer",
            "The number of nodes running at least one daemon pod.",
        ),
        col(
            "Ready",
            "integer",
            "The number of nodes with a ready daemon pod.",
        ),
        col(
            "Up-to-date",
            "integer",
            "The number of nodes running the updated daemon pod.",
        ),
        col(
            "Available",
            "integer",
            "The number of nodes with an available daemon pod.",
        ),
        col(
            "Node Selector",
            "string",
            "The node selector of the pod template.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "A label query over pods that are managed by the daemon set.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &["spec.selector"];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
        default_template(obj);
        if let Some(spec) = obj.get_mut("spec") {
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            if let Some(strategy) = spec.get_mut("updateStrategy")
                && strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            {
                set_default(
                    strategy,
                    "rollingUpdate",
                    json!({"maxUnavailable": 1, "maxSurge": 0}),
                );
                if let Some(ru) = strategy.get_mut("rollingUpdate") {
                    set_default(ru, "maxUnavailable", json!(1));
                    set_default(ru, "maxSurge", json!(0));
                }
            }
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        non_negative(
            obj,
            &["spec.minReadySeconds", "spec.revisionHistoryLimit"],
            &mut errs,
        );
        validate_selector_matches_template(obj, &mut errs);
        validate_pod_spec(
            obj.pointer("/spec/template/spec"),
            "spec.template.spec",
            &mut errs,
        );
        let policy = obj
            .pointer("/spec/template/spec/restartPolicy")
            .and_then(Value::as_str);
        if let Some(p) = policy
            && p != "Always"
        {
            errs.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                p,
                &["Always"],
            ));
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let (c, i) = template_containers(o);
        let node_selector = o
            .pointer("/spec/template/spec/nodeSelector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        vec![
            name(o),
            json!(n(o, "/status/desiredNumberScheduled")),
            json!(n(o, "/status/currentNumberScheduled")),
            json!(n(o, "/status/numberReady")),
            json!(n(o, "/status/updatedNumberScheduled")),
            json!(n(o, "/status/numberAvailable")),
            json!(none_if_empty(node_selector)),
            age(o),
            json!(c),
            json!(i),
            json!(selector_string(o.pointer("/spec/selector"))),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
                    "desiredNumberScheduled": 0, "numberReady": 0}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
