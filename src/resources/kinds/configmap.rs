//! ConfigMap: configuration data a pod reads.

use k8s_openapi::api::core::v1::ConfigMap as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name};
use crate::resources::validation::{FieldError, NameRule};

pub struct ConfigMap;

impl KindSpec for ConfigMap {
    type Object = Object;
    const PLURAL: &'static str = "configmaps";
    const SINGULAR: &'static str = "configmap";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["cm"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Data", "string", "Data contains the configuration data."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(_obj: &mut Value) {}

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        let count = o
            .get("data")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
            + o.get("binaryData")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
        vec![name(o), json!(count), age(o)]
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
