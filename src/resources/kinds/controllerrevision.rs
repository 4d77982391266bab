//! ControllerRevision: an immutable snapshot of a DaemonSet's template.

use k8s_openapi::api::apps::v1::ControllerRevision as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, n, name, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct ControllerRevision;

impl KindSpec for ControllerRevision {
    type Object = Object;
    const PLURAL: &'static str = "controllerrevisions";
    const SINGULAR: &'static str = "controllerrevision";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Controller",
            "string",
            "The controller that owns this revision.",
        ),
        col(
            "Revision",
            "integer",
            "Revision indicates the revision of the state represented by Data.",
        ),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &["data"];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(_obj: &mut Value) {}

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        let owner = o
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            })
            .map(|r| {
                let group = s(r, "/apiVersion").split_once('/').map_or("", |(g, _)| g);
                let kind = s(r, "/kind").to_lowercase();
                let kind = if group.is_empty() {
                    kind
                } else {
                    format!("{kind}.{group}")
                };
                format!("{kind}/{}", s(r, "/name"))
            })
            .unwrap_or_else(|| "<none>".into());
        vec![name(o), json!(owner), json!(n(o, "/revision")), age(o)]
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
